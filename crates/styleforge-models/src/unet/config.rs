//! `UNet2DConditionModel`'s `config.json`, read as diffusers writes it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{
    check_size, check_sizes, unsupported, ExtraKeys, ModelConfig, OneOrMany, MAX_BLOCKS,
    MAX_LAYERS, MAX_WIDTH,
};
use crate::error::{ModelError, Result};

/// Down-block kinds of the SD 1.x / 2.x UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    /// Resnets, each followed by a spatial transformer.
    CrossAttnDownBlock2D,
    /// Resnets only.
    DownBlock2D,
}

/// Up-block kinds of the SD 1.x / 2.x UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    /// Resnets, each followed by a spatial transformer.
    CrossAttnUpBlock2D,
    /// Resnets only.
    UpBlock2D,
}

/// Mid-block kinds of the SD 1.x / 2.x UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MidBlockType {
    /// Resnet, spatial transformer, resnet.
    UNetMidBlock2DCrossAttn,
}

fn d_channels() -> usize {
    4
}
fn d_true() -> bool {
    true
}
fn d_down() -> Vec<DownBlockType> {
    use DownBlockType::*;
    vec![
        CrossAttnDownBlock2D,
        CrossAttnDownBlock2D,
        CrossAttnDownBlock2D,
        DownBlock2D,
    ]
}
fn d_up() -> Vec<UpBlockType> {
    use UpBlockType::*;
    vec![
        UpBlock2D,
        CrossAttnUpBlock2D,
        CrossAttnUpBlock2D,
        CrossAttnUpBlock2D,
    ]
}
fn d_mid() -> Option<MidBlockType> {
    Some(MidBlockType::UNetMidBlock2DCrossAttn)
}
fn d_block_out() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn d_layers() -> OneOrMany<usize> {
    OneOrMany::One(2)
}
fn d_one_usize() -> OneOrMany<usize> {
    OneOrMany::One(1)
}
fn d_one() -> usize {
    1
}
fn d_one_f() -> f64 {
    1.0
}
fn d_act() -> String {
    "silu".to_string()
}
fn d_groups() -> Option<usize> {
    Some(32)
}
fn d_eps() -> f64 {
    1e-5
}
fn d_cross() -> OneOrMany<usize> {
    OneOrMany::One(1280)
}
fn d_head_dim() -> OneOrMany<usize> {
    OneOrMany::One(8)
}
fn d_default() -> String {
    "default".to_string()
}
fn d_positional() -> String {
    "positional".to_string()
}
fn d_kernel() -> usize {
    3
}

