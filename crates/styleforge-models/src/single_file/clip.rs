//! The text encoder: SD 1.x `cond_stage_model.transformer.*` (a transformers CLIP) and
//! SD 2.x `cond_stage_model.model.*` (OpenCLIP, fused attention in-projections) ⇄ diffusers'
//! `CLIPTextModel`.

use std::collections::HashMap;

use candle_core::Tensor;
use serde_json::{json, Value};

use super::{Family, Shapes};
use crate::error::Result;

/// LDM prefix of the SD 1.x text encoder (a transformers `CLIPTextModel`).
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
/// LDM prefix of the SD 2.x text encoder (an OpenCLIP text tower).
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

/// OpenCLIP tensors the text model does not use (projection head, buffers).
const OPEN_CLIP_UNUSED: &[&str] = &["text_projection", "logit_scale", "attn_mask"];

/// Per-layer names: OpenCLIP ⇄ transformers.
const OPEN_CLIP_LAYER: &[(&str, &str)] = &[
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
    ("attn.out_proj.", "self_attn.out_proj."),
];

const OPEN_CLIP_TOP: &[(&str, &str)] = &[
    (
        "token_embedding.weight",
        "text_model.embeddings.token_embedding.weight",
    ),
    (
        "positional_embedding",
        "text_model.embeddings.position_embedding.weight",
    ),
    ("ln_final.weight", "text_model.final_layer_norm.weight"),
    ("ln_final.bias", "text_model.final_layer_norm.bias"),
];

/// The diffusers name of a transformers CLIP key, with the `text_model.` prefix.
pub(crate) fn with_text_model(name: &str) -> String {
    if name.starts_with("text_model.") {
        name.to_string()
    } else {
        format!("text_model.{name}")
    }
}

/// SD 1.x: names under [`CLIP_PREFIX`] → diffusers. Buffers (`position_ids`) are dropped.
pub(crate) fn clip_to_diffusers(
    tensors: Vec<(String, Tensor)>,
) -> (HashMap<String, Tensor>, Vec<String>) {
    let mapped = tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with("position_ids"))
        .map(|(k, t)| (with_text_model(&k), t))
        .collect();
    (mapped, Vec::new())
}

/// SD 1.x: diffusers → names under [`CLIP_PREFIX`].
pub(crate) fn diffusers_to_clip(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with("position_ids"))
        .map(|(k, t)| (format!("{CLIP_PREFIX}{}", with_text_model(&k)), t))
        .collect()
}

/// The number of OpenCLIP layers kept: diffusers drops the 24th layer of the SD 2.x text
/// tower (the pipeline only ever uses the penultimate layer's output), and so do we.
fn kept_layers(stored: usize) -> usize {
    if stored == 24 {
        23
    } else {
        stored
    }
}

fn count_layers(shapes: &Shapes, pattern: impl Fn(usize) -> String) -> usize {
    (0..)
        .take_while(|i| shapes.contains_key(&pattern(*i)))
        .count()
}

/// SD 2.x: names under [`OPEN_CLIP_PREFIX`] → diffusers, splitting `in_proj_*` into q/k/v.
/// Returns the mapped tensors and the names that fit no known OpenCLIP key.
pub(crate) fn open_clip_to_diffusers(
    tensors: Vec<(String, Tensor)>,
) -> Result<(HashMap<String, Tensor>, Vec<String>)> {
    let shapes: Shapes = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    let stored = count_layers(&shapes, |i| {
        format!("transformer.resblocks.{i}.ln_1.weight")
    });
    let kept = kept_layers(stored);
    let mut out = HashMap::new();
    let mut unknown = Vec::new();
    'keys: for (name, tensor) in tensors {
        if OPEN_CLIP_UNUSED.contains(&name.as_str()) {
            continue;
        }
        for (ours, theirs) in OPEN_CLIP_TOP {
            if name == *ours {
                out.insert(theirs.to_string(), tensor);
                continue 'keys;
            }
        }
        let Some(rest) = name.strip_prefix("transformer.resblocks.") else {
            unknown.push(name);
            continue;
        };
        let Some((layer, inner)) = rest.split_once('.') else {
            unknown.push(name);
            continue;
        };
        let Ok(layer) = layer.parse::<usize>() else {
            unknown.push(name);
            continue;
        };
        if layer >= kept {
            continue;
        }
        let base = format!("text_model.encoder.layers.{layer}.");
        if let Some(kind) = inner.strip_prefix("attn.in_proj_") {
            let d = tensor.dim(0)? / 3;
            for (i, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                out.insert(
                    format!("{base}self_attn.{p}.{kind}"),
                    tensor.narrow(0, i * d, d)?.contiguous()?,
                );
            }
            continue;
        }
        match OPEN_CLIP_LAYER
            .iter()
            .find_map(|(o, t)| inner.strip_prefix(o).map(|tail| format!("{t}{tail}")))
        {
            Some(mapped) => {
                out.insert(format!("{base}{mapped}"), tensor);
            }
            None => unknown.push(name),
        }
    }
    Ok((out, unknown))
}

