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
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Anything else, said in words.
    #[error("{0}")]
    Msg(String),
}

impl Error {
    /// An error from a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Msg(message.into())
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
