//! Diffusion noise schedulers for StyleForge, matching diffusers 0.42 step for step.
//!
//! | name (`SchedulerKind::from_name`) | diffusers class | stochastic | Karras sigmas |
//! |---|---|---|---|
//! | `ddpm` | `DDPMScheduler` | yes (every step with `t > 0`) | no |
//! | `ddim` | `DDIMScheduler` | when `eta > 0` | no |
//! | `pndm` | `PNDMScheduler` (SD 1.x default; PLMS, optional PRK warm-up) | no | no |
//! | `euler` | `EulerDiscreteScheduler` | no | yes |
//! | `euler_a` | `EulerAncestralDiscreteScheduler` | yes (every step) | no |
//! | `dpm++2m` | `DPMSolverMultistepScheduler` (`dpmsolver++`) | no | yes |
//! | `dpm++2m_sde` | `DPMSolverMultistepScheduler` (`sde-dpmsolver++`) | yes (every step) | yes |
//!
//! Every scheduler implements [`Scheduler`]. A text-to-image loop, as diffusers'
//! `StableDiffusionPipeline` runs it:
//!
//! ```no_run
//! # use candle_core::{Device, DType, Tensor};
//! # use styleforge_schedulers::{SchedulerConfig, SchedulerKind, SeededNoise};
//! # fn unet(x: &Tensor, t: f64) -> candle_core::Result<Tensor> { Ok(x.clone()) }
//! # fn main() -> styleforge_schedulers::Result<()> {
//! let config = SchedulerConfig::from_model_dir("models/sd15")?;
//! let mut scheduler = SchedulerKind::from_name("dpm++2m", true)?.build(&config)?;
//! scheduler.set_timesteps(25)?;
//! let mut noise = SeededNoise::new(42);
//! let mut latents = Tensor::randn(0f32, 1f32, (1, 4, 64, 64), &Device::Cpu)?
//!     .affine(scheduler.init_noise_sigma(), 0.0)?;
//! for t in scheduler.timesteps().to_vec() {
//!     let model_input = scheduler.scale_model_input(&latents, t)?;
//!     let model_output = unet(&model_input, t)?;
//!     latents = scheduler.step(&model_output, t, &latents, &mut noise)?.prev_sample;
//! }
//! # Ok(()) }
//! ```
//!
//! For image-to-image, [`img2img_timesteps`] reproduces the pipeline's `get_timesteps` (and
//! `set_begin_index`); noise the encoded image with [`Scheduler::add_noise`] at
//! [`Img2ImgSchedule::latent_timestep`] and run the loop over its timesteps.
//!
//! Schedule maths is `f64` ([`schedule`]); the tensors keep the sample's dtype (the arithmetic
//! runs in `f32` for half-precision samples). Noise for stochastic steps always comes from the
//! caller ([`NoiseSource`]).

#![warn(missing_docs)]

pub mod config;
pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
mod error;
pub mod euler;
pub mod euler_ancestral;
mod img2img;
mod kind;
pub mod noise;
mod ops;
pub mod pndm;
pub mod schedule;

use candle_core::Tensor;

pub use config::{
    AlgorithmType, BetaSchedule, FinalSigmasType, PredictionType, SchedulerConfig, SolverType,
    TimestepSpacing, VarianceType,
};
pub use ddim::{DdimConfig, DdimScheduler};
pub use ddpm::{DdpmConfig, DdpmScheduler};
pub use dpm_solver::{DpmSolverMultistepConfig, DpmSolverMultistepScheduler};
pub use error::{Result, SchedulerError};
pub use euler::{EulerConfig, EulerScheduler};
pub use euler_ancestral::{EulerAncestralConfig, EulerAncestralScheduler};
pub use img2img::{img2img_timesteps, Img2ImgSchedule};
pub use kind::{build_scheduler, SchedulerKind};
pub use noise::{NoNoise, NoiseSource, PerRowNoise, QueuedNoise, SeededNoise};
pub use pndm::{PndmConfig, PndmScheduler};
pub use schedule::NoiseSchedule;

