//! Euler's method on the probability-flow ODE (Karras et al. 2022, "Elucidating the Design
//! Space of Diffusion-Based Generative Models", Algorithm 2 without churn), as diffusers'
//! `EulerDiscreteScheduler`, optionally with Karras sigmas.
//!
//! The sampler works in the variance-exploding parameterisation `x = x_0 + sigma eps`: the
//! latents start at `sigma_max` times unit noise ([`Scheduler::init_noise_sigma`]), the model
//! sees `x / sqrt(sigma^2 + 1)` ([`Scheduler::scale_model_input`]), and each step follows
//! `dx/dsigma = (x - x_0) / sigma` from `sigma_i` to `sigma_{i+1}`. The timesteps handed to the
//! model are fractional training timesteps (float32, as diffusers').

use candle_core::Tensor;

use crate::config::{
    FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing,
    TimestepType,
};
use crate::error::{Result, SchedulerError};
use crate::kind::SchedulerKind;
use crate::noise::NoiseSource;
use crate::ops::{self, StepIndex};
use crate::schedule::{self, NoiseSchedule};
use crate::{Scheduler, StepOutput};

const NAME: &str = "EulerDiscreteScheduler";

/// `EulerDiscreteScheduler`'s config, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct EulerConfig {
    /// The training noise schedule.
    pub schedule: NoiseSchedule,
    /// What the model predicts (default `epsilon`).
    pub prediction_type: PredictionType,
    /// Use Karras et al.'s sigma spacing (default false).
    pub use_karras_sigmas: bool,
    /// Lower end of the Karras sigmas (default: the sigma of the last inference timestep).
    pub sigma_min: Option<f64>,
    /// Upper end of the Karras sigmas (default: the sigma of the first inference timestep).
    pub sigma_max: Option<f64>,
    /// Timestep spacing (default `linspace`).
    pub timestep_spacing: TimestepSpacing,
    /// Offset added to `leading` timesteps (default 0).
    pub steps_offset: usize,
    /// The sigma after the last step (default `zero`).
    pub final_sigmas_type: FinalSigmasType,
}

impl Default for EulerConfig {
    fn default() -> Self {
        Self {
            schedule: NoiseSchedule::default(),
            prediction_type: PredictionType::Epsilon,
            use_karras_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            final_sigmas_type: FinalSigmasType::Zero,
        }
    }
}

impl EulerConfig {
    /// Takes the keys `EulerDiscreteScheduler` accepts from `config`; the others keep their
    /// defaults. Fails on diffusers options this crate does not implement.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let d = Self::default();
        let prediction_type = config.prediction_type.unwrap_or(d.prediction_type);
        if config.interpolation_type == Some(InterpolationType::LogLinear) {
            return Err(SchedulerError::Unsupported {
                scheduler: NAME,
                key: "interpolation_type",
                value: "log_linear".into(),
                hint: "use \"linear\" (the default)",
            });
        }
        if config.timestep_type == Some(TimestepType::Continuous)
            && prediction_type == PredictionType::VPrediction
        {
            return Err(SchedulerError::Unsupported {
                scheduler: NAME,
                key: "timestep_type",
                value: "continuous".into(),
                hint: "continuous timesteps with v-prediction (SDXL refiner-style EDM models) are not \
                       implemented; use \"discrete\"",
            });
        }
        reject_true(
            NAME,
            "use_exponential_sigmas",
            config.use_exponential_sigmas,
        )?;
        reject_true(NAME, "use_beta_sigmas", config.use_beta_sigmas)?;
        Ok(Self {
            schedule: NoiseSchedule::from_config(config, true),
            prediction_type,
            use_karras_sigmas: config.use_karras_sigmas.unwrap_or(d.use_karras_sigmas),
            sigma_min: config.sigma_min,
            sigma_max: config.sigma_max,
            timestep_spacing: config.timestep_spacing.unwrap_or(d.timestep_spacing),
            steps_offset: config.steps_offset.unwrap_or(d.steps_offset),
            final_sigmas_type: config.final_sigmas_type.unwrap_or(d.final_sigmas_type),
        })
    }
}

