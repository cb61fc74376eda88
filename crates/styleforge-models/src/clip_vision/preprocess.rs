//! transformers' `CLIPImageProcessor` on decoded images: resize the shortest edge, center
//! crop, rescale by 1/255, normalise with the OpenAI CLIP mean and std.
//!
//! In transformers 5, `CLIPImageProcessor.from_pretrained(dir)` is the torchvision backend
//! (`TorchvisionBackend`, not the PIL one, `CLIPImageProcessorPil`): the resize is
//! `torchvision.transforms.v2.functional.resize(uint8 CHW, bicubic, antialias=True)`, which
//! on the CPU runs torch's native uint8 antialiased kernel: Pillow's separable filter
//! (bicubic `a = -0.5`, support widened by the downscale factor), weights in int16 fixed
//! point, the horizontal pass first, each pass rounded and clamped to uint8. That is what
//! [`resize_rgb`] computes. The crop and the normalisation work on the uint8 result, the
//! latter fused in float32 as `(x - mean·255) / (std·255)`.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// OpenAI CLIP's per-channel mean (transformers `OPENAI_CLIP_MEAN`).
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel std (transformers `OPENAI_CLIP_STD`).
// Written as transformers writes them; they round to the same f32 values.
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// A `size` / `crop_size` entry: `{"shortest_edge": n}`, `{"height": h, "width": w}`, or a
/// bare integer (old configs: shortest edge for `size`, a square for `crop_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SizeSpec {
    /// A bare integer.
    Int(usize),
    /// A dictionary with any of the keys.
    Dict {
        /// Resize so that the shorter side has this length, keeping the aspect ratio.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shortest_edge: Option<usize>,
        /// Output height.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<usize>,
        /// Output width.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<usize>,
    },
}

/// The resampling filter (PIL's enum values, as `resample` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// PIL `BILINEAR` (2): the triangle filter.
    Bilinear,
    /// PIL `BICUBIC` (3): the cubic filter with `a = -0.5`.
    Bicubic,
}

fn d_true() -> bool {
    true
}
fn d_size() -> SizeSpec {
    SizeSpec::Dict {
        shortest_edge: Some(224),
        height: None,
        width: None,
    }
}
fn d_crop() -> SizeSpec {
    SizeSpec::Dict {
        shortest_edge: None,
        height: Some(224),
        width: Some(224),
    }
}
fn d_resample() -> u32 {
    3
}
fn d_rescale() -> f64 {
    1.0 / 255.0
}
fn d_mean() -> Vec<f32> {
    OPENAI_CLIP_MEAN.to_vec()
}
fn d_std() -> Vec<f32> {
    OPENAI_CLIP_STD.to_vec()
}

/// A `preprocessor_config.json` (transformers `CLIPImageProcessor` keys and defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipImageProcessor {
    /// Whether to resize.
    #[serde(default = "d_true")]
    pub do_resize: bool,
    /// Resize target (`{"shortest_edge": 224}` by default).
    #[serde(default = "d_size")]
    pub size: SizeSpec,
    /// PIL resampling filter: 2 bilinear, 3 bicubic (others are not supported).
    #[serde(default = "d_resample")]
    pub resample: u32,
    /// Whether to center-crop.
    #[serde(default = "d_true")]
    pub do_center_crop: bool,
    /// Crop size (`{"height": 224, "width": 224}` by default).
    #[serde(default = "d_crop")]
    pub crop_size: SizeSpec,
    /// Whether to multiply by `rescale_factor`.
    #[serde(default = "d_true")]
    pub do_rescale: bool,
    /// Usually 1/255.
    #[serde(default = "d_rescale")]
    pub rescale_factor: f64,
    /// Whether to normalise with `image_mean` / `image_std`.
    #[serde(default = "d_true")]
    pub do_normalize: bool,
    /// Per-channel mean (OpenAI CLIP's by default).
    #[serde(default = "d_mean")]
    pub image_mean: Vec<f32>,
    /// Per-channel std (OpenAI CLIP's by default).
    #[serde(default = "d_std")]
    pub image_std: Vec<f32>,
    /// Keys this struct does not use (`image_processor_type`, `do_convert_rgb`, ...);
    /// images arrive as RGB already.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for ClipImageProcessor {
    /// transformers' `CLIPImageProcessor()` defaults (224 px, bicubic, OpenAI mean/std).
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({}))
            .expect("every image processor key has a default")
    }
}

