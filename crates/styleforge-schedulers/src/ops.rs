//! Small tensor helpers shared by the schedulers (crate-private).
//!
//! Schedule coefficients are `f64`; the step arithmetic runs in `f32` (or `f64` for `f64`
//! samples), and half-precision inputs are upcast first, as diffusers upcasts to float32.

use candle_core::{DType, Tensor};

use crate::error::{Result, SchedulerError};

/// The dtype the step arithmetic runs in for a sample of dtype `dtype`.
pub(crate) fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// `t` converted to `dtype` (no copy if it already has it).
pub(crate) fn to_dtype(t: &Tensor, dtype: DType) -> Result<Tensor> {
    if t.dtype() == dtype {
        Ok(t.clone())
    } else {
        Ok(t.to_dtype(dtype)?)
    }
}

/// Checks that the model output and the sample agree in shape.
pub(crate) fn check_same_shape(
    scheduler: &'static str,
    model_output: &Tensor,
    sample: &Tensor,
) -> Result<()> {
    if model_output.shape() != sample.shape() {
        return Err(SchedulerError::InvalidArgument {
            scheduler,
            message: format!(
                "model_output has shape {:?} but sample has shape {:?}; they must match",
                model_output.shape(),
                sample.shape()
            ),
        });
    }
    Ok(())
}

/// `a * x`.
pub(crate) fn scale(x: &Tensor, a: f64) -> Result<Tensor> {
    Ok(x.affine(a, 0.0)?)
}

/// `a * x + b * y`.
pub(crate) fn lin2(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    Ok((x.affine(a, 0.0)? + y.affine(b, 0.0)?)?)
}

/// `a * x + b * y + c * z`.
pub(crate) fn lin3(a: f64, x: &Tensor, b: f64, y: &Tensor, c: f64, z: &Tensor) -> Result<Tensor> {
    Ok(((x.affine(a, 0.0)? + y.affine(b, 0.0)?)? + z.affine(c, 0.0)?)?)
}

/// A tensor of shape `[coefs.len(), 1, 1, ...]` (rank of `like`, dtype of `like`) holding one
/// coefficient per batch element; `coefs` must have one entry or one per batch element.
pub(crate) fn per_batch(scheduler: &'static str, coefs: &[f64], like: &Tensor) -> Result<Tensor> {
    let batch = like.dims().first().copied().unwrap_or(1);
    if coefs.len() != batch && coefs.len() != 1 {
        return Err(SchedulerError::InvalidArgument {
            scheduler,
            message: format!(
                "got {} timesteps for a batch of {batch}; pass one timestep per batch element (or one for all)",
                coefs.len()
            ),
        });
    }
    let mut shape = vec![1usize; like.rank().max(1)];
    shape[0] = coefs.len();
    let values: Vec<f64> = coefs.to_vec();
    Ok(Tensor::from_vec(values, shape, like.device())?.to_dtype(like.dtype())?)
}

/// A timestep used as an index into the training schedule: it must be an integer in
/// `[0, num_train_timesteps)`.
pub(crate) fn train_index(
    scheduler: &'static str,
    timestep: f64,
    num_train_timesteps: usize,
) -> Result<usize> {
    if timestep.fract() != 0.0 || timestep < 0.0 || timestep >= num_train_timesteps as f64 {
        return Err(SchedulerError::InvalidArgument {
            scheduler,
            message: format!(
                "timestep {timestep} is not an integer training timestep in [0, {num_train_timesteps}); \
                 pass values from timesteps()"
            ),
        });
    }
    Ok(timestep as usize)
}

/// The forward process `x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise` (DDPM eq. 4),
/// with one training timestep per batch element (or one for the whole batch).
pub(crate) fn add_noise_alphas_cumprod(
    scheduler: &'static str,
    alphas_cumprod: &[f64],
    original_samples: &Tensor,
    noise: &Tensor,
    timesteps: &[f64],
) -> Result<Tensor> {
    check_same_shape(scheduler, noise, original_samples)?;
    let (sqrt_alpha_prod, sqrt_one_minus_alpha_prod) =
        alpha_coefficients(scheduler, alphas_cumprod, timesteps)?;
    let a = per_batch(scheduler, &sqrt_alpha_prod, original_samples)?;
    let b = per_batch(scheduler, &sqrt_one_minus_alpha_prod, original_samples)?;
    Ok((original_samples.broadcast_mul(&a)? + noise.broadcast_mul(&b)?)?)
}

/// The v-prediction target `v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x_0`
/// (Salimans & Ho 2022, "Progressive Distillation", section 4).
pub(crate) fn velocity_alphas_cumprod(
    scheduler: &'static str,
    alphas_cumprod: &[f64],
    sample: &Tensor,
    noise: &Tensor,
    timesteps: &[f64],
) -> Result<Tensor> {
    check_same_shape(scheduler, noise, sample)?;
    let (sqrt_alpha_prod, sqrt_one_minus_alpha_prod) =
        alpha_coefficients(scheduler, alphas_cumprod, timesteps)?;
    let a = per_batch(scheduler, &sqrt_alpha_prod, sample)?;
    let b = per_batch(scheduler, &sqrt_one_minus_alpha_prod, sample)?;
    Ok((noise.broadcast_mul(&a)? - sample.broadcast_mul(&b)?)?)
}

