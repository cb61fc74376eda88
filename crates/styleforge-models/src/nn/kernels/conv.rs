//! 2-D convolution (NCHW, square stride and symmetric zero padding) as im2col + gemm, with
//! a backward pass built the same way.
//!
//! candle's CPU convolution converts to NHWC and back on every call, and its backward uses
//! a naive `conv_transpose2d` loop for the input gradient and a convolution with an
//! `h×w` kernel for the weight gradient. Here:
//! - forward: per batch item and band of output rows, the input patches are laid out as a
//!   `[cin·kh·kw, rows·wo]` matrix and multiplied by the kernel `[cout, cin·kh·kw]`, writing
//!   straight into the NCHW output (1×1 stride-1 convolutions skip the patch matrix);
//! - weight/bias gradient: `grad_out · patchesᵀ`, summed over bands;
//! - input gradient: for stride 1 a forward convolution of the output gradient with the
//!   flipped, transposed kernel; otherwise `kernelᵀ · grad_out` scattered back (col2im).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{matmul, num_threads, slice_f32, uninit, Mat, SendPtr};

/// Shapes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geom {
    b: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geom {
    fn new(x: &[usize], k: &[usize], stride: usize, pad: usize) -> Result<Self> {
        let [b, cin, h, w] = *x else {
            candle_core::bail!("conv2d: input must be [b, c, h, w], got {x:?}")
        };
        let [cout, kcin, kh, kw] = *k else {
            candle_core::bail!("conv2d: kernel must be [out, in, kh, kw], got {k:?}")
        };
        if kcin != cin {
            candle_core::bail!("conv2d: input has {cin} channels, kernel expects {kcin}")
        }
        if stride == 0 || h + 2 * pad < kh || w + 2 * pad < kw {
            candle_core::bail!("conv2d: kernel {kh}x{kw} does not fit input {h}x{w} (pad {pad})")
        }
        Ok(Self {
            b,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            stride,
            pad,
            ho: (h + 2 * pad - kh) / stride + 1,
            wo: (w + 2 * pad - kw) / stride + 1,
        })
    }

    fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    fn n(&self) -> usize {
        self.ho * self.wo
    }

    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// Work items `(batch, first output row, end row)`: bands small enough that the patch
    /// matrix stays in cache, and at least as many items as threads when possible.
    fn bands(&self) -> Vec<(usize, usize, usize)> {
        const BUDGET: usize = 1 << 19; // floats in one patch matrix (2 MiB)
        let row_cost = if self.pointwise() {
            self.wo * 64
        } else {
            self.k() * self.wo
        };
        let mut rows = (BUDGET / row_cost.max(1)).clamp(1, self.ho);
        let threads = num_threads();
        while rows > 1 && self.b * self.ho.div_ceil(rows) < threads {
            rows = rows.div_ceil(2);
        }
        let mut items = Vec::new();
        for bi in 0..self.b {
            let mut r = 0;
            while r < self.ho {
                let end = (r + rows).min(self.ho);
                items.push((bi, r, end));
                r = end;
            }
        }
        items
    }
}

/// Writes the patches of output rows `oy0..oy1` of one image `xb` `[cin, h, w]` into `col`
/// `[cin·kh·kw, (oy1-oy0)·wo]`.
fn im2col(g: &Geom, xb: &[f32], oy0: usize, oy1: usize, col: &mut [f32]) {
    let tn = (oy1 - oy0) * g.wo;
    let (h, w, s, p) = (
        g.h as isize,
        g.w as isize,
        g.stride as isize,
        g.pad as isize,
    );
    for ci in 0..g.cin {
        let plane = &xb[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let dst = &mut col[row * tn..(row + 1) * tn];
                // Output columns whose input column lies inside the image.
                let kx = kx as isize;
                let lo = (((p - kx).max(0) + s - 1) / s).min(g.wo as isize) as usize;
                let hi = (((w + p - kx) + s - 1) / s).clamp(lo as isize, g.wo as isize) as usize;
                for (t, oy) in (oy0..oy1).enumerate() {
                    let d = &mut dst[t * g.wo..(t + 1) * g.wo];
                    let iy = oy as isize * s + ky as isize - p;
                    if iy < 0 || iy >= h {
                        d.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    d[..lo].fill(0.0);
                    d[hi..].fill(0.0);
                    if s == 1 {
                        let ix0 = (lo as isize + kx - p) as usize;
                        d[lo..hi].copy_from_slice(&src[ix0..ix0 + (hi - lo)]);
                    } else {
                        for (ox, v) in d[lo..hi].iter_mut().enumerate() {
                            *v = src[((ox + lo) as isize * s + kx - p) as usize];
                        }
                    }
                }
            }
        }
    }
}

