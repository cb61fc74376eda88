//! Pictures for people: labelled image grids and line charts, drawn without any font or
//! plotting library.
//!
//! - [`font`]: a built-in 5×9 bitmap font for printable ASCII ([`draw_text`], [`text_width`]).
//! - [`draw`]: rectangles, thick lines and nearest-neighbour pasting.
//! - [`grid`]: [`ImageGrid`], rows × columns of images with row, column and cell labels.
//! - [`chart`]: [`LineChart`], named series with ticks, a legend, log scale and a second
//!   y axis; [`loss_curve`] draws a training loss with its moving average.
//!
//! Everything renders to an [`image::RgbImage`]; [`save_png`] writes one atomically.
//!
//! ```no_run
//! use styleforge::report::{ImageGrid, LineChart, PALETTE};
//! # fn main() -> styleforge::Result<()> {
//! # let (a, b) = (image::RgbImage::new(32, 32), image::RgbImage::new(32, 32));
//! ImageGrid::new("samples")
//!     .columns(["seed 1", "seed 2"])
//!     .row("zwx style", vec![a, b])
//!     .save(std::path::Path::new("grid.png"))?;
//! LineChart::new("training loss", "step", "loss")
//!     .series("loss", &[(1.0, 0.9), (2.0, 0.5), (3.0, 0.4)], PALETTE[0])
//!     .log_y(true)
//!     .save(std::path::Path::new("loss.png"), 800, 480)?;
//! # Ok(())
//! # }
//! ```

pub mod chart;
pub mod draw;
pub mod font;
pub mod grid;

use std::path::Path;

use image::RgbImage;

pub use chart::{loss_curve, moving_average, LineChart, PALETTE};
pub use font::{draw_text, text_width};
pub use grid::ImageGrid;

use crate::error::{Error, Result};

/// Writes `img` as a PNG at `path`, creating its folder if needed. The file is written
/// under a temporary name and renamed, so a failure never leaves a partial image.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let tmp = path.with_extension(format!("png.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).map_err(io_err)?;
        let mut encoder =
            png::Encoder::new(std::io::BufWriter::new(file), img.width(), img.height());
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::High);
        let fail =
            |e: png::EncodingError| Error::msg(format!("cannot write {}: {e}", path.display()));
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(img.as_raw()).map_err(fail)?;
        writer.finish().map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(io_err)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_png_round_trips_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/pic.png");
        let mut img = RgbImage::new(3, 2);
        img.put_pixel(2, 1, image::Rgb([1, 2, 3]));
        save_png(&img, &path).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, img);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("pic.png")]);
        let err = save_png(&img, &dir.path().join("sub/pic.png/inside.png")).unwrap_err();
        assert!(err.to_string().contains("inside.png"), "{err}");
    }
}
