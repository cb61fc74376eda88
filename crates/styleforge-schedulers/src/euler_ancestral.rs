//! Ancestral Euler sampling (k-diffusion's `sample_euler_ancestral`, after Karras et al. 2022),
//! as diffusers' `EulerAncestralDiscreteScheduler` ("Euler a").
//!
//! Each step takes a deterministic Euler step down to `sigma_down` and then adds fresh noise of
//! standard deviation `sigma_up`, with `sigma_up^2 + sigma_down^2 = sigma_next^2`. It draws noise
//! on every step, including the last one (where `sigma_up = 0`).

use candle_core::Tensor;

use crate::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use crate::error::{Result, SchedulerError};
use crate::euler::sigma_alphas_cumprod;
use crate::kind::SchedulerKind;
use crate::noise::NoiseSource;
use crate::ops::{self, StepIndex};
use crate::schedule::{self, NoiseSchedule};
use crate::{Scheduler, StepOutput};

const NAME: &str = "EulerAncestralDiscreteScheduler";

/// `EulerAncestralDiscreteScheduler`'s config, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct EulerAncestralConfig {
    /// The training noise schedule.
    pub schedule: NoiseSchedule,
    /// What the model predicts: `epsilon` (default) or `v_prediction`.
    pub prediction_type: PredictionType,
    /// Timestep spacing (default `linspace`).
    pub timestep_spacing: TimestepSpacing,
    /// Offset added to `leading` timesteps (default 0).
    pub steps_offset: usize,
}

impl Default for EulerAncestralConfig {
    fn default() -> Self {
        Self {
            schedule: NoiseSchedule::default(),
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

impl EulerAncestralConfig {
    /// Takes the keys `EulerAncestralDiscreteScheduler` accepts from `config` (it has no Karras
    /// option); the others keep their defaults.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let d = Self::default();
        Ok(Self {
            schedule: NoiseSchedule::from_config(config, true),
            prediction_type: config.prediction_type.unwrap_or(d.prediction_type),
            timestep_spacing: config.timestep_spacing.unwrap_or(d.timestep_spacing),
            steps_offset: config.steps_offset.unwrap_or(d.steps_offset),
        })
    }
}

/// diffusers' `EulerAncestralDiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct EulerAncestralScheduler {
    config: EulerAncestralConfig,
    alphas_cumprod: Vec<f64>,
    /// Training sigmas, ascending in `t`.
    train_sigmas: Vec<f64>,
    timesteps: Vec<f64>,
    /// One sigma per timestep, then 0.
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
}

impl EulerAncestralScheduler {
    /// Builds the scheduler; fails for `prediction_type = sample` (not implemented in diffusers).
    pub fn new(config: EulerAncestralConfig) -> Result<Self> {
        if config.prediction_type == PredictionType::Sample {
            return Err(SchedulerError::Unsupported {
                scheduler: NAME,
                key: "prediction_type",
                value: "sample".into(),
                hint: "Euler ancestral supports epsilon and v_prediction; use Euler for sample prediction",
            });
        }
        let alphas_cumprod = sigma_alphas_cumprod(&config.schedule, NAME)?;
        let train_sigmas = schedule::sigmas_from_alphas_cumprod(&alphas_cumprod);
        let n = alphas_cumprod.len();
        let timesteps = schedule::linspace(0.0, (n - 1) as f64, n)
            .into_iter()
            .rev()
            .collect();
        let mut sigmas: Vec<f64> = train_sigmas.iter().rev().copied().collect();
        sigmas.push(0.0);
        Ok(Self {
            config,
            alphas_cumprod,
            train_sigmas,
            timesteps,
            sigmas,
            num_inference_steps: None,
            index: StepIndex::default(),
        })
    }

    /// Builds the scheduler from a diffusers config (see [`EulerAncestralConfig::from_config`]).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        Self::new(EulerAncestralConfig::from_config(config)?)
    }

    /// The resolved config.
    pub fn config(&self) -> &EulerAncestralConfig {
        &self.config
    }

    /// The sigmas of the schedule: one per timestep, then 0.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
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

impl Scheduler for EulerAncestralScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::EulerAncestral
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
        let timesteps: Vec<f64> = schedule::spaced_timesteps(
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
        sigmas.push(0.0);
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
        noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput> {
        ops::check_same_shape(NAME, model_output, sample)?;
        let (i, sigma) = self.current_sigma(timestep)?;
        let dtype = ops::compute_dtype(sample.dtype());
        let x = ops::to_dtype(sample, dtype)?;
        let model_output = ops::to_dtype(model_output, dtype)?;

        let pred_original_sample = match self.config.prediction_type {
            // c_out = -sigma / sqrt(sigma^2 + 1), c_skip = 1 / (sigma^2 + 1).
            PredictionType::VPrediction => ops::lin2(
                -sigma / (sigma * sigma + 1.0).sqrt(),
                &model_output,
                1.0 / (sigma * sigma + 1.0),
                &x,
            )?,
            _ => ops::lin2(1.0, &x, -sigma, &model_output)?,
        };

        // k-diffusion's get_ancestral_step (eta = 1):
        // sigma_up = sqrt(sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2), sigma_down = sqrt(sigma_to^2 - sigma_up^2).
        let sigma_from = sigma;
        let sigma_to = self.sigmas[i + 1];
        let sigma_up = (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
            / (sigma_from * sigma_from))
            .sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();

        let derivative = ops::scale(&(&x - &pred_original_sample)?, 1.0 / sigma)?;
        let dt = sigma_down - sigma;
        let prev_sample = (&x + ops::scale(&derivative, dt)?)?;
        let step_noise = noise.sample(x.shape(), dtype, x.device())?;
        let prev_sample = (prev_sample + ops::scale(&step_noise, sigma_up)?)?;
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
