//! Group and layer normalisation, composed from differentiable ops.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::attention::statistics_dtype;
use super::kernels;

/// Group normalisation over `[b, c, ...]`: channels split in `num_groups` groups, each
/// normalised over its channels and all spatial positions, then scaled per channel.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    num_groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight` and `bias` `[channels]`; `channels` must divide into `num_groups`.
    pub fn new(num_groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if num_groups == 0 || !channels.is_multiple_of(num_groups) {
            candle_core::bail!(
                "group norm `{}`: {channels} channels cannot be split into {num_groups} groups",
                vb.prefix()
            );
        }
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            num_groups,
            eps,
        })
    }
}

impl GroupNorm {
    /// `silu(group_norm(x))`, fused on the CPU.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        if kernels::use_cpu_kernels(x) && self.weight.dtype() == x.dtype() {
            let (w, b) = (&self.weight, &self.bias);
            return kernels::norm::group_norm(x, w, b, self.num_groups, self.eps, true);
        }
        self.forward_plain(x)?.silu()
    }

    /// The composition of primitive ops (used off the CPU).
    pub fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let dtype = x.dtype();
        let grouped = x
            .reshape((b, self.num_groups, ()))?
            .to_dtype(statistics_dtype(dtype))?;
        let mean = grouped.mean_keepdim(D::Minus1)?;
        let centered = grouped.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let normed = normed.to_dtype(dtype)?.reshape(dims.as_slice())?;
        let mut param_shape = vec![1, c];
        param_shape.resize(dims.len(), 1);
        normed
            .broadcast_mul(&self.weight.reshape(param_shape.as_slice())?)?
            .broadcast_add(&self.bias.reshape(param_shape.as_slice())?)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if kernels::use_cpu_kernels(x) && self.weight.dtype() == x.dtype() {
            let (w, b) = (&self.weight, &self.bias);
            return kernels::norm::group_norm(x, w, b, self.num_groups, self.eps, false);
        }
        self.forward_plain(x)
    }
}

/// Layer normalisation over the last dimension, with a learned scale and shift.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` `[dim]`.
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if kernels::use_cpu_kernels(x) && self.weight.dtype() == x.dtype() {
            return kernels::norm::layer_norm(x, &self.weight, &self.bias, self.eps);
        }
        self.forward_plain(x)
    }
}

impl LayerNorm {
    /// The composition of primitive ops (used off the CPU).
    pub fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(statistics_dtype(dtype))?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}
