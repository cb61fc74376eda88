//! Adapter methods over frozen Stable Diffusion weights: LoRA ([`lora`]), Textual Inversion
//! ([`textual_inversion`]) and their interchange formats.
//!
//! The models are built from a name → tensor map ([`BaseWeights`]) in which some weights
//! are replaced ("overrides"): `W + (alpha/rank)·B·A` for LoRA, the token table with
//! trainable rows appended for Textual Inversion. A model holds the tensors it was built
//! with, so a training step rebuilds it from the current variables (cheap next to the
//! step) and the gradients reach the adapter variables through the overrides; the frozen
//! base tensors are never variables and never change.

pub mod custom_diffusion;
pub mod generation;
pub mod lora;
pub mod textual_inversion;
pub mod training;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use styleforge_models::clip_text::{ClipTextConfig, ClipTextModel};
use styleforge_models::config::read_config;
use styleforge_models::unet::{UNet2DConditionModel, UNetConfig};
use styleforge_models::weights::component_weight_files;

use crate::error::{Error, Result};

/// Which model an adapter weight belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// The denoising UNet.
    Unet,
    /// The CLIP text encoder.
    TextEncoder,
}

/// The frozen UNet and text-encoder weights of a diffusers folder, held in memory, from
/// which models with some weights replaced are built.
pub struct BaseWeights {
    /// UNet tensors under their diffusers names.
    pub unet: HashMap<String, Tensor>,
    /// Text-encoder tensors, always with the `text_model.` prefix.
    pub text_encoder: HashMap<String, Tensor>,
    unet_config: UNetConfig,
    te_config: ClipTextConfig,
    dtype: DType,
    device: Device,
}

fn load_tensors(
    dir: &Path,
    variant: Option<&str>,
    device: &Device,
    dtype: DType,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for file in component_weight_files(dir, variant)? {
        for (name, t) in candle_core::safetensors::load(&file, device)? {
            let t = if t.dtype().is_float() {
                t.to_dtype(dtype)?
            } else {
                t
            };
            out.insert(name, t);
        }
    }
    Ok(out)
}

impl BaseWeights {
    /// Reads `unet/` and `text_encoder/` of a diffusers model folder, in `dtype`.
    pub fn load(root: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_variant(root, None, dtype, device)
    }

    /// [`Self::load`] from the `variant` weight files (e.g. `fp16`) where a component has
    /// them; stored tensors are converted straight to `dtype` (fp16 files kept as they are
    /// for f16).
    pub fn load_variant(
        root: &Path,
        variant: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let unet_dir = root.join("unet");
        let te_dir = root.join("text_encoder");
        let unet_config_path = unet_dir.join("config.json");
        let te_config_path = te_dir.join("config.json");
        let unet_config: UNetConfig = read_config(&unet_config_path)?;
        let te_config: ClipTextConfig = read_config(&te_config_path)?;
        let unet = load_tensors(&unet_dir, variant, device, dtype)?;
        let text_encoder = load_tensors(&te_dir, variant, device, dtype)?
            .into_iter()
            .filter(|(k, _)| !k.ends_with("position_ids"))
            .map(|(k, v)| {
                if k.starts_with("text_model.") {
                    (k, v)
                } else {
                    (format!("text_model.{k}"), v)
                }
            })
            .collect();
        Ok(Self {
            unet,
            text_encoder,
            unet_config,
            te_config,
            dtype,
            device: device.clone(),
        })
    }

    /// The tensors of one component.
    pub fn tensors(&self, component: Component) -> &HashMap<String, Tensor> {
        match component {
            Component::Unet => &self.unet,
            Component::TextEncoder => &self.text_encoder,
        }
    }

    /// The text encoder's config.
    pub fn text_encoder_config(&self) -> &ClipTextConfig {
        &self.te_config
    }

    /// The dtype the models compute in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Where the tensors live.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn merged(
        base: &HashMap<String, Tensor>,
        overrides: &HashMap<String, Tensor>,
    ) -> Result<HashMap<String, Tensor>> {
        let mut map = base.clone();
        for (k, v) in overrides {
            match map.get(k) {
                Some(old) if old.dims() != v.dims() && !k.ends_with("token_embedding.weight") => {
                    return Err(Error::Adapter(format!(
                        "replacement for `{k}` has shape {:?}, the model's weight {:?}",
                        v.dims(),
                        old.dims()
                    )))
                }
                None => {
                    return Err(Error::Adapter(format!(
                        "replacement for `{k}`: the model has no such weight"
                    )))
                }
                _ => {}
            }
            map.insert(k.clone(), v.clone());
        }
        Ok(map)
    }

    /// Builds the UNet with `overrides` in place of the stored weights of the same name.
    pub fn build_unet(&self, overrides: &HashMap<String, Tensor>) -> Result<UNet2DConditionModel> {
        let map = Self::merged(&self.unet, overrides)?;
        let vb = VarBuilder::from_tensors(map, self.dtype, &self.device);
        Ok(UNet2DConditionModel::new(&self.unet_config, vb)?)
    }

    /// Builds the text encoder with `overrides`; a longer token table (Textual Inversion's
    /// added tokens) widens the vocabulary.
    pub fn build_text_encoder(&self, overrides: &HashMap<String, Tensor>) -> Result<ClipTextModel> {
        let map = Self::merged(&self.text_encoder, overrides)?;
        let mut config = self.te_config.clone();
        if let Some(table) = map.get(TOKEN_TABLE) {
            config.vocab_size = table.dim(0)?;
        }
        let vb = VarBuilder::from_tensors(map, self.dtype, &self.device);
        Ok(ClipTextModel::new(&config, vb)?)
    }
}

/// The name of the text encoder's token-embedding table.
pub const TOKEN_TABLE: &str = "text_model.embeddings.token_embedding.weight";
