//! `styleforge eval`: how close generated images are to a style, and how well they follow
//! their prompts (issue #6).
//!
//! Metrics, each computed only when its model is given:
//!
//! - **FID** (Heusel et al., 2017) and **KID** (Bińkowski et al., 2018) between the
//!   generated and the reference images, on pytorch-fid's FID InceptionV3 pool3 features
//!   (the maths is in [`styleforge_eval`]). Images reach 299×299 by the clean-fid or the
//!   pytorch-fid resize ([`ResizeMode`]); numbers are comparable only within one convention.
//! - **CLIP-T**: `100 · cos(image, content prompt)` (torchmetrics' `CLIPScore`; the overall
//!   value clamps the mean at 0), against the prompt with its style token removed
//!   ([`content_prompt`]), as the StyleForge paper measures text fidelity. Also per prompt.
//! - **CLIP-I**: the mean cosine similarity of the CLIP image embeddings over every
//!   generated × reference pair.
//! - **CSD style** (Somepalli et al., 2024): the mean cosine of CSD style embeddings over
//!   every generated × reference pair, per generated image and overall, and its
//!   CSLS-corrected form (hubness-corrected; [`styleforge_eval::style`]). Style only: a
//!   model that copies the references' subjects does not score by that.
//! - **DINO content**: the cosine of each generated image's DINO / DINOv2 class-token
//!   embedding with its content reference ([`EvalInputs::content`], e.g. the img2img input).
//! - **DINO leak**: the mean DINO cosine over generated × style-reference pairs; high means
//!   the subjects of the style images were copied.
//!
//! Submodules: [`images`] (image sets), [`prompts`] (prompt sources, content prompts),
//! [`cache`] (per-image feature cache), [`features`] (batched extraction), [`result`]
//! (`metrics.json`), [`report`] (`report.html`). FID of sets smaller than the feature
//! dimension takes `styleforge_eval`'s exact `n × n` route (seconds, not ~25 s). [`evaluate`] runs it all; [`EvalResult`] is what `metrics.json` holds.
//!
//! ```no_run
//! use styleforge::evaluation::{evaluate, report, EvalSettings, ImageSet};
//! # fn main() -> styleforge::Result<()> {
//! let mut settings = EvalSettings::new(
//!     ImageSet::Folder("generated".into()),
//!     ImageSet::Folder("style".into()),
//! );
//! settings.inception = Some("pt_inception-2015-12-05.safetensors".into());
//! settings.clip = Some("clip-vit-large-patch14".into());
//! let result = evaluate(&settings, &mut styleforge::progress::NoProgress)?;
//! report::write_outputs(std::path::Path::new("eval"), &result, &settings.inputs)?;
//! # Ok(())
//! # }
//! ```

pub mod cache;
pub mod features;
pub mod images;
pub mod prompts;
pub mod protocol;
pub mod report;
pub mod result;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use styleforge_eval::{FeatureMatrix, KidConfig, FID_RECOMMENDED_MIN_SAMPLES};

pub use cache::{default_cache_dir, ExtractorId, FeatureCache};
pub use features::{
    extract_features, resize_mode_name, ClipExtractor, CsdExtractor, DinoExtractor,
    ExtractedFeatures, ExtractionStats, FeatureExtractor, InceptionExtractor,
};
pub use images::{list_images, EvalImage, ImageSet, NamedImage};
pub use prompts::{content_prompt, read_prompts_file, DEFAULT_STYLE_TOKENS};
pub use result::{
    rfc3339_utc, Counts, CslsSummary, EvalResult, ImageRecord, KidSummary, MetricRow, Metrics,
    ModelRecord, ModelsRecord, PromptScore, SettingsRecord,
};
pub use styleforge_models::inception::ResizeMode;

use crate::error::{Error, Result};
use crate::models::clip_vision::{clip_i, clip_t_score, clip_t_scores};
use crate::progress::Progress;

/// Default number of images per forward pass.
pub const DEFAULT_BATCH_SIZE: usize = 16;

/// Where the prompts of the generated images come from (see [`prompts`]).
#[derive(Debug, Clone, Default)]
pub enum PromptSource {
    /// Each image's own prompt: a PNG's `parameters` chunk or [`NamedImage::prompt`].
    #[default]
    Embedded,
    /// A prompts file: one prompt per line, image `i` gets line `i mod L`.
    File(PathBuf),
    /// Prompts given in code, applied as the lines of a prompts file.
    Lines(Vec<String>),
}

