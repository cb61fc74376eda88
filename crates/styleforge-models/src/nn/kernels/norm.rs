//! Group normalisation (optionally followed by SiLU) and layer normalisation, each one
//! pass forward and two passes backward, with statistics accumulated in `f64`.
//!
//! The learned scale and shift travel as one `[2, c]` tensor (`stack([weight, bias])`), so
//! each op has two inputs and the gradient flows back to both through the stack.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{simd, slice_f32, uninit};

/// Mean and `1/sqrt(var + eps)` of `data`, two passes (the second on centred values).
#[inline(always)]
fn stats(data: &[f32], eps: f64) -> (f32, f32) {
    let n = data.len().max(1) as f64;
    let mean = sum_f64(data) / n;
    let m = mean as f32;
    let var = sum_sq_centered(data, m) / n;
    (m, (1.0 / (var + eps).sqrt()) as f32)
}

/// Sum in 16 `f32` lanes per block of 1024 values, blocks added in `f64`.
#[inline(always)]
fn sum_f64(data: &[f32]) -> f64 {
    data.chunks(1024).map(|b| simd::sum(b) as f64).sum()
}

/// `Σ (x − mean)²`, blocked like [`sum_f64`].
#[inline(always)]
fn sum_sq_centered(data: &[f32], mean: f32) -> f64 {
    data.chunks(1024)
        .map(|block| {
            let mut acc = [0f32; simd::LANES];
            let mut it = block.chunks_exact(simd::LANES);
            for c in &mut it {
                for i in 0..simd::LANES {
                    let d = c[i] - mean;
                    acc[i] += d * d;
                }
            }
            let tail: f32 = it
                .remainder()
                .iter()
                .map(|&v| (v - mean) * (v - mean))
                .sum();
            (simd::hsum(acc) + tail) as f64
        })
        .sum()
}

/// `Σ a·b`, blocked like [`sum_f64`].
#[inline(always)]
fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    a.chunks(1024)
        .zip(b.chunks(1024))
        .map(|(ba, bb)| simd::dot(ba, bb) as f64)
        .sum()
}

crate::multiversion! {
    /// Group norm (+ SiLU) of one group `xg` (`weight.len()` channels of `s` values).
    fn gn_forward_group(
        o: &mut [f32],
        xg: &[f32],
        s: usize,
        weight: &[f32],
        bias: &[f32],
        eps: f64,
        silu: bool,
    ) {
        let (mean, rstd) = stats(xg, eps);
        for (j, (oc, xc)) in o.chunks_mut(s).zip(xg.chunks(s)).enumerate() {
            // Centre first: `x·scale + shift` would cancel badly when the variance is
            // tiny and `scale` huge.
            let scale = rstd * weight[j];
            let shift = bias[j];
            if silu {
                for (ov, &xv) in oc.iter_mut().zip(xc) {
                    let z = (xv - mean) * scale + shift;
                    *ov = z * simd::sigmoid(z);
                }
            } else {
                for (ov, &xv) in oc.iter_mut().zip(xc) {
                    *ov = (xv - mean) * scale + shift;
                }
            }
        }
    }
}

crate::multiversion! {
    /// Backward of [`gn_forward_group`] for one group: writes `dx` into `gxg` and
    /// `(Σ dz·x̂, Σ dz)` per channel into `ch`, where `z` is the norm's output before SiLU.
    fn gn_backward_group(
        gxg: &mut [f32],
        ch: &mut [f64],
        xg: &[f32],
        gyg: &[f32],
        s: usize,
        weight: &[f32],
        bias: &[f32],
        eps: f64,
        silu: bool,
    ) {
        let (mean, rstd) = stats(xg, eps);
        let cg = weight.len();
        let (mut sum_a, mut sum_b) = (0f64, 0f64);
        for j in 0..cg {
            let range = j * s..(j + 1) * s;
            let (xc, gyc, dz) = (&xg[range.clone()], &gyg[range.clone()], &mut gxg[range]);
            let (wc, bc) = (weight[j], bias[j]);
            if silu {
                let scale = rstd * wc;
                for ((d, &xv), &gv) in dz.iter_mut().zip(xc).zip(gyc) {
                    let z = (xv - mean) * scale + bc;
                    let sg = simd::sigmoid(z);
                    *d = gv * sg * (1.0 + z * (1.0 - sg));
                }
            } else {
                dz.copy_from_slice(gyc);
            }
            let sdz = sum_f64(dz);
            // Σ dz·x̂ = rstd·(Σ dz·x − mean·Σ dz).
            let sdzx = rstd as f64 * (dot_f64(dz, xc) - mean as f64 * sdz);
            ch[2 * j] = sdzx;
            ch[2 * j + 1] = sdz;
            sum_a += wc as f64 * sdz;
            sum_b += wc as f64 * sdzx;
        }
        // dx = rstd·(w·dz − mean(w·dz) − x̂·mean(w·dz·x̂)).
        let n = xg.len() as f64;
        let (ma, mb) = ((sum_a / n) as f32, (sum_b / n) as f32);
        for (j, &wc) in weight.iter().enumerate() {
            let range = j * s..(j + 1) * s;
            for (d, &xv) in gxg[range.clone()].iter_mut().zip(&xg[range]) {
                let xhat = (xv - mean) * rstd;
                *d = rstd * (wc * *d - ma - xhat * mb);
            }
        }
    }
}