impl ClipImageProcessor {
    /// Reads a `preprocessor_config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ModelError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Checks a processor built in code or from merged settings (as [`Self::load`] does),
    /// naming `path` in the error.
    pub fn validated(self, path: &Path) -> Result<Self> {
        self.validate().map_err(|message| ModelError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(self)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.filter()?;
        if self.image_mean.len() != 3 || self.image_std.len() != 3 {
            return Err(format!(
                "image_mean / image_std need 3 values, got {:?} / {:?}",
                self.image_mean, self.image_std
            ));
        }
        if self.do_center_crop {
            crop_dims(&self.crop_size)?;
        }
        Ok(())
    }

    fn filter(&self) -> std::result::Result<Resample, String> {
        match self.resample {
            2 => Ok(Resample::Bilinear),
            3 => Ok(Resample::Bicubic),
            other => Err(format!(
                "resample {other} is not supported (2 bilinear, 3 bicubic)"
            )),
        }
    }

    /// The `(height, width)` an image of `(height, width)` is resized to.
    pub fn resized_dims(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        match self.size {
            SizeSpec::Int(s)
            | SizeSpec::Dict {
                shortest_edge: Some(s),
                ..
            } => {
                // transformers' get_resize_output_image_size(default_to_square=False).
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                let new_long = (s as f64 * long as f64 / short as f64) as usize;
                Ok(if width <= height {
                    (new_long, s)
                } else {
                    (s, new_long)
                })
            }
            SizeSpec::Dict {
                height: Some(h),
                width: Some(w),
                ..
            } => Ok((h, w)),
            other => Err(ModelError::BadInput(format!(
                "image processor size {other:?} needs `shortest_edge` or `height` and `width`"
            ))),
        }
    }

    /// One image → normalised pixel values `[3, H, W]` (f32, CPU), as
    /// `CLIPImageProcessor(images=[img])["pixel_values"][0]`.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Tensor> {
        let (w0, h0) = img.dimensions();
        if w0 == 0 || h0 == 0 {
            return Err(ModelError::BadInput("empty image (0 pixels)".to_string()));
        }
        let mut img = img.clone();
        if self.do_resize {
            let (h, w) = self.resized_dims(h0 as usize, w0 as usize)?;
            let filter = self.filter().map_err(ModelError::BadInput)?;
            img = resize_rgb(&img, w as u32, h as u32, filter);
        }
        if self.do_center_crop {
            let (ch, cw) = crop_dims(&self.crop_size).map_err(ModelError::BadInput)?;
            img = center_crop(&img, cw as u32, ch as u32);
        }
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (mut mean, mut std) = ([0f32; 3], [1f32; 3]);
        if self.do_normalize {
            mean.copy_from_slice(&self.image_mean[..3]);
            std.copy_from_slice(&self.image_std[..3]);
        }
        // transformers fuses rescale into normalize: mean/factor and std/factor in float32.
        let factor = if self.do_rescale {
            (1.0 / self.rescale_factor) as f32
        } else {
            1.0
        };
        let mut out = vec![0f32; 3 * h * w];
        for (x, y, px) in img.enumerate_pixels() {
            for c in 0..3 {
                let v = px.0[c] as f32;
                let v = if self.do_normalize {
                    (v - mean[c] * factor) / (std[c] * factor)
                } else {
                    v / factor
                };
                out[c * h * w + y as usize * w + x as usize] = v;
            }
        }
        Ok(Tensor::from_vec(out, (3, h, w), &Device::Cpu)?)
    }

