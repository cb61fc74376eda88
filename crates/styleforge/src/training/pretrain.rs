//! `styleforge pretrain`: a small Stable Diffusion base model trained from scratch on
//! captioned pictures (a folder, or the toy world of `styleforge-world`), written as a
//! complete diffusers folder so that every other command works on it unchanged.
//!
//! Two stages, both resumable from their output folder:
//!
//! 1. **VAE** ([`pretrain_vae`]): an `AutoencoderKL` trained as an autoencoder on renders of
//!    *all* seven world styles (so held-out styles are reconstructable too), with the
//!    reconstruction MSE plus a tiny KL term (`vae.kl_weight`, 1e-6), then frozen. Its
//!    `scaling_factor` is set to `1 / std` of the latents measured on fresh renders, as
//!    Stable Diffusion's 0.18215 was measured (Rombach et al. 2022, §4.3 / appendix G).
//! 2. **UNet + text encoder** ([`pretrain`]): trained jointly from fresh PyTorch-style
//!    initialisations ([`styleforge_models::init::PyTorchInit`]) with the epsilon
//!    objective on the DDPM schedule of the model's scheduler config
//!    ([`super::step::compute_loss`]), `unet.caption_dropout` (10%) of captions replaced by
//!    the empty prompt so that classifier-free guidance works, AdamW with warm-up and a
//!    cosine or constant learning rate, gradient clipping. Checkpoints
//!    ([`super::checkpoint`]) hold the weights, the optimizer and every generator's state;
//!    `resume` continues bit-identically. `unet.max_minutes` bounds one sitting: the run
//!    stops with a checkpoint and a model when it is spent, and the next sitting resumes.
//!
//! **Why a one-block VAE (pixel space in diffusers layout).** At 32×32 the styles' detail
//! is one or two pixels wide (hatching, dots, facet edges, pixel blocks); SD's 8× (or even
//! a 4×) latent downsampling blurs exactly that, and the PyTorch experiment in
//! `shared/reference/toy-world/` kept it by training in pixel space. An `AutoencoderKL` with
//! a single down/up block has no down- or upsampler, so its latents keep the image size
//! (`downscale_factor() == 1`): `[4, 32, 32]` for a `[3, 32, 32]` render. It is a
//! near-identity, learned colour transform with a Gaussian posterior, which keeps the
//! folder a plain SD 1.x folder (the pipelines, LoRA, training and conversion code all run
//! on it unchanged) while the UNet effectively works in pixel space.
//!
//! Data: with `data.source = "world"`, sample `i` of step `s` is world sample
//! `s · batch + i` (an endless, deterministic stream in the `data.styles`, by default the
//! four base styles; cel, cubist and pointillist stay held out for personalization). With
//! `data.source = "folder"`, images are drawn epoch-wise from a captioned folder
//! (`img.png` + `img.txt`, the convention of [`crate::data::folder`]); **an image without a
//! caption is trained with the empty caption** (an unconditional sample, as caption dropout
//! makes; the count is logged at start), so that an uncaptioned folder still pretrains an
//! unconditional model instead of failing. No flips: world captions name objects left to
//! right.
//!
//! **Calibration** (release build, the shared 2-core CPU at load 3–4, `assets/toy/base-config`):
//! the VAE stage at batch 8 runs 0.15–0.3 s a step and reached 34.4 dB at step 1,500, 36.9
//! at 2,000 and 38.0 dB at 3,000 (8.3 min; per style 33.8 pointillist … 43.3 watercolor); at
//! batch 32 it ran ~1 s a step and stood at 28.8 dB after 600 steps, so the default is
//! batch 8 × 3,000 steps. The UNet stage (6.7M UNet + 7.1M text encoder, batch 32) runs
//! 3.3 s a step (7.35 s with `layers_per_block` 2), so the default 1,800 steps take about
//! 100 minutes.
//!
//! The output folder holds `pretrain.toml` (the effective config), `vae/` and
//! `vae_metrics.json` (stage 1), `vae_log.jsonl`, `train_log.jsonl` (one
//! [`LogEntry`] per step), `loss.png`, `samples/step-NNNNNNN.png` grids (each sampled style ×
//! a few fixed contents, DDIM, fixed seed), `checkpoints/step-NNNNNNN/` and `model/`: the
//! diffusers folder (rewritten at every checkpoint and at the end; f32, or f16 tensors in
//! the plain file names with `output.f16`, which the loader up-casts with no flag).
//! `model/tokenizer/` is the standard 49,408-token CLIP tokenizer written out as
//! `vocab.json` + `merges.txt` ([`write_standard_tokenizer`]).

use super::engine::normal;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use styleforge_models::clip_text::{ClipTextConfig, ClipTextModel};
use styleforge_models::config::read_config;
use styleforge_models::folder::{load_vae, LoadOptions};
use styleforge_models::init::PyTorchInit;
use styleforge_models::tokenizer::ClipTokenizer;
use styleforge_models::unet::{UNet2DConditionModel, UNetConfig};
use styleforge_models::vae::{AutoencoderKL, VaeConfig};
use styleforge_models::weights::{save_safetensors_atomic, varmap_tensors};
use styleforge_schedulers::{DdpmScheduler, SchedulerConfig, SeededNoise};
pub use styleforge_world::Style;
use styleforge_world::World;

use super::checkpoint::{self, TrainState};
use super::engine::{read_log, LogEntry};
use super::step::{clip_grad_norm, compute_loss, NoiseSchedule, StepBatch, StepModels};
use crate::data::{EpochSampler, ImageFolder, Preprocess, RngState};
use crate::error::{Error, Result};
use crate::image_io::{rgb_to_tensor, tensor_to_rgb};
use crate::optim::{AdamW, AdamWConfig};
use crate::pipelines::{SamplingOptions, StableDiffusion, Txt2ImgRequest};
use crate::progress::{NoProgress, Progress};
use crate::report::ImageGrid;

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// Where pretraining pictures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// The toy world, rendered on the fly (`data.world_seed`, `data.styles`, `data.size`).
    World,
    /// A captioned image folder (`data.folder`).
    Folder,
}

