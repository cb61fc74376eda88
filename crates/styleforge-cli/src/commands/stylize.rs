//! `styleforge stylize`: image-to-image (SDEdit) into the model's style.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use styleforge::image_io::{load_rgb, resize_exact, rgb_to_tensor};
use styleforge::pipelines::{GenerationParameters, Img2ImgRequest};
use styleforge::schedulers::SeededNoise;

use super::sampling::{write_images, SamplingArgs};
use crate::progress::Bar;

/// Arguments of `styleforge stylize`.
#[derive(Args, Debug)]
pub struct StylizeArgs {
    #[command(flatten)]
    sampling: SamplingArgs,
    /// The image to restyle (PNG, JPEG or WebP; any size and colour mode; read as diffusers'
    /// `load_image` reads it: EXIF orientation applied, transparency ignored).
    #[arg(long)]
    image: PathBuf,
    /// How much to change it, in (0, 1]: 1 ignores the image, 0.3 keeps most of it.
    #[arg(long)]
    strength: f64,
    /// Output width, a multiple of 8 (default: the image's width rounded down to 8).
    #[arg(long)]
    width: Option<usize>,
    /// Output height, a multiple of 8 (default: the image's height rounded down to 8).
    #[arg(long)]
    height: Option<usize>,
}

/// Runs `styleforge stylize`.
pub fn run(args: &StylizeArgs, quiet: bool) -> Result<()> {
    let s = &args.sampling;
    s.validate()?;
    if !(args.strength > 0.0 && args.strength <= 1.0) {
        bail!("--strength must be in (0, 1], got {}", args.strength);
    }
    let rgb = load_rgb(&args.image).with_context(|| format!("--image {}", args.image.display()))?;
    let width = args.width.unwrap_or(rgb.width() as usize / 8 * 8);
    let height = args.height.unwrap_or(rgb.height() as usize / 8 * 8);
    for (what, v) in [("width", width), ("height", height)] {
        if v == 0 || v % 8 != 0 {
            bail!("{what} {v} is not a positive multiple of 8 (set --{what})");
        }
    }
    // Adapters applied, and Textual Inversion placeholders spelled out as in `generate`.
    let (sd, sampling) = s.load_with_options()?;
    let resized = resize_exact(&rgb, width as u32, height as u32);
    let image = rgb_to_tensor(&resized, sd.device())?;
    let seed = s.seed();
    let req = Img2ImgRequest {
        sampling,
        image,
        strength: args.strength,
    };
    let mut noise = SeededNoise::new(seed);
    let images = sd.img2img(&req, &mut noise, &mut Bar::new(quiet))?;
    let params = GenerationParameters {
        prompt: s.prompt.clone(),
        negative_prompt: s.negative_prompt.clone(),
        steps: s.steps,
        scheduler: req.sampling.scheduler.clone(),
        default_sampler: sd.scheduler_config_class(),
        guidance_scale: s.guidance,
        guidance_rescale: s.guidance_rescale,
        seed: Some(seed),
        size: (width, height),
        model: sd.model_name(),
        denoising_strength: Some(args.strength),
        batch_index: None,
    };
    write_images(&images, &params, &s.out)
}
