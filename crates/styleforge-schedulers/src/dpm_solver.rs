//! DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
//! Diffusion Probabilistic Models"), as diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type = "dpmsolver++"` ("DPM++ 2M" for `solver_order = 2`) or
//! `"sde-dpmsolver++"` ("DPM++ 2M SDE", Lu et al. 2022 appendix / Cheng Lu's SDE variant).
//!
//! The solver integrates in `lambda = log(alpha_t / sigma_t)` (half the log-SNR) using data
//! (`x_0`) predictions: each step converts the model output to `x_0`, keeps the last
//! `solver_order` of them and applies the multistep update of the paper (eq. 9 and Algorithm 2
//! for order 2). Here `alpha_t = 1 / sqrt(sigma^2 + 1)` and `sigma_t = sigma alpha_t` are the
//! variance-preserving coefficients of the VE sigma. The first step(s) and, by default, the last
//! step fall back to lower order (`lower_order_final`, `final_sigmas_type = "zero"`).

use candle_core::Tensor;

use crate::config::{
    AlgorithmType, BetaSchedule, FinalSigmasType, PredictionType, SchedulerConfig, SolverType,
    TimestepSpacing,
};
use crate::ddpm::unsupported_thresholding;
use crate::error::{Result, SchedulerError};
use crate::euler::{reject_true, sigma_alphas_cumprod};
use crate::kind::SchedulerKind;
use crate::noise::NoiseSource;
use crate::ops::{self, StepIndex};
use crate::schedule::{self, NoiseSchedule};
use crate::{Scheduler, StepOutput};

const NAME: &str = "DPMSolverMultistepScheduler";

/// `DPMSolverMultistepScheduler`'s config, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DpmSolverMultistepConfig {
    /// The training noise schedule.
    pub schedule: NoiseSchedule,
    /// Order of the multistep solver: 1, 2 (default; "2M") or 3.
    pub solver_order: usize,
    /// What the model predicts (default `epsilon`).
    pub prediction_type: PredictionType,
    /// `DpmSolverPlusPlus` (default) or `SdeDpmSolverPlusPlus`.
    pub algorithm_type: AlgorithmType,
    /// Second-order update rule: `Midpoint` (default) or `Heun`.
    pub solver_type: SolverType,
    /// Use lower-order updates for the final steps when there are fewer than 15 (default true).
    pub lower_order_final: bool,
    /// Use a first-order (Euler) update for the final step (default false).
    pub euler_at_final: bool,
    /// Use Karras et al.'s sigma spacing (default false).
    pub use_karras_sigmas: bool,
    /// Lower end of the Karras sigmas (default: the smallest training sigma). diffusers' class
    /// has no such parameter but reads it when the loaded config carries one.
    pub sigma_min: Option<f64>,
    /// Upper end of the Karras sigmas (default: the largest training sigma); as `sigma_min`.
    pub sigma_max: Option<f64>,
    /// The sigma after the last step (default `zero`).
    pub final_sigmas_type: FinalSigmasType,
    /// Timesteps whose lambda is below this are not used (default -infinity).
    pub lambda_min_clipped: f64,
    /// Timestep spacing (default `linspace`).
    pub timestep_spacing: TimestepSpacing,
    /// Offset added to `leading` timesteps (default 0).
    pub steps_offset: usize,
}