/// Adds the patch gradients `dcol` `[cin·kh·kw, (oy1-oy0)·wo]` back into one image's input
/// gradient `gxb` `[cin, h, w]`.
fn col2im(g: &Geom, dcol: &[f32], oy0: usize, oy1: usize, gxb: &mut [f32]) {
    let tn = (oy1 - oy0) * g.wo;
    let (h, w, s, p) = (
        g.h as isize,
        g.w as isize,
        g.stride as isize,
        g.pad as isize,
    );
    for ci in 0..g.cin {
        let plane = &mut gxb[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let src = &dcol[row * tn..(row + 1) * tn];
                let kx = kx as isize;
                let lo = (((p - kx).max(0) + s - 1) / s).min(g.wo as isize) as usize;
                let hi = (((w + p - kx) + s - 1) / s).clamp(lo as isize, g.wo as isize) as usize;
                for (t, oy) in (oy0..oy1).enumerate() {
                    let iy = oy as isize * s + ky as isize - p;
                    if iy < 0 || iy >= h {
                        continue;
                    }
                    let d = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let srow = &src[t * g.wo..(t + 1) * g.wo];
                    for ox in lo..hi {
                        d[(ox as isize * s + kx - p) as usize] += srow[ox];
                    }
                }
            }
        }
    }
}

/// `out = conv(x, w) + bias`, NCHW.
fn forward(g: &Geom, x: &[f32], wt: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (k, n) = (g.k(), g.n());
    let mut out = uninit(g.b * g.cout * n);
    let items = g.bands();
    let par_gemm = items.len() < num_threads();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let run = |&(bi, oy0, oy1): &(usize, usize, usize)| {
        let tn = (oy1 - oy0) * g.wo;
        let xb = &x[bi * g.cin * g.h * g.w..(bi + 1) * g.cin * g.h * g.w];
        let mut col = if g.pointwise() {
            Vec::new()
        } else {
            uninit(k * tn)
        };
        let rhs = if g.pointwise() {
            Mat {
                ptr: xb[oy0 * g.wo..].as_ptr(),
                rs: n as isize,
                cs: 1,
            }
        } else {
            im2col(g, xb, oy0, oy1, &mut col);
            Mat {
                ptr: col.as_ptr(),
                rs: tn as isize,
                cs: 1,
            }
        };
        // SAFETY: each item writes its own band of every output channel.
        unsafe {
            let dst = out_ptr.get().add(bi * g.cout * n + oy0 * g.wo);
            if let Some(bias) = bias {
                for (co, &bv) in bias.iter().enumerate() {
                    std::slice::from_raw_parts_mut(dst.add(co * n), tn).fill(bv);
                }
            }
            let lhs = Mat {
                ptr: wt.as_ptr(),
                rs: k as isize,
                cs: 1,
            };
            matmul(
                g.cout,
                tn,
                k,
                dst,
                n as isize,
                1,
                lhs,
                rhs,
                bias.is_some(),
                par_gemm,
            );
        }
    };
    if par_gemm {
        items.iter().for_each(run);
    } else {
        items.par_iter().for_each(run);
    }
    out
}

