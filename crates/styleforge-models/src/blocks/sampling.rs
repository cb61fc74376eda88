//! `Downsample2D` (strided conv) and `Upsample2D` (nearest resize + conv).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::Conv2d;

use crate::nn::{conv2d, upsample_nearest};

/// Halves height and width with a stride-2 3×3 convolution (`conv`).
///
/// With `padding = 0` (the VAE encoder) the input is first padded by one on the right and
/// bottom only, as diffusers does.
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
    asymmetric_pad: bool,
}

impl Downsample2D {
    /// Loads `conv` `[channels, channels, 3, 3]`.
    pub fn new(channels: usize, padding: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, 2, padding, vb.pp("conv"))?,
            asymmetric_pad: padding == 0,
        })
    }
}

impl Module for Downsample2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.asymmetric_pad {
            let x = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Doubles height and width (or resizes to a given size) by nearest neighbour, then a 3×3
/// convolution (`conv`).
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    /// Loads `conv` `[channels, channels, 3, 3]`.
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, 1, 1, vb.pp("conv"))?,
        })
    }

    /// `x` `[b, c, h, w]` → `[b, c, size]`, `size` defaulting to `(2h, 2w)`.
    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (oh, ow) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&upsample_nearest(x, oh, ow)?)
    }
}
