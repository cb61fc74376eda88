//! The training configuration: a TOML file (`styleforge train --config run.toml`) whose
//! every key a command-line flag can override. Unset keys take the chosen method's
//! defaults (the StyleForge authors' settings; diffusers' example scripts for DreamBooth).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lr::LrPlan;
pub use super::lr::LrSchedule;
use crate::data::CropMode;
use crate::error::{Error, Result};

/// The prompt tokens the text encoder sees (77 with the start and end tokens).
const MAX_PROMPT_TOKENS: usize = 75;
/// The largest LoRA rank a config may ask for.
const MAX_LORA_RANK: usize = 4096;

/// The fine-tuning method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Single-StyleForge: UNet + text encoder, StyleRef ↔ `"<token> style"`, Aux ↔ "style".
    Styleforge,
    /// Multi-StyleForge: people ↔ `"<token1> style"`, backgrounds ↔ `"<token2> style"`.
    MultiStyleforge,
    /// DreamBooth baseline: UNet only, `"a <token> style"` with "style" class images.
    Dreambooth,
    /// LoRA baseline: low-rank adapters on the attention projections, base frozen.
    Lora,
    /// Textual Inversion baseline: only new token embeddings train.
    TextualInversion,
    /// Custom Diffusion baseline: cross-attention K/V and modifier-token embeddings.
    CustomDiffusion,
}

impl Method {
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Styleforge => "styleforge",
            Method::MultiStyleforge => "multi-styleforge",
            Method::Dreambooth => "dreambooth",
            Method::Lora => "lora",
            Method::TextualInversion => "textual-inversion",
            Method::CustomDiffusion => "custom-diffusion",
        }
    }

    /// Whether the method trains adapters over a frozen base ([`crate::adapters`]).
    pub fn is_adapter(self) -> bool {
        matches!(
            self,
            Method::Lora | Method::TextualInversion | Method::CustomDiffusion
        )
    }
}

/// Settings of the adapter methods (LoRA, Textual Inversion, Custom Diffusion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AdapterSettings {
    /// LoRA rank (default 4).
    pub lora_rank: usize,
    /// LoRA alpha (default: the rank).
    pub lora_alpha: f64,
    /// Textual Inversion vectors per token (default 1).
    pub num_vectors: usize,
    /// Initializer word per token (Textual Inversion, Custom Diffusion modifiers).
    pub initializer_tokens: Vec<String>,
}

/// One concept: a StyleRef folder bound to a token, with its Aux (prior) images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConceptConfig {
    /// The StyleRef images.
    pub style_dir: PathBuf,
    /// The Aux images (generated from the base model when missing or short).
    #[serde(default)]
    pub aux_dir: Option<PathBuf>,
    /// The unique token (default: `ohwx` for the first concept, `phol` for the second: rare
    /// words that are single tokens of the CLIP vocabulary; the authors' `zwx` is two).
    #[serde(default)]
    pub token: Option<String>,
}

/// `[model]`: the base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A diffusers folder, a single-file checkpoint (`*.safetensors`, converted once into
    /// `<run>/base-model/`) or a Hub model `owner/name[@revision]` (fetched into the Hugging
    /// Face cache); never written to.
    pub base: PathBuf,
    /// Weights variant (`fp16`), up-cast to f32 for training.
    #[serde(default)]
    pub variant: Option<String>,
    /// For a single-file base: a diffusers folder or JSON file whose configs replace the
    /// inferred ones (as `styleforge convert --config`).
    #[serde(default)]
    pub config: Option<PathBuf>,
}

/// How the trained model is written (`[output] save_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaveFormat {
    /// A diffusers folder `<run>/model`.
    #[default]
    Diffusers,
    /// One LDM-layout file `<run>/model.safetensors`.
    SingleFile,
    /// Both.
    Both,
}

impl SaveFormat {
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SaveFormat::Diffusers => "diffusers",
            SaveFormat::SingleFile => "single-file",
            SaveFormat::Both => "both",
        }
    }
}

