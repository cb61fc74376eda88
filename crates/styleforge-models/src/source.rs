//! Where a model comes from, in one place: a model argument (`--model`, `[model] base`,
//! `--clip`) is a folder, a single-file `.safetensors` checkpoint or a Hugging Face Hub name
//! `owner/name[@revision]`, and [`resolve`] turns it into files on disk.
//!
//! An existing path always wins over a Hub name. A single file is either loaded directly
//! ([`LocalFormat::SingleFile`]) or, with [`ResolveOptions::convert_into`], converted once
//! into a diffusers folder that later calls reuse. A Hub name is fetched into the Hugging Face
//! cache ([`crate::hub`]; builds without the `hub` feature refuse it with a clear error).

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::hub::{self, HubModel, HubOptions, RepoLayout};
use crate::single_file::{single_file_to_folder, SingleFileOptions};

/// A model as named by the user, before anything is fetched or converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// An existing folder: a diffusers pipeline (or a transformers model, or a tokenizer
    /// folder, depending on who asks).
    Folder(PathBuf),
    /// An existing single-file checkpoint (original LDM layout, `.safetensors`).
    SingleFile(PathBuf),
    /// A Hugging Face Hub model that is no local path.
    Hub(HubModel),
}

/// What the accepted arguments are, for errors, by repo layout.
fn accepted(layout: RepoLayout) -> &'static str {
    match layout {
        RepoLayout::Diffusers => {
            "a diffusers model folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, \
             scheduler/), a single-file .safetensors checkpoint or a Hugging Face Hub model \
             owner/name[@revision]"
        }
        RepoLayout::Transformers => {
            "a transformers model folder (config.json, model.safetensors, \
             preprocessor_config.json) or a Hugging Face Hub model owner/name[@revision]"
        }
    }
}

impl ModelSource {
    /// Classifies a model argument: an existing folder or file, else a Hub name; an error
    /// naming what is accepted for anything else (a missing path that is no Hub name).
    pub fn parse(arg: impl AsRef<Path>) -> Result<Self> {
        Self::parse_for(arg.as_ref(), RepoLayout::Diffusers)
    }

    fn parse_for(arg: &Path, layout: RepoLayout) -> Result<Self> {
        if arg.is_dir() {
            return Ok(Self::Folder(arg.to_path_buf()));
        }
        if arg.is_file() {
            return Ok(Self::SingleFile(arg.to_path_buf()));
        }
        match arg.to_str().and_then(HubModel::parse) {
            Some(model) => Ok(Self::Hub(model)),
            None => Err(ModelError::SourceNotFound {
                arg: arg.to_path_buf(),
                accepted: accepted(layout),
            }),
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Folder(p) | Self::SingleFile(p) => write!(f, "{}", p.display()),
            Self::Hub(m) => write!(f, "{m}"),
        }
    }
}

/// How to turn a [`ModelSource`] into local files.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// How to fetch a Hub name: the repo layout (a diffusers pipeline, or a transformers
    /// model such as CLIP), the weights variant, a component subset, progress bars, cache,
    /// endpoint, offline mode. Start from [`HubOptions::from_env`] to honour
    /// `HF_HUB_OFFLINE`.
    pub hub: HubOptions,
    /// Convert a single-file checkpoint into this folder and resolve to the folder; a folder
    /// that already holds `model_index.json` is reused as it is (converted once). `None`:
    /// the file itself, to be loaded directly.
    pub convert_into: Option<PathBuf>,
    /// How to read a single file being converted (configs where they cannot be inferred,
    /// prediction type).
    pub single_file: SingleFileOptions,
}

impl ResolveOptions {
    /// Options for a diffusers model: Hub options from the environment, the given weights
    /// variant, single files loaded directly.
    pub fn diffusers(variant: Option<String>) -> Self {
        Self {
            hub: HubOptions {
                variant,
                ..HubOptions::from_env()
            },
            ..Self::default()
        }
    }

    /// Options for a transformers model folder (e.g. a CLIP model): Hub options from the
    /// environment, transformers layout.
    pub fn transformers() -> Self {
        Self {
            hub: HubOptions {
                layout: RepoLayout::Transformers,
                ..HubOptions::from_env()
            },
            ..Self::default()
        }
    }

    /// The same options with Hub download progress bars on or off.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.hub.progress = progress;
        self
    }
}

/// The on-disk form of a resolved model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFormat {
    /// A folder (diffusers or transformers layout, as asked).
    Folder,
    /// A single-file checkpoint, to be loaded directly.
    SingleFile,
}