/// `[data]`: the pretraining pictures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainData {
    /// World or folder.
    pub source: DataSource,
    /// The folder for `source = "folder"`.
    pub folder: Option<PathBuf>,
    /// Seed of the world's pictures.
    pub world_seed: u64,
    /// World styles of the UNet stage (and of the sample grids); default the base styles.
    pub styles: Vec<Style>,
    /// Picture side in pixels (world renders; folder images are resized/cropped to it).
    pub size: u32,
}

impl Default for PretrainData {
    fn default() -> Self {
        Self {
            source: DataSource::World,
            folder: None,
            world_seed: 0,
            styles: Style::BASE.to_vec(),
            size: 32,
        }
    }
}

/// `[model]`: the architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainModel {
    /// A folder of configs in diffusers layout (`model_index.json`, `unet/config.json`,
    /// `vae/config.json`, `text_encoder/config.json`, `scheduler/scheduler_config.json`);
    /// weights there, if any, are ignored.
    pub config: PathBuf,
}

impl Default for PretrainModel {
    fn default() -> Self {
        Self {
            config: PathBuf::from("assets/toy/base-config"),
        }
    }
}

/// `[vae]`: stage 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeStage {
    /// Optimizer steps.
    pub steps: usize,
    /// Renders per step (all seven styles in turn).
    pub batch: usize,
    /// Peak learning rate (20 warm-up steps, cosine decay to 0).
    pub lr: f64,
    /// Weight of the KL term (SD's VAE uses 1e-6).
    pub kl_weight: f64,
    /// Held-out renders (other seed) for PSNR and the latent statistics.
    pub eval_images: usize,
    /// Measure PSNR every this many steps (0: only at the end).
    pub eval_every: usize,
}

impl Default for VaeStage {
    fn default() -> Self {
        Self {
            steps: 3000,
            batch: 8,
            lr: 2e-3,
            kl_weight: 1e-6,
            eval_images: 70,
            eval_every: 500,
        }
    }
}

/// Learning-rate shape after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrShape {
    /// Constant at the peak.
    Constant,
    /// Half a cosine from the peak to 0 at the last step.
    Cosine,
}

/// `[unet]`: stage 2 (UNet and text encoder jointly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnetStage {
    /// Total optimizer steps (the learning-rate schedule spans them).
    pub steps: usize,
    /// Wall-clock budget of one sitting in minutes; the run stops with a checkpoint when it
    /// is spent and `--resume` continues.
    pub max_minutes: Option<f64>,
    /// Pictures per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Shape after the warm-up.
    pub lr_schedule: LrShape,
    /// Fraction of captions replaced by `""` (classifier-free guidance).
    pub caption_dropout: f64,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
}

impl Default for UnetStage {
    fn default() -> Self {
        Self {
            steps: 1800,
            max_minutes: None,
            batch: 32,
            lr: 5e-4,
            warmup_steps: 200,
            lr_schedule: LrShape::Cosine,
            caption_dropout: 0.1,
            max_grad_norm: 1.0,
            weight_decay: 0.01,
        }
    }
}

/// `[output]`: the run folder and what is written into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainOutput {
    /// The run folder.
    pub dir: PathBuf,
    /// Checkpoint (and `model/`) every this many steps (0: only at the end or a stop).
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Sample grid every this many steps and at the end (0: never).
    pub sample_every: usize,
    /// Denoising steps of the sample grids.
    pub sample_steps: usize,
    /// Guidance scale of the sample grids.
    pub sample_guidance: f64,
    /// DDIM eta of the sample grids (1: stochastic; a young model's deterministic samples
    /// keep a speckle of their initial noise).
    pub sample_eta: f64,
    /// Write `model/` weights as f16 tensors (half the size; for shipping).
    pub f16: bool,
}

impl Default for PretrainOutput {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs/pretrain"),
            checkpoint_every: 250,
            keep_checkpoints: 2,
            sample_every: 500,
            sample_steps: 25,
            sample_guidance: 4.0,
            sample_eta: 1.0,
            f16: false,
        }
    }
}

/// A pretraining run (TOML: top-level `seed`, sections `[data]`, `[model]`, `[vae]`,
/// `[unet]`, `[output]`; every key has a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// Seed of the fresh weights, noise, timesteps and caption dropout.
    pub seed: u64,
    /// The pictures.
    pub data: PretrainData,
    /// The architecture.
    pub model: PretrainModel,
    /// Stage 1.
    pub vae: VaeStage,
    /// Stage 2.
    pub unet: UnetStage,
    /// The run folder.
    pub output: PretrainOutput,
}

impl PretrainConfig {
    /// Parses TOML (`path` names it in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        Self::from_toml(&text, path)
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::msg(e.to_string()))
    }

    /// Applies `key=value` overrides (dotted keys, TOML values; bare words are strings),
    /// as `styleforge train --set` does: `unet.lr=3e-4`, `data.styles=["plain","sketch"]`.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<Self> {
        let text = super::config::apply_overrides(self, overrides, "unet.lr=3e-4")?;
        Self::from_toml(&text, Path::new("<command-line overrides>"))
    }

    /// Checks values that would otherwise fail late.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::msg(format!("invalid pretrain config: {m}")));
        if self.unet.batch == 0 || self.vae.batch == 0 {
            return bad("batch sizes must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.unet.caption_dropout) {
            return bad("unet.caption_dropout must be in [0, 1]");
        }
        if self.data.source == DataSource::Folder && self.data.folder.is_none() {
            return bad("data.source = \"folder\" needs data.folder");
        }
        if self.data.size == 0 {
            return bad("data.size must be positive");
        }
        Ok(())
    }

    /// The learning rate of UNet step `step` (1-based): linear warm-up, then constant or
    /// cosine to 0 at `unet.steps`.
    pub fn lr_at(&self, step: usize) -> f64 {
        let u = &self.unet;
        if u.warmup_steps > 0 && step <= u.warmup_steps {
            return u.lr * step as f64 / u.warmup_steps as f64;
        }
        match u.lr_schedule {
            LrShape::Constant => u.lr,
            LrShape::Cosine => {
                let span = u.steps.saturating_sub(u.warmup_steps).max(1) as f64;
                let p = ((step - u.warmup_steps.min(step)) as f64 / span).min(1.0);
                u.lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        }
    }
}

