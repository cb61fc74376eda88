//! The library's error type.

/// Everything the StyleForge library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] styleforge_models::ModelError),
    /// A scheduler could not be built or stepped.
    #[error(transparent)]
    Scheduler(#[from] styleforge_schedulers::SchedulerError),
    /// A tokenizer could not be loaded or built.
    #[error(transparent)]
    Tokenizer(#[from] styleforge_tokenizer::TokenizerError),
    /// A metric (FID, KID, ...) could not be computed from its features.
    #[error("{what}: {source}")]
    Metric {
        /// Which metric, on what.
        what: String,
        /// The underlying error.
        #[source]
        source: styleforge_eval::EvalError,
    },
    /// A device that cannot be used (CUDA asked for in a build or on a machine without it).
    #[error("{0}")]
    Device(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An image that cannot be decoded or used.
    #[error("{}: {message}", path.display())]
    Image {
        /// The file or folder concerned.
        path: std::path::PathBuf,
        /// What is wrong, and what to do about it.
        message: String,
    },
    /// An image file that cannot be decoded: corrupt, truncated, of an unsupported format,
    /// or larger than the decoder's memory limit.
    #[error(
        "{}: cannot decode the image ({source}); expected a PNG, JPEG or WebP file",
        path.display()
    )]
    ImageDecode {
        /// The file or folder concerned.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
    /// A PNG that cannot be encoded.
    #[error("{}: cannot write the PNG ({source})", path.display())]
    PngEncode {
        /// The file or folder concerned.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: png::EncodingError,
    },
    /// A PNG whose header or text chunks cannot be read.
    #[error("{}: not a readable PNG ({source})", path.display())]
    PngRead {
        /// The file or folder concerned.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: png::DecodingError,
    },
    /// A request that cannot be carried out as asked (bad size, strength, ...).
    #[error("{0}")]
    InvalidRequest(String),
    /// Training data that cannot be used: a folder with too few images, an undecodable or
    /// too small image, a caption that is not UTF-8. `path` names the file or folder.
    #[error("{}: {message}", path.display())]
    Data {
        /// The file or folder concerned.
        path: std::path::PathBuf,
        /// What is wrong, and what to do about it.
        message: String,
    },
    /// A configuration that cannot be used (values out of range, contradictions, a bad
    /// `--set` override).
    #[error("{0}")]
    InvalidConfig(String),
    /// An adapter (LoRA, Textual Inversion, Custom Diffusion) that does not fit the model or
    /// cannot be read.
    #[error("{0}")]
    Adapter(String),
    /// A configuration file that cannot be used.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file or folder concerned.
        path: std::path::PathBuf,
        /// What is wrong, and what to do about it.
        message: String,
    },
    /// A value could not be encoded or decoded as JSON.
    #[error("cannot encode or decode {what} as JSON: {source}")]
    Json {
        /// What was being encoded or decoded.
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A configuration could not be written as TOML.
    #[error("cannot write {what} as TOML: {source}")]
    TomlWrite {
        /// What was being encoded or decoded.
        what: String,
        /// The underlying error.
        #[source]
        source: toml::ser::Error,
    },
    /// A run folder that cannot be used as asked: `--resume` without a checkpoint,
    /// checkpoints of another run, a folder inside the base model. `path` names it.
    #[error("{}: {message}", path.display())]
    RunFolder {
        /// The file or folder concerned.
        path: std::path::PathBuf,
        /// What is wrong, and what to do about it.
        message: String,
    },
    /// A checkpoint that does not match the run (missing or misshapen tensors).
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The file or folder concerned.
        path: std::path::PathBuf,
        /// What is wrong, and what to do about it.
        message: String,
    },
    /// A run's checkpoint or model that could not be written (a full disk, a quota, a
    /// permission): nothing half-written is left, and `recovery` says what was kept and how
    /// to go on. The cause names the file and the system's error.
    #[error("cannot write the {what} {}: {recovery}", path.display())]
    OutputWrite {
        /// What was being written ("checkpoint", "model").
        what: &'static str,
        /// Where it was going.
        path: std::path::PathBuf,
        /// What was kept, and how to go on.
        recovery: String,
        /// Why the write failed.
        #[source]
        source: Box<Error>,
    },
    /// Training produced a NaN or infinite loss.
    #[error("the loss became {value} at step {step}; training stopped. The last checkpoint (if any) is intact: lower optim.lr, check the data, or resume from it")]
    NonFiniteLoss {
        /// The optimizer step (1-based).
        step: usize,
        /// The loss value.
        value: f64,
    },
    /// The run's estimated peak memory exceeds the memory available
    /// ([`crate::training::memory`]); `suggestions` are settings that fit, each with its
    /// estimate, in order of least quality impact.
    #[error("{}", insufficient_memory(*.estimate, *.available, .suggestions))]
    InsufficientMemory {
        /// The estimated peak, in bytes.
        estimate: u64,
        /// The memory available, in bytes.
        available: u64,
        /// Settings that fit, each with its estimate.
        suggestions: Vec<String>,
    },
    /// A protocol's output folder that does not hold what a step needs (a merge before
    /// every shard finished, a shard of another protocol's plan); `path` names the folder.
    #[error("{}: {message}", path.display())]
    Protocol {
        /// The file or folder concerned.
        path: std::path::PathBuf,
        /// What is wrong, and what to do about it.
        message: String,
    },
    /// Anything else, said in words.
    #[error("{0}")]
    Msg(String),
}

fn insufficient_memory(estimate: u64, available: u64, suggestions: &[String]) -> String {
    let mut text = format!(
        "this run needs an estimated {:.1} GB of memory at its peak, but {:.1} GB are available.",
        estimate as f64 / 1e9,
        available as f64 / 1e9
    );
    if suggestions.is_empty() {
        text.push_str(
            " No change of gradient checkpointing, optimizer, resolution or text-encoder training brings it under; free memory or use a larger machine.",
        );
    } else {
        text.push_str(" Settings that fit, least loss of quality first:");
        for s in suggestions {
            text.push_str("\n  - ");
            text.push_str(s);
        }
    }
    text.push_str(
        "\nTo go on anyway: training.ignore_memory_check = true (or styleforge train --ignore-memory-check).",
    );
    text
}

impl From<styleforge_models::files::FileError> for Error {
    fn from(e: styleforge_models::files::FileError) -> Self {
        Error::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl Error {
    /// An error from a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Msg(message.into())
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
