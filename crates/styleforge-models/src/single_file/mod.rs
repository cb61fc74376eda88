//! Single-file checkpoints: the original LDM layout that A1111, ComfyUI and most model sites
//! share (`model.diffusion_model.*`, `first_stage_model.*`, and `cond_stage_model.transformer.*`
//! for SD 1.x or `cond_stage_model.model.*` for SD 2.x), both ways.
//!
//! - [`SingleFile::open`] reads a `.safetensors` checkpoint, infers the architecture from its
//!   tensor shapes (a `--config` folder or JSON file can override any of it) and renames its
//!   tensors to diffusers names; [`SingleFile::unet`] & co. build the models from memory,
//!   [`SingleFile::write_diffusers_folder`] writes a diffusers folder.
//! - [`folder_to_single_file`] writes a diffusers folder as one LDM-layout file.
//!
//! Shapes cannot tell everything: attention heads follow the SD releases (8 heads with a
//! 768-wide context, 64-channel heads otherwise), group norms have 32 groups, and the
//! prediction type is diffusers' default for the family (epsilon for SD 1.x, v-prediction for
//! SD 2.x, as `from_single_file` picks stable-diffusion-2-1) unless set explicitly.
//! Single files carry no tokenizer: the standard CLIP tokenizer is used.
//!
//! Every write is atomic: a folder is built beside its destination and renamed into place, a
//! file is written to a temporary name and renamed; an error leaves nothing behind.

mod backend;
pub mod clip;
mod table;
pub mod unet;
pub mod vae;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::{json, Value};

use crate::clip_text::{ClipTextConfig, ClipTextModel};
use crate::config::{parse_config, ModelConfig};
use crate::error::{ModelError, Result};
use crate::folder::{LoadOptions, Loaded};
use crate::tokenizer::ClipTokenizer;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use crate::weights::{component_weight_files, save_safetensors_atomic};

use backend::MapStore;

/// The diffusers version written into generated configs.
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// Tensor name → shape.
pub(crate) type Shapes = HashMap<String, Vec<usize>>;

/// The model family, as far as the key layout tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// SD 1.x: transformers CLIP text encoder (`cond_stage_model.transformer.*`).
    Sd1,
    /// SD 2.x: OpenCLIP text encoder (`cond_stage_model.model.*`).
    Sd2,
}

/// The key prefixes a Stable Diffusion 1.x / 2.x single file is expected to have.
pub const EXPECTED_PREFIXES: [&str; 4] = [
    unet::PREFIX,
    vae::PREFIX,
    clip::CLIP_PREFIX,
    clip::OPEN_CLIP_PREFIX,
];

/// How to read a single file.
#[derive(Debug, Clone, Default)]
pub struct SingleFileOptions {
    /// A diffusers folder whose component configs (`unet/config.json`, ...,
    /// `scheduler/scheduler_config.json`, and `tokenizer/`) replace the inferred ones, or a
    /// JSON file `{"unet": {...}, "vae": {...}, "text_encoder": {...}, "scheduler": {...},
    /// "prediction_type": "..."}` whose keys are merged over the inferred configs.
    pub config: Option<PathBuf>,
    /// `epsilon`, `v_prediction` or `sample`; the family's diffusers default when unset.
    pub prediction_type: Option<String>,
}

/// One component: its diffusers config and its diffusers-named tensors.
#[derive(Debug, Clone)]
pub struct Component {
    /// The `config.json` contents.
    pub config: Value,
    /// Diffusers name → tensor (as stored: any float dtype, on the CPU).
    pub tensors: HashMap<String, Tensor>,
}

/// A single-file checkpoint, converted in memory to the diffusers layout.
#[derive(Debug, Clone)]
pub struct SingleFile {
    /// The file read.
    pub path: PathBuf,
    /// SD 1.x or 2.x.
    pub family: Family,
    /// `UNet2DConditionModel`.
    pub unet: Component,
    /// `AutoencoderKL`.
    pub vae: Component,
    /// `CLIPTextModel`.
    pub text_encoder: Component,
    /// The `scheduler_config.json` contents.
    pub scheduler: Value,
    /// A tokenizer folder given with the config override, if any.
    pub tokenizer_dir: Option<PathBuf>,
    /// Tensors outside the model prefixes (EMA copies, schedule buffers), not used.
    pub ignored: Vec<String>,
}

