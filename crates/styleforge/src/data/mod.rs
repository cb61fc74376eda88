//! Training data: folders of images, the preprocessing diffusers' DreamBooth script applies,
//! a cache of VAE latents, and a seeded sampler that resumes exactly.
//!
//! - [`folder`]: [`ImageFolder::scan`] lists the images of a folder (png, jpg/jpeg, webp),
//!   their optional `image.txt` captions, and checks that each decodes and is large enough.
//! - [`preprocess`]: [`Preprocess`] turns an image into the training square, as
//!   `examples/dreambooth/train_dreambooth.py` does with torchvision: resize the short side
//!   to the resolution, crop (center or random), optional horizontal flip, scale to [-1, 1].
//! - [`latent_cache`]: [`LatentCache`] encodes each (image, flip) variant once through the
//!   frozen VAE, keeps the posterior and samples latents from caller-given noise; it is saved
//!   in the run folder under a content-hash key so a re-run reuses it.
//! - [`buckets`]: [`Buckets`], aspect-ratio buckets of about the training square's area,
//!   and which one each image is trained at.
//! - [`mask`]: loss masks (`image.mask.png`), grey, and their latent-resolution average.
//! - [`sampler`]: [`EpochSampler`], seeded epoch-wise shuffling over indices, and
//!   [`RngState`], a serializable ChaCha8 state for exact resume.

pub mod buckets;
pub mod folder;
pub mod latent_cache;
pub mod mask;
pub mod preprocess;
pub mod sampler;

pub(crate) mod hash;

pub use buckets::{BucketSpec, Buckets};
pub use folder::{ImageEntry, ImageFolder, MaskFile, ScanOptions};
pub use latent_cache::{CacheSource, LatentCache, LatentCacheKey};
pub use preprocess::{CropMode, Preprocess};
pub use sampler::{EpochSampler, RngState, SamplerState};

use std::path::Path;

use crate::error::Error;

/// A [`Error::Data`] naming `path`.
pub(crate) fn data_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