    /// Images → a batch of pixel values `[n, 3, H, W]` on `device`; every image must come
    /// out at the same size (true whenever center-cropping).
    pub fn pixel_values(&self, images: &[RgbImage], device: &Device) -> Result<Tensor> {
        if images.is_empty() {
            return Err(ModelError::BadInput("no images to preprocess".to_string()));
        }
        let tensors = images
            .iter()
            .map(|img| self.preprocess(img))
            .collect::<Result<Vec<_>>>()?;
        if let Some(t) = tensors.iter().find(|t| t.dims() != tensors[0].dims()) {
            return Err(ModelError::BadInput(format!(
                "preprocessed images differ in size ({:?} and {:?}); enable center cropping",
                tensors[0].dims(),
                t.dims()
            )));
        }
        Ok(Tensor::stack(&tensors, 0)?.to_device(device)?)
    }
}

fn crop_dims(size: &SizeSpec) -> std::result::Result<(usize, usize), String> {
    match *size {
        SizeSpec::Int(s) => Ok((s, s)),
        SizeSpec::Dict {
            height: Some(h),
            width: Some(w),
            ..
        } => Ok((h, w)),
        other => Err(format!("crop_size {other:?} needs `height` and `width`")),
    }
}

/// Center crop to `width × height` as torchvision does: zero padding first where the image
/// is smaller, then the offset `int((size - crop) / 2)`.
pub fn center_crop(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    // Padding (left, top) when the crop is larger than the image.
    let pad_l = width.saturating_sub(w) / 2;
    let pad_t = height.saturating_sub(h) / 2;
    let (pw, ph) = (w.max(width), h.max(height));
    let top = (ph - height) / 2;
    let left = (pw - width) / 2;
    RgbImage::from_fn(width, height, |x, y| {
        let (px, py) = (x + left, y + top);
        if px < pad_l || py < pad_t || px - pad_l >= w || py - pad_t >= h {
            image::Rgb([0, 0, 0])
        } else {
            *img.get_pixel(px - pad_l, py - pad_t)
        }
    })
}

/// Resizes an 8-bit RGB image as torch's antialiased uint8 kernel (and Pillow) do:
/// separable, horizontal pass first, int16 fixed-point weights, each pass rounded and
/// clamped to 0..=255.
pub fn resize_rgb(img: &RgbImage, width: u32, height: u32, filter: Resample) -> RgbImage {
    resize_rgb_fixed(img, width, height, filter, Precision::Int16)
}

/// Resizes an 8-bit RGB image as Pillow's `Image.resize` does (what torchvision's
/// `Resize` runs on PIL images): the same separable filter as [`resize_rgb`], with Pillow's
/// fixed 22-bit weights instead of torch's int16 ones, so a few pixels can differ by one.
pub fn resize_rgb_pillow(img: &RgbImage, width: u32, height: u32, filter: Resample) -> RgbImage {
    resize_rgb_fixed(img, width, height, filter, Precision::Pillow)
}

/// How the float filter weights are turned into integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    /// torch's `_compute_int16_weights`: the most bits that keep the largest weight in int16.
    Int16,
    /// Pillow's `PRECISION_BITS = 32 - 8 - 2`.
    Pillow,
}

