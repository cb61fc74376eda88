//! The one image encoder: 8-bit RGB PNGs, with the generation parameters in the text chunk
//! AUTOMATIC1111 and ComfyUI read, written atomically through [`styleforge_models::files`].

use std::io::{BufReader, BufWriter};
use std::path::Path;

use image::RgbImage;
use styleforge_models::files;

use crate::error::{Error, Result};

/// The text chunk keyword AUTOMATIC1111 writes its generation parameters under.
const PARAMETERS: &str = "parameters";

/// Writes `img` as a PNG at `path` (folders created; atomic: a failure never leaves a
/// partial image, and the file gets the user's normal mode).
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    write_png(img, None, path)
}

/// Writes `img` as a PNG with a `parameters` text chunk (the form AUTOMATIC1111 and
/// ComfyUI read), atomically as [`save_png`] does.
pub fn save_png_with_parameters(img: &RgbImage, parameters: &str, path: &Path) -> Result<()> {
    write_png(img, Some(parameters), path)
}

fn write_png(img: &RgbImage, parameters: Option<&str>, path: &Path) -> Result<()> {
    let fail = |source| Error::PngEncode {
        path: path.to_path_buf(),
        source,
    };
    files::write_with(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(files::at(tmp))?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), img.width(), img.height());
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if let Some(text) = parameters {
            // tEXt holds Latin-1 only; prompts beyond it go in an iTXt (UTF-8) chunk, as
            // PIL does.
            let (keyword, text) = (PARAMETERS.to_string(), text.to_string());
            if text.chars().all(|c| (c as u32) < 256) {
                encoder.add_text_chunk(keyword, text).map_err(fail)?;
            } else {
                encoder.add_itxt_chunk(keyword, text).map_err(fail)?;
            }
        }
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(img.as_raw()).map_err(fail)?;
        writer.finish().map_err(fail)
    })
}

/// Reads the `parameters` text chunk of a PNG written by StyleForge, AUTOMATIC1111 or
/// ComfyUI, if it has one (tEXt, iTXt or zTXt).
pub fn read_png_parameters(path: &Path) -> Result<Option<String>> {
    let file = std::fs::File::open(path).map_err(files::at(path))?;
    parameters_from(path, BufReader::new(file))
}

/// [`read_png_parameters`] on a PNG's bytes; `path` names it in errors.
pub fn png_parameters_of(path: &Path, bytes: &[u8]) -> Result<Option<String>> {
    parameters_from(path, std::io::Cursor::new(bytes))
}

fn parameters_from<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    input: R,
) -> Result<Option<String>> {
    let reader = png::Decoder::new(input)
        .read_info()
        .map_err(|source| Error::PngRead {
            path: path.to_path_buf(),
            source,
        })?;
    let info = reader.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == PARAMETERS)
        .map(|t| t.text.clone())
        .or_else(|| {
            info.utf8_text
                .iter()
                .find(|t| t.keyword == PARAMETERS)
                .and_then(|t| t.get_text().ok())
        })
        .or_else(|| {
            info.compressed_latin1_text
                .iter()
                .find(|t| t.keyword == PARAMETERS)
                .and_then(|t| t.get_text().ok())
        });
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_io::load_rgb;

    fn picture() -> RgbImage {
        RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 50, y as u8 * 100, 7]))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn encode_decode_round_trip_keeps_pixels_and_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let img = picture();
        let cases = [
            ("latin.png", "a cat, zwx style\nSteps: 20, Seed: 1"),
            ("unicode.png", "café, naïve, 東京, Ωmega\nSteps: 2, Seed: 3"),
        ];
        for (name, params) in cases {
            let path = dir.path().join("sub").join(name);
            save_png_with_parameters(&img, params, &path).unwrap();
            assert_eq!(load_rgb(&path).unwrap(), img, "{name}");
            assert_eq!(
                read_png_parameters(&path).unwrap().as_deref(),
                Some(params),
                "{name}"
            );
        }
        let plain = dir.path().join("sub/plain.png");
        save_png(&img, &plain).unwrap();
        assert_eq!(load_rgb(&plain).unwrap(), img);
        assert_eq!(read_png_parameters(&plain).unwrap(), None);
        // Written in place of any earlier file, with no temporary left behind.
        save_png(&RgbImage::new(2, 2), &plain).unwrap();
        assert_eq!(load_rgb(&plain).unwrap().dimensions(), (2, 2));
        assert_eq!(
            names(&dir.path().join("sub")),
            ["latin.png", "plain.png", "unicode.png"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn pngs_get_the_normal_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        save_png(&picture(), &path).unwrap();
        let reference = dir.path().join("reference");
        std::fs::write(&reference, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&reference));
    }

    #[test]
    fn unwritable_and_unreadable_paths_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pic.png");
        save_png(&picture(), &file).unwrap();
        let err = save_png(&picture(), &file.join("inside.png")).unwrap_err();
        assert!(err.to_string().contains("pic.png"), "{err}");
        let not_png = dir.path().join("notes.png");
        std::fs::write(&not_png, b"hello").unwrap();
        let err = read_png_parameters(&not_png).unwrap_err();
        assert!(matches!(err, Error::PngRead { .. }), "{err:?}");
        assert!(err.to_string().contains("notes.png"), "{err}");
    }
}