/// Fails if an unsupported boolean option is switched on.
pub(crate) fn reject_true(
    scheduler: &'static str,
    key: &'static str,
    value: Option<bool>,
) -> Result<()> {
    if value == Some(true) {
        return Err(SchedulerError::Unsupported {
            scheduler,
            key,
            value: "true".into(),
            hint: "set it to false (use_karras_sigmas is the supported alternative)",
        });
    }
    Ok(())
}

/// `alpha_bar` for sigma-based schedulers: with zero-SNR rescaling the last value is 0, which
/// diffusers replaces by 2^-24 so that sigma stays finite.
pub(crate) fn sigma_alphas_cumprod(
    schedule: &NoiseSchedule,
    scheduler: &'static str,
) -> Result<Vec<f64>> {
    let mut alphas_cumprod = schedule.alphas_cumprod(scheduler)?;
    if schedule.rescale_betas_zero_snr {
        let last = alphas_cumprod.len() - 1;
        alphas_cumprod[last] = 2f64.powi(-24);
    }
    Ok(alphas_cumprod)
}

/// diffusers' `EulerDiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct EulerScheduler {
    config: EulerConfig,
    alphas_cumprod: Vec<f64>,
    /// Training sigmas, ascending in `t`.
    train_sigmas: Vec<f64>,
    log_sigmas: Vec<f64>,
    timesteps: Vec<f64>,
    /// One sigma per timestep, plus the final sigma.
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
}

impl EulerScheduler {
    /// Builds the scheduler.
    pub fn new(config: EulerConfig) -> Result<Self> {
        let alphas_cumprod = sigma_alphas_cumprod(&config.schedule, NAME)?;
        let train_sigmas = schedule::sigmas_from_alphas_cumprod(&alphas_cumprod);
        let log_sigmas = train_sigmas
            .iter()
            .map(|s| schedule::to_f32_precision(s.ln()))
            .collect();
        // Before set_timesteps: every training timestep, as diffusers.
        let n = alphas_cumprod.len();
        let timesteps = schedule::linspace(0.0, (n - 1) as f64, n)
            .into_iter()
            .rev()
            .map(schedule::to_f32_precision)
            .collect();
        let mut sigmas: Vec<f64> = train_sigmas.iter().rev().copied().collect();
        sigmas.push(0.0);
        Ok(Self {
            config,
            alphas_cumprod,
            train_sigmas,
            log_sigmas,
            timesteps,
            sigmas,
            num_inference_steps: None,
            index: StepIndex::default(),
        })
    }

    /// Builds the scheduler from a diffusers config (see [`EulerConfig::from_config`]).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        Self::new(EulerConfig::from_config(config)?)
    }

    /// The resolved config.
    pub fn config(&self) -> &EulerConfig {
        &self.config
    }

    /// The sigmas of the schedule: one per timestep, then the final sigma (0 by default).
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// `alpha_bar_t` for every training timestep.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The index of the next step (`None` before the first `scale_model_input`/`step`).
    pub fn step_index(&self) -> Option<usize> {
        self.index.step_index
    }

    fn current_sigma(&mut self, timestep: f64) -> Result<(usize, f64)> {
        let i = self.index.current(NAME, &self.timesteps, timestep, false)?;
        if i + 1 >= self.sigmas.len() {
            return Err(SchedulerError::ScheduleExhausted {
                scheduler: NAME,
                step_index: i,
                num_timesteps: self.timesteps.len(),
            });
        }
        Ok((i, self.sigmas[i]))
    }
}