/// The images to compare.
#[derive(Debug, Clone)]
pub struct EvalInputs {
    /// The generated images.
    pub generated: ImageSet,
    /// The reference (style) images.
    pub reference: ImageSet,
    /// Prompts of the generated images, for CLIP-T.
    pub prompts: PromptSource,
    /// Content references for the DINO content score: one image (compared with every
    /// generated image, e.g. the img2img input) or one per generated image, paired in order.
    pub content: Option<ImageSet>,
}

/// Where extracted features are cached.
#[derive(Debug, Clone, Default)]
pub enum CacheLocation {
    /// [`default_cache_dir`] (caching is off when it cannot be determined).
    #[default]
    Default,
    /// This folder.
    Dir(PathBuf),
    /// No caching.
    Disabled,
}

/// Everything an evaluation needs.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// The image sets and prompts.
    pub inputs: EvalInputs,
    /// FID InceptionV3 weights (one safetensors file); `None` skips FID and KID.
    pub inception: Option<PathBuf>,
    /// A transformers `CLIPModel` folder; `None` skips CLIP-T and CLIP-I.
    pub clip: Option<PathBuf>,
    /// A CSD file made by `tools/convert_csd.py`; `None` skips the CSD style score.
    pub csd: Option<PathBuf>,
    /// A transformers `ViTModel` (DINO) / `Dinov2Model` folder; `None` skips the DINO
    /// content and leak scores.
    pub dino: Option<PathBuf>,
    /// CSLS neighbourhood size (default [`styleforge_eval::style::DEFAULT_CSLS_K`]).
    pub csls_k: usize,
    /// How images are resized to the Inception input (default clean-fid).
    pub resize: ResizeMode,
    /// Images per forward pass (default 16).
    pub batch_size: usize,
    /// KID subset pairs (default 100).
    pub kid_subsets: usize,
    /// KID subset size; `None` uses `min(n_generated, n_reference, 1000)`.
    pub kid_subset_size: Option<usize>,
    /// Seed of the KID subset draws (default 0).
    pub seed: u64,
    /// Feature cache.
    pub cache: CacheLocation,
    /// Style tokens removed from prompts for CLIP-T (default [`DEFAULT_STYLE_TOKENS`]).
    pub style_tokens: Vec<String>,
    /// Where the networks run.
    pub device: Device,
}

impl EvalSettings {
    /// Settings with the defaults: embedded prompts, no models (set at least one), clean-fid
    /// resize, batch 16, KID 100 subsets of `min(n, 1000)` with seed 0, the default cache,
    /// the default style tokens, CPU.
    pub fn new(generated: ImageSet, reference: ImageSet) -> Self {
        Self {
            inputs: EvalInputs {
                generated,
                reference,
                prompts: PromptSource::Embedded,
                content: None,
            },
            inception: None,
            clip: None,
            csd: None,
            dino: None,
            csls_k: styleforge_eval::style::DEFAULT_CSLS_K,
            resize: ResizeMode::CleanFid,
            batch_size: DEFAULT_BATCH_SIZE,
            kid_subsets: styleforge_eval::kid::DEFAULT_SUBSETS,
            kid_subset_size: None,
            seed: 0,
            cache: CacheLocation::Default,
            style_tokens: DEFAULT_STYLE_TOKENS.iter().map(|s| s.to_string()).collect(),
            device: Device::Cpu,
        }
    }

    /// The cache root folder, if caching is on.
    pub fn cache_root(&self) -> Option<PathBuf> {
        match &self.cache {
            CacheLocation::Default => default_cache_dir(),
            CacheLocation::Dir(d) => Some(d.clone()),
            CacheLocation::Disabled => None,
        }
    }
}

/// The loaded feature extractors, reusable across evaluations.
#[derive(Debug, Default)]
pub struct EvalModels {
    /// FID InceptionV3 with its resize convention.
    pub inception: Option<InceptionExtractor>,
    /// CLIP.
    pub clip: Option<ClipExtractor>,
    /// CSD.
    pub csd: Option<CsdExtractor>,
    /// DINO / DINOv2.
    pub dino: Option<DinoExtractor>,
}

impl EvalModels {
    /// Whether no model is loaded.
    pub fn is_empty(&self) -> bool {
        self.inception.is_none() && self.clip.is_none() && self.csd.is_none() && self.dino.is_none()
    }
}

const NOTHING_TO_COMPUTE: &str = "no metric to compute: give the FID Inception weights (for \
     FID and KID), a CLIP model folder (for CLIP-T and CLIP-I), a CSD file (style) and/or a \
     DINO model folder (content and leakage)";

