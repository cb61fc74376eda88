//! Fused `softmax(scale·q·kᵀ)·v` that never materialises the `[n, m]` score matrix of a
//! whole head: queries go in blocks whose scores stay in cache. The backward pass
//! recomputes each block's probabilities from `q` and `k` (no saved scores) and uses
//! `Σⱼ pᵢⱼ·dpᵢⱼ` for the softmax correction, so it needs only `q`, `k`, `v` and `grad_out`.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{matmul, num_threads, simd, slice_f32, uninit, Mat, SendPtr};

/// `[bh, n, d]` queries against `[bh, m, d]` keys/values (`heads == 1`), or, with
/// `heads > 1`, `[b, n, heads·d]` queries against `[b, m, heads·d]` keys/values whose heads
/// are read in place (head `hh` is batch `hh / heads`, columns `(hh % heads)·d..`).
#[derive(Debug, Clone, Copy)]
struct Geom {
    bh: usize,
    n: usize,
    m: usize,
    d: usize,
    dv: usize,
    heads: usize,
    /// Query `i` sees keys `j ≤ i` only (CLIP's causal mask).
    causal: bool,
}

impl Geom {
    fn new(q: &[usize], k: &[usize], v: &[usize], heads: usize) -> Result<Self> {
        if heads > 1 {
            let (Ok(&[b, n, qd]), Ok(&[kb, m, kd]), Ok(&[vb, vm, vd])) = (
                <&[usize; 3]>::try_from(q),
                <&[usize; 3]>::try_from(k),
                <&[usize; 3]>::try_from(v),
            ) else {
                candle_core::bail!("attention: q {q:?}, k {k:?}, v {v:?} must be rank 3")
            };
            if b != kb || b != vb || m != vm || qd != kd || qd % heads != 0 || vd % heads != 0 {
                candle_core::bail!("attention: q {q:?}, k {k:?}, v {v:?} do not fit {heads} heads")
            }
            return Ok(Self {
                bh: b * heads,
                n,
                m,
                d: qd / heads,
                dv: vd / heads,
                heads,
                causal: false,
            });
        }
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
            heads: 1,
            causal: false,
        })
    }

    /// Offset of head `hh`'s first row in a `len`-row tensor of `w`-wide heads.
    fn off(&self, hh: usize, len: usize, w: usize) -> usize {
        (hh / self.heads) * len * self.heads * w + (hh % self.heads) * w
    }

    /// Row stride of a tensor of `w`-wide heads.
    fn rs(&self, w: usize) -> usize {
        self.heads * w
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

/// `scores[rows, m] = q_blk · kᵀ` (query rows from `r0` on) then softmax.
///
/// # Safety
/// `qb` points at `rows` rows of `d` values, `kh` at `m` (row stride `g.rs(d)`),
/// `scores` holds `rows·m`.
unsafe fn probs(
    g: &Geom,
    qb: *const f32,
    kh: *const f32,
    r0: usize,
    rows: usize,
    scale: f32,
    s: &mut [f32],
) {
    let (m, d) = (g.m, g.d);
    matmul(
        rows,
        m,
        d,
        s.as_mut_ptr(),
        m as isize,
        1,
        mat(qb, g.rs(d), 1),
        mat(kh, 1, g.rs(d)),
        false,
        false,
    );
    if g.causal {
        for (r, row) in s[..rows * m].chunks_mut(m).enumerate() {
            row.iter_mut()
                .skip(r0 + r + 1)
                .for_each(|v| *v = f32::NEG_INFINITY);
        }
    }
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
                let qb = q.as_ptr().add(g.off(h, n, d) + r0 * g.rs(d));
                probs(g, qb, k.as_ptr().add(g.off(h, m, d)), r0, nb, scale, s);
                matmul(
                    nb,
                    dv,
                    m,
                    out_ptr.get().add(g.off(h, n, dv) + r0 * g.rs(dv)),
                    g.rs(dv) as isize,
                    1,
                    mat(s.as_ptr(), m, 1),
                    mat(v.as_ptr().add(g.off(h, m, dv)), g.rs(dv), 1),
                    false,
                    false,
                );
            }
        },
    );
    out
}

