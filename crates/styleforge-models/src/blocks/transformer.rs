//! `Transformer2DModel`: the spatial transformer that lets the UNet attend to the prompt.

use crate::nn::Conv2d;
use crate::nn::Linear;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::{conv2d, kernels, Attention, GroupNorm, LayerNorm};

/// GEGLU feed-forward (`ff.net.0.proj` to twice the inner width, exact-erf GELU gate,
/// `ff.net.2` back). diffusers uses the exact GELU here; the tanh form is off by ~1e-4.
#[derive(Debug, Clone)]
struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
}

impl FeedForward {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj_in: crate::nn::linear(dim, inner * 2, vb.pp("net").pp("0").pp("proj"))?,
            proj_out: crate::nn::linear(inner, dim, vb.pp("net").pp("2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let projected = self.proj_in.forward(x)?;
        if kernels::use_cpu_kernels(&projected) {
            return self.proj_out.forward(&kernels::geglu::geglu(&projected)?);
        }
        let chunks = projected.chunk(2, candle_core::D::Minus1)?;
        let gated = (&chunks[0] * chunks[1].gelu_erf()?)?;
        self.proj_out.forward(&gated)
    }
}

/// diffusers' `BasicTransformerBlock`: self-attention, cross-attention to the prompt and a
/// GEGLU feed-forward, each pre-normed with a layer norm and added back.
#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    /// Loads `norm1..3`, `attn1`, `attn2` and `ff` for width `dim`.
    pub fn new(
        dim: usize,
        heads: usize,
        head_dim: usize,
        context_dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::new(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(dim, None, heads, head_dim, false, vb.pp("attn1"))?,
            norm2: LayerNorm::new(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(
                dim,
                Some(context_dim),
                heads,
                head_dim,
                false,
                vb.pp("attn2"),
            )?,
            norm3: LayerNorm::new(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(dim, vb.pp("ff"))?,
        })
    }

    /// The cross-attention to the prompt (`attn2`).
    pub fn cross_attention_mut(&mut self) -> &mut Attention {
        &mut self.attn2
    }

    /// `x` `[b, n, dim]`, `context` `[b, m, context_dim]` → `[b, n, dim]`.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context))?
            + &x)?;
        self.ff.forward(&self.norm3.forward(&x)?)? + &x
    }
}

/// The input/output projection: a linear layer on tokens (SD 2.x,
/// `use_linear_projection`) or a 1×1 convolution on the feature map (SD 1.x).
#[derive(Debug, Clone)]
enum Projection {
    Linear(Linear),
    Conv(Conv2d),
}

/// Settings of a [`Transformer2DModel`].
#[derive(Debug, Clone, Copy)]
pub struct TransformerConfig {
    /// Channels of the feature map (and width of the tokens).
    pub channels: usize,
    /// Attention heads; the head width is `channels / heads`.
    pub heads: usize,
    /// Width of the prompt embeddings.
    pub context_dim: usize,
    /// Transformer blocks stacked inside.
    pub layers: usize,
    /// Groups of the input group norm.
    pub groups: usize,
    /// Linear (`true`) or 1×1 convolution (`false`) input/output projections.
    pub use_linear_projection: bool,
}

/// diffusers' `Transformer2DModel` for continuous inputs: group norm, projection in, a stack
/// of [`BasicTransformerBlock`]s over the `h·w` tokens, projection out, residual.
#[derive(Debug, Clone)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    /// Loads `norm`, `proj_in`, `transformer_blocks.{i}` and `proj_out`.
    pub fn new(cfg: TransformerConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.channels;
        if cfg.heads == 0 || !c.is_multiple_of(cfg.heads) {
            candle_core::bail!(
                "`{}`: {c} channels cannot be split into {} attention heads",
                vb.prefix(),
                cfg.heads
            );
        }
        let projection = |name: &str| -> Result<Projection> {
            Ok(if cfg.use_linear_projection {
                Projection::Linear(crate::nn::linear(c, c, vb.pp(name))?)
            } else {
                Projection::Conv(conv2d(c, c, 1, 1, 0, vb.pp(name))?)
            })
        };
        let transformer_blocks = (0..cfg.layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    c,
                    cfg.heads,
                    c / cfg.heads,
                    cfg.context_dim,
                    vb.pp("transformer_blocks").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::new(cfg.groups, c, 1e-6, vb.pp("norm"))?,
            proj_in: projection("proj_in")?,
            transformer_blocks,
            proj_out: projection("proj_out")?,
        })
    }

    /// The stacked transformer blocks, for adjusting their attention.
    pub fn blocks_mut(&mut self) -> impl Iterator<Item = &mut BasicTransformerBlock> {
        self.transformer_blocks.iter_mut()
    }

    /// `x` `[b, c, h, w]`, `context` `[b, m, context_dim]` → `[b, c, h, w]`.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let to_tokens = |t: &Tensor| t.permute((0, 2, 3, 1))?.reshape((b, h * w, c));
        let mut tokens = match &self.proj_in {
            Projection::Linear(l) => l.forward(&to_tokens(&normed)?)?,
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
        };
        for block in &self.transformer_blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let to_map = |t: &Tensor| t.reshape((b, h, w, c))?.permute((0, 3, 1, 2));
        let out = match &self.proj_out {
            Projection::Linear(l) => to_map(&l.forward(&tokens)?)?,
            Projection::Conv(conv) => conv.forward(&to_map(&tokens)?.contiguous()?)?,
        };
        out + x
    }
}
