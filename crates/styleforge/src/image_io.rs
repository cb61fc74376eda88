//! Reading images of any size and mode into tensors, and writing PNGs that carry their
//! generation parameters.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};

use crate::error::{Error, Result};

/// Opens an image file of any format and mode (RGB, RGBA, grayscale, palette) as RGB.
/// Transparent pixels are composited over white, as image tools show them.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let img = image::load_from_memory(&bytes).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        message: format!("cannot decode the image ({e}); expected a PNG, JPEG or WebP file"),
    })?;
    Ok(to_rgb(img))
}

/// Converts any decoded image to RGB, compositing alpha over white.
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as f32 / 255.0;
        let blend = |c: u8| (c as f32 * a + 255.0 * (1.0 - a)).round() as u8;
        image::Rgb([blend(p[0]), blend(p[1]), blend(p[2])])
    })
}

/// Resizes to exactly `width`×`height` with a Lanczos filter (PIL's default for diffusers'
/// image processor); returns the image unchanged when it already has that size.
pub fn resize_exact(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    image::imageops::resize(img, width, height, FilterType::Lanczos3)
}

/// An RGB image as a `[1, 3, H, W]` f32 tensor in [-1, 1].
pub fn rgb_to_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img
        .as_raw()
        .iter()
        .map(|&v| v as f32 / 127.5 - 1.0)
        .collect();
    Ok(Tensor::from_vec(data, (h as usize, w as usize, 3), device)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .contiguous()?)
}

/// A `[3, H, W]` tensor in [0, 1] as an 8-bit RGB image (rounded as diffusers'
/// `numpy_to_pil`: `round(x · 255)`).
pub fn tensor_to_rgb(image: &Tensor) -> Result<RgbImage> {
    let (c, h, w) = image.dims3()?;
    if c != 3 {
        return Err(Error::msg(format!(
            "expected an RGB image tensor, got {c} channels"
        )));
    }
    let data: Vec<u8> = image
        .to_dtype(DType::F32)?
        .clamp(0f32, 1f32)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    RgbImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| Error::msg("image buffer has the wrong size"))
}

/// Writes `img` as a PNG with a `parameters` text chunk (the form AUTOMATIC1111 and
/// ComfyUI read). The file is written under a temporary name and renamed, so a failure
/// never leaves a partial image.
pub fn save_png_with_parameters(img: &RgbImage, parameters: &str, path: &Path) -> Result<()> {
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
        // tEXt holds Latin-1 only; prompts beyond it go in an iTXt (UTF-8) chunk, as PIL does.
        let latin1 = parameters.chars().all(|c| (c as u32) < 256);
        let chunk = if latin1 {
            encoder.add_text_chunk("parameters".to_string(), parameters.to_string())
        } else {
            encoder.add_itxt_chunk("parameters".to_string(), parameters.to_string())
        };
        chunk.map_err(|e| Error::msg(format!("cannot write PNG text chunk: {e}")))?;
        let mut writer = encoder
            .write_header()
            .map_err(|e| Error::msg(format!("cannot write {}: {e}", path.display())))?;
        writer
            .write_image_data(img.as_raw())
            .map_err(|e| Error::msg(format!("cannot write {}: {e}", path.display())))?;
        writer
            .finish()
            .map_err(|e| Error::msg(format!("cannot write {}: {e}", path.display())))?;
        std::fs::rename(&tmp, path).map_err(io_err)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the `parameters` text chunk of a PNG written by StyleForge, AUTOMATIC1111 or
/// ComfyUI, if it has one.
pub fn read_png_parameters(path: &Path) -> Result<Option<String>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let reader = decoder.read_info().map_err(|e| Error::Image {
        path: path.to_path_buf(),
        message: format!("not a readable PNG ({e})"),
    })?;
    let info = reader.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone())
        .or_else(|| {
            info.utf8_text
                .iter()
                .find(|t| t.keyword == "parameters")
                .and_then(|t| t.get_text().ok())
        })
        .or_else(|| {
            info.compressed_latin1_text
                .iter()
                .find(|t| t.keyword == "parameters")
                .and_then(|t| t.get_text().ok())
        });
    Ok(text)
}
