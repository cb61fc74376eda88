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

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// The layer followed by a per-output scale `s` `[out]` (`s ⊙ (W·x + b)`), folded into
    /// the weight and bias: one pass less over the output, for frozen layers.
    pub fn scale_outputs(&self, s: &Tensor) -> Result<Self> {
        let weight = self.weight().broadcast_mul(&s.unsqueeze(1)?)?;
        let bias = self.bias().map(|b| b * s).transpose()?;
        Self::new(weight, bias)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.elem_count() / self.in_features.max(1);
        flops::add_matmul(rows, self.in_features, self.out_features);
        let dims = x.dims();
        if dims.len() <= 2 && !super::bf16_on_cpu(x) {
            return self.inner.forward(x);
        }
        // `[.., in]` as one `[rows, in]` matrix: candle-nn broadcasts the weight over the
        // leading dimensions instead, whose backward then sums a `[batch, out, in]`
        // gradient back down on one thread; here the weight gradient is one matmul.
        let y = super::matmul(
            &x.reshape((rows, self.in_features))?,
            &self.inner.weight().t()?,
        )?;
        let y = match self.inner.bias() {
            Some(b) if super::kernels::use_cpu_kernels(&y) => {
                super::kernels::bias::add_bias(&y, b)?
            }
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims.to_vec();
        *out.last_mut().expect("rank >= 1") = self.out_features;
        y.reshape(out)
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
