//! The training square, made as diffusers' DreamBooth script makes it.
//!
//! `examples/dreambooth/train_dreambooth.py` opens each image with PIL, applies
//! `exif_transpose` and `convert("RGB")` (both done by [`crate::image_io::decode`]), then
//! the torchvision transforms `Resize(size, BILINEAR)` (short side → `size`; on PIL images
//! bilinear is antialiased, as `antialias=True` is for tensors), `CenterCrop(size)` or
//! `RandomCrop(size)`, `ToTensor()` and `Normalize([0.5], [0.5])`. Its text-to-image sibling adds `RandomHorizontalFlip`
//! after the crop. This module does the same steps in that order:
//!
//! - **Resize**: `image`'s `resize` with [`FilterType::Triangle`]. Like PIL's antialiased
//!   bilinear, it is a triangle (tent) filter whose support widens by the reduction factor
//!   when downscaling and is plain bilinear when upscaling; pixel values agree with PIL to
//!   about one 8-bit level (PIL works in fixed point). The new size follows torchvision:
//!   short side = `resolution`, long side = `floor(resolution · long / short)`.
//! - **Crop**: center offsets are `round((size - resolution) / 2)` with Python's
//!   round-half-to-even, as `CenterCrop` computes them; random offsets are drawn top first,
//!   then left, uniformly in `0..=size - resolution`, from a ChaCha8 stream seeded by
//!   [`Preprocess::seed`] and the image's index, so a crop does not depend on the order in
//!   which images are prepared. With latents cached once per image, a random crop is drawn
//!   once per image for the whole run (DreamBooth redraws it each epoch).
//! - **Flip**: mirrors the cropped square.
//! - **Buckets** (aspect-ratio bucketing, [`super::buckets`]): the same steps with a
//!   `width`×`height` target instead of the square ([`Preprocess::apply_to`]): the image is
//!   resized to cover the target (the side that fits exactly gets the target's length, the
//!   other `floor(target · long / short)` as above) and only the overflow is cropped. For a
//!   square target this is exactly the square path.
//! - **Masks**: a loss mask goes through the very same resize, crop and flip as its image
//!   ([`Preprocess::apply_to`] is generic over the pixel type).
//! - **Tensor**: `[3, H, W]` f32 in [-1, 1] ([`crate::image_io::image_to_tensor`], equal
//!   value for value to `Normalize([0.5], [0.5])(ToTensor())`).

use std::path::Path;

use image::imageops::FilterType;
use image::{ImageBuffer, Pixel, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::data_error;
use super::sampler::uniform_below;
use crate::error::Result;

/// How the training square is cut from the resized image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropMode {
    /// The middle square (DreamBooth's `--center_crop`).
    #[default]
    Center,
    /// A seeded random square (DreamBooth's default `RandomCrop`).
    Random,
}

impl CropMode {
    /// The name used in configs and cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            CropMode::Center => "center",
            CropMode::Random => "random",
        }
    }
}

/// How images become training squares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Side of the training square in pixels (a multiple of the VAE's downscale factor).
    pub resolution: u32,
    /// Center or random crop.
    pub crop: CropMode,
    /// Seed of the random crop offsets (unused for center crops).
    pub seed: u64,
    /// Accept images whose short side is below `resolution` (they are upscaled); refused by
    /// default since an upscaled image teaches blur.
    pub allow_upscale: bool,
}

impl Preprocess {
    /// Center crops at `resolution`, no upscaling, seed 0.
    pub fn new(resolution: u32) -> Self {
        Self {
            resolution,
            crop: CropMode::Center,
            seed: 0,
            allow_upscale: false,
        }
    }