impl Default for DpmSolverMultistepConfig {
    fn default() -> Self {
        Self {
            schedule: NoiseSchedule::default(),
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            algorithm_type: AlgorithmType::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            use_karras_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

impl DpmSolverMultistepConfig {
    /// Takes the keys `DPMSolverMultistepScheduler` accepts from `config`; the others keep their
    /// defaults. Fails on diffusers options this crate does not implement.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let d = Self::default();
        if config.thresholding == Some(true) {
            return Err(unsupported_thresholding(NAME));
        }
        if let Some(variance_type) = config.variance_type {
            return Err(SchedulerError::Unsupported {
                scheduler: NAME,
                key: "variance_type",
                value: format!("{variance_type:?}"),
                hint: "learned variances are for pixel-space models; set \"variance_type\": null",
            });
        }
        reject_true(NAME, "use_lu_lambdas", config.use_lu_lambdas)?;
        reject_true(
            NAME,
            "use_exponential_sigmas",
            config.use_exponential_sigmas,
        )?;
        reject_true(NAME, "use_beta_sigmas", config.use_beta_sigmas)?;
        reject_true(NAME, "use_flow_sigmas", config.use_flow_sigmas)?;
        reject_true(NAME, "use_dynamic_shifting", config.use_dynamic_shifting)?;
        // As diffusers: DEIS' algorithm and DEIS/UniPC solver types map to DPM-Solver++ midpoint.
        let algorithm_type =
            match config.algorithm_type.unwrap_or(d.algorithm_type) {
                AlgorithmType::Deis => AlgorithmType::DpmSolverPlusPlus,
                a @ (AlgorithmType::DpmSolverPlusPlus | AlgorithmType::SdeDpmSolverPlusPlus) => a,
                other => return Err(SchedulerError::Unsupported {
                    scheduler: NAME,
                    key: "algorithm_type",
                    value: format!("{other:?}"),
                    hint:
                        "only \"dpmsolver++\" and \"sde-dpmsolver++\" are implemented (diffusers \
                           deprecates the others)",
                }),
            };
        let solver_type = match config.solver_type.unwrap_or(d.solver_type) {
            SolverType::Heun => SolverType::Heun,
            _ => SolverType::Midpoint,
        };
        let solver_order = config.solver_order.unwrap_or(d.solver_order);
        if !(1..=3).contains(&solver_order) {
            return Err(SchedulerError::InvalidConfig {
                scheduler: NAME,
                key: "solver_order",
                message: format!("must be 1, 2 or 3, found {solver_order}"),
            });
        }
        Ok(Self {
            schedule: NoiseSchedule::from_config(config, true),
            solver_order,
            prediction_type: config.prediction_type.unwrap_or(d.prediction_type),
            algorithm_type,
            solver_type,
            lower_order_final: config.lower_order_final.unwrap_or(d.lower_order_final),
            euler_at_final: config.euler_at_final.unwrap_or(d.euler_at_final),
            use_karras_sigmas: config.use_karras_sigmas.unwrap_or(d.use_karras_sigmas),
            sigma_min: config.sigma_min,
            sigma_max: config.sigma_max,
            final_sigmas_type: config.final_sigmas_type.unwrap_or(d.final_sigmas_type),
            lambda_min_clipped: config.lambda_min_clipped.unwrap_or(d.lambda_min_clipped),
            timestep_spacing: config.timestep_spacing.unwrap_or(d.timestep_spacing),
            steps_offset: config.steps_offset.unwrap_or(d.steps_offset),
        })
    }
}

/// `alpha_t = 1 / sqrt(sigma^2 + 1)`, `sigma_t = sigma alpha_t` and
/// `lambda_t = log(alpha_t) - log(sigma_t)` for a VE sigma.
#[derive(Debug, Clone, Copy)]
struct Vp {
    alpha: f64,
    sigma: f64,
    lambda: f64,
}

impl Vp {
    fn from_sigma(sigma: f64) -> Self {
        let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
        let sigma_t = sigma * alpha;
        // sigma = 0 (the final step) gives lambda = +inf, h = +inf and exp(-h) = 0: the update
        // then returns the x_0 estimate, as it should.
        Self {
            alpha,
            sigma: sigma_t,
            lambda: alpha.ln() - sigma_t.ln(),
        }
    }
}

/// diffusers' `DPMSolverMultistepScheduler` (DPM-Solver++ and its SDE variant).
#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    config: DpmSolverMultistepConfig,
    alphas_cumprod: Vec<f64>,
    /// Training sigmas, ascending in `t`.
    train_sigmas: Vec<f64>,
    log_sigmas: Vec<f64>,
    timesteps: Vec<f64>,
    /// One sigma per timestep, plus the final sigma.
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    /// The last `solver_order` data predictions, oldest first.
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    index: StepIndex,
}

impl DpmSolverMultistepScheduler {
    /// Builds the scheduler.
    pub fn new(config: DpmSolverMultistepConfig) -> Result<Self> {
        let alphas_cumprod = sigma_alphas_cumprod(&config.schedule, NAME)?;
        let train_sigmas = schedule::sigmas_from_alphas_cumprod(&alphas_cumprod);
        let log_sigmas = train_sigmas
            .iter()
            .map(|s| schedule::to_f32_precision(s.ln()))
            .collect();
        let model_outputs = vec![None; config.solver_order];
        Ok(Self {
            config,
            alphas_cumprod,
            train_sigmas,
            log_sigmas,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            num_inference_steps: None,
            model_outputs,
            lower_order_nums: 0,
            index: StepIndex::default(),
        })
    }

    /// Builds the scheduler from a diffusers config (see [`DpmSolverMultistepConfig::from_config`]).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        Self::new(DpmSolverMultistepConfig::from_config(config)?)
    }