/// The UNet's configuration (diffusers `UNet2DConditionModel` keys and defaults).
///
/// Settings SD 1.x / 2.x never use (class embeddings, SDXL's added embeddings, ...) are read
/// so that a config asking for them is rejected with a clear message instead of ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Nominal latent size the model was trained at (informational).
    #[serde(default)]
    pub sample_size: Option<serde_json::Value>,
    /// Latent channels in.
    #[serde(default = "d_channels")]
    pub in_channels: usize,
    /// Channels predicted.
    #[serde(default = "d_channels")]
    pub out_channels: usize,
    /// Map the input from [0, 1] to [-1, 1] first.
    #[serde(default)]
    pub center_input_sample: bool,
    /// Timestep embedding as `[cos, sin]` (true) or `[sin, cos]`.
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep embedding.
    #[serde(default)]
    pub freq_shift: f64,
    /// Down blocks, from the input resolution down.
    #[serde(default = "d_down")]
    pub down_block_types: Vec<DownBlockType>,
    /// The bottleneck block.
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<MidBlockType>,
    /// Up blocks, from the bottleneck up.
    #[serde(default = "d_up")]
    pub up_block_types: Vec<UpBlockType>,
    /// Attention to the prompt only (no self-attention); unsupported.
    #[serde(default)]
    pub only_cross_attention: Option<OneOrMany<bool>>,
    /// Channels of each down block (reversed for the up blocks).
    #[serde(default = "d_block_out")]
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    #[serde(default = "d_layers")]
    pub layers_per_block: OneOrMany<usize>,
    /// Padding of the downsampling convolutions.
    #[serde(default = "d_one")]
    pub downsample_padding: usize,
    /// Output scale of the mid block's resnets.
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    /// Activation; only `silu` is used by SD.
    #[serde(default = "d_act")]
    pub act_fn: String,
    /// Groups of every group norm.
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    /// Epsilon of the resnets' group norms.
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    /// Width of the prompt embeddings (per block or for all).
    #[serde(default = "d_cross")]
    pub cross_attention_dim: OneOrMany<usize>,
    /// Transformer blocks inside each spatial transformer.
    #[serde(default = "d_one_usize")]
    pub transformer_layers_per_block: OneOrMany<usize>,
    /// diffusers' historical name for the number of heads (SD 1.x: 8; SD 2.x: `[5, 10, 20, 20]`).
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: OneOrMany<usize>,
    /// The number of heads, when set (takes precedence over `attention_head_dim`).
    #[serde(default)]
    pub num_attention_heads: Option<OneOrMany<usize>>,
    /// Two cross-attention streams; unsupported.
    #[serde(default)]
    pub dual_cross_attention: bool,
    /// Linear (SD 2.x) or 1×1 conv (SD 1.x) projections in the spatial transformers.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Class-conditioning embedding; unsupported.
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// SDXL-style added embeddings; unsupported.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Number of class embeddings; unsupported.
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// Compute attention scores in f32 (matters only in half precision).
    #[serde(default)]
    pub upcast_attention: bool,
    /// How the resnets use the time embedding; only `default` (added) is supported.
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    /// Output scale of the resnets.
    #[serde(default = "d_one_f")]
    pub resnet_out_scale_factor: f64,
    /// Timestep embedding kind; only `positional` is supported.
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    /// Width of the time embedding (default `4 · block_out_channels[0]`).
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    /// Timestep-condition projection (LCM); unsupported.
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    /// Kernel of `conv_in`.
    #[serde(default = "d_kernel")]
    pub conv_in_kernel: usize,
    /// Kernel of `conv_out`.
    #[serde(default = "d_kernel")]
    pub conv_out_kernel: usize,
    /// Attention variant; only `default` is supported.
    #[serde(default = "d_default")]
    pub attention_type: String,
    /// Projection of encoder states before cross-attention; unsupported.
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    /// Dropout (training regularisation; SD uses 0).
    #[serde(default)]
    pub dropout: f64,
    /// Keys this struct does not know.
    #[serde(flatten)]
    pub extra: ExtraKeys,
}

/// Keys diffusers writes with a value that only matters when another feature is on.
const UNET_IGNORED: &[&str] = &["addition_embed_type_num_heads"];

/// Keys of features SD 1.x/2.x never use: accepted when null, rejected when set.
const UNET_UNSUPPORTED_WHEN_SET: &[&str] = &[
    "time_embedding_act_fn",
    "timestep_post_act",
    "reverse_transformer_layers_per_block",
    "encoder_hid_dim_type",
    "cross_attention_norm",
    "mid_block_only_cross_attention",
    "projection_class_embeddings_input_dim",
    "addition_time_embed_dim",
    "class_embeddings_concat",
    "resnet_skip_time_act",
];

impl ModelConfig for UNetConfig {
    fn extra_keys(&self) -> &ExtraKeys {
        &self.extra
    }