/// `[data]`: images and preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// The concepts: one for `styleforge`/`dreambooth`, two (people, backgrounds) for
    /// `multi-styleforge`.
    #[serde(default)]
    pub concepts: Vec<ConceptConfig>,
    /// Training resolution in pixels (default 512).
    #[serde(default)]
    pub resolution: Option<u32>,
    /// `center` (default) or `random` crops.
    #[serde(default)]
    pub crop: Option<CropMode>,
    /// Also train on mirrored images.
    #[serde(default)]
    pub flip: Option<bool>,
    /// Accept images smaller than the resolution (upscaled).
    #[serde(default)]
    pub allow_upscale: Option<bool>,
    /// Fewest StyleRef images per concept (default 2).
    #[serde(default)]
    pub min_images: Option<usize>,
    /// Probability of training a StyleRef image with the bare token prompt instead of its
    /// caption (default 0).
    #[serde(default)]
    pub caption_dropout: Option<f64>,
    /// Shuffle the comma-separated tags of StyleRef captions every step (default false).
    #[serde(default)]
    pub shuffle_tags: Option<bool>,
    /// Leading tags kept in place when shuffling (default 0).
    #[serde(default)]
    pub keep_tokens: Option<usize>,
    /// Held-out style images for the validation loss (default: none).
    #[serde(default)]
    pub validation_dir: Option<PathBuf>,
    /// Extension of caption files, with its dot (default `.txt`).
    #[serde(default)]
    pub caption_extension: Option<String>,
    /// Weigh each StyleRef image's loss by its mask `<stem>.mask.png` (default false).
    #[serde(default)]
    pub masked_loss: Option<bool>,
    /// Aspect-ratio bucketing of StyleRef and Aux images (default false).
    #[serde(default)]
    pub bucketing: Option<bool>,
    /// Bucket sides are multiples of this (default: the VAE's factor × 8, 64 px for SD).
    #[serde(default)]
    pub bucket_step: Option<u32>,
    /// Largest long / short side ratio of a bucket (default 2).
    #[serde(default)]
    pub max_aspect: Option<f64>,
    /// StyleRef images of the first concept held out of training for the validation loss
    /// (default 0; chosen with the run's seed).
    #[serde(default)]
    pub validation_split: Option<usize>,
}

/// `[training]`: prompts and what is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    /// StyleRef prompt template; `{token}` is replaced (default `{token} style`, DreamBooth
    /// `a {token} style`).
    #[serde(default)]
    pub instance_prompt: Option<String>,
    /// Aux / class prompt (default `style`).
    #[serde(default)]
    pub aux_prompt: Option<String>,
    /// Weight of the Aux (prior-preservation) loss (default 1).
    #[serde(default)]
    pub prior_loss_weight: Option<f64>,
    /// Train the text encoder too (StyleForge: yes; DreamBooth: no).
    #[serde(default)]
    pub train_text_encoder: Option<bool>,
    /// Recompute activations during backward instead of keeping them (default off): the
    /// same gradients for far less memory and ~30% more compute per step.
    #[serde(default)]
    pub gradient_checkpointing: Option<bool>,
    /// Start even when the estimated peak memory exceeds what is available (default off:
    /// such a run is refused with the settings that would fit).
    #[serde(default)]
    pub ignore_memory_check: Option<bool>,
    /// `fp32` (default), `bf16` or `fp16`: the dtype forward and backward run in; weights
    /// and optimizer states stay f32 ([`super::precision`]).
    #[serde(default)]
    pub precision: Option<super::precision::Precision>,
    /// fp16: the first loss scale (default 65536).
    #[serde(default)]
    pub loss_scale_init: Option<f64>,
    /// fp16: clean steps before the loss scale doubles (default 2000).
    #[serde(default)]
    pub loss_scale_growth_interval: Option<usize>,
    /// Min-SNR-γ loss weighting (off by default; 5 is the Min-SNR paper's value).
    #[serde(default)]
    pub snr_gamma: Option<f64>,
    /// Whether min-SNR also weights the Aux (prior) loss (default false).
    #[serde(default)]
    pub snr_weight_prior: Option<bool>,
    /// `uniform` (default) or `logit-normal` timestep sampling.
    #[serde(default)]
    pub timestep_sampling: Option<super::objective::TimestepSampling>,
    /// First training timestep (default 0).
    #[serde(default)]
    pub min_timestep: Option<usize>,
    /// One past the last training timestep (default: the schedule's 1000).
    #[serde(default)]
    pub max_timestep: Option<usize>,
    /// Logit-normal mean (default 0; positive spends more steps at high noise).
    #[serde(default)]
    pub timestep_mean: Option<f64>,
    /// Logit-normal scale (default 1).
    #[serde(default)]
    pub timestep_scale: Option<f64>,
    /// Per-sample, per-channel noise offset (default 0; 0.05–0.1 is usual).
    #[serde(default)]
    pub noise_offset: Option<f64>,
    /// Input perturbation of the noise (default 0; diffusers suggests 0.1).
    #[serde(default)]
    pub input_perturbation: Option<f64>,
    /// Keep an exponential moving average of the trained weights with this decay (default:
    /// none; 0.9999 for long runs, lower for short ones).
    #[serde(default)]
    pub ema_decay: Option<f64>,
    /// EMA warm-up (`1 − (1 + k)^−power`; default false: `(1 + k)/(10 + k)`).
    #[serde(default)]
    pub ema_warmup: Option<bool>,
    /// EMA warm-up power (default 2/3).
    #[serde(default)]
    pub ema_power: Option<f64>,
    /// Optimizer steps before the EMA starts averaging (default 0).
    #[serde(default)]
    pub ema_update_after_step: Option<usize>,
    /// Aux images per concept; generated from the base model when the folder has fewer
    /// (StyleForge default 20, DreamBooth 100).
    #[serde(default)]
    pub num_aux_images: Option<usize>,
    /// Denoising steps when generating Aux images (default 30).
    #[serde(default)]
    pub aux_steps: Option<usize>,
    /// LoRA rank (default 4, as diffusers' LoRA scripts).
    #[serde(default)]
    pub lora_rank: Option<usize>,
    /// LoRA alpha (default: the rank, scale 1).
    #[serde(default)]
    pub lora_alpha: Option<f64>,
    /// Textual Inversion vectors per token (default 1).
    #[serde(default)]
    pub num_vectors: Option<usize>,
    /// Initializer word per new token (Textual Inversion default `style`; Custom
    /// Diffusion `pll`, `ucd`: diffusers' `ktn` is two CLIP tokens); each must be a single
    /// existing token.
    #[serde(default)]
    pub initializer_tokens: Option<Vec<String>>,
}