    /// The resolved config.
    pub fn config(&self) -> &DpmSolverMultistepConfig {
        &self.config
    }

    /// The sigmas of the schedule: one per timestep, then the final sigma (0 by default).
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The index of the next step (`None` before the first `step`).
    pub fn step_index(&self) -> Option<usize> {
        self.index.step_index
    }

    fn is_sde(&self) -> bool {
        self.config.algorithm_type == AlgorithmType::SdeDpmSolverPlusPlus
    }

    /// The data prediction `x_0` from the model output (diffusers' `convert_model_output`).
    fn convert_model_output(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        sigma: f64,
    ) -> Result<Tensor> {
        let vp = Vp::from_sigma(sigma);
        match self.config.prediction_type {
            // x_0 = (x_t - sigma_t eps) / alpha_t.
            PredictionType::Epsilon => {
                ops::lin2(1.0 / vp.alpha, sample, -vp.sigma / vp.alpha, model_output)
            }
            PredictionType::Sample => Ok(model_output.clone()),
            // x_0 = alpha_t x_t - sigma_t v.
            PredictionType::VPrediction => ops::lin2(vp.alpha, sample, -vp.sigma, model_output),
        }
    }

    /// Noise term of the SDE variant: `sigma_t sqrt(1 - exp(-2h)) z`.
    fn sde_noise_term(noise: Option<&Tensor>, t: Vp, h: f64) -> Result<Option<Tensor>> {
        noise
            .map(|z| ops::scale(z, t.sigma * (1.0 - (-2.0 * h).exp()).sqrt()))
            .transpose()
    }

    /// First-order update (DPM-Solver++ eq. 5 / DDIM): from sigma `s` to sigma `t`.
    fn first_order_update(
        &self,
        x0: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
        i: usize,
    ) -> Result<Tensor> {
        let t = Vp::from_sigma(self.sigmas[i + 1]);
        let s = Vp::from_sigma(self.sigmas[i]);
        let h = t.lambda - s.lambda;
        if self.is_sde() {
            // x_t = sigma_t / sigma_s e^{-h} x_s + alpha_t (1 - e^{-2h}) x_0 + sigma_t sqrt(1 - e^{-2h}) z.
            let x = ops::lin2(
                t.sigma / s.sigma * (-h).exp(),
                sample,
                t.alpha * (1.0 - (-2.0 * h).exp()),
                x0,
            )?;
            let z = Self::sde_noise_term(noise, t, h)?.expect("SDE steps always draw noise");
            Ok((x + z)?)
        } else {
            // x_t = sigma_t / sigma_s x_s - alpha_t (e^{-h} - 1) x_0.
            ops::lin2(t.sigma / s.sigma, sample, -t.alpha * ((-h).exp() - 1.0), x0)
        }
    }

    /// Second-order multistep update (DPM-Solver++(2M), Algorithm 2 of the paper).
    fn second_order_update(
        &self,
        sample: &Tensor,
        noise: Option<&Tensor>,
        i: usize,
    ) -> Result<Tensor> {
        let t = Vp::from_sigma(self.sigmas[i + 1]);
        let s0 = Vp::from_sigma(self.sigmas[i]);
        let s1 = Vp::from_sigma(self.sigmas[i - 1]);
        let n = self.model_outputs.len();
        let m0 = self.model_outputs[n - 1].as_ref().expect("current output");
        let m1 = self.model_outputs[n - 2].as_ref().expect("previous output");
        let h = t.lambda - s0.lambda;
        let h_0 = s0.lambda - s1.lambda;
        let r0 = h_0 / h;
        // D0 = m0, D1 = (m0 - m1) / r0.
        let d1 = ops::scale(&(m0 - m1)?, 1.0 / r0)?;
        let exp_neg_h = (-h).exp();
        if self.is_sde() {
            let one_minus = 1.0 - (-2.0 * h).exp();
            let d1_coeff = match self.config.solver_type {
                SolverType::Heun => t.alpha * (one_minus / (-2.0 * h) + 1.0),
                _ => 0.5 * t.alpha * one_minus,
            };
            let x = ops::lin3(
                t.sigma / s0.sigma * exp_neg_h,
                sample,
                t.alpha * one_minus,
                m0,
                d1_coeff,
                &d1,
            )?;
            let z = Self::sde_noise_term(noise, t, h)?.expect("SDE steps always draw noise");
            Ok((x + z)?)
        } else {
            let d1_coeff = match self.config.solver_type {
                SolverType::Heun => t.alpha * ((exp_neg_h - 1.0) / h + 1.0),
                _ => -0.5 * t.alpha * (exp_neg_h - 1.0),
            };
            ops::lin3(
                t.sigma / s0.sigma,
                sample,
                -t.alpha * (exp_neg_h - 1.0),
                m0,
                d1_coeff,
                &d1,
            )
        }
    }

