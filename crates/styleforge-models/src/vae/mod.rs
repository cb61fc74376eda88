//! `AutoencoderKL`: encodes images to a diagonal Gaussian over latents and decodes latents
//! back to images. Frozen during StyleForge training; latents are cached once per image.

pub mod config;

use crate::nn::Conv2d;
use crate::nn::Linear;
use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

pub use config::VaeConfig;

use crate::blocks::resnet::ResnetConfig;
use crate::blocks::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::error::{ModelError, Result};
use crate::nn::attention::{
    merge_heads, scaled_dot_product_attention, split_heads, statistics_dtype,
};
use crate::nn::{conv2d, norm_silu, GroupNorm};

const EPS: f64 = 1e-6;

fn vae_resnet(
    cin: usize,
    cout: usize,
    groups: usize,
    vb: VarBuilder,
) -> candle_core::Result<ResnetBlock2D> {
    ResnetBlock2D::new(
        ResnetConfig {
            in_channels: cin,
            out_channels: cout,
            temb_channels: None,
            groups,
            eps: EPS,
            output_scale_factor: 1.0,
        },
        vb,
    )
}

/// Single-head self-attention over all pixels with its own group norm and a residual, as in
/// the VAE's mid blocks (diffusers `Attention` with `group_norm`, biased projections).
#[derive(Debug, Clone)]
struct SpatialSelfAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    channels: usize,
}

impl SpatialSelfAttention {
    fn new(channels: usize, groups: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            group_norm: GroupNorm::new(groups, channels, EPS, vb.pp("group_norm"))?,
            to_q: crate::nn::linear(channels, channels, vb.pp("to_q"))?,
            to_k: crate::nn::linear(channels, channels, vb.pp("to_k"))?,
            to_v: crate::nn::linear(channels, channels, vb.pp("to_v"))?,
            to_out: crate::nn::linear(channels, channels, vb.pp("to_out").pp("0"))?,
            channels,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = self.group_norm.forward(x)?;
        let tokens = normed
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = split_heads(&self.to_q.forward(&tokens)?, 1)?;
        let k = split_heads(&self.to_k.forward(&tokens)?, 1)?;
        let v = split_heads(&self.to_v.forward(&tokens)?, 1)?;
        let scale = (self.channels as f64).powf(-0.5);
        let out = scaled_dot_product_attention(&q, &k, &v, scale, None)?;
        let out = self.to_out.forward(&merge_heads(&out)?)?;
        let out = out.transpose(1, 2)?.reshape((b, c, h, w))?;
        out + x
    }
}

/// The VAE's mid block: resnet, optional attention, resnet (no time embedding).
#[derive(Debug, Clone)]
struct VaeMidBlock {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<SpatialSelfAttention>,
}

impl VaeMidBlock {
    fn new(
        channels: usize,
        groups: usize,
        attention: bool,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            resnets: vec![
                vae_resnet(channels, channels, groups, vb.pp("resnets").pp(0))?,
                vae_resnet(channels, channels, groups, vb.pp("resnets").pp(1))?,
            ],
            attention: attention
                .then(|| SpatialSelfAttention::new(channels, groups, vb.pp("attentions").pp(0)))
                .transpose()?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.resnets[0].forward(x, None)?;
        if let Some(attn) = &self.attention {
            h = attn.forward(&h)?;
        }
        self.resnets[1].forward(&h, None)
    }
}