/// `[optim]`: optimizer and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    /// Optimizer steps (default 1000; DreamBooth 800).
    #[serde(default)]
    pub steps: Option<usize>,
    /// Learning rate (StyleForge 1e-6; DreamBooth 5e-6).
    #[serde(default)]
    pub lr: Option<f64>,
    /// AdamW β₁ (0.9).
    #[serde(default)]
    pub beta1: Option<f64>,
    /// AdamW β₂ (0.999).
    #[serde(default)]
    pub beta2: Option<f64>,
    /// AdamW weight decay (1e-2).
    #[serde(default)]
    pub weight_decay: Option<f64>,
    /// AdamW ε (1e-8).
    #[serde(default)]
    pub eps: Option<f64>,
    /// StyleRef images per micro-batch (1, the paper's), each with one Aux image when
    /// prior preservation is on; one forward pass over all of them.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step (1).
    #[serde(default)]
    pub gradient_accumulation: Option<usize>,
    /// Global gradient-norm clip (1.0; 0 disables).
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
    /// `constant` (default), `linear` or `cosine`.
    #[serde(default)]
    pub lr_schedule: Option<LrSchedule>,
    /// Linear warm-up steps (0).
    #[serde(default)]
    pub warmup_steps: Option<usize>,
    /// `adamw` (default: PyTorch's AdamW, f32 moments) or `adamw8bit` (bitsandbytes'
    /// `AdamW8bit`: block-wise 8-bit moments, a quarter of the optimizer memory).
    #[serde(default)]
    pub optimizer: Option<crate::optim::OptimizerKind>,
}

/// `[output]`: where results go and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// The run folder (model, checkpoints, logs, samples). Must not be inside the base model.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Steps between checkpoints (default 250; 0: only the final model).
    #[serde(default)]
    pub checkpoint_every: Option<usize>,
    /// Checkpoints kept (default 2, oldest removed first).
    #[serde(default)]
    pub keep_checkpoints: Option<usize>,
    /// Steps between validation grids (default 250; 0: only at the end).
    #[serde(default)]
    pub validate_every: Option<usize>,
    /// Validation prompts; `{token}` is replaced. Each is also sampled without the token.
    #[serde(default)]
    pub validation_prompts: Option<Vec<String>>,
    /// Denoising steps of validation samples (default 25).
    #[serde(default)]
    pub validation_steps: Option<usize>,
    /// `diffusers` (default), `single-file` or `both`.
    #[serde(default)]
    pub save_format: Option<SaveFormat>,
    /// Steps between validation-loss measurements (default 50; needs data.validation_dir or
    /// data.validation_split).
    #[serde(default)]
    pub validation_loss_every: Option<usize>,
    /// With an EMA: write the averaged weights as the model (default true).
    #[serde(default)]
    pub save_ema: Option<bool>,
    /// With an EMA written as the model: also write the raw trained weights, to
    /// `<run>/model-raw` (default false).
    #[serde(default)]
    pub save_raw: Option<bool>,
}