/// True for a path that names a single-file checkpoint (`*.safetensors` file) rather than a
/// diffusers folder.
pub fn is_single_file(path: &Path) -> bool {
    path.is_file()
        || (!path.is_dir()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("safetensors")))
}

fn layout_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Unsupported {
        path: path.to_path_buf(),
        what: "single-file checkpoint layout",
        value: message.into(),
        supported: format!(
            "Stable Diffusion 1.x/2.x LDM keys: {} (UNet), {} (VAE), {} (SD 1.x CLIP) or {} (SD 2.x OpenCLIP)",
            EXPECTED_PREFIXES[0], EXPECTED_PREFIXES[1], EXPECTED_PREFIXES[2], EXPECTED_PREFIXES[3]
        ),
    }
}

/// The error for a file with no tensor under any model prefix.
fn no_model_keys(path: &Path, names: &[String]) -> ModelError {
    let sample: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
    layout_error(
        path,
        format!(
            "no Stable Diffusion keys among its {} tensors (e.g. {})",
            names.len(),
            sample.join(", ")
        ),
    )
}

/// Reads every tensor of a safetensors file onto the CPU.
fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| ModelError::InvalidWeights {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads the tensors under the model prefixes of a safetensors file (memory-mapped, so the
/// EMA copies and buffers many checkpoints also carry are never read), and the other names.
fn read_model_tensors(path: &Path) -> Result<(HashMap<String, Tensor>, Vec<String>)> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if matches!(ext.as_deref(), Some("ckpt" | "pt" | "pth" | "bin")) {
        return Err(ModelError::InvalidWeights {
            path: path.to_path_buf(),
            reason: "a pickle checkpoint; those are never loaded (unpickling can run code): \
                     convert it to .safetensors first"
                .into(),
        });
    }
    let invalid = |e: candle_core::Error| ModelError::InvalidWeights {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // SAFETY: mapped read-only; like every mmap user we assume nobody truncates the file
    // while it is read.
    let mmap =
        unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(invalid)?;
    let mut tensors = HashMap::new();
    let mut skipped = Vec::new();
    for (name, _) in mmap.tensors() {
        if EXPECTED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            let view = mmap.get(&name).map_err(invalid)?;
            let t = crate::weights::load_mapped(&view, &Device::Cpu).map_err(invalid)?;
            tensors.insert(name, t);
        } else {
            skipped.push(name);
        }
    }
    skipped.sort();
    Ok((tensors, skipped))
}

fn shapes_of<'a>(names: impl Iterator<Item = (&'a String, &'a Tensor)>) -> Shapes {
    names.map(|(k, t)| (k.clone(), t.dims().to_vec())).collect()
}

/// Merges `over` into `base` key by key (objects recursively).
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The scheduler diffusers pairs with each family (PNDM for SD 1.x, DDIM for SD 2.x).
fn default_scheduler(family: Family, prediction_type: &str) -> Value {
    let mut s = json!({
        "_class_name": "PNDMScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "prediction_type": prediction_type,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "trained_betas": null,
    });
    if family == Family::Sd2 {
        s["_class_name"] = json!("DDIMScheduler");
        s["clip_sample"] = json!(false);
        s.as_object_mut().map(|o| o.remove("skip_prk_steps"));
    }
    s
}

/// Splits `tensors` by component prefix, stripping it.
type Split = HashMap<&'static str, Vec<(String, Tensor)>>;