/// Image → latent moments (mean and log-variance, concatenated on channels).
#[derive(Debug, Clone)]
struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    mid_block: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(cfg: &VaeConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let g = cfg.norm_num_groups;
        let mut down_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let vbi = vb.pp("down_blocks").pp(i);
            let cin = if i == 0 { ch[0] } else { ch[i - 1] };
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    let c = if j == 0 { cin } else { ch[i] };
                    vae_resnet(c, ch[i], g, vbi.pp("resnets").pp(j))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let down = (i + 1 < n)
                .then(|| Downsample2D::new(ch[i], 0, vbi.pp("downsamplers").pp(0)))
                .transpose()?;
            down_blocks.push((resnets, down));
        }
        Ok(Self {
            conv_in: conv2d(cfg.in_channels, ch[0], 3, 1, 1, vb.pp("conv_in"))?,
            down_blocks,
            mid_block: VaeMidBlock::new(
                ch[n - 1],
                g,
                cfg.mid_block_add_attention,
                vb.pp("mid_block"),
            )?,
            conv_norm_out: GroupNorm::new(g, ch[n - 1], EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(
                ch[n - 1],
                2 * cfg.latent_channels,
                3,
                1,
                1,
                vb.pp("conv_out"),
            )?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for (resnets, down) in &self.down_blocks {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(d) = down {
                h = d.forward(&h)?;
            }
        }
        h = self.mid_block.forward(&h)?;
        self.conv_out.forward(&norm_silu(&self.conv_norm_out, &h)?)
    }
}

/// Latent → image.
#[derive(Debug, Clone)]
struct Decoder {
    conv_in: Conv2d,
    mid_block: VaeMidBlock,
    up_blocks: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(cfg: &VaeConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let g = cfg.norm_num_groups;
        let mut up_blocks = Vec::with_capacity(n);
        let mut out = ch[n - 1];
        for i in 0..n {
            let vbi = vb.pp("up_blocks").pp(i);
            let prev = out;
            out = ch[n - 1 - i];
            let resnets = (0..cfg.layers_per_block + 1)
                .map(|j| {
                    let c = if j == 0 { prev } else { out };
                    vae_resnet(c, out, g, vbi.pp("resnets").pp(j))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let up = (i + 1 < n)
                .then(|| Upsample2D::new(out, vbi.pp("upsamplers").pp(0)))
                .transpose()?;
            up_blocks.push((resnets, up));
        }
        Ok(Self {
            conv_in: conv2d(cfg.latent_channels, ch[n - 1], 3, 1, 1, vb.pp("conv_in"))?,
            mid_block: VaeMidBlock::new(
                ch[n - 1],
                g,
                cfg.mid_block_add_attention,
                vb.pp("mid_block"),
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::new(g, ch[0], EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(ch[0], cfg.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.conv_in.forward(z)?;
        h = self.mid_block.forward(&h)?;
        for (resnets, up) in &self.up_blocks {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(u) = up {
                h = u.forward(&h, None)?;
            }
        }
        self.conv_out.forward(&norm_silu(&self.conv_norm_out, &h)?)
    }
}

/// The encoder's output: a diagonal Gaussian over latents.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    /// Mean `[b, latent_channels, h, w]`.
    pub mean: Tensor,
    /// Log-variance, clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor,
}

impl DiagonalGaussian {
    /// Standard deviation `exp(logvar / 2)`.
    pub fn std(&self) -> Result<Tensor> {
        Ok((&self.logvar * 0.5)?.exp()?)
    }

    /// A draw `mean + std · noise`, with `noise` standard normal of the mean's shape.
    pub fn sample_with(&self, noise: &Tensor) -> Result<Tensor> {
        Ok((&self.mean + self.std()?.mul(noise)?)?)
    }
}

/// diffusers' `AutoencoderKL` (the SD VAE).
#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    config: VaeConfig,
}

impl AutoencoderKL {
    /// Builds the VAE from `vb` (diffusers key names, no prefix).
    pub fn new(config: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let l = config.latent_channels;
        Ok(Self {
            encoder: Encoder::new(config, vb.pp("encoder"))?,
            decoder: Decoder::new(config, vb.pp("decoder"))?,
            quant_conv: config
                .use_quant_conv
                .then(|| conv2d(2 * l, 2 * l, 1, 1, 0, vb.pp("quant_conv")))
                .transpose()?,
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| conv2d(l, l, 1, 1, 0, vb.pp("post_quant_conv")))
                .transpose()?,
            config: config.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype the model computes in (its weights'); inputs are cast to it.
    pub fn dtype(&self) -> DType {
        self.decoder.conv_in.weight().dtype()
    }

    /// Images `[b, in_channels, H, W]` in [-1, 1] → the latent distribution (in f32 for a
    /// half-precision model). `H` and `W` must be multiples of
    /// [`VaeConfig::downscale_factor`].
    pub fn encode(&self, images: &Tensor) -> Result<DiagonalGaussian> {
        let f = self.config.downscale_factor();
        match images.dims() {
            [_, c, h, w] if *c == self.config.in_channels && h % f == 0 && w % f == 0 => {}
            other => {
                return Err(ModelError::BadInput(format!(
                "VAE encode expects [batch, {}, H, W] with H and W multiples of {f}, got {other:?}",
                self.config.in_channels
            )))
            }
        }
        let mut moments = self.encoder.forward(&images.to_dtype(self.dtype())?)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments)?;
        }
        // Latents are kept in f32: a half-precision model's moments are upcast.
        let moments = moments.to_dtype(statistics_dtype(moments.dtype()))?;
        let halves = moments.chunk(2, 1)?;
        Ok(DiagonalGaussian {
            mean: halves[0].clone(),
            logvar: halves[1].clamp(-30f32, 20f32)?,
        })
    }

    /// Latents `[b, latent_channels, h, w]` (unscaled: divide the UNet's latents by
    /// [`Self::scaling_factor`] first) → images `[b, out_channels, h·f, w·f]` in about [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        match latents.dims() {
            [_, c, _, _] if *c == self.config.latent_channels => {}
            other => {
                return Err(ModelError::BadInput(format!(
                    "VAE decode expects [batch, {}, h, w], got {other:?}",
                    self.config.latent_channels
                )))
            }
        }
        let latents = latents.to_dtype(self.dtype())?;
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(&latents)?,
            None => latents,
        };
        Ok(self.decoder.forward(&z)?)
    }

    /// The factor between VAE latents and the latents the UNet is trained on.
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// Pixels per latent cell along each side.
    pub fn downscale_factor(&self) -> usize {
        self.config.downscale_factor()
    }
}