/// A training run's configuration as written in TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The method.
    pub method: Method,
    /// Seed of every random draw (default 1337).
    #[serde(default)]
    pub seed: Option<u64>,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (default: a CUDA GPU when there is one).
    #[serde(default)]
    pub device: Option<crate::device::DeviceChoice>,
    /// The base model.
    pub model: ModelSection,
    /// Images.
    #[serde(default)]
    pub data: DataSection,
    /// Prompts and trained parts.
    #[serde(default)]
    pub training: TrainingSection,
    /// Optimizer.
    #[serde(default)]
    pub optim: OptimSection,
    /// Outputs.
    #[serde(default)]
    pub output: OutputSection,
}

/// One concept with everything resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Concept {
    /// StyleRef folder.
    pub style_dir: PathBuf,
    /// Aux folder given by the user, if any.
    pub aux_dir: Option<PathBuf>,
    /// The token.
    pub token: String,
    /// The StyleRef prompt (`ohwx style`).
    pub instance_prompt: String,
    /// The Aux prompt (`style`).
    pub aux_prompt: String,
}

/// The effective configuration: every default applied, validated. Written into the run
/// folder at the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedConfig {
    /// The method.
    pub method: Method,
    /// Seed.
    pub seed: u64,
    /// Where the run computes, as the user chose it.
    #[serde(default)]
    pub device: crate::device::DeviceChoice,
    /// Base model folder.
    pub base: PathBuf,
    /// Weights variant.
    pub variant: Option<String>,
    /// Config override for a single-file base.
    #[serde(default)]
    pub base_config: Option<PathBuf>,
    /// How the trained model is written.
    #[serde(default)]
    pub save_format: SaveFormat,
    /// Concepts.
    pub concepts: Vec<Concept>,
    /// Resolution in pixels.
    pub resolution: u32,
    /// Crop mode.
    pub crop: CropMode,
    /// Mirrored images too.
    pub flip: bool,
    /// Upscale small images.
    pub allow_upscale: bool,
    /// Fewest StyleRef images.
    pub min_images: usize,
    /// Aux loss weight (0 disables prior preservation).
    pub prior_loss_weight: f64,
    /// Text encoder trained.
    pub train_text_encoder: bool,
    /// Gradient checkpointing of the UNet and text encoder.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Start even when the memory estimate exceeds what is available.
    #[serde(default)]
    pub ignore_memory_check: bool,
    /// The dtype forward and backward run in.
    #[serde(default)]
    pub precision: super::precision::Precision,
    /// Dynamic loss scaling of fp16 runs.
    #[serde(default)]
    pub loss_scale: super::precision::LossScaleConfig,
    /// Timestep sampling, noise offset, min-SNR weighting.
    #[serde(default)]
    pub objective: super::objective::Objective,
    /// Caption dropout and tag shuffling of the StyleRef prompts.
    #[serde(default)]
    pub captions: super::captions::CaptionOptions,
    /// Caption extension, loss masks, aspect-ratio buckets.
    #[serde(default)]
    pub data_options: super::data_options::DataOptions,
    /// Held-out style images for the validation loss.
    #[serde(default)]
    pub validation_dir: Option<PathBuf>,
    /// Steps between validation-loss measurements (0: never).
    #[serde(default)]
    pub validation_loss_every: usize,
    /// The moving average of the weights, when kept.
    #[serde(default)]
    pub ema: Option<super::ema::EmaConfig>,
    /// With an EMA: the model written is the average.
    #[serde(default)]
    pub save_ema: bool,
    /// With an EMA written as the model: the raw weights are written to `model-raw/` too.
    #[serde(default)]
    pub save_raw: bool,
    /// Aux images per concept.
    pub num_aux_images: usize,
    /// Steps for generating Aux images.
    pub aux_steps: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// AdamW settings.
    pub adamw: crate::optim::AdamWConfig,
    /// StyleRef images per micro-batch (1 in run folders written before it existed).
    #[serde(default = "one")]
    pub batch_size: usize,
    /// Micro-batches per step.
    pub gradient_accumulation: usize,
    /// Gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    /// LR schedule.
    pub lr_schedule: LrSchedule,
    /// Warm-up steps.
    pub warmup_steps: usize,
    /// Run folder.
    pub output_dir: PathBuf,
    /// Steps between checkpoints (0: none).
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Steps between validation grids (0: end only).
    pub validate_every: usize,
    /// Validation prompts (with `{token}` replaced by the first concept's token).
    pub validation_prompts: Vec<String>,
    /// Validation denoising steps.
    pub validation_steps: usize,
    /// LoRA / Textual Inversion / Custom Diffusion settings (unused by the others).
    #[serde(default)]
    pub adapter: AdapterSettings,
}