fn resize_rgb_fixed(
    img: &RgbImage,
    width: u32,
    height: u32,
    filter: Resample,
    precision: Precision,
) -> RgbImage {
    let (w0, h0) = img.dimensions();
    let (w0, h0, w1, h1) = (w0 as usize, h0 as usize, width as usize, height as usize);
    let mut data: Vec<u8> = img.as_raw().clone();
    let mut w = w0;
    if w1 != w0 {
        let taps = FixedWeights::new(w0, w1, filter, precision);
        let mut out = vec![0u8; h0 * w1 * 3];
        for y in 0..h0 {
            for (x, (start, ws)) in taps.taps.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = taps.round;
                    for (k, &wk) in ws.iter().enumerate() {
                        acc += data[(y * w0 + start + k) * 3 + c] as i64 * wk as i64;
                    }
                    out[(y * w1 + x) * 3 + c] = taps.finish(acc);
                }
            }
        }
        data = out;
        w = w1;
    }
    if h1 != h0 {
        let taps = FixedWeights::new(h0, h1, filter, precision);
        let mut out = vec![0u8; h1 * w * 3];
        for (y, (start, ws)) in taps.taps.iter().enumerate() {
            for x in 0..w {
                for c in 0..3 {
                    let mut acc = taps.round;
                    for (k, &wk) in ws.iter().enumerate() {
                        acc += data[((start + k) * w + x) * 3 + c] as i64 * wk as i64;
                    }
                    out[(y * w + x) * 3 + c] = taps.finish(acc);
                }
            }
        }
        data = out;
    }
    RgbImage::from_raw(width, height, data).unwrap_or_else(|| RgbImage::new(width, height))
}

/// One pass's taps: for each output index the first input index and its fixed-point
/// weights.
struct FixedWeights {
    taps: Vec<(usize, Vec<i32>)>,
    precision: u32,
    round: i64,
}

impl FixedWeights {
    /// torch `_compute_indices_min_size_weights_aa` (float weights normalised to sum 1),
    /// then `_compute_int16_weights` (the most precision bits that keep the largest weight
    /// within int16), or Pillow's fixed 22 bits.
    fn new(in_size: usize, out_size: usize, filter: Resample, mode: Precision) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let (interp, a) = match filter {
            Resample::Bilinear => (2.0, 0.0),
            Resample::Bicubic => (4.0, -0.5),
        };
        let support = interp / 2.0 * scale.max(1.0);
        let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
        let kernel = |x: f64| -> f64 {
            let x = x.abs();
            match filter {
                Resample::Bilinear => (1.0 - x).max(0.0),
                Resample::Bicubic if x < 1.0 => ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
                Resample::Bicubic if x < 2.0 => (((x - 5.0) * x + 8.0) * x - 4.0) * a,
                Resample::Bicubic => 0.0,
            }
        };
        let mut float_taps = Vec::with_capacity(out_size);
        let mut w_max = 0f64;
        for i in 0..out_size {
            let center = scale * (i as f64 + 0.5);
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(0) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut ws: Vec<f64> = (0..n)
                .map(|j| kernel((j as f64 + xmin as f64 - center + 0.5) * invscale))
                .collect();
            let total: f64 = ws.iter().sum();
            if total != 0.0 {
                ws.iter_mut().for_each(|w| *w /= total);
            }
            w_max = ws.iter().fold(w_max, |m, &w| m.max(w));
            float_taps.push((xmin, ws));
        }
        let mut precision = 0u32;
        if mode == Precision::Pillow {
            precision = 22;
        }
        while mode == Precision::Int16 && precision < 22 {
            let next = (0.5 + w_max * (1u64 << (precision + 1)) as f64) as i64;
            if next >= 1 << 15 {
                break;
            }
            precision += 1;
        }
        let unit = (1u64 << precision) as f64;
        let taps = float_taps
            .into_iter()
            .map(|(start, ws)| {
                let fixed = ws
                    .iter()
                    .map(|&w| {
                        if w < 0.0 {
                            (-0.5 + w * unit) as i32
                        } else {
                            (0.5 + w * unit) as i32
                        }
                    })
                    .collect();
                (start, fixed)
            })
            .collect();
        let round = if precision > 0 {
            1 << (precision - 1)
        } else {
            0
        };
        Self {
            taps,
            precision,
            round,
        }
    }

    fn finish(&self, acc: i64) -> u8 {
        (acc >> self.precision).clamp(0, 255) as u8
    }
}
