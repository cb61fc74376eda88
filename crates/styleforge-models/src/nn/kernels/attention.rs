//! Fused `softmax(scale·q·kᵀ)·v` that never materialises the `[n, m]` score matrix of a
//! whole head: queries go in blocks whose scores stay in cache. The backward pass
//! recomputes each block's probabilities from `q` and `k` (no saved scores) and uses
//! `Σⱼ pᵢⱼ·dpᵢⱼ` for the softmax correction, so it needs only `q`, `k`, `v` and `grad_out`.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{matmul, num_threads, simd, slice_f32, uninit, Mat, SendPtr};

/// `[bh, n, d]` queries against `[bh, m, d]` keys/values.
#[derive(Debug, Clone, Copy)]
struct Geom {
    bh: usize,
    n: usize,
    m: usize,
    d: usize,
    dv: usize,
}

impl Geom {
    fn new(q: &[usize], k: &[usize], v: &[usize]) -> Result<Self> {
        let (Some((&d, qlead)), Some((&dk, klead)), Some((&dv, vlead))) =
            (q.split_last(), k.split_last(), v.split_last())
        else {
            candle_core::bail!("attention: empty shapes")
        };
        if q.len() < 2 || k.len() != q.len() || v.len() != q.len() || dk != d {
            candle_core::bail!("attention: q {q:?}, k {k:?}, v {v:?} do not fit")
        }
        let (qb, n) = qlead.split_at(qlead.len() - 1);
        let (kb, m) = klead.split_at(klead.len() - 1);
        if qb != kb || klead != vlead {
            candle_core::bail!("attention: q {q:?}, k {k:?}, v {v:?} do not fit")
        }
        Ok(Self {
            bh: qb.iter().product(),
            n: n[0],
            m: m[0],
            d,
            dv,
        })
    }

    /// Query rows per block: the block's `[rows, m]` scores stay within ~256 KiB.
    fn rows(&self) -> usize {
        (65536 / self.m.max(1)).clamp(8, 256).min(self.n.max(1))
    }
}

crate::multiversion! {
    /// Rows of `s` (`m` wide) become `softmax(scale·s)` in place.
    fn softmax_rows(s: &mut [f32], m: usize, scale: f32) {
        simd::softmax_rows_inplace(s, m, scale);
    }
}

crate::multiversion! {
    /// `dp ← scale·p·(dp − Σⱼ p·dp)` row by row (the gradient of the unscaled scores).
    fn softmax_grad_rows(dp: &mut [f32], p: &[f32], m: usize, scale: f32) {
        for (drow, prow) in dp.chunks_mut(m).zip(p.chunks(m)) {
            let dot = simd::dot(prow, drow);
            for (dv, &pv) in drow.iter_mut().zip(prow) {
                *dv = scale * pv * (*dv - dot);
            }
        }
    }
}

fn mat(ptr: *const f32, rs: usize, cs: usize) -> Mat {
    Mat {
        ptr,
        rs: rs as isize,
        cs: cs as isize,
    }
}

/// `scores[rows, m] = q_blk · kᵀ` then softmax.
///
/// # Safety
/// `qb` points at `rows·d` values, `kh` at `m·d`, `scores` holds `rows·m`.
unsafe fn probs(g: &Geom, qb: *const f32, kh: *const f32, rows: usize, scale: f32, s: &mut [f32]) {
    let (m, d) = (g.m, g.d);
    matmul(
        rows,
        m,
        d,
        s.as_mut_ptr(),
        m as isize,
        1,
        mat(qb, d, 1),
        mat(kh, 1, d),
        false,
        false,
    );
    softmax_rows(&mut s[..rows * m], m, scale);
}

fn forward(g: &Geom, q: &[f32], k: &[f32], v: &[f32], scale: f32) -> Vec<f32> {
    let (n, m, d, dv) = (g.n, g.m, g.d, g.dv);
    let mut out = uninit(g.bh * n * dv);
    let rows = g.rows();
    let items: Vec<(usize, usize)> = (0..g.bh)
        .flat_map(|h| (0..n).step_by(rows).map(move |r| (h, r)))
        .collect();
    let out_ptr = SendPtr(out.as_mut_ptr());
    items.par_iter().for_each_init(
        || uninit(rows * m),
        |s, &(h, r0)| {
            let nb = rows.min(n - r0);
            // SAFETY: in-bounds blocks; each item writes its own rows of `out`.
            unsafe {
                let qb = q.as_ptr().add((h * n + r0) * d);
                probs(g, qb, k.as_ptr().add(h * m * d), nb, scale, s);
                matmul(
                    nb,
                    dv,
                    m,
                    out_ptr.get().add((h * n + r0) * dv),
                    dv as isize,
                    1,
                    mat(s.as_ptr(), m, 1),
                    mat(v.as_ptr().add(h * m * dv), dv, 1),
                    false,
                    false,
                );
            }
        },
    );
    out
}

