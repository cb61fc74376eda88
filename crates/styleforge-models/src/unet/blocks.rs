//! The UNet's down, mid and up blocks.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::blocks::resnet::ResnetConfig;
use crate::blocks::transformer::TransformerConfig;
use crate::blocks::{Downsample2D, ResnetBlock2D, Transformer2DModel, Upsample2D};
use crate::nn::checkpoint::checkpoint;

/// What a block needs beyond its channels: the settings every block of a UNet shares.
#[derive(Debug, Clone, Copy)]
pub struct BlockSettings {
    /// Width of the time embedding.
    pub temb_channels: usize,
    /// Groups of every group norm.
    pub groups: usize,
    /// Epsilon of the resnets' group norms.
    pub eps: f64,
    /// Output scale of the resnets.
    pub resnet_out_scale: f64,
    /// Linear or conv projections in the spatial transformers.
    pub use_linear_projection: bool,
}

/// Cross-attention settings of one block, `None` for blocks without attention.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSettings {
    /// Attention heads.
    pub heads: usize,
    /// Width of the prompt embeddings.
    pub context_dim: usize,
    /// Transformer blocks per spatial transformer.
    pub layers: usize,
}

fn resnet(cin: usize, cout: usize, s: &BlockSettings, vb: VarBuilder) -> Result<ResnetBlock2D> {
    ResnetBlock2D::new(
        ResnetConfig {
            in_channels: cin,
            out_channels: cout,
            temb_channels: Some(s.temb_channels),
            groups: s.groups,
            eps: s.eps,
            output_scale_factor: s.resnet_out_scale,
        },
        vb,
    )
}

fn transformer(
    channels: usize,
    attn: AttentionSettings,
    s: &BlockSettings,
    vb: VarBuilder,
) -> Result<Transformer2DModel> {
    Transformer2DModel::new(
        TransformerConfig {
            channels,
            heads: attn.heads,
            context_dim: attn.context_dim,
            layers: attn.layers,
            groups: s.groups,
            use_linear_projection: s.use_linear_projection,
        },
        vb,
    )
}

/// A resnet, checkpointed when `ckpt`.
fn run_resnet(r: &ResnetBlock2D, x: &Tensor, temb: &Tensor, ckpt: bool) -> Result<Tensor> {
    if !ckpt {
        return r.forward(x, Some(temb));
    }
    let r = r.clone();
    checkpoint(&[x, temb], move |i| r.forward(&i[0], Some(&i[1])))
}

/// A spatial transformer, checkpointed when `ckpt`.
fn run_transformer(
    t: &Transformer2DModel,
    x: &Tensor,
    context: &Tensor,
    ckpt: bool,
) -> Result<Tensor> {
    if !ckpt {
        return t.forward(x, context);
    }
    let t = t.clone();
    checkpoint(&[x, context], move |i| t.forward(&i[0], &i[1]))
}

/// `CrossAttnDownBlock2D` (with `attention`) or `DownBlock2D` (without): resnets, each
/// optionally followed by a spatial transformer, then an optional stride-2 downsample.
#[derive(Debug, Clone)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
    checkpointing: bool,
}

impl DownBlock {
    /// The block's spatial transformers (none for a plain block).
    pub fn transformers_mut(&mut self) -> impl Iterator<Item = &mut Transformer2DModel> {
        self.attentions.iter_mut()
    }

    /// Recompute each resnet and transformer during backward instead of keeping their
    /// activations (see [`crate::nn::checkpoint`]).
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    /// Loads `resnets.{i}`, `attentions.{i}` and `downsamplers.0`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cin: usize,
        cout: usize,
        layers: usize,
        attention: Option<AttentionSettings>,
        downsample_padding: Option<usize>,
        s: &BlockSettings,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for i in 0..layers {
            let c = if i == 0 { cin } else { cout };
            resnets.push(resnet(c, cout, s, vb.pp("resnets").pp(i))?);
            if let Some(attn) = attention {
                attentions.push(transformer(cout, attn, s, vb.pp("attentions").pp(i))?);
            }
        }
        let downsampler = downsample_padding
            .map(|p| Downsample2D::new(cout, p, vb.pp("downsamplers").pp(0)))
            .transpose()?;
        Ok(Self {
            resnets,
            attentions,
            downsampler,
            checkpointing: false,
        })
    }

    /// Returns the block's output and the states it hands to the up path (one per resnet,
    /// plus the downsampled output).
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = x.clone();
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = run_resnet(resnet, &h, temb, self.checkpointing)?;
            if let Some(attn) = self.attentions.get(i) {
                h = run_transformer(attn, &h, context, self.checkpointing)?;
            }
            states.push(h.clone());
        }
        if let Some(down) = &self.downsampler {
            h = down.forward(&h)?;
            states.push(h.clone());
        }
        Ok((h, states))
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, spatial transformer, resnet.
#[derive(Debug, Clone)]
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    checkpointing: bool,
}