fn alpha_coefficients(
    scheduler: &'static str,
    alphas_cumprod: &[f64],
    timesteps: &[f64],
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut sqrt_alpha_prod = Vec::with_capacity(timesteps.len());
    let mut sqrt_one_minus_alpha_prod = Vec::with_capacity(timesteps.len());
    for &t in timesteps {
        let alpha_prod = alphas_cumprod[train_index(scheduler, t, alphas_cumprod.len())?];
        sqrt_alpha_prod.push(alpha_prod.sqrt());
        sqrt_one_minus_alpha_prod.push((1.0 - alpha_prod).sqrt());
    }
    Ok((sqrt_alpha_prod, sqrt_one_minus_alpha_prod))
}

/// The step index of schedulers that walk a sigma table (Euler, Euler ancestral, DPM-Solver),
/// as diffusers tracks it: set from the first timestep seen (or from `set_begin_index`) and
/// advanced by every `step`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StepIndex {
    pub(crate) step_index: Option<usize>,
    pub(crate) begin_index: Option<usize>,
}

impl StepIndex {
    /// Looks `timestep` up in `timesteps`; if absent, DPM-Solver (`missing_is_last`) falls back to
    /// the last index as diffusers does, the others fail.
    fn lookup(
        scheduler: &'static str,
        timesteps: &[f64],
        timestep: f64,
        missing_is_last: bool,
    ) -> Result<usize> {
        match crate::schedule::index_for_timestep(timesteps, timestep) {
            Some(i) => Ok(i),
            None if missing_is_last && !timesteps.is_empty() => Ok(timesteps.len() - 1),
            None => Err(SchedulerError::UnknownTimestep {
                scheduler,
                timestep,
            }),
        }
    }

    /// The current step index, initialising it (diffusers' `_init_step_index`) on first use.
    pub(crate) fn current(
        &mut self,
        scheduler: &'static str,
        timesteps: &[f64],
        timestep: f64,
        missing_is_last: bool,
    ) -> Result<usize> {
        if let Some(i) = self.step_index {
            return Ok(i);
        }
        let i = match self.begin_index {
            Some(b) => b,
            // A generation that starts at the first timestep starts at index 0. diffusers looks
            // the timestep up and takes its *second* occurrence when it repeats, which for a
            // repeated first timestep (DPM-Solver with Karras sigmas and the cosine schedule)
            // skips a sigma and runs off the end of the schedule; img2img sets a begin index.
            None if timesteps.first().is_some_and(|&t0| {
                crate::schedule::index_for_timestep(&[t0], timestep).is_some()
            }) =>
            {
                0
            }
            None => Self::lookup(scheduler, timesteps, timestep, missing_is_last)?,
        };
        self.step_index = Some(i);
        Ok(i)
    }

    /// Moves to the next step.
    pub(crate) fn advance(&mut self) {
        self.step_index = self.step_index.map(|i| i + 1);
    }

    /// The sigma indices `add_noise` uses: looked up per timestep before `set_begin_index`,
    /// otherwise the current step index (or the begin index before the first step).
    pub(crate) fn for_add_noise(
        &self,
        scheduler: &'static str,
        timesteps: &[f64],
        requested: &[f64],
        missing_is_last: bool,
    ) -> Result<Vec<usize>> {
        match (self.begin_index, self.step_index) {
            (None, _) => requested
                .iter()
                .map(|&t| Self::lookup(scheduler, timesteps, t, missing_is_last))
                .collect(),
            (Some(_), Some(i)) | (Some(i), None) => Ok(vec![i; requested.len()]),
        }
    }
}

/// Rejects schedules containing timestep -1. numpy's float `arange` gives `trailing` spacing
/// an extra, negative timestep for some step counts (61, 103, 121, 122 of 1000); diffusers would
/// then index its table with -1, which Python silently wraps to the last training timestep.
pub(crate) fn check_no_negative_timestep(
    scheduler: &'static str,
    timesteps: &[f64],
    num_inference_steps: usize,
) -> Result<()> {
    if let Some(&t) = timesteps.iter().find(|&&t| t < 0.0) {
        return Err(SchedulerError::InvalidConfig {
            scheduler,
            key: "timestep_spacing",
            message: format!(
                "with {num_inference_steps} steps the spacing yields timestep {t} (a float rounding \
                 artefact of diffusers' numpy.arange), which diffusers mishandles; use another \
                 number of steps"
            ),
        });
    }
    Ok(())
}

/// The integer timesteps of an alphas-cumprod scheduler (DDPM, DDIM) for
/// `num_inference_steps`: spaced as configured, with the step count and the range checked.
pub(crate) fn integer_timesteps(
    scheduler: &'static str,
    spacing: crate::config::TimestepSpacing,
    num_train: usize,
    num_inference_steps: usize,
    steps_offset: usize,
) -> Result<Vec<f64>> {
    if num_inference_steps == 0 || num_inference_steps > num_train {
        return Err(SchedulerError::InvalidStepCount {
            scheduler,
            requested: num_inference_steps,
            num_train_timesteps: num_train,
        });
    }
    let timesteps = crate::schedule::spaced_timesteps(
        spacing,
        num_train,
        num_inference_steps,
        steps_offset,
        true,
    );
    check_no_negative_timestep(scheduler, &timesteps, num_inference_steps)?;
    if let Some(&t) = timesteps.iter().find(|&&t| t >= num_train as f64) {
        return Err(SchedulerError::InvalidConfig {
            scheduler,
            key: "steps_offset",
            message: format!(
                "with {num_inference_steps} steps the first timestep would be {t}, beyond the \
                 {num_train} training timesteps; use fewer steps"
            ),
        });
    }
    Ok(timesteps)
}
