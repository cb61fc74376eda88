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
            inner: candle_nn::Linear::new(frozen_layout(weight)?, bias),
            in_features,
            out_features,
        })
    }

    fn from_inner(inner: candle_nn::Linear) -> Result<Self> {
        let bias = inner.bias().cloned();
        Self::new(inner.weight().clone(), bias)
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
    Linear::from_inner(candle_nn::linear(in_features, out_features, vb)?)
}

/// Loads `weight` `[out, in]` only.
pub fn linear_no_bias(in_features: usize, out_features: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::from_inner(candle_nn::linear_no_bias(in_features, out_features, vb)?)
}

/// A frozen CPU weight `[out, in]` stored as its transpose `[in, out]` and seen through a
/// transposed view: the same values, and `x·Wᵀ` then reads `Wᵀ` row-major, which the CPU
/// gemm packs several times faster than a column-major right-hand side (2.7–3.3× on the
/// text encoder's 154-row products). The copy replaces the tensor handed in, so loading
/// holds one extra weight at a time. Variables (updated in place by the optimizer),
/// half-precision weights (mixed-precision cast copies are refreshed in place from their
/// f32 masters) and weights on other devices keep their layout.
fn frozen_layout(weight: Tensor) -> Result<Tensor> {
    let f32_on_cpu = weight.dtype() == candle_core::DType::F32 && weight.device().is_cpu();
    if weight.is_variable() || !f32_on_cpu || !weight.is_contiguous() {
        return Ok(weight);
    }
    weight.t()?.contiguous()?.t()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::test_util::{rand, rel_diff};
    use candle_core::{DType, Var};

    #[test]
    fn frozen_f32_weights_are_stored_transposed_with_the_same_values() -> Result<()> {
        let w = rand(&[5, 3], 1, 1.0)?;
        let b = rand(&[5], 2, 1.0)?;
        let layer = Linear::new(w.clone(), Some(b.clone()))?;
        assert_eq!(layer.weight().dims(), &[5, 3]);
        assert!(layer.weight().t()?.is_contiguous());
        assert_eq!(layer.weight().to_vec2::<f32>()?, w.to_vec2::<f32>()?);
        for (seed, shape) in [(3, vec![4, 3]), (4, vec![2, 4, 3])] {
            let x = rand(&shape, seed, 1.0)?;
            let want = x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)?;
            // |x·Wᵀ + b| ≤ 4 here, so this bounds the absolute error by 8e-6.
            let diff = rel_diff(&layer.forward(&x)?, &want)?;
            assert!(diff < 2e-6, "{diff}");
        }
        Ok(())
    }

    #[test]
    fn trained_and_half_precision_weights_keep_their_layout() -> Result<()> {
        let w = rand(&[5, 3], 5, 1.0)?;
        // A variable is updated in place by the optimizer; a half-precision copy is
        // refreshed in place from its f32 master: both must stay the tensors handed in.
        let var = Var::from_tensor(&w)?;
        let trained = Linear::new(var.as_tensor().clone(), None)?;
        assert!(trained.weight().is_contiguous());
        assert!(trained.weight().is_variable());
        let half = Linear::new(w.to_dtype(DType::BF16)?, None)?;
        assert!(half.weight().is_contiguous());
        Ok(())
    }
}
