//! DINO and DINOv2 image embeddings: transformers' `ViTModel` (DINO v1 checkpoints) and
//! `Dinov2Model`, loaded from a transformers folder, for content similarity.
//!
//! The embedding is the class token of `last_hidden_state`, i.e. after the final layer norm
//! (`last_hidden_state[:, 0]`; for `Dinov2Model` this is also its `pooler_output`), as the
//! DINO / DINOv2 papers and DreamBooth's DINO metric use it. `ViTModel`'s own
//! `pooler_output` (a tanh dense layer that DINO's self-supervised training does not have) is
//! not used.
//!
//! Both are pre-norm ViTs: patch embedding (conv with bias), class token, learned position
//! embeddings, layers of `x + attn(norm1(x))`, `x + mlp(norm2(x))` (DINOv2 scales each branch
//! by a learned `layer_scale`), a final layer norm. Inputs of another size than the trained
//! grid get the position embeddings resampled as transformers does (bicubic, `a = -0.75`,
//! `align_corners=False`, no antialiasing), which DINOv2 always needs in practice
//! (trained at 518 px, used at 224 px).
//!
//! - [`config`]: `config.json` of either family.
//! - [`processor`]: the folder's image processor (`ViTImageProcessor` or
//!   `BitImageProcessor` defaults, overridden by `preprocessor_config.json`).
//!
//! Reference: Caron et al., *Emerging Properties in Self-Supervised Vision Transformers*
//! (2021); Oquab et al., *DINOv2* (2023); transformers `models/vit`, `models/dinov2`.

pub mod config;
pub mod processor;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

pub use config::{DinoConfig, DinoFamily};

use crate::clip_text::Activation;
use crate::clip_vision::ClipImageProcessor;
use crate::config::read_config;
use crate::error::{ModelError, Result};
use crate::nn::attention::{merge_heads, scaled_dot_product_attention, split_heads};
use crate::nn::{kernels, LayerNorm, Linear};
use crate::weights::{component_weight_files, WeightStore};

/// Tensors a checkpoint may hold that the embedding does not use: `ViTModel`'s pooler
/// (tanh dense) and DINOv2's mask token (masked pre-training only).
const UNUSED_OK: &[&str] = &["pooler.dense.", "embeddings.mask_token"];

#[derive(Debug, Clone)]
struct VitAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    heads: usize,
    scale: f64,
}

