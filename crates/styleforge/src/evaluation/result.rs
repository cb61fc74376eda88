//! What an evaluation found ([`EvalResult`], serialised as `metrics.json`) and the metric
//! table printed from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cache::ExtractorId;
use super::features::ExtractionStats;
use crate::error::{Error, Result};

/// KID as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KidSummary {
    /// Mean MMD² over the subsets.
    pub mean: f64,
    /// Population standard deviation over the subsets.
    pub std: f64,
    /// Number of subset pairs.
    pub subsets: usize,
    /// Subset size.
    pub subset_size: usize,
    /// Seed of the subset draws.
    pub seed: u64,
}

/// The metric values; `None` where skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// FID (needs Inception and ≥ 2 images per set).
    pub fid: Option<f64>,
    /// KID (needs Inception and ≥ 2 images per set).
    pub kid: Option<KidSummary>,
    /// CLIP-T over every generated image with a prompt: `max(mean(100 · cos), 0)`.
    pub clip_t: Option<f64>,
    /// CLIP-I: mean cosine over generated × reference pairs.
    pub clip_i: Option<f64>,
    /// CSD style score: mean cosine of the CSD style embeddings over generated × reference
    /// pairs.
    #[serde(default)]
    pub csd: Option<f64>,
    /// The CSD score's CSLS-corrected form (see [`styleforge_eval::style`]).
    #[serde(default)]
    pub csd_csls: Option<CslsSummary>,
    /// DINO content score: mean cosine of each generated image with its content reference
    /// (needs content references, e.g. img2img inputs).
    #[serde(default)]
    pub dino_content: Option<f64>,
    /// DINO content leakage: mean cosine over generated × style-reference pairs (high: the
    /// subjects of the style images were copied).
    #[serde(default)]
    pub dino_leak: Option<f64>,
}

/// CSLS as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CslsSummary {
    /// Mean CSLS over generated × reference pairs.
    pub mean: f64,
    /// The neighbourhood size asked for (clamped to each set's size when computed).
    pub k: usize,
}

/// Image counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Generated images.
    pub generated: usize,
    /// Reference images.
    pub reference: usize,
    /// Generated images with a (non-empty) content prompt, i.e. in CLIP-T.
    pub with_prompt: usize,
}

/// CLIP-T of the images generated from one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptScore {
    /// The prompt as given.
    pub prompt: String,
    /// The content prompt CLIP-T was measured against.
    pub content_prompt: String,
    /// How many generated images have this prompt.
    pub images: usize,
    /// `max(mean(100 · cos), 0)` over them.
    pub clip_t: f64,
    /// Index (into [`EvalResult::generated`]) of the first of them.
    pub first_image: usize,
}

/// One evaluated image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// File name (or in-memory name).
    pub name: String,
    /// The file, when it is one.
    pub path: Option<PathBuf>,
    /// Its prompt (generated images only).
    pub prompt: Option<String>,
    /// Its content prompt (generated images with a prompt only).
    pub content_prompt: Option<String>,
    /// Its CLIP-T, `max(100 · cos, 0)` (when computed).
    pub clip_t: Option<f64>,
    /// Its CSD style score: mean cosine to the references (generated images, when computed).
    #[serde(default)]
    pub csd: Option<f64>,
    /// Its DINO cosine with its content reference (when there is one).
    #[serde(default)]
    pub dino_content: Option<f64>,
    /// Its DINO leakage: mean cosine to the style references (when computed).
    #[serde(default)]
    pub dino_leak: Option<f64>,
}

