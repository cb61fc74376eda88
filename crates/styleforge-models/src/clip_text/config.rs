//! `CLIPTextModel`'s `config.json`, read as transformers writes it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{check_size, unsupported, ExtraKeys, ModelConfig, MAX_LAYERS, MAX_WIDTH};
use crate::error::{ModelError, Result};

/// Activation of the text encoder's MLPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x · sigmoid(1.702 x)`: OpenAI CLIP (SD 1.x).
    QuickGelu,
    /// Exact (erf) GELU: OpenCLIP (SD 2.x).
    Gelu,
    /// The tanh approximation of GELU.
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluNew,
}

impl Activation {
    /// Applies the activation: the fused kernels for CPU `f32` tensors, candle's ops
    /// elsewhere (CUDA, half precision).
    pub fn apply(self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        use crate::nn::kernels;
        let fused = kernels::use_cpu_kernels(x);
        match self {
            Self::QuickGelu if fused => kernels::gelu::quick_gelu(x),
            Self::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            Self::Gelu if fused => kernels::gelu::gelu_erf(x),
            Self::Gelu => x.gelu_erf(),
            Self::GeluNew => x.gelu(),
        }
    }
}

fn d_vocab() -> usize {
    49408
}
fn d_hidden() -> usize {
    512
}
fn d_inter() -> usize {
    2048
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    8
}
fn d_pos() -> usize {
    77
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
fn d_pad() -> u32 {
    1
}
fn d_bos() -> u32 {
    49406
}
fn d_eos() -> u32 {
    49407
}

/// The text encoder's configuration (transformers `CLIPTextConfig` keys and defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipTextConfig {
    /// Rows of the token embedding.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Width of the hidden states.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Width of the MLPs.
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Width of the (unused by SD) text projection.
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    /// Transformer layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Longest sequence (77 for SD).
    #[serde(default = "d_pos")]
    pub max_position_embeddings: usize,
    /// MLP activation.
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    /// Epsilon of the layer norms.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id.
    #[serde(default = "d_pad")]
    pub pad_token_id: u32,
    /// Start token id.
    #[serde(default = "d_bos")]
    pub bos_token_id: u32,
    /// End token id; its first position gives the pooled output.
    #[serde(default = "d_eos")]
    pub eos_token_id: u32,
    /// Keys this struct does not know.
    #[serde(flatten)]
    pub extra: ExtraKeys,
}

/// transformers metadata and training-only settings that do not change the forward pass.
/// transformers' CLIP config keys with no effect on the forward pass (shared by the text
/// and vision towers' configs).
pub(crate) const IGNORED: &[&str] = &[
    "architectures",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "initializer_range",
    "initializer_factor",
    "attention_dropout",
    "dropout",
    "name_or_path",
    "output_hidden_states",
    "use_cache",
];

impl ModelConfig for ClipTextConfig {
    fn extra_keys(&self) -> &ExtraKeys {
        &self.extra
    }

    fn ignored_keys(&self) -> &'static [&'static str] {
        IGNORED
    }

    fn validate(&self, path: &Path) -> Result<()> {
        check_size(path, "hidden_size", self.hidden_size, MAX_WIDTH)?;
        check_size(
            path,
            "intermediate_size",
            self.intermediate_size,
            4 * MAX_WIDTH,
        )?;
        check_size(path, "projection_dim", self.projection_dim, MAX_WIDTH)?;
        check_size(
            path,
            "num_hidden_layers",
            self.num_hidden_layers,
            MAX_LAYERS,
        )?;
        check_size(
            path,
            "num_attention_heads",
            self.num_attention_heads,
            MAX_WIDTH,
        )?;
        check_size(path, "vocab_size", self.vocab_size, 1 << 21)?;
        check_size(
            path,
            "max_position_embeddings",
            self.max_position_embeddings,
            MAX_WIDTH,
        )?;
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                message: format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            });
        }
        if let Some(serde_json::Value::String(t)) = self.extra.get("model_type") {
            if t != "clip_text_model" && t != "clip" {
                return Err(unsupported(
                    path,
                    "text encoder model_type",
                    t,
                    "clip_text_model",
                ));
            }
        }
        Ok(())
    }
}