/// `[dq, dk, dv]` for one head `h`, blocks `r0s`, accumulating `dk`/`dv` (zeroed by the
/// caller) and writing `dq` rows (all with the inputs' row strides).
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
    let (rd, rdv) = (g.rs(d), g.rs(dv));
    let rows = g.rows();
    let kh = k.as_ptr().add(g.off(h, m, d));
    let vh = v.as_ptr().add(g.off(h, m, dv));
    for &r0 in r0s {
        let nb = rows.min(n - r0);
        let qb = q.as_ptr().add(g.off(h, n, d) + r0 * rd);
        let gob = go.as_ptr().add(g.off(h, n, dv) + r0 * rdv);
        probs(g, qb, kh, r0, nb, scale, s);
        // dV += Pᵀ · dO
        matmul(
            m,
            dv,
            nb,
            dvv,
            rdv as isize,
            1,
            mat(s.as_ptr(), 1, m),
            mat(gob, rdv, 1),
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
            mat(gob, rdv, 1),
            mat(vh, 1, rdv),
            false,
            false,
        );
        softmax_grad_rows(&mut dp[..nb * m], &s[..nb * m], m, scale);
        // dQ = dS · K
        matmul(
            nb,
            d,
            m,
            dq.add(r0 * rd),
            rd as isize,
            1,
            mat(dp.as_ptr(), m, 1),
            mat(kh, rd, 1),
            false,
            false,
        );
        // dK += dSᵀ · Q
        matmul(
            m,
            d,
            nb,
            dk,
            rd as isize,
            1,
            mat(dp.as_ptr(), 1, m),
            mat(qb, rd, 1),
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
        let (dq_ptr, dk_ptr, dv_ptr) = (
            SendPtr(dq.as_mut_ptr()),
            SendPtr(dk.as_mut_ptr()),
            SendPtr(dvv.as_mut_ptr()),
        );
        (0..g.bh)
            .into_par_iter()
            .for_each_init(scratch, |(s, dp), h| {
                // SAFETY: this task owns head `h`'s gradients (disjoint elements).
                unsafe {
                    let dq = dq_ptr.get().add(g.off(h, n, d));
                    let dk = dk_ptr.get().add(g.off(h, m, d));
                    let dv = dv_ptr.get().add(g.off(h, m, dv));
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
                            dq_ptr.get().add(g.off(h, n, d)),
                            dk.as_mut_ptr().add(g.off(h, m, d)),
                            dvv.as_mut_ptr().add(g.off(h, m, dv)),
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
    heads: usize,
    causal: bool,
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
        let g = Geom {
            causal: self.causal,
            ..Geom::new(l1.dims(), l2.dims(), l3.dims(), self.heads)?
        };
        let q = slice_f32(s1, l1, "attention")?;
        let k = slice_f32(s2, l2, "attention")?;
        let v = slice_f32(s3, l3, "attention")?;
        let out = forward(&g, q, k, v, self.scale);
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("rank checked") = g.dv * g.heads;
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
                heads: self.heads,
                causal: self.causal,
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
    heads: usize,
    causal: bool,
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
        let g = Geom {
            causal: self.causal,
            ..Geom::new(l1.dims(), &self.k_shape, &self.v_shape, self.heads)?
        };
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
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        AttentionOp {
            scale,
            heads: 1,
            causal: false,
        },
    )
}

/// [`attention`] on un-split heads: `q` `[b, n, heads·d]`, `k` `[b, m, heads·d]`, `v`
/// `[b, m, heads·dv]` → `[b, n, heads·dv]`, i.e. `merge(attention(split(q), split(k),
/// split(v)))` without the head transposes (forward or backward). `causal`: query `i`
/// attends to keys `j ≤ i` only (the additive `-inf` mask above the diagonal).
pub fn attention_heads(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
    causal: bool,
) -> Result<Tensor> {
    if let (Ok((b, n, inner)), Ok(m)) = (q.dims3(), k.dim(1)) {
        // scores q·kᵀ and output p·v, each 2·b·n·m·inner
        crate::nn::flops::add(4 * (b * n * m * inner) as u64);
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        AttentionOp {
            scale,
            heads: heads.max(1),
            causal,
        },
    )
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

    #[allow(clippy::too_many_arguments)]
    fn check_heads(
        b: usize,
        h: usize,
        n: usize,
        m: usize,
        d: usize,
        dv: usize,
        causal: bool,
    ) -> Result<()> {
        let q = Var::from_tensor(&rand(&[b, n, h * d], 1, 1.5)?)?;
        let k = Var::from_tensor(&rand(&[b, m, h * d], 2, 1.5)?)?;
        let v = Var::from_tensor(&rand(&[b, m, h * dv], 3, 1.0)?)?;
        let scale = (d as f64).powf(-0.5);
        let ours = attention_heads(&q, &k, &v, h, scale as f32, causal)?;
        let split = |t: &Tensor, w: usize| {
            t.reshape((b, t.dim(1)?, h, w))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (qs, ks, vs) = (split(&q, d)?, split(&k, d)?, split(&v, dv)?);
        let theirs = if causal {
            let mask: Vec<f32> = (0..n)
                .flat_map(|i| (0..m).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            let mask = Tensor::from_vec(mask, (n, m), q.device())?;
            crate::nn::attention::scaled_dot_product_attention_plain(
                &qs,
                &ks,
                &vs,
                scale,
                Some(&mask),
            )?
        } else {
            plain(&qs, &ks, &vs, scale)?
        };
        let theirs = theirs.transpose(1, 2)?.reshape((b, n, h * dv))?;
        let what = format!("heads: b{b} h{h} n{n} m{m} d{d} dv{dv} causal {causal}");
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
    fn heads_in_place_match_plain_ops() -> Result<()> {
        check_heads(2, 3, 7, 5, 4, 4, false)?;
        check_heads(1, 2, 300, 11, 6, 3, false)?; // many query blocks, few heads
        check_heads(2, 5, 33, 77, 8, 8, false)?;
        check_heads(3, 2, 1, 1, 2, 2, false)?;
        check_heads(1, 1, 9, 4, 3, 5, false)?;
        check_heads(2, 3, 77, 77, 8, 8, true)?; // CLIP's causal self-attention
        check_heads(1, 2, 300, 300, 4, 4, true)?; // several query blocks
        check_heads(1, 1, 9, 9, 3, 5, true)?;
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
