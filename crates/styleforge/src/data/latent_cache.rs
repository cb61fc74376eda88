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
//! there makes a re-run encode afresh instead of training on stale latents; with loss masks
//! or aspect-ratio buckets ([`crate::data::ScanOptions`]) also each mask's bytes and each
//! image's bucket.
//!
//! Images of one size (no bucketing, or one bucket) share one group; with buckets, the
//! images of each bucket form a group (groups in order of size, images in folder order).
//! A loss mask, when the folder has masks, is kept beside each posterior at latent
//! resolution ([`crate::data::mask::mask_to_latent`]).
//!
//! File layout, one group: `mean`, `logvar` f32 `[N, V, C, h, w]` (V = 1, or 2 with flips:
//! variant 1 is the mirrored image), with masks `mask` f32 `[N, V, 1, h, w]`, `key` u8 (the
//! key's 32 hex digits), `scaling_factor` f64 `[1]`. Several groups: `mean.<g>`,
//! `logvar.<g>`, `mask.<g>` per group and `group` u32 `[N]`, each image's group.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use styleforge_models::vae::{AutoencoderKL, DiagonalGaussian};
use styleforge_models::weights::save_safetensors_atomic;

use super::data_error;
use super::folder::ImageFolder;
use super::hash::Fnv128;
use super::mask::mask_to_latent;
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
            if let Some(mask) = &e.mask {
                h.write_str("mask");
                h.write(&mask.content_hash.to_le_bytes());
            }
            if let Some((w, b)) = e.bucket {
                h.write_str("bucket");
                h.write(&w.to_le_bytes());
                h.write(&b.to_le_bytes());
            }
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

/// Posteriors (and loss masks) of every (image, flip) variant of a folder.
#[derive(Debug, Clone)]
pub struct LatentCache {
    key: LatentCacheKey,
    /// One per latent size.
    groups: Vec<Group>,
    /// Each image's (group, row in the group).
    place: Vec<(usize, usize)>,
    scaling_factor: f64,
}

/// The images of one latent size.
#[derive(Debug, Clone)]
struct Group {
    /// `[n, V, C, h, w]`, f32.
    mean: Tensor,
    /// `[n, V, C, h, w]`, f32, clamped to [-30, 20] by the VAE.
    logvar: Tensor,
    /// `[n, V, 1, h, w]`, f32 in [0, 1], with masks.
    mask: Option<Tensor>,
}

