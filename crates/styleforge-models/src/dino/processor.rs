//! The image processor of a DINO / DINOv2 folder, as transformers 5 builds it with
//! `AutoImageProcessor.from_pretrained`: the class's defaults, overridden by the keys of
//! `preprocessor_config.json`.
//!
//! - `ViTImageProcessor` (DINO v1): resize to `{"height": 224, "width": 224}` (bilinear),
//!   no center crop, mean and std 0.5 (the published DINO configs give ImageNet's).
//! - `BitImageProcessor` (DINOv2): resize the shortest edge to 224 (bicubic), center crop
//!   224, OpenAI CLIP mean/std (the published DINOv2 configs give shortest edge 256 and
//!   ImageNet's mean/std).
//!
//! Both run on the same resize / crop / normalise code as [`ClipImageProcessor`].

use std::path::Path;

use serde_json::{json, Value};

use super::DinoFamily;
use crate::clip_vision::ClipImageProcessor;
use crate::error::{ModelError, Result};

/// ImageNet's per-channel mean (transformers `IMAGENET_DEFAULT_MEAN`).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel std (transformers `IMAGENET_DEFAULT_STD`).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Which processor class a config asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vit,
    Bit,
}

fn defaults(kind: Kind) -> Value {
    match kind {
        Kind::Vit => json!({
            "do_resize": true,
            "size": {"height": 224, "width": 224},
            "resample": 2,
            "do_center_crop": false,
            "do_rescale": true,
            "do_normalize": true,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        }),
        Kind::Bit => json!({
            "do_resize": true,
            "size": {"shortest_edge": 224},
            "resample": 3,
            "do_center_crop": true,
            "crop_size": {"height": 224, "width": 224},
            "do_rescale": true,
            "do_normalize": true,
            "image_mean": crate::clip_vision::preprocess::OPENAI_CLIP_MEAN,
            "image_std": crate::clip_vision::preprocess::OPENAI_CLIP_STD,
        }),
    }
}

/// The processor of folder `dir` for a model of `family`: `preprocessor_config.json` over
/// its class's defaults (the class named by `image_processor_type` /
/// `feature_extractor_type`, else the family's: ViT for `vit`, BiT for `dinov2`).
pub fn load(dir: &Path, family: DinoFamily) -> Result<ClipImageProcessor> {
    let path = dir.join("preprocessor_config.json");
    let file: serde_json::Map<String, Value> = if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?
    } else {
        serde_json::Map::new()
    };
    let class = file
        .get("image_processor_type")
        .or_else(|| file.get("feature_extractor_type"))
        .and_then(Value::as_str);
    let kind = match class {
        Some(c) if c.starts_with("ViT") => Kind::Vit,
        Some(c) if c.starts_with("Bit") => Kind::Bit,
        Some(other) => {
            return Err(ModelError::Unsupported {
                path,
                what: "image processor",
                value: other.to_string(),
                supported: "ViTImageProcessor, BitImageProcessor".to_string(),
            })
        }
        None => match family {
            DinoFamily::Vit => Kind::Vit,
            DinoFamily::Dinov2 => Kind::Bit,
        },
    };
    let mut merged = defaults(kind);
    let obj = merged.as_object_mut().expect("defaults are an object");
    for (k, v) in file {
        obj.insert(k, v);
    }
    // ViTImageProcessor reads a bare integer size as a square (`default_to_square=True`);
    // BitImageProcessor as the shortest edge, which is what the shared struct assumes.
    if kind == Kind::Vit {
        if let Some(s) = obj.get("size").and_then(Value::as_u64) {
            obj.insert("size".into(), json!({"height": s, "width": s}));
        }
    }
    let dir_label = if path.is_file() {
        path.clone()
    } else {
        dir.to_path_buf()
    };
    let processor: ClipImageProcessor =
        serde_json::from_value(merged).map_err(|e| ModelError::Config {
            path: dir_label.clone(),
            message: format!("image processor: {e}"),
        })?;
    processor.validated(&dir_label)
}
