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
    /// StyleRef images of the first concept held out of training for the validation loss
    /// (0: none; a `validation_dir` takes precedence).
    pub validation_split: usize,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            caption_extension: ".txt".to_string(),
            masked_loss: false,
            bucketing: false,
            bucket_step: None,
            max_aspect: 2.0,
            validation_split: 0,
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
    /// times (`None` without bucketing); the step must be a multiple of that factor, and the
    /// resolution a multiple of the step, so that square images (generated Aux images
    /// among them) keep the training square as their bucket.
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
        if !resolution.is_multiple_of(step) {
            return Err(Error::InvalidConfig(format!(
                "with data.bucketing, data.resolution {resolution} must be a multiple of the \
                 bucket step {step} (set data.bucket_step, or a resolution such as {})",
                resolution / step.max(1) * step
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_vae_and_keep_the_square() {
        let off = DataOptions::default();
        assert_eq!(off.buckets(512, 8).unwrap(), None);
        let on = DataOptions {
            bucketing: true,
            ..off
        };
        // SD: 8 latent pixels = 64 px
        let b = on.buckets(512, 8).unwrap().unwrap();
        assert!(b.sizes().contains(&(512, 512)) && b.sizes().contains(&(640, 320)));
        assert!(b.sizes().iter().all(|&(w, h)| w % 64 == 0 && h % 64 == 0));
        assert_eq!(b.assign(512, 512), (512, 512));
        // the tiny fixture's VAE (factor 2): 16 px
        let tiny = on.buckets(32, 2).unwrap().unwrap();
        assert_eq!(tiny.sizes(), [(16, 32), (32, 16), (32, 32)]);
        assert!(on
            .buckets(544, 8)
            .unwrap_err()
            .to_string()
            .contains("multiple"));
        let odd = DataOptions {
            bucket_step: Some(60),
            ..on
        };
        assert!(odd.buckets(480, 8).is_err());
    }
}
