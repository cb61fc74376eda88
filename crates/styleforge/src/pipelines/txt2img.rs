//! Text-to-image: noise → denoise with the prompt → decode.

use candle_core::{DType, Tensor};
use styleforge_schedulers::NoiseSource;

use super::{check_side, SamplingOptions, StableDiffusion};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// A text-to-image request.
#[derive(Debug, Clone)]
pub struct Txt2ImgRequest {
    /// Prompt, guidance, steps, sampler, count.
    pub sampling: SamplingOptions,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Initial latents `[num_images, 4, h, w]`, taken as diffusers takes its `latents=`
    /// argument (unscaled noise, multiplied by the scheduler's initial sigma); drawn from the
    /// noise source when `None`.
    pub latents: Option<Tensor>,
}

impl StableDiffusion {
    /// Generates `[num_images, 3, height, width]` images in [0, 1].
    ///
    /// All randomness (initial latents when not given, stochastic sampler steps) comes from
    /// `noise`, in that order.
    pub fn txt2img(
        &self,
        req: &Txt2ImgRequest,
        noise: &mut dyn NoiseSource,
        progress: &mut dyn Progress,
    ) -> Result<Tensor> {
        let f = self.vae_scale_factor();
        check_side("width", req.width, f)?;
        check_side("height", req.height, f)?;
        let opts = &req.sampling;
        if opts.num_images == 0 || opts.steps == 0 {
            return Err(Error::InvalidRequest(
                "num_images and steps must be at least 1".into(),
            ));
        }
        let mut scheduler = self.scheduler(&opts.scheduler)?;
        scheduler.set_eta(opts.eta)?;
        scheduler.set_timesteps(opts.steps)?;
        let channels = self.unet.config().in_channels;
        let shape = (opts.num_images, channels, req.height / f, req.width / f);
        let latents = match &req.latents {
            Some(l) => {
                if l.dims() != [shape.0, shape.1, shape.2, shape.3] {
                    return Err(Error::InvalidRequest(format!(
                        "initial latents have shape {:?}, but {} image(s) of {}x{} need {:?}",
                        l.dims(),
                        opts.num_images,
                        req.width,
                        req.height,
                        [shape.0, shape.1, shape.2, shape.3]
                    )));
                }
                l.to_device(self.device())?.to_dtype(DType::F32)?
            }
            None => noise.sample(&shape.into(), DType::F32, self.device())?,
        };
        let context = self.conditioning(opts)?;
        let latents = (latents * scheduler.init_noise_sigma())?;
        let timesteps = scheduler.timesteps().to_vec();
        let latents = self.denoise(
            scheduler.as_mut(),
            &timesteps,
            latents,
            &context,
            noise,
            progress,
        )?;
        self.decode_latents(&latents)
    }
}
