//! `styleforge generate`: text-to-image.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use styleforge::pipelines::{load_latents, GenerationParameters, Txt2ImgRequest};
use styleforge::schedulers::SeededNoise;

use super::sampling::{write_images, SamplingArgs};
use crate::progress::Bar;

/// Arguments of `styleforge generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Image width in pixels, a multiple of 8 (default: the model's native size).
    #[arg(long)]
    width: Option<usize>,
    /// Image height in pixels, a multiple of 8 (default: the model's native size).
    #[arg(long)]
    height: Option<usize>,
    /// Initial latents: a safetensors file with a `latents` tensor `[n, 4, h, w]`
    /// (unscaled noise, as diffusers' `latents=` argument).
    #[arg(long)]
    latents: Option<PathBuf>,
}

/// Runs `styleforge generate`.
pub fn run(args: &GenerateArgs, quiet: bool) -> Result<()> {
    let s = &args.sampling;
    s.validate()?;
    for (what, v) in [("--width", args.width), ("--height", args.height)] {
        if let Some(v) = v {
            if v == 0 || v % 8 != 0 {
                anyhow::bail!("{what} {v} is not a positive multiple of 8");
            }
        }
    }
    let (sd, sampling) = s.load_with_options()?;
    let native = sd.native_size();
    let latents = match &args.latents {
        Some(p) => Some(
            load_latents(p, sd.device()).with_context(|| format!("--latents {}", p.display()))?,
        ),
        None => None,
    };
    let (width, height) = match &latents {
        Some(l) if args.width.is_none() && args.height.is_none() => {
            let f = sd.vae_scale_factor();
            (l.dim(3)? * f, l.dim(2)? * f)
        }
        _ => (args.width.unwrap_or(native), args.height.unwrap_or(native)),
    };
    let seed = s.seed();
    let req = Txt2ImgRequest {
        sampling,
        width,
        height,
        latents,
    };
    let mut noise = SeededNoise::new(seed);
    let images = sd.txt2img(&req, &mut noise, &mut Bar::new(quiet))?;
    let params = GenerationParameters {
        prompt: s.prompt.clone(),
        negative_prompt: s.negative_prompt.clone(),
        steps: s.steps,
        scheduler: req.sampling.scheduler.clone(),
        default_sampler: sd.scheduler_config_class(),
        guidance_scale: s.guidance,
        guidance_rescale: s.guidance_rescale,
        seed: args.latents.is_none().then_some(seed),
        size: (width, height),
        model: sd.model_name(),
        denoising_strength: None,
        batch_index: None,
    };
    write_images(&images, &params, &s.out)
}
