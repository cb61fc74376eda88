//! `softmax(scale·x)` over the last dimension, with its backward
//! `grad_x = scale·y·(grad_y − Σ grad_y·y)`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{simd, slice_f32, uninit};

/// Rows handed to one rayon task.
fn rows_per_task(d: usize) -> usize {
    (8192 / d.max(1)).max(1)
}

crate::multiversion! {
    /// `softmax(scale·x)` of rows of `d` values.
    fn forward_rows(out: &mut [f32], x: &[f32], d: usize, scale: f32) {
        out.copy_from_slice(x);
        simd::softmax_rows_inplace(out, d, scale);
    }
}

crate::multiversion! {
    /// `scale·y·(gy − Σ gy·y)` of rows of `d` values.
    fn backward_rows(gx: &mut [f32], y: &[f32], gy: &[f32], d: usize, scale: f32) {
        for ((grow, yrow), gyrow) in gx.chunks_mut(d).zip(y.chunks(d)).zip(gy.chunks(d)) {
            let dot = simd::dot(yrow, gyrow);
            for ((gv, &yv), &gyv) in grow.iter_mut().zip(yrow).zip(gyrow) {
                *gv = scale * yv * (gyv - dot);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct SoftmaxOp {
    scale: f32,
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "sf-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice_f32(s, l, "softmax")?;
        let d = *l.dims().last().unwrap_or(&1);
        let mut out = uninit(x.len());
        if d == 0 {
            return Ok((CpuStorage::F32(out), l.shape().clone()));
        }
        let scale = self.scale;
        let chunk = d * rows_per_task(d);
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(o, xs)| forward_rows(o, xs, d, scale));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let gx = res
            .contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward(*self))?;
        Ok(Some(gx))
    }
}

/// `(y, grad_y)` → `grad_x`.
struct SoftmaxBackward(SoftmaxOp);

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "sf-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            candle_core::bail!("softmax backward: {:?} vs {:?}", l1.dims(), l2.dims())
        }
        let y = slice_f32(s1, l1, "softmax backward")?;
        let gy = slice_f32(s2, l2, "softmax backward")?;
        let d = *l1.dims().last().unwrap_or(&1);
        let mut gx = uninit(y.len());
        if d == 0 {
            return Ok((CpuStorage::F32(gx), l1.shape().clone()));
        }
        let scale = self.0.scale;
        let chunk = d * rows_per_task(d);
        gx.par_chunks_mut(chunk)
            .zip(y.par_chunks(chunk))
            .zip(gy.par_chunks(chunk))
            .for_each(|((g, ys), gys)| backward_rows(g, ys, gys, d, scale));
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

/// `softmax(scale·x)` over the last dimension of a CPU `f32` tensor.
pub fn softmax_last_dim(x: &Tensor, scale: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxOp { scale })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::test_util::{rand, rel_diff};
    use candle_core::{Var, D};

    #[test]
    fn matches_plain_ops() -> Result<()> {
        for (shape, scale) in [
            (vec![2, 3, 5, 7], 0.35f32),
            (vec![4, 77], 1.0),
            (vec![3, 1], 2.0),
            (vec![300, 41], 0.125),
        ] {
            let x = Var::from_tensor(&rand(&shape, 1, 4.0)?)?;
            let ours = softmax_last_dim(&x, scale)?;
            let xs = (x.as_tensor() * scale as f64)?;
            let max = xs.max_keepdim(D::Minus1)?.detach();
            let e = xs.broadcast_sub(&max)?.exp()?;
            let theirs = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
            assert!(rel_diff(&ours, &theirs)? < 1e-6);
            let gy = rand(&shape, 2, 1.0)?;
            let g1 = (&ours * &gy)?.sum_all()?.backward()?;
            let g2 = (&theirs * &gy)?.sum_all()?.backward()?;
            let d = rel_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap())?;
            assert!(d < 1e-5, "{shape:?}: grad diff {d}");
        }
        Ok(())
    }
}
