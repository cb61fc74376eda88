//! Feature extraction in batches, through the [`FeatureCache`].
//!
//! - [`InceptionExtractor`]: image → f32 `[3, h, w]` in [0, 1] → [`resize_for_fid`] to
//!   299×299 (clean-fid or pytorch-fid convention) → FID InceptionV3 pool3 features (2048).
//! - [`ClipExtractor`]: image → the CLIP folder's image processor → image embedding
//!   (`projection_dim`, not normalised).
//! - [`CsdExtractor`]: image → CSD's preprocessing → style embedding (L2-normalised).
//! - [`DinoExtractor`]: image → the DINO / DINOv2 folder's image processor → class-token
//!   embedding (not normalised).
//!
//! [`extract_features`] hashes every image, takes what the caches hold, decodes only the
//! images some extractor still needs, and runs each extractor on its misses in batches.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::cache::{fingerprint_dir, fingerprint_file, ExtractorId, FeatureCache};
use super::images::EvalImage;
use crate::error::{Error, Result};
use crate::models::clip_vision::ClipModel;
use crate::models::csd::CsdModel;
use crate::models::dino::DinoModel;
use crate::models::inception::{resize_for_fid, rgb8_to_chw, FidInceptionV3, ResizeMode};
use crate::progress::Progress;

/// Something that turns a batch of images into one feature vector each.
pub trait FeatureExtractor {
    /// What the features depend on (the cache bucket).
    fn id(&self) -> &ExtractorId;
    /// Features of `images`, one `Vec` per image, in order.
    fn extract(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>>;
}

/// The name `metrics.json` and the cache use for a resize convention.
pub fn resize_mode_name(mode: ResizeMode) -> &'static str {
    match mode {
        ResizeMode::CleanFid => "clean-fid",
        ResizeMode::PytorchFid => "pytorch-fid",
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// pytorch-fid's FID InceptionV3 with a resize convention.
#[derive(Debug)]
pub struct InceptionExtractor {
    model: FidInceptionV3,
    resize: ResizeMode,
    device: Device,
    id: ExtractorId,
}

impl InceptionExtractor {
    /// Loads the weights (one safetensors file with pytorch-fid's keys, see
    /// `tools/convert_fid_inception.py`).
    pub fn load(path: &Path, resize: ResizeMode, device: &Device) -> Result<Self> {
        let (_, fingerprint) = fingerprint_file(path)?;
        let model = FidInceptionV3::load(path, device)?;
        let id = ExtractorId::new(
            "fid-inception-v3",
            &file_name(path),
            fingerprint,
            &format!("resize={}", resize_mode_name(resize)),
        );
        Ok(Self {
            model,
            resize,
            device: device.clone(),
            id,
        })
    }

    /// The resize convention.
    pub fn resize(&self) -> ResizeMode {
        self.resize
    }
}

impl FeatureExtractor for InceptionExtractor {
    fn id(&self) -> &ExtractorId {
        &self.id
    }

    fn extract(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let inputs = images
            .iter()
            .map(|img| {
                let (w, h) = (img.width() as usize, img.height() as usize);
                let chw = rgb8_to_chw(img.as_raw(), h, w)?;
                let t = Tensor::from_vec(chw, (3, h, w), &Device::Cpu)?;
                Ok(resize_for_fid(&t, self.resize)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = Tensor::stack(&inputs, 0)?.to_device(&self.device)?;
        Ok(self.model.features(&batch)?.to_vec2::<f32>()?)
    }
}

/// A transformers `CLIPModel` folder's image tower (CLIP-I, and CLIP-T's image side).
#[derive(Debug)]
pub struct ClipExtractor {
    model: ClipModel,
    id: ExtractorId,
}

impl ClipExtractor {
    /// Loads a `CLIPModel` folder (`config.json`, `model.safetensors`,
    /// `preprocessor_config.json`, tokenizer files).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let fingerprint = fingerprint_dir(dir)?;
        let model = ClipModel::load(dir, device)?;
        // The image processor's settings live in the folder, so the fingerprint covers them.
        let id = ExtractorId::new(
            "clip-image",
            &file_name(dir),
            fingerprint,
            "processor=folder",
        );
        Ok(Self { model, id })
    }

    /// The model (for text embeddings).
    pub fn model(&self) -> &ClipModel {
        &self.model
    }
}

impl FeatureExtractor for ClipExtractor {
    fn id(&self) -> &ExtractorId {
        &self.id
    }

    fn extract(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.model.embed_images(images)?.to_vec2::<f32>()?)
    }
}

/// The CSD style descriptor (one safetensors file from `tools/convert_csd.py`).
#[derive(Debug)]
pub struct CsdExtractor {
    model: CsdModel,
    id: ExtractorId,
}

impl CsdExtractor {
    /// Loads a converted CSD file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (_, fingerprint) = fingerprint_file(path)?;
        let model = CsdModel::load(path, device)?;
        let id = ExtractorId::new(
            "csd-style",
            &file_name(path),
            fingerprint,
            &format!("size={}", model.processor().size),
        );
        Ok(Self { model, id })
    }
}

impl FeatureExtractor for CsdExtractor {
    fn id(&self) -> &ExtractorId {
        &self.id
    }

    fn extract(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.model.embed_images(images)?.to_vec2::<f32>()?)
    }
}

/// A DINO (`ViTModel`) or DINOv2 (`Dinov2Model`) folder's class-token embedding.
#[derive(Debug)]
pub struct DinoExtractor {
    model: DinoModel,
    id: ExtractorId,
}

impl DinoExtractor {
    /// Loads a transformers `ViTModel` / `Dinov2Model` folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let fingerprint = fingerprint_dir(dir)?;
        let model = DinoModel::load(dir, device)?;
        let id = ExtractorId::new("dino-cls", &file_name(dir), fingerprint, "processor=folder");
        Ok(Self { model, id })
    }
}

