//! Sinusoidal timestep embedding and the MLP that widens it (`time_embedding`).

use crate::nn::Linear;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Sinusoidal features of one timestep per sample: `timesteps` `[b]` → `[b, dim]`.
///
/// Frequencies `exp(-ln(10000) · i / (dim/2 - freq_shift))`, features `[sin, cos]` (or
/// `[cos, sin]` with `flip_sin_to_cos`). Computed in f32, as diffusers does, so that large
/// timesteps round the same way.
pub fn timestep_features(
    timesteps: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Result<Tensor> {
    let half = dim / 2;
    let ln_period = -(10000f64.ln() as f32);
    let denom = half as f32 - freq_shift as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (ln_period * i as f32 / denom).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), timesteps.device())?;
    let args = timesteps
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    let (sin, cos) = (args.sin()?, args.cos()?);
    let features = if flip_sin_to_cos {
        Tensor::cat(&[cos, sin], 1)?
    } else {
        Tensor::cat(&[sin, cos], 1)?
    };
    if dim % 2 == 1 {
        features.pad_with_zeros(1, 0, 1)
    } else {
        Ok(features)
    }
}

/// `time_embedding`: `linear_1` → SiLU → `linear_2`.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    /// Loads `linear_1` `[time_dim, in_dim]` and `linear_2` `[time_dim, time_dim]`.
    pub fn new(in_dim: usize, time_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: crate::nn::linear(in_dim, time_dim, vb.pp("linear_1"))?,
            linear_2: crate::nn::linear(time_dim, time_dim, vb.pp("linear_2"))?,
        })
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)
    }
}
