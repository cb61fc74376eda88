//! `UNet2DConditionModel`: predicts the noise (or velocity) in a latent, conditioned on a
//! timestep per sample and on the prompt's text embeddings.

pub mod blocks;
pub mod config;
pub mod embeddings;

use std::path::Path;

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::nn::Conv2d;

pub use config::{DownBlockType, UNetConfig, UpBlockType};

use crate::error::{ModelError, Result};
use crate::nn::{conv2d, norm_silu, Attention, GroupNorm};
use blocks::{AttentionSettings, BlockSettings, DownBlock, MidBlock, UpBlock, UpChannels};
use embeddings::{timestep_features, TimestepEmbedding};

/// The Stable Diffusion UNet, as diffusers' `UNet2DConditionModel` for SD 1.x / 2.x configs.
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    config: UNetConfig,
    gradient_checkpointing: bool,
}

impl UNet2DConditionModel {
    /// Builds the UNet from `vb` (diffusers key names, no prefix). Configs read with
    /// [`crate::config::read_config`] / [`crate::config::parse_config`] are checked there,
    /// with errors that name their file.
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        let cfg = config;
        let config_path = Path::new("unet/config.json");
        let n = cfg.block_out_channels.len();
        let ch = &cfg.block_out_channels;
        let heads = cfg.heads_per_block(config_path)?;
        let layers = cfg
            .layers_per_block
            .per_block(n, "layers_per_block", config_path)?;
        let context = cfg
            .cross_attention_dim
            .per_block(n, "cross_attention_dim", config_path)?;
        let t_layers = cfg.transformer_layers_per_block.per_block(
            n,
            "transformer_layers_per_block",
            config_path,
        )?;
        let groups = cfg.norm_num_groups.unwrap_or(32);
        let settings = BlockSettings {
            temb_channels: cfg.time_embed_dim(),
            groups,
            eps: cfg.norm_eps,
            resnet_out_scale: cfg.resnet_out_scale_factor,
            use_linear_projection: cfg.use_linear_projection,
        };
        let attn = |i: usize| AttentionSettings {
            heads: heads[i],
            context_dim: context[i],
            layers: t_layers[i],
        };

        let conv_in = conv2d(
            cfg.in_channels,
            ch[0],
            cfg.conv_in_kernel,
            1,
            (cfg.conv_in_kernel - 1) / 2,
            vb.pp("conv_in"),
        )?;
        let time_embedding =
            TimestepEmbedding::new(ch[0], cfg.time_embed_dim(), vb.pp("time_embedding"))?;