/// The settings an evaluation ran with, as recorded in `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsRecord {
    /// The generated set ([`ImageSet::describe`](crate::evaluation::ImageSet::describe)).
    pub generated: String,
    /// The reference set.
    pub reference: String,
    /// The content references of the DINO content score, if any.
    #[serde(default)]
    pub content: Option<String>,
    /// Where prompts came from.
    pub prompts: String,
    /// `clean-fid` or `pytorch-fid`.
    pub resize: String,
    /// Images per forward pass.
    pub batch_size: usize,
    /// KID subset pairs.
    pub kid_subsets: usize,
    /// KID subset size asked for (`None`: the default).
    pub kid_subset_size: Option<usize>,
    /// KID seed.
    pub seed: u64,
    /// The feature cache root (`None`: off).
    pub cache: Option<PathBuf>,
    /// Style tokens removed for CLIP-T.
    pub style_tokens: Vec<String>,
    /// Where the networks ran.
    pub device: String,
}

/// A model used, as recorded in `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The path given.
    pub path: PathBuf,
    /// Its identity (file name, fingerprint, settings, code version).
    pub id: ExtractorId,
    /// How many images it ran on / found cached.
    pub extraction: ExtractionStats,
}

/// The models used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelsRecord {
    /// The FID InceptionV3.
    pub inception: Option<ModelRecord>,
    /// CLIP.
    pub clip: Option<ModelRecord>,
    /// CSD.
    #[serde(default)]
    pub csd: Option<ModelRecord>,
    /// DINO / DINOv2.
    #[serde(default)]
    pub dino: Option<ModelRecord>,
}

/// Everything an evaluation found; serialised as `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// The metric values.
    pub metrics: Metrics,
    /// Image counts.
    pub counts: Counts,
    /// CLIP-T per prompt, in order of first appearance.
    pub clip_t_per_prompt: Vec<PromptScore>,
    /// Things to know before trusting the numbers (small sets, skipped metrics).
    pub warnings: Vec<String>,
    /// The generated images, in evaluation order.
    pub generated: Vec<ImageRecord>,
    /// The reference images, in evaluation order.
    pub reference: Vec<ImageRecord>,
    /// The settings used.
    pub settings: SettingsRecord,
    /// The models used, with extraction counts.
    pub models: ModelsRecord,
    /// `styleforge` version.
    pub version: String,
    /// When the evaluation finished (UTC, RFC 3339).
    pub timestamp: String,
}

/// One line of the metric table (`styleforge eval`'s stdout and the report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricRow {
    /// Short id: `fid`, `kid`, `clip-t`, `clip-i`, `csd`, `csd-csls`, `dino-content`,
    /// `dino-leak`.
    pub id: &'static str,
    /// Metric name.
    pub name: &'static str,
    /// Value as text, or `skipped`.
    pub value: String,
    /// What it was computed on, or why it was skipped.
    pub detail: String,
}

impl EvalResult {
    /// Images the networks ran on in this evaluation, over all models (0 when every feature
    /// came from the cache).
    pub fn extracted(&self) -> usize {
        [
            &self.models.inception,
            &self.models.clip,
            &self.models.csd,
            &self.models.dino,
        ]
        .iter()
        .filter_map(|m| m.as_ref())
        .map(|m| m.extraction.extracted)
        .sum()
    }

