//! The UNet: LDM `model.diffusion_model.*` ⇄ diffusers `UNet2DConditionModel`.

use serde_json::{json, Value};

use super::table::{Inner, Table, UNET_RESNET};
use super::{Family, Shapes};

/// The LDM key prefix of the UNet.
pub const PREFIX: &str = "model.diffusion_model.";

/// What the name table needs to know about a UNet's structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub layers_per_block: usize,
    pub down_attention: Vec<bool>,
    pub up_attention: Vec<bool>,
}

impl Layout {
    /// Reads the structure from a diffusers `config.json` value.
    pub fn from_config(config: &Value) -> Result<Self, String> {
        let blocks = |key: &str, default: &[&str]| -> Vec<bool> {
            match config.get(key).and_then(Value::as_array) {
                Some(list) => list
                    .iter()
                    .map(|t| t.as_str().unwrap_or("").starts_with("CrossAttn"))
                    .collect(),
                None => default.iter().map(|t| t.starts_with("CrossAttn")).collect(),
            }
        };
        let down_attention = blocks(
            "down_block_types",
            &[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ],
        );
        let up_attention = blocks(
            "up_block_types",
            &[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ],
        );
        let layers_per_block = match config.get("layers_per_block") {
            None => 2,
            Some(Value::Number(n)) => n.as_u64().unwrap_or(2) as usize,
            Some(other) => {
                return Err(format!(
                    "layers_per_block {other} (only one value for every block has an LDM layout)"
                ))
            }
        };
        if down_attention.len() != up_attention.len() {
            return Err("down_block_types and up_block_types differ in length".into());
        }
        Ok(Self {
            layers_per_block,
            down_attention,
            up_attention,
        })
    }

    /// The name table of this structure.
    pub fn table(&self) -> Table {
        let n = self.down_attention.len();
        let l = self.layers_per_block;
        let mut t = Table::default();
        t.push("time_embed.0.", "time_embedding.linear_1.", Inner::Same);
        t.push("time_embed.2.", "time_embedding.linear_2.", Inner::Same);
        t.push("input_blocks.0.0.", "conv_in.", Inner::Same);
        t.push("out.0.", "conv_norm_out.", Inner::Same);
        t.push("out.2.", "conv_out.", Inner::Same);
        let resnet = Inner::Renamed(UNET_RESNET);
        for i in 0..n {
            for j in 0..l {
                let idx = i * (l + 1) + j + 1;
                t.push(
                    format!("input_blocks.{idx}.0."),
                    format!("down_blocks.{i}.resnets.{j}."),
                    resnet,
                );
                if self.down_attention[i] {
                    t.push(
                        format!("input_blocks.{idx}.1."),
                        format!("down_blocks.{i}.attentions.{j}."),
                        Inner::Same,
                    );
                }
            }
            for j in 0..=l {
                let idx = i * (l + 1) + j;
                t.push(
                    format!("output_blocks.{idx}.0."),
                    format!("up_blocks.{i}.resnets.{j}."),
                    resnet,
                );
                if self.up_attention[i] {
                    t.push(
                        format!("output_blocks.{idx}.1."),
                        format!("up_blocks.{i}.attentions.{j}."),
                        Inner::Same,
                    );
                }
            }
            if i + 1 < n {
                t.push(
                    format!("input_blocks.{}.0.op.", (i + 1) * (l + 1)),
                    format!("down_blocks.{i}.downsamplers.0.conv."),
                    Inner::Same,
                );
                let slot = if self.up_attention[i] { 2 } else { 1 };
                t.push(
                    format!("output_blocks.{}.{slot}.conv.", i * (l + 1) + l),
                    format!("up_blocks.{i}.upsamplers.0.conv."),
                    Inner::Same,
                );
            }
        }
        t.push("middle_block.0.", "mid_block.resnets.0.", resnet);
        t.push("middle_block.1.", "mid_block.attentions.0.", Inner::Same);
        t.push("middle_block.2.", "mid_block.resnets.1.", resnet);
        t
    }
}

/// The largest `input_blocks` index shape inference accepts.
const MAX_INPUT_BLOCKS: usize = 256;