    /// Third-order multistep update (DPM-Solver++(3M)).
    fn third_order_update(
        &self,
        sample: &Tensor,
        noise: Option<&Tensor>,
        i: usize,
    ) -> Result<Tensor> {
        let t = Vp::from_sigma(self.sigmas[i + 1]);
        let s0 = Vp::from_sigma(self.sigmas[i]);
        let s1 = Vp::from_sigma(self.sigmas[i - 1]);
        let s2 = Vp::from_sigma(self.sigmas[i - 2]);
        let n = self.model_outputs.len();
        let m0 = self.model_outputs[n - 1].as_ref().expect("current output");
        let m1 = self.model_outputs[n - 2].as_ref().expect("previous output");
        let m2 = self.model_outputs[n - 3]
            .as_ref()
            .expect("output before that");
        let h = t.lambda - s0.lambda;
        let h_0 = s0.lambda - s1.lambda;
        let h_1 = s1.lambda - s2.lambda;
        let r0 = h_0 / h;
        let r1 = h_1 / h;
        // D1_0 = (m0 - m1) / r0, D1_1 = (m1 - m2) / r1,
        // D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r0 + r1).
        let d1_0 = ops::scale(&(m0 - m1)?, 1.0 / r0)?;
        let d1_1 = ops::scale(&(m1 - m2)?, 1.0 / r1)?;
        let diff = (&d1_0 - &d1_1)?;
        let d1 = (&d1_0 + ops::scale(&diff, r0 / (r0 + r1))?)?;
        let d2 = ops::scale(&diff, 1.0 / (r0 + r1))?;
        let exp_neg_h = (-h).exp();
        if self.is_sde() {
            let one_minus = 1.0 - (-2.0 * h).exp();
            let x = ops::lin3(
                t.sigma / s0.sigma * exp_neg_h,
                sample,
                t.alpha * one_minus,
                m0,
                t.alpha * (one_minus / (-2.0 * h) + 1.0),
                &d1,
            )?;
            let x = (x + ops::scale(
                &d2,
                t.alpha * ((one_minus - 2.0 * h) / (2.0 * h).powi(2) - 0.5),
            )?)?;
            let z = Self::sde_noise_term(noise, t, h)?.expect("SDE steps always draw noise");
            Ok((x + z)?)
        } else {
            let x = ops::lin3(
                t.sigma / s0.sigma,
                sample,
                -t.alpha * (exp_neg_h - 1.0),
                m0,
                t.alpha * ((exp_neg_h - 1.0) / h + 1.0),
                &d1,
            )?;
            Ok((x - ops::scale(&d2, t.alpha * ((exp_neg_h - 1.0 + h) / (h * h) - 0.5))?)?)
        }
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::DpmSolverMultistep {
            karras: self.config.use_karras_sigmas,
            sde: self.is_sde(),
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
        // Leave out the noisiest timesteps whose lambda is below lambda_min_clipped:
        // clipped_idx = searchsorted(lambda reversed (ascending), lambda_min_clipped).
        let clipped_idx = self
            .alphas_cumprod
            .iter()
            .rev()
            .filter(|&&a| {
                let lambda = a.sqrt().ln() - (1.0 - a).sqrt().ln();
                lambda < self.config.lambda_min_clipped
            })
            .count();
        let last_timestep = num_train - clipped_idx;
        let mut timesteps: Vec<f64> = match self.config.timestep_spacing {
            // n + 1 points over [0, last - 1], the last one (0) dropped.
            TimestepSpacing::Linspace => {
                let mut ts: Vec<f64> = schedule::linspace(0.0, last_timestep as f64 - 1.0, n + 1)
                    .into_iter()
                    .rev()
                    .map(schedule::round_half_even)
                    .collect();
                ts.pop();
                ts
            }
            TimestepSpacing::Leading => {
                let step_ratio = last_timestep / (n + 1);
                (1..=n)
                    .rev()
                    .map(|i| (i * step_ratio + self.config.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let step_ratio = num_train as f64 / n as f64;
                schedule::arange(last_timestep as f64, 0.0, -step_ratio)
                    .into_iter()
                    .map(|t| schedule::round_half_even(t) - 1.0)
                    .collect()
            }
        };
        let mut sigmas: Vec<f64> = if self.config.use_karras_sigmas {
            // The Karras range is the whole training range, whatever the spacing.
            let sigma_min = self.config.sigma_min.unwrap_or(self.train_sigmas[0]);
            let sigma_max = self
                .config
                .sigma_max
                .unwrap_or(self.train_sigmas[num_train - 1]);
            let sigmas = schedule::karras_sigmas(sigma_min, sigma_max, n);
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = schedule::sigma_to_t(s, &self.log_sigmas);
                    // Integer timesteps: rounded, except for the cosine schedule where diffusers
                    // skips the rounding and the int64 cast truncates.
                    if self.config.schedule.beta_schedule == BetaSchedule::SquaredcosCapV2 {
                        t.trunc()
                    } else {
                        schedule::round_half_even(t)
                    }
                })
                .collect();
            sigmas
        } else {
            timesteps
                .iter()
                .map(|&t| schedule::interp_at_index(t, &self.train_sigmas))
                .collect()
        };
        sigmas.push(match self.config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => self.train_sigmas[0],
        });
        // (A -1 from `trailing` spacing is kept, as diffusers keeps it: its sigma is clamped to
        // the smallest training sigma.)
        if let Some(&t) = timesteps.iter().find(|&&t| t >= num_train as f64) {
            return Err(SchedulerError::InvalidConfig {
                scheduler: NAME,
                key: "steps_offset",
                message: format!(
                    "with {n} steps a timestep would be {t}, outside the {num_train} training \
                     timesteps; use fewer steps"
                ),
            });
        }
        self.num_inference_steps = Some(timesteps.len());
        // diffusers keeps the sigmas as float32.
        self.timesteps = timesteps;
        self.sigmas = sigmas.into_iter().map(schedule::to_f32_precision).collect();
        self.model_outputs = vec![None; self.config.solver_order];
        self.lower_order_nums = 0;
        self.index = StepIndex::default();
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
        if self.num_inference_steps.is_none() {
            return Err(SchedulerError::TimestepsNotSet {
                scheduler: NAME,
                operation: "step",
            });
        }
        ops::check_same_shape(NAME, model_output, sample)?;
        let i = self.index.current(NAME, &self.timesteps, timestep, true)?;
        let len = self.timesteps.len();
        if i >= len {
            return Err(SchedulerError::ScheduleExhausted {
                scheduler: NAME,
                step_index: i,
                num_timesteps: len,
            });
        }
        let lower_order_final = i == len - 1
            && (self.config.euler_at_final
                || (self.config.lower_order_final && len < 15)
                || self.config.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = i + 2 == len && self.config.lower_order_final && len < 15;

        let dtype = ops::compute_dtype(sample.dtype());
        let x = ops::to_dtype(sample, dtype)?;
        let model_output = ops::to_dtype(model_output, dtype)?;
        let x0 = self.convert_model_output(&model_output, &x, self.sigmas[i])?;
        self.model_outputs.remove(0);
        self.model_outputs.push(Some(x0.clone()));

        let step_noise = if self.is_sde() {
            Some(noise.sample(x.shape(), dtype, x.device())?)
        } else {
            None
        };
        let order = self.config.solver_order;
        let prev_sample = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order_update(&x0, &x, step_noise.as_ref(), i)?
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order_update(&x, step_noise.as_ref(), i)?
        } else {
            self.third_order_update(&x, step_noise.as_ref(), i)?
        };
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.index.advance();
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
        if self.num_inference_steps.is_none() {
            return Err(SchedulerError::TimestepsNotSet {
                scheduler: NAME,
                operation: "add_noise",
            });
        }
        ops::check_same_shape(NAME, noise, original_samples)?;
        let indices = self
            .index
            .for_add_noise(NAME, &self.timesteps, timesteps, true)?;
        let (alpha_t, sigma_t): (Vec<f64>, Vec<f64>) = indices
            .iter()
            .map(|&i| {
                let vp = Vp::from_sigma(self.sigmas[i]);
                (vp.alpha, vp.sigma)
            })
            .unzip();
        let alpha_t = ops::per_batch(NAME, &alpha_t, original_samples)?;
        let sigma_t = ops::per_batch(NAME, &sigma_t, original_samples)?;
        Ok((original_samples.broadcast_mul(&alpha_t)? + noise.broadcast_mul(&sigma_t)?)?)
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.index.begin_index = Some(begin_index);
    }
}