impl EvalModels {
    /// Loads the models `settings` names (`inception` with `resize`, `clip`, `csd`, `dino`)
    /// onto `settings.device`. Errors when it names none.
    pub fn load(settings: &EvalSettings) -> Result<Self> {
        if settings.inception.is_none()
            && settings.clip.is_none()
            && settings.csd.is_none()
            && settings.dino.is_none()
        {
            return Err(Error::InvalidRequest(NOTHING_TO_COMPUTE.into()));
        }
        let inception = settings
            .inception
            .as_deref()
            .map(|p| InceptionExtractor::load(p, settings.resize, &settings.device))
            .transpose()?;
        let clip = settings
            .clip
            .as_deref()
            .map(|p| ClipExtractor::load(p, &settings.device))
            .transpose()?;
        let csd = settings
            .csd
            .as_deref()
            .map(|p| CsdExtractor::load(p, &settings.device))
            .transpose()?;
        let dino = settings
            .dino
            .as_deref()
            .map(|p| DinoExtractor::load(p, &settings.device))
            .transpose()?;
        Ok(Self {
            inception,
            clip,
            csd,
            dino,
        })
    }
}

/// Loads the models `settings` names and evaluates ([`evaluate_with`]).
pub fn evaluate(settings: &EvalSettings, progress: &mut dyn Progress) -> Result<EvalResult> {
    let models = EvalModels::load(settings)?;
    evaluate_with(settings, &models, progress)
}

/// Wraps a metric error with what was being computed, for `map_err`.
pub(crate) fn eval_error(what: &str) -> impl Fn(styleforge_eval::EvalError) -> Error + '_ {
    move |source| Error::Metric {
        what: what.to_string(),
        source,
    }
}

