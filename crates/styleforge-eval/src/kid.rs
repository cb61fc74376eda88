//! Kernel Inception Distance.
//!
//! KID is the squared maximum mean discrepancy (MMD²) between two feature sets with the
//! polynomial kernel `k(x, y) = (γ x·y + c)^p`, by default `γ = 1/d`, `c = 1`, `p = 3`.
//! For subsets `X` (size `m`) and `Y` (size `n`) the unbiased estimator is
//!
//! `MMD²ᵤ = Σ_{i≠j} k(xᵢ,xⱼ) / (m(m−1)) + Σ_{i≠j} k(yᵢ,yⱼ) / (n(n−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ) / (mn)`
//!
//! (the diagonals of the within-set kernel matrices excluded). As in torchmetrics'
//! `KernelInceptionDistance`, it is computed on `subsets` pairs of subsets, each subset
//! drawn without replacement from its set (the `x` subset first, then the `y` one), and
//! the result is the mean and the population standard deviation (`std(unbiased=False)`)
//! of the per-subset values. The estimate is unbiased, so it can be slightly negative.
//!
//! torchmetrics draws subsets with `torch.randperm`; this crate draws them with a seeded
//! ChaCha20 generator, so the subsets differ, but [`kid_with_subsets`] takes explicit
//! index lists for exact parity.

use nalgebra::DMatrix;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::error::{EvalError, Result};
use crate::features::{FeatureMatrix, FeatureScalar};

/// torchmetrics' default number of subsets.
pub const DEFAULT_SUBSETS: usize = 100;
/// torchmetrics' default subset size (capped here at the set sizes).
pub const DEFAULT_SUBSET_SIZE: usize = 1000;

/// KID parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct KidConfig {
    /// Number of subset pairs (default 100).
    pub subsets: usize,
    /// Subset size; `None` uses `min(n_x, n_y, 1000)`.
    pub subset_size: Option<usize>,
    /// Kernel degree `p` (default 3).
    pub degree: i32,
    /// Kernel scale `γ`; `None` uses `1/d`.
    pub gamma: Option<f64>,
    /// Kernel offset `c` (default 1).
    pub coef: f64,
    /// Seed of the ChaCha20 generator that draws the subsets.
    pub seed: u64,
}

impl Default for KidConfig {
    fn default() -> Self {
        Self {
            subsets: DEFAULT_SUBSETS,
            subset_size: None,
            degree: 3,
            gamma: None,
            coef: 1.0,
            seed: 0,
        }
    }
}

/// One pair of subsets: row indices into the first and into the second feature set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KidSubset {
    /// Rows of the first set.
    pub x: Vec<usize>,
    /// Rows of the second set.
    pub y: Vec<usize>,
}

/// KID over several subsets.
#[derive(Debug, Clone, PartialEq)]
pub struct KidResult {
    /// Mean of the per-subset MMD² values.
    pub mean: f64,
    /// Population standard deviation of the per-subset values (torchmetrics' `kid_std`).
    pub std: f64,
    /// The per-subset MMD² values, in subset order.
    pub scores: Vec<f64>,
}

/// Draws `config.subsets` pairs of subsets (each without replacement, `x` then `y` per
/// pair) from sets of `n_x` and `n_y` rows, with a ChaCha20 generator seeded by
/// `config.seed`.
pub fn draw_subsets(n_x: usize, n_y: usize, config: &KidConfig) -> Result<Vec<KidSubset>> {
    let size = subset_size(n_x, n_y, config)?;
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
    Ok((0..config.subsets)
        .map(|_| KidSubset {
            x: rand::seq::index::sample(&mut rng, n_x, size).into_vec(),
            y: rand::seq::index::sample(&mut rng, n_y, size).into_vec(),
        })
        .collect())
}

fn subset_size(n_x: usize, n_y: usize, config: &KidConfig) -> Result<usize> {
    if config.subsets == 0 {
        return Err(EvalError::InvalidConfig("subsets must be > 0".into()));
    }
    let size = config
        .subset_size
        .unwrap_or_else(|| n_x.min(n_y).min(DEFAULT_SUBSET_SIZE));
    if size < 2 {
        return Err(EvalError::TooFewSamples {
            needed: 2,
            got: size,
        });
    }
    if size > n_x || size > n_y {
        return Err(EvalError::InvalidConfig(format!(
            "subset size {size} exceeds a set size ({n_x}, {n_y})"
        )));
    }
    Ok(size)
}