impl VitAttention {
    fn new(config: &DinoConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = config.hidden_size;
        let qkv = |name: &str| {
            if config.qkv_bias {
                crate::nn::linear(d, d, vb.pp("attention").pp(name))
            } else {
                crate::nn::linear_no_bias(d, d, vb.pp("attention").pp(name))
            }
        };
        Ok(Self {
            query: qkv("query")?,
            key: qkv("key")?,
            value: qkv("value")?,
            output: crate::nn::linear(d, d, vb.pp("output").pp("dense"))?,
            heads: config.num_attention_heads,
            scale: ((d / config.num_attention_heads) as f64).powf(-0.5),
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let q = self.query.forward(x)?;
        let k = self.key.forward(x)?;
        let v = self.value.forward(x)?;
        if kernels::use_cpu_kernels(x) {
            let out = kernels::attention::attention_heads(
                &q,
                &k,
                &v,
                self.heads,
                self.scale as f32,
                false,
            )?;
            return self.output.forward(&out);
        }
        let out = scaled_dot_product_attention(
            &split_heads(&q, self.heads)?,
            &split_heads(&k, self.heads)?,
            &split_heads(&v, self.heads)?,
            self.scale,
            None,
        )?;
        self.output.forward(&merge_heads(&out)?)
    }
}

/// One pre-norm encoder layer. DINOv2's learned `layer_scale` of each branch is folded into
/// the branch's output projection (`attention.output.dense`, `mlp.fc2`) at load time.
#[derive(Debug, Clone)]
struct VitLayer {
    norm1: LayerNorm,
    attention: VitAttention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl VitLayer {
    fn new(config: &DinoConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (d, eps, m) = (config.hidden_size, config.eps(), config.mlp_width());
        let mut attention = VitAttention::new(config, vb.pp("attention"))?;
        Ok(match config.model_type {
            DinoFamily::Vit => Self {
                norm1: LayerNorm::new(d, eps, vb.pp("layernorm_before"))?,
                attention,
                norm2: LayerNorm::new(d, eps, vb.pp("layernorm_after"))?,
                fc1: crate::nn::linear(d, m, vb.pp("intermediate").pp("dense"))?,
                fc2: crate::nn::linear(m, d, vb.pp("output").pp("dense"))?,
                act: config.hidden_act,
            },
            DinoFamily::Dinov2 => {
                let scale1 = vb.pp("layer_scale1").get(d, "lambda1")?;
                let scale2 = vb.pp("layer_scale2").get(d, "lambda1")?;
                attention.output = attention.output.scale_outputs(&scale1)?;
                Self {
                    norm1: LayerNorm::new(d, eps, vb.pp("norm1"))?,
                    attention,
                    norm2: LayerNorm::new(d, eps, vb.pp("norm2"))?,
                    fc1: crate::nn::linear(d, m, vb.pp("mlp").pp("fc1"))?,
                    fc2: crate::nn::linear(m, d, vb.pp("mlp").pp("fc2"))?.scale_outputs(&scale2)?,
                    act: config.hidden_act,
                }
            }
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.attention.forward(&self.norm1.forward(x)?)?;
        let x = (h + x)?;
        let h = self.fc1.forward(&self.norm2.forward(&x)?)?;
        let h = self.fc2.forward(&self.act.apply(&h)?)?;
        h + x
    }
}

/// A DINO (`ViTModel`) or DINOv2 (`Dinov2Model`) image encoder with its image processor.
#[derive(Debug, Clone)]
pub struct DinoModel {
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls_token: Tensor,
    position_embeddings: Tensor,
    layers: Vec<VitLayer>,
    layernorm: LayerNorm,
    processor: ClipImageProcessor,
    config: DinoConfig,
}

impl DinoModel {
    /// Loads a transformers `ViTModel` / `Dinov2Model` folder (`config.json`,
    /// `model.safetensors` or a sharded index, `preprocessor_config.json` if present).
    /// Strict: a missing tensor, one of the wrong shape or one the model does not use (other
    /// than the ViT pooler and the DINOv2 mask token) is an error naming it.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::NotFound {
                path: dir.to_path_buf(),
                what: "transformers ViTModel / Dinov2Model folder (config.json, model.safetensors)",
            });
        }
        let config_path = dir.join("config.json");
        let config: DinoConfig = read_config(&config_path)?;
        let processor = processor::load(dir, config.model_type)?;
        let files = component_weight_files(dir, None)?;
        let store = Arc::new(WeightStore::frozen(&files)?);
        let model = Self::new(&config, store.var_builder(DType::F32, device), processor)?;
        let unused: Vec<String> = store
            .unused()
            .into_iter()
            .filter(|n| !UNUSED_OK.iter().any(|u| n.starts_with(u)))
            .collect();
        if !unused.is_empty() {
            return Err(ModelError::Config {
                path: config_path,
                message: format!(
                    "{} tensor(s) in the weights are not used by this {:?} config: {}; the \
                     weights do not match the config (a ViTModel / Dinov2Model without a \
                     task head is expected)",
                    unused.len(),
                    config.model_type,
                    unused
                        .iter()
                        .take(8)
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(model)
    }

    /// Builds the model from `vb` at the checkpoint root (`embeddings.`, `encoder.layer.N.`,
    /// `layernorm.`).
    pub fn new(config: &DinoConfig, vb: VarBuilder, processor: ClipImageProcessor) -> Result<Self> {
        let (d, p) = (config.hidden_size, config.patch());
        let emb = vb.pp("embeddings");
        let proj = emb.pp("patch_embeddings").pp("projection");
        let patch_weight = proj.get((d, config.num_channels, p, p), "weight")?;
        let patch_bias = proj.get(d, "bias")?;
        let cls_token = emb.get((1, 1, d), "cls_token")?;
        let grid = config.grid();
        let position_embeddings = emb.get((1, grid * grid + 1, d), "position_embeddings")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| VitLayer::new(config, vb.pp("encoder").pp("layer").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let layernorm = LayerNorm::new(d, config.eps(), vb.pp("layernorm"))?;
        Ok(Self {
            patch_weight,
            patch_bias,
            cls_token,
            position_embeddings,
            layers,
            layernorm,
            processor,
            config: config.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &DinoConfig {
        &self.config
    }

    /// The image processor [`Self::embed_images`] uses.
    pub fn processor(&self) -> &ClipImageProcessor {
        &self.processor
    }

    /// `pixel_values` `[b, channels, H, W]` (H and W multiples of the patch size; normalised
    /// as the processor does) → `last_hidden_state` `[b, 1 + patches, hidden]`, after the
    /// final layer norm.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let p = c.patch();
        let dims = pixel_values.dims();
        if dims.len() != 4 || dims[1] != c.num_channels || dims[2] < p || dims[3] < p {
            return Err(ModelError::BadInput(format!(
                "DINO pixel_values must be [batch, {}, height, width] with sides of at least \
                 {p}, got {dims:?}",
                c.num_channels
            )));
        }
        let (b, h, w) = (dims[0], dims[2], dims[3]);
        let x = pixel_values.to_dtype(self.patch_weight.dtype())?;
        let patches = x
            .conv2d(&self.patch_weight, 0, p, 1, 1)?
            .broadcast_add(&self.patch_bias.reshape((1, c.hidden_size, 1, 1))?)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let cls = self.cls_token.broadcast_as((b, 1, c.hidden_size))?;
        let pos = self.position_embeddings_for(h / p, w / p)?;
        let mut x = Tensor::cat(&[&cls, &patches], 1)?
            .broadcast_add(&pos)?
            .contiguous()?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(self.layernorm.forward(&x)?)
    }

    /// The class-token embeddings `[b, hidden]` of `pixel_values` (`last_hidden_state[:, 0]`).
    pub fn cls_embeddings(&self, pixel_values: &Tensor) -> Result<Tensor> {
        Ok(self.forward(pixel_values)?.narrow(1, 0, 1)?.squeeze(1)?)
    }

    /// Preprocesses `images` with the folder's processor and returns their class-token
    /// embeddings `[n, hidden]` (not normalised).
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Tensor> {
        let pixels = self
            .processor
            .pixel_values(images, self.patch_weight.device())?;
        self.cls_embeddings(&pixels)
    }

    /// The position embeddings `[1, 1 + gh·gw, hidden]` for a `gh × gw` patch grid: the
    /// trained ones when the grid matches, else the patch part resampled bicubically as
    /// transformers' `interpolate_pos_encoding` does.
    fn position_embeddings_for(&self, gh: usize, gw: usize) -> Result<Tensor> {
        let grid = self.config.grid();
        if gh == grid && gw == grid {
            return Ok(self.position_embeddings.clone());
        }
        let d = self.config.hidden_size;
        let device = self.position_embeddings.device();
        let all = self
            .position_embeddings
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .squeeze(0)?;
        let class = all.narrow(0, 0, 1)?;
        let patch: Vec<f32> = all.narrow(0, 1, grid * grid)?.flatten_all()?.to_vec1()?;
        let resized = bicubic_resize_hwc(&patch, grid, grid, d, gh, gw);
        let patch = Tensor::from_vec(resized, (gh * gw, d), &Device::Cpu)?;
        Ok(Tensor::cat(&[&class, &patch], 0)?
            .unsqueeze(0)?
            .to_dtype(self.position_embeddings.dtype())?
            .to_device(device)?)
    }
}

/// One axis of torch's bicubic resampling (`upsample_bicubic2d`, `align_corners=False`):
/// per output index the four clamped source indices and the cubic-convolution weights
/// (`A = -0.75`), computed in f32 as torch does for float tensors.
fn cubic_taps(in_size: usize, out_size: usize) -> Vec<([usize; 4], [f32; 4])> {
    const A: f32 = -0.75;
    let conv1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let conv2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let index = (real.floor() as i64).min(in_size as i64 - 1);
            let t = (real - index as f32).clamp(0.0, 1.0);
            let weights = [conv2(t + 1.0), conv1(t), conv1(1.0 - t), conv2(2.0 - t)];
            let clamp = |i: i64| i.clamp(0, in_size as i64 - 1) as usize;
            let idx = [
                clamp(index - 1),
                clamp(index),
                clamp(index + 1),
                clamp(index + 2),
            ];
            (idx, weights)
        })
        .collect()
}

/// Bicubic resize of a `[h, w, c]` grid (row-major) to `[oh, ow, c]`, as
/// `F.interpolate(mode="bicubic", align_corners=False)` on the `[c, h, w]` layout.
pub fn bicubic_resize_hwc(
    data: &[f32],
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let ty = cubic_taps(h, oh);
    let tx = cubic_taps(w, ow);
    let mut out = vec![0f32; oh * ow * c];
    for (y, (iy, wy)) in ty.iter().enumerate() {
        for (x, (ix, wx)) in tx.iter().enumerate() {
            let dst = &mut out[(y * ow + x) * c..(y * ow + x + 1) * c];
            for ch in 0..c {
                let mut acc = 0f32;
                for (a, &sy) in iy.iter().enumerate() {
                    let mut row = 0f32;
                    for (b, &sx) in ix.iter().enumerate() {
                        row += wx[b] * data[(sy * w + sx) * c + ch];
                    }
                    acc += wy[a] * row;
                }
                dst[ch] = acc;
            }
        }
    }
    out
}
