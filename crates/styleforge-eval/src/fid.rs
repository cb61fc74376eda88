//! Fréchet Inception Distance.
//!
//! `FID = ‖μ₁−μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2 Tr((Σ₁Σ₂)^½)`, the squared 2-Wasserstein
//! distance between two Gaussians fitted to feature sets.
//!
//! pytorch-fid takes `scipy.linalg.sqrtm(Σ₁Σ₂)`, a non-symmetric square root that breaks
//! down (complex parts, NaN) when the covariances are singular, which they are whenever a
//! set has no more images than feature dimensions. Here the trace is computed from the
//! symmetric positive semi-definite matrix `Σ₁^½ Σ₂ Σ₁^½` (or `Lᵀ Σ₂ L` with the Cholesky
//! factor of a definite `Σ₁`): it has the same eigenvalues as `Σ₁Σ₂`, so
//! `Tr((Σ₁Σ₂)^½) = Σᵢ √λᵢ`, with every decomposition symmetric and eigenvalues at the
//! rounding-noise level (`≤ d·ε·λ_max`) or negative set to 0.
//!
//! Covariances use the unbiased `n − 1` normaliser, as `numpy.cov` (and so pytorch-fid).

use std::collections::HashMap;
use std::path::Path;

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use safetensors::{Dtype, SafeTensors};

use crate::error::{EvalError, Result};
use crate::features::{FeatureMatrix, FeatureScalar};

/// Below this many samples per set FID is noticeably biased upwards (the estimate of
/// `Tr((Σ₁Σ₂)^½)` is biased for small sets), and [`frechet_distance`] logs a warning.
/// Scores are only comparable between runs that use the same set sizes.
pub const FID_RECOMMENDED_MIN_SAMPLES: usize = 2048;

/// Rows per block when accumulating the covariance (bounds the `f64` copy of the features).
const COV_BLOCK_ROWS: usize = 1024;

/// Name of the mean tensor in a statistics file.
const MEAN_KEY: &str = "mu";
/// Name of the covariance tensor in a statistics file.
const COV_KEY: &str = "sigma";
/// Metadata key holding the sample count.
const COUNT_KEY: &str = "count";
/// Metadata key identifying the file format.
const FORMAT_KEY: &str = "format";
/// Value of [`FORMAT_KEY`].
const FORMAT_VALUE: &str = "styleforge-feature-stats-v1";

/// Gaussian statistics of a feature set: mean and covariance in `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    /// Mean feature, `dim` values.
    pub mean: Vec<f64>,
    /// Covariance, `dim × dim` row-major (symmetric), unbiased (`n − 1`) normaliser.
    pub cov: Vec<f64>,
    /// Feature dimension.
    pub dim: usize,
    /// Number of samples the statistics were computed from.
    pub count: usize,
}

