//! `CLIPVisionModel`'s config (`vision_config` of a `CLIPModel` `config.json`), read as
//! transformers writes it.

use crate::clip_text::config::IGNORED;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::clip_text::Activation;
use crate::config::{unsupported, ExtraKeys, ModelConfig};
use crate::error::{ModelError, Result};

fn d_hidden() -> usize {
    768
}
fn d_inter() -> usize {
    3072
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
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_act() -> Activation {
    Activation::QuickGelu
}
fn d_eps() -> f64 {
    1e-5
}
fn d_proj() -> usize {
    512
}

/// The vision tower's configuration (transformers `CLIPVisionConfig` keys and defaults:
/// ViT-B/32 at 224 px).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    /// Width of the hidden states.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Width of the MLPs.
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Width of the projection (transformers keeps it here too; `CLIPModel` uses the
    /// top-level `projection_dim`).
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    /// Transformer layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Input channels (3, RGB).
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    /// Side of the square input image in pixels.
    #[serde(default = "d_image")]
    pub image_size: usize,
    /// Side of one square patch in pixels.
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    /// MLP activation.
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    /// Epsilon of the layer norms.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Keys this struct does not know.
    #[serde(flatten)]
    pub extra: ExtraKeys,
}

impl ClipVisionConfig {
    /// Patches per side: `image_size / patch_size`.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens the encoder sees: one per patch plus the class token.
    pub fn num_positions(&self) -> usize {
        self.patches_per_side() * self.patches_per_side() + 1
    }
}

impl ModelConfig for ClipVisionConfig {
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
                "vision hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(bad(format!(
                "vision image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if let Some(serde_json::Value::String(t)) = self.extra.get("model_type") {
            if t != "clip_vision_model" && t != "clip" {
                return Err(unsupported(
                    path,
                    "vision model_type",
                    t,
                    "clip_vision_model",
                ));
            }
        }
        Ok(())
    }
}
