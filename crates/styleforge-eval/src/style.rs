//! Embedding similarity: style (CSD) and content (DINO) readouts.
//!
//! - [`mean_cosine`]: the cosine similarity of every generated × reference pair, averaged
//!   per generated image and overall (CSD style score; DINO content leakage against the
//!   style references).
//! - [`csls`]: the same readout of cross-domain similarity local scaling (Conneau et al.,
//!   *Word Translation Without Parallel Data*, 2018), which corrects the cosine for hubness:
//!   `CSLS(g, r) = 2·cos(g, r) − r_R(g) − r_G(r)`, where `r_R(g)` is the mean cosine of `g`
//!   to its `k` nearest references and `r_G(r)` the mean cosine of `r` to its `k` nearest
//!   generated images (`k` clamped to each set's size). A generated image that is close to
//!   every reference (a hub, e.g. a bland average picture) no longer scores well.
//! - [`paired_cosine`]: row `i` against row `i` (DINO content score: each generated image
//!   against its own content reference).
//!
//! Rows are L2-normalised here (in `f64`), so embeddings may be given raw.

use crate::error::{EvalError, Result};
use crate::features::{FeatureMatrix, FeatureScalar};

/// The usual neighbourhood size of CSLS.
pub const DEFAULT_CSLS_K: usize = 10;

/// A similarity readout between a generated and a reference set.
#[derive(Debug, Clone, PartialEq)]
pub struct Similarity {
    /// Mean over all generated × reference pairs.
    pub mean: f64,
    /// Per generated image: the mean over the references.
    pub per_image: Vec<f64>,
}

fn normalized<T: FeatureScalar>(x: &FeatureMatrix<'_, T>, what: &str) -> Result<Vec<Vec<f64>>> {
    (0..x.rows())
        .map(|i| {
            let row: Vec<f64> = x.row(i).iter().map(|v| v.to_f64()).collect();
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm == 0.0 {
                return Err(EvalError::InvalidConfig(format!(
                    "{what} embedding {i} is all zeros: its cosine similarity is undefined"
                )));
            }
            Ok(row.into_iter().map(|v| v / norm).collect())
        })
        .collect()
}

fn check_sets<T: FeatureScalar>(a: &FeatureMatrix<'_, T>, b: &FeatureMatrix<'_, T>) -> Result<()> {
    if a.dim() != b.dim() {
        return Err(EvalError::DimensionMismatch(a.dim(), b.dim()));
    }
    for n in [a.rows(), b.rows()] {
        if n == 0 {
            return Err(EvalError::TooFewSamples { needed: 1, got: 0 });
        }
    }
    Ok(())
}

/// The cosine matrix `[n_gen][n_ref]` of `generated` against `reference`.
pub fn cosine_matrix<T: FeatureScalar>(
    generated: &FeatureMatrix<'_, T>,
    reference: &FeatureMatrix<'_, T>,
) -> Result<Vec<Vec<f64>>> {
    check_sets(generated, reference)?;
    let g = normalized(generated, "generated")?;
    let r = normalized(reference, "reference")?;
    Ok(g.iter()
        .map(|gi| {
            r.iter()
                .map(|rj| gi.iter().zip(rj).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect())
}

fn readout(matrix: &[Vec<f64>]) -> Similarity {
    let per_image: Vec<f64> = matrix
        .iter()
        .map(|row| row.iter().sum::<f64>() / row.len() as f64)
        .collect();
    let mean = per_image.iter().sum::<f64>() / per_image.len() as f64;
    Similarity { mean, per_image }
}

/// Mean cosine similarity of every generated × reference pair, per generated image and
/// overall.
pub fn mean_cosine<T: FeatureScalar>(
    generated: &FeatureMatrix<'_, T>,
    reference: &FeatureMatrix<'_, T>,
) -> Result<Similarity> {
    Ok(readout(&cosine_matrix(generated, reference)?))
}

/// Mean of the `k` largest values of `values`.
fn top_k_mean(mut values: Vec<f64>, k: usize) -> f64 {
    values.sort_by(|a, b| b.total_cmp(a));
    values[..k].iter().sum::<f64>() / k as f64
}

/// The CSLS matrix `[n_gen][n_ref]` with neighbourhood `k` (clamped to each set's size;
/// `k = 0` is an error).
pub fn csls_matrix<T: FeatureScalar>(
    generated: &FeatureMatrix<'_, T>,
    reference: &FeatureMatrix<'_, T>,
    k: usize,
) -> Result<Vec<Vec<f64>>> {
    if k == 0 {
        return Err(EvalError::InvalidConfig(
            "CSLS needs k of at least 1".into(),
        ));
    }
    let cos = cosine_matrix(generated, reference)?;
    let (ng, nr) = (cos.len(), cos[0].len());
    let r_gen: Vec<f64> = cos
        .iter()
        .map(|row| top_k_mean(row.clone(), k.min(nr)))
        .collect();
    let r_ref: Vec<f64> = (0..nr)
        .map(|j| top_k_mean(cos.iter().map(|row| row[j]).collect(), k.min(ng)))
        .collect();
    Ok(cos
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter()
                .enumerate()
                .map(|(j, c)| 2.0 * c - r_gen[i] - r_ref[j])
                .collect()
        })
        .collect())
}

/// CSLS with neighbourhood `k`, averaged per generated image and overall.
pub fn csls<T: FeatureScalar>(
    generated: &FeatureMatrix<'_, T>,
    reference: &FeatureMatrix<'_, T>,
    k: usize,
) -> Result<Similarity> {
    Ok(readout(&csls_matrix(generated, reference, k)?))
}

/// Cosine similarity of row `i` of `a` with row `i` of `b`, for every row.
pub fn paired_cosine<T: FeatureScalar>(
    a: &FeatureMatrix<'_, T>,
    b: &FeatureMatrix<'_, T>,
) -> Result<Vec<f64>> {
    check_sets(a, b)?;
    if a.rows() != b.rows() {
        return Err(EvalError::InvalidConfig(format!(
            "paired cosine needs as many rows on both sides, got {} and {}",
            a.rows(),
            b.rows()
        )));
    }
    let x = normalized(a, "first")?;
    let y = normalized(b, "second")?;
    Ok(x.iter()
        .zip(&y)
        .map(|(p, q)| p.iter().zip(q).map(|(u, v)| u * v).sum())
        .collect())
}
