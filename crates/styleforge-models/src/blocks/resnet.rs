//! `ResnetBlock2D`: two norm → SiLU → conv stages with an optional time embedding.

use crate::nn::Conv2d;
use crate::nn::Linear;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::{conv2d, norm_silu, GroupNorm};

/// diffusers' `ResnetBlock2D` (default time-scale-shift: the time embedding is added).
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

/// Sizes and settings of a [`ResnetBlock2D`].
#[derive(Debug, Clone, Copy)]
pub struct ResnetConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (a 1×1 `conv_shortcut` maps the input when they differ).
    pub out_channels: usize,
    /// Width of the time embedding, `None` for the VAE's resnets.
    pub temb_channels: Option<usize>,
    /// Groups of both group norms.
    pub groups: usize,
    /// Epsilon of both group norms.
    pub eps: f64,
    /// The residual sum is divided by this.
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// Loads `norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2` and `conv_shortcut`.
    pub fn new(cfg: ResnetConfig, vb: VarBuilder) -> Result<Self> {
        let (cin, cout) = (cfg.in_channels, cfg.out_channels);
        let time_emb_proj = cfg
            .temb_channels
            .map(|t| crate::nn::linear(t, cout, vb.pp("time_emb_proj")))
            .transpose()?;
        let conv_shortcut = if cin != cout {
            Some(conv2d(cin, cout, 1, 1, 0, vb.pp("conv_shortcut"))?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::new(cfg.groups, cin, cfg.eps, vb.pp("norm1"))?,
            conv1: conv2d(cin, cout, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj,
            norm2: GroupNorm::new(cfg.groups, cout, cfg.eps, vb.pp("norm2"))?,
            conv2: conv2d(cout, cout, 3, 1, 1, vb.pp("conv2"))?,
            conv_shortcut,
            output_scale_factor: cfg.output_scale_factor,
        })
    }

    /// `x` `[b, in, h, w]`, `temb` `[b, temb_channels]` → `[b, out, h, w]`.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&norm_silu(&self.norm1, x)?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(&temb.silu()?)?.unsqueeze(2)?.unsqueeze(3)?;
            h = h.broadcast_add(&t)?;
        }
        // Reassigned rather than shadowed: the first conv's output is freed once the second
        // exists, not kept to the end (at 512 px in the VAE decoder, 128 MiB less at peak).
        h = self.conv2.forward(&norm_silu(&self.norm2, &h)?)?;
        let out = match &self.conv_shortcut {
            Some(conv) => (conv.forward(x)? + h)?,
            None => (x + h)?,
        };
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }
}
