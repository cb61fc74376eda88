//! The transformers' GELUs in one pass each, with their backward in one pass too (the
//! plain-op versions are several element-wise ops and graph nodes, and candle runs its
//! `erf` one value at a time on one thread):
//!
//! - OpenAI CLIP's quick GELU, `x · sigmoid(1.702·x)`, backward
//!   `grad · (s + 1.702·x·s·(1 − s))` with `s = sigmoid(1.702·x)`;
//! - the exact GELU, `x · Φ(x) = ½·x·(1 + erf(x/√2))` (OpenCLIP, ViT, DINOv2), backward
//!   `grad · (Φ(x) + x·φ(x))`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::simd::{self, one_plus_erf_and_gauss, INV_SQRT_2PI};
use super::{slice_f32, uninit};

/// The slope inside quick GELU's sigmoid.
const ALPHA: f32 = 1.702;

/// Values handed to one rayon task.
const PER_TASK: usize = 16384;

/// Which GELU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Quick,
    Erf,
}

crate::multiversion! {
    /// `out = x·sigmoid(α·x)`.
    fn quick_forward(out: &mut [f32], x: &[f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * simd::sigmoid(ALPHA * v);
        }
    }
}

crate::multiversion! {
    /// `gx = gy·(s + α·x·s·(1 − s))`.
    fn quick_backward(gx: &mut [f32], x: &[f32], gy: &[f32]) {
        for ((g, &v), &d) in gx.iter_mut().zip(x).zip(gy) {
            let s = simd::sigmoid(ALPHA * v);
            *g = d * (s + ALPHA * v * s * (1.0 - s));
        }
    }
}

crate::multiversion! {
    /// `out = ½·x·(1 + erf(x/√2))`.
    fn erf_forward(out: &mut [f32], x: &[f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            let (one_plus, _) = one_plus_erf_and_gauss(v);
            *o = 0.5 * v * one_plus;
        }
    }
}

crate::multiversion! {
    /// `gx = gy·(Φ(x) + x·φ(x))`.
    fn erf_backward(gx: &mut [f32], x: &[f32], gy: &[f32]) {
        for ((g, &v), &d) in gx.iter_mut().zip(x).zip(gy) {
            let (one_plus, gauss) = one_plus_erf_and_gauss(v);
            *g = d * (0.5 * one_plus + INV_SQRT_2PI * v * gauss);
        }
    }
}

struct GeluOp(Kind);

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        match self.0 {
            Kind::Quick => "sf-quick-gelu",
            Kind::Erf => "sf-gelu-erf",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice_f32(s, l, self.name())?;
        let forward = match self.0 {
            Kind::Quick => quick_forward,
            Kind::Erf => erf_forward,
        };
        let mut out = uninit(x.len());
        out.par_chunks_mut(PER_TASK)
            .zip(x.par_chunks(PER_TASK))
            .for_each(|(o, xs)| forward(o, xs));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let gx = x
            .contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &GeluBackward(self.0))?;
        Ok(Some(gx))
    }
}

/// `(x, grad_y)` → `grad_x`.
struct GeluBackward(Kind);

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        match self.0 {
            Kind::Quick => "sf-quick-gelu-backward",
            Kind::Erf => "sf-gelu-erf-backward",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice_f32(s1, l1, self.name())?;
        let gy = slice_f32(s2, l2, self.name())?;
        if x.len() != gy.len() {
            candle_core::bail!("{}: {:?} vs {:?}", self.name(), l1.dims(), l2.dims())
        }
        let backward = match self.0 {
            Kind::Quick => quick_backward,
            Kind::Erf => erf_backward,
        };
        let mut gx = uninit(x.len());
        gx.par_chunks_mut(PER_TASK)
            .zip(x.par_chunks(PER_TASK))
            .zip(gy.par_chunks(PER_TASK))
            .for_each(|((g, xs), gys)| backward(g, xs, gys));
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

/// `x·sigmoid(1.702·x)` of a CPU `f32` tensor.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluOp(Kind::Quick))
}

/// The exact GELU `½·x·(1 + erf(x/√2))` of a CPU `f32` tensor (what candle's `gelu_erf`
/// computes, to ~2e-7).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluOp(Kind::Erf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::test_util::{rand, rel_diff};
    use candle_core::Var;

    fn plain_quick(x: &Tensor) -> Result<Tensor> {
        x * candle_nn::ops::sigmoid(&(x * ALPHA as f64)?)?
    }

    fn plain_erf(x: &Tensor) -> Result<Tensor> {
        x.gelu_erf()
    }

    #[test]
    fn matches_plain_ops() -> Result<()> {
        type Op = fn(&Tensor) -> Result<Tensor>;
        let pairs: [(&str, Op, Op); 2] = [
            ("quick", quick_gelu, plain_quick),
            ("erf", gelu_erf, plain_erf),
        ];
        for (name, ours_fn, plain_fn) in pairs {
            for (shape, scale) in [
                (vec![2, 7, 10], 3.0f32),
                (vec![3, 2], 1.0),
                (vec![1, 5, 3, 34], 8.0),
                (vec![300, 181], 2.0),
            ] {
                let x = Var::from_tensor(&rand(&shape, 21, scale)?)?;
                let ours = ours_fn(&x)?;
                let theirs = plain_fn(&x)?;
                let d = rel_diff(&ours, &theirs)?;
                assert!(d < 1e-6, "{name} {shape:?}: value diff {d}");
                let gy = rand(&shape, 22, 1.0)?;
                let g1 = (&ours * &gy)?.sum_all()?.backward()?;
                let g2 = (&theirs * &gy)?.sum_all()?.backward()?;
                let d = rel_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap())?;
                assert!(d < 2e-6, "{name} {shape:?}: grad diff {d}");
            }
        }
        Ok(())
    }
}