crate::multiversion! {
    /// Layer norm of rows of `weight.len()` values.
    fn ln_forward_rows(o: &mut [f32], xs: &[f32], weight: &[f32], bias: &[f32], eps: f64) {
        let d = weight.len();
        for (orow, xrow) in o.chunks_mut(d).zip(xs.chunks(d)) {
            let (mean, rstd) = stats(xrow, eps);
            for (((ov, &xv), &w), &b) in orow.iter_mut().zip(xrow).zip(weight).zip(bias) {
                *ov = (xv - mean) * rstd * w + b;
            }
        }
    }
}

crate::multiversion! {
    /// Backward of [`ln_forward_rows`]: `dx` into `gxs`, `Σ gy·x̂` and `Σ gy` per feature
    /// added to `acc` `[2, d]`; `xhat` is scratch of `d` values.
    fn ln_backward_rows(
        gxs: &mut [f32],
        acc: &mut [f32],
        xhat: &mut [f32],
        xs: &[f32],
        gys: &[f32],
        weight: &[f32],
        eps: f64,
    ) {
        let d = weight.len();
        let (acc_w, acc_b) = acc.split_at_mut(d);
        for ((gxr, xr), gyr) in gxs.chunks_mut(d).zip(xs.chunks(d)).zip(gys.chunks(d)) {
            let (mean, rstd) = stats(xr, eps);
            for ((((xh, &xv), &gv), aw), ab) in xhat
                .iter_mut()
                .zip(xr)
                .zip(gyr)
                .zip(acc_w.iter_mut())
                .zip(acc_b.iter_mut())
            {
                *xh = (xv - mean) * rstd;
                *aw += gv * *xh;
                *ab += gv;
            }
            // gx = w·gy, then the two means.
            for ((g, &w), &gv) in gxr.iter_mut().zip(weight).zip(gyr) {
                *g = w * gv;
            }
            let ma = simd::sum(gxr) / d as f32;
            let mb = simd::dot(gxr, xhat) / d as f32;
            for (g, &xh) in gxr.iter_mut().zip(xhat.iter()) {
                *g = rstd * (*g - ma - xh * mb);
            }
        }
    }
}

/// `[b, c, ...]` viewed as `b·groups` groups of `cg` channels of `s` values each.
#[derive(Debug, Clone, Copy)]
struct GroupGeom {
    b: usize,
    c: usize,
    groups: usize,
    s: usize,
}

impl GroupGeom {
    fn new(dims: &[usize], groups: usize, wb: &[usize]) -> Result<Self> {
        if dims.len() < 2 || groups == 0 || !dims[1].is_multiple_of(groups) {
            candle_core::bail!("group norm: cannot split {dims:?} into {groups} groups")
        }
        if wb != [2, dims[1]] {
            candle_core::bail!("group norm: scale/shift {wb:?} for {} channels", dims[1])
        }
        Ok(Self {
            b: dims[0],
            c: dims[1],
            groups,
            s: dims[2..].iter().product(),
        })
    }

    fn cg(&self) -> usize {
        self.c / self.groups
    }
}

