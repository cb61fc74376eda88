//! Evaluation metric maths for StyleForge.
//!
//! The evaluation of a learned style compares features of generated images with features
//! of reference images. This crate holds the maths only (no feature extractor):
//!
//! * [`fid`](mod@fid) — Fréchet Inception Distance,
//!   `FID = ‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½)`, in `f64`, with statistics
//!   ([`FeatureStats`]) that can be saved and loaded so that a reference set is
//!   summarised once. The trace of the matrix square root is taken through the
//!   symmetric product `Σ₁^½ Σ₂ Σ₁^½`, which stays stable when the covariances are
//!   singular (fewer images than feature dimensions). Values match pytorch-fid's
//!   `calculate_frechet_distance`.
//! * [`kid`](mod@kid) — Kernel Inception Distance: the unbiased MMD² estimate with the cubic
//!   polynomial kernel `k(x, y) = (x·y/d + 1)³`, averaged over random subsets, as
//!   torchmetrics' `KernelInceptionDistance` computes it.
//! * [`style`] — embedding similarity for style (CSD) and content (DINO): mean cosine per
//!   image and overall, its CSLS-corrected form, and paired cosines.
//!
//! Feature sets are passed as row-major `[n, d]` slices of `f32` or `f64` wrapped in a
//! [`FeatureMatrix`].

#![warn(missing_docs)]

pub mod error;
pub mod features;
pub mod fid;
pub mod kid;
pub mod style;

pub use error::{EvalError, Result};
pub use features::{FeatureMatrix, FeatureScalar};
pub use fid::{fid, frechet_distance, FeatureStats, FID_RECOMMENDED_MIN_SAMPLES};
pub use kid::{
    draw_subsets, kid, kid_with_subsets, poly_mmd2_unbiased, KidConfig, KidResult, KidSubset,
};
