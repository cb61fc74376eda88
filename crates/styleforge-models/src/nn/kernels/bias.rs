//! `y + b` for `y` `[rows, n]` and a bias `b` `[n]`, with both halves of its backward on
//! rayon's threads (candle's broadcast add sums the bias gradient over all rows on one
//! thread).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{num_threads, slice_f32, uninit};

/// Rows handed to one rayon task.
fn rows_per_task(n: usize) -> usize {
    (16384 / n.max(1)).max(1)
}

struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "sf-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = slice_f32(s1, l1, "bias add")?;
        let b = slice_f32(s2, l2, "bias add")?;
        let n = b.len();
        if n == 0 || y.len() % n != 0 || l1.dims().last() != Some(&n) {
            candle_core::bail!("bias add: {:?} + {:?}", l1.dims(), l2.dims())
        }
        let mut out = uninit(y.len());
        let rows = rows_per_task(n);
        out.par_chunks_mut(n * rows)
            .zip(y.par_chunks(n * rows))
            .for_each(|(o, ys)| {
                for (orow, yrow) in o.chunks_mut(n).zip(ys.chunks(n)) {
                    for ((ov, &yv), &bv) in orow.iter_mut().zip(yrow).zip(b) {
                        *ov = yv + bv;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gb = grad.contiguous()?.apply_op1_no_bwd(&ColumnSum)?;
        Ok((Some(grad.clone()), Some(gb.reshape(b.shape())?)))
    }
}

/// `[rows, n]` → `[n]`: the sum of the rows.
struct ColumnSum;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "sf-column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = slice_f32(s, l, "column sum")?;
        let n = *l.dims().last().unwrap_or(&0);
        if n == 0 {
            return Ok((CpuStorage::F32(vec![]), Shape::from(0)));
        }
        let rows = g.len() / n;
        let per = rows.div_ceil(num_threads().max(1)).max(1);
        let partials: Vec<Vec<f32>> = g
            .par_chunks(per * n)
            .map(|chunk| {
                let mut acc = vec![0f32; n];
                for row in chunk.chunks(n) {
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += v;
                    }
                }
                acc
            })
            .collect();
        let mut out = vec![0f32; n];
        for p in partials {
            for (o, v) in out.iter_mut().zip(p) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }
}

/// `y + b` over the last dimension of a CPU `f32` tensor `y`, `b` of that width.
pub fn add_bias(y: &Tensor, b: &Tensor) -> Result<Tensor> {
    y.contiguous()?.apply_op2(&b.contiguous()?, BiasAdd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::test_util::{rand, rel_diff};
    use candle_core::Var;

    #[test]
    fn matches_broadcast_add() -> Result<()> {
        for (rows, n) in [(7usize, 5usize), (1, 3), (300, 17), (2049, 64)] {
            let y = Var::from_tensor(&rand(&[rows, n], 1, 2.0)?)?;
            let b = Var::from_tensor(&rand(&[n], 2, 1.0)?)?;
            let ours = add_bias(&y, &b)?;
            let theirs = y.broadcast_add(&b)?;
            assert!(rel_diff(&ours, &theirs)? < 1e-7);
            let gy = rand(&[rows, n], 3, 1.0)?;
            let g1 = (&ours * &gy)?.sum_all()?.backward()?;
            let g2 = (&theirs * &gy)?.sum_all()?.backward()?;
            for v in [&y, &b] {
                let d = rel_diff(g1.get(v).unwrap(), g2.get(v).unwrap())?;
                assert!(d < 1e-6, "{rows}x{n}: grad diff {d}");
            }
        }
        Ok(())
    }
}
