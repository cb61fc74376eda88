//! Custom Diffusion (Kumari et al. 2023): the UNet's cross-attention key and value
//! projections (`attn2.to_k`, `attn2.to_v`) and the embeddings of new modifier tokens
//! (`<new1>`, `<new2>`, …) train, with prior preservation; everything else is frozen.
//! The paper's style baseline binds `<new1> style` to people and `<new2> style` to
//! backgrounds.
//!
//! Only the trained parts are saved, in two layouts:
//! - ours, as deltas (small to compress, meaningful on any copy of the base):
//!   `unet.<weight>` = trained − base for each `attn2.to_k/to_v` weight, and
//!   `token.<modifier>` = the modifier's embedding `[hidden]`;
//! - diffusers' (what `train_custom_diffusion.py` writes and `load_attn_procs` reads):
//!   `pytorch_custom_diffusion_weights.safetensors` with the full trained weights under
//!   `<layer>.processor.to_k_custom_diffusion.weight` / `to_v_custom_diffusion`, plus one
//!   `<modifier>.safetensors` per token holding `{<modifier>: [hidden]}`.
//!
//! [`CustomDiffusionFile::load`] reads either layout.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, Var};
use styleforge_models::clip_text::ClipTextModel;
use styleforge_models::unet::UNet2DConditionModel;
use styleforge_tokenizer::ClipTokenizer;

use super::textual_inversion::{add_tokens, EmbeddingFile};
use super::{BaseWeights, TOKEN_TABLE};
use crate::error::{Error, Result};

/// Whether a UNet weight is one Custom Diffusion trains.
pub fn is_trained_weight(name: &str) -> bool {
    name.ends_with("attn2.to_k.weight") || name.ends_with("attn2.to_v.weight")
}

/// Custom Diffusion's trainable state.
#[derive(Debug, Clone)]
pub struct CustomDiffusion {
    /// `attn2.to_k` / `attn2.to_v` weights, by name, as variables.
    pub kv: Vec<(String, Var)>,
    /// The modifier tokens.
    pub tokens: Vec<String>,
    /// Their ids (the rows after the frozen table).
    pub token_ids: Vec<u32>,
    /// One variable per modifier token, `[1, hidden]`.
    pub embeds: Vec<Var>,
}

impl CustomDiffusion {
    /// Adds the modifier tokens to `tokenizer`, each initialised from its initializer word
    /// (a single existing token), and makes every cross-attention key/value weight
    /// trainable. Fails, naming the token, if a modifier already exists.
    pub fn new(
        base: &BaseWeights,
        tokenizer: &mut ClipTokenizer,
        modifiers: &[&str],
        initializers: &[&str],
    ) -> Result<Self> {
        if modifiers.is_empty() || modifiers.len() != initializers.len() {
            return Err(Error::InvalidRequest(format!(
                "Custom Diffusion needs one initializer per modifier token: {} modifiers, {} initializers",
                modifiers.len(),
                initializers.len()
            )));
        }
        let table = &base.text_encoder[TOKEN_TABLE];
        let mut init_rows = Vec::new();
        for word in initializers {
            let ids = tokenizer.encode_content(word);
            let [id] = ids[..] else {
                return Err(Error::InvalidRequest(format!(
                    "the initializer `{word}` must be a single token, it is {} tokens",
                    ids.len()
                )));
            };
            // f32 whatever the base's dtype: the trained weights are master weights.
            init_rows.push(table.narrow(0, id as usize, 1)?.to_dtype(DType::F32)?);
        }
        let tokens: Vec<String> = modifiers.iter().map(|s| s.to_string()).collect();
        let token_ids = add_tokens(tokenizer, &tokens, table.dim(0)?)?;
        let embeds = init_rows
            .iter()
            .map(Var::from_tensor)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut names: Vec<&String> = base.unet.keys().filter(|k| is_trained_weight(k)).collect();
        names.sort();
        if names.is_empty() {
            return Err(Error::Adapter(
                "the UNet has no cross-attention to_k / to_v weights".into(),
            ));
        }
        let kv = names
            .into_iter()
            .map(|n| {
                let w = base.unet[n].to_dtype(DType::F32)?.copy()?;
                Ok((n.clone(), Var::from_tensor(&w)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            kv,
            tokens,
            token_ids,
            embeds,
        })
    }

    /// Every trainable variable, named.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out: Vec<(String, Var)> = self
            .kv
            .iter()
            .map(|(n, v)| (format!("unet.{n}"), v.clone()))
            .collect();
        for (t, v) in self.tokens.iter().zip(&self.embeds) {
            out.push((format!("token.{t}"), v.clone()));
        }
        out
    }

    /// The UNet and text encoder with the current trainable weights, the UNet's
    /// cross-attention set to Custom Diffusion's training rule: the BOS token's key and
    /// value pass no gradient (diffusers' `CustomDiffusionAttnProcessor`).
    pub fn build(&self, base: &BaseWeights) -> Result<(UNet2DConditionModel, ClipTextModel)> {
        let unet: HashMap<String, Tensor> = self
            .kv
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let table = &base.text_encoder[TOKEN_TABLE];
        let mut rows = vec![table.clone()];
        for v in &self.embeds {
            rows.push(v.as_tensor().to_dtype(table.dtype())?);
        }
        let te = HashMap::from([(TOKEN_TABLE.to_string(), Tensor::cat(&rows, 0)?)]);
        let mut unet = base.build_unet(&unet)?;
        for attn in unet.cross_attentions_mut() {
            attn.set_detach_first_context_token(true);
        }
        Ok((unet, base.build_text_encoder(&te)?))
    }

    /// The saved deltas: `unet.<weight>` = trained − base, `token.<modifier>` = embedding.
    pub fn delta_tensors(&self, base: &BaseWeights) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (n, v) in &self.kv {
            let delta = (v.as_tensor() - base.unet[n].to_dtype(v.dtype())?)?;
            out.insert(format!("unet.{n}"), delta);
        }
        for (t, v) in self.tokens.iter().zip(&self.embeds) {
            out.insert(
                format!("token.{t}"),
                v.as_tensor().squeeze(0)?.to_dtype(DType::F32)?,
            );
        }
        Ok(out)
    }

