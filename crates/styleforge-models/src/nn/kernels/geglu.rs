//! GEGLU (`a · gelu(g)` for `[a, g] = chunk(x, 2, -1)`, exact-erf GELU) in one pass, with
//! its backward `grad_a = grad·gelu(g)`, `grad_g = grad·a·gelu'(g)` in one pass too.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::simd::{one_plus_erf_and_gauss, INV_SQRT_2PI};
use super::{slice_f32, uninit};

/// Rows handed to one rayon task.
fn rows_per_task(inner: usize) -> usize {
    (16384 / inner.max(1)).max(1)
}

crate::multiversion! {
    /// `out[r] = a[r]·gelu(g[r])` for rows `x[r] = [a[r], g[r]]` of `2·w` values.
    fn forward_rows(out: &mut [f32], x: &[f32], w: usize) {
        for (o, xr) in out.chunks_mut(w).zip(x.chunks(2 * w)) {
            let (a, g) = xr.split_at(w);
            for ((ov, &av), &gv) in o.iter_mut().zip(a).zip(g) {
                let (one_plus, _) = one_plus_erf_and_gauss(gv);
                *ov = av * (0.5 * gv * one_plus);
            }
        }
    }
}

crate::multiversion! {
    /// The gradient rows `[grad·gelu(g), grad·a·gelu'(g)]`.
    fn backward_rows(gx: &mut [f32], x: &[f32], gy: &[f32], w: usize) {
        for ((gr, xr), gyr) in gx.chunks_mut(2 * w).zip(x.chunks(2 * w)).zip(gy.chunks(w)) {
            let (a, g) = xr.split_at(w);
            let (ga, gg) = gr.split_at_mut(w);
            for ((((gav, ggv), &av), &gv), &gyv) in
                ga.iter_mut().zip(gg.iter_mut()).zip(a).zip(g).zip(gyr)
            {
                let (one_plus, gauss) = one_plus_erf_and_gauss(gv);
                *gav = gyv * (0.5 * gv * one_plus);
                *ggv = gyv * av * (0.5 * one_plus + INV_SQRT_2PI * gv * gauss);
            }
        }
    }
}

struct GegluOp;

impl CustomOp1 for GegluOp {
    fn name(&self) -> &'static str {
        "sf-geglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice_f32(s, l, "geglu")?;
        let mut dims = l.dims().to_vec();
        let last = dims.last_mut();
        let Some(last) = last else {
            candle_core::bail!("geglu: scalar input")
        };
        if *last % 2 != 0 {
            candle_core::bail!("geglu: odd last dimension {}", *last)
        }
        *last /= 2;
        let inner = *last;
        let mut out = uninit(x.len() / 2);
        if inner > 0 {
            let rows = rows_per_task(inner);
            out.par_chunks_mut(inner * rows)
                .zip(x.par_chunks(2 * inner * rows))
                .for_each(|(o, xs)| forward_rows(o, xs, inner));
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let gx = x
            .contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &GegluBackward)?;
        Ok(Some(gx))
    }
}

/// `(x, grad_y)` → `grad_x`.
struct GegluBackward;

impl CustomOp2 for GegluBackward {
    fn name(&self) -> &'static str {
        "sf-geglu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice_f32(s1, l1, "geglu backward")?;
        let gy = slice_f32(s2, l2, "geglu backward")?;
        let inner = *l2.dims().last().unwrap_or(&0);
        if x.len() != 2 * gy.len() || 2 * inner != *l1.dims().last().unwrap_or(&0) {
            candle_core::bail!("geglu backward: {:?} vs {:?}", l1.dims(), l2.dims())
        }
        let mut gx = uninit(x.len());
        if inner > 0 {
            let rows = rows_per_task(inner);
            gx.par_chunks_mut(2 * inner * rows)
                .zip(x.par_chunks(2 * inner * rows))
                .zip(gy.par_chunks(inner * rows))
                .for_each(|((g, xs), gys)| backward_rows(g, xs, gys, inner));
        }
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

/// `a·gelu_erf(g)` for `[a, g] = x.chunk(2, -1)`, of a CPU `f32` tensor.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GegluOp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::test_util::{rand, rel_diff};
    use candle_core::{Var, D};

    fn plain(x: &Tensor) -> Result<Tensor> {
        let c = x.chunk(2, D::Minus1)?;
        &c[0] * c[1].gelu_erf()?
    }

    #[test]
    fn matches_plain_ops() -> Result<()> {
        for (shape, scale) in [
            (vec![2, 7, 10], 3.0f32),
            (vec![3, 2], 1.0),
            (vec![1, 5, 3, 34], 6.0),
            (vec![300, 18], 2.0),
        ] {
            let x = Var::from_tensor(&rand(&shape, 11, scale)?)?;
            let ours = geglu(&x)?;
            let theirs = plain(&x)?;
            let d = rel_diff(&ours, &theirs)?;
            assert!(d < 1e-6, "{shape:?}: value diff {d}");
            let mut gshape = shape.clone();
            *gshape.last_mut().unwrap() /= 2;
            let gy = rand(&gshape, 12, 1.0)?;
            let g1 = (&ours * &gy)?.sum_all()?.backward()?;
            let g2 = (&theirs * &gy)?.sum_all()?.backward()?;
            let d = rel_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap())?;
            assert!(d < 2e-6, "{shape:?}: grad diff {d}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod timing {
    //! `cargo test --release -p styleforge-models --lib geglu::timing -- --ignored --nocapture`
    use super::*;
    use crate::nn::kernels::test_util::rand;
    use candle_core::{Var, D};
    use std::time::Instant;

    #[test]
    #[ignore]
    fn geglu_fused_vs_plain() -> Result<()> {
        // An SD-1.5-half mid-resolution feed-forward: 2·1024 tokens, inner 4·320.
        let x = Var::from_tensor(&rand(&[2, 1024, 2560], 1, 3.0)?)?;
        let gy = rand(&[2, 1024, 1280], 2, 1.0)?;
        let run = |fused: bool| -> Result<f64> {
            let mut best = f64::MAX;
            for _ in 0..7 {
                let t = Instant::now();
                let y = if fused {
                    geglu(&x)?
                } else {
                    let c = x.chunk(2, D::Minus1)?;
                    (&c[0] * c[1].gelu_erf()?)?
                };
                let g = (&y * &gy)?.sum_all()?.backward()?;
                std::hint::black_box(g.get(&x));
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok(best)
        };
        let (p, f) = (run(false)?, run(true)?);
        println!("geglu fwd+bwd [2,1024,2560]: plain {p:.2} ms, fused {f:.2} ms");
        Ok(())
    }
}
