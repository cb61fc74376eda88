//! Hugging Face Hub models: `owner/name[@revision]` resolved to a diffusers folder in the
//! standard Hugging Face cache (`$HF_HOME/hub/models--owner--name/{blobs,snapshots,refs}`),
//! the layout Python's `huggingface_hub` uses, so the files are shared with diffusers.
//!
//! Only what a pipeline needs is fetched: `model_index.json` and the `unet`, `vae`,
//! `text_encoder`, `tokenizer` and `scheduler` folders, weights as `.safetensors` only
//! (the `fp16` variant's files with [`HubOptions::variant`]). A transformers repo (a CLIP
//! model for the evaluation, [`RepoLayout::Transformers`]) gets its root configs, tokenizer
//! files and `.safetensors` weights. Downloads go to
//! `blobs/<etag>.part` and are renamed when complete; an interrupted one resumes from its
//! `.part` file. Environment: `HF_HOME` (cache), `HF_ENDPOINT` (server), `HF_TOKEN` (else the
//! cache's `token` file), `HF_HUB_OFFLINE` (only the cache is used).
//!
//! The download client (`hf-hub` over `ureq`) is the `hub` cargo feature (on by default);
//! without it names still parse, and [`resolve`] says that the build has no Hub support.
//! [`crate::source`] resolves any model argument (folder, single file or Hub name).

use std::path::PathBuf;

#[cfg(not(feature = "hub"))]
use crate::error::ModelError;
use crate::error::Result;

#[cfg(feature = "hub")]
mod download;

/// The component folders a Stable Diffusion pipeline reads.
const COMPONENTS: [&str; 5] = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"];

/// A Hub model reference: `owner/name` and an optional `@revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModel {
    /// `owner/name`.
    pub repo: String,
    /// Branch, tag or commit (`main` when not given).
    pub revision: String,
}

impl HubModel {
    /// Parses `owner/name[@revision]`; `None` for anything else (paths with more parts,
    /// absolute or relative paths, empty parts).
    pub fn parse(arg: &str) -> Option<Self> {
        let (repo, revision) = match arg.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            Some(_) => return None,
            None => (arg, "main"),
        };
        let (owner, name) = repo.split_once('/')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !ok(owner) || !ok(name) || name.ends_with(".safetensors") {
            return None;
        }
        Some(Self {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }
}

impl std::fmt::Display for HubModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

/// How a repo's files are laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RepoLayout {
    /// A diffusers pipeline: `model_index.json` and component folders.
    #[default]
    Diffusers,
    /// A transformers model: `config.json`, tokenizer / processor files and weights at the
    /// root (e.g. `openai/clip-vit-base-patch16`).
    Transformers,
}

/// Where and how to fetch.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// The repo's layout (default: a diffusers pipeline).
    pub layout: RepoLayout,
    /// Weights variant (`fp16`): its files are fetched where the repo has them.
    pub variant: Option<String>,
    /// Cache root (the folder holding `hub/`); `HF_HOME`, else `~/.cache/huggingface`.
    pub home: Option<PathBuf>,
    /// Server; `HF_ENDPOINT`, else `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// Use the cache only; also set by `HF_HUB_OFFLINE=1`.
    pub offline: bool,
    /// Show download progress bars.
    pub progress: bool,
    /// Fetch only these component folders (e.g. `["tokenizer"]` to tokenize without the
    /// weights); `None` fetches a whole pipeline (a UNet required).
    pub components: Option<Vec<String>>,
}

impl HubOptions {
    /// Options from the environment (`HF_HUB_OFFLINE`; the rest is read when resolving).
    pub fn from_env() -> Self {
        Self {
            offline: env_flag("HF_HUB_OFFLINE"),
            ..Self::default()
        }
    }

    /// The component folder that must be there for a snapshot to count as fetched.
    #[cfg_attr(not(feature = "hub"), allow(dead_code))]
    fn key_component(&self) -> &str {
        match &self.components {
            Some(c) if !c.iter().any(|c| c == "unet") => c.first().map_or("unet", |s| s),
            _ => "unet",
        }
    }
}

#[cfg_attr(not(feature = "hub"), allow(dead_code))]
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The files of a transformers repo worth fetching: root-level JSON / text / sentencepiece
/// files (configs, tokenizer, processor) and `.safetensors` weights (with their shard
/// index); never pickled or other-framework weights.
pub fn wanted_transformers_files(files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter(|f| !f.contains('/'))
        .filter(|f| {
            [".json", ".txt", ".model", ".safetensors"]
                .iter()
                .any(|e| f.ends_with(e))
        })
        .cloned()
        .collect()
}

