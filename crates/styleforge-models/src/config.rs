//! Reading diffusers / transformers `config.json` files as they are written.
//!
//! Every model config is a serde struct whose missing keys default the way diffusers defaults
//! them. Keys the struct does not know are collected and logged once (keys starting with `_`,
//! like `_class_name` and `_diffusers_version`, are metadata and skipped), so a config that
//! asks for a feature we silently ignore never goes unnoticed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// A config value diffusers accepts either as one value for every block or as one per block
/// (`attention_head_dim: 8` or `attention_head_dim: [5, 10, 20, 20]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// One value, used for every block.
    One(T),
    /// One value per block.
    Many(Vec<T>),
}

impl<T: Clone + std::fmt::Debug> OneOrMany<T> {
    /// One value per block for `n` blocks; a list of another length is an error naming `key`.
    pub fn per_block(&self, n: usize, key: &str, path: &Path) -> Result<Vec<T>> {
        match self {
            OneOrMany::One(v) => Ok(vec![v.clone(); n]),
            OneOrMany::Many(v) if v.len() == n => Ok(v.clone()),
            OneOrMany::Many(v) => Err(ModelError::Config {
                path: path.to_path_buf(),
                message: format!(
                    "`{key}` lists {} values ({v:?}) but there are {n} blocks",
                    v.len()
                ),
            }),
        }
    }
}

/// Keys in a config that its struct did not recognise; filled by `#[serde(flatten)]`.
pub type ExtraKeys = BTreeMap<String, serde_json::Value>;

/// A config file type: parsed with serde, then checked for what we cannot run.
pub trait ModelConfig: DeserializeOwned {
    /// The keys the struct did not recognise.
    fn extra_keys(&self) -> &ExtraKeys;
    /// Unrecognised keys that are known not to matter (metadata), not worth a warning.
    fn ignored_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// Rejects settings this implementation does not support, naming the file.
    fn validate(&self, path: &Path) -> Result<()>;
}

/// Reads and validates a config file, logging unknown keys once.
pub fn read_config<T: ModelConfig>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config(&text, path)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse_config<T: ModelConfig>(text: &str, path: &Path) -> Result<T> {
    let config: T = serde_json::from_str(text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let unknown: Vec<&str> = config
        .extra_keys()
        .iter()
        .filter(|(k, v)| {
            // diffusers writes every key of its signature; a null or `false` one asks for nothing.
            let inert = v.is_null() || **v == serde_json::Value::Bool(false);
            !k.starts_with('_') && !inert && !config.ignored_keys().contains(&k.as_str())
        })
        .map(|(k, _)| k.as_str())
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(
            "{}: ignoring keys this implementation does not use: {}",
            path.display(),
            unknown.join(", ")
        );
    }
    config.validate(path)?;
    Ok(config)
}

/// The largest width (channels, hidden size) a config may ask for: 16× the largest Stable
/// Diffusion model's. Larger values are a damaged file, refused before anything is allocated.
pub const MAX_WIDTH: usize = 1 << 14;
/// The most layers per block (or transformer layers) a config may ask for.
pub const MAX_LAYERS: usize = 256;
/// The most blocks (UNet or VAE levels) a config may ask for.
pub const MAX_BLOCKS: usize = 16;

/// Refuses a size above `max` for config key `key`, before a model of it is allocated.
pub fn check_size(path: &Path, key: &str, value: usize, max: usize) -> Result<()> {
    if value > max {
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            message: format!(
                "`{key}` is {value}, beyond any Stable Diffusion model (at most {max} here); \
                 the file is damaged or belongs to another kind of model"
            ),
        });
    }
    Ok(())
}

/// [`check_size`] for every value of a one-or-many key.
pub fn check_sizes(path: &Path, key: &str, value: &OneOrMany<usize>, max: usize) -> Result<()> {
    match value {
        OneOrMany::One(v) => check_size(path, key, *v, max),
        OneOrMany::Many(vs) => {
            check_size(path, key, vs.len(), MAX_BLOCKS)?;
            vs.iter().try_for_each(|v| check_size(path, key, *v, max))
        }
    }
}

/// An `Unsupported` error for config key `what` with value `value`.
pub(crate) fn unsupported(
    path: &Path,
    what: &'static str,
    value: impl std::fmt::Display,
    supported: &str,
) -> ModelError {
    ModelError::Unsupported {
        path: path.to_path_buf(),
        what,
        value: value.to_string(),
        supported: supported.to_string(),
    }
}
