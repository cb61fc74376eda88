//! A per-image cache of extracted features, so re-evaluating a folder with one new image
//! runs the networks on that image only.
//!
//! Layout: `<root>/<kind>-<key>/<content-hash>.safetensors`, one small safetensors file
//! (tensor `features`, f32 `[d]`) per image, in one folder (*bucket*) per extractor
//! identity, with `extractor.json` beside them describing that identity for people. The
//! root defaults to [`default_cache_dir`] (`$XDG_CACHE_HOME/styleforge/features`, else
//! `~/.cache/styleforge/features`).
//!
//! - `<content-hash>`: FNV-1a 128 ([`crate::data`]'s cache hash) of the image file's bytes
//!   (see [`super::EvalImage::content_hash`]): a renamed file still hits, an edited one
//!   misses.
//! - `<key>`: FNV-1a 128 of the [`ExtractorId`]: the extractor kind, the model's
//!   fingerprint, the preprocessing settings (the resize convention), the version of the
//!   code that computes the features and [`CACHE_FORMAT`]. The model fingerprint is each
//!   weight/config file's name, size and the hash of its first and last MiB
//!   ([`fingerprint_file`]): cheap on multi-GB weights, and any re-export, fine-tune or
//!   truncation changes the size or the header (safetensors headers hold every tensor's
//!   offsets) or the tail. Two files equal in size, header and last MiB but differing in
//!   the middle would share a bucket; delete the cache folder if you edit weights in
//!   place.
//!
//! Files are written atomically ([`styleforge_models::files`]: a uniquely named temporary,
//! renamed into place), so concurrent runs and interruptions never leave a partial entry;
//! an unreadable entry is treated as missing.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use styleforge_models::files;

use crate::data::hash::Fnv128;
use crate::error::{Error, Result};

/// Version of the cache layout; bumping it starts new buckets.
pub const CACHE_FORMAT: u32 = 1;

/// How many bytes from each end of a weight file [`fingerprint_file`] hashes.
pub const FINGERPRINT_SPAN: u64 = 1 << 20;

/// The root cache folder when none is given: `$XDG_CACHE_HOME/styleforge/features`, else
/// `$HOME/.cache/styleforge/features`; `None` when neither variable is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("styleforge").join("features"))
}

/// Fingerprint of one file: its size and the FNV-1a 128 of its first and last
/// [`FINGERPRINT_SPAN`] bytes (the whole file when smaller than twice that).
pub fn fingerprint_file(path: &Path) -> Result<(u64, u128)> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut h = Fnv128::default();
    h.write(&size.to_le_bytes());
    let mut buf = Vec::new();
    if size <= 2 * FINGERPRINT_SPAN {
        file.read_to_end(&mut buf).map_err(io)?;
        h.write(&buf);
    } else {
        buf.resize(FINGERPRINT_SPAN as usize, 0);
        file.read_exact(&mut buf).map_err(io)?;
        h.write(&buf);
        file.seek(SeekFrom::End(-(FINGERPRINT_SPAN as i64)))
            .map_err(io)?;
        file.read_exact(&mut buf).map_err(io)?;
        h.write(&buf);
    }
    Ok((size, h.finish()))
}

/// Fingerprint of a model folder: [`fingerprint_file`] of every regular file directly in
/// it (sorted by name, names included), as one hash.
pub fn fingerprint_dir(dir: &Path) -> Result<u128> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut h = Fnv128::default();
    for f in files {
        let (size, hash) = fingerprint_file(&f)?;
        h.write_str(&f.file_name().unwrap_or_default().to_string_lossy());
        h.write(&size.to_le_bytes());
        h.write(&hash.to_le_bytes());
    }
    Ok(h.finish())
}

/// What produced a set of features: everything that, if changed, changes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtractorId {
    /// The extractor, e.g. `fid-inception-v3` or `clip-image`.
    pub kind: String,
    /// The model's file or folder name (for people; the fingerprint is what counts).
    pub model_name: String,
    /// [`fingerprint_file`] / [`fingerprint_dir`] of the model, as 32 hex digits.
    pub fingerprint: String,
    /// Preprocessing settings, e.g. `resize=clean-fid`.
    pub settings: String,
    /// Version of the code computing the features (the `styleforge` crate's, which the
    /// model crate shares) and the cache format.
    pub version: String,
}