/// `[dq, dk, dv]` for one head `h`, blocks `r0s`, accumulating `dk`/`dv` (zeroed by the
/// caller) and writing `dq` rows.
///
/// # Safety
/// The output pointers address this head's `dq` `[n, d]`, `dk` `[m, d]`, `dv` `[m, dv]`,
/// not written concurrently by anyone else for the same rows/accumulators.
#[allow(clippy::too_many_arguments)]
unsafe fn backward_blocks(
    g: &Geom,
    h: usize,
    r0s: &[usize],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    go: &[f32],
    scale: f32,
    dq: *mut f32,
    dk: *mut f32,
    dvv: *mut f32,
    s: &mut [f32],
    dp: &mut [f32],
) {
    let (n, m, d, dv) = (g.n, g.m, g.d, g.dv);
    let rows = g.rows();
    let kh = k.as_ptr().add(h * m * d);
    let vh = v.as_ptr().add(h * m * dv);
    for &r0 in r0s {
        let nb = rows.min(n - r0);
        let qb = q.as_ptr().add((h * n + r0) * d);
        let gob = go.as_ptr().add((h * n + r0) * dv);
        probs(g, qb, kh, nb, scale, s);
        // dV += Pᵀ · dO
        matmul(
            m,
            dv,
            nb,
            dvv,
            dv as isize,
            1,
            mat(s.as_ptr(), 1, m),
            mat(gob, dv, 1),
            true,
            false,
        );
        // dP = dO · Vᵀ, then dS.
        matmul(
            nb,
            m,
            dv,
            dp.as_mut_ptr(),
            m as isize,
            1,
            mat(gob, dv, 1),
            mat(vh, 1, dv),
            false,
            false,
        );
        softmax_grad_rows(&mut dp[..nb * m], &s[..nb * m], m, scale);
        // dQ = dS · K
        matmul(
            nb,
            d,
            m,
            dq.add(r0 * d),
            d as isize,
            1,
            mat(dp.as_ptr(), m, 1),
            mat(kh, d, 1),
            false,
            false,
        );
        // dK += dSᵀ · Q
        matmul(
            m,
            d,
            nb,
            dk,
            d as isize,
            1,
            mat(dp.as_ptr(), 1, m),
            mat(qb, d, 1),
            true,
            false,
        );
    }
}

/// `[dq | dk | dv]` flattened.
fn backward(g: &Geom, q: &[f32], k: &[f32], v: &[f32], go: &[f32], scale: f32) -> Vec<f32> {
    let (n, m, d, dv) = (g.n, g.m, g.d, g.dv);
    let (nq, nk, nv) = (g.bh * n * d, g.bh * m * d, g.bh * m * dv);
    let mut packed = uninit(nq + nk + nv);
    let rows = g.rows();
    let blocks: Vec<usize> = (0..n).step_by(rows).collect();
    let (dq, rest) = packed.split_at_mut(nq);
    rest.fill(0.0);
    let (dk, dvv) = rest.split_at_mut(nk);
    let scratch = || (uninit(rows * m), uninit(rows * m));
    if g.bh >= num_threads() || blocks.len() == 1 {
        // One task per head: its dK/dV accumulate without sharing.
        dq.par_chunks_mut(n * d)
            .zip(dk.par_chunks_mut(m * d))
            .zip(dvv.par_chunks_mut(m * dv))
            .enumerate()
            .for_each_init(scratch, |(s, dp), (h, ((dqh, dkh), dvh))| {
                // SAFETY: this task owns head `h`'s gradients.
                unsafe {
                    let (dq, dk, dv) = (dqh.as_mut_ptr(), dkh.as_mut_ptr(), dvh.as_mut_ptr());
                    backward_blocks(g, h, &blocks, q, k, v, go, scale, dq, dk, dv, s, dp);
                }
            });
    } else {
        // Few heads, many blocks: blocks in parallel, dK/dV per task then summed.
        let items: Vec<(usize, usize)> = (0..g.bh)
            .flat_map(|h| blocks.iter().map(move |&r| (h, r)))
            .collect();
        let dq_ptr = SendPtr(dq.as_mut_ptr());
        let (dk_sum, dv_sum) = items
            .par_iter()
            .fold(
                || (vec![0f32; nk], vec![0f32; nv], scratch()),
                |(mut dk, mut dvv, (mut s, mut dp)), &(h, r0)| {
                    // SAFETY: dQ rows of a block belong to this item; dK/dV are the task's.
                    unsafe {
                        backward_blocks(
                            g,
                            h,
                            &[r0],
                            q,
                            k,
                            v,
                            go,
                            scale,
                            dq_ptr.get().add(h * n * d),
                            dk.as_mut_ptr().add(h * m * d),
                            dvv.as_mut_ptr().add(h * m * dv),
                            &mut s,
                            &mut dp,
                        );
                    }
                    (dk, dvv, (s, dp))
                },
            )
            .map(|(dk, dv, _)| (dk, dv))
            .reduce(
                || (vec![0f32; nk], vec![0f32; nv]),
                |(mut a, mut b), (c, e)| {
                    a.iter_mut().zip(&c).for_each(|(x, y)| *x += y);
                    b.iter_mut().zip(&e).for_each(|(x, y)| *x += y);
                    (a, b)
                },
            );
        dk.copy_from_slice(&dk_sum);
        dvv.copy_from_slice(&dv_sum);
    }
    packed
}