/// Which stages a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    /// Only the VAE (retrained even when `vae/` exists).
    Vae,
    /// Only the UNet and text encoder (needs `vae/` from an earlier call).
    Unet,
    /// The VAE when `vae/` is missing, then the UNet and text encoder.
    #[default]
    Both,
}

/// How a pretraining call runs.
#[derive(Debug, Clone, Default)]
pub struct PretrainOptions {
    /// The stages.
    pub stage: Stage,
    /// Continue the UNet stage from the newest checkpoint.
    pub resume: bool,
    /// Stop the UNet stage (with a checkpoint) after this many steps, as an interrupted
    /// run would; used to test exact resume.
    pub stop_after: Option<usize>,
}

/// What stage 1 measured (`vae_metrics.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeReport {
    /// Optimizer steps trained.
    pub steps: usize,
    /// PSNR (dB, 8-bit range) of the posterior-mean reconstruction on held-out renders of
    /// all styles.
    pub psnr_db: f64,
    /// PSNR per style, in [`Style::ALL`] order.
    pub psnr_per_style: Vec<(Style, f64)>,
    /// Standard deviation of the posterior means on those renders.
    pub latent_std: f64,
    /// `1 / latent_std`, written into `vae/config.json`.
    pub scaling_factor: f64,
    /// Parameters of the VAE.
    pub parameters: usize,
    /// Seconds the stage took.
    pub seconds: f64,
}

/// What a pretraining call produced.
#[derive(Debug, Clone)]
pub struct PretrainSummary {
    /// Stage 1's report, when it ran in this call or was found.
    pub vae: Option<VaeReport>,
    /// UNet steps done in total.
    pub steps: usize,
    /// Loss of the last UNet step (NaN when none ran).
    pub last_loss: f64,
    /// Mean seconds per UNet step in this call (NaN when none ran).
    pub seconds_per_step: f64,
    /// Trainable parameters: UNet, text encoder (0 when stage 2 did not run).
    pub parameters: (usize, usize),
    /// `<out>/model` when it was written in this call.
    pub model_dir: Option<PathBuf>,
    /// Whether stage 2 reached `unet.steps`.
    pub finished: bool,
    /// The run folder.
    pub out_dir: PathBuf,
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::msg(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(io(path))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(io(dst))?;
    for entry in std::fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let path = entry.path();
        let to = dst.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &to)?;
        } else {
            std::fs::copy(&path, &to).map_err(io(&path))?;
        }
    }
    Ok(())
}

fn count_params(vars: &VarMap) -> usize {
    vars.all_vars().iter().map(|v| v.elem_count()).sum()
}