/// A model on disk, ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModel {
    /// What the user named.
    pub source: ModelSource,
    /// The folder or file to load.
    pub path: PathBuf,
    /// Whether [`Self::path`] is a folder or a single file.
    pub format: LocalFormat,
}

impl LocalModel {
    /// True when [`Self::path`] is a single-file checkpoint.
    pub fn is_single_file(&self) -> bool {
        self.format == LocalFormat::SingleFile
    }

    /// True when a single file was converted into the folder at [`Self::path`]: its weights
    /// now have the standard names, so a weights variant no longer applies.
    pub fn is_converted(&self) -> bool {
        matches!(self.source, ModelSource::SingleFile(_)) && self.format == LocalFormat::Folder
    }

    /// True when the model came from the Hugging Face Hub.
    pub fn is_hub(&self) -> bool {
        matches!(self.source, ModelSource::Hub(_))
    }
}

/// Resolves a model argument to files on disk: a folder as it is, a single file as it is
/// (or converted into [`ResolveOptions::convert_into`]), a Hub name to its snapshot folder
/// in the Hugging Face cache (downloaded when missing). A transformers layout takes folders
/// and Hub names only.
pub fn resolve(arg: impl AsRef<Path>, opts: &ResolveOptions) -> Result<LocalModel> {
    let arg = arg.as_ref();
    let source = ModelSource::parse_for(arg, opts.hub.layout)?;
    resolve_source(source, opts)
}

/// [`resolve`] for an already classified source.
pub fn resolve_source(source: ModelSource, opts: &ResolveOptions) -> Result<LocalModel> {
    let (path, format) = match &source {
        ModelSource::Folder(dir) => (dir.clone(), LocalFormat::Folder),
        ModelSource::SingleFile(file) if opts.hub.layout == RepoLayout::Transformers => {
            return Err(ModelError::SourceKind {
                arg: file.clone(),
                found: "a file",
                accepted: accepted(RepoLayout::Transformers),
            });
        }
        ModelSource::SingleFile(file) => match &opts.convert_into {
            Some(dir) => {
                if !dir.join("model_index.json").is_file() {
                    tracing::info!(
                        "converting the single file {} into {}",
                        file.display(),
                        dir.display()
                    );
                    single_file_to_folder(file, dir, &opts.single_file)?;
                }
                (dir.clone(), LocalFormat::Folder)
            }
            None => (file.clone(), LocalFormat::SingleFile),
        },
        ModelSource::Hub(model) => (hub::resolve(model, &opts.hub)?, LocalFormat::Folder),
    };
    Ok(LocalModel {
        source,
        path,
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_paths_win_over_hub_names() {
        // Tests run in the crate's folder: these relative paths also parse as Hub names.
        for (arg, folder) in [("src/hub", true), ("src/lib.rs", false)] {
            assert!(HubModel::parse(arg).is_some(), "{arg}");
            let want = if folder {
                ModelSource::Folder(arg.into())
            } else {
                ModelSource::SingleFile(arg.into())
            };
            assert_eq!(ModelSource::parse(arg).unwrap(), want);
        }
        assert_eq!(
            ModelSource::parse("no-such-owner/no-such-model@v2").unwrap(),
            ModelSource::Hub(HubModel::parse("no-such-owner/no-such-model@v2").unwrap())
        );
    }

    #[test]
    fn missing_paths_say_what_is_accepted() {
        for arg in [
            "./missing",
            "/nowhere/at/all",
            "missing.safetensors",
            "a/b/c",
        ] {
            let err = ModelSource::parse(arg).unwrap_err().to_string();
            assert!(err.contains(arg), "{err}");
            assert!(err.contains("no such file or folder"), "{err}");
            assert!(err.contains("single-file .safetensors"), "{err}");
            assert!(err.contains("owner/name[@revision]"), "{err}");
        }
        let err = resolve("./missing", &ResolveOptions::transformers())
            .unwrap_err()
            .to_string();
        assert!(err.contains("transformers model folder"), "{err}");
    }

    #[cfg(not(feature = "hub"))]
    #[test]
    fn without_the_hub_feature_a_hub_name_is_refused_clearly() {
        let err = resolve("owner/model", &ResolveOptions::diffusers(None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("owner/model"), "{err}");
        assert!(err.contains("no Hub support"), "{err}");
        assert!(err.contains("`hub` feature"), "{err}");
    }
}
