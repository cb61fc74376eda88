//! `CLIPVisionModel`: an image → patch tokens → the ViT encoder → a pooled image feature,
//! as transformers' `CLIPVisionTransformer` computes it; with [`model::ClipModel`] (both
//! towers and their projections) for CLIP-T / CLIP-I evaluation (issue #6).
//!
//! - [`config`]: `vision_config` keys and transformers' defaults.
//! - [`model`]: `CLIPModel` folders: load, image / text embeddings, prompts.
//! - [`preprocess`]: `CLIPImageProcessor` (resize, center crop, normalize) on `RgbImage`s.
//! - [`score`]: CLIP-T (torchmetrics' `CLIPScore`) and CLIP-I on embeddings.
//!
//! Reference: Radford et al., *Learning Transferable Visual Models From Natural Language
//! Supervision* (2021); transformers `models/clip/modeling_clip.py`.

pub mod config;
pub mod model;
pub mod preprocess;
pub mod score;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

pub use config::ClipVisionConfig;
pub use model::{ClipModel, ClipModelConfig};
pub use preprocess::ClipImageProcessor;
pub use score::{clip_i, clip_t_score, clip_t_scores, cosine_similarity, l2_normalize};

use crate::clip_text::{ClipEncoderLayer, LayerDims};
use crate::error::{ModelError, Result};
use crate::nn::LayerNorm;

/// What the vision tower returns.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// `[b, 1 + patches, hidden]`: the last encoder layer's output (no final norm), as
    /// transformers' `last_hidden_state`.
    pub last_hidden_state: Tensor,
    /// `[b, hidden]`: `post_layernorm` of the class token, transformers' `pooler_output`.
    pub pooled: Tensor,
}

/// transformers' `CLIPVisionTransformer` (weights under `vision_model.`): patch
/// embedding, class and position embeddings, `pre_layrnorm`, a non-causal encoder and
/// `post_layernorm` on the class token.
#[derive(Debug, Clone)]
pub struct ClipVisionModel {
    patch_embedding: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipEncoderLayer>,
    post_layernorm: LayerNorm,
    config: ClipVisionConfig,
}

impl ClipVisionModel {
    /// Builds the vision tower from `vb` at the checkpoint root (it adds `vision_model.`).
    pub fn new(config: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("vision_model");
        let (d, p) = (config.hidden_size, config.patch_size);
        let emb = vb.pp("embeddings");
        let patch_embedding = emb
            .pp("patch_embedding")
            .get((d, config.num_channels, p, p), "weight")?;
        let class_embedding = emb.get(d, "class_embedding")?;
        let position_embedding = emb
            .pp("position_embedding")
            .get((config.num_positions(), d), "weight")?;
        let eps = config.layer_norm_eps;
        let pre_layrnorm = LayerNorm::new(d, eps, vb.pp("pre_layrnorm"))?;
        let dims = LayerDims {
            hidden_size: d,
            intermediate_size: config.intermediate_size,
            num_attention_heads: config.num_attention_heads,
            hidden_act: config.hidden_act,
            layer_norm_eps: eps,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(&dims, vb.pp("encoder").pp("layers").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let post_layernorm = LayerNorm::new(d, eps, vb.pp("post_layernorm"))?;
        Ok(Self {
            patch_embedding,
            class_embedding,
            position_embedding,
            pre_layrnorm,
            layers,
            post_layernorm,
            config: config.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// `pixel_values` `[b, channels, image_size, image_size]` (normalised as
    /// [`ClipImageProcessor`] does) → last hidden state and pooled output.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<ClipVisionOutput> {
        let c = &self.config;
        let dims = pixel_values.dims();
        let expected = [c.num_channels, c.image_size, c.image_size];
        if dims.len() != 4 || dims[1..] != expected {
            return Err(ModelError::BadInput(format!(
                "vision tower pixel_values must be [batch, {}, {}, {}], got {dims:?}",
                c.num_channels, c.image_size, c.image_size
            )));
        }
        let b = dims[0];
        let dtype = self.patch_embedding.dtype();
        let x = pixel_values.to_dtype(dtype)?;
        // [b, d, s, s] → [b, s·s, d]: patches in row-major order, as `flatten(2).transpose(1, 2)`.
        let patches = x
            .conv2d(&self.patch_embedding, 0, c.patch_size, 1, 1)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let class = self
            .class_embedding
            .reshape((1, 1, c.hidden_size))?
            .broadcast_as((b, 1, c.hidden_size))?;
        let mut h = Tensor::cat(&[&class, &patches], 1)?
            .broadcast_add(&self.position_embedding)?
            .contiguous()?;
        h = self.pre_layrnorm.forward(&h)?;
        for layer in &self.layers {
            h = layer.forward(&h, None)?;
        }
        let pooled = self
            .post_layernorm
            .forward(&h.narrow(1, 0, 1)?.squeeze(1)?)?;
        Ok(ClipVisionOutput {
            last_hidden_state: h,
            pooled,
        })
    }
}