/// Infers a diffusers UNet config from LDM tensor shapes (names without [`PREFIX`]).
///
/// Shapes cannot tell the attention head count, the group-norm group count nor the
/// prediction type: heads follow the Stable Diffusion releases (8 heads for a 768-wide
/// context, 64-channel heads otherwise), groups are 32, and v-prediction SD 2.x models get
/// `upcast_attention` and a 96 sample size as stabilityai/stable-diffusion-2-1 has them.
pub(crate) fn infer_config(shapes: &Shapes, v_prediction: bool) -> Result<(Value, Family), String> {
    let has = |k: &str| shapes.contains_key(k);
    let dim = |k: &str, i: usize| -> Result<usize, String> {
        shapes
            .get(k)
            .and_then(|s| s.get(i).copied())
            .ok_or_else(|| format!("expected tensor `{PREFIX}{k}`"))
    };
    // Downsamplers sit at input_blocks.{(i + 1) * (layers + 1)}.0.op.
    let max_input = shapes
        .keys()
        .filter_map(|k| k.strip_prefix("input_blocks."))
        .filter_map(|k| k.split('.').next()?.parse::<usize>().ok())
        .max()
        .ok_or_else(|| format!("expected `{PREFIX}input_blocks.*` tensors"))?;
    // The largest Stable Diffusion UNet has 12 input blocks: an index beyond this bound is
    // a damaged name, and would otherwise drive the searches below for that long.
    if max_input > MAX_INPUT_BLOCKS {
        return Err(format!(
            "`{PREFIX}input_blocks.{max_input}`: more input blocks than any Stable Diffusion UNet (at most {MAX_INPUT_BLOCKS} here)"
        ));
    }
    let first_down = (1..=max_input).find(|i| has(&format!("input_blocks.{i}.0.op.weight")));
    let layers = match first_down {
        Some(i) => i - 1,
        None => max_input,
    };
    if layers == 0 {
        return Err("no resnets in input_blocks.1".into());
    }
    let n = (max_input + 1) / (layers + 1);
    if n * (layers + 1) != max_input + 1 {
        return Err(format!(
            "input_blocks 0..={max_input} do not split into levels of {layers} resnets and a downsampler"
        ));
    }
    let mut channels = Vec::with_capacity(n);
    let mut down_attention = Vec::with_capacity(n);
    let mut up_attention = Vec::with_capacity(n);
    let mut context_dim = None;
    let mut linear = None;
    let mut transformer_layers = 1;
    for i in 0..n {
        let idx = i * (layers + 1) + 1;
        channels.push(dim(
            &format!("input_blocks.{idx}.0.out_layers.3.weight"),
            0,
        )?);
        let proj_in = format!("input_blocks.{idx}.1.proj_in.weight");
        down_attention.push(has(&proj_in));
        if has(&proj_in) {
            linear = Some(shapes[&proj_in].len() == 2);
            context_dim = Some(dim(
                &format!("input_blocks.{idx}.1.transformer_blocks.0.attn2.to_k.weight"),
                1,
            )?);
            transformer_layers = (0..)
                .take_while(|t| {
                    has(&format!(
                        "input_blocks.{idx}.1.transformer_blocks.{t}.norm1.weight"
                    ))
                })
                .count();
        }
        up_attention.push(has(&format!(
            "output_blocks.{}.1.proj_in.weight",
            i * (layers + 1)
        )));
    }
    if !has("middle_block.1.proj_in.weight") {
        return Err(format!(
            "expected a cross-attention mid block (`{PREFIX}middle_block.1.proj_in.weight`)"
        ));
    }
    let context_dim = match context_dim {
        Some(c) => c,
        None => dim("middle_block.1.transformer_blocks.0.attn2.to_k.weight", 1)?,
    };
    let linear = linear.unwrap_or(shapes["middle_block.1.proj_in.weight"].len() == 2);
    let family = if context_dim == 1024 {
        Family::Sd2
    } else {
        Family::Sd1
    };
    // Heads: SD 1.x has 8 per block; SD 2.x has 64-channel heads.
    let head_dim: Value = if context_dim != 768 && channels.iter().all(|c| c % 64 == 0) {
        json!(channels.iter().map(|c| c / 64).collect::<Vec<_>>())
    } else {
        json!(8)
    };
    let upcast = family == Family::Sd2 && v_prediction;
    let down_types: Vec<&str> = down_attention
        .iter()
        .map(|a| {
            if *a {
                "CrossAttnDownBlock2D"
            } else {
                "DownBlock2D"
            }
        })
        .collect();
    let up_types: Vec<&str> = up_attention
        .iter()
        .map(|a| {
            if *a {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
        })
        .collect();
    let config = json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": super::DIFFUSERS_VERSION,
        "act_fn": "silu",
        "attention_head_dim": head_dim,
        "block_out_channels": channels,
        "center_input_sample": false,
        "cross_attention_dim": context_dim,
        "down_block_types": down_types,
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": dim("input_blocks.0.0.weight", 1)?,
        "layers_per_block": layers,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-5,
        "norm_num_groups": 32,
        "out_channels": dim("out.2.weight", 0)?,
        "sample_size": if upcast { 96 } else { 64 },
        "transformer_layers_per_block": transformer_layers,
        "up_block_types": up_types,
        "upcast_attention": upcast,
        "use_linear_projection": linear,
    });
    Ok((config, family))
}