fn split_by_prefix(tensors: HashMap<String, Tensor>) -> (Split, Vec<String>) {
    let mut split: Split = HashMap::new();
    let mut ignored = Vec::new();
    for (name, tensor) in tensors {
        match EXPECTED_PREFIXES.iter().find(|p| name.starts_with(**p)) {
            Some(p) => split
                .entry(*p)
                .or_default()
                .push((name[p.len()..].to_string(), tensor)),
            None => ignored.push(name),
        }
    }
    ignored.sort();
    (split, ignored)
}

/// Maps LDM tensors through a table; names it does not know are returned as errors.
fn map_to_diffusers(
    tensors: Vec<(String, Tensor)>,
    table: &table::Table,
    prefix: &str,
    path: &Path,
    what: &str,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    let mut unknown = Vec::new();
    for (name, tensor) in tensors {
        match table.to_diffusers(&name) {
            Some(m) => {
                let tensor = if m.conv_1x1 && tensor.rank() == 4 {
                    let (o, i) = (tensor.dim(0)?, tensor.dim(1)?);
                    tensor.reshape((o, i))?
                } else {
                    tensor
                };
                out.insert(m.name, tensor);
            }
            None => unknown.push(format!("{prefix}{name}")),
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        return Err(layout_error(
            path,
            format!(
                "{} {what} tensors fit no SD 1.x/2.x {what} layout (first: {})",
                unknown.len(),
                unknown[..unknown.len().min(3)].join(", ")
            ),
        ));
    }
    Ok(out)
}

/// The diffusers configs `[UNet, VAE, text encoder]` a single-file checkpoint's tensor
/// shapes imply, as [`SingleFile::open`] infers them, from the shapes alone (`shapes` maps
/// each LDM tensor name, prefix included, to its dimensions), with every UNet and VAE name
/// checked against the layout inferred. The text encoder is inferred for the SD 1.x CLIP
/// layout; an OpenCLIP one (SD 2.x) gives `null`. Errors name `path`.
pub fn infer_configs(path: &Path, shapes: &HashMap<String, Vec<usize>>) -> Result<[Value; 3]> {
    let part = |prefix: &str| -> Shapes {
        shapes
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
            .collect()
    };
    let check_names = |shapes: &Shapes, table: &table::Table, prefix: &str, what: &str| {
        let mut unknown: Vec<&String> = shapes
            .keys()
            .filter(|k| table.to_diffusers(k).is_none())
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(first) => Err(layout_error(
                path,
                format!(
                    "{} {what} tensors fit no SD 1.x/2.x {what} layout (first: {prefix}{first})",
                    unknown.len()
                ),
            )),
        }
    };
    let unet_shapes = part(unet::PREFIX);
    let (unet_config, _) = unet::infer_config(&unet_shapes, false)
        .map_err(|e| layout_error(path, format!("UNet: {e}")))?;
    let layout = unet::Layout::from_config(&unet_config)
        .map_err(|e| layout_error(path, format!("UNet config: {e}")))?;
    check_names(&unet_shapes, &layout.table(), unet::PREFIX, "UNet")?;
    let vae_shapes = part(vae::PREFIX);
    let vae_config =
        vae::infer_config(&vae_shapes).map_err(|e| layout_error(path, format!("VAE: {e}")))?;
    let (levels, layers) = vae::layout_from_config(&vae_config);
    check_names(&vae_shapes, &vae::table(levels, layers), vae::PREFIX, "VAE")?;
    let text: Shapes = part(clip::CLIP_PREFIX)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("position_ids"))
        .map(|(k, v)| (clip::with_text_model(&k), v))
        .collect();
    let text_config = if text.is_empty() {
        Value::Null
    } else {
        clip::infer_config(&text, Family::Sd1)
            .map_err(|e| layout_error(path, format!("text encoder: {e}")))?
    };
    Ok([unet_config, vae_config, text_config])
}

impl SingleFile {
    /// Reads and converts a single-file checkpoint.
    pub fn open(path: impl AsRef<Path>, opts: &SingleFileOptions) -> Result<Self> {
        let path = path.as_ref();
        let (tensors, skipped) = read_model_tensors(path)?;
        if tensors.is_empty() {
            return Err(no_model_keys(path, &skipped));
        }
        let mut sf = Self::from_tensors(path, tensors, opts)?;
        sf.ignored.extend(skipped);
        sf.ignored.sort();
        Ok(sf)
    }