/// Evaluates `settings.inputs` with already loaded `models` (`settings.inception`,
/// `settings.clip` and `settings.resize` are then only recorded; the models' own settings
/// apply). Features come from the cache where present.
pub fn evaluate_with(
    settings: &EvalSettings,
    models: &EvalModels,
    progress: &mut dyn Progress,
) -> Result<EvalResult> {
    if models.is_empty() {
        return Err(Error::InvalidRequest(NOTHING_TO_COMPUTE.into()));
    }
    let inputs = &settings.inputs;
    let generated = inputs.generated.items()?;
    let reference = inputs.reference.items()?;
    for (set, items) in [
        (&inputs.generated, &generated),
        (&inputs.reference, &reference),
    ] {
        if items.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "no images in {}",
                set.describe()
            )));
        }
    }
    let mut warnings = Vec::new();
    let mut warn = |w: String| {
        tracing::warn!("{w}");
        warnings.push(w);
    };

    // Prompts and content prompts of the generated images.
    let lines = match &inputs.prompts {
        PromptSource::Embedded => None,
        PromptSource::File(p) => Some(read_prompts_file(p)?),
        PromptSource::Lines(l) => Some(l.clone()),
    };
    let tokens: Vec<&str> = settings.style_tokens.iter().map(String::as_str).collect();
    let mut gen_records = Vec::with_capacity(generated.len());
    for (i, img) in generated.iter().enumerate() {
        let prompt = match &lines {
            Some(l) => prompts::prompt_for_index(l, i).map(str::to_string),
            None => img.embedded_prompt()?,
        };
        let content = prompt.as_deref().map(|p| content_prompt(p, &tokens));
        gen_records.push(ImageRecord {
            name: img.name(),
            path: img.path().map(Path::to_path_buf),
            prompt,
            content_prompt: content,
            clip_t: None,
            csd: None,
            dino_content: None,
            dino_leak: None,
        });
    }
    let ref_records: Vec<ImageRecord> = reference
        .iter()
        .map(|img| ImageRecord {
            name: img.name(),
            path: img.path().map(Path::to_path_buf),
            prompt: None,
            content_prompt: None,
            clip_t: None,
            csd: None,
            dino_content: None,
            dino_leak: None,
        })
        .collect();

    // Features of both sets, through the caches.
    let cache_root = settings.cache_root();
    if matches!(settings.cache, CacheLocation::Default) && cache_root.is_none() {
        warn(
            "no cache folder (neither XDG_CACHE_HOME nor HOME is set): features are not cached"
                .into(),
        );
    }
    let open_cache = |id: &ExtractorId| match &cache_root {
        Some(root) => FeatureCache::open(root, id),
        None => Ok(FeatureCache::disabled()),
    };
    let mut extractors: Vec<(&dyn FeatureExtractor, FeatureCache)> = Vec::new();
    if let Some(m) = &models.inception {
        extractors.push((m, open_cache(m.id())?));
    }
    if let Some(m) = &models.clip {
        extractors.push((m, open_cache(m.id())?));
    }
    if let Some(m) = &models.csd {
        extractors.push((m, open_cache(m.id())?));
    }
    if let Some(m) = &models.dino {
        extractors.push((m, open_cache(m.id())?));
    }
    let all: Vec<EvalImage> = generated.iter().chain(&reference).cloned().collect();
    let pairs: Vec<(&dyn FeatureExtractor, &FeatureCache)> =
        extractors.iter().map(|(e, c)| (*e, c)).collect();
    let ExtractedFeatures { features, stats } =
        extract_features(&all, &pairs, settings.batch_size, progress)?;
    let n_gen = generated.len();
    let n_ref = reference.len();
    let mut feature_iter = features.into_iter().zip(stats);

    let mut metrics = Metrics::default();
    let mut records = ModelsRecord::default();
    let mut per_prompt: Vec<PromptScore> = Vec::new();
    if let Some(m) = &models.inception {
        let (f, stats) = feature_iter.next().expect("one feature set per extractor");
        records.inception = Some(ModelRecord {
            path: settings.inception.clone().unwrap_or_default(),
            id: m.id().clone(),
            extraction: stats,
        });
        let small = n_gen.min(n_ref);
        if small < 2 {
            warn(format!(
                "FID and KID skipped: they need at least 2 images per set ({n_gen} generated, {n_ref} reference)"
            ));
        } else {
            let dim = f[0].len();
            let flat_gen: Vec<f32> = f[..n_gen].concat();
            let flat_ref: Vec<f32> = f[n_gen..].concat();
            let x = FeatureMatrix::new(&flat_gen, dim).map_err(eval_error("FID"))?;
            let y = FeatureMatrix::new(&flat_ref, dim).map_err(eval_error("FID"))?;
            metrics.fid = Some(styleforge_eval::fid(&x, &y).map_err(eval_error("FID"))?);
            let kid_config = KidConfig {
                subsets: settings.kid_subsets,
                subset_size: settings.kid_subset_size,
                seed: settings.seed,
                ..KidConfig::default()
            };
            let subset_size = settings
                .kid_subset_size
                .unwrap_or_else(|| small.min(styleforge_eval::kid::DEFAULT_SUBSET_SIZE));
            let kid = styleforge_eval::kid(&x, &y, &kid_config).map_err(|e| {
                Error::InvalidRequest(format!(
                    "KID: {e}; choose a KID subset size between 2 and the smaller set's \
                     size ({small})"
                ))
            })?;
            metrics.kid = Some(KidSummary {
                mean: kid.mean,
                std: kid.std,
                subsets: settings.kid_subsets,
                subset_size,
                seed: settings.seed,
            });
            if small < FID_RECOMMENDED_MIN_SAMPLES {
                warn(format!(
                    "small sets ({n_gen} generated, {n_ref} reference images; \
                     {FID_RECOMMENDED_MIN_SAMPLES}+ recommended): FID is biased upward at this \
                     size and KID has a large spread; compare only runs with the same image counts"
                ));
            }
        }
    }

    if let Some(m) = &models.clip {
        let (f, stats) = feature_iter.next().expect("one feature set per extractor");
        records.clip = Some(ModelRecord {
            path: settings.clip.clone().unwrap_or_default(),
            id: m.id().clone(),
            extraction: stats,
        });
        let dim = f[0].len();
        let device = Device::Cpu;
        let embeds = |rows: &[Vec<f32>]| -> Result<Tensor> {
            Ok(Tensor::from_vec(rows.concat(), (rows.len(), dim), &device)?)
        };
        let gen_embeds = embeds(&f[..n_gen])?;
        let ref_embeds = embeds(&f[n_gen..])?;
        metrics.clip_i = Some(clip_i(&gen_embeds, &ref_embeds)? as f64);

        // CLIP-T over the images with a non-empty content prompt.
        let scored: Vec<usize> = (0..n_gen)
            .filter(|&i| {
                gen_records[i]
                    .content_prompt
                    .as_deref()
                    .is_some_and(|c| !c.is_empty())
            })
            .collect();
        let emptied = (0..n_gen)
            .filter(|&i| gen_records[i].content_prompt.as_deref() == Some(""))
            .count();
        if emptied > 0 {
            warn(format!(
                "{emptied} generated image(s) have a prompt that is only a style phrase: left out of CLIP-T"
            ));
        }
        let missing = (0..n_gen)
            .filter(|&i| gen_records[i].prompt.is_none())
            .count();
        if missing > 0 {
            warn(format!(
                "{missing} of {n_gen} generated images have no prompt (no --prompts file, no PNG parameters): left out of CLIP-T"
            ));
        }
        if !scored.is_empty() {
            let (overall, scores) = clip_t_metrics(m, &gen_embeds, &scored, &mut gen_records)?;
            metrics.clip_t = Some(overall);
            per_prompt = scores;
        }
    }

    if let Some(m) = &models.csd {
        let (f, stats) = feature_iter.next().expect("one feature set per extractor");
        records.csd = Some(ModelRecord {
            path: settings.csd.clone().unwrap_or_default(),
            id: m.id().clone(),
            extraction: stats,
        });
        let (gen_rows, ref_rows, dim) = (f[..n_gen].concat(), f[n_gen..].concat(), f[0].len());
        let x = FeatureMatrix::new(&gen_rows, dim).map_err(eval_error("CSD"))?;
        let y = FeatureMatrix::new(&ref_rows, dim).map_err(eval_error("CSD"))?;
        let s = styleforge_eval::style::mean_cosine(&x, &y).map_err(eval_error("CSD"))?;
        for (rec, v) in gen_records.iter_mut().zip(&s.per_image) {
            rec.csd = Some(*v);
        }
        metrics.csd = Some(s.mean);
        let csls = styleforge_eval::style::csls(&x, &y, settings.csls_k)
            .map_err(eval_error("CSD CSLS"))?;
        if settings.csls_k >= n_gen && settings.csls_k >= n_ref {
            warn(format!(
                "CSD CSLS: k = {} covers both sets ({n_gen} generated, {n_ref} reference), so \
                 its overall mean is 0 by construction (only the per-image values rank); use \
                 more images or a smaller --csls-k",
                settings.csls_k
            ));
        }
        metrics.csd_csls = Some(CslsSummary {
            mean: csls.mean,
            k: settings.csls_k,
        });
    }

    if inputs.content.is_some() && models.dino.is_none() {
        warn(
            "content references given but no DINO model: the DINO content score is skipped".into(),
        );
    }
    if let Some(m) = &models.dino {
        let (f, stats) = feature_iter.next().expect("one feature set per extractor");
        let (gen_rows, ref_rows, dim) = (f[..n_gen].concat(), f[n_gen..].concat(), f[0].len());
        let x = FeatureMatrix::new(&gen_rows, dim).map_err(eval_error("DINO"))?;
        let y = FeatureMatrix::new(&ref_rows, dim).map_err(eval_error("DINO"))?;
        let leak = styleforge_eval::style::mean_cosine(&x, &y).map_err(eval_error("DINO leak"))?;
        for (rec, v) in gen_records.iter_mut().zip(&leak.per_image) {
            rec.dino_leak = Some(*v);
        }
        metrics.dino_leak = Some(leak.mean);
        let mut stats = stats;
        if let Some(set) = &inputs.content {
            let content = set.items()?;
            if content.len() != 1 && content.len() != n_gen {
                return Err(Error::InvalidRequest(format!(
                    "{} has {} images: give one content reference (compared with every \
                     generated image) or one per generated image ({n_gen}), paired in order",
                    set.describe(),
                    content.len()
                )));
            }
            let cache = open_cache(m.id())?;
            let pair: (&dyn FeatureExtractor, &FeatureCache) = (m, &cache);
            let ExtractedFeatures {
                features: cf,
                stats: cs,
            } = extract_features(&content, &[pair], settings.batch_size, progress)?;
            stats.extracted += cs[0].extracted;
            stats.cached += cs[0].cached;
            let rows: Vec<f32> = (0..n_gen)
                .flat_map(|i| cf[0][if content.len() == 1 { 0 } else { i }].clone())
                .collect();
            let c = FeatureMatrix::new(&rows, dim).map_err(eval_error("DINO content"))?;
            let paired = styleforge_eval::style::paired_cosine(&x, &c)
                .map_err(eval_error("DINO content"))?;
            for (rec, v) in gen_records.iter_mut().zip(&paired) {
                rec.dino_content = Some(*v);
            }
            metrics.dino_content = Some(paired.iter().sum::<f64>() / paired.len() as f64);
        }
        records.dino = Some(ModelRecord {
            path: settings.dino.clone().unwrap_or_default(),
            id: m.id().clone(),
            extraction: stats,
        });
    }

    let with_prompt = gen_records
        .iter()
        .filter(|r| r.content_prompt.as_deref().is_some_and(|c| !c.is_empty()))
        .count();
    let prompts = match &inputs.prompts {
        PromptSource::Embedded => "embedded (PNG parameters)".to_string(),
        PromptSource::File(p) => p.display().to_string(),
        PromptSource::Lines(l) => format!("{} prompts given in code", l.len()),
    };
    Ok(EvalResult {
        metrics,
        counts: Counts {
            generated: n_gen,
            reference: n_ref,
            with_prompt,
        },
        clip_t_per_prompt: per_prompt,
        warnings,
        generated: gen_records,
        reference: ref_records,
        settings: SettingsRecord {
            generated: inputs.generated.describe(),
            reference: inputs.reference.describe(),
            content: inputs.content.as_ref().map(ImageSet::describe),
            prompts,
            resize: resize_mode_name(
                models
                    .inception
                    .as_ref()
                    .map_or(settings.resize, |m| m.resize()),
            )
            .to_string(),
            batch_size: settings.batch_size,
            kid_subsets: settings.kid_subsets,
            kid_subset_size: settings.kid_subset_size,
            seed: settings.seed,
            cache: cache_root,
            style_tokens: settings.style_tokens.clone(),
            device: format!("{:?}", settings.device.location()),
        },
        models: records,
        version: env!("CARGO_PKG_VERSION").to_string(),
        timestamp: rfc3339_utc(std::time::SystemTime::now()),
    })
}

