//! Options shared by `generate` and `stylize`, and writing their images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use styleforge::adapters::generation::{expand_placeholders, load_pipeline, GenerationAdapters};
use styleforge::adapters::lora::parse_lora_arg;
use styleforge::image_io::{save_png_with_parameters, tensor_to_image};
use styleforge::models::candle::Tensor;
use styleforge::models::folder::LoadOptions;
use styleforge::models::source::{LocalModel, ResolveOptions};
use styleforge::pipelines::{
    GenerationParameters, SamplingOptions, SchedulerChoice, StableDiffusion,
};

use super::choices::{DtypeArg, SchedulerArg};

/// Model, prompt and sampler options.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Where to compute.
    #[command(flatten)]
    pub device: super::device::DeviceArg,
    /// Model folder (diffusers layout: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/),
    /// a single-file `.safetensors` checkpoint, or a Hugging Face Hub model `owner/name[@revision]`
    /// (downloaded into the Hugging Face cache; honours HF_HOME, HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE).
    #[arg(long)]
    pub model: PathBuf,
    /// Weights variant, e.g. `fp16` (`*.fp16.safetensors`): loaded, and fetched from the Hub.
    /// With `--dtype f16` or `bf16` a local model's `fp16` files are used when it has them.
    #[arg(long)]
    pub variant: Option<String>,
    /// What the models compute in: f16 and bf16 halve the memory (slower on CPUs without
    /// half-precision units); the latents and the scheduler stay f32.
    #[arg(long, value_enum, ignore_case = true, default_value = "f32")]
    pub dtype: DtypeArg,
    /// What to draw.
    #[arg(long)]
    pub prompt: String,
    /// What to avoid.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Denoising steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Classifier-free guidance scale (1 turns guidance off).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Guidance rescale φ, 0 to 1 ("CFG rescale", diffusers' `guidance_rescale`): pulls
    /// the guided prediction's spread back to the conditional one's; 0.7 is the usual value
    /// against the washed-out, over-contrasted look of high guidance.
    #[arg(long, default_value_t = 0.0, value_parser = guidance_rescale)]
    pub guidance_rescale: f64,
    /// Sampler [default: the model's own].
    #[arg(long, value_enum, ignore_case = true)]
    pub scheduler: Option<SchedulerArg>,
    /// Karras sigmas (euler, dpm++2m).
    #[arg(long)]
    pub karras: bool,
    /// DDIM eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Seed of every random draw (default: a random seed, recorded in the PNG).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Images to make.
    #[arg(long, default_value_t = 1)]
    pub num_images: usize,
    /// Skip the last N text-encoder layers (1 = penultimate layer).
    #[arg(long, default_value_t = 0)]
    pub clip_skip: usize,
    /// Output: a .png file, or a folder for several images.
    #[arg(long)]
    pub out: PathBuf,
    /// A LoRA to apply, `FILE[:SCALE]` (diffusers/PEFT or kohya layout; repeatable).
    #[arg(long = "lora", value_name = "FILE[:SCALE]")]
    pub lora: Vec<String>,
    /// A Textual Inversion embedding (diffusers learned_embeds or AUTOMATIC1111
    /// emb_params; the token is the file's key or stem; repeatable).
    #[arg(long = "embedding", value_name = "FILE")]
    pub embedding: Vec<PathBuf>,
    /// Custom Diffusion weights: the `custom_diffusion.safetensors` deltas of a training run,
    /// or diffusers' `pytorch_custom_diffusion_weights.safetensors` (its `<token>.safetensors`
    /// embeddings are read from the same folder).
    #[arg(long, value_name = "FILE")]
    pub custom_diffusion: Option<PathBuf>,
}

impl SamplingArgs {
    /// The library's sampling options.
    pub fn options(&self) -> SamplingOptions {
        SamplingOptions {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            guidance_scale: self.guidance,
            guidance_rescale: self.guidance_rescale,
            scheduler: SchedulerChoice {
                name: self.scheduler.map(|s| s.name().to_string()),
                karras: self.karras,
            },
            num_images: self.num_images,
            eta: self.eta,
        }
    }