    /// Converts the tensors of a single file already in memory; `path` names it in messages.
    pub fn from_tensors(
        path: &Path,
        tensors: HashMap<String, Tensor>,
        opts: &SingleFileOptions,
    ) -> Result<Self> {
        let path = path.to_path_buf();
        let (mut split, ignored) = split_by_prefix(tensors);
        if split.is_empty() {
            return Err(no_model_keys(&path, &ignored));
        }
        let missing: Vec<&str> = [unet::PREFIX, vae::PREFIX]
            .into_iter()
            .filter(|p| !split.contains_key(p))
            .chain(
                (!split.contains_key(clip::CLIP_PREFIX)
                    && !split.contains_key(clip::OPEN_CLIP_PREFIX))
                .then_some("cond_stage_model.transformer.* or cond_stage_model.model.*"),
            )
            .collect();
        if !missing.is_empty() {
            return Err(layout_error(
                &path,
                format!(
                    "a partial checkpoint: no tensors under {} (a full pipeline is needed)",
                    missing.join(", ")
                ),
            ));
        }
        if !ignored.is_empty() {
            tracing::info!(
                "{}: {} tensors outside the model prefixes are not used (first: {})",
                path.display(),
                ignored.len(),
                ignored[0]
            );
        }

        // Overrides.
        let mut over = Value::Null;
        let mut over_dir = None;
        if let Some(cfg) = &opts.config {
            if cfg.is_dir() {
                over_dir = Some(cfg.clone());
            } else {
                over = read_json(cfg)?;
            }
        }
        let dir_config = |comp: &str, file: &str| -> Result<Option<Value>> {
            match &over_dir {
                Some(d) if d.join(comp).join(file).is_file() => {
                    read_json(&d.join(comp).join(file)).map(Some)
                }
                _ => Ok(None),
            }
        };

        // UNet.
        let unet_ldm = split.remove(unet::PREFIX).unwrap_or_default();
        let unet_shapes = shapes_of(unet_ldm.iter().map(|(k, t)| (k, t)));
        let (mut unet_config, unet_family) = unet::infer_config(&unet_shapes, false)
            .map_err(|e| layout_error(&path, format!("UNet: {e}")))?;
        // SD 2.x: an OpenCLIP text encoder, or a 1024-wide cross-attention context.
        let family = if split.contains_key(clip::OPEN_CLIP_PREFIX) {
            Family::Sd2
        } else {
            unet_family
        };
        let dir_scheduler = dir_config("scheduler", "scheduler_config.json")?;
        let prediction_type = opts
            .prediction_type
            .clone()
            .or_else(|| over.get("prediction_type")?.as_str().map(String::from))
            .or_else(|| {
                over.get("scheduler")?
                    .get("prediction_type")?
                    .as_str()
                    .map(String::from)
            })
            .or_else(|| {
                dir_scheduler
                    .as_ref()?
                    .get("prediction_type")?
                    .as_str()
                    .map(String::from)
            })
            .unwrap_or_else(|| match family {
                Family::Sd1 => "epsilon".into(),
                Family::Sd2 => "v_prediction".into(),
            });
        if !["epsilon", "v_prediction", "sample"].contains(&prediction_type.as_str()) {
            return Err(ModelError::BadInput(format!(
                "prediction type `{prediction_type}`: expected epsilon, v_prediction or sample"
            )));
        }
        if family == Family::Sd2 && prediction_type == "v_prediction" {
            unet_config["upcast_attention"] = json!(true);
            unet_config["sample_size"] = json!(96);
        }
        if let Some(c) = dir_config("unet", "config.json")? {
            unet_config = c;
        }
        if let Some(o) = over.get("unet") {
            merge(&mut unet_config, o);
        }
        let layout = unet::Layout::from_config(&unet_config)
            .map_err(|e| layout_error(&path, format!("UNet config: {e}")))?;
        let unet_tensors =
            map_to_diffusers(unet_ldm, &layout.table(), unet::PREFIX, &path, "UNet")?;

        // VAE.
        let vae_ldm = split.remove(vae::PREFIX).unwrap_or_default();
        let vae_shapes = shapes_of(vae_ldm.iter().map(|(k, t)| (k, t)));
        let mut vae_config =
            vae::infer_config(&vae_shapes).map_err(|e| layout_error(&path, format!("VAE: {e}")))?;
        if let Some(c) = dir_config("vae", "config.json")? {
            vae_config = c;
        }
        if let Some(o) = over.get("vae") {
            merge(&mut vae_config, o);
        }
        let (levels, layers) = vae::layout_from_config(&vae_config);
        let vae_tensors = map_to_diffusers(
            vae_ldm,
            &vae::table(levels, layers),
            vae::PREFIX,
            &path,
            "VAE",
        )?;

        // Text encoder.
        let (text_tensors, unknown, text_prefix) =
            if let Some(t) = split.remove(clip::OPEN_CLIP_PREFIX) {
                let (m, u) = clip::open_clip_to_diffusers(t)?;
                (m, u, clip::OPEN_CLIP_PREFIX)
            } else {
                let t = split.remove(clip::CLIP_PREFIX).unwrap_or_default();
                let (m, u) = clip::clip_to_diffusers(t);
                (m, u, clip::CLIP_PREFIX)
            };
        if !unknown.is_empty() {
            return Err(layout_error(
                &path,
                format!(
                    "{} text encoder tensors fit no CLIP/OpenCLIP layout (first: {text_prefix}{})",
                    unknown.len(),
                    unknown[0]
                ),
            ));
        }
        let text_family = if text_prefix == clip::OPEN_CLIP_PREFIX {
            Family::Sd2
        } else {
            Family::Sd1
        };
        let mut text_config = clip::infer_config(&shapes_of(text_tensors.iter()), text_family)
            .map_err(|e| layout_error(&path, format!("text encoder: {e}")))?;
        if let Some(c) = dir_config("text_encoder", "config.json")? {
            text_config = c;
        }
        if let Some(o) = over.get("text_encoder") {
            merge(&mut text_config, o);
        }

        // Scheduler.
        let mut scheduler =
            dir_scheduler.unwrap_or_else(|| default_scheduler(family, &prediction_type));
        if let Some(o) = over.get("scheduler") {
            merge(&mut scheduler, o);
        }
        scheduler["prediction_type"] = json!(prediction_type);

        let tokenizer_dir = over_dir.map(|d| d.join("tokenizer")).filter(|d| d.is_dir());
        Ok(Self {
            path,
            family,
            unet: Component {
                config: unet_config,
                tensors: unet_tensors,
            },
            vae: Component {
                config: vae_config,
                tensors: vae_tensors,
            },
            text_encoder: Component {
                config: text_config,
                tensors: text_tensors,
            },
            scheduler,
            tokenizer_dir,
            ignored,
        })
    }