    /// `metrics.json`'s text (pretty JSON).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            what: "the evaluation result".into(),
            source,
        })
    }

    /// Writes `metrics.json`'s text to `path` (atomically).
    pub fn save_json(&self, path: &Path) -> Result<()> {
        let mut text = self.to_json()?;
        text.push('\n');
        Ok(styleforge_models::files::write(path, text)?)
    }

    /// The metric table, one row per metric (skipped ones say why).
    pub fn metric_rows(&self) -> Vec<MetricRow> {
        let c = &self.counts;
        let m = &self.metrics;
        let sets = format!(
            "{} generated vs {} reference images",
            c.generated, c.reference
        );
        let resize = &self.settings.resize;
        let no_inception = "skipped: no FID Inception weights (--inception)";
        let no_clip = "skipped: no CLIP model (--clip)";
        let too_few = "skipped: needs at least 2 images per set";
        let has_inception = self.models.inception.is_some();
        let has_clip = self.models.clip.is_some();
        let skipped = |has: bool, why_not: &str| {
            if has {
                too_few.to_string()
            } else {
                why_not.to_string()
            }
        };
        let (fid, fid_detail) = match m.fid {
            Some(v) => (format!("{v:.4}"), format!("{sets}, {resize} resize")),
            None => ("skipped".into(), skipped(has_inception, no_inception)),
        };
        let (kid, kid_detail) = match &m.kid {
            Some(k) => (
                format!("{:.6} ± {:.6}", k.mean, k.std),
                format!(
                    "{} subsets of {}, seed {}, {resize} resize",
                    k.subsets, k.subset_size, k.seed
                ),
            ),
            None => ("skipped".into(), skipped(has_inception, no_inception)),
        };
        let (clip_t, clip_t_detail) = match m.clip_t {
            Some(v) => (
                format!("{v:.4}"),
                format!(
                    "{} images with a prompt, against content prompts (100·cos)",
                    c.with_prompt
                ),
            ),
            None if has_clip => (
                "skipped".into(),
                "skipped: no generated image has a prompt (--prompts or PNG parameters)".into(),
            ),
            None => ("skipped".into(), no_clip.to_string()),
        };
        let (clip_i, clip_i_detail) = match m.clip_i {
            Some(v) => (format!("{v:.4}"), format!("mean cosine over {sets}")),
            None => ("skipped".into(), no_clip.to_string()),
        };
        let no_csd = "skipped: no CSD model (--csd)";
        let no_dino = "skipped: no DINO model (--dino)";
        let has_dino = self.models.dino.is_some();
        let (csd, csd_detail) = match m.csd {
            Some(v) => (format!("{v:.4}"), format!("mean style cosine over {sets}")),
            None => ("skipped".into(), no_csd.to_string()),
        };
        let (csls, csls_detail) = match &m.csd_csls {
            Some(s) => (
                format!("{:.4}", s.mean),
                format!(
                    "2·cos − mean cosine to the k = {} nearest of each side",
                    s.k
                ),
            ),
            None => ("skipped".into(), no_csd.to_string()),
        };
        let (content, content_detail) = match m.dino_content {
            Some(v) => (
                format!("{v:.4}"),
                "mean cosine of each generated image with its content reference".to_string(),
            ),
            None if has_dino => (
                "skipped".into(),
                "skipped: no content references (--content)".to_string(),
            ),
            None => ("skipped".into(), no_dino.to_string()),
        };
        let (leak, leak_detail) = match m.dino_leak {
            Some(v) => (
                format!("{v:.4}"),
                format!("mean cosine over {sets} (lower: less content copied)"),
            ),
            None => ("skipped".into(), no_dino.to_string()),
        };
        vec![
            MetricRow {
                id: "fid",
                name: "FID",
                value: fid,
                detail: fid_detail,
            },
            MetricRow {
                id: "kid",
                name: "KID",
                value: kid,
                detail: kid_detail,
            },
            MetricRow {
                id: "clip-t",
                name: "CLIP-T",
                value: clip_t,
                detail: clip_t_detail,
            },
            MetricRow {
                id: "clip-i",
                name: "CLIP-I",
                value: clip_i,
                detail: clip_i_detail,
            },
            MetricRow {
                id: "csd",
                name: "CSD style",
                value: csd,
                detail: csd_detail,
            },
            MetricRow {
                id: "csd-csls",
                name: "CSD style (CSLS)",
                value: csls,
                detail: csls_detail,
            },
            MetricRow {
                id: "dino-content",
                name: "DINO content",
                value: content,
                detail: content_detail,
            },
            MetricRow {
                id: "dino-leak",
                name: "DINO leak",
                value: leak,
                detail: leak_detail,
            },
        ]
    }
}

/// `time` as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn rfc3339_utc(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(rfc3339_utc(t(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(t(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(t(1_764_302_575)), "2025-11-28T04:02:55Z");
    }
}
