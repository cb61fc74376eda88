//! Generation pipelines over a loaded Stable Diffusion model: text-to-image and
//! image-to-image (SDEdit), step for step as diffusers' `StableDiffusionPipeline` and
//! `StableDiffusionImg2ImgPipeline` run them.

pub mod img2img;
pub mod parameters;
pub mod txt2img;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use styleforge_models::clip_text::ClipTextModel;
use styleforge_models::folder::{LoadOptions, ModelFolder};
use styleforge_models::source::{self, LocalModel, ResolveOptions};
use styleforge_models::tokenizer::ClipTokenizer;
use styleforge_models::unet::UNet2DConditionModel;
use styleforge_models::vae::AutoencoderKL;
use styleforge_schedulers::{NoiseSource, Scheduler, SchedulerConfig, SchedulerKind};

use crate::error::{Error, Result};
use crate::progress::Progress;

pub use img2img::Img2ImgRequest;
pub use parameters::GenerationParameters;
pub use txt2img::{StageTimes, Txt2ImgRequest};

/// The scheduler to sample with: the model's own, or one the user names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerChoice {
    /// A name for [`SchedulerKind::from_name`] (`ddim`, `euler`, `dpm++2m`, ...); `None` for the
    /// model's own scheduler.
    pub name: Option<String>,
    /// Karras sigmas (Euler, DPM++).
    pub karras: bool,
}

/// The settings shared by text-to-image and image-to-image.
#[derive(Debug, Clone)]
pub struct SamplingOptions {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from (the unconditional prompt is `""` when `None`).
    pub negative_prompt: Option<String>,
    /// Denoising steps of the full schedule.
    pub steps: usize,
    /// Classifier-free guidance scale; guidance is off at 1 or below.
    pub guidance_scale: f64,
    /// Guidance rescale φ in [0, 1] (diffusers' `guidance_rescale`, "CFG rescale"): the
    /// guided prediction is scaled to the conditional prediction's standard deviation, and
    /// mixed with the unscaled one in proportion φ; 0 (the default) leaves it as it is.
    /// Tames the over-exposed, over-contrasted look of high guidance.
    pub guidance_rescale: f64,
    /// The sampler.
    pub scheduler: SchedulerChoice,
    /// Images to make for the prompt.
    pub num_images: usize,
    /// DDIM's eta (0: deterministic).
    pub eta: f64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: None,
            steps: 30,
            guidance_scale: 7.5,
            guidance_rescale: 0.0,
            scheduler: SchedulerChoice::default(),
            num_images: 1,
            eta: 0.0,
        }
    }
}

/// A loaded Stable Diffusion model: tokenizer, text encoder, UNet, VAE and the scheduler
/// configuration, ready to sample from.
pub struct StableDiffusion {
    /// The prompt tokenizer.
    pub tokenizer: ClipTokenizer,
    /// The text encoder.
    pub text_encoder: ClipTextModel,
    /// The denoiser.
    pub unet: UNet2DConditionModel,
    /// The autoencoder.
    pub vae: AutoencoderKL,
    /// The model's `scheduler/scheduler_config.json`.
    pub scheduler_config: SchedulerConfig,
    /// Text-encoder layers to skip at the end (diffusers' `clip_skip`).
    pub clip_skip: usize,
    /// Where the model came from (for image metadata).
    pub source: PathBuf,
    device: Device,
}

impl StableDiffusion {
    /// Loads every component of a model: a diffusers folder, a single-file checkpoint
    /// (`*.safetensors` in the original LDM layout; see [`styleforge_models::single_file`])
    /// or a Hugging Face Hub name, fetched into the Hugging Face cache with `opts.variant`'s
    /// files ([`styleforge_models::source::resolve`]).
    pub fn load(model: &Path, opts: &LoadOptions) -> Result<Self> {
        let local = source::resolve(model, &ResolveOptions::diffusers(opts.variant.clone()))?;
        Self::load_local(&local, opts)
    }

