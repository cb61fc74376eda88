//! Images ↔ tensors, with the arithmetic of the reference pipelines.
//!
//! Into the networks: `[3, H, W]` f32 in [-1, 1], `v / 127.5 - 1`. In f32 this equals,
//! value for value, torchvision's `Normalize([0.5], [0.5])(ToTensor())` (DreamBooth's
//! training transform) and diffusers' `VaeImageProcessor` (`2 · (v / 255) - 1`), so one
//! function serves training, img2img and the probes. Out of the VAE: the pipelines' decoded
//! `[3, H, W]` images in [0, 1] become 8-bit RGB rounded as diffusers' `numpy_to_pil`
//! (`round(x · 255)`).

use candle_core::{DType, Device, Tensor};
use image::imageops::FilterType;
use image::RgbImage;

use crate::error::{Error, Result};

/// An RGB image as a `[3, H, W]` f32 tensor in [-1, 1] (`v / 127.5 - 1`).
pub fn image_to_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img.as_raw().iter().map(|&v| to_unit_range(v)).collect();
    Ok(Tensor::from_vec(data, (h as usize, w as usize, 3), device)?
        .permute((2, 0, 1))?
        .contiguous()?)
}

/// An RGB image as a batch of one, `[1, 3, H, W]` ([`image_to_tensor`] with a batch axis),
/// the form the img2img request takes.
pub fn rgb_to_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    Ok(image_to_tensor(img, device)?.unsqueeze(0)?)
}

/// A decoded `[3, H, W]` image in [0, 1] (what the pipelines return, one image of the batch)
/// as 8-bit RGB: clamped, then `round(x · 255)` as diffusers' `numpy_to_pil`.
pub fn tensor_to_image(image: &Tensor) -> Result<RgbImage> {
    let (c, h, w) = image.dims3()?;
    if c != 3 {
        return Err(Error::InvalidRequest(format!(
            "expected an RGB image tensor [3, H, W], got {c} channels"
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
    Ok(RgbImage::from_raw(w as u32, h as u32, data).expect("3·H·W bytes for a W×H image"))
}

/// Resizes to exactly `width`×`height` with a Lanczos filter (PIL's default for diffusers'
/// image processor); returns the image unchanged when it already has that size.
pub fn resize_exact(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    image::imageops::resize(img, width, height, FilterType::Lanczos3)
}

fn to_unit_range(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_matches_torchvision_and_diffusers_bit_for_bit() {
        for v in 0..=255u8 {
            let x = to_unit_range(v);
            assert_eq!(
                x,
                (v as f32 / 255.0 - 0.5) / 0.5,
                "ToTensor + Normalize at {v}"
            );
            assert_eq!(
                x,
                2.0 * (v as f32 / 255.0) - 1.0,
                "VaeImageProcessor at {v}"
            );
        }
    }

    #[test]
    fn layout_is_chw_and_the_round_trip_is_exact() {
        let img = RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8 * 60, y as u8 * 255, 17]));
        let t = image_to_tensor(&img, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [3, 2, 4]);
        let v = t.to_vec3::<f32>().unwrap();
        assert_eq!(v[0][0][3], 180.0 / 127.5 - 1.0);
        assert_eq!(v[1][1][0], 1.0);
        assert_eq!(v[2][0][0], 17.0 / 127.5 - 1.0);
        assert_eq!(
            rgb_to_tensor(&img, &Device::Cpu).unwrap().dims(),
            [1, 3, 2, 4]
        );
        // What a pipeline does to a decoded [-1, 1] image: x / 2 + 0.5.
        let unit = ((t / 2.0).unwrap() + 0.5).unwrap();
        assert_eq!(tensor_to_image(&unit).unwrap(), img);
    }

    #[test]
    fn out_of_range_values_are_clamped_and_rounded() {
        let t = Tensor::new(
            &[[[-0.5f32, 0.6 / 255.0, 1.5]], [[0.0; 3]], [[1.0; 3]]],
            &Device::Cpu,
        )
        .unwrap();
        let img = tensor_to_image(&t).unwrap();
        let reds: Vec<u8> = img.pixels().map(|p| p.0[0]).collect();
        assert_eq!(reds, [0, 1, 255]);
        let grey = Tensor::zeros((1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(tensor_to_image(&grey).is_err());
    }
}