    fn ignored_keys(&self) -> &'static [&'static str] {
        UNET_IGNORED
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        for key in UNET_UNSUPPORTED_WHEN_SET {
            match self.extra.get(*key) {
                None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => {}
                Some(v) => {
                    return Err(unsupported(
                        path,
                        "UNet setting",
                        format!("{key} = {v}"),
                        "null (SD 1.x/2.x UNets)",
                    ))
                }
            }
        }
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(bad("`block_out_channels` is empty".into()));
        }
        check_size(path, "block_out_channels", n, MAX_BLOCKS)?;
        for &c in &self.block_out_channels {
            check_size(path, "block_out_channels", c, MAX_WIDTH)?;
        }
        check_sizes(path, "layers_per_block", &self.layers_per_block, MAX_LAYERS)?;
        check_sizes(
            path,
            "cross_attention_dim",
            &self.cross_attention_dim,
            MAX_WIDTH,
        )?;
        check_sizes(
            path,
            "transformer_layers_per_block",
            &self.transformer_layers_per_block,
            MAX_LAYERS,
        )?;
        check_sizes(
            path,
            "attention_head_dim",
            &self.attention_head_dim,
            MAX_WIDTH,
        )?;
        if let Some(h) = &self.num_attention_heads {
            check_sizes(path, "num_attention_heads", h, MAX_WIDTH)?;
        }
        check_size(path, "in_channels", self.in_channels, MAX_WIDTH)?;
        check_size(path, "out_channels", self.out_channels, MAX_WIDTH)?;
        check_size(path, "conv_in_kernel", self.conv_in_kernel, 15)?;
        check_size(path, "conv_out_kernel", self.conv_out_kernel, 15)?;
        if let Some(d) = self.time_embedding_dim {
            check_size(path, "time_embedding_dim", d, MAX_WIDTH)?;
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(bad(format!(
                "{} down blocks and {} up blocks, but {} `block_out_channels`",
                self.down_block_types.len(),
                self.up_block_types.len(),
                n
            )));
        }
        let groups = self
            .norm_num_groups
            .ok_or_else(|| unsupported(path, "norm_num_groups", "null", "an integer"))?;
        for &c in &self.block_out_channels {
            if groups == 0 || c % groups != 0 {
                return Err(bad(format!(
                    "block channels {c} are not divisible by norm_num_groups {groups}"
                )));
            }
        }
        if self.mid_block_type.is_none() {
            return Err(unsupported(
                path,
                "mid_block_type",
                "null",
                "UNetMidBlock2DCrossAttn",
            ));
        }
        if let Some(v) = &self.only_cross_attention {
            if *v != OneOrMany::One(false)
                && !matches!(v, OneOrMany::Many(l) if l.iter().all(|b| !b))
            {
                return Err(unsupported(path, "only_cross_attention", "true", "false"));
            }
        }
        if self.dual_cross_attention {
            return Err(unsupported(path, "dual_cross_attention", "true", "false"));
        }
        for (what, value) in [
            ("class_embed_type", &self.class_embed_type),
            ("addition_embed_type", &self.addition_embed_type),
        ] {
            if let Some(v) = value {
                return Err(unsupported(path, what, v, "null (SD 1.x/2.x UNets)"));
            }
        }
        if self.num_class_embeds.is_some() {
            return Err(unsupported(path, "num_class_embeds", "set", "null"));
        }
        if self.time_cond_proj_dim.is_some() {
            return Err(unsupported(path, "time_cond_proj_dim", "set", "null"));
        }
        if self.encoder_hid_dim.is_some() {
            return Err(unsupported(path, "encoder_hid_dim", "set", "null"));
        }
        if self.act_fn != "silu" {
            return Err(unsupported(path, "act_fn", &self.act_fn, "silu"));
        }
        if self.resnet_time_scale_shift != "default" {
            return Err(unsupported(
                path,
                "resnet_time_scale_shift",
                &self.resnet_time_scale_shift,
                "default",
            ));
        }
        if self.time_embedding_type != "positional" {
            return Err(unsupported(
                path,
                "time_embedding_type",
                &self.time_embedding_type,
                "positional",
            ));
        }
        if self.attention_type != "default" {
            return Err(unsupported(
                path,
                "attention_type",
                &self.attention_type,
                "default",
            ));
        }
        if self.conv_in_kernel.is_multiple_of(2) || self.conv_out_kernel.is_multiple_of(2) {
            return Err(bad("conv_in_kernel and conv_out_kernel must be odd".into()));
        }
        self.heads_per_block(path)?;
        self.layers_per_block
            .per_block(n, "layers_per_block", path)?;
        self.cross_attention_dim
            .per_block(n, "cross_attention_dim", path)?;
        self.transformer_layers_per_block
            .per_block(n, "transformer_layers_per_block", path)?;
        Ok(())
    }
}

impl UNetConfig {
    /// Attention heads of each down block, as diffusers derives them: `num_attention_heads`
    /// when set, else the misnamed `attention_head_dim`.
    pub fn heads_per_block(&self, path: &Path) -> Result<Vec<usize>> {
        let n = self.block_out_channels.len();
        match &self.num_attention_heads {
            Some(h) => h.per_block(n, "num_attention_heads", path),
            None => self
                .attention_head_dim
                .per_block(n, "attention_head_dim", path),
        }
    }

    /// Width of the time embedding.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4)
    }

    /// How many times the UNet halves the latent (one per down block but the last).
    pub fn num_downsamples(&self) -> usize {
        self.block_out_channels.len() - 1
    }

    /// Width of the prompt embeddings the first block expects.
    pub fn context_dim(&self) -> usize {
        match &self.cross_attention_dim {
            OneOrMany::One(d) => *d,
            OneOrMany::Many(v) => v.first().copied().unwrap_or(0),
        }
    }
}
