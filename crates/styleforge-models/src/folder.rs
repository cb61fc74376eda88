//! A diffusers model folder: `model_index.json` and one sub-folder per component
//! (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`), each with its config and
//! safetensors weights.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use crate::clip_text::{ClipTextConfig, ClipTextModel};
use crate::config::{read_config, ModelConfig};
use crate::error::{ModelError, Result};
use crate::tokenizer::ClipTokenizer;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use crate::weights::{component_weight_files, CastCopies, WeightStore};

/// How to load a component.
#[derive(Clone)]
pub struct LoadOptions {
    /// dtype the model computes in (weights stored in another float type are converted).
    pub dtype: DType,
    /// Where the tensors live.
    pub device: Device,
    /// Weights variant, e.g. `fp16` for `diffusion_pytorch_model.fp16.safetensors`.
    pub variant: Option<String>,
    /// When set, every weight becomes a trainable variable registered in this map.
    pub trainable: Option<VarMap>,
    /// With `trainable` and a half-precision `dtype` (mixed-precision training): the
    /// variables stay f32 master weights and the model computes with copies in `dtype`,
    /// registered here to be refreshed after each update.
    pub casts: Option<CastCopies>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            variant: None,
            trainable: None,
            casts: None,
        }
    }
}

impl LoadOptions {
    /// The same options with the weights registered as trainable in `varmap`.
    pub fn trainable_in(&self, varmap: &VarMap) -> Self {
        Self {
            trainable: Some(varmap.clone()),
            ..self.clone()
        }
    }
}

/// A model built from a component folder, with what the loader noticed.
pub struct Loaded<M> {
    /// The model.
    pub model: M,
    /// Tensors in the weights file(s) that the model did not use.
    pub unused_tensors: Vec<String>,
    /// The weights file(s) read.
    pub weight_files: Vec<PathBuf>,
}

/// A diffusers-layout Stable Diffusion folder.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    root: PathBuf,
    index: serde_json::Value,
}

impl ModelFolder {
    /// Opens a folder that holds a `model_index.json`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let index_path = root.join("model_index.json");
        if !root.is_dir() {
            return Err(ModelError::NotFound {
                path: root,
                what: "model folder (a diffusers folder with model_index.json, unet/, vae/, ...)",
            });
        }
        let text = std::fs::read_to_string(&index_path).map_err(|source| ModelError::Io {
            path: index_path.clone(),
            source,
        })?;
        let index = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: index_path,
            message: e.to_string(),
        })?;
        Ok(Self { root, index })
    }

    /// The folder's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `model_index.json` contents.
    pub fn index(&self) -> &serde_json::Value {
        &self.index
    }

    /// The path of a component sub-folder (`unet`, `vae`, ...).
    pub fn component(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Loads the UNet from `unet/`.
    pub fn unet(&self, opts: &LoadOptions) -> Result<Loaded<UNet2DConditionModel>> {
        load_unet(&self.component("unet"), opts)
    }

    /// Loads the VAE from `vae/`.
    pub fn vae(&self, opts: &LoadOptions) -> Result<Loaded<AutoencoderKL>> {
        load_vae(&self.component("vae"), opts)
    }

    /// Loads the text encoder from `text_encoder/`.
    pub fn text_encoder(&self, opts: &LoadOptions) -> Result<Loaded<ClipTextModel>> {
        load_text_encoder(&self.component("text_encoder"), opts)
    }

    /// Loads the tokenizer from `tokenizer/`.
    pub fn tokenizer(&self) -> Result<ClipTokenizer> {
        let dir = self.component("tokenizer");
        ClipTokenizer::from_folder(&dir).map_err(|e| ModelError::Config {
            path: dir,
            message: e.to_string(),
        })
    }
}

/// Loads a `UNet2DConditionModel` from a component folder (`config.json` + weights).
pub fn load_unet(dir: &Path, opts: &LoadOptions) -> Result<Loaded<UNet2DConditionModel>> {
    load_component::<UNetConfig, _>(dir, "config.json", opts, &[], |cfg, vb, _| {
        UNet2DConditionModel::new(cfg, vb)
    })
}

/// Loads an `AutoencoderKL` from a component folder. Legacy attention names
/// (`query`/`key`/`value`/`proj_attn`) are accepted.
pub fn load_vae(dir: &Path, opts: &LoadOptions) -> Result<Loaded<AutoencoderKL>> {
    let aliases = [
        (".to_q.", ".query."),
        (".to_k.", ".key."),
        (".to_v.", ".value."),
        (".to_out.0.", ".proj_attn."),
    ];
    load_component::<VaeConfig, _>(dir, "config.json", opts, &aliases, |cfg, vb, _| {
        AutoencoderKL::new(cfg, vb)
    })
}

/// Loads a `CLIPTextModel` from a component folder, with or without the `text_model.`
/// key prefix.
pub fn load_text_encoder(dir: &Path, opts: &LoadOptions) -> Result<Loaded<ClipTextModel>> {
    load_component::<ClipTextConfig, _>(
        dir,
        "config.json",
        opts,
        &[("text_model.", "")],
        |cfg, vb, _| ClipTextModel::new(cfg, vb),
    )
}

/// Buffers some checkpoints carry that are not weights.
const BUFFERS: &[&str] = &["position_ids"];

fn load_component<C: ModelConfig, M>(
    dir: &Path,
    config_name: &str,
    opts: &LoadOptions,
    aliases: &[(&str, &str)],
    build: impl FnOnce(&C, VarBuilder<'static>, &Path) -> Result<M>,
) -> Result<Loaded<M>> {
    let config_path = dir.join(config_name);
    let config: C = read_config(&config_path)?;
    let files = component_weight_files(dir, opts.variant.as_deref())?;
    let mut store = match (&opts.trainable, &opts.casts) {
        (Some(varmap), Some(casts)) => {
            WeightStore::trainable(&files, varmap)?.with_casts(casts.clone())
        }
        (Some(varmap), None) => WeightStore::trainable(&files, varmap)?,
        (None, _) => WeightStore::frozen(&files)?,
    };
    for (asked, stored) in aliases {
        store = store.with_alias(asked, stored);
    }
    let store = Arc::new(store);
    let vb = store.var_builder(opts.dtype, &opts.device);
    let model = build(&config, vb, &config_path)?;
    let unused_tensors: Vec<String> = store
        .unused()
        .into_iter()
        .filter(|n| !BUFFERS.iter().any(|b| n.ends_with(b)))
        .collect();
    if !unused_tensors.is_empty() {
        tracing::warn!(
            "{}: {} tensors in the weights are not used by the model (first: {})",
            dir.display(),
            unused_tensors.len(),
            unused_tensors[0]
        );
    }
    Ok(Loaded {
        model,
        unused_tensors,
        weight_files: files,
    })
}
