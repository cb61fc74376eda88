//! DDPM (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"), as diffusers'
//! `DDPMScheduler`: ancestral sampling from the posterior `q(x_{t-1} | x_t, x_0)`.
//!
//! This is also the training noise schedule: [`DdpmScheduler::add_noise`] is the forward
//! process and [`DdpmScheduler::get_velocity`] the v-prediction target.

use candle_core::Tensor;

use crate::config::{PredictionType, SchedulerConfig, TimestepSpacing, VarianceType};
use crate::error::{Result, SchedulerError};
use crate::kind::SchedulerKind;
use crate::noise::NoiseSource;
use crate::ops;
use crate::schedule::NoiseSchedule;
use crate::{Scheduler, StepOutput};

const NAME: &str = "DDPMScheduler";

/// `DDPMScheduler`'s config, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DdpmConfig {
    /// The training noise schedule.
    pub schedule: NoiseSchedule,
    /// The posterior variance (default `fixed_small`).
    pub variance_type: VarianceType,
    /// Clip the predicted `x_0` to `[-clip_sample_range, clip_sample_range]` (default true).
    pub clip_sample: bool,
    /// The clipping range (default 1.0).
    pub clip_sample_range: f64,
    /// What the model predicts (default `epsilon`).
    pub prediction_type: PredictionType,
    /// Timestep spacing (default `leading`).
    pub timestep_spacing: TimestepSpacing,
    /// Offset added to `leading` timesteps (default 0).
    pub steps_offset: usize,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        Self {
            schedule: NoiseSchedule::default(),
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            clip_sample_range: 1.0,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

impl DdpmConfig {
    /// Takes the keys `DDPMScheduler` accepts from `config`; the others keep their defaults.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let d = Self::default();
        if config.thresholding == Some(true) {
            return Err(unsupported_thresholding(NAME));
        }
        Ok(Self {
            schedule: NoiseSchedule::from_config(config, true),
            variance_type: config.variance_type.unwrap_or(d.variance_type),
            clip_sample: config.clip_sample.unwrap_or(d.clip_sample),
            clip_sample_range: config.clip_sample_range.unwrap_or(d.clip_sample_range),
            prediction_type: config.prediction_type.unwrap_or(d.prediction_type),
            timestep_spacing: config.timestep_spacing.unwrap_or(d.timestep_spacing),
            steps_offset: config.steps_offset.unwrap_or(d.steps_offset),
        })
    }
}

pub(crate) fn unsupported_thresholding(scheduler: &'static str) -> SchedulerError {
    SchedulerError::Unsupported {
        scheduler,
        key: "thresholding",
        value: "true".into(),
        hint: "dynamic thresholding is for pixel-space models; set \"thresholding\": false",
    }
}

/// diffusers' `DDPMScheduler`.
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    config: DdpmConfig,
    alphas_cumprod: Vec<f64>,
    timesteps: Vec<f64>,
    num_inference_steps: Option<usize>,
}

impl DdpmScheduler {
    /// Builds the scheduler; fails on options this crate does not implement.
    pub fn new(config: DdpmConfig) -> Result<Self> {
        if matches!(
            config.variance_type,
            VarianceType::FixedLargeLog | VarianceType::Learned | VarianceType::LearnedRange
        ) {
            return Err(SchedulerError::Unsupported {
                scheduler: NAME,
                key: "variance_type",
                value: format!("{:?}", config.variance_type),
                hint: "use fixed_small (Stable Diffusion's), fixed_small_log or fixed_large",
            });
        }
        let alphas_cumprod = config.schedule.alphas_cumprod(NAME)?;
        // Before set_timesteps diffusers steps through every training timestep.
        let timesteps = (0..alphas_cumprod.len()).rev().map(|t| t as f64).collect();
        Ok(Self {
            config,
            alphas_cumprod,
            timesteps,
            num_inference_steps: None,
        })
    }