impl FeatureStats {
    /// Mean and covariance (`numpy.cov(x, rowvar=False)`) of a feature matrix with at
    /// least two rows. Computed in `f64` in two passes (mean, then centred products).
    pub fn from_features<T: FeatureScalar>(features: &FeatureMatrix<'_, T>) -> Result<Self> {
        let (n, d) = (features.rows(), features.dim());
        if n < 2 {
            return Err(EvalError::TooFewSamples { needed: 2, got: n });
        }
        let mut mean = vec![0.0f64; d];
        for i in 0..n {
            for (m, v) in mean.iter_mut().zip(features.row(i)) {
                *m += v.to_f64();
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);

        // Each block is a `d × rows` column-major matrix: one centred sample per column,
        // so `C Cᵀ` adds the block's outer products.
        let mut cov = DMatrix::<f64>::zeros(d, d);
        let mut start = 0;
        while start < n {
            let rows = COV_BLOCK_ROWS.min(n - start);
            let block = DMatrix::from_fn(d, rows, |j, r| {
                features.row(start + r)[j].to_f64() - mean[j]
            });
            cov.gemm(1.0, &block, &block.transpose(), 1.0);
            start += rows;
        }
        let scale = 1.0 / (n - 1) as f64;
        let mut out = vec![0.0f64; d * d];
        for i in 0..d {
            for j in 0..d {
                // Symmetrise exactly; the column-major `cov` is read as row-major output.
                out[i * d + j] = 0.5 * (cov[(i, j)] + cov[(j, i)]) * scale;
            }
        }
        Ok(Self {
            mean,
            cov: out,
            dim: d,
            count: n,
        })
    }

    /// Builds statistics from a mean and a row-major covariance (e.g. loaded from
    /// elsewhere); checks the sizes.
    pub fn new(mean: Vec<f64>, cov: Vec<f64>, count: usize) -> Result<Self> {
        let dim = mean.len();
        if cov.len() != dim * dim {
            return Err(EvalError::Format(format!(
                "covariance has {} values, expected {dim}² = {}",
                cov.len(),
                dim * dim
            )));
        }
        Ok(Self {
            mean,
            cov,
            dim,
            count,
        })
    }

    /// Serialises to safetensors bytes: `mu` (F64 `[d]`), `sigma` (F64 `[d, d]`) and the
    /// sample count in the metadata.
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>> {
        let mean_bytes: Vec<u8> = self.mean.iter().flat_map(|v| v.to_le_bytes()).collect();
        let cov_bytes: Vec<u8> = self.cov.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensors = vec![
            (
                MEAN_KEY,
                safetensors::tensor::TensorView::new(Dtype::F64, vec![self.dim], &mean_bytes)?,
            ),
            (
                COV_KEY,
                safetensors::tensor::TensorView::new(
                    Dtype::F64,
                    vec![self.dim, self.dim],
                    &cov_bytes,
                )?,
            ),
        ];
        let metadata = HashMap::from([
            (COUNT_KEY.to_string(), self.count.to_string()),
            (FORMAT_KEY.to_string(), FORMAT_VALUE.to_string()),
        ]);
        Ok(safetensors::serialize(tensors, Some(metadata))?)
    }

    /// Parses bytes written by [`FeatureStats::to_safetensors_bytes`]. The count is
    /// optional in the metadata (0 when absent, e.g. for statistics from another tool
    /// that stores `mu` and `sigma` as F64).
    pub fn from_safetensors_bytes(bytes: &[u8]) -> Result<Self> {
        let (_, meta) = SafeTensors::read_metadata(bytes)?;
        let count = match meta.metadata().as_ref().and_then(|m| m.get(COUNT_KEY)) {
            Some(c) => c
                .parse::<usize>()
                .map_err(|e| EvalError::Format(format!("bad count {c:?}: {e}")))?,
            None => 0,
        };
        let st = SafeTensors::deserialize(bytes)?;
        let read = |name: &str| -> Result<(Vec<usize>, Vec<f64>)> {
            let t = st.tensor(name)?;
            if t.dtype() != Dtype::F64 {
                return Err(EvalError::Format(format!(
                    "{name} has dtype {:?}, expected F64",
                    t.dtype()
                )));
            }
            let values = t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect();
            Ok((t.shape().to_vec(), values))
        };
        let (mean_shape, mean) = read(MEAN_KEY)?;
        let (cov_shape, cov) = read(COV_KEY)?;
        let dim = mean.len();
        if mean_shape != [dim] || cov_shape != [dim, dim] {
            return Err(EvalError::Format(format!(
                "shapes {mean_shape:?} and {cov_shape:?} do not describe a [d] mean and a [d, d] covariance"
            )));
        }
        Self::new(mean, cov, count)
    }

    /// Writes the statistics to a safetensors file (see
    /// [`FeatureStats::to_safetensors_bytes`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path, self.to_safetensors_bytes()?)?;
        Ok(())
    }

    /// Reads statistics written by [`FeatureStats::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_safetensors_bytes(&std::fs::read(path)?)
    }

    /// Trace of the covariance.
    pub fn cov_trace(&self) -> f64 {
        (0..self.dim).map(|i| self.cov[i * self.dim + i]).sum()
    }

    fn cov_matrix(&self) -> DMatrix<f64> {
        // Row-major symmetric data read column-major is its transpose, i.e. itself.
        DMatrix::from_row_slice(self.dim, self.dim, &self.cov)
    }
}

/// `Tr((Σ₁Σ₂)^½)` for symmetric positive semi-definite `Σ₁`, `Σ₂`, from the eigenvalues
/// of a symmetric matrix similar to `Σ₁Σ₂`.
///
/// When `Σ₁` is positive definite (`s1_definite`: more samples than dimensions) that matrix
/// is `Lᵀ Σ₂ L` with the Cholesky factor `Σ₁ = L Lᵀ` (`L⁻¹ Σ₁Σ₂ L = Lᵀ Σ₂ L`): a
/// factorisation and one eigenvalue-only decomposition. Otherwise, or when the
/// factorisation fails (`Σ₁` singular to rounding), it is `Bᵀ Σ₂ B` with `Σ₁ = V Λ Vᵀ` and
/// `B = V Λ^½`, orthogonally similar to `Σ₁^½ Σ₂ Σ₁^½`: a full eigen-decomposition with
/// vectors first, several times the work.
///
/// Eigenvalues below `d · ε · λ_max` are rounding noise of a singular matrix (rank
/// `n − 1 < d`); they are set to 0 rather than only clamped, since `√` would turn noise of
/// order `ε λ_max` into terms of order `√ε` in the trace.
fn trace_sqrt_product(s1: DMatrix<f64>, s2: &DMatrix<f64>, s1_definite: bool) -> f64 {
    let d = s1.nrows();
    let factor = if s1_definite {
        nalgebra::Cholesky::new(s1.clone()).map(|c| c.unpack())
    } else {
        None
    };
    let b = match factor {
        Some(l) => l,
        None => {
            let eig = SymmetricEigen::new(s1);
            let floor1 = noise_floor(eig.eigenvalues.as_slice(), d);
            let mut b = eig.eigenvectors;
            for (j, &l) in eig.eigenvalues.iter().enumerate() {
                let s = if l > floor1 { l.sqrt() } else { 0.0 };
                b.column_mut(j).scale_mut(s);
            }
            b
        }
    };
    let m = b.transpose() * (s2 * &b);
    let m = (&m + m.transpose()) * 0.5;
    let eigenvalues = m.symmetric_eigenvalues();
    let floor2 = noise_floor(eigenvalues.as_slice(), d);
    eigenvalues
        .iter()
        .filter(|&&l| l > floor2)
        .map(|&l| l.sqrt())
        .sum()
}

