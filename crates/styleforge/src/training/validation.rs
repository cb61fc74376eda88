//! The validation loss: the model's loss on held-out style images (`[data] validation_dir`,
//! or `validation_split` StyleRef images of the first concept kept out of training)
//! at fixed timesteps with fixed noise, so that it is comparable from step to step and run
//! to run (the training loss jumps with every draw of image, timestep and noise). Each
//! image is noised at [`TIMESTEPS`] timesteps spread evenly over the schedule; the noise and
//! the posterior samples come from their own seeded generator, never from the run's.
//! Captions are read with the run's caption extension; the images are always trained as
//! squares, unmasked (no buckets, no masks), so the measure stays one fixed set.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::concepts::{cached_latents, preprocess, prompt_ids};
use super::config::ResolvedConfig;
use super::core::normal;
use super::models::Models;
use super::step::{compute_loss, NoiseSchedule, StepBatch, StepModels};
use crate::data::{ImageFolder, ScanOptions};
use crate::error::Result;
use crate::progress::Progress;

/// Timesteps per validation image.
pub const TIMESTEPS: usize = 4;

/// The fixed inputs of the validation loss: one row per (image, timestep).
pub(crate) struct ValidationSet {
    rows: Vec<ValidationRow>,
}

struct ValidationRow {
    latents: Tensor,
    noise: Tensor,
    timestep: f64,
    ids: Vec<u32>,
}

impl ValidationSet {
    /// The set of `cfg`'s validation folder (`None` without one).
    pub(crate) fn load(
        cfg: &ResolvedConfig,
        models: &Models,
        schedule: &NoiseSchedule,
        held_out: &[PathBuf],
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<Option<Self>> {
        let scan = ScanOptions {
            caption_extension: cfg.data_options.caption_extension.clone(),
            ..ScanOptions::default()
        };
        let folder = match &cfg.validation_dir {
            Some(dir) => ImageFolder::scan_with(dir, &preprocess(cfg), 1, &scan)?,
            None if !held_out.is_empty() => {
                // Square and unmasked like a validation folder, whatever the training uses.
                let dir = &cfg.concepts[0].style_dir;
                ImageFolder::scan_with(dir, &preprocess(cfg), 1, &scan)?
                    .filtered(|e| held_out.contains(&e.path))
            }
            None => return Ok(None),
        };
        let cache = cached_latents(cfg, &folder, models, device, progress)?;
        let ids = prompt_ids(&models.tokenizer, &folder, &cfg.concepts[0].instance_prompt);
        let t_max = schedule.num_train_timesteps();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x7661_6c69_6461_7465);
        let shape = cache.latent_shape();
        let mut rows = Vec::with_capacity(cache.len() * TIMESTEPS);
        for (i, ids) in ids.iter().enumerate() {
            for k in 0..TIMESTEPS {
                let eps = normal(&mut rng, &shape, device)?;
                rows.push(ValidationRow {
                    latents: cache.sample(i, false, &eps)?,
                    noise: normal(&mut rng, &shape, device)?,
                    timestep: ((2 * k + 1) * t_max / (2 * TIMESTEPS)) as f64,
                    ids: ids.clone(),
                });
            }
        }
        Ok(Some(Self { rows }))
    }

    /// The mean loss over the rows, one row at a time (no gradient is taken).
    pub(crate) fn loss(&self, models: &StepModels, schedule: &NoiseSchedule) -> Result<f64> {
        let mut sum = 0.0;
        for row in &self.rows {
            let len = row.ids.len();
            let batch = StepBatch {
                latents: row.latents.clone(),
                noise: row.noise.clone(),
                input_noise: None,
                timesteps: vec![row.timestep],
                input_ids: Tensor::from_vec(row.ids.clone(), (1, len), row.latents.device())?,
                instance_rows: 1,
                instance_weights: None,
                prior_weights: None,
            };
            sum += compute_loss(models, schedule, &batch, 0.0)?.instance;
        }
        Ok(sum / self.rows.len().max(1) as f64)
    }
}