    /// Writes [`Self::delta_tensors`] to a safetensors file.
    pub fn save(&self, base: &BaseWeights, path: &Path) -> Result<()> {
        styleforge_models::weights::save_safetensors_atomic(&self.delta_tensors(base)?, path)?;
        Ok(())
    }

    /// diffusers' processor layout: `<layer>.processor.to_{k,v}_custom_diffusion.weight`
    /// holding the full trained weights.
    pub fn diffusers_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (n, v) in &self.kv {
            let key = to_processor_key(n)
                .ok_or_else(|| Error::Adapter(format!("`{n}` is not an attn2 to_k/to_v weight")))?;
            out.insert(key, v.as_tensor().to_dtype(DType::F32)?);
        }
        Ok(out)
    }

    /// Writes diffusers' layout into `dir`: [`DIFFUSERS_WEIGHTS_FILE`] and one
    /// `<modifier>.safetensors` per token (`<modifier>` → its embedding), file names with
    /// anything but letters, digits, `-` and `_` replaced by `_`.
    pub fn save_diffusers(&self, dir: &Path) -> Result<()> {
        use styleforge_models::weights::save_safetensors_atomic;
        save_safetensors_atomic(
            &self.diffusers_tensors()?,
            &dir.join(DIFFUSERS_WEIGHTS_FILE),
        )?;
        for (t, v) in self.tokens.iter().zip(&self.embeds) {
            let stem: String = t
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let tensors =
                HashMap::from([(t.clone(), v.as_tensor().squeeze(0)?.to_dtype(DType::F32)?)]);
            save_safetensors_atomic(&tensors, &dir.join(format!("{stem}.safetensors")))?;
        }
        Ok(())
    }
}

/// The file name diffusers gives Custom Diffusion's attention-processor weights.
pub const DIFFUSERS_WEIGHTS_FILE: &str = "pytorch_custom_diffusion_weights.safetensors";

const PROCESSOR_SUFFIXES: [(&str, &str); 2] = [
    (".to_k.weight", ".processor.to_k_custom_diffusion.weight"),
    (".to_v.weight", ".processor.to_v_custom_diffusion.weight"),
];

/// `…attn2.to_k.weight` → `…attn2.processor.to_k_custom_diffusion.weight` (and `to_v`).
fn to_processor_key(name: &str) -> Option<String> {
    PROCESSOR_SUFFIXES
        .iter()
        .find_map(|(ours, theirs)| name.strip_suffix(ours).map(|l| format!("{l}{theirs}")))
}

/// The inverse of [`to_processor_key`].
fn from_processor_key(key: &str) -> Option<String> {
    PROCESSOR_SUFFIXES
        .iter()
        .find_map(|(ours, theirs)| key.strip_suffix(theirs).map(|l| format!("{l}{ours}")))
}