impl Scheduler for EulerScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Euler {
            karras: self.config.use_karras_sigmas,
        }
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let num_train = self.alphas_cumprod.len();
        let n = num_inference_steps;
        if n == 0 || n > num_train {
            return Err(SchedulerError::InvalidStepCount {
                scheduler: NAME,
                requested: n,
                num_train_timesteps: num_train,
            });
        }
        let mut timesteps: Vec<f64> = schedule::spaced_timesteps(
            self.config.timestep_spacing,
            num_train,
            n,
            self.config.steps_offset,
            false,
        )
        .into_iter()
        .map(schedule::to_f32_precision)
        .collect();
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| schedule::interp_at_index(t, &self.train_sigmas))
            .collect();
        if self.config.use_karras_sigmas {
            // The Karras range defaults to the sigmas of the spaced timesteps, so it depends on
            // timestep_spacing (with `leading` it does not reach the largest training sigma).
            let sigma_min = self.config.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = self.config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = schedule::karras_sigmas(sigma_min, sigma_max, n);
            timesteps = sigmas
                .iter()
                .map(|&s| schedule::to_f32_precision(schedule::sigma_to_t(s, &self.log_sigmas)))
                .collect();
        }
        sigmas.push(match self.config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => self.train_sigmas[0],
        });
        // diffusers keeps the sigmas as float32.
        self.timesteps = timesteps;
        self.sigmas = sigmas.into_iter().map(schedule::to_f32_precision).collect();
        self.num_inference_steps = Some(n);
        self.index = StepIndex::default();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        let max_sigma = self.sigmas.iter().copied().fold(0.0, f64::max);
        match self.config.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        }
    }

    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let (_, sigma) = self.current_sigma(timestep)?;
        ops::scale(sample, 1.0 / (sigma * sigma + 1.0).sqrt())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput> {
        ops::check_same_shape(NAME, model_output, sample)?;
        let (i, sigma) = self.current_sigma(timestep)?;
        let dtype = ops::compute_dtype(sample.dtype());
        let x = ops::to_dtype(sample, dtype)?;
        let model_output = ops::to_dtype(model_output, dtype)?;

        // No churn (s_churn = 0, diffusers' default): sigma_hat = sigma.
        let sigma_hat = sigma;
        // Denoised estimate D(x; sigma).
        let pred_original_sample = match self.config.prediction_type {
            PredictionType::Epsilon => ops::lin2(1.0, &x, -sigma_hat, &model_output)?,
            PredictionType::Sample => model_output.clone(),
            // c_out = -sigma / sqrt(sigma^2 + 1), c_skip = 1 / (sigma^2 + 1).
            PredictionType::VPrediction => ops::lin2(
                -sigma / (sigma * sigma + 1.0).sqrt(),
                &model_output,
                1.0 / (sigma * sigma + 1.0),
                &x,
            )?,
        };
        // Karras Algorithm 2, lines 6-8: d = (x - D) / sigma; x_next = x + (sigma_next - sigma) d.
        let derivative = ops::scale(&(&x - &pred_original_sample)?, 1.0 / sigma_hat)?;
        let dt = self.sigmas[i + 1] - sigma_hat;
        let prev_sample = (&x + ops::scale(&derivative, dt)?)?;
        self.index.advance();
        Ok(StepOutput {
            prev_sample: prev_sample.to_dtype(sample.dtype())?,
            pred_original_sample: Some(pred_original_sample.to_dtype(sample.dtype())?),
        })
    }

    fn add_noise(
        &self,
        original_samples: &Tensor,
        noise: &Tensor,
        timesteps: &[f64],
    ) -> Result<Tensor> {
        ops::check_same_shape(NAME, noise, original_samples)?;
        let indices = self
            .index
            .for_add_noise(NAME, &self.timesteps, timesteps, false)?;
        let sigma: Vec<f64> = indices.iter().map(|&i| self.sigmas[i]).collect();
        let sigma = ops::per_batch(NAME, &sigma, original_samples)?;
        Ok((original_samples + noise.broadcast_mul(&sigma)?)?)
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.index.begin_index = Some(begin_index);
    }
}
