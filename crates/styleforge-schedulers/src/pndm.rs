//! PNDM (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"), as
//! diffusers' `PNDMScheduler`, Stable Diffusion 1.x's default scheduler.
//!
//! Every step applies the "transfer" function of the paper (eq. 9) to a noise estimate that
//! combines the model's recent outputs: a linear multistep (PLMS, Adams-Bashforth) formula, or
//! during the optional warm-up (`skip_prk_steps = false`) a 4-stage Runge-Kutta (PRK) scheme
//! over three timesteps. Stable Diffusion configs set `skip_prk_steps = true`; PLMS then starts
//! with one Heun-like correction, which repeats the second timestep of the schedule (the
//! schedule has `num_inference_steps + 1` entries).

use candle_core::Tensor;

use crate::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use crate::error::{Result, SchedulerError};
use crate::kind::SchedulerKind;
use crate::noise::NoiseSource;
use crate::ops;
use crate::schedule::{self, NoiseSchedule};
use crate::{Scheduler, StepOutput};

const NAME: &str = "PNDMScheduler";

/// Number of PRK warm-up timesteps (the PLMS order).
const PNDM_ORDER: usize = 4;

/// `PNDMScheduler`'s config, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct PndmConfig {
    /// The training noise schedule (`rescale_betas_zero_snr` does not exist for PNDM).
    pub schedule: NoiseSchedule,
    /// Skip the Runge-Kutta warm-up (default false; Stable Diffusion uses true).
    pub skip_prk_steps: bool,
    /// Use `alpha_bar = 1` "before" timestep 0 (default false: `alpha_bar_0`).
    pub set_alpha_to_one: bool,
    /// What the model predicts: `epsilon` (default) or `v_prediction`.
    pub prediction_type: PredictionType,
    /// Timestep spacing (default `leading`).
    pub timestep_spacing: TimestepSpacing,
    /// Offset added to `leading` timesteps (default 0).
    pub steps_offset: usize,
}

impl Default for PndmConfig {
    fn default() -> Self {
        Self {
            schedule: NoiseSchedule::default(),
            skip_prk_steps: false,
            set_alpha_to_one: false,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

impl PndmConfig {
    /// Takes the keys `PNDMScheduler` accepts from `config`; the others keep their defaults.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let d = Self::default();
        Ok(Self {
            schedule: NoiseSchedule::from_config(config, false),
            skip_prk_steps: config.skip_prk_steps.unwrap_or(d.skip_prk_steps),
            set_alpha_to_one: config.set_alpha_to_one.unwrap_or(d.set_alpha_to_one),
            prediction_type: config.prediction_type.unwrap_or(d.prediction_type),
            timestep_spacing: config.timestep_spacing.unwrap_or(d.timestep_spacing),
            steps_offset: config.steps_offset.unwrap_or(d.steps_offset),
        })
    }
}

/// diffusers' `PNDMScheduler`.
#[derive(Debug, Clone)]
pub struct PndmScheduler {
    config: PndmConfig,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    num_inference_steps: Option<usize>,
    prk_timesteps: Vec<f64>,
    timesteps: Vec<f64>,
    /// Number of `step` calls since `set_timesteps`.
    counter: usize,
    /// The model outputs kept for the multistep formulas ("ets"), oldest first.
    ets: Vec<Tensor>,
    /// The sample a Runge-Kutta stage (or the first PLMS correction) starts from.
    cur_sample: Option<Tensor>,
    /// The Runge-Kutta weighted sum of model outputs so far (`None` = 0).
    cur_model_output: Option<Tensor>,
}

impl PndmScheduler {
    /// Builds the scheduler; fails for `prediction_type = sample`, which PNDM does not support.
    pub fn new(config: PndmConfig) -> Result<Self> {
        if config.prediction_type == PredictionType::Sample {
            return Err(SchedulerError::Unsupported {
                scheduler: NAME,
                key: "prediction_type",
                value: "sample".into(),
                hint: "PNDM supports epsilon and v_prediction; pick DDIM, Euler or DPM-Solver for sample prediction",
            });
        }
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
            num_inference_steps: None,
            prk_timesteps: Vec::new(),
            timesteps: Vec::new(),
            counter: 0,
            ets: Vec::new(),
            cur_sample: None,
            cur_model_output: None,
        })
    }