/// Threshold under which an eigenvalue of a symmetric PSD matrix is rounding noise.
fn noise_floor(eigenvalues: &[f64], d: usize) -> f64 {
    let max = eigenvalues.iter().fold(0.0f64, |a, &l| a.max(l.abs()));
    max * d as f64 * f64::EPSILON
}

/// Fréchet distance between two Gaussian feature statistics (pytorch-fid's
/// `calculate_frechet_distance`, computed stably; see the module docs). The result is
/// clamped at 0 (it is non-negative in exact arithmetic).
///
/// Logs a `tracing` warning when a set has fewer than [`FID_RECOMMENDED_MIN_SAMPLES`]
/// samples (small sets bias FID upwards) or no more samples than dimensions (singular
/// covariance).
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim != b.dim {
        return Err(EvalError::DimensionMismatch(a.dim, b.dim));
    }
    for (name, s) in [("first", a), ("second", b)] {
        if s.count <= s.dim {
            tracing::warn!(
                set = name,
                count = s.count,
                dim = s.dim,
                "FID: fewer samples than feature dimensions, the covariance is singular and \
                 the score is strongly biased; compare only scores from equal set sizes"
            );
        } else if s.count < FID_RECOMMENDED_MIN_SAMPLES {
            tracing::warn!(
                set = name,
                count = s.count,
                recommended = FID_RECOMMENDED_MIN_SAMPLES,
                "FID: small sample set, the score is biased upwards; compare only scores \
                 from equal set sizes"
            );
        }
    }
    let diff = DVector::from_iterator(a.dim, a.mean.iter().zip(&b.mean).map(|(x, y)| x - y));
    let mean_term = diff.dot(&diff);
    // `Tr((Σ₁Σ₂)^½) = Tr((Σ₂Σ₁)^½)`: factor a set whose covariance can be definite.
    let (first, second) = if a.count > a.dim || b.count <= b.dim {
        (a, b)
    } else {
        (b, a)
    };
    let tr_sqrt = trace_sqrt_product(
        first.cov_matrix(),
        &second.cov_matrix(),
        first.count > first.dim,
    );
    let value = mean_term + a.cov_trace() + b.cov_trace() - 2.0 * tr_sqrt;
    Ok(value.max(0.0))
}

/// FID between two feature matrices `[n₁, d]` and `[n₂, d]` (each with `n ≥ 2`).
pub fn fid<T: FeatureScalar, U: FeatureScalar>(
    x: &FeatureMatrix<'_, T>,
    y: &FeatureMatrix<'_, U>,
) -> Result<f64> {
    if x.dim() != y.dim() {
        return Err(EvalError::DimensionMismatch(x.dim(), y.dim()));
    }
    if x.rows().min(y.rows()) < x.dim() {
        return fid_small_sets(x, y);
    }
    frechet_distance(
        &FeatureStats::from_features(x)?,
        &FeatureStats::from_features(y)?,
    )
}