    /// Size `(width, height)` after the short-side resize, as torchvision computes it.
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let r = self.resolution as u64;
        let (w, h) = (width.max(1) as u64, height.max(1) as u64);
        // int(size * long / short): integer product, float quotient, truncation
        if w <= h {
            (r as u32, ((r * h) as f64 / w as f64) as u32)
        } else {
            (((r * w) as f64 / h as f64) as u32, r as u32)
        }
    }

    /// Size `(width, height)` after resizing to cover `target` `(tw, th)`: the side that
    /// limits becomes the target's, the other is scaled by the same factor (truncated as
    /// torchvision does, and never below the target). For the square target
    /// `(resolution, resolution)` this is [`Self::resized_size`].
    pub fn cover_size(&self, width: u32, height: u32, target: (u32, u32)) -> (u32, u32) {
        let (tw, th) = (target.0 as u64, target.1 as u64);
        let (w, h) = (width.max(1) as u64, height.max(1) as u64);
        if w * th >= h * tw {
            // relatively wider than the target: the height fits exactly
            let nw = ((th * w) as f64 / h as f64) as u64;
            (nw.max(tw) as u32, th as u32)
        } else {
            let nh = ((tw * h) as f64 / w as f64) as u64;
            (tw as u32, nh.max(th) as u32)
        }
    }

    /// Top-left corner `(left, top)` of the crop in a resized image of `width`×`height`;
    /// `index` selects the image's random stream.
    pub fn crop_origin(&self, width: u32, height: u32, index: usize) -> (u32, u32) {
        let r = self.resolution;
        self.crop_origin_in(width, height, (r, r), index)
    }

    /// [`Self::crop_origin`] for a crop of `target` `(tw, th)`.
    pub fn crop_origin_in(
        &self,
        width: u32,
        height: u32,
        target: (u32, u32),
        index: usize,
    ) -> (u32, u32) {
        let spare_w = width.saturating_sub(target.0);
        let spare_h = height.saturating_sub(target.1);
        match self.crop {
            CropMode::Center => (half_round_even(spare_w), half_round_even(spare_h)),
            CropMode::Random => {
                if spare_w == 0 && spare_h == 0 {
                    return (0, 0);
                }
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(index as u64);
                let top = uniform_below(&mut rng, spare_h as u64 + 1) as u32;
                let left = uniform_below(&mut rng, spare_w as u64 + 1) as u32;
                (left, top)
            }
        }
    }

    /// Checks that an image of `width`×`height` can be used: its short side must reach the
    /// resolution unless upscaling is allowed. `path` names the image in the error.
    pub fn check_size(&self, path: &Path, width: u32, height: u32) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(data_error(path, "the image is empty (0 pixels)"));
        }
        if width.min(height) < self.resolution && !self.allow_upscale {
            return Err(data_error(
                path,
                format!(
                    "the image is {width}x{height}, smaller than the training resolution {r}x{r} \
                     (its short side must be at least {r}; resize it, lower the resolution, or \
                     allow upscaling)",
                    r = self.resolution
                ),
            ));
        }
        Ok(())
    }

    /// Checks that an image of `width`×`height` covers `target` `(tw, th)` without
    /// upscaling (unless upscaling is allowed); for the training square, [`Self::check_size`].
    pub fn check_target(
        &self,
        path: &Path,
        width: u32,
        height: u32,
        target: (u32, u32),
    ) -> Result<()> {
        let r = self.resolution;
        if target == (r, r) || width == 0 || height == 0 {
            return self.check_size(path, width, height);
        }
        let (tw, th) = target;
        if (width < tw || height < th) && !self.allow_upscale {
            return Err(data_error(
                path,
                format!(
                    "the image is {width}x{height}, smaller than its aspect-ratio bucket \
                     {tw}x{th} (it must be at least that wide and tall; use a larger image, \
                     lower the resolution, or allow upscaling)"
                ),
            ));
        }
        Ok(())
    }

    /// Resize, crop and optionally mirror `img` into a `resolution`×`resolution` image.
    /// `index` is the image's position in its folder (for the random crop).
    pub fn apply(&self, img: &RgbImage, index: usize, flip: bool) -> RgbImage {
        let r = self.resolution;
        self.apply_to(img, index, flip, (r, r))
    }

    /// Resize `img` to cover `target` `(width, height)`, crop it to the target and
    /// optionally mirror it: the training picture of an image, or of its mask (any pixel
    /// type, the same steps). `index` is the image's position in its folder (for the random
    /// crop).
    pub fn apply_to<P>(
        &self,
        img: &ImageBuffer<P, Vec<P::Subpixel>>,
        index: usize,
        flip: bool,
        target: (u32, u32),
    ) -> ImageBuffer<P, Vec<P::Subpixel>>
    where
        P: Pixel + 'static,
    {
        let (w, h) = img.dimensions();
        let (nw, nh) = self.cover_size(w, h, target);
        let resized;
        let src = if (nw, nh) == (w, h) {
            img // PIL's resize returns a copy when the size is unchanged
        } else {
            resized = image::imageops::resize(img, nw, nh, FilterType::Triangle);
            &resized
        };
        let (left, top) = self.crop_origin_in(nw, nh, target, index);
        let (tw, th) = target;
        let cropped = image::imageops::crop_imm(src, left, top, tw, th).to_image();
        if flip {
            image::imageops::flip_horizontal(&cropped)
        } else {
            cropped
        }
    }
}

