//! transformers' `CLIPModel`: the text and vision towers with their projections into the
//! shared embedding space, loaded strictly from a transformers folder (`config.json` with
//! `text_config` / `vision_config` / `projection_dim`, `model.safetensors` or a sharded
//! index, `preprocessor_config.json`, tokenizer files).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::nn::Linear;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::{ClipImageProcessor, ClipVisionConfig, ClipVisionModel};
use crate::clip_text::{ClipTextConfig, ClipTextModel};
use crate::config::{read_config, ExtraKeys, ModelConfig};
use crate::error::{ModelError, Result};
use crate::tokenizer::ClipTokenizer;
use crate::weights::{component_weight_files, WeightStore};

fn d_proj() -> usize {
    512
}
fn d_logit_scale() -> f64 {
    2.6592
}
fn d_text() -> ClipTextConfig {
    serde_json::from_value(serde_json::json!({})).expect("every text config key has a default")
}
fn d_vision() -> ClipVisionConfig {
    serde_json::from_value(serde_json::json!({})).expect("every vision config key has a default")
}

/// A `CLIPModel` `config.json` (transformers `CLIPConfig` keys and defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipModelConfig {
    /// The text tower.
    #[serde(default = "d_text")]
    pub text_config: ClipTextConfig,
    /// The vision tower.
    #[serde(default = "d_vision")]
    pub vision_config: ClipVisionConfig,
    /// Width of the shared embedding space both projections map into.
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    /// Initial value of `logit_scale` (training only; the weights hold the trained one).
    #[serde(default = "d_logit_scale")]
    pub logit_scale_init_value: f64,
    /// Keys this struct does not know.
    #[serde(flatten)]
    pub extra: ExtraKeys,
}

/// transformers metadata that does not change the forward pass.
const IGNORED: &[&str] = &[
    "architectures",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "initializer_factor",
    "name_or_path",
    "text_config_dict",
    "vision_config_dict",
];

impl ModelConfig for ClipModelConfig {
    fn extra_keys(&self) -> &ExtraKeys {
        &self.extra
    }

    fn ignored_keys(&self) -> &'static [&'static str] {
        IGNORED
    }

    fn validate(&self, path: &Path) -> Result<()> {
        warn_unknown("text_config", &self.text_config, path);
        warn_unknown("vision_config", &self.vision_config, path);
        self.text_config.validate(path)?;
        self.vision_config.validate(path)?;
        if let Some(serde_json::Value::String(t)) = self.extra.get("model_type") {
            if t != "clip" {
                return Err(crate::config::unsupported(
                    path,
                    "CLIPModel model_type",
                    t,
                    "clip",
                ));
            }
        }
        Ok(())
    }
}

/// Logs the keys of a nested config that its struct does not use (as `read_config` does
/// for the top level).
fn warn_unknown<C: ModelConfig>(section: &str, config: &C, path: &Path) {
    let unknown: Vec<&str> = config
        .extra_keys()
        .iter()
        .filter(|(k, v)| {
            !k.starts_with('_')
                && !v.is_null()
                && **v != serde_json::Value::Bool(false)
                && !config.ignored_keys().contains(&k.as_str())
        })
        .map(|(k, _)| k.as_str())
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(
            "{} `{section}`: ignoring keys this implementation does not use: {}",
            path.display(),
            unknown.join(", ")
        );
    }
}

/// Buffers some checkpoints carry that are not weights.
const BUFFERS: &[&str] = &["position_ids"];

/// transformers' `CLIPModel` in float32: both towers, `text_projection`,
/// `visual_projection` (no bias), `logit_scale`, and the folder's tokenizer and image
/// processor.
#[derive(Clone)]
pub struct ClipModel {
    text_model: ClipTextModel,
    vision_model: ClipVisionModel,
    text_projection: Linear,
    visual_projection: Linear,
    logit_scale: Tensor,
    tokenizer: ClipTokenizer,
    processor: ClipImageProcessor,
    config: ClipModelConfig,
}

impl std::fmt::Debug for ClipModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipModel")
            .field("config", &self.config)
            .field("processor", &self.processor)
            .finish_non_exhaustive()
    }
}