    /// The seed to use: the given one or a fresh one.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos % 4_294_967_296
        })
    }

    /// Checks cheap things before any model is loaded.
    pub fn validate(&self) -> Result<()> {
        if self.num_images == 0 {
            bail!("--num-images must be at least 1");
        }
        if self.steps == 0 {
            bail!("--steps must be at least 1");
        }
        styleforge::pipelines::check_prompt("--prompt", &self.prompt)?;
        if let Some(n) = &self.negative_prompt {
            styleforge::pipelines::check_prompt("--negative-prompt", n)?;
        }
        if let Some(s) = self.scheduler {
            // `--karras` with a sampler that has no Karras sigmas.
            styleforge::schedulers::SchedulerKind::from_name(s.name(), self.karras)?;
        }
        check_writable("--out", &self.out)?;
        let is_png = self
            .out
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !is_png && self.out.is_file() {
            bail!(
                "--out {} is an existing file that is not a .png; give a .png path or a folder",
                self.out.display()
            );
        }
        Ok(())
    }

    /// Loads the model, with any `--lora` / `--embedding` / `--custom-diffusion` applied,
    /// and the sampling options with the embeddings' placeholders spelled out in the prompts.
    pub fn load_with_options(&self) -> Result<(StableDiffusion, SamplingOptions)> {
        let device = self.device.resolve(Default::default())?;
        let mut options = self.options();
        let adapters = GenerationAdapters {
            loras: self
                .lora
                .iter()
                .map(|a| parse_lora_arg(a))
                .collect::<styleforge::Result<Vec<_>>>()?,
            embeddings: self.embedding.clone(),
            custom_diffusion: self.custom_diffusion.clone(),
        };
        let model = self.resolve_model()?;
        let shown = model.path.display();
        let load = LoadOptions {
            dtype: self.dtype.dtype(),
            variant: self.load_variant(&model),
            device: device.clone(),
            ..LoadOptions::default()
        };
        let mut sd = if adapters.is_empty() {
            StableDiffusion::load_local(&model, &load)
                .with_context(|| format!("cannot load the model in {shown}"))?
        } else {
            let a = load_pipeline(&model.path, &adapters, &load)
                .with_context(|| format!("cannot load the model in {shown} with its adapters"))?;
            options.prompt = expand_placeholders(&options.prompt, &a.placeholders);
            options.negative_prompt = options
                .negative_prompt
                .map(|p| expand_placeholders(&p, &a.placeholders));
            a.pipeline
        };
        sd.clip_skip = self.clip_skip;
        Ok((sd, options))
    }

    /// The weight files to read: `--variant`, or for a half-precision `--dtype` the `fp16`
    /// files of a local folder whose UNet has them (read without a detour through f32).
    fn load_variant(&self, model: &LocalModel) -> Option<String> {
        if self.variant.is_some() || self.dtype == DtypeArg::F32 || model.is_single_file() {
            return self.variant.clone();
        }
        let unet = model.path.join("unet");
        let has_fp16 = ["diffusion_pytorch_model", "model"].iter().any(|stem| {
            unet.join(format!("{stem}.fp16.safetensors")).is_file()
                || unet
                    .join(format!("{stem}.fp16.safetensors.index.json"))
                    .is_file()
        });
        has_fp16.then(|| "fp16".to_string())
    }

    /// `--model` on disk: a folder or single file as it is, a Hub model's snapshot folder in
    /// the Hugging Face cache (downloaded if needed, `--variant`'s files).
    pub fn resolve_model(&self) -> Result<LocalModel> {
        super::model_source::resolve(&self.model, ResolveOptions::diffusers(self.variant.clone()))
    }
}

/// Where image `i` of `n` goes: `out` itself for a single `.png`, `stem-i.png` beside a
/// `.png` for several, or `NNNNN-seed.png` inside a folder.
pub fn output_paths(out: &Path, n: usize, seed: Option<u64>) -> Vec<PathBuf> {
    let is_png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    (0..n)
        .map(|i| {
            if is_png && n == 1 {
                out.to_path_buf()
            } else if is_png {
                let stem = out
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.with_file_name(format!("{stem}-{i}.png"))
            } else {
                match seed {
                    Some(s) => out.join(format!("{i:05}-{s}.png")),
                    None => out.join(format!("{i:05}.png")),
                }
            }
        })
        .collect()
}

/// Writes each image of `images` `[n, 3, H, W]` with its parameters; prints the paths.
pub fn write_images(images: &Tensor, params: &GenerationParameters, out: &Path) -> Result<()> {
    let n = images.dim(0)?;
    let paths = output_paths(out, n, params.seed);
    for (i, path) in paths.iter().enumerate() {
        let rgb = tensor_to_image(&images.get(i)?)?;
        let mut p = params.clone();
        p.batch_index = (n > 1).then_some(i);
        save_png_with_parameters(&rgb, &p.to_a1111_text(), path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// Refuses an output path whose nearest existing folder cannot be written to, before any
/// model is loaded or image computed: a probe file is created there and removed.
pub fn check_writable(flag: &str, out: &std::path::Path) -> Result<()> {
    let mut dir = out.to_path_buf();
    while !dir.is_dir() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
            _ => {
                dir = std::path::PathBuf::from(".");
                break;
            }
        }
    }
    tempfile::Builder::new()
        .prefix(".styleforge-probe")
        .tempfile_in(&dir)
        .map(drop)
        .with_context(|| {
            format!(
                "{flag} {}: cannot write into {}; choose a folder you can write to",
                out.display(),
                dir.display()
            )
        })
}

/// Parses `--guidance-rescale`: a number in [0, 1].
pub fn guidance_rescale(text: &str) -> Result<f64, String> {
    let phi = text
        .parse::<f64>()
        .map_err(|e| format!("not a number: {e}"))?;
    styleforge::pipelines::check_guidance_rescale(phi).map_err(|e| e.to_string())?;
    Ok(phi)
}

#[cfg(test)]
mod tests {
    use super::guidance_rescale;

    #[test]
    fn guidance_rescale_takes_zero_to_one_only() {
        assert_eq!(guidance_rescale("0.7"), Ok(0.7));
        assert_eq!(guidance_rescale("0"), Ok(0.0));
        assert_eq!(guidance_rescale("1"), Ok(1.0));
        assert!(guidance_rescale("1.2")
            .unwrap_err()
            .contains("outside [0, 1]"));
        assert!(guidance_rescale("-0.1").is_err());
        assert!(guidance_rescale("NaN").is_err());
        assert!(guidance_rescale("much")
            .unwrap_err()
            .contains("not a number"));
    }
}