/// `round(spare / 2)` with Python's round-half-to-even (`CenterCrop`'s offsets).
fn half_round_even(spare: u32) -> u32 {
    let q = spare / 2;
    if spare % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_size_follows_torchvision() {
        let p = Preprocess::new(512);
        assert_eq!(p.resized_size(1024, 768), (682, 512)); // int(512*1024/768) = 682
        assert_eq!(p.resized_size(768, 1024), (512, 682));
        assert_eq!(p.resized_size(600, 600), (512, 512));
        assert_eq!(p.resized_size(300, 200), (768, 512)); // upscaling
        assert_eq!(Preprocess::new(16).resized_size(33, 20), (26, 16)); // 26.4 → 26
    }

    #[test]
    fn covering_the_square_is_the_short_side_resize() {
        for r in [8, 16, 64, 512] {
            let p = Preprocess::new(r);
            for (w, h) in [
                (1024, 768),
                (768, 1024),
                (600, 600),
                (300, 200),
                (33, 20),
                (7, 9),
            ] {
                assert_eq!(
                    p.cover_size(w, h, (r, r)),
                    p.resized_size(w, h),
                    "{r}: {w}x{h}"
                );
            }
        }
        let p = Preprocess::new(32);
        // a 2:1 image into a 32x16 bucket: exact; a wider one keeps the height
        assert_eq!(p.cover_size(80, 40, (32, 16)), (32, 16));
        assert_eq!(p.cover_size(90, 40, (32, 16)), (36, 16));
        // a taller one keeps the width
        assert_eq!(p.cover_size(64, 40, (32, 16)), (32, 20));
    }

    #[test]
    fn a_mask_gets_the_crop_and_flip_of_its_image() {
        use image::{GrayImage, Luma, Rgb};
        let mut p = Preprocess::new(16);
        p.crop = CropMode::Random;
        p.seed = 4;
        let (w, h) = (45, 23);
        // the image's red channel and the mask hold the same picture
        let value = |x: u32, y: u32| ((x * 5 + y * 11) % 256) as u8;
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([value(x, y), 0, 9]));
        let mask = GrayImage::from_fn(w, h, |x, y| Luma([value(x, y)]));
        for (target, index, flip) in [
            ((16, 16), 0, false),
            ((24, 8), 3, true),
            ((16, 8), 5, false),
        ] {
            let a = p.apply_to(&img, index, flip, target);
            let m = p.apply_to(&mask, index, flip, target);
            assert_eq!(a.dimensions(), target);
            assert_eq!(m.dimensions(), target);
            let red: Vec<u8> = a.pixels().map(|px| px.0[0]).collect();
            assert_eq!(red, m.as_raw().clone(), "{target:?} {index} {flip}");
        }
    }

    #[test]
    fn center_offsets_round_half_to_even() {
        // Python: round(0.5) = 0, round(1.5) = 2, round(2.5) = 2, round(3.5) = 4
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 7].map(half_round_even),
            [0, 0, 1, 2, 2, 2, 4]
        );
    }

    #[test]
    fn random_offsets_are_seeded_per_index_and_in_range() {
        let mut p = Preprocess::new(16);
        p.crop = CropMode::Random;
        p.seed = 7;
        let a: Vec<_> = (0..20).map(|i| p.crop_origin(40, 25, i)).collect();
        let b: Vec<_> = (0..20).map(|i| p.crop_origin(40, 25, i)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|&(l, t)| l <= 24 && t <= 9));
        assert!(a.iter().any(|&o| o != a[0]), "offsets should vary: {a:?}");
        p.seed = 8;
        let c: Vec<_> = (0..20).map(|i| p.crop_origin(40, 25, i)).collect();
        assert_ne!(a, c);
    }
}
