//! VAE latents of the training images, encoded once.
//!
//! The VAE is frozen during training, so each (image, flip) variant is encoded once and its
//! posterior `N(mean, exp(logvar))` kept. A training step draws a latent from it with noise
//! the engine supplies (so the engine's seeded generator decides every draw, as
//! `latent_dist.sample()` draws from torch's), multiplied by the VAE's `scaling_factor`,
//! exactly what diffusers' DreamBooth script computes each step:
//! `vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor`.
//!
//! The cache is saved as `latents-<key>.safetensors` in the run folder (written atomically).
//! The key hashes every image's bytes and file name, the resolution, the crop (and its seed
//! for random crops), whether flips are cached, and a caller-given VAE tag, so any change
//! there makes a re-run encode afresh instead of training on stale latents.
//!
//! File layout: `mean`, `logvar` f32 `[N, V, C, h, w]` (V = 1, or 2 with flips: variant 1 is
//! the mirrored image), `key` u8 (the key's 32 hex digits), `scaling_factor` f64 `[1]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use styleforge_models::vae::{AutoencoderKL, DiagonalGaussian};
use styleforge_models::weights::save_safetensors_atomic;

use super::data_error;
use super::folder::ImageFolder;
use super::hash::Fnv128;
use super::preprocess::{CropMode, Preprocess};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// What a latent cache is made from.
#[derive(Debug, Clone, Copy)]
pub struct CacheSource<'a> {
    /// The images.
    pub folder: &'a ImageFolder,
    /// How they become training squares.
    pub preprocess: &'a Preprocess,
    /// Whether the mirrored variant of each image is cached too.
    pub with_flips: bool,
    /// Names the VAE; should change whenever its weights do (e.g. the weight file's path,
    /// size and modification time, or a hash of it).
    pub vae_tag: &'a str,
}

impl CacheSource<'_> {
    /// The cache key of these inputs: a hash of every image's file name and bytes, the
    /// resolution, the crop (and its seed for random crops), `with_flips` and `vae_tag`.
    pub fn key(&self) -> LatentCacheKey {
        let prep = self.preprocess;
        let mut h = Fnv128::default();
        h.write_str("styleforge latent cache v1");
        h.write(&prep.resolution.to_le_bytes());
        h.write_str(prep.crop.as_str());
        if prep.crop == CropMode::Random {
            h.write(&prep.seed.to_le_bytes());
        }
        h.write(&[self.with_flips as u8]);
        h.write_str(self.vae_tag);
        h.write(&(self.folder.len() as u64).to_le_bytes());
        for e in self.folder.entries() {
            let name = e.path.file_name().unwrap_or_default().to_string_lossy();
            h.write_str(&name);
            h.write(&e.content_hash.to_le_bytes());
        }
        LatentCacheKey(format!("{:032x}", h.finish()))
    }
}

/// Identifies the inputs a latent cache was made from (32 hex digits); see
/// [`CacheSource::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LatentCacheKey(String);

impl LatentCacheKey {
    /// The key as 32 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The cache's file name, `latents-<key>.safetensors`.
    pub fn file_name(&self) -> String {
        format!("latents-{}.safetensors", self.0)
    }
}

impl std::fmt::Display for LatentCacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Posteriors of every (image, flip) variant of a folder.
#[derive(Debug, Clone)]
pub struct LatentCache {
    key: LatentCacheKey,
    /// `[N, V, C, h, w]`, f32.
    mean: Tensor,
    /// `[N, V, C, h, w]`, f32, clamped to [-30, 20] by the VAE.
    logvar: Tensor,
    scaling_factor: f64,
}