    /// Builds the scheduler from a diffusers config (see [`PndmConfig::from_config`]).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        Self::new(PndmConfig::from_config(config)?)
    }

    /// The resolved config.
    pub fn config(&self) -> &PndmConfig {
        &self.config
    }

    fn step_ratio(&self) -> Result<usize> {
        let n = self
            .num_inference_steps
            .ok_or(SchedulerError::TimestepsNotSet {
                scheduler: NAME,
                operation: "step",
            })?;
        Ok(self.alphas_cumprod.len() / n)
    }

    fn alpha_prod(&self, timestep: i64) -> Result<f64> {
        if timestep < 0 {
            return Ok(self.final_alpha_cumprod);
        }
        let t = ops::train_index(NAME, timestep as f64, self.alphas_cumprod.len())?;
        Ok(self.alphas_cumprod[t])
    }

    /// The transfer function phi of PNDM eq. (9), taking `x_t` to `x_{t-delta}` along the
    /// direction `e_t` (the combined noise estimate):
    /// `x_prev = sqrt(a_prev / a_t) x_t - (a_prev - a_t) / (a_t sqrt(1 - a_prev) + sqrt(a_t (1 - a_t) a_prev)) e_t`.
    fn get_prev_sample(
        &self,
        sample: &Tensor,
        timestep: i64,
        prev_timestep: i64,
        model_output: &Tensor,
    ) -> Result<Tensor> {
        let alpha_prod_t = self.alpha_prod(timestep)?;
        let alpha_prod_t_prev = self.alpha_prod(prev_timestep)?;
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let model_output = match self.config.prediction_type {
            // eps = sqrt(alpha_bar) v + sqrt(1 - alpha_bar) x_t.
            PredictionType::VPrediction => ops::lin2(
                alpha_prod_t.sqrt(),
                model_output,
                beta_prod_t.sqrt(),
                sample,
            )?,
            _ => model_output.clone(),
        };
        let sample_coeff = (alpha_prod_t_prev / alpha_prod_t).sqrt();
        let model_output_denom_coeff = alpha_prod_t * beta_prod_t_prev.sqrt()
            + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).sqrt();
        ops::lin2(
            sample_coeff,
            sample,
            -(alpha_prod_t_prev - alpha_prod_t) / model_output_denom_coeff,
            &model_output,
        )
    }

    /// One stage of the pseudo Runge-Kutta warm-up (PNDM eq. 13).
    fn step_prk(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
    ) -> Result<Tensor> {
        let step_ratio = self.step_ratio()? as i64;
        let diff_to_prev = if self.counter % 2 == 1 {
            0
        } else {
            step_ratio / 2
        };
        let prev_timestep = timestep - diff_to_prev;
        let timestep = self.prk_timesteps[self.counter / 4 * 4] as i64;

        let add = |acc: &Option<Tensor>, x: Tensor| -> Result<Tensor> {
            Ok(match acc {
                Some(acc) => (acc + x)?,
                None => x,
            })
        };
        let mut model_output = model_output.clone();
        match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(add(
                    &self.cur_model_output,
                    ops::scale(&model_output, 1.0 / 6.0)?,
                )?);
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
            }
            1 | 2 => {
                self.cur_model_output = Some(add(
                    &self.cur_model_output,
                    ops::scale(&model_output, 1.0 / 3.0)?,
                )?);
            }
            _ => {
                model_output = add(
                    &self.cur_model_output,
                    ops::scale(&model_output, 1.0 / 6.0)?,
                )?;
                self.cur_model_output = None;
            }
        }
        let cur_sample = self.cur_sample.clone().unwrap_or_else(|| sample.clone());
        let prev_sample =
            self.get_prev_sample(&cur_sample, timestep, prev_timestep, &model_output)?;
        self.counter += 1;
        Ok(prev_sample)
    }

    /// One linear multistep step (PNDM eq. 12, Adams-Bashforth of order up to 4).
    fn step_plms(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
    ) -> Result<Tensor> {
        if !self.config.skip_prk_steps && self.ets.len() < 3 {
            return Err(SchedulerError::InvalidArgument {
                scheduler: NAME,
                message:
                    "the PLMS steps need the Runge-Kutta warm-up first; run step over the whole \
                          schedule from set_timesteps on"
                        .into(),
            });
        }
        let step_ratio = self.step_ratio()? as i64;
        let mut timestep = timestep;
        let mut prev_timestep = timestep - step_ratio;
        if self.counter != 1 {
            let keep_from = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep_from);
            self.ets.push(model_output.clone());
        } else {
            // The second call repeats the first step's target timestep as a correction.
            prev_timestep = timestep;
            timestep += step_ratio;
        }

        let mut sample = sample.clone();
        let ets = &self.ets;
        let n = ets.len();
        let model_output = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output.clone()
        } else if n == 1 && self.counter == 1 {
            // Heun-like: average the two slopes and restart from the previous sample.
            sample = self.cur_sample.take().unwrap_or(sample);
            ops::lin2(0.5, model_output, 0.5, &ets[n - 1])?
        } else if n == 2 {
            ops::lin2(1.5, &ets[n - 1], -0.5, &ets[n - 2])?
        } else if n == 3 {
            ops::lin3(
                23.0 / 12.0,
                &ets[n - 1],
                -16.0 / 12.0,
                &ets[n - 2],
                5.0 / 12.0,
                &ets[n - 3],
            )?
        } else {
            let first = ops::lin2(55.0 / 24.0, &ets[n - 1], -59.0 / 24.0, &ets[n - 2])?;
            let second = ops::lin2(37.0 / 24.0, &ets[n - 3], -9.0 / 24.0, &ets[n - 4])?;
            (first + second)?
        };
        let prev_sample = self.get_prev_sample(&sample, timestep, prev_timestep, &model_output)?;
        self.counter += 1;
        Ok(prev_sample)
    }
}

