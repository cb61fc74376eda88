//! The studio's errors, each with what a browser is told.

use std::path::PathBuf;

/// What can go wrong in the studio.
#[derive(Debug, thiserror::Error)]
pub enum StudioError {
    /// A request the studio refuses (bad input): HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// No such run, file or gallery entry: HTTP 404.
    #[error("{0}")]
    NotFound(String),
    /// A path outside the runs folder and the chosen inputs: HTTP 403.
    #[error("{} is outside the folders the studio serves", .0.display())]
    Outside(PathBuf),
    /// A conflicting action (a run that is already running): HTTP 409.
    #[error("{0}")]
    Conflict(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An error of the StyleForge library (configs, images, models).
    #[error(transparent)]
    Library(#[from] styleforge::Error),
    /// The server could not start.
    #[error("cannot serve on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl StudioError {
    /// An I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// The studio's result type.
pub type Result<T, E = StudioError> = std::result::Result<T, E>;
