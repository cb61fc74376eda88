//! Text-to-image: noise → denoise with the prompt → decode.

use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};
use styleforge_schedulers::{NoiseSource, PerRowNoise};

use super::{
    check_guidance_rescale, check_side, guidance_on, Conditioning, SamplingOptions, StableDiffusion,
};
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

/// How long the stages of one [`StableDiffusion::txt2img_timed`] generation took, each
/// ending with the device synchronised (a GPU's queued work counts in its stage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Encoding the prompt and the negative prompt.
    pub text_encoding: Duration,
    /// The denoising loop: every UNet evaluation and scheduler step.
    pub denoising: Duration,
    /// The VAE decode of the final latents into images in [0, 1].
    pub decoding: Duration,
}

impl StageTimes {
    /// The stages by name (`text_encoding`, `denoising`, `vae_decode`), in the order they
    /// run.
    pub fn named(&self) -> [(&'static str, Duration); 3] {
        [
            ("text_encoding", self.text_encoding),
            ("denoising", self.denoising),
            ("vae_decode", self.decoding),
        ]
    }
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
        Ok(self.txt2img_timed(req, noise, progress)?.0)
    }

    /// [`Self::txt2img`], also saying how long each stage took.
    pub fn txt2img_timed(
        &self,
        req: &Txt2ImgRequest,
        noise: &mut dyn NoiseSource,
        progress: &mut dyn Progress,
    ) -> Result<(Tensor, StageTimes)> {
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
        let mut times = StageTimes::default();
        let start = Instant::now();
        let context = self.conditioning(opts)?;
        times.text_encoding = self.stage_end(start)?;
        let start = Instant::now();
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
        times.denoising = self.stage_end(start)?;
        // Only the latents are needed from here: the prompt embeddings and the scheduler's
        // state go before the decode allocates its full-resolution activations.
        drop(context);
        drop(scheduler);
        let start = Instant::now();
        let images = self.decode_latents(&latents)?;
        drop(latents);
        times.decoding = self.stage_end(start)?;
        Ok((images, times))
    }

    /// Time since `start` once the device has finished the work queued so far.
    fn stage_end(&self, start: Instant) -> Result<Duration> {
        self.device().synchronize()?;
        Ok(start.elapsed())
    }
}

impl StableDiffusion {
    /// Generates one `width`×`height` picture per prompt in a single batch, `[n, 3, H, W]`
    /// in [0, 1]. Row `i` draws all its noise (initial latents, then stochastic steps) from
    /// `SeededNoise::new(seeds[i])` ([`PerRowNoise`]), so it is the picture
    /// [`StableDiffusion::txt2img`] makes for that prompt and seed, with any sampler.
    /// `sampling.prompt` and `num_images` are ignored.
    pub fn txt2img_prompts(
        &self,
        prompts: &[String],
        seeds: &[u64],
        sampling: &SamplingOptions,
        width: usize,
        height: usize,
        progress: &mut dyn Progress,
    ) -> Result<Tensor> {
        let f = self.vae_scale_factor();
        check_side("width", width, f)?;
        check_side("height", height, f)?;
        if prompts.is_empty() || prompts.len() != seeds.len() || sampling.steps == 0 {
            return Err(Error::InvalidRequest(format!(
                "{} prompts and {} seeds: give one seed per prompt, at least one prompt and one step",
                prompts.len(),
                seeds.len()
            )));
        }
        let mut scheduler = self.scheduler(&sampling.scheduler)?;
        scheduler.set_eta(sampling.eta)?;
        scheduler.set_timesteps(sampling.steps)?;
        let shape = (
            seeds.len(),
            self.unet.config().in_channels,
            height / f,
            width / f,
        );
        let mut noise = PerRowNoise::new(seeds);
        let latents = noise.sample(&shape.into(), DType::F32, self.device())?;
        let latents = (latents * scheduler.init_noise_sigma())?;
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let cond = self.encode_prompts(&refs)?;
        let context = if guidance_on(sampling.guidance_scale) {
            let negative = sampling.negative_prompt.as_deref().unwrap_or("");
            let uncond = self
                .encode_prompts(&[negative])?
                .repeat((prompts.len(), 1, 1))?;
            Tensor::cat(&[&uncond, &cond], 0)?
        } else {
            cond
        };
        check_guidance_rescale(sampling.guidance_rescale)?;
        let conditioning = Conditioning {
            context,
            guidance_scale: sampling.guidance_scale,
            guidance_rescale: sampling.guidance_rescale,
        };
        let timesteps = scheduler.timesteps().to_vec();
        let latents = self.denoise(
            scheduler.as_mut(),
            &timesteps,
            latents,
            &conditioning,
            &mut noise,
            progress,
        )?;
        drop(conditioning);
        drop(scheduler);
        self.decode_latents(&latents)
    }
}