/// CLIP-T of the generated images `scored` (indices into `records`, each with a non-empty
/// content prompt), given all generated image embeddings `gen_embeds` `[n, d]`: the overall
/// score (torchmetrics' rule), each record's own score, and the per-prompt scores (by the
/// prompt as given, in order of first appearance).
fn clip_t_metrics(
    clip: &ClipExtractor,
    gen_embeds: &Tensor,
    scored: &[usize],
    records: &mut [ImageRecord],
) -> Result<(f64, Vec<PromptScore>)> {
    let device = gen_embeds.device().clone();
    let indices = |ix: &[usize]| -> Result<Tensor> {
        let ix: Vec<u32> = ix.iter().map(|&i| i as u32).collect();
        Ok(Tensor::new(ix.as_slice(), &device)?)
    };
    // Each distinct content prompt is encoded once.
    let mut unique: Vec<&str> = Vec::new();
    let mut row_of = Vec::with_capacity(scored.len());
    for &i in scored {
        let c = records[i].content_prompt.as_deref().unwrap_or_default();
        let row = unique.iter().position(|u| *u == c).unwrap_or_else(|| {
            unique.push(c);
            unique.len() - 1
        });
        row_of.push(row);
    }
    let text = clip
        .model()
        .encode_prompts(&unique)?
        .to_device(&device)?
        .to_dtype(candle_core::DType::F32)?;
    let text_rows = text.index_select(&indices(&row_of)?, 0)?;
    let image_rows = gen_embeds.index_select(&indices(scored)?, 0)?;
    let overall = clip_t_score(&image_rows, &text_rows)? as f64;
    let per_image = clip_t_scores(&image_rows, &text_rows)?;
    for (k, &i) in scored.iter().enumerate() {
        records[i].clip_t = Some(per_image[k] as f64);
    }
    // Group rows (positions in `scored`) by the prompt as given.
    let mut groups: Vec<(String, usize, Vec<usize>)> = Vec::new();
    for (k, &i) in scored.iter().enumerate() {
        let p = records[i].prompt.clone().unwrap_or_default();
        match groups.iter_mut().find(|(q, _, _)| *q == p) {
            Some((_, _, ks)) => ks.push(k),
            None => groups.push((p, i, vec![k])),
        }
    }
    let mut per_prompt = Vec::with_capacity(groups.len());
    for (prompt, first, ks) in groups {
        let idx = indices(&ks)?;
        let score = clip_t_score(
            &image_rows.index_select(&idx, 0)?,
            &text_rows.index_select(&idx, 0)?,
        )?;
        per_prompt.push(PromptScore {
            prompt,
            content_prompt: records[first].content_prompt.clone().unwrap_or_default(),
            images: ks.len(),
            clip_t: score as f64,
            first_image: first,
        });
    }
    Ok((overall, per_prompt))
}
