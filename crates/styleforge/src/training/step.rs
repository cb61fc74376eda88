//! One training step's maths, shared by every method: noising, the prediction target,
//! the prior-preservation loss (DreamBooth, Ruiz et al. 2023, eq. 2), the masked loss and
//! gradient clipping.
//!
//! **Masked loss** (`[data] masked_loss`): a StyleRef row's MSE becomes
//! `Σ m·(pred − target)² / Σ m·1` over channels and pixels, the mask `m` (at latent
//! resolution, in [0, 1]) broadcast over the channels: the mean squared error over the
//! masked part, so a white mask gives the plain MSE and an image's loss does not shrink with
//! the area it trains (kohya multiplies the per-pixel loss by the mask and then takes the
//! plain mean, which does). A row whose mask is all black after cropping counts 0.

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

/// The masked MSE of each row, `Σ m·(a − b)² / Σ m·1` (mask `[n, 1, h, w]` broadcast over
/// the channels), weighted by `weights` when given, averaged over the rows.
fn masked_mse(a: &Tensor, b: &Tensor, mask: &Tensor, weights: Option<&[f64]>) -> Result<Tensor> {
    let n = a.dim(0)?;
    let c = a.dim(1)?;
    if mask.dims().len() != 4
        || mask.dim(0)? != n
        || mask.dim(1)? != 1
        || mask.dims()[2..] != a.dims()[2..]
    {
        return Err(Error::InvalidRequest(format!(
            "loss mask {:?} does not fit the rows {:?}",
            mask.dims(),
            a.dims()
        )));
    }
    if let Some(w) = weights.filter(|w| w.len() != n) {
        return Err(Error::InvalidRequest(format!(
            "{} loss weights for {n} rows",
            w.len()
        )));
    }
    let mask = mask.to_dtype(DType::F32)?;
    let sums = (mask.flatten_from(1)?.sum(1)? * c as f64)?.to_vec1::<f32>()?;
    let w: Vec<f32> = (0..n)
        .map(|i| {
            let w = weights.map_or(1.0, |w| w[i]) as f32;
            if sums[i] > 0.0 {
                w / sums[i]
            } else {
                0.0
            }
        })
        .collect();
    let per_row = (a - b)?
        .sqr()?
        .broadcast_mul(&mask)?
        .flatten_from(1)?
        .sum(1)?;
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
    compute_masked_loss(models, schedule, batch, prior_loss_weight, None)
}

/// [`compute_loss`] with the instance rows' loss masked by `instance_mask`
/// (`[instance_rows, 1, h, w]`, see the module docs); the prior rows stay unmasked.
pub fn compute_masked_loss(
    models: &StepModels,
    schedule: &NoiseSchedule,
    batch: &StepBatch,
    prior_loss_weight: f64,
    instance_mask: Option<&Tensor>,
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
    let (pred_i, target_i) = (pred.narrow(0, 0, n)?, target.narrow(0, 0, n)?);
    let weights = batch.instance_weights.as_deref();
    let instance = match instance_mask {
        Some(mask) => masked_mse(&pred_i, &target_i, mask, weights)?,
        None => weighted_mse(&pred_i, &target_i, weights)?,
    };
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

/// The loss of a step whose rows come as several batches of different latent sizes
/// (aspect-ratio buckets): `instance` batches hold only instance rows (each with its
/// masks), `prior` batches only prior rows (counted by their `instance_rows`, weighted by
/// their `instance_weights`). Each part is the mean over its rows, as one batch of them
/// all gives: `instance + prior_loss_weight · prior`.
pub fn compute_grouped_loss(
    models: &StepModels,
    schedule: &NoiseSchedule,
    instance: &[(&StepBatch, Option<&Tensor>)],
    prior: &[&StepBatch],
    prior_loss_weight: f64,
) -> Result<LossParts> {
    let prior: Vec<(&StepBatch, Option<&Tensor>)> = prior.iter().map(|&b| (b, None)).collect();
    let Some((i_total, i_value)) = row_mean(models, schedule, instance)? else {
        return Err(Error::InvalidRequest(
            "a training step without instance rows".into(),
        ));
    };
    let Some((p_total, p_value)) = row_mean(models, schedule, &prior)? else {
        return Ok(LossParts {
            total: i_total,
            instance: i_value,
            prior: 0.0,
        });
    };
    Ok(LossParts {
        total: (&i_total + (&p_total * prior_loss_weight)?)?,
        instance: i_value,
        prior: p_value,
    })
}

/// The mean over all rows of `batches` (each batch's loss the mean over its rows, under
/// its mask): the differentiable loss and its value; `None` without batches.
fn row_mean(
    models: &StepModels,
    schedule: &NoiseSchedule,
    batches: &[(&StepBatch, Option<&Tensor>)],
) -> Result<Option<(Tensor, f64)>> {
    let rows: usize = batches.iter().map(|(b, _)| b.instance_rows).sum();
    let mut sum: Option<(Tensor, f64)> = None;
    for (batch, mask) in batches {
        let loss = compute_masked_loss(models, schedule, batch, 0.0, *mask)?;
        let share = batch.instance_rows as f64 / rows as f64;
        let part = ((&loss.total * share)?, loss.instance * share);
        sum = Some(match sum {
            Some((total, value)) => ((total + part.0)?, value + part.1),
            None => part,
        });
    }
    Ok(sum)
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn value(x: Tensor) -> f32 {
        x.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn masked_mse_matches_a_hand_computation() {
        // one row, 2 channels, 1x2 pixels: channel 0 = [1, 2], channel 1 = [3, 4]; target 0
        let a = t(&[1.0, 2.0, 3.0, 4.0], &[1, 2, 1, 2]);
        let b = t(&[0.0; 4], &[1, 2, 1, 2]);
        let mask = t(&[1.0, 0.5], &[1, 1, 1, 2]);
        // Σ m·d² = (1·1 + 0.5·4) + (1·9 + 0.5·16) = 20; Σ m·1 over channels = 2·1.5 = 3
        let got = value(masked_mse(&a, &b, &mask, None).unwrap());
        assert!((got - 20.0 / 3.0).abs() < 1e-6, "{got}");
        // (kohya's mean of the masked loss would be 20 / 4 = 5)
        let got = value(masked_mse(&a, &b, &mask, Some(&[2.0])).unwrap());
        assert!((got - 40.0 / 3.0).abs() < 1e-5, "{got}");
        // a white mask is the plain MSE
        let white = t(&[1.0, 1.0], &[1, 1, 1, 2]);
        let plain = value(mse(&a, &b).unwrap());
        assert_eq!(plain, 7.5);
        assert!((value(masked_mse(&a, &b, &white, None).unwrap()) - plain).abs() < 1e-6);
        // two rows: a black mask makes its row count 0 in the mean over rows
        let a2 = Tensor::cat(&[&a, &a], 0).unwrap();
        let b2 = Tensor::cat(&[&b, &b], 0).unwrap();
        let m2 = t(&[1.0, 0.5, 0.0, 0.0], &[2, 1, 1, 2]);
        let got = value(masked_mse(&a2, &b2, &m2, None).unwrap());
        assert!((got - 10.0 / 3.0).abs() < 1e-6, "{got}");
        // a mask of the wrong size is refused
        assert!(masked_mse(&a, &b, &t(&[1.0], &[1, 1, 1, 1]), None).is_err());
    }
}
