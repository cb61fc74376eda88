//! Errors raised while reading model folders, configs and weights.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
///
/// Messages name the file and the tensor involved and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read at all.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file or folder could not be written (or read) by the file layer ([`crate::files`]).
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// A file or folder that should exist does not.
    #[error("{} not found: expected a {what}", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
        /// What it should have been (e.g. "diffusers model folder").
        what: &'static str,
    },
    /// A model argument that is neither an existing path nor a Hugging Face Hub name.
    #[error("{} not found: no such file or folder, and not a Hugging Face Hub name (owner/name[@revision]); expected {accepted}", arg.display())]
    SourceNotFound {
        /// The argument as given.
        arg: PathBuf,
        /// What is accepted here.
        accepted: &'static str,
    },
    /// A model argument of a kind this use does not take (e.g. a single file where a folder
    /// is needed).
    #[error("{}: {found}, but {accepted} is expected here", arg.display())]
    SourceKind {
        /// The argument as given.
        arg: PathBuf,
        /// What it is.
        found: &'static str,
        /// What is accepted here.
        accepted: &'static str,
    },
    /// A Hub name in a build without the `hub` feature.
    #[error("{model} names a Hugging Face Hub model, but this build has no Hub support (the `hub` feature of styleforge-models is off); download the model and give its folder, or rebuild with the feature")]
    HubUnsupported {
        /// The model as named.
        model: String,
    },
    /// A `config.json` is not valid JSON or has a value of the wrong type.
    #[error("invalid config {}: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A config asks for something this implementation does not provide.
    #[error("{}: unsupported {what} `{value}` (supported: {supported})", path.display())]
    Unsupported {
        /// The file that asks for it.
        path: PathBuf,
        /// The kind of setting (e.g. "activation").
        what: &'static str,
        /// The value asked for.
        value: String,
        /// The values that are supported.
        supported: String,
    },
    /// A weights file is not a readable safetensors file.
    #[error("{} is not a valid safetensors file ({reason}); it may be truncated or of another format: re-download or re-export it", path.display())]
    InvalidWeights {
        /// The weights file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// A weights file holds NaN or infinite values where a model to train needs finite ones.
    #[error("tensor `{name}` in {} holds {nan} NaN and {infinite} infinite values (of {count}); a model to train must hold finite numbers: the file is damaged or was saved from a run that diverged, use another base model", path.display())]
    NonFiniteWeights {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// How many of its values are NaN.
        nan: usize,
        /// How many are infinite.
        infinite: usize,
        /// How many values it holds.
        count: usize,
    },
    /// A model folder has no weights file that can be loaded.
    #[error("no weights in {}: expected {expected} (pickle `.bin`/`.ckpt` files are never loaded; convert them to safetensors)", dir.display())]
    NoWeights {
        /// The component folder.
        dir: PathBuf,
        /// The file names looked for.
        expected: String,
    },
    /// The config expects a tensor that the weights file does not have.
    #[error("tensor `{name}` is missing from {files}; the weights do not match the config")]
    MissingTensor {
        /// The tensor's name.
        name: String,
        /// The files searched.
        files: String,
    },
    /// A tensor has a different shape than the config implies.
    #[error("tensor `{name}` in {file} has shape {found:?}, but the config expects {expected:?}")]
    ShapeMismatch {
        /// The tensor's name.
        name: String,
        /// The file it is in.
        file: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// Input of the wrong shape or value was passed to a model.
    #[error("{0}")]
    BadInput(String),
    /// An error from the tensor library.
    #[error(transparent)]
    Candle(candle_core::Error),
}

impl ModelError {
    /// Packs this error into a `candle_core::Error` so it can travel through candle's
    /// `VarBuilder` backends; [`From<candle_core::Error>`] unpacks it again.
    pub fn into_candle(self) -> candle_core::Error {
        candle_core::Error::WrappedContext {
            wrapped: Box::new(self),
            context: String::new(),
        }
    }
}

impl From<candle_core::Error> for ModelError {
    /// Unwraps our own errors that travelled through candle, so callers see
    /// `MissingTensor` and friends rather than an opaque candle error.
    fn from(err: candle_core::Error) -> Self {
        match err {
            candle_core::Error::WrappedContext { wrapped, context } => {
                match wrapped.downcast::<ModelError>() {
                    Ok(ours) => *ours,
                    Err(other) => ModelError::Candle(candle_core::Error::WrappedContext {
                        wrapped: other,
                        context,
                    }),
                }
            }
            candle_core::Error::WithBacktrace { inner, .. } => ModelError::from(*inner),
            candle_core::Error::Context { inner, context } => match ModelError::from(*inner) {
                ModelError::Candle(e) => ModelError::Candle(candle_core::Error::Context {
                    inner: Box::new(e),
                    context,
                }),
                ours => ours,
            },
            other => ModelError::Candle(other),
        }
    }
}

/// Result with [`ModelError`].
pub type Result<T> = std::result::Result<T, ModelError>;
