//! The one image decoder: a file's bytes to 8-bit RGB, as the field's Python tools read it.
//!
//! diffusers' training scripts (`train_dreambooth.py`, `train_text_to_image.py`) and its
//! `load_image` open a picture with PIL, apply `ImageOps.exif_transpose` and then
//! `convert("RGB")`. This decoder does the same steps:
//!
//! - **Format** is guessed from the content (PNG, JPEG, WebP), not the extension.
//! - **EXIF orientation** (JPEG APP1, PNG `eXIf`, WebP `EXIF`) is applied, so a phone photo
//!   stored sideways is trained on upright; a missing or unreadable EXIF block is ignored.
//! - **Alpha is dropped**, not composited: PIL's `convert("RGB")` from `RGBA`, `LA` and
//!   palette images with transparency keeps each pixel's stored colour, whatever its alpha.
//! - **Grey** (`L`, `LA`) is repeated into the three channels; **palette** images are
//!   looked up.
//! - **16-bit** channels are scaled to 8 bits, rounded (`(v + 128) / 257`). PIL takes the
//!   high byte of 16-bit colour PNGs (at most one level lower) and clips 16-bit grey to 255
//!   (a white picture), which is not followed.
//! - **Decompression bombs**: the decoded size is checked against `image`'s default limit
//!   (512 MiB) before any pixel is decoded, as `image::load_from_memory` does.
//!
//! Every error names the file.

use std::io::Cursor;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, Limits, RgbImage};
use styleforge_models::files;

use crate::error::{Error, Result};

/// Reads and decodes the image file at `path` ([`decode_rgb`]).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = files::read(path)?;
    decode_rgb(path, &bytes)
}

/// Decodes image bytes (format guessed from the content) to 8-bit RGB: EXIF orientation
/// applied, alpha dropped, grey and palette expanded, 16 bits scaled to 8 (see the module
/// documentation). `path` names the file in errors.
pub fn decode_rgb(path: &Path, bytes: &[u8]) -> Result<RgbImage> {
    decode_rgb_within(path, bytes, DEFAULT_MAX_DECODED)
}

/// The decoded size [`decode_rgb`] allows: `image`'s default limit, 512 MiB.
pub const DEFAULT_MAX_DECODED: u64 = 512 << 20;

