//! `config.json` of a transformers `ViTModel` (DINO) or `Dinov2Model` folder, read as
//! transformers writes it, with each family's defaults.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::clip_text::Activation;
use crate::config::{unsupported, ExtraKeys, ModelConfig};
use crate::error::{ModelError, Result};

/// Which transformers model the folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DinoFamily {
    /// `ViTModel` (`model_type: "vit"`): DINO v1 checkpoints (`facebook/dino-vit*`).
    Vit,
    /// `Dinov2Model` (`model_type: "dinov2"`): `facebook/dinov2-*`.
    Dinov2,
}

fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_channels() -> usize {
    3
}
fn d_true() -> bool {
    true
}
fn d_act() -> Activation {
    Activation::Gelu
}

/// The keys of `ViTConfig` / `Dinov2Config` that change the forward pass. Keys whose default
/// differs between the two families are optional here; [`DinoConfig`]'s methods resolve
/// them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DinoConfig {
    /// `vit` or `dinov2`.
    pub model_type: DinoFamily,
    /// Width of the hidden states.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Transformer layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// MLP width (ViT; default 3072).
    #[serde(default)]
    pub intermediate_size: Option<usize>,
    /// MLP width as a multiple of `hidden_size` (DINOv2; default 4).
    #[serde(default)]
    pub mlp_ratio: Option<f64>,
    /// MLP activation (default exact GELU).
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    /// Epsilon of the layer norms (ViT 1e-12, DINOv2 1e-6).
    #[serde(default)]
    pub layer_norm_eps: Option<f64>,
    /// Side of the square image the position embeddings were trained for (default 224).
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Side of one square patch (ViT 16, DINOv2 14).
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// Input channels.
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    /// Whether the query, key and value projections have biases.
    #[serde(default = "d_true")]
    pub qkv_bias: bool,
    /// DINOv2's SwiGLU MLP (the giant model); not supported.
    #[serde(default)]
    pub use_swiglu_ffn: bool,
    /// Keys this struct does not know.
    #[serde(flatten)]
    pub extra: ExtraKeys,
}

/// transformers metadata and training-only keys that do not change the forward pass.
const IGNORED: &[&str] = &[
    "architectures",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "initializer_range",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "drop_path_rate",
    "layerscale_value",
    "encoder_stride",
    "pooler_act",
    "pooler_output_size",
    "apply_layernorm",
    "reshape_hidden_states",
    "out_features",
    "out_indices",
    "stage_names",
    "use_mask_token",
    "name_or_path",
    "id2label",
    "label2id",
];

impl DinoConfig {
    /// The MLP's hidden width.
    pub fn mlp_width(&self) -> usize {
        match self.model_type {
            DinoFamily::Vit => self.intermediate_size.unwrap_or(3072),
            DinoFamily::Dinov2 => {
                (self.hidden_size as f64 * self.mlp_ratio.unwrap_or(4.0)) as usize
            }
        }
    }

    /// Layer-norm epsilon.
    pub fn eps(&self) -> f64 {
        self.layer_norm_eps.unwrap_or(match self.model_type {
            DinoFamily::Vit => 1e-12,
            DinoFamily::Dinov2 => 1e-6,
        })
    }

    /// Trained image side.
    pub fn image_side(&self) -> usize {
        self.image_size.unwrap_or(224)
    }

    /// Patch side.
    pub fn patch(&self) -> usize {
        self.patch_size.unwrap_or(match self.model_type {
            DinoFamily::Vit => 16,
            DinoFamily::Dinov2 => 14,
        })
    }

    /// Patches per side of the trained image (the position-embedding grid).
    pub fn grid(&self) -> usize {
        self.image_side() / self.patch()
    }
}

impl ModelConfig for DinoConfig {
    fn extra_keys(&self) -> &ExtraKeys {
        &self.extra
    }

    fn ignored_keys(&self) -> &'static [&'static str] {
        IGNORED
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.patch() == 0 || self.grid() == 0 {
            return Err(bad(format!(
                "image_size {} and patch_size {} give no patches",
                self.image_side(),
                self.patch()
            )));
        }
        if self.use_swiglu_ffn {
            return Err(unsupported(
                path,
                "DINOv2 MLP",
                "use_swiglu_ffn: true (SwiGLU, DINOv2 giant)",
                "the standard fc1/GELU/fc2 MLP of DINOv2 small, base and large",
            ));
        }
        if let Some(n) = self.extra.get("num_register_tokens") {
            return Err(unsupported(
                path,
                "register tokens",
                n,
                "Dinov2Model without registers",
            ));
        }
        Ok(())
    }
}
