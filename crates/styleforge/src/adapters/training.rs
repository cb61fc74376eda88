//! The adapter methods inside the training engine: which variables train, the models
//! rebuilt from them, and the files a finished run writes.

use std::path::Path;

use candle_core::Var;
use styleforge_models::clip_text::ClipTextModel;
use styleforge_models::unet::UNet2DConditionModel;
use styleforge_tokenizer::ClipTokenizer;

use super::custom_diffusion::CustomDiffusion;
use super::lora::{Lora, LoraConfig, LoraFormat};
use super::textual_inversion::TextualInversion;
use super::BaseWeights;
use crate::error::{Error, Result};
use crate::training::config::{Method, ResolvedConfig};

/// The trainable state of an adapter method.
#[derive(Debug, Clone)]
pub enum AdapterState {
    /// LoRA adapters.
    Lora(Lora),
    /// Textual Inversion embeddings.
    TextualInversion(TextualInversion),
    /// Custom Diffusion K/V weights and modifier embeddings.
    CustomDiffusion(CustomDiffusion),
}

/// The file names a finished adapter run writes into `<run>/model`.
pub mod files {
    /// LoRA, diffusers / PEFT layout.
    pub const LORA_PEFT: &str = "pytorch_lora_weights.safetensors";
    /// LoRA, kohya layout (AUTOMATIC1111, ComfyUI).
    pub const LORA_KOHYA: &str = "lora_kohya.safetensors";
    /// Textual Inversion, diffusers layout.
    pub const TI_DIFFUSERS: &str = "learned_embeds.safetensors";
    /// Custom Diffusion deltas.
    pub const CUSTOM_DIFFUSION: &str = "custom_diffusion.safetensors";
}

impl AdapterState {
    /// The adapter a config asks for; Textual Inversion and Custom Diffusion add their
    /// tokens to `tokenizer`.
    pub fn from_config(
        cfg: &ResolvedConfig,
        base: &BaseWeights,
        tokenizer: &mut ClipTokenizer,
    ) -> Result<Self> {
        let a = &cfg.adapter;
        match cfg.method {
            Method::Lora => Ok(Self::Lora(Lora::new(
                base,
                LoraConfig {
                    rank: a.lora_rank,
                    alpha: a.lora_alpha,
                    text_encoder: cfg.train_text_encoder,
                },
                cfg.seed,
            )?)),
            Method::TextualInversion => {
                let init = a.initializer_tokens.first().ok_or_else(|| {
                    Error::InvalidRequest("training.initializer_tokens is empty".into())
                })?;
                Ok(Self::TextualInversion(TextualInversion::new(
                    base,
                    tokenizer,
                    &cfg.concepts[0].token,
                    a.num_vectors,
                    init,
                )?))
            }
            Method::CustomDiffusion => {
                let tokens: Vec<&str> = cfg.concepts.iter().map(|c| c.token.as_str()).collect();
                if a.initializer_tokens.len() < tokens.len() {
                    return Err(Error::InvalidRequest(format!(
                        "training.initializer_tokens needs one word per modifier token ({})",
                        tokens.len()
                    )));
                }
                let inits: Vec<&str> = a.initializer_tokens[..tokens.len()]
                    .iter()
                    .map(String::as_str)
                    .collect();
                Ok(Self::CustomDiffusion(CustomDiffusion::new(
                    base, tokenizer, &tokens, &inits,
                )?))
            }
            m => Err(Error::Adapter(format!(
                "method `{}` is not an adapter method",
                m.name()
            ))),
        }
    }

    /// Every trainable variable, named.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        match self {
            Self::Lora(l) => l.named_vars(),
            Self::TextualInversion(t) => t.named_vars(),
            Self::CustomDiffusion(c) => c.named_vars(),
        }
    }

    /// Whether gradients must flow through the text encoder.
    pub fn trains_text_encoder(&self) -> bool {
        match self {
            Self::Lora(l) => l.trains_text_encoder(),
            Self::TextualInversion(_) | Self::CustomDiffusion(_) => true,
        }
    }

    /// The UNet and text encoder with the current adapter weights.
    pub fn build(&self, base: &BaseWeights) -> Result<(UNet2DConditionModel, ClipTextModel)> {
        match self {
            Self::Lora(l) => l.build(base),
            Self::TextualInversion(t) => Ok((
                base.build_unet(&Default::default())?,
                base.build_text_encoder(&t.overrides(base)?)?,
            )),
            Self::CustomDiffusion(c) => c.build(base),
        }
    }

    /// Writes the trained adapter into `dir`: LoRA in both layouts, Textual Inversion as
    /// diffusers' `learned_embeds.safetensors` and an AUTOMATIC1111 embedding named after
    /// the token, Custom Diffusion's deltas and diffusers' processor weights + token files.
    pub fn save(&self, base: &BaseWeights, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let save = |t: &std::collections::HashMap<String, candle_core::Tensor>, name: &str| {
            styleforge_models::weights::save_safetensors_atomic(t, &dir.join(name))
        };
        match self {
            Self::Lora(l) => {
                l.save(&dir.join(files::LORA_PEFT), LoraFormat::Peft)?;
                l.save(&dir.join(files::LORA_KOHYA), LoraFormat::Kohya)?;
            }
            Self::TextualInversion(t) => {
                save(&t.diffusers_tensors()?, files::TI_DIFFUSERS)?;
                let stem: String = t
                    .placeholder
                    .chars()
                    .map(|c| {
                        if c.is_alphanumeric() || c == '_' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let stem = stem.trim_matches('_');
                let stem = if stem.is_empty() { "embedding" } else { stem };
                save(&t.a1111_tensors()?, &format!("{stem}.safetensors"))?;
            }
            Self::CustomDiffusion(c) => {
                c.save(base, &dir.join(files::CUSTOM_DIFFUSION))?;
                c.save_diffusers(dir)?;
            }
        }
        Ok(())
    }
}
