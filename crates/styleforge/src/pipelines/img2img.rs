//! Image-to-image (SDEdit, Meng et al. 2022): encode the image, noise it to the timestep that
//! `strength` selects, and denoise the rest of the schedule with the prompt.

use candle_core::{DType, Tensor};
use styleforge_schedulers::{img2img_timesteps, NoiseSource};

use super::{check_side, SamplingOptions, StableDiffusion};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// An image-to-image request.
#[derive(Debug, Clone)]
pub struct Img2ImgRequest {
    /// Prompt, guidance, steps, sampler, count.
    pub sampling: SamplingOptions,
    /// The input image `[1, 3, H, W]` in [-1, 1], already at the output size.
    pub image: Tensor,
    /// How much to change it, in (0, 1]: 1 starts from pure noise, small values keep more
    /// of the input.
    pub strength: f64,
}

impl StableDiffusion {
    /// Restyles an image; returns `[num_images, 3, H, W]` in [0, 1].
    ///
    /// Randomness comes from `noise` in diffusers' order: the VAE posterior sample, the noise
    /// added at the start timestep, then stochastic sampler steps.
    pub fn img2img(
        &self,
        req: &Img2ImgRequest,
        noise: &mut dyn NoiseSource,
        progress: &mut dyn Progress,
    ) -> Result<Tensor> {
        if !(req.strength > 0.0 && req.strength <= 1.0) {
            return Err(Error::InvalidRequest(format!(
                "strength must be in (0, 1], got {}",
                req.strength
            )));
        }
        let (_, c, h, w) = req.image.dims4()?;
        if c != 3 {
            return Err(Error::InvalidRequest(format!(
                "expected an RGB image, got {c} channels"
            )));
        }
        let f = self.vae_scale_factor();
        check_side("width", w, f)?;
        check_side("height", h, f)?;
        let opts = &req.sampling;
        if opts.num_images == 0 || opts.steps == 0 {
            return Err(Error::InvalidRequest(
                "num_images and steps must be at least 1".into(),
            ));
        }
        let context = self.conditioning(opts)?;
        let mut scheduler = self.scheduler(&opts.scheduler)?;
        scheduler.set_eta(opts.eta)?;
        let schedule = img2img_timesteps(scheduler.as_mut(), opts.steps, req.strength)?;

        // The encoding's image, posterior and noise are not kept through the denoising.
        let latents = {
            let image = req.image.to_device(self.device())?.to_dtype(DType::F32)?;
            let posterior = self.vae.encode(&image)?;
            let eps = noise.sample(posterior.mean.shape(), DType::F32, self.device())?;
            let init = (posterior.sample_with(&eps)? * self.vae.scaling_factor())?;
            let init = init.repeat((opts.num_images, 1, 1, 1))?;
            let start_noise = noise.sample(init.shape(), DType::F32, self.device())?;
            scheduler.add_noise(&init, &start_noise, &[schedule.latent_timestep()])?
        };
        let latents = self.denoise(
            scheduler.as_mut(),
            &schedule.timesteps,
            latents,
            &context,
            noise,
            progress,
        )?;
        drop(context);
        drop(scheduler);
        self.decode_latents(&latents)
    }
}
