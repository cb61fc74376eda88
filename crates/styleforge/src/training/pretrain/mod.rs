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
//! [`super::log::LogEntry`] per step), `loss.png`, `samples/step-NNNNNNN.png` grids (each sampled style ×
//! a few fixed contents, DDIM, fixed seed), `checkpoints/step-NNNNNNN/` and `model/`: the
//! diffusers folder (rewritten at every checkpoint and at the end; f32, or f16 tensors in
//! the plain file names with `output.f16`, which the loader up-casts with no flag).
//! `model/tokenizer/` is the standard 49,408-token CLIP tokenizer written out as
//! `vocab.json` + `merges.txt` ([`write_standard_tokenizer`]).

mod data;
mod tokenizer;
mod unet;
mod vae;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use styleforge_models::files;
pub use styleforge_world::Style;

pub use self::tokenizer::write_standard_tokenizer;
use self::unet::UnetTask;
pub use self::vae::pretrain_vae;
use self::vae::read_vae_report;
use super::core::{LoopSettings, RunLoop};
use super::ema::EmaConfig;
use super::log::read_log;
use super::lr::{LrPlan, LrSchedule};
use super::objective::Objective;
use super::stop::{StopReason, StopSignal};
use crate::error::{Error, Result};
use crate::optim::AdamWConfig;
use crate::progress::Progress;
use crate::run_dir::RunDir;

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
    /// Start from the weights of this diffusers folder instead of fresh ones (a warm
    /// start: its UNet and text encoder, which must match `config`, and its VAE, which
    /// replaces the VAE stage). The optimizer starts fresh.
    pub init: Option<PathBuf>,
}