impl ClipModel {
    /// Loads a transformers `CLIPModel` folder. Strict: a tensor the config needs and the
    /// weights lack, one of the wrong shape, or one the weights hold and the model does not
    /// use is an error naming it. The tokenizer is the folder's (`tokenizer.json` or
    /// `vocab.json` + `merges.txt`) if it has one, else the standard CLIP tokenizer; the
    /// image processor reads `preprocessor_config.json` if present, else transformers'
    /// `CLIPImageProcessor` defaults.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::NotFound {
                path: dir.to_path_buf(),
                what: "CLIPModel folder (config.json, model.safetensors, preprocessor_config.json)",
            });
        }
        let config_path = dir.join("config.json");
        let config: ClipModelConfig = read_config(&config_path)?;
        let files = component_weight_files(dir, None)?;
        let store = Arc::new(WeightStore::frozen(&files)?);
        let vb = store.var_builder(DType::F32, device);
        let model = Self::new(&config, vb, load_tokenizer(dir)?, {
            let path = dir.join("preprocessor_config.json");
            if path.is_file() {
                ClipImageProcessor::load(&path)?
            } else {
                ClipImageProcessor::default()
            }
        })?;
        let unused: Vec<String> = store
            .unused()
            .into_iter()
            .filter(|n| !BUFFERS.iter().any(|b| n.ends_with(b)))
            .collect();
        if !unused.is_empty() {
            let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            return Err(ModelError::Config {
                path: config_path,
                message: format!(
                    "{} tensor(s) in {} are not used by this config: {}; the weights do not \
                     match the config",
                    unused.len(),
                    files.join(", "),
                    unused
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(model)
    }

    /// Builds the model from `vb` at the checkpoint root (`text_model.`, `vision_model.`,
    /// `text_projection`, `visual_projection`, `logit_scale`).
    pub fn new(
        config: &ClipModelConfig,
        vb: VarBuilder,
        tokenizer: ClipTokenizer,
        processor: ClipImageProcessor,
    ) -> Result<Self> {
        let text_model = ClipTextModel::new(&config.text_config, vb.clone())?;
        let vision_model = ClipVisionModel::new(&config.vision_config, vb.clone())?;
        let p = config.projection_dim;
        let text_projection =
            crate::nn::linear_no_bias(config.text_config.hidden_size, p, vb.pp("text_projection"))?;
        let visual_projection = crate::nn::linear_no_bias(
            config.vision_config.hidden_size,
            p,
            vb.pp("visual_projection"),
        )?;
        let logit_scale = vb.get((), "logit_scale")?;
        let mut tokenizer = tokenizer;
        let max_len = config.text_config.max_position_embeddings;
        if tokenizer.max_length() > max_len {
            tokenizer.set_max_length(max_len);
        }
        Ok(Self {
            text_model,
            vision_model,
            text_projection,
            visual_projection,
            logit_scale,
            tokenizer,
            processor,
            config: config.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ClipModelConfig {
        &self.config
    }

    /// The text tower.
    pub fn text_model(&self) -> &ClipTextModel {
        &self.text_model
    }

    /// The vision tower.
    pub fn vision_model(&self) -> &ClipVisionModel {
        &self.vision_model
    }

    /// The tokenizer [`Self::encode_prompts`] uses.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// The image processor [`Self::embed_images`] uses.
    pub fn processor(&self) -> &ClipImageProcessor {
        &self.processor
    }

    /// `exp(logit_scale)`: the temperature CLIP multiplies cosine similarities by.
    pub fn logit_scale_exp(&self) -> Result<f32> {
        Ok(self.logit_scale.to_dtype(DType::F32)?.exp()?.to_scalar()?)
    }

    /// `pixel_values` `[n, 3, H, W]` → image embeddings `[n, projection_dim]`, not
    /// normalised (transformers' `get_image_features`).
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let pooled = self.vision_model.forward(pixel_values)?.pooled;
        Ok(self.visual_projection.forward(&pooled)?)
    }

    /// `input_ids` `[n, L]` → text embeddings `[n, projection_dim]`, not normalised
    /// (transformers' `get_text_features`), pooled at the end-of-text token.
    pub fn text_embeds(&self, input_ids: &Tensor) -> Result<Tensor> {
        let pooled = self.text_model.forward_with_clip_skip(input_ids, 0)?.pooled;
        Ok(self.text_projection.forward(&pooled)?)
    }

    /// Token ids `[n, max_length]` (u32) of `prompts`: BOS, content, EOS, padded with the
    /// tokenizer's pad token and truncated to the text tower's length (77).
    pub fn tokenize(&self, prompts: &[&str]) -> Result<Tensor> {
        if prompts.is_empty() {
            return Err(ModelError::BadInput("no prompts to encode".to_string()));
        }
        let ids = self.tokenizer.encode_batch_ids(prompts);
        let len = ids[0].len();
        let flat: Vec<u32> = ids.into_iter().flatten().collect();
        let device = self.logit_scale.device();
        Ok(Tensor::from_vec(flat, (prompts.len(), len), device)?)
    }

    /// Tokenizes `prompts` ([`Self::tokenize`]) and returns their text embeddings
    /// `[n, projection_dim]`, not normalised.
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Tensor> {
        self.text_embeds(&self.tokenize(prompts)?)
    }

    /// Preprocesses `images` with the folder's image processor and returns their image
    /// embeddings `[n, projection_dim]`, not normalised.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Tensor> {
        let pixels = self
            .processor
            .pixel_values(images, self.logit_scale.device())?;
        self.image_embeds(&pixels)
    }
}

/// The folder's tokenizer files if it has them, else the standard CLIP tokenizer.
fn load_tokenizer(dir: &Path) -> Result<ClipTokenizer> {
    let has_files = ["tokenizer.json", "vocab.json"]
        .iter()
        .any(|f| dir.join(f).is_file());
    let result = if has_files {
        ClipTokenizer::from_folder(dir)
    } else {
        ClipTokenizer::standard()
    };
    result.map_err(|e| ModelError::Config {
        path: if has_files {
            dir.to_path_buf()
        } else {
            PathBuf::from("<standard CLIP tokenizer>")
        },
        message: e.to_string(),
    })
}