/// Group norm (+ SiLU) forward: `(x, [weight; bias])`.
#[derive(Debug, Clone, Copy)]
struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp2 for GroupNormOp {
    fn name(&self) -> &'static str {
        "sf-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = GroupGeom::new(l1.dims(), self.groups, l2.dims())?;
        let x = slice_f32(s1, l1, "group norm")?;
        let wb = slice_f32(s2, l2, "group norm")?;
        let (weight, bias) = wb.split_at(g.c);
        let (cg, gsize) = (g.cg(), g.cg() * g.s);
        let mut out = uninit(x.len());
        out.par_chunks_mut(gsize.max(1))
            .zip(x.par_chunks(gsize.max(1)))
            .enumerate()
            .for_each(|(bg, (o, xg))| {
                let c0 = (bg % g.groups) * cg;
                let (w, b) = (&weight[c0..c0 + cg], &bias[c0..c0 + cg]);
                gn_forward_group(o, xg, g.s, w, b, self.eps, self.silu);
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(wb, &grad.contiguous()?, &GroupNormBackward(*self))?;
        unpack_grads(&packed, x, wb)
    }
}

/// Splits a backward op's flat `[grad_weight, grad_bias, grad_x]` into `(grad_x,
/// grad_[weight; bias])` shaped like `x` and `wb`.
fn unpack_grads(
    packed: &Tensor,
    x: &Tensor,
    wb: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let nwb = wb.elem_count();
    let gwb = packed.narrow(0, 0, nwb)?.reshape(wb.shape())?;
    let gx = packed.narrow(0, nwb, x.elem_count())?.reshape(x.shape())?;
    Ok((Some(gx), Some(gwb)))
}

/// `(x, [weight; bias], grad_out)` → `[grad_weight, grad_bias, grad_x]` flattened.
struct GroupNormBackward(GroupNormOp);

impl CustomOp3 for GroupNormBackward {
    fn name(&self) -> &'static str {
        "sf-group-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.0;
        let g = GroupGeom::new(l1.dims(), op.groups, l2.dims())?;
        if l3.dims() != l1.dims() {
            candle_core::bail!("group norm backward: gradient shape {:?}", l3.dims())
        }
        let x = slice_f32(s1, l1, "group norm backward")?;
        let wb = slice_f32(s2, l2, "group norm backward")?;
        let gy = slice_f32(s3, l3, "group norm backward")?;
        let (weight, bias) = wb.split_at(g.c);
        let (cg, s) = (g.cg(), g.s);
        let gsize = cg * s;
        let mut packed = uninit(2 * g.c + x.len());
        let (gwb, gx) = packed.split_at_mut(2 * g.c);
        gwb.fill(0.0);
        // Per (image, channel): Σ dz·x̂ and Σ dz.
        let mut chan = vec![0f64; 2 * g.b * g.c];
        gx.par_chunks_mut(gsize.max(1))
            .zip(x.par_chunks(gsize.max(1)))
            .zip(gy.par_chunks(gsize.max(1)))
            .zip(chan.par_chunks_mut(2 * cg))
            .enumerate()
            .for_each(|(bg, (((gxg, xg), gyg), ch))| {
                let c0 = (bg % g.groups) * cg;
                let (w, b) = (&weight[c0..c0 + cg], &bias[c0..c0 + cg]);
                gn_backward_group(gxg, ch, xg, gyg, s, w, b, op.eps, op.silu);
            });
        for bi in 0..g.b {
            for c in 0..g.c {
                let k = 2 * (bi * g.c + c);
                gwb[c] += chan[k] as f32;
                gwb[g.c + c] += chan[k + 1] as f32;
            }
        }
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}

/// Group norm of `x` `[b, c, ...]` with per-channel `weight`/`bias`, then SiLU if `silu`.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let wb = Tensor::stack(&[weight, bias], 0)?;
    x.contiguous()?
        .apply_op2(&wb, GroupNormOp { groups, eps, silu })
}

/// Layer norm over the last dimension: `(x, [weight; bias])`.
#[derive(Debug, Clone, Copy)]
struct LayerNormOp {
    eps: f64,
}

fn layer_dims(x: &[usize], wb: &[usize]) -> Result<usize> {
    let d = *x.last().unwrap_or(&0);
    if wb != [2, d] || d == 0 {
        candle_core::bail!("layer norm: scale/shift {wb:?} for input {x:?}")
    }
    Ok(d)
}

impl CustomOp2 for LayerNormOp {
    fn name(&self) -> &'static str {
        "sf-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = layer_dims(l1.dims(), l2.dims())?;
        let x = slice_f32(s1, l1, "layer norm")?;
        let wb = slice_f32(s2, l2, "layer norm")?;
        let (weight, bias) = wb.split_at(d);
        let mut out = uninit(x.len());
        let rows_per_task = (4096 / d).max(1);
        out.par_chunks_mut(d * rows_per_task)
            .zip(x.par_chunks(d * rows_per_task))
            .for_each(|(o, xs)| ln_forward_rows(o, xs, weight, bias, self.eps));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(wb, &grad.contiguous()?, &LayerNormBackward(*self))?;
        unpack_grads(&packed, x, wb)
    }
}