/// Default tokens: rare single tokens of the CLIP vocabulary.
const DEFAULT_TOKENS: [&str; 2] = ["ohwx", "phol"];

impl TrainConfig {
    /// Parses TOML text; `path` labels errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Applies `key=value` overrides (dotted keys, TOML values; bare words are strings),
    /// e.g. `optim.lr=2e-6`, `output.dir=runs/a`, `method=dreambooth`.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<Self> {
        let text = apply_overrides(self, overrides, "optim.lr=2e-6")?;
        Self::from_toml(&text, Path::new("<command-line overrides>"))
    }

    /// Applies the method's defaults and checks the result.
    pub fn resolve(&self) -> Result<ResolvedConfig> {
        let m = self.method;
        let dreambooth = m == Method::Dreambooth;
        let want_concepts = if m == Method::MultiStyleforge { 2 } else { 1 };
        let cd_two = m == Method::CustomDiffusion && self.data.concepts.len() == 2;
        if self.data.concepts.len() != want_concepts && !cd_two {
            return Err(Error::InvalidConfig(format!(
                "method `{}` needs {want_concepts} [[data.concepts]] (found {}){}",
                m.name(),
                self.data.concepts.len(),
                if want_concepts == 2 {
                    ": the first for people, the second for backgrounds"
                } else {
                    ""
                }
            )));
        }
        let t = &self.training;
        let template = t.instance_prompt.clone().unwrap_or_else(|| {
            if dreambooth {
                "a {token} style"
            } else {
                "{token} style"
            }
            .to_string()
        });
        let aux_prompt = t.aux_prompt.clone().unwrap_or_else(|| "style".to_string());
        let lora_rank = t.lora_rank.unwrap_or(4);
        let adapter = AdapterSettings {
            lora_rank,
            lora_alpha: t.lora_alpha.unwrap_or(lora_rank as f64),
            num_vectors: t.num_vectors.unwrap_or(1),
            initializer_tokens: t.initializer_tokens.clone().unwrap_or_else(|| {
                let words: &[&str] = match m {
                    Method::CustomDiffusion => &["pll", "ucd"],
                    _ => &["style"],
                };
                words.iter().map(|w| w.to_string()).collect()
            }),
        };
        // A placeholder is spelled as one token per vector, and all of them must fit the
        // text encoder's 75 prompt tokens; a rank beyond the widest layer only wastes memory.
        if !(1..=MAX_PROMPT_TOKENS).contains(&adapter.num_vectors) {
            return Err(Error::InvalidConfig(format!(
                "training.num_vectors = {}: a placeholder of that many vectors does not fit the \
                 text encoder's {MAX_PROMPT_TOKENS} prompt tokens; use 1 to {MAX_PROMPT_TOKENS}",
                adapter.num_vectors
            )));
        }
        if !(1..=MAX_LORA_RANK).contains(&adapter.lora_rank) {
            return Err(Error::InvalidConfig(format!(
                "training.lora_rank = {}: use 1 to {MAX_LORA_RANK} (4 to 128 is usual)",
                adapter.lora_rank
            )));
        }
        // Textual Inversion's multi-vector placeholders are written as all their tokens.
        let spelled = |token: &str| {
            if m == Method::TextualInversion {
                crate::adapters::textual_inversion::placeholder_tokens(
                    token,
                    adapter.num_vectors.max(1),
                )
                .join(" ")
            } else {
                token.to_string()
            }
        };
        let concepts: Vec<Concept> = self
            .data
            .concepts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let token = c.token.clone().unwrap_or_else(|| {
                    match m {
                        Method::TextualInversion => "<ohwx>",
                        Method::CustomDiffusion => ["<new1>", "<new2>"][i],
                        _ => DEFAULT_TOKENS[i],
                    }
                    .to_string()
                });
                Concept {
                    style_dir: c.style_dir.clone(),
                    aux_dir: c.aux_dir.clone(),
                    instance_prompt: template.replace("{token}", &spelled(&token)),
                    aux_prompt: aux_prompt.clone(),
                    token,
                }
            })
            .collect();
        if concepts.len() == 2 && concepts[0].token == concepts[1].token {
            return Err(Error::InvalidConfig(
                "the two concepts need different tokens".into(),
            ));
        }
        let o = &self.optim;
        let d = crate::optim::AdamWConfig::default();
        // diffusers' example scripts: train_dreambooth_lora.py (lr 1e-4 as in its README,
        // rank 4, no prior preservation), textual_inversion.py (lr 5e-4, 3000 steps, no
        // clipping), train_custom_diffusion.py (lr 1e-5, 250 steps, 200 class images).
        let (method_lr, method_steps, method_prior, method_aux) = match m {
            Method::Dreambooth => (5e-6, 800, 1.0, 100),
            Method::Lora => (1e-4, 500, 0.0, 1),
            Method::TextualInversion => (5e-4, 3000, 0.0, 1),
            Method::CustomDiffusion => (1e-5, 250, 1.0, 200),
            _ => (1e-6, 1000, 1.0, 20),
        };
        let adamw = crate::optim::AdamWConfig {
            lr: o.lr.unwrap_or(method_lr),
            beta1: o.beta1.unwrap_or(d.beta1),
            beta2: o.beta2.unwrap_or(d.beta2),
            eps: o.eps.unwrap_or(d.eps),
            weight_decay: o.weight_decay.unwrap_or(d.weight_decay),
            optimizer: o.optimizer.unwrap_or(d.optimizer),
            ..d
        };
        let token = &concepts[0].token;
        let validation_prompts: Vec<String> = self
            .output
            .validation_prompts
            .clone()
            .unwrap_or_else(|| {
                vec![
                    "a portrait of a woman, {token} style".to_string(),
                    "a house by a lake, {token} style".to_string(),
                ]
            })
            .into_iter()
            .map(|p| p.replace("{token}", &spelled(token)))
            .collect();
        // Prompts with control characters are refused as on the command line.
        use crate::pipelines::check_prompt;
        check_prompt("training.instance_prompt", &template)?;
        check_prompt("training.aux_prompt", &aux_prompt)?;
        for (i, p) in validation_prompts.iter().enumerate() {
            check_prompt(&format!("output.validation_prompts[{i}]"), p)?;
        }
        let r = ResolvedConfig {
            method: m,
            seed: self.seed.unwrap_or(1337),
            device: self.device.unwrap_or_default(),
            base: self.model.base.clone(),
            variant: self.model.variant.clone(),
            base_config: self.model.config.clone(),
            save_format: self.output.save_format.unwrap_or_default(),
            concepts,
            resolution: self.data.resolution.unwrap_or(512),
            crop: self.data.crop.unwrap_or(CropMode::Center),
            flip: self.data.flip.unwrap_or(false),
            allow_upscale: self.data.allow_upscale.unwrap_or(false),
            min_images: self.data.min_images.unwrap_or(2),
            prior_loss_weight: t.prior_loss_weight.unwrap_or(method_prior),
            train_text_encoder: t
                .train_text_encoder
                .unwrap_or(!dreambooth && m != Method::Lora),
            gradient_checkpointing: t.gradient_checkpointing.unwrap_or(false),
            ignore_memory_check: t.ignore_memory_check.unwrap_or(false),
            precision: t.precision.unwrap_or_default(),
            loss_scale: {
                let d = super::precision::LossScaleConfig::default();
                super::precision::LossScaleConfig {
                    init_scale: t.loss_scale_init.unwrap_or(d.init_scale),
                    growth_interval: t.loss_scale_growth_interval.unwrap_or(d.growth_interval),
                    ..d
                }
            },
            validation_dir: self.data.validation_dir.clone(),
            validation_loss_every: if self.data.validation_dir.is_some()
                || self.data.validation_split.unwrap_or(0) > 0
            {
                self.output.validation_loss_every.unwrap_or(50)
            } else {
                0
            },
            captions: super::captions::CaptionOptions {
                dropout: self.data.caption_dropout.unwrap_or(0.0),
                shuffle_tags: self.data.shuffle_tags.unwrap_or(false),
                keep_tokens: self.data.keep_tokens.unwrap_or(0),
            },
            data_options: {
                let d = super::data_options::DataOptions::default();
                let s = &self.data;
                super::data_options::DataOptions {
                    caption_extension: s.caption_extension.clone().unwrap_or(d.caption_extension),
                    masked_loss: s.masked_loss.unwrap_or(d.masked_loss),
                    bucketing: s.bucketing.unwrap_or(d.bucketing),
                    bucket_step: s.bucket_step,
                    max_aspect: s.max_aspect.unwrap_or(d.max_aspect),
                    validation_split: s.validation_split.unwrap_or(d.validation_split),
                }
            },
            objective: {
                let d = super::objective::Objective::default();
                super::objective::Objective {
                    snr_gamma: t.snr_gamma,
                    snr_weight_prior: t.snr_weight_prior.unwrap_or(d.snr_weight_prior),
                    timestep_sampling: t.timestep_sampling.unwrap_or(d.timestep_sampling),
                    min_timestep: t.min_timestep.unwrap_or(d.min_timestep),
                    max_timestep: t.max_timestep,
                    timestep_mean: t.timestep_mean.unwrap_or(d.timestep_mean),
                    timestep_scale: t.timestep_scale.unwrap_or(d.timestep_scale),
                    noise_offset: t.noise_offset.unwrap_or(d.noise_offset),
                    input_perturbation: t.input_perturbation.unwrap_or(d.input_perturbation),
                }
            },
            ema: t.ema_decay.map(|decay| {
                let d = super::ema::EmaConfig::default();
                super::ema::EmaConfig {
                    decay,
                    warmup: t.ema_warmup.unwrap_or(d.warmup),
                    power: t.ema_power.unwrap_or(d.power),
                    update_after_step: t.ema_update_after_step.unwrap_or(d.update_after_step),
                    ..d
                }
            }),
            save_ema: t.ema_decay.is_some() && self.output.save_ema.unwrap_or(true),
            save_raw: t.ema_decay.is_some()
                && self.output.save_ema.unwrap_or(true)
                && self.output.save_raw.unwrap_or(false),
            num_aux_images: t.num_aux_images.unwrap_or(method_aux),
            aux_steps: t.aux_steps.unwrap_or(30),
            steps: o.steps.unwrap_or(method_steps),
            adamw,
            batch_size: o.batch_size.unwrap_or(1),
            gradient_accumulation: o.gradient_accumulation.unwrap_or(1),
            max_grad_norm: o.max_grad_norm.unwrap_or(if m == Method::TextualInversion {
                0.0
            } else {
                1.0
            }),
            lr_schedule: o.lr_schedule.unwrap_or_default(),
            warmup_steps: o.warmup_steps.unwrap_or(0),
            output_dir: self
                .output
                .dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/{}", m.name()))),
            checkpoint_every: self.output.checkpoint_every.unwrap_or(250),
            keep_checkpoints: self.output.keep_checkpoints.unwrap_or(2),
            validate_every: self.output.validate_every.unwrap_or(250),
            validation_prompts,
            validation_steps: self.output.validation_steps.unwrap_or(25),
            adapter,
        };
        r.validate()?;
        Ok(r)
    }
}

