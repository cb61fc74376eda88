//! Generation with adapters applied at load time: LoRA files (either layout, each at its
//! scale, merged into the weights), Textual Inversion embeddings (either layout, added to
//! the tokenizer and token table) and Custom Diffusion deltas.

use std::path::{Path, PathBuf};

use styleforge_models::folder::{LoadOptions, ModelFolder};
use styleforge_schedulers::SchedulerConfig;

use super::custom_diffusion::CustomDiffusionFile;
use super::lora::{merge_lora_files, LoraFile};
use super::textual_inversion::{expand_prompt, install_embeddings, EmbeddingFile};
use super::BaseWeights;
use crate::error::{Error, Result};
use crate::pipelines::StableDiffusion;

/// The adapters to apply.
#[derive(Debug, Clone, Default)]
pub struct GenerationAdapters {
    /// LoRA files and their scales.
    pub loras: Vec<(PathBuf, f64)>,
    /// Textual Inversion embeddings (the token: the diffusers key or the file's stem).
    pub embeddings: Vec<PathBuf>,
    /// A Custom Diffusion delta file.
    pub custom_diffusion: Option<PathBuf>,
}

impl GenerationAdapters {
    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.loras.is_empty() && self.embeddings.is_empty() && self.custom_diffusion.is_none()
    }
}

/// A pipeline with adapters, and the placeholders its prompts may use with their vector
/// counts (pass prompts through [`expand_placeholders`]).
pub struct AdaptedPipeline {
    /// The pipeline.
    pub pipeline: StableDiffusion,
    /// `(placeholder, vectors)`.
    pub placeholders: Vec<(String, usize)>,
}

/// Writes every multi-vector placeholder in `prompt` as all of its tokens.
pub fn expand_placeholders(prompt: &str, placeholders: &[(String, usize)]) -> String {
    placeholders
        .iter()
        .fold(prompt.to_string(), |p, (t, n)| expand_prompt(&p, t, *n))
}

/// Loads a diffusers model folder with `adapters` applied: in `opts.dtype` on `opts.device`,
/// from the `opts.variant` weight files where there are some (`trainable` is ignored).
/// Adapter weights are merged in their own dtype and the result cast to `opts.dtype`.
pub fn load_pipeline(
    dir: &Path,
    adapters: &GenerationAdapters,
    opts: &LoadOptions,
) -> Result<AdaptedPipeline> {
    if !dir.join("model_index.json").is_file() {
        return Err(Error::InvalidRequest(format!(
            "{}: LoRA / embedding / Custom Diffusion files need a diffusers model folder",
            dir.display()
        )));
    }
    let device = opts.device.clone();
    let base = BaseWeights::load_variant(dir, opts.variant.as_deref(), opts.dtype, &device)?;
    let files = adapters
        .loras
        .iter()
        .map(|(p, s)| Ok((LoraFile::load(p)?, *s)))
        .collect::<Result<Vec<_>>>()?;
    let [mut unet, mut te] = if files.is_empty() {
        Default::default()
    } else {
        merge_lora_files(&base, &files)?
    };
    let mut embeddings = adapters
        .embeddings
        .iter()
        .map(|p| EmbeddingFile::load(p, None))
        .collect::<Result<Vec<_>>>()?;
    if let Some(p) = &adapters.custom_diffusion {
        let cd = CustomDiffusionFile::load(p)?;
        for (k, v) in cd.unet_overrides(&base)? {
            if unet.contains_key(&k) {
                return Err(Error::InvalidRequest(format!(
                    "`{k}` is changed by both a LoRA and the Custom Diffusion file"
                )));
            }
            unet.insert(k, v);
        }
        embeddings.extend(cd.embeddings);
    }
    let folder = ModelFolder::open(dir)?;
    let mut tokenizer = folder.tokenizer()?;
    let mut placeholders = Vec::new();
    if !embeddings.is_empty() {
        let (table, p) = install_embeddings(&base, &mut tokenizer, &embeddings)?;
        te.extend(table);
        placeholders = p;
    }
    let pipeline = StableDiffusion::from_parts(
        tokenizer,
        base.build_text_encoder(&te)?,
        base.build_unet(&unet)?,
        folder
            .vae(&LoadOptions {
                dtype: opts.dtype,
                device: device.clone(),
                variant: opts.variant.clone(),
                ..LoadOptions::default()
            })?
            .model,
        SchedulerConfig::from_model_dir(dir)?,
        dir.to_path_buf(),
        device,
    );
    Ok(AdaptedPipeline {
        pipeline,
        placeholders,
    })
}