/// Whether a repo file is needed: `model_index.json` and the components' configs,
/// tokenizer files and `.safetensors` weights (of `variant` where the component has it).
pub fn wanted_files(files: &[String], variant: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = files
        .iter()
        .filter(|f| f.as_str() == "model_index.json")
        .cloned()
        .collect();
    for comp in COMPONENTS {
        let prefix = format!("{comp}/");
        let inside: Vec<&String> = files
            .iter()
            .filter(|f| f.starts_with(&prefix) && !f[prefix.len()..].contains('/'))
            .collect();
        let name = |f: &String| f[prefix.len()..].to_string();
        let is_weights = |n: &str| n.ends_with(".safetensors");
        let is_index = |n: &str| n.contains(".safetensors.index.");
        // The variant tag of `stem.<v>.safetensors`, `stem.<v>-00001-of-00002.safetensors`,
        // `stem.<v>.safetensors.index.json` or `stem.safetensors.index.<v>.json`.
        let tag = |n: &str| -> Option<String> {
            let core = match n.split_once(".safetensors.index.") {
                Some((before, after)) => match after.strip_suffix(".json") {
                    Some(v) if !v.is_empty() => return Some(v.to_string()),
                    _ => before,
                },
                None => n.strip_suffix(".safetensors")?,
            };
            let (_, v) = core.rsplit_once('.')?;
            Some(v.split('-').next().unwrap_or(v).to_string())
        };
        let has_variant = variant.is_some_and(|v| {
            inside
                .iter()
                .any(|f| is_weights(&name(f)) && tag(&name(f)).as_deref() == Some(v))
        });
        let want_tag = if has_variant { variant } else { None };
        for f in inside {
            let n = name(f);
            let keep = if is_weights(&n) || is_index(&n) {
                tag(&n).as_deref() == want_tag
            } else {
                // Configs and tokenizer files; never pickled or other-framework weights.
                [".json", ".txt", ".model"].iter().any(|e| n.ends_with(e))
            };
            if keep {
                out.push(f.clone());
            }
        }
    }
    out
}

/// Resolves a Hub model to its snapshot folder in the cache, downloading what is missing
/// (or, offline, finding it in the cache). Without the `hub` feature: an error saying so.
pub fn resolve(model: &HubModel, opts: &HubOptions) -> Result<PathBuf> {
    #[cfg(feature = "hub")]
    {
        download::resolve(model, opts)
    }
    #[cfg(not(feature = "hub"))]
    {
        let _ = opts;
        Err(ModelError::HubUnsupported {
            model: model.to_string(),
        })
    }
}

/// Whether this build can download from the Hub (the `hub` cargo feature).
pub const fn is_supported() -> bool {
    cfg!(feature = "hub")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let m = HubModel::parse("runwayml/stable-diffusion-v1-5").unwrap();
        assert_eq!(m.repo, "runwayml/stable-diffusion-v1-5");
        assert_eq!(m.revision, "main");
        let m = HubModel::parse("a/b@fp16").unwrap();
        assert_eq!(m.revision, "fp16");
        for bad in [
            "a",
            "/a/b",
            "a/b/c",
            "./x",
            "a/",
            "a/b@",
            "../x",
            "a/m.safetensors",
        ] {
            assert!(HubModel::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn picks_safetensors_and_the_variant() {
        let files: Vec<String> = [
            "model_index.json",
            "README.md",
            "v1-5.ckpt",
            "unet/config.json",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/config.json",
            "text_encoder/model.fp16.safetensors",
            "text_encoder/model.safetensors",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "scheduler/scheduler_config.json",
            "safety_checker/model.safetensors",
        ]
        .map(String::from)
        .to_vec();
        let plain = wanted_files(&files, None);
        assert!(plain.contains(&"unet/diffusion_pytorch_model.safetensors".into()));
        assert!(!plain
            .iter()
            .any(|f| f.contains("fp16") || f.ends_with(".bin")));
        assert!(!plain.iter().any(|f| f.starts_with("safety_checker")));
        assert_eq!(plain.len(), 10);
        let half = wanted_files(&files, Some("fp16"));
        assert!(half.contains(&"unet/diffusion_pytorch_model.fp16.safetensors".into()));
        assert!(half.contains(&"text_encoder/model.fp16.safetensors".into()));
        // No fp16 VAE in the repo: the plain one.
        assert!(half.contains(&"vae/diffusion_pytorch_model.safetensors".into()));
        assert!(!half.contains(&"unet/diffusion_pytorch_model.safetensors".into()));
    }
}