fn named_vars(vars: &VarMap, prefix: &str) -> Vec<(String, Var)> {
    let mut named: Vec<(String, Var)> = vars
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// The weights of `vars`, cast to f16 when `f16`.
fn tensors_for_saving(vars: &VarMap, f16: bool) -> Result<HashMap<String, Tensor>> {
    let mut out = varmap_tensors(vars);
    if f16 {
        for t in out.values_mut() {
            *t = t.to_dtype(DType::F16)?;
        }
    }
    Ok(out)
}

/// The standard CLIP tokenizer as `vocab.json` and `merges.txt` text.
///
/// The merges are recovered from the vocabulary: the token of rank `r` (id `512 + r`) is
/// re-segmented by byte-pair encoding with the merges of lower rank, which leaves exactly
/// the pair that merge `r` joined.
fn standard_tokenizer_files() -> Result<(String, String)> {
    let tok = ClipTokenizer::standard().map_err(|e| Error::msg(e.to_string()))?;
    let n = tok.base_vocab_size();
    let tokens: Vec<String> = (0..n as u32)
        .map(|id| {
            tok.id_to_token(id)
                .map(str::to_string)
                .ok_or_else(|| Error::msg(format!("standard tokenizer lacks id {id}")))
        })
        .collect::<Result<_>>()?;
    let mut ranks: HashMap<(String, String), usize> = HashMap::new();
    let mut merges = String::from("#version: 0.2\n");
    // 256 byte symbols, the same with `</w>`, the merges, then the two special tokens.
    for (rank, token) in tokens[512..n - 2].iter().enumerate() {
        let (body, end_of_word) = match token.strip_suffix("</w>") {
            Some(b) => (b, true),
            None => (token.as_str(), false),
        };
        let mut syms: Vec<String> = body.chars().map(|c| c.to_string()).collect();
        if end_of_word {
            if let Some(last) = syms.last_mut() {
                last.push_str("</w>");
            }
        }
        while syms.len() > 2 {
            let best = (0..syms.len() - 1)
                .filter_map(|i| {
                    ranks
                        .get(&(syms[i].clone(), syms[i + 1].clone()))
                        .map(|&r| (r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let right = syms.remove(i + 1);
            syms[i].push_str(&right);
        }
        if syms.len() != 2 {
            return Err(Error::msg(format!(
                "cannot recover the merge of standard token {token:?}"
            )));
        }
        merges.push_str(&format!("{} {}\n", syms[0], syms[1]));
        let right = syms.pop().expect("two symbols");
        let left = syms.pop().expect("two symbols");
        ranks.insert((left, right), rank);
    }
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
        .collect();
    let vocab = serde_json::to_string(&vocab).map_err(|e| Error::msg(e.to_string()))?;
    Ok((vocab, merges))
}

/// Writes the standard 49,408-token CLIP tokenizer (what SD 1.x ships) into `dir` as a
/// transformers tokenizer folder (`vocab.json`, `merges.txt`, `tokenizer_config.json`,
/// `special_tokens_map.json`), and checks that the folder encodes like
/// [`ClipTokenizer::standard`].
pub fn write_standard_tokenizer(dir: &Path) -> Result<()> {
    let (vocab, merges) = standard_tokenizer_files()?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let write = |name: &str, text: &str| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io(&p))
    };
    write("vocab.json", &vocab)?;
    write("merges.txt", &merges)?;
    let specials = serde_json::json!({
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    });
    write_json(&dir.join("special_tokens_map.json"), &specials)?;
    let mut config = specials;
    config["model_max_length"] = 77.into();
    config["do_lower_case"] = true.into();
    config["tokenizer_class"] = "CLIPTokenizer".into();
    config["add_prefix_space"] = false.into();
    config["errors"] = "replace".into();
    write_json(&dir.join("tokenizer_config.json"), &config)?;
    let written = ClipTokenizer::from_folder(dir).map_err(|e| Error::msg(e.to_string()))?;
    let standard = ClipTokenizer::standard().map_err(|e| Error::msg(e.to_string()))?;
    for probe in [
        "a red house and an orange sun on grass at sunset, pixel art style",
        "cubist pointillist watercolor sketch, zwx style!",
        "Hello wörld 123 -- it's a dog's life",
    ] {
        if written.encode_padded(probe).ids != standard.encode_padded(probe).ids {
            return Err(Error::msg(format!(
                "the tokenizer written to {} does not encode {probe:?} as the standard one",
                dir.display()
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------

/// The pictures of the UNet stage.
enum DataSet {
    World(World),
    Folder {
        folder: ImageFolder,
        prep: Preprocess,
        captions: Vec<String>,
    },
}

impl DataSet {
    fn open(cfg: &PretrainConfig) -> Result<Self> {
        match cfg.data.source {
            DataSource::World => Ok(DataSet::World(
                World::new(cfg.data.world_seed)
                    .with_size(cfg.data.size)
                    .with_styles(&cfg.data.styles),
            )),
            DataSource::Folder => {
                let root = cfg.data.folder.clone().unwrap_or_default();
                let prep = Preprocess::new(cfg.data.size);
                let folder = ImageFolder::scan(&root, &prep, 1)?;
                let captions: Vec<String> = folder
                    .entries()
                    .iter()
                    .map(|e| e.caption.clone().unwrap_or_default())
                    .collect();
                let missing = captions.iter().filter(|c| c.is_empty()).count();
                if missing > 0 {
                    tracing::warn!(
                        "{} of {} images in {} have no caption; they are trained with the empty caption (unconditional)",
                        missing,
                        captions.len(),
                        root.display()
                    );
                }
                Ok(DataSet::Folder {
                    folder,
                    prep,
                    captions,
                })
            }
        }
    }

    /// Number of images for the epoch sampler (a world is endless: 1, unused).
    fn sampler_len(&self) -> usize {
        match self {
            DataSet::World(_) => 1,
            DataSet::Folder { folder, .. } => folder.len(),
        }
    }

    /// The images `[b, 3, s, s]` in [-1, 1] and captions of one batch.
    fn batch(
        &self,
        step: usize,
        b: usize,
        sampler: &mut EpochSampler,
        device: &Device,
    ) -> Result<(Tensor, Vec<String>)> {
        let mut images = Vec::with_capacity(b);
        let mut captions = Vec::with_capacity(b);
        for row in 0..b {
            match self {
                DataSet::World(world) => {
                    let s = world.sample((step * b + row) as u64);
                    images.push(rgb_to_tensor(&s.image, device)?);
                    captions.push(s.caption);
                }
                DataSet::Folder {
                    folder,
                    prep,
                    captions: all,
                } => {
                    let i = sampler.next_index();
                    images.push(folder.tensor(i, prep, false, device)?.unsqueeze(0)?);
                    captions.push(all[i].clone());
                }
            }
        }
        Ok((Tensor::cat(&images, 0)?, captions))
    }
}

/// Renders `indices` of `world` as one `[n, 3, s, s]` tensor in [-1, 1].
fn world_images(
    world: &World,
    indices: impl Iterator<Item = u64>,
    device: &Device,
) -> Result<Tensor> {
    let images = indices
        .map(|i| rgb_to_tensor(&world.sample(i).image, device))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&images, 0)?)
}

// ---------------------------------------------------------------------------------------
// Stage 1: the VAE
// ---------------------------------------------------------------------------------------

/// The held-out renders of the VAE evaluation: every style in turn, from another seed.
fn vae_eval_world(cfg: &PretrainConfig) -> World {
    World::new(cfg.data.world_seed.wrapping_add(1_000_003)).with_size(cfg.data.size)
}

/// What [`evaluate_vae`] measures: overall PSNR, PSNR per style, std of the latents.
type VaeEval = (f64, Vec<(Style, f64)>, f64);

/// PSNR per style and overall, and the std of the posterior means, on held-out renders.
fn evaluate_vae(vae: &AutoencoderKL, cfg: &PretrainConfig, device: &Device) -> Result<VaeEval> {
    let world = vae_eval_world(cfg);
    let n = cfg.vae.eval_images.max(Style::ALL.len());
    let mut sq_err = [0f64; 7];
    let mut count = [0usize; 7];
    let (mut sum, mut sum_sq, mut elems) = (0f64, 0f64, 0usize);
    for start in (0..n).step_by(32) {
        let end = (start + 32).min(n);
        let x = world_images(&world, start as u64..end as u64, device)?;
        let post = vae.encode(&x)?;
        let mean = post.mean.detach();
        sum += mean.sum_all()?.to_scalar::<f32>()? as f64;
        sum_sq += mean.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        elems += mean.elem_count();
        let recon = vae.decode(&mean)?.detach().clamp(-1f32, 1f32)?;
        // [-1, 1] → [0, 1]: squared errors shrink by 4.
        let per_image: Vec<f32> = ((recon - &x)?.sqr()?.mean((1, 2, 3))? / 4.0)?.to_vec1()?;
        for (k, e) in per_image.iter().enumerate() {
            let style = world.style((start + k) as u64);
            let si = Style::ALL.iter().position(|s| *s == style).unwrap_or(0);
            sq_err[si] += *e as f64;
            count[si] += 1;
        }
    }
    let psnr = |mse: f64| 10.0 * (1.0 / mse.max(1e-12)).log10();
    let total: f64 = sq_err.iter().sum::<f64>() / count.iter().sum::<usize>().max(1) as f64;
    let per_style = Style::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| count[*i] > 0)
        .map(|(i, s)| (*s, psnr(sq_err[i] / count[i] as f64)))
        .collect();
    let m = sum / elems.max(1) as f64;
    let std = (sum_sq / elems.max(1) as f64 - m * m).max(0.0).sqrt();
    Ok((psnr(total), per_style, std))
}

/// One line of `vae_log.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VaeLogEntry {
    step: usize,
    mse: f64,
    kl: f64,
    lr: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    psnr_db: Option<f64>,
    step_time_s: f64,
}

/// Stage 1: trains the VAE of `model.config/vae/config.json` as an autoencoder on renders
/// of every world style, measures it on held-out renders, sets its `scaling_factor` to
/// `1 / std` of the latents and writes `<out>/vae/` and `<out>/vae_metrics.json`.
///
/// Not checkpointed (a few minutes); an interrupted stage 1 starts again.
pub fn pretrain_vae(cfg: &PretrainConfig, progress: &mut dyn Progress) -> Result<VaeReport> {
    let device = Device::Cpu;
    let start = Instant::now();
    let out = &cfg.output.dir;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let config_path = cfg.model.config.join("vae/config.json");
    let vae_cfg: VaeConfig = read_config(&config_path)?;
    if vae_cfg.downscale_factor() != 1 {
        tracing::warn!(
            "{}: the VAE downsamples {}×; the toy base keeps pixel-level detail with one block",
            config_path.display(),
            vae_cfg.downscale_factor()
        );
    }
    let vars = VarMap::new();
    let vb = PyTorchInit::var_builder(&vars, cfg.seed.wrapping_add(3), DType::F32, &device);
    let vae = AutoencoderKL::new(&vae_cfg, vb, &config_path)?;
    let parameters = count_params(&vars);
    let mut opt = AdamW::new(
        named_vars(&vars, ""),
        AdamWConfig {
            lr: cfg.vae.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let world = World::new(cfg.data.world_seed ^ 0x5641_4531)
        .with_size(cfg.data.size)
        .with_styles(&Style::ALL);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(11));
    let log_path = out.join("vae_log.jsonl");
    let mut log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
    let b = cfg.vae.batch;
    let steps = cfg.vae.steps;
    let warmup = 20.min(steps);
    progress.begin("vae", steps);
    for step in 0..steps {
        let t0 = Instant::now();
        let x = world_images(&world, (step * b) as u64..((step + 1) * b) as u64, &device)?;
        let post = vae.encode(&x)?;
        let eps = normal(&mut rng, post.mean.dims(), &device)?;
        let z = post.sample_with(&eps)?;
        let recon = vae.decode(&z)?;
        let mse = (recon - &x)?.sqr()?.mean_all()?;
        // KL(q ‖ N(0, I)) summed over latent elements, per image pixel value: LDM sums
        // both its reconstruction loss and the KL over a sample; with the reconstruction as
        // a per-value mean here, the KL is divided by the same count to keep LDM's ratio.
        let per_elem = ((post.mean.sqr()? + post.logvar.exp()?)? - 1.0)?;
        let kl = ((per_elem - &post.logvar)? * 0.5)?.sum_all()?;
        let kl = (kl / x.elem_count() as f64)?;
        let loss = (&mse + (&kl * cfg.vae.kl_weight)?)?;
        let grads = loss.backward()?;
        let n = step + 1;
        let lr = if n <= warmup {
            cfg.vae.lr * n as f64 / warmup.max(1) as f64
        } else {
            let p = (n - warmup) as f64 / (steps - warmup).max(1) as f64;
            cfg.vae.lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        };
        opt.set_lr(lr);
        opt.step(&grads)?;
        let mse_v = mse.to_scalar::<f32>()? as f64;
        if !mse_v.is_finite() {
            return Err(Error::NonFiniteLoss {
                step: n,
                value: mse_v,
            });
        }
        let psnr_db = if cfg.vae.eval_every > 0 && n % cfg.vae.eval_every == 0 && n < steps {
            Some(evaluate_vae(&vae, cfg, &device)?.0)
        } else {
            None
        };
        let entry = VaeLogEntry {
            step: n,
            mse: mse_v,
            kl: kl.to_scalar::<f32>()? as f64,
            lr,
            psnr_db,
            step_time_s: t0.elapsed().as_secs_f64(),
        };
        let line = serde_json::to_string(&entry).map_err(|e| Error::msg(e.to_string()))?;
        writeln!(log, "{line}").map_err(io(&log_path))?;
        progress.advance(1);
    }
    progress.finish();
    let (psnr_db, psnr_per_style, latent_std) = evaluate_vae(&vae, cfg, &device)?;
    let scaling_factor = 1.0 / latent_std.max(1e-6);
    let report = VaeReport {
        steps,
        psnr_db,
        psnr_per_style,
        latent_std,
        scaling_factor,
        parameters,
        seconds: start.elapsed().as_secs_f64(),
    };
    // The trained VAE as a diffusers component, with the measured scaling factor.
    let dir = out.join("vae");
    let mut json = read_json(&config_path)?;
    json["scaling_factor"] = scaling_factor.into();
    write_json(&dir.join("config.json"), &json)?;
    save_safetensors_atomic(
        &varmap_tensors(&vars),
        &dir.join("diffusion_pytorch_model.safetensors"),
    )?;
    write_json(&out.join("vae_metrics.json"), &report)?;
    tracing::info!(
        "VAE: {steps} steps, PSNR {psnr_db:.2} dB on held-out renders, latent std {latent_std:.4}, scaling_factor {scaling_factor:.4}"
    );
    Ok(report)
}

fn read_vae_report(out: &Path) -> Option<VaeReport> {
    let text = std::fs::read_to_string(out.join("vae_metrics.json")).ok()?;
    let report = serde_json::from_str(&text).ok()?;
    out.join("vae/diffusion_pytorch_model.safetensors")
        .is_file()
        .then_some(report)
}

// ---------------------------------------------------------------------------------------
// Stage 2: UNet and text encoder
// ---------------------------------------------------------------------------------------

/// The fixed contents of the sample grids (one column per sampled style).
const SAMPLE_CONTENTS: [&str; 4] = [
    "a red house on grass by day",
    "a blue car on snow at night",
    "a green tree and a yellow sun on sand by day",
    "a purple person and an orange cat on grass at sunset",
];

/// The UNet stage's models and state.
struct UnetRun<'a> {
    cfg: &'a PretrainConfig,
    device: Device,
    tokenizer: ClipTokenizer,
    unet: UNet2DConditionModel,
    text_encoder: ClipTextModel,
    vae: AutoencoderKL,
    scheduler_config: SchedulerConfig,
    schedule: NoiseSchedule,
    unet_vars: VarMap,
    te_vars: VarMap,
    vars: Vec<Var>,
    optimizer: AdamW,
    data: DataSet,
    sampler: EpochSampler,
    rng: ChaCha8Rng,
    step: usize,
}

impl<'a> UnetRun<'a> {
    fn new(cfg: &'a PretrainConfig, device: &Device) -> Result<Self> {
        let cdir = &cfg.model.config;
        let unet_path = cdir.join("unet/config.json");
        let te_path = cdir.join("text_encoder/config.json");
        let unet_cfg: UNetConfig = read_config(&unet_path)?;
        let te_cfg: ClipTextConfig = read_config(&te_path)?;
        let vae = load_vae(&cfg.output.dir.join("vae"), &LoadOptions::default())?.model;
        if unet_cfg.context_dim() != te_cfg.hidden_size {
            return Err(Error::Config {
                path: unet_path,
                message: format!(
                    "cross_attention_dim {} differs from the text encoder's hidden_size {}",
                    unet_cfg.context_dim(),
                    te_cfg.hidden_size
                ),
            });
        }
        if unet_cfg.in_channels != vae.config().latent_channels {
            return Err(Error::Config {
                path: unet_path,
                message: format!(
                    "in_channels {} differs from the VAE's latent_channels {}",
                    unet_cfg.in_channels,
                    vae.config().latent_channels
                ),
            });
        }
        let tokenizer = ClipTokenizer::standard().map_err(|e| Error::msg(e.to_string()))?;
        if te_cfg.vocab_size < tokenizer.vocab_size() {
            tracing::warn!(
                "text encoder vocab_size {} is below the tokenizer's {}: only prompts with small token ids work",
                te_cfg.vocab_size,
                tokenizer.vocab_size()
            );
        }
        let unet_vars = VarMap::new();
        let te_vars = VarMap::new();
        let unet = UNet2DConditionModel::new(
            &unet_cfg,
            PyTorchInit::var_builder(&unet_vars, cfg.seed.wrapping_add(1), DType::F32, device),
            &unet_path,
        )?;
        let text_encoder = ClipTextModel::new(
            &te_cfg,
            PyTorchInit::var_builder(&te_vars, cfg.seed.wrapping_add(2), DType::F32, device),
            &te_path,
        )?;
        let scheduler_config = SchedulerConfig::from_model_dir(cdir)?;
        let ddpm = DdpmScheduler::from_config(&scheduler_config)?;
        let schedule = NoiseSchedule {
            prediction_type: ddpm.config().prediction_type,
            ddpm,
        };
        let mut named = named_vars(&unet_vars, "unet.");
        named.extend(named_vars(&te_vars, "text_encoder."));
        let vars = named.iter().map(|(_, v)| v.clone()).collect();
        let optimizer = AdamW::new(
            named,
            AdamWConfig {
                lr: cfg.unet.lr,
                weight_decay: cfg.unet.weight_decay,
                ..Default::default()
            },
        )?;
        let data = DataSet::open(cfg)?;
        let sampler = EpochSampler::new(data.sampler_len(), cfg.seed.wrapping_add(7))?;
        Ok(Self {
            cfg,
            device: device.clone(),
            tokenizer,
            unet,
            text_encoder,
            vae,
            scheduler_config,
            schedule,
            unet_vars,
            te_vars,
            vars,
            optimizer,
            data,
            sampler,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            step: 0,
        })
    }

    fn state(&self) -> TrainState {
        TrainState {
            step: self.step,
            rng: RngState::capture(&self.rng),
            style_sampler: self.sampler.state(),
            aux_samplers: Vec::new(),
        }
    }

    /// One optimizer step: a batch, caption dropout, posterior samples, noise and
    /// timesteps (drawn in that order), the epsilon loss, clipping, AdamW.
    fn train_step(&mut self) -> Result<LogEntry> {
        let start = Instant::now();
        let b = self.cfg.unet.batch;
        let (images, captions) = self
            .data
            .batch(self.step, b, &mut self.sampler, &self.device)?;
        let mut ids = Vec::with_capacity(b * 77);
        let mut len = 0;
        for c in &captions {
            let drop = self.rng.gen::<f64>() < self.cfg.unet.caption_dropout;
            let row = self.tokenizer.encode_padded(if drop { "" } else { c }).ids;
            len = row.len();
            ids.extend(row);
        }
        let post = self.vae.encode(&images)?;
        let eps = normal(&mut self.rng, post.mean.dims(), &self.device)?;
        let latents = (post.sample_with(&eps)?.detach() * self.vae.scaling_factor())?;
        let noise = normal(&mut self.rng, latents.dims(), &self.device)?;
        let t_max = self.schedule.num_train_timesteps();
        let timesteps: Vec<f64> = (0..b)
            .map(|_| self.rng.gen_range(0..t_max) as f64)
            .collect();
        let batch = StepBatch {
            latents,
            noise,
            timesteps,
            input_ids: Tensor::from_vec(ids, (b, len), &self.device)?,
            instance_rows: b,
        };
        let models = StepModels {
            unet: &self.unet,
            text_encoder: &self.text_encoder,
            train_text_encoder: true,
        };
        let loss = compute_loss(&models, &self.schedule, &batch, 0.0)?;
        let value = loss.instance;
        if !value.is_finite() {
            return Err(Error::NonFiniteLoss {
                step: self.step + 1,
                value,
            });
        }
        let mut grads = loss.total.backward()?;
        let max_norm = if self.cfg.unet.max_grad_norm > 0.0 {
            self.cfg.unet.max_grad_norm
        } else {
            f64::INFINITY
        };
        let grad_norm = clip_grad_norm(&mut grads, &self.vars, max_norm)?;
        let lr = self.cfg.lr_at(self.step + 1);
        self.optimizer.set_lr(lr);
        self.optimizer.step(&grads)?;
        self.step += 1;
        Ok(LogEntry {
            step: self.step,
            loss: value,
            loss_instance: value,
            loss_prior: 0.0,
            grad_norm,
            lr,
            step_time_s: start.elapsed().as_secs_f64(),
        })
    }

    fn save_checkpoint(&self) -> Result<PathBuf> {
        checkpoint::save(
            &self.cfg.output.dir.join("checkpoints"),
            &self.state(),
            &self.unet_vars,
            Some(&self.te_vars),
            &self.optimizer,
            self.cfg.output.keep_checkpoints,
        )
    }

    fn restore(&mut self, path: &Path) -> Result<()> {
        let loaded = checkpoint::load(path, &self.device)?;
        checkpoint::restore_vars(&self.unet_vars, &loaded.unet, "UNet")?;
        let te = loaded.text_encoder.as_ref().ok_or_else(|| {
            Error::msg(format!(
                "checkpoint {} has no text-encoder weights",
                path.display()
            ))
        })?;
        checkpoint::restore_vars(&self.te_vars, te, "text-encoder")?;
        self.optimizer.load_state(&loaded.optimizer)?;
        self.rng = loaded.state.rng.restore();
        self.sampler = EpochSampler::from_state(loaded.state.style_sampler)?;
        self.step = loaded.state.step;
        Ok(())
    }

    /// Writes `<out>/model`: a complete diffusers folder, built aside and renamed.
    fn save_model(&self, tokenizer_dir: &Path) -> Result<PathBuf> {
        let out_dir = &self.cfg.output.dir;
        let out = out_dir.join("model");
        let tmp = out_dir.join(format!(".model.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        let f16 = self.cfg.output.f16;
        let written = (|| -> Result<()> {
            let cdir = &self.cfg.model.config;
            let mut index = read_json(&cdir.join("model_index.json"))?;
            index["tokenizer"] = serde_json::json!(["transformers", "CLIPTokenizer"]);
            write_json(&tmp.join("model_index.json"), &index)?;
            copy_dir(&cdir.join("scheduler"), &tmp.join("scheduler"))?;
            copy_dir(tokenizer_dir, &tmp.join("tokenizer"))?;
            write_json(
                &tmp.join("unet/config.json"),
                &read_json(&cdir.join("unet/config.json"))?,
            )?;
            save_safetensors_atomic(
                &tensors_for_saving(&self.unet_vars, f16)?,
                &tmp.join("unet/diffusion_pytorch_model.safetensors"),
            )?;
            write_json(
                &tmp.join("text_encoder/config.json"),
                &read_json(&cdir.join("text_encoder/config.json"))?,
            )?;
            save_safetensors_atomic(
                &tensors_for_saving(&self.te_vars, f16)?,
                &tmp.join("text_encoder/model.safetensors"),
            )?;
            let vae_dir = out_dir.join("vae");
            write_json(
                &tmp.join("vae/config.json"),
                &read_json(&vae_dir.join("config.json"))?,
            )?;
            let mut vae_tensors = candle_core::safetensors::load(
                vae_dir.join("diffusion_pytorch_model.safetensors"),
                &Device::Cpu,
            )?;
            if f16 {
                for t in vae_tensors.values_mut() {
                    *t = t.to_dtype(DType::F16)?;
                }
            }
            save_safetensors_atomic(
                &vae_tensors,
                &tmp.join("vae/diffusion_pytorch_model.safetensors"),
            )?;
            if out.exists() {
                std::fs::remove_dir_all(&out).map_err(io(&out))?;
            }
            std::fs::rename(&tmp, &out).map_err(io(&out))
        })();
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        written?;
        Ok(out)
    }

    /// A grid of samples: one row per fixed content, one column per data style.
    fn sample_grid(&self) -> Result<PathBuf> {
        let sd = StableDiffusion::from_parts(
            self.tokenizer.clone(),
            self.text_encoder.clone(),
            self.unet.clone(),
            self.vae.clone(),
            self.scheduler_config.clone(),
            self.cfg.output.dir.clone(),
            self.device.clone(),
        );
        let styles = if self.cfg.data.styles.is_empty() {
            vec![Style::Plain]
        } else {
            self.cfg.data.styles.clone()
        };
        let size = self.cfg.data.size as usize;
        let mut grid = ImageGrid::new(format!("pretraining samples at step {}", self.step))
            .columns(styles.iter().map(|s| s.name().to_string()));
        for content in SAMPLE_CONTENTS {
            let mut row = Vec::with_capacity(styles.len());
            for style in &styles {
                let req = Txt2ImgRequest {
                    sampling: SamplingOptions {
                        prompt: format!("{content}, {}", style.phrase()),
                        steps: self.cfg.output.sample_steps,
                        guidance_scale: self.cfg.output.sample_guidance,
                        eta: self.cfg.output.sample_eta,
                        scheduler: crate::pipelines::SchedulerChoice {
                            name: Some("ddim".into()),
                            karras: false,
                        },
                        ..Default::default()
                    },
                    width: size,
                    height: size,
                    latents: None,
                };
                let img =
                    sd.txt2img(&req, &mut SeededNoise::new(self.cfg.seed), &mut NoProgress)?;
                row.push(tensor_to_rgb(&img.get(0)?)?);
            }
            grid = grid.row(content.to_string(), row);
        }
        let path = self
            .cfg
            .output
            .dir
            .join("samples")
            .join(format!("step-{:07}.png", self.step));
        grid.save(&path)?;
        Ok(path)
    }
}

/// Keeps only log lines up to `step` (a resumed run rewrites what came after).
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    if !path.is_file() {
        return Ok(());
    }
    let mut text = String::new();
    for e in read_log(path).into_iter().filter(|e| e.step <= step) {
        text.push_str(&serde_json::to_string(&e).map_err(|e| Error::msg(e.to_string()))?);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(io(path))
}

/// Runs a pretraining call: stage 1 ([`pretrain_vae`]) when asked or when `vae/` is
/// missing, then stage 2 (UNet and text encoder) until `unet.steps`, `unet.max_minutes`
/// or `opts.stop_after`, with checkpoints, sample grids, logs and `model/`.
pub fn pretrain(
    cfg: &PretrainConfig,
    opts: &PretrainOptions,
    progress: &mut dyn Progress,
) -> Result<PretrainSummary> {
    cfg.validate()?;
    let out = &cfg.output.dir;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let cfg_path = out.join("pretrain.toml");
    std::fs::write(&cfg_path, cfg.to_toml()?).map_err(io(&cfg_path))?;
    let mut summary = PretrainSummary {
        vae: read_vae_report(out),
        steps: 0,
        last_loss: f64::NAN,
        seconds_per_step: f64::NAN,
        parameters: (0, 0),
        model_dir: None,
        finished: false,
        out_dir: out.clone(),
    };
    let want_vae = match opts.stage {
        Stage::Vae => true,
        Stage::Unet => false,
        Stage::Both => summary.vae.is_none(),
    };
    if want_vae {
        summary.vae = Some(pretrain_vae(cfg, progress)?);
    } else if opts.stage == Stage::Both {
        tracing::info!("reusing the trained VAE in {}", out.join("vae").display());
    }
    if opts.stage == Stage::Vae {
        return Ok(summary);
    }
    if summary.vae.is_none() {
        return Err(Error::msg(format!(
            "no trained VAE in {}: run the VAE stage first (--stage vae or both)",
            out.join("vae").display()
        )));
    }

    let device = Device::Cpu;
    let mut run = UnetRun::new(cfg, &device)?;
    summary.parameters = (count_params(&run.unet_vars), count_params(&run.te_vars));
    let tokenizer_dir = out.join("tokenizer");
    if !tokenizer_dir.join("merges.txt").is_file() {
        write_standard_tokenizer(&tokenizer_dir)?;
    }
    let log_path = out.join("train_log.jsonl");
    let ckpt_dir = out.join("checkpoints");
    if opts.resume {
        let Some((_, latest)) = checkpoint::list(&ckpt_dir).pop() else {
            return Err(Error::msg(format!(
                "--resume: no checkpoint in {}",
                ckpt_dir.display()
            )));
        };
        run.restore(&latest)?;
        truncate_log(&log_path, run.step)?;
        tracing::info!("resuming from {} (step {})", latest.display(), run.step);
    } else if !checkpoint::list(&ckpt_dir).is_empty() {
        return Err(Error::msg(format!(
            "{} already holds checkpoints: pass --resume to continue that run, or choose another output folder",
            ckpt_dir.display()
        )));
    } else {
        truncate_log(&log_path, 0)?;
    }

    let total = cfg.unet.steps;
    let end = opts.stop_after.map_or(total, |s| s.min(total));
    let deadline = cfg
        .unet
        .max_minutes
        .map(|m| Instant::now() + std::time::Duration::from_secs_f64(m.max(0.0) * 60.0));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let first = run.step;
    let sitting = Instant::now();
    progress.begin("pretrain", end.saturating_sub(run.step));
    while run.step < end {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::info!(
                "max_minutes spent at step {}; stopping with a checkpoint",
                run.step
            );
            break;
        }
        let entry = run.train_step()?;
        summary.last_loss = entry.loss;
        let line = serde_json::to_string(&entry).map_err(|e| Error::msg(e.to_string()))?;
        writeln!(log, "{line}").map_err(io(&log_path))?;
        progress.advance(1);
        let step = run.step;
        let every = |n: usize| n > 0 && step.is_multiple_of(n) && step < total;
        if every(cfg.output.checkpoint_every) {
            run.save_checkpoint()?;
            run.save_model(&tokenizer_dir)?;
        }
        if every(cfg.output.sample_every) {
            run.sample_grid()?;
        }
    }
    progress.finish();
    let done = run.step - first;
    if done > 0 {
        summary.seconds_per_step = sitting.elapsed().as_secs_f64() / done as f64;
    }
    summary.steps = run.step;
    summary.finished = run.step >= total;
    if !summary.finished {
        run.save_checkpoint()?;
    }
    summary.model_dir = Some(run.save_model(&tokenizer_dir)?);
    if cfg.output.sample_every > 0 && done > 0 {
        run.sample_grid()?;
    }
    super::report::loss_curve(&read_log(&log_path), &out.join("loss.png"))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_warms_up_then_decays() {
        let mut cfg = PretrainConfig::default();
        cfg.unet.steps = 100;
        cfg.unet.warmup_steps = 10;
        cfg.unet.lr = 1.0;
        assert!((cfg.lr_at(5) - 0.5).abs() < 1e-12);
        assert!((cfg.lr_at(10) - 1.0).abs() < 1e-12);
        assert!(cfg.lr_at(100).abs() < 1e-12);
        cfg.unet.lr_schedule = LrShape::Constant;
        assert!((cfg.lr_at(100) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn config_round_trips_and_overrides() {
        let cfg = PretrainConfig::default();
        let back = PretrainConfig::from_toml(&cfg.to_toml().unwrap(), Path::new("x")).unwrap();
        assert_eq!(cfg, back);
        let o = cfg
            .with_overrides(&[
                "unet.lr=3e-4".to_string(),
                "data.styles=[\"plain\",\"sketch\"]".to_string(),
                "unet.max_minutes=90".to_string(),
            ])
            .unwrap();
        assert_eq!(o.unet.lr, 3e-4);
        assert_eq!(o.data.styles, vec![Style::Plain, Style::Sketch]);
        assert_eq!(o.unet.max_minutes, Some(90.0));
        assert!(PretrainConfig::from_toml("[unet]\nlr_typo = 1", Path::new("x")).is_err());
    }
}