/// [`decode_rgb`] with another limit on the decoded pixels' size, in bytes: an image whose
/// header claims more is refused before anything is allocated.
pub fn decode_rgb_within(path: &Path, bytes: &[u8], max_decoded: u64) -> Result<RgbImage> {
    let fail = |source: ImageError| Error::ImageDecode {
        path: path.to_path_buf(),
        source,
    };
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| fail(ImageError::IoError(e)))?;
    let mut decoder = reader.into_decoder().map_err(fail)?;
    // A missing or unreadable EXIF block is no reason to refuse the image.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    // What `ImageReader::decode` does: refuse before allocating when the decoded pixels
    // would exceed the memory limit.
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_decoded);
    limits.reserve(decoder.total_bytes()).map_err(fail)?;
    decoder.set_limits(limits).map_err(fail)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(fail)?;
    img.apply_orientation(orientation);
    Ok(img.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::jpeg::JpegEncoder;
    use image::{ExtendedColorType, ImageEncoder};

    /// PNG bytes of `data` (big-endian samples for 16 bits), as `png` writes them.
    fn png(
        w: u32,
        h: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
        palette: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(color);
            enc.set_depth(depth);
            if let Some((plte, trns)) = palette {
                enc.set_palette(plte);
                enc.set_trns(trns);
            }
            let mut writer = enc.write_header().unwrap();
            writer.write_image_data(data).unwrap();
            writer.finish().unwrap();
        }
        out
    }

    fn decode(bytes: &[u8]) -> RgbImage {
        decode_rgb(Path::new("test.png"), bytes).unwrap()
    }

    #[test]
    fn sixteen_bit_colour_and_grey_are_scaled_to_eight() {
        let samples: [u16; 3] = [0, 100 * 257, 65535];
        let be: Vec<u8> = samples.iter().flat_map(|v| v.to_be_bytes()).collect();
        let rgb = decode(&png(
            1,
            1,
            png::ColorType::Rgb,
            png::BitDepth::Sixteen,
            &be,
            None,
        ));
        assert_eq!(rgb.get_pixel(0, 0).0, [0, 100, 255]);
        let grey = decode(&png(
            3,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::Sixteen,
            &be,
            None,
        ));
        let row: Vec<[u8; 3]> = grey.pixels().map(|p| p.0).collect();
        assert_eq!(row, [[0, 0, 0], [100, 100, 100], [255, 255, 255]]);
    }

    #[test]
    fn alpha_is_dropped_not_composited() {
        // Grey + alpha: a fully transparent pixel keeps its stored grey.
        let la = decode(&png(
            2,
            1,
            png::ColorType::GrayscaleAlpha,
            png::BitDepth::Eight,
            &[40, 0, 200, 128],
            None,
        ));
        assert_eq!(la.get_pixel(0, 0).0, [40, 40, 40]);
        assert_eq!(la.get_pixel(1, 0).0, [200, 200, 200]);
        let rgba = decode(&png(
            2,
            1,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            &[10, 20, 30, 0, 250, 5, 60, 77],
            None,
        ));
        assert_eq!(rgba.get_pixel(0, 0).0, [10, 20, 30]);
        assert_eq!(rgba.get_pixel(1, 0).0, [250, 5, 60]);
    }

    #[test]
    fn palette_images_are_looked_up_and_their_transparency_dropped() {
        let plte = vec![255, 0, 0, 0, 0, 255, 12, 34, 56];
        let bytes = png(
            3,
            1,
            png::ColorType::Indexed,
            png::BitDepth::Eight,
            &[0, 1, 2],
            Some((plte, vec![255, 0, 9])),
        );
        let img = decode(&bytes);
        let row: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        assert_eq!(row, [[255, 0, 0], [0, 0, 255], [12, 34, 56]]);
    }

    /// A big-endian EXIF (TIFF) block holding one tag: Orientation = `value`.
    fn exif_orientation(value: u16) -> Vec<u8> {
        let mut e = b"MM\0\x2a\0\0\0\x08".to_vec();
        e.extend_from_slice(&1u16.to_be_bytes()); // one entry
        e.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        e.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        e.extend_from_slice(&1u32.to_be_bytes()); // count
        e.extend_from_slice(&value.to_be_bytes());
        e.extend_from_slice(&[0, 0]); // value padding
        e.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        e
    }

    #[test]
    fn exif_orientation_of_a_jpeg_is_applied() {
        // 16×8: red left half, blue right half (whole 8×8 blocks, so JPEG keeps them).
        let (red, blue) = ([220u8, 20, 20], [20u8, 20, 220]);
        let img = RgbImage::from_fn(16, 8, |x, _| image::Rgb(if x < 8 { red } else { blue }));
        let encode = |orientation: Option<u16>| {
            let mut out = Vec::new();
            let mut enc = JpegEncoder::new_with_quality(&mut out, 95);
            if let Some(o) = orientation {
                enc.set_exif_metadata(exif_orientation(o)).unwrap();
            }
            enc.write_image(img.as_raw(), 16, 8, ExtendedColorType::Rgb8)
                .unwrap();
            out
        };
        let near = |p: [u8; 3], q: [u8; 3]| p.iter().zip(q).all(|(a, b)| a.abs_diff(b) <= 12);
        let plain = decode_rgb(Path::new("plain.jpg"), &encode(None)).unwrap();
        assert_eq!(plain.dimensions(), (16, 8));
        assert!(near(plain.get_pixel(2, 4).0, red));
        // Orientation 6: the stored picture is shown turned a quarter turn clockwise, so
        // its left (red) half ends up on top.
        let turned = decode_rgb(Path::new("turned.jpg"), &encode(Some(6))).unwrap();
        assert_eq!(turned.dimensions(), (8, 16));
        assert!(
            near(turned.get_pixel(4, 2).0, red),
            "{:?}",
            turned.get_pixel(4, 2)
        );
        assert!(
            near(turned.get_pixel(4, 13).0, blue),
            "{:?}",
            turned.get_pixel(4, 13)
        );
    }

    #[test]
    fn truncated_and_garbage_files_are_errors_naming_the_file() {
        let good = png(
            8,
            8,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            &[7; 8 * 8 * 3],
            None,
        );
        assert_eq!(decode(&good).get_pixel(7, 7).0, [7, 7, 7]);
        for (name, bytes) in [
            ("half.png", &good[..good.len() / 2]),
            ("garbage.jpg", b"\xff\xd8\xff\xe0 not a jpeg".as_slice()),
            ("empty.webp", b"".as_slice()),
        ] {
            let err = decode_rgb(Path::new(name), bytes).unwrap_err();
            assert!(matches!(err, Error::ImageDecode { .. }), "{name}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains("cannot decode"), "{msg}");
        }
        let missing = load_rgb(Path::new("/no/such/picture.png")).unwrap_err();
        assert!(missing.to_string().contains("picture.png"), "{missing}");
    }

    /// CRC-32 (ISO-HDLC, PNG's chunk checksum).
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_decoding() {
        // A valid 1×1 RGB PNG whose header is then made to claim 60000×60000 (10.8 GB
        // decoded); the IDAT stays tiny.
        let mut bytes = png(
            1,
            1,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            &[1, 2, 3],
            None,
        );
        // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
        bytes[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_rgb(Path::new("bomb.png"), &bytes).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bomb.png") && msg.contains("limit"), "{msg}");
    }
}
