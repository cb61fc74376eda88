//! One training step's maths, shared by every method: noising, the prediction target,
//! the prior-preservation loss (DreamBooth, Ruiz et al. 2023, eq. 2) and gradient clipping.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use styleforge_models::clip_text::ClipTextModel;
use styleforge_models::unet::UNet2DConditionModel;
use styleforge_schedulers::config::PredictionType;
use styleforge_schedulers::{DdpmScheduler, Scheduler};

use crate::error::{Error, Result};

/// What one step trains on: `instance_rows` StyleRef rows, then the prior (Aux) rows.
#[derive(Debug, Clone)]
pub struct StepBatch {
    /// Clean latents `[b, c, h, w]` (already multiplied by the VAE scaling factor).
    pub latents: Tensor,
    /// The noise the target is built from (standard normal, plus any offset).
    pub noise: Tensor,
    /// The noise the input is made with, when it differs from `noise` (input perturbation).
    pub input_noise: Option<Tensor>,
    /// One training timestep per row.
    pub timesteps: Vec<f64>,
    /// Prompt token ids `[b, 77]`.
    pub input_ids: Tensor,
    /// How many leading rows are instance (StyleRef) rows; the rest are prior rows.
    pub instance_rows: usize,
    /// Loss weights of the instance rows (min-SNR); `None`: the plain mean.
    pub instance_weights: Option<Vec<f64>>,
    /// Loss weights of the prior rows; `None`: the plain mean.
    pub prior_weights: Option<Vec<f64>>,
}

/// The loss of a step and its two parts.
#[derive(Debug, Clone)]
pub struct LossParts {
    /// `mse(instance) + prior_loss_weight · mse(prior)`, differentiable.
    pub total: Tensor,
    /// The instance (StyleRef) MSE.
    pub instance: f64,
    /// The prior (Aux) MSE (0 without prior rows).
    pub prior: f64,
}

/// The models a step runs, and whether the text encoder is trained.
pub struct StepModels<'a> {
    /// The denoiser.
    pub unet: &'a UNet2DConditionModel,
    /// The text encoder.
    pub text_encoder: &'a ClipTextModel,
    /// Whether gradients flow into the text encoder.
    pub train_text_encoder: bool,
}

/// The noise schedule used for training: DDPM's `alphas_cumprod` for noising and the
/// velocity target, and the model's prediction type.
pub struct NoiseSchedule {
    /// The DDPM scheduler built from the model's scheduler config.
    pub ddpm: DdpmScheduler,
    /// What the model predicts.
    pub prediction_type: PredictionType,
}

impl NoiseSchedule {
    /// Training timesteps available (`num_train_timesteps`).
    pub fn num_train_timesteps(&self) -> usize {
        self.ddpm.num_train_timesteps()
    }

    /// The regression target for a prediction type: the noise (epsilon), the velocity
    /// `sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x₀` (v-prediction) or the clean sample.
    pub fn target(&self, latents: &Tensor, noise: &Tensor, timesteps: &[f64]) -> Result<Tensor> {
        Ok(match self.prediction_type {
            PredictionType::Epsilon => noise.clone(),
            PredictionType::VPrediction => self.ddpm.get_velocity(latents, noise, timesteps)?,
            PredictionType::Sample => latents.clone(),
        })
    }
}

fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((a - b)?.sqr()?.mean_all()?)
}

/// The mean squared error, or with `weights` the mean over rows of each row's MSE times its
/// weight (how diffusers applies min-SNR).
fn weighted_mse(a: &Tensor, b: &Tensor, weights: Option<&[f64]>) -> Result<Tensor> {
    let Some(w) = weights else {
        return mse(a, b);
    };
    let n = a.dim(0)?;
    if w.len() != n {
        return Err(Error::InvalidRequest(format!(
            "{} loss weights for {n} rows",
            w.len()
        )));
    }
    let per_row = (a - b)?.sqr()?.flatten_from(1)?.mean(1)?;
    let w: Vec<f32> = w.iter().map(|&x| x as f32).collect();
    let w = Tensor::from_vec(w, n, a.device())?;
    Ok((per_row * w)?.mean_all()?)
}

/// Forward pass and loss of one step: noise the latents, predict, and compare with the
/// target, instance and prior halves each averaged over their own elements.
pub fn compute_loss(
    models: &StepModels,
    schedule: &NoiseSchedule,
    batch: &StepBatch,
    prior_loss_weight: f64,
) -> Result<LossParts> {
    let b = batch.latents.dim(0)?;
    if batch.timesteps.len() != b || batch.input_ids.dim(0)? != b || batch.instance_rows == 0 {
        return Err(Error::InvalidRequest(format!(
            "inconsistent training batch: {b} latents, {} timesteps, {} prompts, {} instance rows",
            batch.timesteps.len(),
            batch.input_ids.dim(0)?,
            batch.instance_rows
        )));
    }
    let input_noise = batch.input_noise.as_ref().unwrap_or(&batch.noise);
    let noisy = schedule
        .ddpm
        .add_noise(&batch.latents, input_noise, &batch.timesteps)?;
    let context = models.text_encoder.forward(&batch.input_ids)?;
    let context = if models.train_text_encoder {
        context
    } else {
        context.detach()
    };
    let t: Vec<f32> = batch.timesteps.iter().map(|&t| t as f32).collect();
    let t = Tensor::from_vec(t, b, batch.latents.device())?;
    let pred = models
        .unet
        .forward(&noisy, &t, &context)?
        .to_dtype(DType::F32)?;
    let target = schedule.target(&batch.latents, &batch.noise, &batch.timesteps)?;
    let n = batch.instance_rows;
    let instance = weighted_mse(
        &pred.narrow(0, 0, n)?,
        &target.narrow(0, 0, n)?,
        batch.instance_weights.as_deref(),
    )?;
    if n == b {
        let value = instance.to_scalar::<f32>()? as f64;
        return Ok(LossParts {
            total: instance,
            instance: value,
            prior: 0.0,
        });
    }
    let prior = weighted_mse(
        &pred.narrow(0, n, b - n)?,
        &target.narrow(0, n, b - n)?,
        batch.prior_weights.as_deref(),
    )?;
    let total = (&instance + (&prior * prior_loss_weight)?)?;
    Ok(LossParts {
        instance: instance.to_scalar::<f32>()? as f64,
        prior: prior.to_scalar::<f32>()? as f64,
        total,
    })
}

/// Scales the gradients of `vars` so their global 2-norm is at most `max_norm`, as
/// PyTorch's `clip_grad_norm_` (factor `min(1, max_norm / (norm + 1e-6))`). Returns the
/// norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sum_sq = 0f64;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            let n = g
                .to_dtype(DType::F32)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f32>()? as f64;
            sum_sq += n;
        }
    }
    let norm = sum_sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for var in vars {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g * coef)?);
            }
        }
    }
    Ok(norm)
}