/// SD 2.x: diffusers → names under [`OPEN_CLIP_PREFIX`], fusing q/k/v into `in_proj_*`.
pub(crate) fn diffusers_to_open_clip(
    tensors: HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    let mut fused: HashMap<(String, String), [Option<Tensor>; 3]> = HashMap::new();
    for (name, tensor) in tensors {
        let name = with_text_model(&name);
        if name.ends_with("position_ids") {
            continue;
        }
        if let Some((ours, _)) = OPEN_CLIP_TOP.iter().find(|(_, t)| *t == name) {
            out.insert(format!("{OPEN_CLIP_PREFIX}{ours}"), tensor);
            continue;
        }
        let Some(rest) = name.strip_prefix("text_model.encoder.layers.") else {
            return Err(crate::ModelError::BadInput(format!(
                "text encoder tensor `{name}` has no OpenCLIP counterpart"
            )));
        };
        let (layer, inner) = rest.split_once('.').unwrap_or((rest, ""));
        let base = format!("{OPEN_CLIP_PREFIX}transformer.resblocks.{layer}.");
        let qkv = [
            "self_attn.q_proj.",
            "self_attn.k_proj.",
            "self_attn.v_proj.",
        ];
        if let Some((slot, kind)) = qkv
            .iter()
            .enumerate()
            .find_map(|(i, p)| inner.strip_prefix(p).map(|k| (i, k.to_string())))
        {
            fused.entry((base, kind)).or_default()[slot] = Some(tensor);
            continue;
        }
        match OPEN_CLIP_LAYER
            .iter()
            .find_map(|(o, t)| inner.strip_prefix(t).map(|tail| format!("{o}{tail}")))
        {
            Some(mapped) => {
                out.insert(format!("{base}{mapped}"), tensor);
            }
            None => {
                return Err(crate::ModelError::BadInput(format!(
                    "text encoder tensor `{name}` has no OpenCLIP counterpart"
                )))
            }
        }
    }
    for ((base, kind), parts) in fused {
        let parts: Vec<Tensor> = parts.into_iter().collect::<Option<_>>().ok_or_else(|| {
            crate::ModelError::BadInput(format!(
                "{base}: q, k and v projections must all be present to fuse `in_proj_{kind}`"
            ))
        })?;
        out.insert(
            format!("{base}attn.in_proj_{kind}"),
            Tensor::cat(&parts, 0)?,
        );
    }
    Ok(out)
}

/// Infers a transformers `CLIPTextModel` config from diffusers-named shapes. Heads are
/// 64 wide as in every CLIP/OpenCLIP text tower SD uses; SD 1.x uses `quick_gelu`.
pub(crate) fn infer_config(shapes: &Shapes, family: Family) -> std::result::Result<Value, String> {
    let dim = |k: &str, i: usize| -> std::result::Result<usize, String> {
        shapes
            .get(k)
            .and_then(|s| s.get(i).copied())
            .ok_or_else(|| format!("expected text encoder tensor `{k}`"))
    };
    let (vocab, hidden) = (
        dim("text_model.embeddings.token_embedding.weight", 0)?,
        dim("text_model.embeddings.token_embedding.weight", 1)?,
    );
    let layers = count_layers(shapes, |i| {
        format!("text_model.encoder.layers.{i}.layer_norm1.weight")
    });
    let heads = if hidden % 64 == 0 { hidden / 64 } else { 1 };
    let sd1 = family == Family::Sd1;
    Ok(json!({
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_act": if sd1 { "quick_gelu" } else { "gelu" },
        "hidden_size": hidden,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": dim("text_model.encoder.layers.0.mlp.fc1.weight", 0)?,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": dim("text_model.embeddings.position_embedding.weight", 0)?,
        "model_type": "clip_text_model",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "pad_token_id": 1,
        "projection_dim": if sd1 { 768 } else { 512 },
        "torch_dtype": "float32",
        "vocab_size": vocab,
    }))
}
