//! CSD, the style descriptor of Somepalli et al., *Measuring Style Similarity in Diffusion
//! Models* (2024): OpenAI CLIP's image tower fine-tuned for style (ViT-L/14 in the released
//! model) and a style projection without bias (1024 → 768), L2-normalised. Style similarity
//! is the cosine of two such embeddings.
//!
//! The tower is [`ClipVisionModel`] (quick GELU, pre-norm, class token after `ln_post`);
//! the weights come from `tools/convert_csd.py`, which turns the published pickled
//! checkpoint into one safetensors file in transformers' `CLIPVisionModel` naming plus
//! `style_projection.weight` (and `content_projection.weight`), with the tower's shape in
//! the file's `config` metadata.
//!
//! Preprocessing is the reference code's (`transforms_branch0` of learn2phoenix/CSD): on the
//! PIL image, torchvision `Resize(224, BICUBIC)` (Pillow's resize of the shortest edge),
//! `CenterCrop(224)` (offsets rounded half to even, as Python's `round`), `ToTensor`,
//! `Normalize` with OpenAI CLIP's mean and std ([`CsdProcessor`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::clip_vision::preprocess::{
    resize_rgb_pillow, Resample, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
};
use crate::clip_vision::{l2_normalize, ClipVisionConfig, ClipVisionModel};
use crate::config::parse_config;
use crate::error::{ModelError, Result};
use crate::nn::Linear;
use crate::weights::WeightStore;

/// The `format` metadata value `tools/convert_csd.py` writes.
pub const CSD_FORMAT: &str = "styleforge-csd";

/// What [`CsdModel::forward`] returns, as the reference `CSD_CLIP.forward`.
#[derive(Debug, Clone)]
pub struct CsdOutput {
    /// `[b, hidden]`: the tower's output (`ln_post` of the class token).
    pub feature: Tensor,
    /// `[b, projection_dim]`: the style embedding, L2-normalised.
    pub style: Tensor,
    /// `[b, projection_dim]`: the content embedding, L2-normalised, when the file has the
    /// content projection.
    pub content: Option<Tensor>,
}

/// CSD's preprocessing: Pillow bicubic resize of the shortest edge to `size`, center crop
/// `size × size` with Python-rounded offsets, `/255`, OpenAI CLIP normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsdProcessor {
    /// Side of the square input (224 for the released model).
    pub size: u32,
}

impl CsdProcessor {
    /// One image → pixel values `[3, size, size]` (f32, CPU).
    pub fn preprocess(&self, img: &RgbImage) -> Result<Tensor> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(ModelError::BadInput("empty image (0 pixels)".to_string()));
        }
        let s = self.size;
        // torchvision `_compute_resized_output_size`: the long side is truncated.
        let (rw, rh) = if w <= h {
            (s, (s as u64 * h as u64 / w as u64) as u32)
        } else {
            ((s as u64 * w as u64 / h as u64) as u32, s)
        };
        let resized = if (rw, rh) == (w, h) {
            img.clone()
        } else {
            resize_rgb_pillow(img, rw, rh, Resample::Bicubic)
        };
        let top = round_half_even_half(rh - s);
        let left = round_half_even_half(rw - s);
        let n = (s * s) as usize;
        let mut out = vec![0f32; 3 * n];
        for y in 0..s {
            for x in 0..s {
                let px = resized.get_pixel(x + left, y + top).0;
                for c in 0..3 {
                    let v = px[c] as f32 / 255.0;
                    out[c * n + (y * s + x) as usize] =
                        (v - OPENAI_CLIP_MEAN[c]) / OPENAI_CLIP_STD[c];
                }
            }
        }
        Ok(Tensor::from_vec(
            out,
            (3, s as usize, s as usize),
            &Device::Cpu,
        )?)
    }

    /// Images → `[n, 3, size, size]` on `device`.
    pub fn pixel_values(&self, images: &[RgbImage], device: &Device) -> Result<Tensor> {
        if images.is_empty() {
            return Err(ModelError::BadInput("no images to preprocess".to_string()));
        }
        let t = images
            .iter()
            .map(|i| self.preprocess(i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&t, 0)?.to_device(device)?)
    }
}