    /// Loads a model already resolved to files on disk: a folder, or a single file loaded
    /// directly (configs inferred from its tensor shapes).
    pub fn load_local(local: &LocalModel, opts: &LoadOptions) -> Result<Self> {
        if local.is_single_file() {
            return Self::load_single_file(&local.path, &Default::default(), opts);
        }
        let dir = local.path.as_path();
        let folder = ModelFolder::open(dir)?;
        let tokenizer = folder.tokenizer()?;
        let text_encoder = folder.text_encoder(opts)?.model;
        let unet = folder.unet(opts)?.model;
        let vae = folder.vae(opts)?.model;
        let scheduler_config = SchedulerConfig::from_model_dir(dir)?;
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
            clip_skip: 0,
            source: dir.to_path_buf(),
            device: opts.device.clone(),
        })
    }

    /// Loads a single-file checkpoint: architecture inferred from its tensor shapes (or
    /// `sf_opts.config`), the standard CLIP tokenizer, the family's diffusers scheduler.
    pub fn load_single_file(
        file: &Path,
        sf_opts: &styleforge_models::single_file::SingleFileOptions,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let sf = styleforge_models::single_file::SingleFile::open(file, sf_opts)?;
        Ok(Self {
            tokenizer: sf.tokenizer()?,
            text_encoder: sf.text_encoder(opts)?.model,
            unet: sf.unet(opts)?.model,
            vae: sf.vae(opts)?.model,
            scheduler_config: SchedulerConfig::from_json_value(&sf.scheduler)?,
            clip_skip: 0,
            source: file.to_path_buf(),
            device: opts.device.clone(),
        })
    }

    /// Assembles a pipeline from components already loaded (e.g. the models being trained).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        tokenizer: ClipTokenizer,
        text_encoder: ClipTextModel,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler_config: SchedulerConfig,
        source: PathBuf,
        device: Device,
    ) -> Self {
        Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
            clip_skip: 0,
            source,
            device,
        }
    }

    /// The device the models run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A short name of the model for image metadata (the folder name).
    pub fn model_name(&self) -> String {
        self.source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.source.display().to_string())
    }

    /// The diffusers class of the model's own scheduler (`PNDMScheduler`, ...).
    pub fn scheduler_config_class(&self) -> String {
        SchedulerKind::from_config(&self.scheduler_config)
            .map(|k| k.class_name().to_string())
            .unwrap_or_else(|_| "unknown".to_string())
    }

    /// Pixels per latent cell along each side.
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.downscale_factor()
    }

    /// The image side the model was trained at: the UNet's `sample_size` in pixels (512
    /// when the config does not say), as diffusers pipelines default to.
    pub fn native_size(&self) -> usize {
        self.unet
            .config()
            .sample_size
            .as_ref()
            .and_then(|v| v.as_u64())
            .map_or(512, |s| s as usize * self.vae_scale_factor())
    }

    /// Builds the scheduler a generation asks for.
    pub fn scheduler(&self, choice: &SchedulerChoice) -> Result<Box<dyn Scheduler>> {
        let kind = match &choice.name {
            Some(name) => SchedulerKind::from_name(name, choice.karras)?,
            None => SchedulerKind::from_config(&self.scheduler_config)?,
        };
        Ok(kind.build(&self.scheduler_config)?)
    }

    /// Prompt embeddings `[prompts.len(), 77, hidden]`; prompts longer than the tokenizer's
    /// limit are truncated (the tokenizer logs a warning).
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Tensor> {
        let rows: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| self.tokenizer.encode_padded(p).ids)
            .collect();
        let n = rows.len();
        let len = rows.first().map_or(0, Vec::len);
        let flat: Vec<u32> = rows.into_iter().flatten().collect();
        let ids = Tensor::from_vec(flat, (n, len), &self.device)?;
        // Sampling never back-propagates; with trainable weights (validation and Aux images
        // during training) a kept graph would hold every intermediate alive.
        Ok(self
            .text_encoder
            .forward_with_clip_skip(&ids, self.clip_skip)?
            .hidden_state
            .detach())
    }

    /// The conditioning for `opts`: `[uncond × n, cond × n]` when guidance is on (the order
    /// diffusers concatenates them in), else `[cond × n]`.
    fn conditioning(&self, opts: &SamplingOptions) -> Result<Conditioning> {
        check_guidance_rescale(opts.guidance_rescale)?;
        let n = opts.num_images;
        let cond = self.encode_prompts(&[opts.prompt.as_str()])?;
        let cond = cond.repeat((n, 1, 1))?;
        let guidance_scale = opts.guidance_scale;
        if !guidance_on(guidance_scale) {
            return Ok(Conditioning {
                context: cond,
                guidance_scale,
                guidance_rescale: opts.guidance_rescale,
            });
        }
        let negative = opts.negative_prompt.as_deref().unwrap_or("");
        let uncond = self.encode_prompts(&[negative])?.repeat((n, 1, 1))?;
        Ok(Conditioning {
            context: Tensor::cat(&[&uncond, &cond], 0)?,
            guidance_scale,
            guidance_rescale: opts.guidance_rescale,
        })
    }

    /// Runs the denoising loop from `latents` over `timesteps`.
    fn denoise(
        &self,
        scheduler: &mut dyn Scheduler,
        timesteps: &[f64],
        mut latents: Tensor,
        cond: &Conditioning,
        noise: &mut dyn NoiseSource,
        progress: &mut dyn Progress,
    ) -> Result<Tensor> {
        let (context, guidance_scale) = (&cond.context, cond.guidance_scale);
        let phi = cond.guidance_rescale;
        let guided = guidance_on(guidance_scale);
        progress.begin("denoising", timesteps.len());
        for &t in timesteps {
            let model_input = if guided {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let model_input = scheduler.scale_model_input(&model_input, t)?;
            let t_tensor = Tensor::new(&[t as f32], &self.device)?;
            // Detached at once: with trainable weights the graph of each step (and, through
            // the latents and a multistep scheduler's history, of every earlier step)
            // would stay alive.
            // The latents and the scheduler's maths stay f32 whatever the UNet computes in
            // (diffusers upcasts for Euler and DPM-Solver; here every scheduler gets it).
            let mut pred = self
                .unet
                .forward(&model_input, &t_tensor, context)?
                .detach()
                .to_dtype(DType::F32)?;
            if guided {
                let halves = pred.chunk(2, 0)?;
                let (uncond, cond) = (&halves[0], &halves[1]);
                pred = (uncond + ((cond - uncond)? * guidance_scale)?)?;
                if phi > 0.0 {
                    pred = rescale_guidance(&pred, cond, phi)?;
                }
            }
            latents = scheduler.step(&pred, t, &latents, noise)?.prev_sample;
            progress.advance(1);
        }
        progress.finish();
        Ok(latents)
    }

    /// Latents (as the UNet sees them) → images `[n, 3, H, W]` in [0, 1].
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor> {
        let z = (latents / self.vae.scaling_factor())?;
        let image = self.vae.decode(&z)?.detach().to_dtype(DType::F32)?;
        Ok(((image / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }
}

/// Prompt embeddings ready for the UNet, with the guidance scale they were built for.
struct Conditioning {
    context: Tensor,
    guidance_scale: f64,
    guidance_rescale: f64,
}

fn guidance_on(scale: f64) -> bool {
    scale > 1.0
}

/// Refuses a guidance rescale outside [0, 1] (the one rule the CLI, protocol files and the
/// studio check it by).
pub fn check_guidance_rescale(phi: f64) -> Result<()> {
    if (0.0..=1.0).contains(&phi) {
        return Ok(());
    }
    Err(Error::InvalidRequest(format!(
        "guidance rescale {phi} is outside [0, 1]; 0 is off, 0.7 is the usual value"
    )))
}

/// Guidance rescale ("Common Diffusion Noise Schedules and Sample Steps are Flawed", Lin et
/// al. 2023, §3.4), as diffusers computes it: the guided prediction `guided` is scaled
/// per image to the standard deviation (unbiased, over all but the batch dimension) of the
/// conditional prediction `cond`, then mixed with itself: `φ·rescaled + (1 − φ)·guided`.
pub fn rescale_guidance(guided: &Tensor, cond: &Tensor, phi: f64) -> Result<Tensor> {
    let std = |x: &Tensor| -> Result<Tensor> {
        let flat = x.flatten_from(1)?;
        let n = flat.dim(1)?;
        let centred = flat.broadcast_sub(&flat.mean_keepdim(1)?)?;
        Ok((centred.sqr()?.sum_keepdim(1)? / (n.max(2) - 1) as f64)?.sqrt()?)
    };
    let mut shape = vec![guided.dim(0)?];
    shape.resize(guided.rank(), 1);
    let ratio = (std(cond)? / std(guided)?)?.reshape(shape)?;
    let rescaled = guided.broadcast_mul(&ratio)?;
    Ok(((rescaled * phi)? + (guided * (1.0 - phi))?)?)
}

/// Refuses a prompt holding a control character (other than tab and line breaks, which
/// CLIP reads as spaces): a terminal escape or a NUL pasted into a prompt is never meant
/// as text, would be encoded as unrelated byte tokens, and cannot be stored in the PNG's
/// `parameters` chunk as it was typed. `what` names the prompt in the message.
pub fn check_prompt(what: &str, prompt: &str) -> Result<()> {
    let found = prompt
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    if let Some((i, c)) = found {
        return Err(Error::InvalidRequest(format!(
            "{what} holds the control character U+{:04X} at character {}; remove it (tabs \
             and line breaks are fine)",
            c as u32,
            i + 1
        )));
    }
    Ok(())
}

/// Checks that a requested image side is a positive multiple of 8 and of the VAE's factor.
pub fn check_side(what: &str, value: usize, vae_factor: usize) -> Result<()> {
    let step = lcm(8, vae_factor);
    if value == 0 || !value.is_multiple_of(step) {
        return Err(Error::InvalidRequest(format!(
            "{what} {value} is not a positive multiple of {step}; use e.g. {}",
            (value.max(step) / step) * step
        )));
    }
    Ok(())
}

fn lcm(a: usize, b: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    a / gcd(a, b) * b
}

/// Reads initial latents from a safetensors file holding a `latents` tensor.
pub fn load_latents(path: &Path, device: &Device) -> Result<Tensor> {
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        message: format!("cannot read latents: {e}"),
    })?;
    let latents = tensors.get("latents").ok_or_else(|| Error::Image {
        path: path.to_path_buf(),
        message: "no tensor named `latents` in the file".to_string(),
    })?;
    Ok(latents.to_dtype(DType::F32)?)
}