/// Gradients of the kernel `[cout, k]` and of the bias `[cout]`, concatenated.
fn weight_grad(g: &Geom, x: &[f32], gout: &[f32]) -> Vec<f32> {
    let (k, n) = (g.k(), g.n());
    let items = g.bands();
    let par_gemm = items.len() < num_threads();
    let size = g.cout * k + g.cout;
    let accumulate = |mut acc: Vec<f32>, &(bi, oy0, oy1): &(usize, usize, usize)| {
        let tn = (oy1 - oy0) * g.wo;
        let xb = &x[bi * g.cin * g.h * g.w..(bi + 1) * g.cin * g.h * g.w];
        let gb = &gout[bi * g.cout * n..(bi + 1) * g.cout * n];
        let mut col = if g.pointwise() {
            Vec::new()
        } else {
            uninit(k * tn)
        };
        // patchesᵀ `[tn, k]`.
        let rhs = if g.pointwise() {
            Mat {
                ptr: xb[oy0 * g.wo..].as_ptr(),
                rs: 1,
                cs: n as isize,
            }
        } else {
            im2col(g, xb, oy0, oy1, &mut col);
            Mat {
                ptr: col.as_ptr(),
                rs: 1,
                cs: tn as isize,
            }
        };
        let lhs = Mat {
            ptr: gb[oy0 * g.wo..].as_ptr(),
            rs: n as isize,
            cs: 1,
        };
        let (gw, gbias) = acc.split_at_mut(g.cout * k);
        // SAFETY: `gw` is `[cout, k]`, the operands are in bounds.
        unsafe {
            matmul(
                g.cout,
                k,
                tn,
                gw.as_mut_ptr(),
                k as isize,
                1,
                lhs,
                rhs,
                true,
                par_gemm,
            )
        };
        for (co, gbv) in gbias.iter_mut().enumerate() {
            *gbv += gb[co * n + oy0 * g.wo..co * n + oy1 * g.wo]
                .iter()
                .sum::<f32>();
        }
        acc
    };
    if par_gemm {
        items.iter().fold(vec![0f32; size], accumulate)
    } else {
        items
            .par_iter()
            .fold(|| vec![0f32; size], accumulate)
            .reduce(
                || vec![0f32; size],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            )
    }
}

/// Gradient of the input `[b, cin, h, w]`.
fn input_grad(g: &Geom, wt: &[f32], gout: &[f32]) -> Vec<f32> {
    if g.stride == 1 && g.pad < g.kh && g.pad < g.kw && g.kh == g.kw {
        // A stride-1 convolution's input gradient is the convolution of the output
        // gradient with the kernel flipped in space and with in/out channels swapped.
        let (kh, kw) = (g.kh, g.kw);
        let mut flipped = vec![0f32; wt.len()];
        for co in 0..g.cout {
            for ci in 0..g.cin {
                for ky in 0..kh {
                    for kx in 0..kw {
                        flipped[((ci * g.cout + co) * kh + kh - 1 - ky) * kw + kw - 1 - kx] =
                            wt[((co * g.cin + ci) * kh + ky) * kw + kx];
                    }
                }
            }
        }
        let back = Geom {
            b: g.b,
            cin: g.cout,
            h: g.ho,
            w: g.wo,
            cout: g.cin,
            kh,
            kw,
            stride: 1,
            pad: kh - 1 - g.pad,
            ho: g.h,
            wo: g.w,
        };
        debug_assert_eq!(g.ho + 2 * back.pad + 1 - kh, g.h);
        return forward(&back, gout, &flipped, None);
    }
    // General case: dcol = kernelᵀ · grad_out per band, scattered back. Bands of one image
    // overlap in the input, so an image's bands run in order.
    let (k, n) = (g.k(), g.n());
    let mut gx = vec![0f32; g.b * g.cin * g.h * g.w];
    let items = g.bands();
    let par_gemm = g.b < num_threads();
    let image = g.cin * g.h * g.w;
    let run = |(bi, gxb): (usize, &mut [f32])| {
        let gb = &gout[bi * g.cout * n..(bi + 1) * g.cout * n];
        let mut dcol = Vec::new();
        for &(_, oy0, oy1) in items.iter().filter(|it| it.0 == bi) {
            let tn = (oy1 - oy0) * g.wo;
            if dcol.len() != k * tn {
                dcol = uninit(k * tn);
            }
            let lhs = Mat {
                ptr: wt.as_ptr(),
                rs: 1,
                cs: k as isize,
            };
            let rhs = Mat {
                ptr: gb[oy0 * g.wo..].as_ptr(),
                rs: n as isize,
                cs: 1,
            };
            // SAFETY: `dcol` is `[k, tn]`.
            unsafe {
                matmul(
                    k,
                    tn,
                    g.cout,
                    dcol.as_mut_ptr(),
                    tn as isize,
                    1,
                    lhs,
                    rhs,
                    false,
                    par_gemm,
                )
            };
            col2im(g, &dcol, oy0, oy1, gxb);
        }
    };
    if par_gemm {
        gx.chunks_mut(image).enumerate().for_each(run);
    } else {
        gx.par_chunks_mut(image).enumerate().for_each(run);
    }
    gx
}