/// A file `styleforge train --config` reads: a config as written by hand, or the effective
/// `config.toml` a run leaves in its folder (every default applied), which continues that
/// run (`--resume`) with exactly its settings whatever the config and flags that made it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigFile {
    /// A hand-written config, sections and defaults ([`TrainConfig`]).
    Written(Box<TrainConfig>),
    /// A run's effective config ([`ResolvedConfig`], flat keys such as `steps`, `output_dir`).
    Effective(Box<ResolvedConfig>),
}

impl ConfigFile {
    /// Reads `path`: a run's effective config is told apart by its top-level `output_dir`
    /// (a written config has an `[output]` section instead).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let effective = text
            .parse::<toml::Table>()
            .is_ok_and(|t| t.contains_key("output_dir"));
        if effective {
            ResolvedConfig::from_toml(&text, path).map(|c| Self::Effective(Box::new(c)))
        } else {
            TrainConfig::from_toml(&text, path).map(|c| Self::Written(Box::new(c)))
        }
    }
}

impl ResolvedConfig {
    /// Reads an effective config (a run folder's `config.toml`) and checks it.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies `key=value` overrides with the effective config's own keys (`steps=2000`,
    /// `output_dir="runs/b"`, `adamw.lr=1e-5`) and checks the result.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<Self> {
        let text = apply_overrides(self, overrides, "steps=2000")?;
        Self::from_toml(&text, Path::new("<command-line overrides>"))
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.steps == 0 {
            return bad("optim.steps must be at least 1".into());
        }
        if self.method.is_adapter() && self.save_format != SaveFormat::Diffusers {
            return bad(format!(
                "output.save_format = \"{}\" applies to fine-tuned models; {} saves adapter weights",
                self.save_format.name(),
                self.method.name()
            ));
        }
        if self.gradient_accumulation == 0 {
            return bad("optim.gradient_accumulation must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("optim.batch_size must be at least 1".into());
        }
        if !(self.adamw.lr > 0.0 && self.adamw.lr.is_finite()) {
            return bad(format!("optim.lr must be positive, got {}", self.adamw.lr));
        }
        if self.resolution == 0 || !self.resolution.is_multiple_of(8) {
            return bad(format!(
                "data.resolution {} is not a positive multiple of 8",
                self.resolution
            ));
        }
        if self.prior_loss_weight < 0.0 {
            return bad("training.prior_loss_weight must be >= 0".into());
        }
        // The timestep range is checked against the model's schedule when the run starts.
        self.objective.validate(usize::MAX)?;
        self.captions.validate()?;
        self.data_options.validate()?;
        if let Some(ema) = &self.ema {
            ema.validate()?;
        }
        if self.precision.scales_loss() {
            self.loss_scale.validate()?;
        }
        Ok(())
    }

