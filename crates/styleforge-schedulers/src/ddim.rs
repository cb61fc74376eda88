//! DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"), as diffusers'
//! `DDIMScheduler`: the non-Markovian sampler of eq. (12), deterministic for `eta = 0`.

use candle_core::Tensor;

use crate::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use crate::ddpm::unsupported_thresholding;
use crate::error::{Result, SchedulerError};
use crate::kind::SchedulerKind;
use crate::noise::NoiseSource;
use crate::ops;
use crate::schedule::NoiseSchedule;
use crate::{Scheduler, StepOutput};

const NAME: &str = "DDIMScheduler";

/// `DDIMScheduler`'s config, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DdimConfig {
    /// The training noise schedule.
    pub schedule: NoiseSchedule,
    /// Clip the predicted `x_0` to `[-clip_sample_range, clip_sample_range]` (default true).
    pub clip_sample: bool,
    /// The clipping range (default 1.0).
    pub clip_sample_range: f64,
    /// Use `alpha_bar = 1` "before" timestep 0 (default true; SD configs set false, which uses
    /// `alpha_bar_0` instead).
    pub set_alpha_to_one: bool,
    /// Offset added to `leading` timesteps (default 0).
    pub steps_offset: usize,
    /// What the model predicts (default `epsilon`).
    pub prediction_type: PredictionType,
    /// Timestep spacing (default `leading`).
    pub timestep_spacing: TimestepSpacing,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self {
            schedule: NoiseSchedule::default(),
            clip_sample: true,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
        }
    }
}

impl DdimConfig {
    /// Takes the keys `DDIMScheduler` accepts from `config`; the others keep their defaults.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let d = Self::default();
        if config.thresholding == Some(true) {
            return Err(unsupported_thresholding(NAME));
        }
        Ok(Self {
            schedule: NoiseSchedule::from_config(config, true),
            clip_sample: config.clip_sample.unwrap_or(d.clip_sample),
            clip_sample_range: config.clip_sample_range.unwrap_or(d.clip_sample_range),
            set_alpha_to_one: config.set_alpha_to_one.unwrap_or(d.set_alpha_to_one),
            steps_offset: config.steps_offset.unwrap_or(d.steps_offset),
            prediction_type: config.prediction_type.unwrap_or(d.prediction_type),
            timestep_spacing: config.timestep_spacing.unwrap_or(d.timestep_spacing),
        })
    }
}

/// diffusers' `DDIMScheduler`.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: DdimConfig,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    timesteps: Vec<f64>,
    num_inference_steps: Option<usize>,
    eta: f64,
}

impl DdimScheduler {
    /// Builds the scheduler (with `eta = 0`).
    pub fn new(config: DdimConfig) -> Result<Self> {
        let alphas_cumprod = config.schedule.alphas_cumprod(NAME)?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            config,
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps: Vec::new(),
            num_inference_steps: None,
            eta: 0.0,
        })
    }

    /// Builds the scheduler from a diffusers config (see [`DdimConfig::from_config`]).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        Self::new(DdimConfig::from_config(config)?)
    }

    /// The resolved config.
    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    /// The current eta.
    pub fn eta(&self) -> f64 {
        self.eta
    }

    /// `alpha_bar_t` for every training timestep.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The v-prediction training target `v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x_0`.
    pub fn get_velocity(
        &self,
        sample: &Tensor,
        noise: &Tensor,
        timesteps: &[f64],
    ) -> Result<Tensor> {
        ops::velocity_alphas_cumprod(NAME, &self.alphas_cumprod, sample, noise, timesteps)
    }
}

impl Scheduler for DdimScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddim
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
        let num_inference_steps =
            self.num_inference_steps
                .ok_or(SchedulerError::TimestepsNotSet {
                    scheduler: NAME,
                    operation: "step",
                })?;
        ops::check_same_shape(NAME, model_output, sample)?;
        let num_train = self.alphas_cumprod.len();
        let t = ops::train_index(NAME, timestep, num_train)?;
        // diffusers always steps back by T / n, whatever the spacing (so with `trailing` or
        // `linspace` the "previous" timestep need not be the next entry of the schedule).
        let prev_timestep = t as i64 - (num_train / num_inference_steps) as i64;
        let dtype = ops::compute_dtype(sample.dtype());
        let x_t = ops::to_dtype(sample, dtype)?;
        let model_output = ops::to_dtype(model_output, dtype)?;

        // 2. alpha_bar_t and alpha_bar_{t-1}.
        let alpha_prod_t = self.alphas_cumprod[t];
        let alpha_prod_t_prev = if prev_timestep >= 0 {
            self.alphas_cumprod[prev_timestep as usize]
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;

        // 3. Predicted x_0 and predicted noise (DDIM eq. 12, "predicted x_0").
        let (mut pred_original_sample, pred_epsilon) = match self.config.prediction_type {
            PredictionType::Epsilon => (
                ops::lin2(
                    1.0 / alpha_prod_t.sqrt(),
                    &x_t,
                    -beta_prod_t.sqrt() / alpha_prod_t.sqrt(),
                    &model_output,
                )?,
                model_output.clone(),
            ),
            PredictionType::Sample => (
                model_output.clone(),
                ops::lin2(
                    1.0 / beta_prod_t.sqrt(),
                    &x_t,
                    -alpha_prod_t.sqrt() / beta_prod_t.sqrt(),
                    &model_output,
                )?,
            ),
            PredictionType::VPrediction => (
                ops::lin2(
                    alpha_prod_t.sqrt(),
                    &x_t,
                    -beta_prod_t.sqrt(),
                    &model_output,
                )?,
                ops::lin2(alpha_prod_t.sqrt(), &model_output, beta_prod_t.sqrt(), &x_t)?,
            ),
        };

        // 4. Clip x_0.
        if self.config.clip_sample {
            let r = self.config.clip_sample_range;
            pred_original_sample = pred_original_sample.clamp(-r, r)?;
        }

        // 5. sigma_t(eta) of DDIM eq. (16):
        // sigma_t^2 = eta^2 (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_{t-1}).
        let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
        let std_dev_t = self.eta * variance.sqrt();

        // 6-7. DDIM eq. (12): x_{t-1} = sqrt(alpha_bar_{t-1}) x_0 + sqrt(1 - alpha_bar_{t-1} - sigma_t^2) eps + sigma_t z.
        let mut prev_sample = ops::lin2(
            alpha_prod_t_prev.sqrt(),
            &pred_original_sample,
            (1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t).sqrt(),
            &pred_epsilon,
        )?;
        if self.eta > 0.0 {
            let variance_noise = noise.sample(x_t.shape(), dtype, x_t.device())?;
            prev_sample = (prev_sample + ops::scale(&variance_noise, std_dev_t)?)?;
        }

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
        ops::add_noise_alphas_cumprod(
            NAME,
            &self.alphas_cumprod,
            original_samples,
            noise,
            timesteps,
        )
    }

    fn set_eta(&mut self, eta: f64) -> Result<()> {
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(SchedulerError::InvalidArgument {
                scheduler: NAME,
                message: format!(
                    "eta must be a finite number >= 0 (0 = DDIM, 1 = DDPM-like), got {eta}"
                ),
            });
        }
        self.eta = eta;
        Ok(())
    }
}