/// The forward op: `(x, kernel)` or `(x, kernel, bias)`.
#[derive(Debug, Clone, Copy)]
struct Conv2dOp {
    stride: usize,
    pad: usize,
}

impl Conv2dOp {
    fn fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        bias: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let x = slice_f32(s1, l1, "conv2d")?;
        let wt = slice_f32(s2, l2, "conv2d")?;
        let out = forward(&g, x, wt, bias);
        Ok((CpuStorage::F32(out), Shape::from((g.b, g.cout, g.ho, g.wo))))
    }

    /// `(grad_x, grad_kernel, grad_bias)`.
    fn grads(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let need_x = x.track_op();
        let packed = x.apply_op3_no_bwd(
            kernel,
            &grad,
            &Conv2dBackward {
                stride: self.stride,
                pad: self.pad,
                need_x,
            },
        )?;
        let (cout, nk) = (kernel.dim(0)?, kernel.elem_count());
        let gw = packed.narrow(0, 0, nk)?.reshape(kernel.shape())?;
        let gb = packed.narrow(0, nk, cout)?;
        let gx = if need_x {
            Some(
                packed
                    .narrow(0, nk + cout, x.elem_count())?
                    .reshape(x.shape())?,
            )
        } else {
            None
        };
        Ok((gx, gw, gb))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "sf-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(s1, l1, s2, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, _) = self.grads(x, kernel, grad)?;
        Ok((gx, Some(gw)))
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "sf-conv2d-bias"
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
        let bias = slice_f32(s3, l3, "conv2d")?;
        if bias.len() != l2.dims()[0] {
            candle_core::bail!(
                "conv2d: bias has {} values for {} outputs",
                bias.len(),
                l2.dims()[0]
            )
        }
        self.fwd(s1, l1, s2, l2, Some(bias))
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, gb) = self.grads(x, kernel, grad)?;
        Ok((gx, Some(gw), Some(gb)))
    }
}

/// `(x, kernel, grad_out)` → `[grad_kernel, grad_bias, grad_x?]` flattened into one vector.
struct Conv2dBackward {
    stride: usize,
    pad: usize,
    need_x: bool,
}

impl CustomOp3 for Conv2dBackward {
    fn name(&self) -> &'static str {
        "sf-conv2d-backward"
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
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        if l3.dims() != [g.b, g.cout, g.ho, g.wo] {
            candle_core::bail!("conv2d backward: gradient shape {:?}", l3.dims())
        }
        let x = slice_f32(s1, l1, "conv2d backward")?;
        let wt = slice_f32(s2, l2, "conv2d backward")?;
        let gout = slice_f32(s3, l3, "conv2d backward")?;
        let mut packed = weight_grad(&g, x, gout);
        if self.need_x {
            packed.extend_from_slice(&input_grad(&g, wt, gout));
        }
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}

