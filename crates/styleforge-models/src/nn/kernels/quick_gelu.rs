//! OpenAI CLIP's quick GELU, `x · sigmoid(1.702·x)`, in one pass, with its backward
//! `grad · (s + 1.702·x·s·(1 − s))`, `s = sigmoid(1.702·x)`, in one pass too (the plain-op
//! version is four element-wise ops and four graph nodes).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{simd, slice_f32, uninit};

/// The slope inside the sigmoid.
const ALPHA: f32 = 1.702;

/// Values handed to one rayon task.
const PER_TASK: usize = 16384;

crate::multiversion! {
    /// `out = x·sigmoid(α·x)`.
    fn forward_values(out: &mut [f32], x: &[f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * simd::sigmoid(ALPHA * v);
        }
    }
}

crate::multiversion! {
    /// `gx = gy·(s + α·x·s·(1 − s))`.
    fn backward_values(gx: &mut [f32], x: &[f32], gy: &[f32]) {
        for ((g, &v), &d) in gx.iter_mut().zip(x).zip(gy) {
            let s = simd::sigmoid(ALPHA * v);
            *g = d * (s + ALPHA * v * s * (1.0 - s));
        }
    }
}

struct QuickGeluOp;

impl CustomOp1 for QuickGeluOp {
    fn name(&self) -> &'static str {
        "sf-quick-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice_f32(s, l, "quick_gelu")?;
        let mut out = uninit(x.len());
        out.par_chunks_mut(PER_TASK)
            .zip(x.par_chunks(PER_TASK))
            .for_each(|(o, xs)| forward_values(o, xs));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let gx = x
            .contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &QuickGeluBackward)?;
        Ok(Some(gx))
    }
}

/// `(x, grad_y)` → `grad_x`.
struct QuickGeluBackward;

impl CustomOp2 for QuickGeluBackward {
    fn name(&self) -> &'static str {
        "sf-quick-gelu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice_f32(s1, l1, "quick_gelu backward")?;
        let gy = slice_f32(s2, l2, "quick_gelu backward")?;
        if x.len() != gy.len() {
            candle_core::bail!("quick_gelu backward: {:?} vs {:?}", l1.dims(), l2.dims())
        }
        let mut gx = uninit(x.len());
        gx.par_chunks_mut(PER_TASK)
            .zip(x.par_chunks(PER_TASK))
            .zip(gy.par_chunks(PER_TASK))
            .for_each(|((g, xs), gys)| backward_values(g, xs, gys));
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

/// `x·sigmoid(1.702·x)` of a CPU `f32` tensor.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(QuickGeluOp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::test_util::{rand, rel_diff};
    use candle_core::Var;

    fn plain(x: &Tensor) -> Result<Tensor> {
        x * candle_nn::ops::sigmoid(&(x * ALPHA as f64)?)?
    }

    #[test]
    fn matches_plain_ops() -> Result<()> {
        for (shape, scale) in [
            (vec![2, 7, 10], 3.0f32),
            (vec![3, 2], 1.0),
            (vec![1, 5, 3, 34], 8.0),
            (vec![300, 181], 2.0),
        ] {
            let x = Var::from_tensor(&rand(&shape, 21, scale)?)?;
            let ours = quick_gelu(&x)?;
            let theirs = plain(&x)?;
            let d = rel_diff(&ours, &theirs)?;
            assert!(d < 1e-6, "{shape:?}: value diff {d}");
            let gy = rand(&shape, 22, 1.0)?;
            let g1 = (&ours * &gy)?.sum_all()?.backward()?;
            let g2 = (&theirs * &gy)?.sum_all()?.backward()?;
            let d = rel_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap())?;
            assert!(d < 2e-6, "{shape:?}: grad diff {d}");
        }
        Ok(())
    }
}