/// KID between feature matrices `[n_x, d]` and `[n_y, d]` with subsets drawn by
/// [`draw_subsets`].
pub fn kid<T: FeatureScalar, U: FeatureScalar>(
    x: &FeatureMatrix<'_, T>,
    y: &FeatureMatrix<'_, U>,
    config: &KidConfig,
) -> Result<KidResult> {
    if x.dim() != y.dim() {
        return Err(EvalError::DimensionMismatch(x.dim(), y.dim()));
    }
    let subsets = draw_subsets(x.rows(), y.rows(), config)?;
    kid_with_subsets(x, y, &subsets, config)
}

/// KID on explicit subsets (e.g. the ones torchmetrics drew). `config.subsets`,
/// `subset_size` and `seed` are ignored; the kernel parameters are used. Indices must be
/// in range and each subset must have at least 2 rows (duplicates are not checked).
pub fn kid_with_subsets<T: FeatureScalar, U: FeatureScalar>(
    x: &FeatureMatrix<'_, T>,
    y: &FeatureMatrix<'_, U>,
    subsets: &[KidSubset],
    config: &KidConfig,
) -> Result<KidResult> {
    if x.dim() != y.dim() {
        return Err(EvalError::DimensionMismatch(x.dim(), y.dim()));
    }
    if subsets.is_empty() {
        return Err(EvalError::InvalidConfig("no subsets".into()));
    }
    let scores = subsets
        .iter()
        .map(|s| {
            let xs = gather(x, &s.x)?;
            let ys = gather(y, &s.y)?;
            poly_mmd2_unbiased(&xs, &ys, config)
        })
        .collect::<Result<Vec<f64>>>()?;
    let k = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / k;
    let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / k;
    Ok(KidResult {
        mean,
        std: var.sqrt(),
        scores,
    })
}

/// Copies the chosen rows into a `d × m` `f64` matrix (one sample per column).
fn gather<T: FeatureScalar>(f: &FeatureMatrix<'_, T>, idx: &[usize]) -> Result<DMatrix<f64>> {
    if let Some(&bad) = idx.iter().find(|&&i| i >= f.rows()) {
        return Err(EvalError::InvalidConfig(format!(
            "subset index {bad} out of range for {} rows",
            f.rows()
        )));
    }
    Ok(DMatrix::from_fn(f.dim(), idx.len(), |j, c| {
        f.row(idx[c])[j].to_f64()
    }))
}

/// Unbiased MMD² with the polynomial kernel between two sample matrices given as
/// `d × m` and `d × n` (one sample per column), `m, n ≥ 2`.
pub fn poly_mmd2_unbiased(x: &DMatrix<f64>, y: &DMatrix<f64>, config: &KidConfig) -> Result<f64> {
    let d = x.nrows();
    if y.nrows() != d {
        return Err(EvalError::DimensionMismatch(d, y.nrows()));
    }
    let (m, n) = (x.ncols(), y.ncols());
    if m < 2 || n < 2 {
        return Err(EvalError::TooFewSamples {
            needed: 2,
            got: m.min(n),
        });
    }
    let gamma = config.gamma.unwrap_or(1.0 / d as f64);
    let kernel_sum = |a: &DMatrix<f64>, b: &DMatrix<f64>, skip_diag: bool| -> f64 {
        let gram = a.transpose() * b;
        let mut total = 0.0;
        for c in 0..gram.ncols() {
            for r in 0..gram.nrows() {
                if !(skip_diag && r == c) {
                    total += (gram[(r, c)] * gamma + config.coef).powi(config.degree);
                }
            }
        }
        total
    };
    let (m, n) = (m as f64, n as f64);
    Ok(
        kernel_sum(x, x, true) / (m * (m - 1.0)) + kernel_sum(y, y, true) / (n * (n - 1.0))
            - 2.0 * kernel_sum(x, y, false) / (m * n),
    )
}
