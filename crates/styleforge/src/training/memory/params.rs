//! The parameter inventory of the three models, tensor by tensor, as their configs build
//! them: what the estimate counts for weights, gradients and optimizer states.

use styleforge_models::clip_text::ClipTextConfig;
use styleforge_models::unet::{DownBlockType, UNetConfig, UpBlockType};
use styleforge_models::vae::VaeConfig;

use std::path::Path;

use crate::error::Result;

/// One parameter tensor, with what adapters care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Other,
    /// A UNet attention projection (LoRA target); `cross_kv` for cross-attention K/V.
    UnetAttention {
        cross_kv: bool,
    },
    /// A text-encoder attention projection (LoRA target).
    TextAttention,
    /// The text encoder's token table.
    TokenTable,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Param {
    pub(super) elems: u64,
    /// `(in, out)` of a linear weight.
    pub(super) linear: Option<(u64, u64)>,
    pub(super) role: Role,
}

pub(super) fn p(elems: usize) -> Param {
    Param {
        elems: elems as u64,
        linear: None,
        role: Role::Other,
    }
}

/// A linear layer's weight (with `role`) and optional bias.
pub(super) fn linear(out: &mut Vec<Param>, i: usize, o: usize, bias: bool, role: Role) {
    out.push(Param {
        elems: (i * o) as u64,
        linear: Some((i as u64, o as u64)),
        role,
    });
    if bias {
        out.push(p(o));
    }
}

pub(super) fn conv(out: &mut Vec<Param>, i: usize, o: usize, k: usize) {
    out.push(p(i * o * k * k));
    out.push(p(o));
}

pub(super) fn norm(out: &mut Vec<Param>, c: usize) {
    out.push(p(c));
    out.push(p(c));
}

pub(super) fn resnet_params(out: &mut Vec<Param>, cin: usize, cout: usize, temb: Option<usize>) {
    norm(out, cin);
    conv(out, cin, cout, 3);
    if let Some(t) = temb {
        linear(out, t, cout, true, Role::Other);
    }
    norm(out, cout);
    conv(out, cout, cout, 3);
    if cin != cout {
        conv(out, cin, cout, 1);
    }
}

pub(super) fn transformer_params(out: &mut Vec<Param>, c: usize, context: usize, layers: usize) {
    norm(out, c);
    linear(out, c, c, true, Role::Other); // proj_in (1×1 conv or linear: same count)
    let attn = |cross_kv| Role::UnetAttention { cross_kv };
    for _ in 0..layers {
        norm(out, c);
        for _ in 0..3 {
            linear(out, c, c, false, attn(false));
        }
        linear(out, c, c, true, attn(false));
        norm(out, c);
        linear(out, c, c, false, attn(false));
        linear(out, context, c, false, attn(true));
        linear(out, context, c, false, attn(true));
        linear(out, c, c, true, attn(false));
        norm(out, c);
        linear(out, c, 8 * c, true, Role::Other);
        linear(out, 4 * c, c, true, Role::Other);
    }
    linear(out, c, c, true, Role::Other); // proj_out
}

/// Per-block settings of a UNet config.
pub(super) struct UNetShape {
    pub(super) ch: Vec<usize>,
    pub(super) layers: Vec<usize>,
    pub(super) heads: Vec<usize>,
    pub(super) context: Vec<usize>,
    pub(super) t_layers: Vec<usize>,
}

pub(super) fn unet_shape(cfg: &UNetConfig) -> Result<UNetShape> {
    let path = Path::new("unet/config.json");
    let n = cfg.block_out_channels.len();
    Ok(UNetShape {
        ch: cfg.block_out_channels.clone(),
        layers: cfg
            .layers_per_block
            .per_block(n, "layers_per_block", path)?,
        heads: cfg.heads_per_block(path)?,
        context: cfg
            .cross_attention_dim
            .per_block(n, "cross_attention_dim", path)?,
        t_layers: cfg.transformer_layers_per_block.per_block(
            n,
            "transformer_layers_per_block",
            path,
        )?,
    })
}

/// Up block `i`'s resnets: `(in, out)` channels, as the UNet builds them.
pub(super) fn up_resnets(s: &UNetShape, i: usize) -> (usize, Vec<(usize, usize)>) {
    let n = s.ch.len();
    let depth = n - 1 - i;
    let prev_out = if i == 0 { s.ch[n - 1] } else { s.ch[depth + 1] };
    let out = s.ch[depth];
    let skip_in = s.ch[depth.saturating_sub(1)];
    let layers = s.layers[depth] + 1;
    let list = (0..layers)
        .map(|j| {
            let skip = if j == layers - 1 { skip_in } else { out };
            let running = if j == 0 { prev_out } else { out };
            (running + skip, out)
        })
        .collect();
    (depth, list)
}