/// Each image's (group, row) from the group of every image (rows in image order).
fn places(groups_of: &[usize]) -> Vec<(usize, usize)> {
    let mut next = BTreeMap::<usize, usize>::new();
    groups_of
        .iter()
        .map(|&g| {
            let row = next.entry(g).or_insert(0);
            *row += 1;
            (g, *row - 1)
        })
        .collect()
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
        // groups by training size, in order of size
        let mut targets = Vec::with_capacity(folder.len());
        for index in 0..folder.len() {
            let (w, h) = folder.target(index, prep)?;
            if w == 0 || h == 0 || w % f != 0 || h % f != 0 {
                return Err(Error::InvalidRequest(format!(
                    "training size {w}x{h} must be a positive multiple of the VAE's downscale \
                     factor {f} on both sides"
                )));
            }
            targets.push((w, h));
        }
        let sizes: BTreeMap<(u32, u32), usize> = targets.iter().map(|&t| (t, 0)).collect();
        let sizes: BTreeMap<(u32, u32), usize> =
            sizes.into_keys().enumerate().map(|(g, t)| (t, g)).collect();
        let groups_of: Vec<usize> = targets.iter().map(|t| sizes[t]).collect();
        let with_masks = folder.entries().iter().any(|e| e.mask.is_some());
        let flips: &[bool] = if source.with_flips {
            &[false, true]
        } else {
            &[false]
        };
        progress.begin("encoding training images", folder.len() * flips.len());
        let n_groups = sizes.len();
        let mut means = vec![Vec::new(); n_groups];
        let mut logvars = vec![Vec::new(); n_groups];
        let mut masks = vec![Vec::new(); n_groups];
        for (index, &g) in groups_of.iter().enumerate() {
            let mut m = Vec::with_capacity(flips.len());
            let mut l = Vec::with_capacity(flips.len());
            let mut k = Vec::with_capacity(flips.len());
            for &flip in flips {
                let pixels = folder
                    .tensor(index, prep, flip, device)?
                    .unsqueeze(0)?
                    .to_dtype(dtype)?;
                let post = vae.encode(&pixels)?;
                m.push(post.mean.to_dtype(DType::F32)?);
                l.push(post.logvar.to_dtype(DType::F32)?);
                if with_masks {
                    let mask = folder
                        .preprocessed_mask(index, prep, flip)?
                        .ok_or_else(|| {
                            data_error(&folder.entries()[index].path, "this image has no mask")
                        })?;
                    k.push(mask_to_latent(&mask, f, device)?.unsqueeze(0)?);
                }
                progress.advance(1);
            }
            // [V, C, h, w] per image (each variant is [1, C, h, w])
            means[g].push(Tensor::cat(&m, 0)?);
            logvars[g].push(Tensor::cat(&l, 0)?);
            if with_masks {
                masks[g].push(Tensor::cat(&k, 0)?);
            }
        }
        progress.finish();
        let mut groups = Vec::with_capacity(n_groups);
        for g in 0..n_groups {
            groups.push(Group {
                mean: Tensor::stack(&means[g], 0)?,
                logvar: Tensor::stack(&logvars[g], 0)?,
                mask: if with_masks {
                    Some(Tensor::stack(&masks[g], 0)?)
                } else {
                    None
                },
            });
        }
        Ok(Self {
            key: source.key(),
            groups,
            place: places(&groups_of),
            scaling_factor: vae.scaling_factor(),
        })
    }

    /// Whether the cache fits `source` (images, flips, masks, sizes) and `vae`.
    fn fits(&self, source: &CacheSource, vae: &AutoencoderKL) -> bool {
        let folder = source.folder;
        let f = vae.downscale_factor();
        let masks = folder.entries().iter().any(|e| e.mask.is_some());
        self.len() == folder.len()
            && self.has_flips() == source.with_flips
            && self.has_masks() == masks
            && self.scaling_factor == vae.scaling_factor()
            && (0..folder.len()).all(|i| {
                let shape = self.latent_shape_of(i).ok();
                let target = folder.target(i, source.preprocess).ok();
                matches!((shape, target), (Some(s), Some((w, h)))
                    if s[2] * f == h as usize && s[3] * f == w as usize)
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
            Ok(Some(cache)) if cache.fits(source, vae) => {
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
        let device = self.groups[0].mean.device();
        let key_bytes = Tensor::new(self.key.as_str().as_bytes(), device)?;
        let mut tensors = HashMap::from([
            ("key".to_string(), key_bytes),
            (
                "scaling_factor".to_string(),
                Tensor::new(&[self.scaling_factor], device)?,
            ),
        ]);
        let one = self.groups.len() == 1;
        let name = |what: &str, g: usize| {
            if one {
                what.to_string()
            } else {
                format!("{what}.{g}")
            }
        };
        for (g, group) in self.groups.iter().enumerate() {
            tensors.insert(name("mean", g), group.mean.clone());
            tensors.insert(name("logvar", g), group.logvar.clone());
            if let Some(mask) = &group.mask {
                tensors.insert(name("mask", g), mask.clone());
            }
        }
        if !one {
            let groups: Vec<u32> = self.place.iter().map(|&(g, _)| g as u32).collect();
            tensors.insert("group".to_string(), Tensor::new(groups, device)?);
        }
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
        let scaling_factor = take("scaling_factor")?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .first()
            .copied()
            .ok_or_else(|| bad("empty `scaling_factor`"))?;
        let one = tensors.contains_key("mean");
        let groups_of: Vec<usize> = if one {
            Vec::new()
        } else {
            let g = tensors.remove("group").ok_or_else(|| bad("no `group`"))?;
            g.to_dtype(DType::U32)?
                .to_vec1::<u32>()?
                .into_iter()
                .map(|g| g as usize)
                .collect()
        };
        let n_groups = if one {
            1
        } else {
            groups_of.iter().max().map_or(0, |m| m + 1)
        };
        let mut groups = Vec::with_capacity(n_groups);
        for g in 0..n_groups {
            let name = |what: &str| {
                if one {
                    what.to_string()
                } else {
                    format!("{what}.{g}")
                }
            };
            let mut take = |what: &str| tensors.remove(&name(what));
            let mean = take("mean").ok_or_else(|| bad(&format!("no `{}`", name("mean"))))?;
            let logvar = take("logvar").ok_or_else(|| bad(&format!("no `{}`", name("logvar"))))?;
            let mask = take("mask").map(|m| m.to_dtype(DType::F32)).transpose()?;
            let (mean, logvar) = (mean.to_dtype(DType::F32)?, logvar.to_dtype(DType::F32)?);
            let ok_shape = matches!(mean.dims(), [n, 1 | 2, _, _, _] if *n > 0);
            let mask_ok = mask.as_ref().is_none_or(|m| {
                let (d, k) = (mean.dims(), m.dims());
                k.len() == 5 && k[..2] == d[..2] && k[2] == 1 && k[3..] == d[3..]
            });
            if !ok_shape || mean.dims() != logvar.dims() || !mask_ok {
                return Err(bad(&format!(
                    "`mean` {:?} and `logvar` {:?} should both be [N, 1 or 2, C, h, w] (and a \
                     mask [N, 1 or 2, 1, h, w])",
                    mean.dims(),
                    logvar.dims()
                )));
            }
            groups.push(Group { mean, logvar, mask });
        }
        let groups_of = if one {
            vec![0; groups[0].mean.dims()[0]]
        } else {
            groups_of
        };
        let place = places(&groups_of);
        let consistent = !groups.is_empty()
            && groups
                .iter()
                .all(|g| g.mask.is_some() == groups[0].mask.is_some())
            && groups
                .iter()
                .all(|g| g.mean.dims()[1] == groups[0].mean.dims()[1])
            && groups
                .iter()
                .enumerate()
                .all(|(i, g)| place.iter().filter(|p| p.0 == i).count() == g.mean.dims()[0]);
        if !consistent {
            return Err(bad("its groups do not match `group`"));
        }
        Ok(Some(Self {
            key: key.clone(),
            groups,
            place,
            scaling_factor,
        }))
    }

    /// The key the cache was made for.
    pub fn key(&self) -> &LatentCacheKey {
        &self.key
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.place.len()
    }

    /// Whether the cache has no images (never, for a built or loaded cache).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether mirrored variants are cached.
    pub fn has_flips(&self) -> bool {
        self.groups[0].mean.dims()[1] == 2
    }

    /// Whether loss masks are cached.
    pub fn has_masks(&self) -> bool {
        self.groups[0].mask.is_some()
    }

    /// The VAE scaling factor applied by [`Self::sample`].
    pub fn scaling_factor(&self) -> f64 {
        self.scaling_factor
    }

    /// Shape `[1, C, h, w]` of one latent (and of the noise [`Self::sample`] takes): of
    /// every image when they have one size, else of the first image
    /// ([`Self::latent_shape_of`] gives each image's).
    pub fn latent_shape(&self) -> [usize; 4] {
        let d = self.groups[self.place[0].0].mean.dims();
        [1, d[2], d[3], d[4]]
    }

    /// Shape `[1, C, h, w]` of image `index`'s latent.
    pub fn latent_shape_of(&self, index: usize) -> Result<[usize; 4]> {
        let (g, _) = self.place_of(index)?;
        let d = self.groups[g].mean.dims();
        Ok([1, d[2], d[3], d[4]])
    }

    fn place_of(&self, index: usize) -> Result<(usize, usize)> {
        self.place.get(index).copied().ok_or_else(|| {
            Error::msg(format!(
                "latent cache: image index {index} out of range ({} images)",
                self.len()
            ))
        })
    }

    /// The loss mask of image `index` (mirrored when `flip`) at latent resolution,
    /// `[1, 1, h, w]` in [0, 1]; `None` when masks were not cached.
    pub fn mask(&self, index: usize, flip: bool) -> Result<Option<Tensor>> {
        let (g, row) = self.place_of(index)?;
        let Some(mask) = &self.groups[g].mask else {
            return Ok(None);
        };
        self.check_flip(flip)?;
        Ok(Some(mask.get(row)?.narrow(0, flip as usize, 1)?))
    }

    fn check_flip(&self, flip: bool) -> Result<()> {
        if flip && !self.has_flips() {
            return Err(Error::msg(
                "latent cache: a mirrored latent was asked for, but flips were not cached",
            ));
        }
        Ok(())
    }

    /// The posterior of image `index` (mirrored when `flip`): mean and logvar `[1, C, h, w]`.
    pub fn posterior(&self, index: usize, flip: bool) -> Result<DiagonalGaussian> {
        let (g, row) = self.place_of(index)?;
        self.check_flip(flip)?;
        let v = flip as usize;
        let pick = |t: &Tensor| -> Result<Tensor> { Ok(t.get(row)?.narrow(0, v, 1)?) };
        let group = &self.groups[g];
        Ok(DiagonalGaussian {
            mean: pick(&group.mean)?,
            logvar: pick(&group.logvar)?,
        })
    }

    /// A latent for image `index` (mirrored when `flip`) scaled for the UNet:
    /// `(mean + exp(logvar / 2) · noise) · scaling_factor`, `[1, C, h, w]` f32.
    /// `noise` is standard normal of [`Self::latent_shape_of`] the image.
    pub fn sample(&self, index: usize, flip: bool, noise: &Tensor) -> Result<Tensor> {
        let shape = self.latent_shape_of(index)?;
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
