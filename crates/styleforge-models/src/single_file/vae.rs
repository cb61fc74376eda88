//! The VAE: LDM `first_stage_model.*` ⇄ diffusers `AutoencoderKL`.

use serde_json::{json, Value};

use super::table::{Inner, Table, VAE_RESNET};
use super::Shapes;

/// The LDM key prefix of the VAE.
pub const PREFIX: &str = "first_stage_model.";

/// The name table of a VAE with `levels` resolution levels and `layers` resnets per
/// encoder level (`layers + 1` per decoder level).
pub(crate) fn table(levels: usize, layers: usize) -> Table {
    let resnet = Inner::Renamed(VAE_RESNET);
    let mut t = Table::default();
    for part in ["encoder", "decoder"] {
        t.push(
            format!("{part}.conv_in."),
            format!("{part}.conv_in."),
            Inner::Same,
        );
        t.push(
            format!("{part}.conv_out."),
            format!("{part}.conv_out."),
            Inner::Same,
        );
        t.push(
            format!("{part}.norm_out."),
            format!("{part}.conv_norm_out."),
            Inner::Same,
        );
        t.push(
            format!("{part}.mid.block_1."),
            format!("{part}.mid_block.resnets.0."),
            resnet,
        );
        t.push(
            format!("{part}.mid.block_2."),
            format!("{part}.mid_block.resnets.1."),
            resnet,
        );
        t.push(
            format!("{part}.mid.attn_1."),
            format!("{part}.mid_block.attentions.0."),
            Inner::VaeAttention,
        );
    }
    for i in 0..levels {
        for j in 0..layers {
            t.push(
                format!("encoder.down.{i}.block.{j}."),
                format!("encoder.down_blocks.{i}.resnets.{j}."),
                resnet,
            );
        }
        let up = levels - 1 - i;
        for j in 0..=layers {
            t.push(
                format!("decoder.up.{up}.block.{j}."),
                format!("decoder.up_blocks.{i}.resnets.{j}."),
                resnet,
            );
        }
        if i + 1 < levels {
            t.push(
                format!("encoder.down.{i}.downsample.conv."),
                format!("encoder.down_blocks.{i}.downsamplers.0.conv."),
                Inner::Same,
            );
            t.push(
                format!("decoder.up.{up}.upsample.conv."),
                format!("decoder.up_blocks.{i}.upsamplers.0.conv."),
                Inner::Same,
            );
        }
    }
    t.push("quant_conv.", "quant_conv.", Inner::Same);
    t.push("post_quant_conv.", "post_quant_conv.", Inner::Same);
    t
}

/// `(levels, layers)` of a diffusers VAE config value.
pub(crate) fn layout_from_config(config: &Value) -> (usize, usize) {
    let levels = config
        .get("block_out_channels")
        .and_then(Value::as_array)
        .map_or(4, Vec::len);
    let layers = config
        .get("layers_per_block")
        .and_then(Value::as_u64)
        .map_or(2, |v| v as usize);
    (levels, layers)
}

/// Infers a diffusers VAE config from LDM tensor shapes (names without [`PREFIX`]).
/// Group-norm groups (32) and the scaling factor (0.18215) cannot be seen in shapes.
pub(crate) fn infer_config(shapes: &Shapes) -> Result<Value, String> {
    let dim = |k: &str, i: usize| -> Result<usize, String> {
        shapes
            .get(k)
            .and_then(|s| s.get(i).copied())
            .ok_or_else(|| format!("expected tensor `{PREFIX}{k}`"))
    };
    let levels = (0..)
        .take_while(|i| shapes.contains_key(&format!("encoder.down.{i}.block.0.conv1.weight")))
        .count();
    if levels == 0 {
        return Err(format!(
            "expected `{PREFIX}encoder.down.0.block.0.conv1.weight`"
        ));
    }
    let layers = (0..)
        .take_while(|j| shapes.contains_key(&format!("encoder.down.0.block.{j}.conv1.weight")))
        .count();
    let channels = (0..levels)
        .map(|i| dim(&format!("encoder.down.{i}.block.0.conv1.weight"), 0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": super::DIFFUSERS_VERSION,
        "act_fn": "silu",
        "block_out_channels": channels,
        "down_block_types": vec!["DownEncoderBlock2D"; levels],
        "in_channels": dim("encoder.conv_in.weight", 1)?,
        "latent_channels": dim("decoder.conv_in.weight", 1)?,
        "layers_per_block": layers,
        "norm_num_groups": 32,
        "out_channels": dim("decoder.conv_out.weight", 0)?,
        "sample_size": 512,
        "scaling_factor": 0.18215,
        "up_block_types": vec!["UpDecoderBlock2D"; levels],
        "use_quant_conv": shapes.contains_key("quant_conv.weight"),
        "use_post_quant_conv": shapes.contains_key("post_quant_conv.weight"),
    }))
}