/// `round(d / 2)` with Python's rounding (half to even), torchvision's crop offset.
fn round_half_even_half(d: u32) -> u32 {
    let k = d / 2;
    if d.is_multiple_of(2) || k.is_multiple_of(2) {
        k
    } else {
        k + 1
    }
}

/// The CSD model: CLIP image tower, style projection and (optionally) content projection.
#[derive(Debug, Clone)]
pub struct CsdModel {
    vision: ClipVisionModel,
    style_projection: Linear,
    content_projection: Option<Linear>,
    processor: CsdProcessor,
    path: PathBuf,
}

impl CsdModel {
    /// Loads a file written by `tools/convert_csd.py`. Strict: the `format` / `config`
    /// metadata must be there, and every tensor must be used with the shape the config
    /// implies.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let metadata = read_safetensors_metadata(path)?;
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        match metadata.get("format").map(String::as_str) {
            Some(CSD_FORMAT) => {}
            other => {
                return Err(bad(format!(
                    "metadata `format` is {other:?}, expected \"{CSD_FORMAT}\": convert the \
                     CSD checkpoint with tools/convert_csd.py"
                )))
            }
        }
        let config_text = metadata
            .get("config")
            .ok_or_else(|| bad("no `config` metadata (tools/convert_csd.py writes it)".into()))?;
        let config: ClipVisionConfig = parse_config(config_text, path)?;
        let store = Arc::new(WeightStore::frozen(&[path])?);
        let vb = store.var_builder(DType::F32, device);
        let has_content = store.names().any(|n| n == "content_projection.weight");
        let mut model = Self::new(&config, vb, has_content)?;
        model.path = path.to_path_buf();
        let unused = store.unused();
        if !unused.is_empty() {
            return Err(bad(format!(
                "{} tensor(s) not used by the CSD model of this config: {}",
                unused.len(),
                unused.join(", ")
            )));
        }
        Ok(model)
    }

    /// Builds the model from `vb` in the converted layout (`vision_model.`,
    /// `style_projection.weight`, and `content_projection.weight` when `with_content`); the
    /// projections map `hidden_size` to `config.projection_dim`.
    pub fn new(config: &ClipVisionConfig, vb: VarBuilder, with_content: bool) -> Result<Self> {
        let (d, p) = (config.hidden_size, config.projection_dim);
        let vision = ClipVisionModel::new(config, vb.clone())?;
        let style_projection = crate::nn::linear_no_bias(d, p, vb.pp("style_projection"))?;
        let content_projection = if with_content {
            Some(crate::nn::linear_no_bias(
                d,
                p,
                vb.pp("content_projection"),
            )?)
        } else {
            None
        };
        Ok(Self {
            vision,
            style_projection,
            content_projection,
            processor: CsdProcessor {
                size: config.image_size as u32,
            },
            path: PathBuf::new(),
        })
    }

    /// The tower's config.
    pub fn config(&self) -> &ClipVisionConfig {
        self.vision.config()
    }

    /// The file the model was loaded from (empty when built with [`Self::new`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The preprocessing [`Self::embed_images`] uses.
    pub fn processor(&self) -> CsdProcessor {
        self.processor
    }

    /// `pixel_values` `[b, 3, size, size]` → tower feature, style and content embeddings.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<CsdOutput> {
        let feature = self.vision.forward(pixel_values)?.pooled;
        let style = l2_normalize(&self.style_projection.forward(&feature)?)?;
        let content = match &self.content_projection {
            Some(p) => Some(l2_normalize(&p.forward(&feature)?)?),
            None => None,
        };
        Ok(CsdOutput {
            feature,
            style,
            content,
        })
    }

    /// Preprocesses `images` ([`CsdProcessor`]) and returns their style embeddings
    /// `[n, projection_dim]`, L2-normalised.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Tensor> {
        let device = self.style_projection.weight().device().clone();
        let pixels = self.processor.pixel_values(images, &device)?;
        Ok(self.forward(&pixels)?.style)
    }
}

/// The `__metadata__` map of a safetensors file's header (empty when it has none).
pub fn read_safetensors_metadata(
    path: &Path,
) -> Result<std::collections::BTreeMap<String, String>> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |reason: String| ModelError::InvalidWeights {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(io)?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err(invalid(format!("header of {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| invalid(format!("header: {e}")))?;
    let mut out = std::collections::BTreeMap::new();
    if let Some(meta) = header.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in meta {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(out)
}