    fn build<C: ModelConfig, M>(
        &self,
        comp: &Component,
        name: &str,
        opts: &LoadOptions,
        build: impl FnOnce(&C, VarBuilder<'static>, &Path) -> Result<M>,
    ) -> Result<Loaded<M>> {
        let label = PathBuf::from(format!(
            "{} ({name} config inferred from tensor shapes; override with a config folder or JSON)",
            self.path.display()
        ));
        let config: C = parse_config(&comp.config.to_string(), &label)?;
        let store = Arc::new(MapStore::new(
            comp.tensors.clone(),
            self.path.clone(),
            opts.trainable.clone(),
        ));
        let model = build(&config, store.var_builder(opts.dtype, &opts.device), &label)?;
        let unused_tensors = store.unused();
        if !unused_tensors.is_empty() {
            tracing::warn!(
                "{} ({name}): {} tensors are not used by the model (first: {})",
                self.path.display(),
                unused_tensors.len(),
                unused_tensors[0]
            );
        }
        Ok(Loaded {
            model,
            unused_tensors,
            weight_files: vec![self.path.clone()],
        })
    }

    /// Builds the UNet from the converted tensors.
    pub fn unet(&self, opts: &LoadOptions) -> Result<Loaded<UNet2DConditionModel>> {
        self.build::<UNetConfig, _>(&self.unet, "unet", opts, |c, vb, _| {
            UNet2DConditionModel::new(c, vb)
        })
    }

    /// Builds the VAE from the converted tensors.
    pub fn vae(&self, opts: &LoadOptions) -> Result<Loaded<AutoencoderKL>> {
        self.build::<VaeConfig, _>(&self.vae, "vae", opts, |c, vb, _| AutoencoderKL::new(c, vb))
    }

    /// Builds the text encoder from the converted tensors.
    pub fn text_encoder(&self, opts: &LoadOptions) -> Result<Loaded<ClipTextModel>> {
        self.build::<ClipTextConfig, _>(&self.text_encoder, "text_encoder", opts, |c, vb, _| {
            ClipTextModel::new(c, vb)
        })
    }

    /// The tokenizer: the override folder's, else the standard CLIP tokenizer (padding with
    /// `!` for SD 2.x, as stabilityai's tokenizers do).
    pub fn tokenizer(&self) -> Result<ClipTokenizer> {
        let err = |path: PathBuf, e: crate::tokenizer::TokenizerError| ModelError::Config {
            path,
            message: e.to_string(),
        };
        if let Some(dir) = &self.tokenizer_dir {
            return ClipTokenizer::from_folder(dir).map_err(|e| err(dir.clone(), e));
        }
        let mut tok = ClipTokenizer::standard().map_err(|e| err(self.path.clone(), e))?;
        if self.family == Family::Sd2 {
            tok.set_pad_token("!")
                .map_err(|e| err(self.path.clone(), e))?;
        }
        Ok(tok)
    }

    /// Writes a diffusers folder at `out` (which must not exist, or be an empty folder).
    /// The tokenizer folder is written only when the config override has one.
    pub fn write_diffusers_folder(&self, out: &Path) -> Result<()> {
        write_folder_atomic(out, |tmp| {
            let comps = [
                ("unet", &self.unet, "diffusion_pytorch_model.safetensors"),
                ("vae", &self.vae, "diffusion_pytorch_model.safetensors"),
                ("text_encoder", &self.text_encoder, "model.safetensors"),
            ];
            for (name, comp, file) in comps {
                let dir = tmp.join(name);
                create_dir(&dir)?;
                write_json(&dir.join("config.json"), &comp.config)?;
                save_safetensors_atomic(&comp.tensors, &dir.join(file))?;
            }
            create_dir(&tmp.join("scheduler"))?;
            write_json(
                &tmp.join("scheduler").join("scheduler_config.json"),
                &self.scheduler,
            )?;
            let has_tokenizer = match &self.tokenizer_dir {
                Some(src) => {
                    copy_dir(src, &tmp.join("tokenizer"))?;
                    true
                }
                None => false,
            };
            let scheduler_class = self.scheduler["_class_name"]
                .as_str()
                .unwrap_or("PNDMScheduler")
                .to_string();
            let tokenizer = if has_tokenizer {
                json!(["transformers", "CLIPTokenizer"])
            } else {
                json!([null, null])
            };
            let index = json!({
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": DIFFUSERS_VERSION,
                "feature_extractor": [null, null],
                "requires_safety_checker": false,
                "safety_checker": [null, null],
                "scheduler": ["diffusers", scheduler_class],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": tokenizer,
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            });
            write_json(&tmp.join("model_index.json"), &index)
        })
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize") + "\n";
    std::fs::write(path, text).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    create_dir(dst)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    for entry in std::fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let from = entry.path();
        if from.is_file() {
            std::fs::copy(&from, dst.join(entry.file_name())).map_err(io(&from))?;
        }
    }
    Ok(())
}

/// Builds the folder `out` atomically with `fill` ([`crate::files::write_dir_with`]: a
/// temporary folder beside it, renamed into place; on error nothing is left). `out` must not
/// exist, or be an empty folder.
pub fn write_folder_atomic(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if out.exists() {
        let empty = out.is_dir()
            && std::fs::read_dir(out)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty {
            return Err(ModelError::BadInput(format!(
                "{} already exists; choose a new output folder",
                out.display()
            )));
        }
    }
    crate::files::write_dir_with(out, fill)
}

/// Converts a single file to a diffusers folder at `out`.
pub fn single_file_to_folder(file: &Path, out: &Path, opts: &SingleFileOptions) -> Result<()> {
    SingleFile::open(file, opts)?.write_diffusers_folder(out)
}

fn load_component_tensors(dir: &Path) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for file in component_weight_files(dir, None)? {
        out.extend(read_tensors(&file)?);
    }
    Ok(out)
}

