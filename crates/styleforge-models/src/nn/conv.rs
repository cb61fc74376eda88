//! 2-D convolution whose backward pass is right for every input size.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::kernels;

/// A 2-D convolution with bias (`weight` `[out, in, k, k]`, `bias` `[out]`).
///
/// candle derives a strided convolution's input gradient with a transposed convolution
/// whose output padding it takes from the height alone; when height and width leave
/// different remainders (a 6×5 latent), the gradient comes out with the wrong shape. Such
/// inputs are padded with zero columns/rows on the far side first: the convolution read
/// zeros there anyway, so the output is unchanged, and both sides then leave the same
/// remainder.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads `weight` and `bias` for a square `kernel`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out_channels, in_channels, kernel, kernel), "weight")?,
            bias: Some(vb.get(out_channels, "bias")?),
            stride,
            padding,
        })
    }

    /// The kernel `[out, in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Zero rows/columns to add at the far side so the last output position is unchanged
    /// and the remainder `(size + 2p - k) mod stride` is `stride - 1`.
    fn far_pad(&self, size: usize, kernel: usize) -> usize {
        let span = size + 2 * self.padding;
        if self.stride == 1 || span < kernel {
            return 0;
        }
        let rem = (span - kernel) % self.stride;
        self.stride - 1 - rem
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let (Ok((n, _, h, w)), Ok((cout, cin, kh, kw))) = (x.dims4(), self.weight.dims4()) {
            let out =
                |len: usize, k: usize| (len + 2 * self.padding).saturating_sub(k) / self.stride + 1;
            super::flops::add_matmul(n * out(h, kh) * out(w, kw), cin * kh * kw, cout);
        }
        if kernels::use_cpu_kernels(x) && self.weight.dtype() == x.dtype() {
            let bias = self.bias.as_ref();
            return kernels::conv::conv2d(x, &self.weight, bias, self.stride, self.padding);
        }
        self.forward_plain(x)
    }
}

impl Conv2d {
    /// candle's convolution plus a broadcast bias (used off the CPU).
    pub fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let k = self.weight.dim(2)?;
        let (ph, pw) = (self.far_pad(h, k), self.far_pad(w, k));
        let x = if ph > 0 || pw > 0 {
            x.pad_with_zeros(2, 0, ph)?.pad_with_zeros(3, 0, pw)?
        } else {
            x.clone()
        };
        let out = if super::bf16_on_cpu(&x) {
            // No bf16 convolution on the CPU (it is a matrix product): through f32.
            let f = |t: &Tensor| t.to_dtype(DType::F32);
            f(&x)?
                .conv2d(&f(&self.weight)?, self.padding, self.stride, 1, 1)?
                .to_dtype(DType::BF16)?
        } else {
            x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
        };
        match &self.bias {
            Some(b) => out.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(out),
        }
    }
}
