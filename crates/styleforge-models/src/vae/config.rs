//! `AutoencoderKL`'s `config.json`, read as diffusers writes it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{
    check_size, unsupported, ExtraKeys, ModelConfig, MAX_BLOCKS, MAX_LAYERS, MAX_WIDTH,
};
use crate::error::{ModelError, Result};

fn d_three() -> usize {
    3
}
fn d_four() -> usize {
    4
}
fn d_one() -> usize {
    1
}
fn d_channels() -> Vec<usize> {
    vec![64]
}
fn d_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".to_string()]
}
fn d_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".to_string()]
}
fn d_groups() -> usize {
    32
}
fn d_act() -> String {
    "silu".to_string()
}
fn d_scaling() -> f64 {
    0.18215
}
fn d_true() -> bool {
    true
}

/// The VAE's configuration (diffusers `AutoencoderKL` keys and defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Image channels in.
    #[serde(default = "d_three")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "d_three")]
    pub out_channels: usize,
    /// Must all be `DownEncoderBlock2D`.
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    /// Must all be `UpDecoderBlock2D`.
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    /// Channels of each encoder block (reversed for the decoder).
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (decoder blocks have one more).
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    /// Activation; only `silu`.
    #[serde(default = "d_act")]
    pub act_fn: String,
    /// Channels of the latent.
    #[serde(default = "d_four")]
    pub latent_channels: usize,
    /// Groups of every group norm.
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    /// Nominal image size (informational).
    #[serde(default)]
    pub sample_size: Option<serde_json::Value>,
    /// Latents are multiplied by this before the UNet sees them (SD 1.x/2.x: 0.18215).
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    /// Subtracted from latents before scaling (SD3/Flux VAEs; `None` for SD).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Whether the VAE should run in f32 even in a half-precision pipeline.
    #[serde(default = "d_true")]
    pub force_upcast: bool,
    /// Whether `quant_conv` follows the encoder.
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    /// Whether `post_quant_conv` precedes the decoder.
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    /// Whether the mid blocks have their attention layer.
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    /// Keys this struct does not know.
    #[serde(flatten)]
    pub extra: ExtraKeys,
}

impl ModelConfig for VaeConfig {
    fn extra_keys(&self) -> &ExtraKeys {
        &self.extra
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let n = self.block_out_channels.len();
        check_size(path, "block_out_channels", n, MAX_BLOCKS)?;
        for &c in &self.block_out_channels {
            check_size(path, "block_out_channels", c, MAX_WIDTH)?;
        }
        check_size(path, "layers_per_block", self.layers_per_block, MAX_LAYERS)?;
        check_size(path, "latent_channels", self.latent_channels, MAX_WIDTH)?;
        check_size(path, "in_channels", self.in_channels, MAX_WIDTH)?;
        check_size(path, "out_channels", self.out_channels, MAX_WIDTH)?;
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                message: format!(
                    "{} down blocks, {} up blocks and {} block_out_channels must agree",
                    self.down_block_types.len(),
                    self.up_block_types.len(),
                    n
                ),
            });
        }
        if let Some(b) = self
            .down_block_types
            .iter()
            .find(|b| *b != "DownEncoderBlock2D")
        {
            return Err(unsupported(
                path,
                "down block type",
                b,
                "DownEncoderBlock2D",
            ));
        }
        if let Some(b) = self
            .up_block_types
            .iter()
            .find(|b| *b != "UpDecoderBlock2D")
        {
            return Err(unsupported(path, "up block type", b, "UpDecoderBlock2D"));
        }
        if self.act_fn != "silu" {
            return Err(unsupported(path, "act_fn", &self.act_fn, "silu"));
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| self.norm_num_groups == 0 || *c % self.norm_num_groups != 0)
        {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                message: format!(
                    "block channels {c} are not divisible by norm_num_groups {}",
                    self.norm_num_groups
                ),
            });
        }
        Ok(())
    }
}

impl VaeConfig {
    /// How many pixels one latent cell covers along each side: `2^(blocks - 1)`.
    pub fn downscale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}