/// `conv2d(x, kernel) + bias` on contiguous CPU `f32` tensors, with stride and symmetric
/// zero padding, for any input size (the output size rounds down like PyTorch's).
pub fn conv2d(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let op = Conv2dOp {
        stride,
        pad: padding,
    };
    let x = x.contiguous()?;
    let kernel = kernel.contiguous()?;
    match bias {
        Some(b) => x.apply_op3(&kernel, &b.contiguous()?, op),
        None => x.apply_op2(&kernel, op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::test_util::{rand, rel_diff};
    use candle_core::Var;

    /// Plain candle reference, with the far-side padding trick for strided convolutions.
    fn reference(x: &Tensor, w: &Tensor, b: Option<&Tensor>, s: usize, p: usize) -> Result<Tensor> {
        let out = x.conv2d(w, p, s, 1, 1)?;
        match b {
            Some(b) => out.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(out),
        }
    }

    fn check(
        xs: (usize, usize, usize, usize),
        cout: usize,
        k: usize,
        s: usize,
        p: usize,
        bias: bool,
    ) -> Result<()> {
        let (b, cin, h, w) = xs;
        let x = Var::from_tensor(&rand(&[b, cin, h, w], 1, 1.0)?)?;
        let wt = Var::from_tensor(&rand(&[cout, cin, k, k], 2, 0.5)?)?;
        let bv = Var::from_tensor(&rand(&[cout], 3, 0.5)?)?;
        let bias_t = bias.then(|| bv.as_tensor());
        let ours = conv2d(&x, &wt, bias_t, s, p)?;
        // Candle's strided backward needs sizes leaving the same remainder; compare the
        // reference on a zero-padded copy whose far side adds no output.
        let r = |sz: usize| {
            if s == 1 {
                0
            } else {
                s - 1 - (sz + 2 * p - k) % s
            }
        };
        let xp = x.pad_with_zeros(2, 0, r(h))?.pad_with_zeros(3, 0, r(w))?;
        let theirs = reference(&xp, &wt, bias_t, s, p)?;
        assert_eq!(ours.dims(), theirs.dims(), "shape {xs:?} k{k} s{s} p{p}");
        let d = rel_diff(&ours, &theirs)?;
        assert!(d < 1e-5, "value diff {d} for {xs:?} k{k} s{s} p{p}");
        let gy = rand(ours.dims(), 4, 1.0)?;
        let g1 = (&ours * &gy)?.sum_all()?.backward()?;
        let g2 = (&theirs * &gy)?.sum_all()?.backward()?;
        let mut vars = vec![("x", &x), ("w", &wt)];
        if bias {
            vars.push(("b", &bv));
        }
        for (name, v) in vars {
            let a = g1.get(v).expect("grad");
            let b = g2.get(v).expect("grad");
            let d = rel_diff(a, b)?;
            assert!(d < 1e-5, "grad {name} diff {d} for {xs:?} k{k} s{s} p{p}");
        }
        Ok(())
    }

    #[test]
    fn matches_candle_conv() -> Result<()> {
        check((2, 3, 7, 5), 5, 3, 1, 1, true)?;
        check((1, 4, 6, 9), 3, 3, 2, 1, true)?;
        check((3, 5, 7, 7), 6, 3, 2, 1, false)?;
        check((2, 6, 5, 4), 7, 1, 1, 0, true)?;
        check((1, 3, 8, 6), 4, 3, 1, 0, true)?;
        check((2, 3, 9, 11), 2, 5, 1, 2, true)?;
        check((1, 2, 5, 5), 3, 1, 2, 0, true)?;
        check((2, 3, 6, 7), 4, 3, 3, 2, true)?;
        check((1, 3, 4, 4), 2, 3, 1, 3, true)?;
        Ok(())
    }

    #[test]
    fn many_bands_match() -> Result<()> {
        // Enough channels and rows that the output is split into several bands.
        check((1, 80, 40, 33), 8, 3, 1, 1, true)?;
        check((2, 70, 37, 30), 5, 3, 2, 1, true)?;
        Ok(())
    }

    #[test]
    fn input_without_grad_is_skipped() -> Result<()> {
        let x = rand(&[1, 2, 5, 5], 1, 1.0)?;
        let wt = Var::from_tensor(&rand(&[3, 2, 3, 3], 2, 0.5)?)?;
        let y = conv2d(&x, &wt, None, 1, 1)?;
        let g = y.sum_all()?.backward()?;
        assert!(g.get(&x).is_none());
        assert!(g.get(&wt).is_some());
        Ok(())
    }
}
