//! Error type of the metric computations.

/// Errors raised by the metric computations and the statistics files.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A feature slice whose length is not `rows * dim`.
    #[error("feature slice of {len} values is not a whole number of rows of dimension {dim}")]
    Shape {
        /// Length of the slice.
        len: usize,
        /// Requested feature dimension.
        dim: usize,
    },
    /// Too few samples for the statistic (covariance and MMD need at least 2).
    #[error("need at least {needed} samples, got {got}")]
    TooFewSamples {
        /// Minimum number of samples.
        needed: usize,
        /// Number of samples given.
        got: usize,
    },
    /// Two feature sets or statistics of different dimensions.
    #[error("feature dimensions differ: {0} vs {1}")]
    DimensionMismatch(usize, usize),
    /// A NaN or infinite feature value.
    #[error("non-finite feature value at row {row}, column {col}")]
    NonFinite {
        /// Row of the value.
        row: usize,
        /// Column of the value.
        col: usize,
    },
    /// An invalid KID configuration or subset list.
    #[error("invalid KID configuration: {0}")]
    InvalidConfig(String),
    /// I/O failure while reading or writing statistics.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Malformed safetensors data.
    #[error("safetensors: {0}")]
    SafeTensors(#[from] safetensors::SafeTensorError),
    /// A statistics file with missing or inconsistent content.
    #[error("invalid statistics file: {0}")]
    Format(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;