    /// The effective config as TOML, for the run folder.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::TomlWrite {
            what: "the run config".into(),
            source: e,
        })
    }

    /// The learning rate of every optimizer step: warm-up, then `lr_schedule` to 0 at the
    /// last step.
    pub fn lr_plan(&self) -> LrPlan {
        LrPlan::new(
            self.adamw.lr,
            self.warmup_steps,
            self.steps,
            self.lr_schedule,
        )
    }
}

/// `value` as TOML with `key=value` overrides applied (dotted keys into sections, values in
/// TOML syntax, bare words as strings): the `--set` of `styleforge train` and `pretrain`.
/// `example` is shown when an override is not `key=value`.
pub(crate) fn apply_overrides<T: Serialize>(
    value: &T,
    overrides: &[String],
    example: &str,
) -> Result<String> {
    let mut doc = toml::Table::try_from(value).map_err(|e| Error::TomlWrite {
        what: "the config".into(),
        source: e,
    })?;
    for item in overrides {
        let (key, raw) = item.split_once('=').ok_or_else(|| {
            Error::InvalidConfig(format!(
                "override `{item}` is not key=value (e.g. {example})"
            ))
        })?;
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|t| t.get("v").cloned())
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        let parts: Vec<&str> = key.trim().split('.').collect();
        let mut table = &mut doc;
        for part in &parts[..parts.len() - 1] {
            table = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    Error::InvalidConfig(format!("override `{key}`: `{part}` is not a section"))
                })?;
        }
        table.insert(parts[parts.len() - 1].to_string(), value);
    }
    toml::to_string(&doc).map_err(|e| Error::TomlWrite {
        what: "the config with its overrides".into(),
        source: e,
    })
}