/// How a Custom Diffusion file gives a UNet weight.
#[derive(Debug, Clone)]
pub enum WeightChange {
    /// Added to the base weight (our layout).
    Delta(Tensor),
    /// Replaces the base weight (diffusers' layout).
    Replace(Tensor),
}

impl WeightChange {
    fn tensor(&self) -> &Tensor {
        match self {
            Self::Delta(t) | Self::Replace(t) => t,
        }
    }
}

/// A saved Custom Diffusion file, either layout: UNet weight changes and modifier
/// embeddings.
#[derive(Debug, Clone)]
pub struct CustomDiffusionFile {
    /// `(UNet weight name, change)`.
    pub deltas: Vec<(String, WeightChange)>,
    /// The modifier tokens' embeddings, in file order (sorted by token).
    pub embeddings: Vec<EmbeddingFile>,
}

impl CustomDiffusionFile {
    /// Reads a file written by [`CustomDiffusion::save`], or diffusers'
    /// `pytorch_custom_diffusion_weights.safetensors` together with the `<token>.safetensors`
    /// embedding files beside it (every `*.safetensors` there holding exactly one
    /// `<…>`-style token key).
    pub fn load(path: &Path) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)?;
        let mut file = Self::from_tensors(tensors).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let diffusers = file
            .deltas
            .iter()
            .any(|(_, c)| matches!(c, WeightChange::Replace(_)));
        if diffusers && file.embeddings.is_empty() {
            let dir = path.parent().unwrap_or(Path::new("."));
            file.embeddings = sibling_token_embeddings(dir, path)?;
        }
        Ok(file)
    }

    /// Splits the tensors of a file of either layout; an unknown key is an error.
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Result<Self> {
        let mut deltas = Vec::new();
        let mut embeddings = Vec::new();
        let mut keys: Vec<String> = tensors.keys().cloned().collect();
        keys.sort();
        for k in keys {
            let t = tensors[&k].clone();
            if let Some(n) = k.strip_prefix("unet.") {
                deltas.push((n.to_string(), WeightChange::Delta(t)));
            } else if let Some(n) = from_processor_key(&k) {
                deltas.push((n, WeightChange::Replace(t)));
            } else if let Some(tok) = k.strip_prefix("token.") {
                embeddings.push(EmbeddingFile {
                    token: tok.to_string(),
                    vectors: t.reshape((1, t.elem_count()))?.to_dtype(DType::F32)?,
                });
            } else {
                return Err(Error::Adapter(format!(
                    "Custom Diffusion key `{k}` is neither `unet.<weight>`, `token.<modifier>` \
                     nor diffusers' `<layer>.processor.to_{{k,v}}_custom_diffusion.weight`"
                )));
            }
        }
        Ok(Self { deltas, embeddings })
    }

    /// The UNet replacement weights `base + delta`; fails, naming the key, on a delta for a
    /// weight the UNet lacks or of the wrong shape.
    pub fn unet_overrides(&self, base: &BaseWeights) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (n, change) in &self.deltas {
            let d = change.tensor();
            let Some(w) = base.unet.get(n) else {
                return Err(Error::Adapter(format!(
                    "Custom Diffusion key `unet.{n}` matches no UNet weight"
                )));
            };
            if w.dims() != d.dims() {
                return Err(Error::Adapter(format!(
                    "Custom Diffusion key `unet.{n}` has shape {:?}, the UNet's weight {:?}",
                    d.dims(),
                    w.dims()
                )));
            }
            let d = d.to_dtype(w.dtype())?.to_device(w.device())?;
            let weight = match change {
                WeightChange::Delta(_) => (w + d)?,
                WeightChange::Replace(_) => d,
            };
            out.insert(n.clone(), weight);
        }
        Ok(out)
    }
}

/// The modifier embeddings diffusers saves beside its processor weights: every other
/// `*.safetensors` in `dir` whose only key looks like a token (`<new1>`), sorted by token.
fn sibling_token_embeddings(dir: &Path, weights: &Path) -> Result<Vec<EmbeddingFile>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let p = entry.path();
        if p == weights || p.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            continue;
        }
        let Ok(tensors) = candle_core::safetensors::load(&p, &candle_core::Device::Cpu) else {
            continue;
        };
        if tensors.len() != 1 {
            continue;
        }
        let (token, t) = tensors.into_iter().next().expect("one tensor");
        if !(token.starts_with('<') && token.ends_with('>')) {
            continue;
        }
        out.push(EmbeddingFile {
            token,
            vectors: t.reshape((1, t.elem_count()))?.to_dtype(DType::F32)?,
        });
    }
    out.sort_by(|a, b| a.token.cmp(&b.token));
    Ok(out)
}