impl LatentCache {
    /// Encodes every image of `source` (and its mirror image when `with_flips`) with `vae`,
    /// one variant at a time. `dtype` is the VAE's compute dtype; posteriors are kept in f32
    /// on `device`.
    pub fn build(
        source: &CacheSource,
        vae: &AutoencoderKL,
        dtype: DType,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<Self> {
        let (folder, prep) = (source.folder, source.preprocess);
        let f = vae.downscale_factor() as u32;
        if prep.resolution == 0 || prep.resolution % f != 0 {
            return Err(Error::InvalidRequest(format!(
                "training resolution {} must be a positive multiple of the VAE's downscale \
                 factor {f}",
                prep.resolution
            )));
        }
        if folder.is_empty() {
            return Err(data_error(folder.root(), "no images to encode"));
        }
        let flips: &[bool] = if source.with_flips {
            &[false, true]
        } else {
            &[false]
        };
        progress.begin("encoding training images", folder.len() * flips.len());
        let mut means = Vec::with_capacity(folder.len());
        let mut logvars = Vec::with_capacity(folder.len());
        for index in 0..folder.len() {
            let mut m = Vec::with_capacity(flips.len());
            let mut l = Vec::with_capacity(flips.len());
            for &flip in flips {
                let pixels = folder
                    .tensor(index, prep, flip, device)?
                    .unsqueeze(0)?
                    .to_dtype(dtype)?;
                let post = vae.encode(&pixels)?;
                m.push(post.mean.to_dtype(DType::F32)?);
                l.push(post.logvar.to_dtype(DType::F32)?);
                progress.advance(1);
            }
            // [V, C, h, w] per image (each variant is [1, C, h, w])
            means.push(Tensor::cat(&m, 0)?);
            logvars.push(Tensor::cat(&l, 0)?);
        }
        progress.finish();
        Ok(Self {
            key: source.key(),
            mean: Tensor::stack(&means, 0)?,
            logvar: Tensor::stack(&logvars, 0)?,
            scaling_factor: vae.scaling_factor(),
        })
    }

    /// Loads the cache of `source` from `dir` if a matching file is there, else encodes the
    /// images and saves the cache there. Returns the cache and whether it was reused.
    /// A cache file that cannot be read is rebuilt (with a warning), not an error.
    pub fn load_or_build(
        dir: &Path,
        source: &CacheSource,
        vae: &AutoencoderKL,
        dtype: DType,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<(Self, bool)> {
        let key = source.key();
        let path = dir.join(key.file_name());
        match Self::load(&path, &key, device) {
            Ok(Some(cache))
                if cache.len() == source.folder.len()
                    && cache.has_flips() == source.with_flips
                    && cache.scaling_factor == vae.scaling_factor() =>
            {
                tracing::info!(path = %path.display(), "reusing cached latents");
                return Ok((cache, true));
            }
            Ok(Some(_)) => {
                tracing::warn!(path = %path.display(), "cached latents do not fit; encoding again")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read cached latents; encoding again")
            }
        }
        let cache = Self::build(source, vae, dtype, device, progress)?;
        cache.save(&path)?;
        Ok((cache, false))
    }

    /// Writes the cache to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let device = self.mean.device();
        let key_bytes = Tensor::new(self.key.as_str().as_bytes(), device)?;
        let tensors = HashMap::from([
            ("mean".to_string(), self.mean.clone()),
            ("logvar".to_string(), self.logvar.clone()),
            ("key".to_string(), key_bytes),
            (
                "scaling_factor".to_string(),
                Tensor::new(&[self.scaling_factor], device)?,
            ),
        ]);
        save_safetensors_atomic(&tensors, path)?;
        Ok(())
    }

    /// Reads a cache saved by [`Self::save`]: `Ok(None)` when `path` does not exist or holds
    /// another key's cache; an error when the file is unreadable or malformed.
    pub fn load(path: &Path, key: &LatentCacheKey, device: &Device) -> Result<Option<Self>> {
        if !path.is_file() {
            return Ok(None);
        }
        let bad = |what: &str| data_error(path, format!("not a latent cache file: {what}"));
        let mut tensors = candle_core::safetensors::load(path, device)?;
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| bad(&format!("no `{name}`")))
        };
        let stored_key = take("key")?.to_dtype(DType::U8)?.to_vec1::<u8>()?;
        if stored_key != key.as_str().as_bytes() {
            return Ok(None);
        }
        let mean = take("mean")?.to_dtype(DType::F32)?;
        let logvar = take("logvar")?.to_dtype(DType::F32)?;
        let scaling_factor = take("scaling_factor")?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .first()
            .copied()
            .ok_or_else(|| bad("empty `scaling_factor`"))?;
        let ok_shape = matches!(mean.dims(), [n, 1 | 2, _, _, _] if *n > 0);
        if !ok_shape || mean.dims() != logvar.dims() {
            return Err(bad(&format!(
                "`mean` {:?} and `logvar` {:?} should both be [N, 1 or 2, C, h, w]",
                mean.dims(),
                logvar.dims()
            )));
        }
        Ok(Some(Self {
            key: key.clone(),
            mean,
            logvar,
            scaling_factor,
        }))
    }

    /// The key the cache was made for.
    pub fn key(&self) -> &LatentCacheKey {
        &self.key
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.mean.dims()[0]
    }

    /// Whether the cache has no images (never, for a built or loaded cache).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether mirrored variants are cached.
    pub fn has_flips(&self) -> bool {
        self.mean.dims()[1] == 2
    }

    /// The VAE scaling factor applied by [`Self::sample`].
    pub fn scaling_factor(&self) -> f64 {
        self.scaling_factor
    }

    /// Shape `[1, C, h, w]` of one latent (and of the noise [`Self::sample`] takes).
    pub fn latent_shape(&self) -> [usize; 4] {
        let d = self.mean.dims();
        [1, d[2], d[3], d[4]]
    }

    /// The posterior of image `index` (mirrored when `flip`): mean and logvar `[1, C, h, w]`.
    pub fn posterior(&self, index: usize, flip: bool) -> Result<DiagonalGaussian> {
        if index >= self.len() {
            return Err(Error::msg(format!(
                "latent cache: image index {index} out of range ({} images)",
                self.len()
            )));
        }
        if flip && !self.has_flips() {
            return Err(Error::msg(
                "latent cache: a mirrored latent was asked for, but flips were not cached",
            ));
        }
        let v = flip as usize;
        let pick = |t: &Tensor| -> Result<Tensor> { Ok(t.get(index)?.narrow(0, v, 1)?) };
        Ok(DiagonalGaussian {
            mean: pick(&self.mean)?,
            logvar: pick(&self.logvar)?,
        })
    }

    /// A latent for image `index` (mirrored when `flip`) scaled for the UNet:
    /// `(mean + exp(logvar / 2) · noise) · scaling_factor`, `[1, C, h, w]` f32.
    /// `noise` is standard normal of [`Self::latent_shape`].
    pub fn sample(&self, index: usize, flip: bool, noise: &Tensor) -> Result<Tensor> {
        let shape = self.latent_shape();
        if noise.dims() != shape {
            return Err(Error::msg(format!(
                "latent cache: noise has shape {:?}, expected {shape:?}",
                noise.dims()
            )));
        }
        let post = self.posterior(index, flip)?;
        let noise = noise.to_dtype(DType::F32)?;
        Ok((post.sample_with(&noise)? * self.scaling_factor)?)
    }

    /// The file name this cache is saved under in a run folder.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(self.key.file_name())
    }
}