impl FeatureExtractor for DinoExtractor {
    fn id(&self) -> &ExtractorId {
        &self.id
    }

    fn extract(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.model.embed_images(images)?.to_vec2::<f32>()?)
    }
}

/// How many images an extractor ran on, and how many came from its cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtractionStats {
    /// Images the network ran on.
    pub extracted: usize,
    /// Images whose features the cache held.
    pub cached: usize,
}

/// What [`extract_features`] returns.
#[derive(Debug, Clone, Default)]
pub struct ExtractedFeatures {
    /// `features[e][i]`: extractor `e`'s feature vector of image `i`.
    pub features: Vec<Vec<Vec<f32>>>,
    /// Per extractor: images extracted and found cached.
    pub stats: Vec<ExtractionStats>,
}

/// Features of `images` for each `(extractor, cache)` pair, in the pairs' order. Images are decoded only when some extractor's cache
/// misses them, `batch_size` at a time; progress is reported as one phase over those
/// images. A file that cannot be read or decoded is an error naming it.
pub fn extract_features(
    images: &[EvalImage],
    extractors: &[(&dyn FeatureExtractor, &FeatureCache)],
    batch_size: usize,
    progress: &mut dyn Progress,
) -> Result<ExtractedFeatures> {
    if batch_size == 0 {
        return Err(Error::InvalidRequest(
            "the batch size must be at least 1".into(),
        ));
    }
    let hashes = images
        .iter()
        .map(EvalImage::content_hash)
        .collect::<Result<Vec<_>>>()?;
    let mut features: Vec<Vec<Option<Vec<f32>>>> = extractors
        .iter()
        .map(|(_, cache)| hashes.iter().map(|&h| cache.get(h)).collect())
        .collect();
    let mut stats: Vec<ExtractionStats> = features
        .iter()
        .map(|f| ExtractionStats {
            extracted: 0,
            cached: f.iter().filter(|v| v.is_some()).count(),
        })
        .collect();
    let todo: Vec<usize> = (0..images.len())
        .filter(|&i| features.iter().any(|f| f[i].is_none()))
        .collect();
    if !todo.is_empty() {
        progress.begin("features", todo.len());
        for chunk in todo.chunks(batch_size) {
            let decoded = chunk
                .iter()
                .map(|&i| images[i].load())
                .collect::<Result<Vec<_>>>()?;
            for (e, (extractor, cache)) in extractors.iter().enumerate() {
                let (idx, imgs): (Vec<usize>, Vec<RgbImage>) = chunk
                    .iter()
                    .zip(&decoded)
                    .filter(|(&i, _)| features[e][i].is_none())
                    .map(|(&i, img)| (i, img.clone()))
                    .unzip();
                if idx.is_empty() {
                    continue;
                }
                let out = extractor.extract(&imgs).map_err(|err| {
                    let names: Vec<String> = idx.iter().map(|&i| images[i].name()).collect();
                    Error::msg(format!(
                        "{} features of {}: {err}",
                        extractor.id().kind,
                        names.join(", ")
                    ))
                })?;
                for (&i, f) in idx.iter().zip(out) {
                    cache.put(hashes[i], &f)?;
                    features[e][i] = Some(f);
                }
                stats[e].extracted += idx.len();
            }
            progress.advance(chunk.len());
        }
        progress.finish();
    }
    let features = features
        .into_iter()
        .map(|f| f.into_iter().map(|v| v.unwrap_or_default()).collect())
        .collect();
    Ok(ExtractedFeatures { features, stats })
}