/// A diffusers folder's UNet, VAE and text encoder as one LDM-layout name → tensor map.
///
/// The text encoder is written as OpenCLIP (`cond_stage_model.model.*`, fused q/k/v) when it
/// uses `gelu` like SD 2.x's, else as transformers CLIP (`cond_stage_model.transformer.*`).
pub fn folder_to_ldm_tensors(dir: &Path) -> Result<(HashMap<String, Tensor>, Family)> {
    let mut out = HashMap::new();
    let unet_dir = dir.join("unet");
    let unet_config = read_json(&unet_dir.join("config.json"))?;
    let layout = unet::Layout::from_config(&unet_config).map_err(|e| ModelError::Config {
        path: unet_dir.join("config.json"),
        message: e,
    })?;
    let table = layout.table();
    for (name, tensor) in load_component_tensors(&unet_dir)? {
        let mapped = table.to_ldm(&name).ok_or_else(|| {
            ModelError::BadInput(format!(
                "UNet tensor `{name}` has no place in the SD 1.x/2.x LDM layout"
            ))
        })?;
        out.insert(format!("{}{}", unet::PREFIX, mapped.name), tensor);
    }

    let vae_dir = dir.join("vae");
    let (levels, layers) = vae::layout_from_config(&read_json(&vae_dir.join("config.json"))?);
    let table = vae::table(levels, layers);
    for (name, tensor) in load_component_tensors(&vae_dir)? {
        let mapped = table.to_ldm(&name).ok_or_else(|| {
            ModelError::BadInput(format!(
                "VAE tensor `{name}` has no place in the SD 1.x/2.x LDM layout"
            ))
        })?;
        let tensor = if mapped.conv_1x1 && tensor.rank() == 2 {
            let (o, i) = tensor.dims2()?;
            tensor.reshape((o, i, 1, 1))?
        } else {
            tensor
        };
        out.insert(format!("{}{}", vae::PREFIX, mapped.name), tensor);
    }

    let text_dir = dir.join("text_encoder");
    let text_config = read_json(&text_dir.join("config.json"))?;
    let open_clip = text_config.get("hidden_act").and_then(Value::as_str) == Some("gelu");
    let text = load_component_tensors(&text_dir)?;
    let family = if open_clip {
        out.extend(clip::diffusers_to_open_clip(text)?);
        Family::Sd2
    } else {
        out.extend(clip::diffusers_to_clip(text));
        Family::Sd1
    };
    Ok((out, family))
}

/// Writes a diffusers folder as one LDM-layout single file (atomically).
pub fn folder_to_single_file(dir: &Path, out: &Path) -> Result<Family> {
    let (tensors, family) = folder_to_ldm_tensors(dir)?;
    let tensors = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.contiguous()?)))
        .collect::<Result<HashMap<_, _>>>()?;
    save_safetensors_atomic(&tensors, out)?;
    Ok(family)
}

#[cfg(test)]
mod tests;
