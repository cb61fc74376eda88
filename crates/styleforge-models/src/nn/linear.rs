//! The models' linear layer: candle-nn's `Linear` (same weights, same maths, same
//! backward), with its work counted for the benchmarks ([`super::flops`]).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::flops;

/// `y = x·Wᵀ (+ b)` over the last dimension of `x`; `W` is `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// Wraps a weight `[out, in]` and optional bias `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_features, in_features) = weight.dims2()?;
        Ok(Self {
            inner: candle_nn::Linear::new(weight, bias),
            in_features,
            out_features,
        })
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.elem_count() / self.in_features.max(1);
        flops::add_matmul(rows, self.in_features, self.out_features);
        self.inner.forward(x)
    }
}

/// Loads `weight` `[out, in]` and `bias` `[out]` from `vb`.
pub fn linear(in_features: usize, out_features: usize, vb: VarBuilder) -> Result<Linear> {
    let inner = candle_nn::linear(in_features, out_features, vb)?;
    Ok(Linear {
        inner,
        in_features,
        out_features,
    })
}

/// Loads `weight` `[out, in]` only.
pub fn linear_no_bias(in_features: usize, out_features: usize, vb: VarBuilder) -> Result<Linear> {
    let inner = candle_nn::linear_no_bias(in_features, out_features, vb)?;
    Ok(Linear {
        inner,
        in_features,
        out_features,
    })
}