/// `(x, [weight; bias], grad_out)` → `[grad_weight, grad_bias, grad_x]` flattened.
struct LayerNormBackward(LayerNormOp);

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "sf-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = layer_dims(l1.dims(), l2.dims())?;
        if l3.dims() != l1.dims() {
            candle_core::bail!("layer norm backward: gradient shape {:?}", l3.dims())
        }
        let x = slice_f32(s1, l1, "layer norm backward")?;
        let wb = slice_f32(s2, l2, "layer norm backward")?;
        let gy = slice_f32(s3, l3, "layer norm backward")?;
        let weight = &wb[..d];
        let eps = self.0.eps;
        let mut gx = uninit(x.len());
        let rows_per_task = (4096 / d).max(1);
        // Each task accumulates Σ gy·x̂ and Σ gy per feature, then tasks are summed.
        let gwb = gx
            .par_chunks_mut(d * rows_per_task)
            .zip(x.par_chunks(d * rows_per_task))
            .zip(gy.par_chunks(d * rows_per_task))
            .fold(
                || vec![0f32; 2 * d],
                |mut acc, ((gxs, xs), gys)| {
                    let mut xhat = vec![0f32; d];
                    ln_backward_rows(gxs, &mut acc, &mut xhat, xs, gys, weight, eps);
                    acc
                },
            )
            .reduce(
                || vec![0f32; 2 * d],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        let mut packed = gwb;
        packed.extend_from_slice(&gx);
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}

/// Layer norm of `x` over its last dimension with per-feature `weight`/`bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let wb = Tensor::stack(&[weight, bias], 0)?;
    x.contiguous()?.apply_op2(&wb, LayerNormOp { eps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::test_util::{rand, rel_diff};
    use candle_core::{Var, D};

    fn plain_group_norm(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        groups: usize,
        silu: bool,
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let grouped = x.reshape((dims[0], groups, ()))?;
        let mean = grouped.mean_keepdim(D::Minus1)?;
        let centered = grouped.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered
            .broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .reshape(dims.as_slice())?;
        let mut ps = vec![1, dims[1]];
        ps.resize(dims.len(), 1);
        let y = normed
            .broadcast_mul(&w.reshape(ps.as_slice())?)?
            .broadcast_add(&b.reshape(ps.as_slice())?)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }

    fn compare(ours: &Tensor, theirs: &Tensor, vars: &[(&str, &Var)], what: &str) -> Result<()> {
        let d = rel_diff(ours, theirs)?;
        assert!(d < 1e-5, "{what}: value diff {d}");
        let gy = rand(ours.dims(), 9, 1.0)?;
        let g1 = (ours * &gy)?.sum_all()?.backward()?;
        let g2 = (theirs * &gy)?.sum_all()?.backward()?;
        for (name, v) in vars {
            let d = rel_diff(g1.get(v).expect("grad"), g2.get(v).expect("grad"))?;
            assert!(d < 2e-5, "{what}: grad {name} diff {d}");
        }
        Ok(())
    }

    #[test]
    fn group_norm_matches_plain_ops() -> Result<()> {
        for (shape, groups) in [
            (vec![2, 6, 5, 7], 3),
            (vec![3, 4, 3], 2),
            (vec![1, 8, 1, 1], 8),
            (vec![2, 9, 11, 13], 1),
        ] {
            for silu in [false, true] {
                let x = Var::from_tensor(&(rand(&shape, 1, 2.0)? + 0.7)?)?;
                let w = Var::from_tensor(&(rand(&[shape[1]], 2, 0.5)? + 1.0)?)?;
                let b = Var::from_tensor(&rand(&[shape[1]], 3, 0.5)?)?;
                let ours = group_norm(&x, &w, &b, groups, 1e-5, silu)?;
                let theirs = plain_group_norm(&x, &w, &b, groups, silu)?;
                compare(
                    &ours,
                    &theirs,
                    &[("x", &x), ("w", &w), ("b", &b)],
                    &format!("group norm {shape:?}/{groups} silu={silu}"),
                )?;
            }
        }
        Ok(())
    }

    #[test]
    fn layer_norm_matches_plain_ops() -> Result<()> {
        for shape in [vec![2, 5, 7], vec![3, 33], vec![1, 1, 4], vec![700, 13]] {
            let d = *shape.last().unwrap();
            let x = Var::from_tensor(&(rand(&shape, 1, 2.0)? - 0.3)?)?;
            let w = Var::from_tensor(&(rand(&[d], 2, 0.5)? + 1.0)?)?;
            let b = Var::from_tensor(&rand(&[d], 3, 0.5)?)?;
            let ours = layer_norm(&x, &w, &b, 1e-5)?;
            let mean = x.mean_keepdim(D::Minus1)?;
            let centered = x.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
            let theirs = centered
                .broadcast_div(&(var + 1e-5)?.sqrt()?)?
                .broadcast_mul(&w)?
                .broadcast_add(&b)?;
            compare(
                &ours,
                &theirs,
                &[("x", &x), ("w", &w), ("b", &b)],
                &format!("layer norm {shape:?}"),
            )?;
        }
        Ok(())
    }
}
