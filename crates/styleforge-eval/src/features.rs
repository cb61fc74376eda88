//! Borrowed row-major feature matrices.

use crate::error::{EvalError, Result};

/// A scalar type that feature matrices may hold (`f32` or `f64`); every value is
/// widened to `f64` before any arithmetic.
pub trait FeatureScalar: Copy + Send + Sync + 'static {
    /// The value as `f64` (exact for both supported types).
    fn to_f64(self) -> f64;
}

impl FeatureScalar for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl FeatureScalar for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

/// A borrowed `[rows, dim]` row-major matrix of features, one row per image.
#[derive(Debug, Clone, Copy)]
pub struct FeatureMatrix<'a, T> {
    data: &'a [T],
    rows: usize,
    dim: usize,
}

impl<'a, T: FeatureScalar> FeatureMatrix<'a, T> {
    /// Wraps `data` as rows of `dim` features; fails unless `dim > 0` and the length is
    /// a multiple of `dim`, or when a value is NaN or infinite.
    pub fn new(data: &'a [T], dim: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(EvalError::Shape {
                len: data.len(),
                dim,
            });
        }
        if let Some(pos) = data.iter().position(|v| !v.to_f64().is_finite()) {
            return Err(EvalError::NonFinite {
                row: pos / dim,
                col: pos % dim,
            });
        }
        Ok(Self {
            data,
            rows: data.len() / dim,
            dim,
        })
    }

    /// Number of rows (samples).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i` as a slice.
    ///
    /// # Panics
    /// When `i >= self.rows()`.
    pub fn row(&self, i: usize) -> &'a [T] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The underlying row-major slice.
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }
}
