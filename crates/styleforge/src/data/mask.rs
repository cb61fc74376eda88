//! Loss masks: `<stem>.mask.png` beside a training image, white where the loss counts and
//! black where it is ignored (grey in between weighs in between).
//!
//! A mask is read by the one decoder ([`crate::image_io::decode_rgb`], EXIF orientation
//! applied as for its image) and turned grey with PIL's `convert("L")` weights
//! (`L = (19595·R + 38470·G + 7471·B + 2¹⁵) >> 16`, i.e. 0.299/0.587/0.114; a grey mask is
//! unchanged). It is resized, cropped and mirrored with its image
//! ([`super::Preprocess::apply_to`]), then brought to latent resolution by the area average
//! of each `factor`×`factor` block ([`mask_to_latent`]), which is what the latent pixel
//! covers.

use candle_core::{Device, Tensor};
use image::{GrayImage, Luma, RgbImage};

use crate::error::{Error, Result};

/// `img` in grey as PIL's `convert("L")` computes it.
pub fn to_grey(img: &RgbImage) -> GrayImage {
    GrayImage::from_fn(img.width(), img.height(), |x, y| {
        let [r, g, b] = img.get_pixel(x, y).0;
        let l = (19595 * r as u32 + 38470 * g as u32 + 7471 * b as u32 + 0x8000) >> 16;
        Luma([l as u8])
    })
}

/// The mask at latent resolution: each `factor`×`factor` block's mean of `value / 255`,
/// `[1, height / factor, width / factor]` f32 in [0, 1]. The sides must be multiples of
/// `factor`.
pub fn mask_to_latent(mask: &GrayImage, factor: u32, device: &Device) -> Result<Tensor> {
    let (w, h) = mask.dimensions();
    if factor == 0 || w % factor != 0 || h % factor != 0 {
        return Err(Error::InvalidRequest(format!(
            "a {w}x{h} mask cannot be averaged over {factor}x{factor} blocks"
        )));
    }
    let (lw, lh) = (w / factor, h / factor);
    let area = (factor * factor) as f64 * 255.0;
    let mut out = Vec::with_capacity((lw * lh) as usize);
    for by in 0..lh {
        for bx in 0..lw {
            let mut sum = 0u64;
            for y in by * factor..(by + 1) * factor {
                for x in bx * factor..(bx + 1) * factor {
                    sum += mask.get_pixel(x, y).0[0] as u64;
                }
            }
            out.push((sum as f64 / area) as f32);
        }
    }
    Ok(Tensor::from_vec(
        out,
        (1, lh as usize, lw as usize),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn grey_follows_pil_and_keeps_grey_values() {
        let img = RgbImage::from_fn(4, 1, |x, _| {
            [
                Rgb([255, 0, 0]),
                Rgb([0, 255, 0]),
                Rgb([0, 0, 255]),
                Rgb([77, 77, 77]),
            ][x as usize]
        });
        // PIL: Image.new("RGB", ...).convert("L") gives 76, 150, 29 for pure R, G, B
        assert_eq!(to_grey(&img).as_raw(), &vec![76, 150, 29, 77]);
    }

    #[test]
    fn latent_mask_is_the_block_average() {
        // 4x2 mask, factor 2: blocks [255, 255, 0, 0] and [255, 0, 255, 0]
        let raw = vec![255, 255, 255, 0, 0, 0, 255, 0];
        let mask = GrayImage::from_raw(4, 2, raw).unwrap();
        let t = mask_to_latent(&mask, 2, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [1, 1, 2]);
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.5, 0.5]
        );
        let g = GrayImage::from_pixel(6, 4, Luma([51]));
        let t = mask_to_latent(&g, 2, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [1, 2, 3]);
        assert!(t
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|&v| (v - 0.2).abs() < 1e-7));
        assert!(mask_to_latent(&g, 4, &Device::Cpu).is_err());
    }
}