/// The result of one denoising step.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The sample at the next, less noisy, timestep: pass it to the next step.
    pub prev_sample: Tensor,
    /// The scheduler's estimate of the clean sample `x_0`, for schedulers that compute one
    /// (DDPM, DDIM, Euler, Euler ancestral); useful for previews.
    pub pred_original_sample: Option<Tensor>,
}

/// A diffusion noise scheduler, used by a pipeline as diffusers' pipelines use theirs.
///
/// Call [`set_timesteps`](Scheduler::set_timesteps) before each generation; it also resets the
/// scheduler's internal state (step index, multistep history), so one scheduler can be reused.
pub trait Scheduler: Send + Sync + std::fmt::Debug {
    /// Which scheduler this is (with its Karras / SDE flags).
    fn kind(&self) -> SchedulerKind;

    /// What the model is expected to predict.
    fn prediction_type(&self) -> PredictionType;

    /// The number of training timesteps of the noise schedule.
    fn num_train_timesteps(&self) -> usize;

    /// Prepares the inference schedule for `num_inference_steps` steps and resets the state.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;

    /// The timesteps to run, in order, exactly as diffusers' `scheduler.timesteps`: integers for
    /// DDPM/DDIM/PNDM/DPM-Solver, fractional values (float32) for Euler-type schedulers. Pass
    /// each of them to the model (timestep embedding) and to `scale_model_input` and `step`.
    /// PNDM's list has one more entry than `num_inference_steps` (it repeats one timestep).
    fn timesteps(&self) -> &[f64];

    /// The standard deviation of the initial noise: multiply unit-variance noise by it to get the
    /// first latents (1 for DDPM/DDIM/PNDM/DPM-Solver; `sigma_max`, or `sqrt(sigma_max^2 + 1)`
    /// with `leading` spacing, for Euler-type schedulers). Valid after `set_timesteps`.
    fn init_noise_sigma(&self) -> f64;

    /// Scales the denoiser input for the current timestep (`x / sqrt(sigma^2 + 1)` for Euler-type
    /// schedulers, the identity otherwise). Call it once per step, before `step`.
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor>;

    /// One denoising step from `timestep`: takes the model's prediction for `sample` and returns
    /// the sample at the next timestep. Stochastic schedulers draw their noise from `noise`, with
    /// the sample's shape, in diffusers' order.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput>;

    /// Noises clean samples to the given timesteps (one per batch element, or one for all), as
    /// for img2img or training: `sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise` for
    /// DDPM/DDIM/PNDM, `x_0 + sigma noise` for Euler-type schedulers (whose sigma is looked up
    /// through the schedule, or taken at the begin index once `set_begin_index` was called) and
    /// `alpha_t x_0 + sigma_t noise` for DPM-Solver.
    fn add_noise(
        &self,
        original_samples: &Tensor,
        noise: &Tensor,
        timesteps: &[f64],
    ) -> Result<Tensor>;

    /// How many `step` calls one timestep of the schedule takes (1 for every scheduler here,
    /// as in diffusers); img2img skips `t_start * order()` timesteps.
    fn order(&self) -> usize {
        1
    }

    /// Starts the schedule at index `begin_index` (img2img), for schedulers that track a step
    /// index (Euler, Euler ancestral, DPM-Solver); a no-op for the others.
    fn set_begin_index(&mut self, begin_index: usize) {
        let _ = begin_index;
    }

    /// Sets DDIM's `eta` (0 = deterministic DDIM, 1 = DDPM-like noise). Schedulers without an eta
    /// ignore it, as diffusers' pipelines only pass eta to schedulers whose step accepts it.
    fn set_eta(&mut self, eta: f64) -> Result<()> {
        let _ = eta;
        Ok(())
    }
}