fn one() -> usize {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(extra: &str) -> Result<ResolvedConfig> {
        let text = format!(
            "method = \"textual-inversion\"\n[model]\nbase = \"m\"\n[[data.concepts]]\n\
             style_dir = \"s\"\n[training]\n{extra}\n"
        );
        TrainConfig::from_toml(&text, Path::new("t.toml"))?.resolve()
    }

    #[test]
    fn absurd_adapter_sizes_are_refused_before_anything_is_built() {
        // Found by `styleforge selftest fuzz --target train-config`: num_vectors =
        // 4294967296 spelled the placeholder as that many tokens (a 100 GB allocation, and
        // an abort).
        for (extra, key) in [
            ("num_vectors = 4294967296", "num_vectors"),
            ("num_vectors = 76", "num_vectors"),
            ("num_vectors = 0", "num_vectors"),
            ("lora_rank = 1000000000", "lora_rank"),
            ("lora_rank = 0", "lora_rank"),
        ] {
            let err = resolve(extra).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
        assert_eq!(resolve("num_vectors = 75").unwrap().adapter.num_vectors, 75);
    }

    #[test]
    fn prompts_with_control_characters_are_refused() {
        let err = resolve("instance_prompt = \"a {token}\\u001b[31m style\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("training.instance_prompt") && err.contains("U+001B"),
            "{err}"
        );
        assert!(resolve("instance_prompt = \"a {token}\\nstyle\"").is_ok());
    }
}