pub(super) fn unet_params(cfg: &UNetConfig) -> Result<Vec<Param>> {
    let s = unet_shape(cfg)?;
    let n = s.ch.len();
    let temb = cfg.time_embed_dim();
    let mut out = Vec::new();
    conv(&mut out, cfg.in_channels, s.ch[0], cfg.conv_in_kernel);
    linear(&mut out, s.ch[0], temb, true, Role::Other);
    linear(&mut out, temb, temb, true, Role::Other);
    for (i, kind) in cfg.down_block_types.iter().enumerate() {
        let cin = if i == 0 { s.ch[0] } else { s.ch[i - 1] };
        for j in 0..s.layers[i] {
            resnet_params(
                &mut out,
                if j == 0 { cin } else { s.ch[i] },
                s.ch[i],
                Some(temb),
            );
            if *kind == DownBlockType::CrossAttnDownBlock2D {
                transformer_params(&mut out, s.ch[i], s.context[i], s.t_layers[i]);
            }
        }
        if i + 1 < n {
            conv(&mut out, s.ch[i], s.ch[i], 3);
        }
    }
    let c = s.ch[n - 1];
    resnet_params(&mut out, c, c, Some(temb));
    transformer_params(&mut out, c, s.context[n - 1], s.t_layers[n - 1]);
    resnet_params(&mut out, c, c, Some(temb));
    for (i, kind) in cfg.up_block_types.iter().enumerate() {
        let (depth, resnets) = up_resnets(&s, i);
        for (cin, cout) in resnets {
            resnet_params(&mut out, cin, cout, Some(temb));
            if *kind == UpBlockType::CrossAttnUpBlock2D {
                transformer_params(&mut out, cout, s.context[depth], s.t_layers[depth]);
            }
        }
        if i + 1 < n {
            conv(&mut out, s.ch[depth], s.ch[depth], 3);
        }
    }
    norm(&mut out, s.ch[0]);
    conv(&mut out, s.ch[0], cfg.out_channels, cfg.conv_out_kernel);
    Ok(out)
}

pub(super) fn text_encoder_params(cfg: &ClipTextConfig) -> Vec<Param> {
    let d = cfg.hidden_size;
    let mut out = vec![
        Param {
            elems: (cfg.vocab_size * d) as u64,
            linear: None,
            role: Role::TokenTable,
        },
        p(cfg.max_position_embeddings * d),
    ];
    for _ in 0..cfg.num_hidden_layers {
        norm(&mut out, d);
        for _ in 0..4 {
            linear(&mut out, d, d, true, Role::TextAttention);
        }
        norm(&mut out, d);
        linear(&mut out, d, cfg.intermediate_size, true, Role::Other);
        linear(&mut out, cfg.intermediate_size, d, true, Role::Other);
    }
    norm(&mut out, d);
    out
}

pub(super) fn vae_params(cfg: &VaeConfig) -> Vec<Param> {
    let ch = &cfg.block_out_channels;
    let n = ch.len();
    let l = cfg.latent_channels;
    let mut out = Vec::new();
    let mid = |out: &mut Vec<Param>, c: usize| {
        resnet_params(out, c, c, None);
        if cfg.mid_block_add_attention {
            norm(out, c);
            for _ in 0..4 {
                linear(out, c, c, true, Role::Other);
            }
        }
        resnet_params(out, c, c, None);
    };
    conv(&mut out, cfg.in_channels, ch[0], 3);
    let mut prev = ch[0];
    for (i, &c) in ch.iter().enumerate() {
        for _ in 0..cfg.layers_per_block {
            resnet_params(&mut out, prev, c, None);
            prev = c;
        }
        if i + 1 < n {
            conv(&mut out, c, c, 3);
        }
    }
    mid(&mut out, ch[n - 1]);
    norm(&mut out, ch[n - 1]);
    conv(&mut out, ch[n - 1], 2 * l, 3);
    if cfg.use_quant_conv {
        conv(&mut out, 2 * l, 2 * l, 1);
    }
    if cfg.use_post_quant_conv {
        conv(&mut out, l, l, 1);
    }
    conv(&mut out, l, ch[n - 1], 3);
    mid(&mut out, ch[n - 1]);
    let mut prev = ch[n - 1];
    for (i, &c) in ch.iter().rev().enumerate() {
        for _ in 0..cfg.layers_per_block + 1 {
            resnet_params(&mut out, prev, c, None);
            prev = c;
        }
        if i + 1 < n {
            conv(&mut out, c, c, 3);
        }
    }
    norm(&mut out, ch[0]);
    conv(&mut out, ch[0], cfg.out_channels, 3);
    out
}
