//! Layers shared by the UNet, the VAE and the CLIP text encoder.
//!
//! candle-nn's fused `layer_norm` and `softmax_last_dim` have no backward pass, so a model
//! built on them silently stops gradients. Everything here is composed from ops that carry
//! their backward, and is tested for it.

pub mod attention;
pub mod checkpoint;
pub mod conv;
pub mod flops;
pub mod kernels;
pub mod linear;
pub mod norm;
pub mod resample;

pub use attention::{softmax_last_dim, Attention};
pub use conv::Conv2d;
pub use linear::{linear, linear_no_bias, Linear};
pub use norm::{GroupNorm, LayerNorm};
pub use resample::upsample_nearest;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

/// A square `k×k` convolution with bias, loaded from `weight` `[out, in, k, k]` and
/// `bias` `[out]`.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Conv2d::new(in_channels, out_channels, kernel, stride, padding, vb)
}

/// Whether `x` is bf16 on the CPU, where candle has no matrix product (and so no
/// convolution) for bf16: such products run in f32 and are rounded back to bf16 once, as
/// bf16 GPU kernels accumulate in f32 too.
pub(crate) fn bf16_on_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::BF16
}

/// `a · b` (candle's `matmul`), through f32 for bf16 on the CPU, where candle has no bf16
/// matrix product.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if bf16_on_cpu(a) {
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        return f(a)?.matmul(&f(b)?)?.to_dtype(DType::BF16);
    }
    a.matmul(b)
}

/// SiLU, `x · sigmoid(x)`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.silu()
}

/// Group norm then SiLU, a pairing the resnets use everywhere (one fused pass on the CPU).
pub fn norm_silu(norm: &GroupNorm, x: &Tensor) -> Result<Tensor> {
    norm.forward_silu(x)
}