/// [`fid`] for sets with fewer rows than feature dimensions, in `n × n` instead of `d × d`.
///
/// The two `d × d` eigen-decompositions cost some 25 s on two cores at `d` = 2048 whatever
/// the set sizes, while a style's reference set has 15–20 images and then the covariances
/// have rank `< n`. With the centred rows `A` (`n₁ × d`) and `B` (`n₂ × d`),
/// `Σ₁ = AᵀA/(n₁−1)`, `Σ₂ = BᵀB/(n₂−1)`, the non-zero eigenvalues of `Σ₁Σ₂` are those of
/// `C Cᵀ / k` with `C = A Bᵀ` (`n₁ × n₂`) and `k = (n₁−1)(n₂−1)`, so
/// `Tr((Σ₁Σ₂)^½) = Σᵢ σᵢ(C) / √k` (singular values of `C`, from the eigenvalues of the
/// smaller of `CCᵀ`, `CᵀC`), and `Tr Σ₁ = ‖A‖²_F / (n₁−1)`. Exact, not an approximation
/// (tested against the `d × d` route).
fn fid_small_sets<T: FeatureScalar, U: FeatureScalar>(
    x: &FeatureMatrix<'_, T>,
    y: &FeatureMatrix<'_, U>,
) -> Result<f64> {
    let (a, mean_a) = centred_rows(x)?;
    let (b, mean_b) = centred_rows(y)?;
    let (n1, n2) = (x.rows() as f64, y.rows() as f64);
    let mean_term: f64 = mean_a
        .iter()
        .zip(&mean_b)
        .map(|(p, q)| (p - q) * (p - q))
        .sum();
    let tr_a = a.norm_squared() / (n1 - 1.0);
    let tr_b = b.norm_squared() / (n2 - 1.0);
    let c = &a * b.transpose();
    let gram = if c.nrows() <= c.ncols() {
        &c * c.transpose()
    } else {
        c.transpose() * &c
    };
    let gram = (&gram + gram.transpose()) * 0.5;
    let eigenvalues = gram.symmetric_eigenvalues();
    let max = eigenvalues.iter().fold(0.0f64, |m, &l| m.max(l.abs()));
    let floor = max * gram.nrows() as f64 * f64::EPSILON;
    let nuclear: f64 = eigenvalues
        .iter()
        .filter(|&&l| l > floor)
        .map(|&l| l.sqrt())
        .sum();
    let tr_sqrt = nuclear / ((n1 - 1.0) * (n2 - 1.0)).sqrt();
    Ok((mean_term + tr_a + tr_b - 2.0 * tr_sqrt).max(0.0))
}

/// Rows minus their mean (`[n, d]`, f64) and the mean; at least two rows, finite values.
fn centred_rows<T: FeatureScalar>(f: &FeatureMatrix<'_, T>) -> Result<(DMatrix<f64>, Vec<f64>)> {
    let (n, d) = (f.rows(), f.dim());
    if n < 2 {
        return Err(EvalError::TooFewSamples { needed: 2, got: n });
    }
    let mut mean = vec![0f64; d];
    for i in 0..n {
        for (m, v) in mean.iter_mut().zip(f.row(i)) {
            *m += v.to_f64();
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let m = DMatrix::from_fn(n, d, |i, j| f.row(i)[j].to_f64() - mean[j]);
    Ok((m, mean))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `d × d` covariance of `n` deterministic pseudo-random rows (an LCG, mixed so the
    /// matrix is not diagonal).
    fn covariance(n: usize, d: usize, seed: u64) -> DMatrix<f64> {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let rows = DMatrix::from_fn(n, d, |_, _| next());
        let mixed = DMatrix::from_fn(n, d, |i, j| {
            rows[(i, j)] + if j > 0 { 0.7 * rows[(i, j - 1)] } else { 0.0 }
        });
        let mean = mixed.row_mean();
        let centred = DMatrix::from_fn(n, d, |i, j| mixed[(i, j)] - mean[j]);
        centred.transpose() * centred / (n as f64 - 1.0)
    }

    #[test]
    fn cholesky_and_eigen_routes_agree() {
        let (s1, s2) = (covariance(60, 24, 1), covariance(50, 24, 2));
        let cholesky = trace_sqrt_product(s1.clone(), &s2, true);
        let eigen = trace_sqrt_product(s1, &s2, false);
        assert!(
            (cholesky - eigen).abs() <= 1e-12 * eigen.abs(),
            "{cholesky} vs {eigen}"
        );
    }

    #[test]
    fn a_singular_covariance_gives_one_trace_by_every_route_and_order() {
        // 10 rows in 24 dimensions: rank 9. Claimed definite, its factorisation fails or
        // holds rounding noise only, which the noise floor removes.
        let (s1, s2) = (covariance(10, 24, 3), covariance(50, 24, 4));
        let claimed = trace_sqrt_product(s1.clone(), &s2, true);
        let eigen = trace_sqrt_product(s1.clone(), &s2, false);
        // Its trace with a definite partner, through the partner's factor.
        let swapped = trace_sqrt_product(s2, &s1, true);
        assert!(eigen > 0.0);
        assert!(
            (swapped - eigen).abs() <= 1e-9 * eigen,
            "{swapped} vs {eigen}"
        );
        assert!(
            (claimed - eigen).abs() <= 1e-6 * eigen,
            "{claimed} vs {eigen}"
        );
    }
}
