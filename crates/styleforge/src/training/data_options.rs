//! How a fine-tuning run reads and sizes its StyleRef and Aux images beyond the training
//! square (`[data]` keys of the run config): the caption files' extension, loss masks
//! (`image.mask.png`, [`crate::data::mask`]) and aspect-ratio bucketing
//! ([`crate::data::buckets`]). With the defaults, images are read and trained exactly as
//! without these options.

use serde::{Deserialize, Serialize};

use crate::data::{BucketSpec, Buckets, ScanOptions};
use crate::error::{Error, Result};

/// The data options of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataOptions {
    /// Extension of caption files, with its dot (`.txt`).
    pub caption_extension: String,
    /// Weigh each StyleRef image's loss by its mask `<stem>.mask.png`.
    pub masked_loss: bool,
    /// Train StyleRef and Aux images in aspect-ratio buckets instead of squares.
    pub bucketing: bool,
    /// Bucket sides are multiples of this (`None`: 8 latent pixels, the VAE's factor × 8).
    pub bucket_step: Option<u32>,
    /// Largest long / short side ratio of a bucket.
    pub max_aspect: f64,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            caption_extension: ".txt".to_string(),
            masked_loss: false,
            bucketing: false,
            bucket_step: None,
            max_aspect: 2.0,
        }
    }
}

impl DataOptions {
    /// Checks the values that do not depend on the model.
    pub fn validate(&self) -> Result<()> {
        let ext = &self.caption_extension;
        let bad_ext = !ext.starts_with('.')
            || ext.len() < 2
            || ext.contains(['/', '\\'])
            || ext.eq_ignore_ascii_case(".mask.png")
            || crate::image_io::is_image_file(std::path::Path::new(&format!("x{ext}")));
        if bad_ext {
            return Err(Error::InvalidConfig(format!(
                "data.caption_extension {ext:?} must be a file extension with its dot, not an \
                 image's (e.g. \".txt\" or \".caption\")"
            )));
        }
        if self.bucket_step == Some(0) {
            return Err(Error::InvalidConfig(
                "data.bucket_step must be positive (leave it out for 8 latent pixels)".into(),
            ));
        }
        if !(self.max_aspect >= 1.0 && self.max_aspect.is_finite()) {
            return Err(Error::InvalidConfig(format!(
                "data.max_aspect must be at least 1 (got {})",
                self.max_aspect
            )));
        }
        Ok(())
    }

    /// The buckets of a run at `resolution` with a VAE that shrinks sides `vae_factor`
    /// times (`None` without bucketing); the step must be a multiple of that factor.
    pub fn buckets(&self, resolution: u32, vae_factor: u32) -> Result<Option<Buckets>> {
        if !self.bucketing {
            return Ok(None);
        }
        let step = self.bucket_step.unwrap_or(vae_factor * 8);
        if vae_factor == 0 || !step.is_multiple_of(vae_factor) {
            return Err(Error::InvalidConfig(format!(
                "data.bucket_step {step} must be a multiple of the VAE's downscale factor \
                 {vae_factor}"
            )));
        }
        Buckets::new(&BucketSpec {
            resolution,
            step,
            max_aspect: self.max_aspect,
        })
        .map(Some)
    }

    /// How StyleRef folders are scanned (masks with `masked_loss`).
    pub fn style_scan(&self, buckets: Option<&Buckets>) -> ScanOptions {
        ScanOptions {
            caption_extension: self.caption_extension.clone(),
            masks: self.masked_loss,
            buckets: buckets.cloned(),
        }
    }

    /// How Aux folders are scanned (never masked).
    pub fn aux_scan(&self, buckets: Option<&Buckets>) -> ScanOptions {
        ScanOptions {
            masks: false,
            ..self.style_scan(buckets)
        }
    }
}