    /// Builds the scheduler from a diffusers config (see [`DdpmConfig::from_config`]).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        Self::new(DdpmConfig::from_config(config)?)
    }

    /// The resolved config.
    pub fn config(&self) -> &DdpmConfig {
        &self.config
    }

    /// `alpha_bar_t` for every training timestep.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The v-prediction training target `v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x_0`
    /// for integer training timesteps (one per batch element, or one for all).
    pub fn get_velocity(
        &self,
        sample: &Tensor,
        noise: &Tensor,
        timesteps: &[f64],
    ) -> Result<Tensor> {
        ops::velocity_alphas_cumprod(NAME, &self.alphas_cumprod, sample, noise, timesteps)
    }

    /// The timestep after `t` in the schedule (-1 after the last one); `t - 1` before
    /// `set_timesteps`, like diffusers' `previous_timestep`.
    fn previous_timestep(&self, t: usize) -> Result<i64> {
        if self.num_inference_steps.is_none() {
            return Ok(t as i64 - 1);
        }
        let index = self.timesteps.iter().position(|&x| x == t as f64).ok_or(
            SchedulerError::UnknownTimestep {
                scheduler: NAME,
                timestep: t as f64,
            },
        )?;
        Ok(self
            .timesteps
            .get(index + 1)
            .map(|&x| x as i64)
            .unwrap_or(-1))
    }
}

impl Scheduler for DdpmScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddpm
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let timesteps = ops::integer_timesteps(
            NAME,
            self.config.timestep_spacing,
            self.alphas_cumprod.len(),
            num_inference_steps,
            self.config.steps_offset,
        )?;
        self.timesteps = timesteps;
        self.num_inference_steps = Some(num_inference_steps);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&mut self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput> {
        ops::check_same_shape(NAME, model_output, sample)?;
        let t = ops::train_index(NAME, timestep, self.alphas_cumprod.len())?;
        let prev_t = self.previous_timestep(t)?;
        let dtype = ops::compute_dtype(sample.dtype());
        let x_t = ops::to_dtype(sample, dtype)?;
        let model_output = ops::to_dtype(model_output, dtype)?;

        // 1. alphas and betas of the (possibly strided) step t -> prev_t.
        let alpha_prod_t = self.alphas_cumprod[t];
        let alpha_prod_t_prev = if prev_t >= 0 {
            self.alphas_cumprod[prev_t as usize]
        } else {
            1.0
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;

        // 2. Predicted x_0, DDPM eq. (15): x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t).
        let mut pred_original_sample = match self.config.prediction_type {
            PredictionType::Epsilon => ops::lin2(
                1.0 / alpha_prod_t.sqrt(),
                &x_t,
                -beta_prod_t.sqrt() / alpha_prod_t.sqrt(),
                &model_output,
            )?,
            PredictionType::Sample => model_output.clone(),
            // v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0  =>  x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v.
            PredictionType::VPrediction => ops::lin2(
                alpha_prod_t.sqrt(),
                &x_t,
                -beta_prod_t.sqrt(),
                &model_output,
            )?,
        };

        // 3. Clip x_0.
        if self.config.clip_sample {
            let r = self.config.clip_sample_range;
            pred_original_sample = pred_original_sample.clamp(-r, r)?;
        }

        // 4-5. Posterior mean, DDPM eq. (7):
        // mu_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t.
        let pred_original_sample_coeff = alpha_prod_t_prev.sqrt() * current_beta_t / beta_prod_t;
        let current_sample_coeff = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;
        let mut pred_prev_sample = ops::lin2(
            pred_original_sample_coeff,
            &pred_original_sample,
            current_sample_coeff,
            &x_t,
        )?;

        // 6. Add noise with the posterior variance, eq. (7): beta-tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.
        if t > 0 {
            let variance_noise = noise.sample(x_t.shape(), dtype, x_t.device())?;
            let variance = (beta_prod_t_prev / beta_prod_t * current_beta_t).max(1e-20);
            let std_dev = match self.config.variance_type {
                VarianceType::FixedSmall => variance.sqrt(),
                VarianceType::FixedSmallLog => (0.5 * variance.ln()).exp(),
                VarianceType::FixedLarge => current_beta_t.sqrt(),
                _ => unreachable!("rejected in DdpmScheduler::new"),
            };
            pred_prev_sample = (pred_prev_sample + ops::scale(&variance_noise, std_dev)?)?;
        }

        Ok(StepOutput {
            prev_sample: pred_prev_sample.to_dtype(sample.dtype())?,
            pred_original_sample: Some(pred_original_sample.to_dtype(sample.dtype())?),
        })
    }

    fn add_noise(
        &self,
        original_samples: &Tensor,
        noise: &Tensor,
        timesteps: &[f64],
    ) -> Result<Tensor> {
        ops::add_noise_alphas_cumprod(
            NAME,
            &self.alphas_cumprod,
            original_samples,
            noise,
            timesteps,
        )
    }
}