#[derive(Debug, Clone, Copy)]
struct AttentionOp {
    scale: f32,
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "sf-attention"
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
        let g = Geom::new(l1.dims(), l2.dims(), l3.dims())?;
        let q = slice_f32(s1, l1, "attention")?;
        let k = slice_f32(s2, l2, "attention")?;
        let v = slice_f32(s3, l3, "attention")?;
        let out = forward(&g, q, k, v, self.scale);
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("rank checked") = g.dv;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let kv = Tensor::cat(&[k.flatten_all()?, v.flatten_all()?], 0)?;
        let packed = q.apply_op3_no_bwd(
            &kv,
            &grad.contiguous()?,
            &AttentionBackward {
                scale: self.scale,
                k_shape: k.dims().to_vec(),
                v_shape: v.dims().to_vec(),
            },
        )?;
        let (nq, nk, nv) = (q.elem_count(), k.elem_count(), v.elem_count());
        let dq = packed.narrow(0, 0, nq)?.reshape(q.shape())?;
        let dk = packed.narrow(0, nq, nk)?.reshape(k.shape())?;
        let dv = packed.narrow(0, nq + nk, nv)?.reshape(v.shape())?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// `(q, [k | v] flattened, grad_out)` → `[dq | dk | dv]` flattened.
struct AttentionBackward {
    scale: f32,
    k_shape: Vec<usize>,
    v_shape: Vec<usize>,
}

impl CustomOp3 for AttentionBackward {
    fn name(&self) -> &'static str {
        "sf-attention-backward"
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
        let g = Geom::new(l1.dims(), &self.k_shape, &self.v_shape)?;
        let q = slice_f32(s1, l1, "attention backward")?;
        let kv = slice_f32(s2, l2, "attention backward")?;
        let go = slice_f32(s3, l3, "attention backward")?;
        let nk = g.bh * g.m * g.d;
        if kv.len() != nk + g.bh * g.m * g.dv || go.len() != g.bh * g.n * g.dv {
            candle_core::bail!("attention backward: inputs do not fit {g:?}")
        }
        let (k, v) = kv.split_at(nk);
        let packed = backward(&g, q, k, v, go, self.scale);
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}

/// `softmax(scale·q·kᵀ)·v` for CPU `f32` `q` `[..., n, d]`, `k` `[..., m, d]`, `v`
/// `[..., m, dv]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, AttentionOp { scale })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::test_util::{rand, rel_diff};
    use candle_core::{Var, D};

    fn plain(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        let s = (q.matmul(&k.t()?)? * scale)?;
        let max = s.max_keepdim(D::Minus1)?.detach();
        let e = s.broadcast_sub(&max)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.matmul(v)
    }

    fn check(b: usize, h: usize, n: usize, m: usize, d: usize, dv: usize) -> Result<()> {
        let q = Var::from_tensor(&rand(&[b, h, n, d], 1, 1.5)?)?;
        let k = Var::from_tensor(&rand(&[b, h, m, d], 2, 1.5)?)?;
        let v = Var::from_tensor(&rand(&[b, h, m, dv], 3, 1.0)?)?;
        let scale = (d as f64).powf(-0.5);
        let ours = attention(&q, &k, &v, scale as f32)?;
        let theirs = plain(&q, &k, &v, scale)?;
        let what = format!("b{b} h{h} n{n} m{m} d{d} dv{dv}");
        let diff = rel_diff(&ours, &theirs)?;
        assert!(diff < 1e-5, "{what}: value diff {diff}");
        let gy = rand(ours.dims(), 4, 1.0)?;
        let g1 = (&ours * &gy)?.sum_all()?.backward()?;
        let g2 = (&theirs * &gy)?.sum_all()?.backward()?;
        for (name, t) in [("q", &q), ("k", &k), ("v", &v)] {
            let diff = rel_diff(g1.get(t).expect("grad"), g2.get(t).expect("grad"))?;
            assert!(diff < 1e-5, "{what}: grad {name} diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn matches_plain_ops() -> Result<()> {
        check(2, 3, 7, 5, 4, 4)?;
        check(1, 1, 300, 11, 6, 3)?; // many query blocks, one head
        check(1, 2, 33, 700, 5, 5)?; // long keys: small blocks
        check(3, 1, 1, 1, 2, 2)?;
        check(1, 5, 520, 77, 8, 8)?;
        Ok(())
    }
}