impl MidBlock {
    /// The block's spatial transformers (none for a plain block).
    pub fn transformers_mut(&mut self) -> impl Iterator<Item = &mut Transformer2DModel> {
        self.attentions.iter_mut()
    }

    /// Recompute each resnet and transformer during backward instead of keeping their
    /// activations (see [`crate::nn::checkpoint`]).
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    /// Loads `resnets.0`, `attentions.0` and `resnets.1`.
    pub fn new(
        channels: usize,
        attention: AttentionSettings,
        s: &BlockSettings,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            resnets: vec![
                resnet(channels, channels, s, vb.pp("resnets").pp(0))?,
                resnet(channels, channels, s, vb.pp("resnets").pp(1))?,
            ],
            attentions: vec![transformer(
                channels,
                attention,
                s,
                vb.pp("attentions").pp(0),
            )?],
            checkpointing: false,
        })
    }

    /// `[b, c, h, w]` → `[b, c, h, w]`.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let ckpt = self.checkpointing;
        let mut h = run_resnet(&self.resnets[0], x, temb, ckpt)?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = run_transformer(attn, &h, context, ckpt)?;
            h = run_resnet(resnet, &h, temb, ckpt)?;
        }
        Ok(h)
    }
}

/// `CrossAttnUpBlock2D` (with `attention`) or `UpBlock2D`: each resnet takes the running
/// state concatenated with one skip state from the down path, optionally followed by a
/// spatial transformer; then an optional upsample.
#[derive(Debug, Clone)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
    checkpointing: bool,
}

/// Channel counts of an [`UpBlock`].
#[derive(Debug, Clone, Copy)]
pub struct UpChannels {
    /// Channels of the down block at the same depth's input (the last skip state).
    pub skip_in: usize,
    /// Channels coming from the block below.
    pub prev_out: usize,
    /// Channels this block outputs.
    pub out: usize,
}

impl UpBlock {
    /// The block's spatial transformers (none for a plain block).
    pub fn transformers_mut(&mut self) -> impl Iterator<Item = &mut Transformer2DModel> {
        self.attentions.iter_mut()
    }

    /// Recompute each resnet and transformer during backward instead of keeping their
    /// activations (see [`crate::nn::checkpoint`]).
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    /// Loads `resnets.{i}`, `attentions.{i}` and `upsamplers.0`.
    pub fn new(
        ch: UpChannels,
        layers: usize,
        attention: Option<AttentionSettings>,
        add_upsample: bool,
        s: &BlockSettings,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for i in 0..layers {
            let skip = if i == layers - 1 { ch.skip_in } else { ch.out };
            let running = if i == 0 { ch.prev_out } else { ch.out };
            resnets.push(resnet(running + skip, ch.out, s, vb.pp("resnets").pp(i))?);
            if let Some(attn) = attention {
                attentions.push(transformer(ch.out, attn, s, vb.pp("attentions").pp(i))?);
            }
        }
        let upsampler = add_upsample
            .then(|| Upsample2D::new(ch.out, vb.pp("upsamplers").pp(0)))
            .transpose()?;
        Ok(Self {
            resnets,
            attentions,
            upsampler,
            checkpointing: false,
        })
    }

    /// How many skip states the block consumes.
    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` are consumed from the last; `upsample_size` is the spatial size of the next
    /// skip state, so latents whose sides are not powers of two line up again.
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        context: &Tensor,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - 1 - i];
            let input = Tensor::cat(&[&h, skip], 1)?;
            h = run_resnet(resnet, &input, temb, self.checkpointing)?;
            if let Some(attn) = self.attentions.get(i) {
                h = run_transformer(attn, &h, context, self.checkpointing)?;
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(&h, upsample_size),
            None => Ok(h),
        }
    }
}