impl ExtractorId {
    /// An identity with the current code version.
    pub fn new(kind: &str, model_name: &str, fingerprint: u128, settings: &str) -> Self {
        Self {
            kind: kind.to_string(),
            model_name: model_name.to_string(),
            fingerprint: format!("{fingerprint:032x}"),
            settings: settings.to_string(),
            version: format!(
                "styleforge {} / cache {CACHE_FORMAT}",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }

    /// The bucket folder name: `<kind>-<FNV-1a 128 of every field, 32 hex digits>`.
    pub fn bucket_name(&self) -> String {
        let mut h = Fnv128::default();
        for part in [
            &self.kind,
            &self.model_name,
            &self.fingerprint,
            &self.settings,
            &self.version,
        ] {
            h.write_str(part);
        }
        format!("{}-{:032x}", self.kind, h.finish())
    }
}

/// Features of one extractor, stored per image content hash (see the module docs).
#[derive(Debug, Clone)]
pub struct FeatureCache {
    bucket: Option<PathBuf>,
}

impl FeatureCache {
    /// A cache that stores nothing and finds nothing (`--no-cache`).
    pub fn disabled() -> Self {
        Self { bucket: None }
    }

    /// The bucket of `id` under `root`, created with its `extractor.json` if new.
    pub fn open(root: &Path, id: &ExtractorId) -> Result<Self> {
        let bucket = root.join(id.bucket_name());
        files::create_dir_all(&bucket)?;
        let about = bucket.join("extractor.json");
        if !about.is_file() {
            let text = serde_json::to_string_pretty(id).map_err(|source| Error::Json {
                what: "the extractor id".into(),
                source,
            })?;
            files::write(&about, text)?;
        }
        Ok(Self {
            bucket: Some(bucket),
        })
    }

    /// The bucket folder, if caching is on.
    pub fn bucket(&self) -> Option<&Path> {
        self.bucket.as_deref()
    }

    fn entry(&self, content_hash: u128) -> Option<PathBuf> {
        self.bucket
            .as_ref()
            .map(|b| b.join(format!("{content_hash:032x}.safetensors")))
    }

    /// The cached features of the image with `content_hash`, if present and readable.
    pub fn get(&self, content_hash: u128) -> Option<Vec<f32>> {
        let path = self.entry(content_hash)?;
        if !path.is_file() {
            return None;
        }
        let read = || -> std::result::Result<Vec<f32>, String> {
            let tensors: HashMap<String, Tensor> =
                candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| e.to_string())?;
            let t = tensors.get("features").ok_or("no `features` tensor")?;
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| e.to_string())
        };
        match read() {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(
                    "{}: unreadable cache entry ({e}); recomputing",
                    path.display()
                );
                None
            }
        }
    }

    /// Stores the features of the image with `content_hash` (atomically, through
    /// [`files::write_with`]). A disabled cache does nothing.
    pub fn put(&self, content_hash: u128, features: &[f32]) -> Result<()> {
        let Some(path) = self.entry(content_hash) else {
            return Ok(());
        };
        let t = Tensor::from_slice(features, features.len(), &Device::Cpu)?;
        files::write_with(&path, |tmp| {
            candle_core::safetensors::save(&HashMap::from([("features", t)]), tmp)
                .map_err(Error::from)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_per_identity() {
        let root = tempfile::tempdir().unwrap();
        let a = ExtractorId::new("fid-inception-v3", "w.safetensors", 1, "resize=clean-fid");
        let b = ExtractorId::new("fid-inception-v3", "w.safetensors", 1, "resize=pytorch-fid");
        assert_ne!(a.bucket_name(), b.bucket_name());
        let ca = FeatureCache::open(root.path(), &a).unwrap();
        let cb = FeatureCache::open(root.path(), &b).unwrap();
        assert!(ca.get(7).is_none());
        ca.put(7, &[1.0, 2.5, -3.0]).unwrap();
        assert_eq!(ca.get(7).unwrap(), [1.0, 2.5, -3.0]);
        assert!(cb.get(7).is_none(), "another resize mode must miss");
        let bucket = ca.bucket().unwrap();
        assert!(bucket.join("extractor.json").is_file());
        let leftovers: Vec<_> = std::fs::read_dir(bucket)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
            .collect();
        assert!(leftovers.is_empty());
        // A corrupt entry is a miss, not an error.
        std::fs::write(ca.entry(8).unwrap(), b"garbage").unwrap();
        assert!(ca.get(8).is_none());
        assert!(FeatureCache::disabled().get(7).is_none());
    }

    #[test]
    fn fingerprint_sees_size_head_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.bin");
        let mut bytes = vec![0u8; (3 * FINGERPRINT_SPAN) as usize];
        std::fs::write(&p, &bytes).unwrap();
        let base = fingerprint_file(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] = 1;
        std::fs::write(&p, &bytes).unwrap();
        assert_ne!(fingerprint_file(&p).unwrap(), base);
        bytes[last] = 0;
        bytes[0] = 1;
        std::fs::write(&p, &bytes).unwrap();
        assert_ne!(fingerprint_file(&p).unwrap(), base);
        std::fs::write(&p, b"small").unwrap();
        assert_eq!(fingerprint_file(&p).unwrap().0, 5);
    }
}