impl Scheduler for PndmScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Pndm
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
        if !self.config.skip_prk_steps && n < PNDM_ORDER {
            return Err(SchedulerError::InvalidArgument {
                scheduler: NAME,
                message: format!(
                    "the Runge-Kutta warm-up (skip_prk_steps = false) needs at least {PNDM_ORDER} \
                     inference steps, got {n}; use more steps or set skip_prk_steps"
                ),
            });
        }
        // Ascending, as diffusers' `_timesteps`.
        let mut ascending = schedule::spaced_timesteps(
            self.config.timestep_spacing,
            num_train,
            n,
            self.config.steps_offset,
            true,
        );
        ascending.reverse();
        ops::check_no_negative_timestep(NAME, &ascending, n)?;
        if let Some(&t) = ascending.iter().find(|&&t| t >= num_train as f64) {
            return Err(SchedulerError::InvalidConfig {
                scheduler: NAME,
                key: "steps_offset",
                message: format!(
                    "with {n} steps the first timestep would be {t}, beyond the {num_train} training \
                     timesteps; use fewer steps"
                ),
            });
        }
        // diffusers slices the array it got, whose length can exceed n (see schedule::arange).
        let len = ascending.len();
        let (prk_timesteps, plms_timesteps): (Vec<f64>, Vec<f64>) = if self.config.skip_prk_steps {
            // _timesteps[:-1], _timesteps[-2], _timesteps[-1], reversed: the second-largest
            // timestep appears twice.
            let mut plms: Vec<f64> = ascending[..len - 1].to_vec();
            if len >= 2 {
                plms.push(ascending[len - 2]);
            }
            plms.push(ascending[len - 1]);
            plms.reverse();
            (Vec::new(), plms)
        } else {
            // The last four timesteps, each followed by its midpoint (t + T / n / 2); every
            // value but the ends doubled for the RK stages: 12 timesteps, descending.
            let half = (num_train / n / 2) as f64;
            let base: Vec<f64> = ascending[len - PNDM_ORDER..]
                .iter()
                .flat_map(|&t| [t, t + half])
                .collect();
            let doubled: Vec<f64> = base[..base.len() - 1]
                .iter()
                .flat_map(|&t| [t, t])
                .collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            let mut plms = ascending[..len - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        self.timesteps = prk_timesteps
            .iter()
            .chain(plms_timesteps.iter())
            .copied()
            .collect();
        self.prk_timesteps = prk_timesteps;
        self.num_inference_steps = Some(n);
        self.counter = 0;
        self.ets.clear();
        self.cur_sample = None;
        self.cur_model_output = None;
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput> {
        ops::check_same_shape(NAME, model_output, sample)?;
        let t = ops::train_index(NAME, timestep, self.alphas_cumprod.len())? as i64;
        let dtype = ops::compute_dtype(sample.dtype());
        let x_t = ops::to_dtype(sample, dtype)?;
        let model_output = ops::to_dtype(model_output, dtype)?;
        let prev_sample = if self.counter < self.prk_timesteps.len() && !self.config.skip_prk_steps
        {
            self.step_prk(&model_output, t, &x_t)?
        } else {
            self.step_plms(&model_output, t, &x_t)?
        };
        Ok(StepOutput {
            prev_sample: prev_sample.to_dtype(sample.dtype())?,
            pred_original_sample: None,
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