impl Default for PretrainModel {
    fn default() -> Self {
        Self {
            config: PathBuf::from("assets/toy/base-config"),
            init: None,
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
    pub lr_schedule: LrSchedule,
    /// Fraction of captions replaced by `""` (classifier-free guidance).
    pub caption_dropout: f64,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Keep an exponential moving average of the weights with this decay and write it as
    /// the model (`None`: off). With the warm-up below, young models sample far better from
    /// their average than from their last weights.
    pub ema_decay: Option<f64>,
    /// EMA warm-up power (`1 − (1 + k)^−power`; 2/3 for long runs, 3/4 for short ones).
    pub ema_power: f64,
}

impl Default for UnetStage {
    fn default() -> Self {
        Self {
            steps: 1800,
            max_minutes: None,
            batch: 32,
            lr: 5e-4,
            warmup_steps: 200,
            lr_schedule: LrSchedule::Cosine,
            caption_dropout: 0.1,
            max_grad_norm: 1.0,
            weight_decay: 0.01,
            ema_decay: None,
            ema_power: 2.0 / 3.0,
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
    /// A folder of toy-world probes (`probes.safetensors` + `probes.json`, as in
    /// `assets/toy`): with world data, every sample grid also scores the model's samples
    /// (style accuracy, object recall, colour accuracy; [`crate::toy::base_model_scores`])
    /// into `probe_scores.jsonl` and the log.
    pub probes: Option<PathBuf>,
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
            probes: None,
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
    /// `[objective]`: loss weighting (min-SNR), timestep sampling and noise, as the
    /// `[training]` keys of `styleforge train`.
    pub objective: Objective,
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
        let text = files::read_to_string(path)?;
        Self::from_toml(&text, path)
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::TomlWrite {
            what: "the pretraining config".into(),
            source: e,
        })
    }

    /// Applies `key=value` overrides (dotted keys, TOML values; bare words are strings),
    /// as `styleforge train --set` does: `unet.lr=3e-4`, `data.styles=["plain","sketch"]`.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<Self> {
        let text = super::config::apply_overrides(self, overrides, "unet.lr=3e-4")?;
        Self::from_toml(&text, Path::new("<command-line overrides>"))
    }

    /// Checks values that would otherwise fail late.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| {
            Err(Error::InvalidRequest(format!(
                "invalid pretrain config: {m}"
            )))
        };
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
        if self.output.probes.is_some() && self.data.source != DataSource::World {
            return bad("output.probes scores toy-world samples: it needs data.source = \"world\"");
        }
        Ok(())
    }

    /// The learning rate of every UNet step: linear warm-up, then constant, linear or
    /// cosine to 0 at `unet.steps`.
    pub fn lr_plan(&self) -> LrPlan {
        let u = &self.unet;
        LrPlan::new(u.lr, u.warmup_steps, u.steps, u.lr_schedule)
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
#[derive(Debug, Clone)]
pub struct PretrainOptions {
    /// The stages.
    pub stage: Stage,
    /// Continue the UNet stage from the newest checkpoint.
    pub resume: bool,
    /// Stop the UNet stage (with a checkpoint) after this many steps, as an interrupted
    /// run would; used to test exact resume.
    pub stop_after: Option<usize>,
    /// Where both stages compute (see [`crate::device`]).
    pub device: Device,
    /// Raised to stop after the step in progress: the UNet stage with a checkpoint (see
    /// [`super::stop`]); the VAE stage, which keeps no checkpoints, at once.
    pub stop: StopSignal,
}

impl Default for PretrainOptions {
    fn default() -> Self {
        Self {
            stage: Stage::default(),
            resume: false,
            stop_after: None,
            device: Device::Cpu,
            stop: StopSignal::new(),
        }
    }
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
    /// Why this call stopped before `unet.steps` (`None`: it finished, or ran the VAE
    /// stage alone to its end).
    pub stopped: Option<StopReason>,
    /// The run folder.
    pub out_dir: PathBuf,
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Writes `value` as pretty JSON (with a final newline), atomically.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Json {
        what: path.display().to_string(),
        source: e,
    })?;
    Ok(files::write(path, text + "\n")?)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = files::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn count_params(vars: &VarMap) -> usize {
    vars.all_vars().iter().map(|v| v.elem_count()).sum()
}

/// The variables of `vars` named `prefix` + their name, sorted by name.
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

/// Runs a pretraining call: stage 1 ([`pretrain_vae`]) when asked or when `vae/` is
/// missing, then stage 2 (UNet and text encoder, on [`super::core::RunLoop`]) until
/// `unet.steps`, `unet.max_minutes` or `opts.stop_after`, with checkpoints, sample grids,
/// logs and `model/`.
pub fn pretrain(
    cfg: &PretrainConfig,
    opts: &PretrainOptions,
    progress: &mut dyn Progress,
) -> Result<PretrainSummary> {
    cfg.validate()?;
    let run = RunDir::new(&cfg.output.dir);
    let _lock = run.lock()?;
    let out = run.root();
    files::write(&out.join("pretrain.toml"), cfg.to_toml()?)?;
    let mut summary = PretrainSummary {
        vae: read_vae_report(&run),
        steps: 0,
        last_loss: f64::NAN,
        seconds_per_step: f64::NAN,
        parameters: (0, 0),
        model_dir: None,
        finished: false,
        stopped: None,
        out_dir: out.to_path_buf(),
    };
    let want_vae = match opts.stage {
        Stage::Vae => true,
        Stage::Unet => false,
        Stage::Both => summary.vae.is_none(),
    };
    if let (Some(init), true) = (&cfg.model.init, want_vae) {
        summary.vae = Some(vae::adopt_vae(cfg, init, &opts.device)?);
    } else if want_vae {
        summary.vae = pretrain_vae(cfg, &opts.device, &opts.stop, progress)?;
        if summary.vae.is_none() {
            summary.stopped = Some(StopReason::Requested);
            return Ok(summary);
        }
    } else if opts.stage == Stage::Both {
        tracing::info!("reusing the trained VAE in {}", run.vae().display());
    }
    if opts.stage == Stage::Vae {
        return Ok(summary);
    }
    if summary.vae.is_none() {
        return Err(Error::RunFolder {
            path: run.vae(),
            message: "no trained VAE here: run the VAE stage first (--stage vae or both)".into(),
        });
    }

    let device = opts.device.clone();
    let tokenizer_dir = out.join("tokenizer");
    if !tokenizer_dir.join("merges.txt").is_file() {
        write_standard_tokenizer(&tokenizer_dir)?;
    }
    let task = UnetTask::new(cfg, &run, &tokenizer_dir, &device)?;
    summary.parameters = task.parameters();
    let named = task.named_vars();
    let settings = LoopSettings {
        total_steps: cfg.unet.steps,
        gradient_accumulation: 1,
        max_grad_norm: cfg.unet.max_grad_norm,
        lr: cfg.lr_plan(),
        checkpoint_every: cfg.output.checkpoint_every,
        keep_checkpoints: cfg.output.keep_checkpoints,
        pictures_every: cfg.output.sample_every,
        validation_loss_every: 0,
        seed: cfg.seed,
        ema: cfg.unet.ema_decay.map(|decay| EmaConfig {
            decay,
            warmup: true,
            power: cfg.unet.ema_power,
            ..Default::default()
        }),
        label: "pretrain",
        loss_scaling: None,
        stop: opts.stop.clone(),
    };
    let adamw = AdamWConfig {
        lr: cfg.unet.lr,
        weight_decay: cfg.unet.weight_decay,
        ..Default::default()
    };
    let mut run_loop = RunLoop::new(task, named, adamw, settings, run.clone(), &device)?;
    run_loop.start(opts.resume)?;
    let total = cfg.unet.steps;
    let end = opts.stop_after.map_or(total, |s| s.min(total));
    let deadline = cfg
        .unet
        .max_minutes
        .map(|m| Instant::now() + std::time::Duration::from_secs_f64(m.max(0.0) * 60.0));
    let sitting = run_loop.run(end, deadline, progress)?;
    summary.last_loss = sitting.last_loss;
    if sitting.steps > 0 {
        summary.seconds_per_step = sitting.seconds / sitting.steps as f64;
    }
    summary.steps = run_loop.step();
    summary.finished = summary.steps >= total;
    summary.stopped = sitting.stopped;
    let steps = summary.steps;
    summary.model_dir = Some(run_loop.with_ema_weights(|task| task.save_model())?);
    // A stop asked for now, not grids and probe scores that the next sitting makes anyway.
    let requested = sitting.stopped == Some(StopReason::Requested);
    if cfg.output.sample_every > 0 && sitting.steps > 0 && !requested {
        run_loop.with_ema_weights(|task| {
            task.sample_grid(steps)?;
            task.probe_scores(steps)
        })?;
    }
    super::report::loss_curve(&read_log(&run.log()), &run.loss_curve())?;
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
        let lr = |cfg: &PretrainConfig, step| cfg.lr_plan().at(step);
        assert!((lr(&cfg, 5) - 0.5).abs() < 1e-12);
        assert!((lr(&cfg, 10) - 1.0).abs() < 1e-12);
        assert!(lr(&cfg, 100).abs() < 1e-12);
        cfg.unet.lr_schedule = LrSchedule::Constant;
        assert!((lr(&cfg, 100) - 1.0).abs() < 1e-12);
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