        let mut down_blocks = Vec::with_capacity(n);
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let cin = if i == 0 { ch[0] } else { ch[i - 1] };
            let attention = (*kind == DownBlockType::CrossAttnDownBlock2D).then(|| attn(i));
            let downsample = (i + 1 < n).then_some(cfg.downsample_padding);
            down_blocks.push(DownBlock::new(
                cin,
                ch[i],
                layers[i],
                attention,
                downsample,
                &settings,
                vb.pp("down_blocks").pp(i),
            )?);
        }

        let mid_settings = BlockSettings {
            resnet_out_scale: cfg.mid_block_scale_factor,
            ..settings
        };
        let mid_block = MidBlock::new(ch[n - 1], attn(n - 1), &mid_settings, vb.pp("mid_block"))?;

        let mut up_blocks = Vec::with_capacity(n);
        let mut out = ch[n - 1];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let depth = n - 1 - i;
            let prev_out = out;
            out = ch[depth];
            let skip_in = ch[depth.saturating_sub(1)];
            let attention = (*kind == UpBlockType::CrossAttnUpBlock2D).then(|| attn(depth));
            up_blocks.push(UpBlock::new(
                UpChannels {
                    skip_in,
                    prev_out,
                    out,
                },
                layers[depth] + 1,
                attention,
                i + 1 < n,
                &settings,
                vb.pp("up_blocks").pp(i),
            )?);
        }

        let conv_norm_out = GroupNorm::new(groups, ch[0], cfg.norm_eps, vb.pp("conv_norm_out"))?;
        let conv_out = conv2d(
            ch[0],
            cfg.out_channels,
            cfg.conv_out_kernel,
            1,
            (cfg.conv_out_kernel - 1) / 2,
            vb.pp("conv_out"),
        )?;
        Ok(Self {
            conv_in,
            time_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            config: cfg.clone(),
            gradient_checkpointing: false,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Gradient checkpointing (diffusers' `enable_gradient_checkpointing`): every resnet
    /// and spatial transformer of the down, mid and up blocks keeps only its inputs in the
    /// forward pass and is recomputed during backward, which then needs
    /// [`crate::nn::checkpoint::backward`]. Same gradients, less memory, ~30% more compute.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        for b in &mut self.down_blocks {
            b.set_gradient_checkpointing(on);
        }
        self.mid_block.set_gradient_checkpointing(on);
        for b in &mut self.up_blocks {
            b.set_gradient_checkpointing(on);
        }
        self.gradient_checkpointing = on;
    }

    /// Whether gradient checkpointing is on.
    pub fn gradient_checkpointing(&self) -> bool {
        self.gradient_checkpointing
    }

    /// The dtype the model computes in (its weights'); [`Self::forward`] casts its inputs
    /// to it.
    pub fn dtype(&self) -> DType {
        self.conv_in.weight().dtype()
    }

    /// Every cross-attention (`attn2`) layer, down, mid and up, in that order.
    pub fn cross_attentions_mut(&mut self) -> impl Iterator<Item = &mut Attention> {
        let down = self
            .down_blocks
            .iter_mut()
            .flat_map(|b| b.transformers_mut());
        let mid = self.mid_block.transformers_mut();
        let up = self.up_blocks.iter_mut().flat_map(|b| b.transformers_mut());
        down.chain(mid)
            .chain(up)
            .flat_map(|t| t.blocks_mut())
            .map(|b| b.cross_attention_mut())
    }

    /// Predicts the model output for noisy latents.
    ///
    /// - `sample` `[b, in_channels, h, w]`: any `h`, `w` (not only multiples of `2^downsamples`).
    /// - `timesteps` `[b]` (one per sample) or `[]`/`[1]` (shared by the batch), any float dtype.
    /// - `encoder_hidden_states` `[b, tokens, cross_attention_dim]`.
    ///
    /// Inputs in another float dtype are cast to [`Self::dtype`]. Returns
    /// `[b, out_channels, h, w]` in that dtype.
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        let dtype = self.dtype();
        let sample = &sample.to_dtype(dtype)?;
        let encoder_hidden_states = &encoder_hidden_states.to_dtype(dtype)?;
        let (b, c, _, _) = sample.dims4().map_err(|_| {
            ModelError::BadInput(format!(
                "UNet sample must be [batch, channels, height, width], got {:?}",
                sample.dims()
            ))
        })?;
        if c != self.config.in_channels {
            return Err(ModelError::BadInput(format!(
                "UNet expects {} latent channels, got {c}",
                self.config.in_channels
            )));
        }
        let context_dim = self.config.context_dim();
        match encoder_hidden_states.dims() {
            [cb, _, d] if *cb == b && *d == context_dim => {}
            other => {
                return Err(ModelError::BadInput(format!(
                    "UNet encoder_hidden_states must be [{b}, tokens, {context_dim}], got {other:?}"
                )))
            }
        }
        let timesteps = match timesteps.elem_count() {
            1 => timesteps.reshape(1)?.broadcast_as(b)?.contiguous()?,
            n if n == b => timesteps.reshape(b)?,
            n => {
                return Err(ModelError::BadInput(format!(
                    "UNet got {n} timesteps for a batch of {b}: give one per sample or one for all"
                )))
            }
        };

        let features = timestep_features(
            &timesteps,
            self.config.block_out_channels[0],
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
        )?
        .to_dtype(sample.dtype())?;
        let temb = self.time_embedding.forward(&features)?;

        let sample = if self.config.center_input_sample {
            ((sample * 2.0)? - 1.0)?
        } else {
            sample.clone()
        };
        let mut h = self.conv_in.forward(&sample)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward(&h, &temb, encoder_hidden_states)?;
            h = out;
            skips.extend(states);
        }
        h = self.mid_block.forward(&h, &temb, encoder_hidden_states)?;
        for block in &self.up_blocks {
            let used = block.num_skips();
            let rest = skips.len() - used;
            let upsample_size = skips
                .get(rest.wrapping_sub(1))
                .filter(|_| rest > 0)
                .map(|s| (s.dim(2), s.dim(3)))
                .map(|(a, b)| -> candle_core::Result<_> { Ok((a?, b?)) })
                .transpose()?;
            h = block.forward(
                &h,
                &skips[rest..],
                &temb,
                encoder_hidden_states,
                upsample_size,
            )?;
            skips.truncate(rest);
        }
        let h = norm_silu(&self.conv_norm_out, &h)?;
        Ok(self.conv_out.forward(&h)?)
    }
}
