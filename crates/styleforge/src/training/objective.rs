//! What a training step optimises beyond the plain noise-prediction MSE: which timesteps it
//! trains on, the noise it adds, and how each row's loss is weighted.
//!
//! - **Timesteps**: uniform over `[min_timestep, max_timestep)` (the default, over every
//!   training timestep), or logit-normal: `t = min + ⌊σ(μ + s·z)·(max − min)⌋` with
//!   `z ~ N(0, 1)`, which with a positive mean spends more steps at high noise, where the
//!   global layout and colour of a style are decided (the "style-friendly" sampler of
//!   arXiv 2411.14793 shifts its log-SNR distribution the same way).
//! - **Noise offset**: a per-sample, per-channel constant `noise_offset · N(0, 1)` added to
//!   the noise (lets a model learn very dark or bright images); **input perturbation**: the
//!   noisy input uses `noise + input_perturbation · N(0, 1)` while the target keeps the
//!   plain noise (diffusers' `--input_perturbation`).
//! - **Min-SNR-γ** (Hang et al. 2023): each row's MSE weighted by `min(SNR, γ) / SNR` for
//!   ε-prediction, `min(SNR, γ) / (SNR + 1)` for v-prediction (kohya's `apply_snr_weight`),
//!   `min(SNR, γ)` for sample prediction, with `SNR = ᾱ_t / (1 − ᾱ_t)`; applied to the
//!   StyleRef rows, and to the Aux (prior) rows only with `snr_weight_prior`.
//!
//! Every draw comes from the run's generator, and none is made for an option that is off,
//! so a run with the defaults draws exactly what it always drew.

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use styleforge_schedulers::config::PredictionType;

use super::core::normal;
use crate::error::{Error, Result};

/// How training timesteps are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TimestepSampling {
    /// Uniform over the range.
    #[default]
    Uniform,
    /// Logit-normal over the range (`timestep_mean`, `timestep_scale`).
    LogitNormal,
}

/// The training objective's options (`[training]` keys of the run config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Objective {
    /// Min-SNR-γ loss weighting (`None`: off).
    pub snr_gamma: Option<f64>,
    /// Whether min-SNR also weights the Aux (prior-preservation) rows.
    pub snr_weight_prior: bool,
    /// How timesteps are drawn.
    pub timestep_sampling: TimestepSampling,
    /// First timestep trained on.
    pub min_timestep: usize,
    /// One past the last timestep trained on (`None`: the schedule's `num_train_timesteps`).
    pub max_timestep: Option<usize>,
    /// Mean of the logit-normal's normal (positive: more high-noise steps).
    pub timestep_mean: f64,
    /// Standard deviation of the logit-normal's normal.
    pub timestep_scale: f64,
    /// Per-sample, per-channel noise offset (0: off).
    pub noise_offset: f64,
    /// Input perturbation of the noise (0: off).
    pub input_perturbation: f64,
}

impl Default for Objective {
    fn default() -> Self {
        Self {
            snr_gamma: None,
            snr_weight_prior: false,
            timestep_sampling: TimestepSampling::Uniform,
            min_timestep: 0,
            max_timestep: None,
            timestep_mean: 0.0,
            timestep_scale: 1.0,
            noise_offset: 0.0,
            input_perturbation: 0.0,
        }
    }
}

/// The noise of one batch: what the target is built from, and (with input perturbation)
/// what the noisy input is made with.
#[derive(Debug, Clone)]
pub struct BatchNoise {
    /// The noise of the target (with the offset, when on).
    pub noise: Tensor,
    /// The noise of the input when it differs from `noise`.
    pub input_noise: Option<Tensor>,
}

impl Objective {
    /// Checks the options against a schedule of `num_train_timesteps`.
    pub fn validate(&self, num_train_timesteps: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if let Some(g) = self.snr_gamma {
            if !(g > 0.0 && g.is_finite()) {
                return bad(format!("training.snr_gamma must be positive (got {g}); leave it out to turn min-SNR weighting off"));
            }
        }
        let max = self.max_timestep.unwrap_or(num_train_timesteps);
        if max > num_train_timesteps || self.min_timestep >= max {
            return bad(format!(
                "training.min_timestep {} and max_timestep {max} must satisfy 0 <= min < max <= {num_train_timesteps} (the schedule's num_train_timesteps)",
                self.min_timestep
            ));
        }
        let scale_ok = self.timestep_scale > 0.0 && self.timestep_scale.is_finite();
        if !(scale_ok && self.timestep_mean.is_finite()) {
            return bad("training.timestep_scale must be positive and timestep_mean finite".into());
        }
        for (key, v) in [
            ("noise_offset", self.noise_offset),
            ("input_perturbation", self.input_perturbation),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(format!("training.{key} must be >= 0 (got {v})"));
            }
        }
        Ok(())
    }

    /// Draws `n` timesteps.
    pub fn timesteps(
        &self,
        rng: &mut ChaCha8Rng,
        n: usize,
        num_train_timesteps: usize,
    ) -> Vec<f64> {
        let min = self.min_timestep;
        let max = self
            .max_timestep
            .unwrap_or(num_train_timesteps)
            .max(min + 1);
        (0..n)
            .map(|_| match self.timestep_sampling {
                TimestepSampling::Uniform => rng.gen_range(min..max) as f64,
                TimestepSampling::LogitNormal => {
                    let u = self.timestep_mean + self.timestep_scale * standard_normal(rng);
                    let s = 1.0 / (1.0 + (-u).exp());
                    let t = min + (s * (max - min) as f64).floor() as usize;
                    t.min(max - 1) as f64
                }
            })
            .collect()
    }

    /// Draws the noise of a batch of `shape` `[b, c, h, w]`: standard normal, plus the
    /// offset and the input perturbation when they are on (in that order).
    pub fn noise(
        &self,
        rng: &mut ChaCha8Rng,
        shape: &[usize],
        device: &Device,
    ) -> Result<BatchNoise> {
        let mut noise = normal(rng, shape, device)?;
        if self.noise_offset > 0.0 {
            let offset = normal(rng, &[shape[0], shape[1], 1, 1], device)?;
            noise = noise.broadcast_add(&(offset * self.noise_offset)?)?;
        }
        let input_noise = if self.input_perturbation > 0.0 {
            let extra = normal(rng, shape, device)?;
            Some((&noise + (extra * self.input_perturbation)?)?)
        } else {
            None
        };
        Ok(BatchNoise { noise, input_noise })
    }

    /// Per-row loss weights of min-SNR-γ for `timesteps` (`None` when it is off).
    pub fn snr_weights(
        &self,
        alphas_cumprod: &[f64],
        prediction_type: PredictionType,
        timesteps: &[f64],
    ) -> Option<Vec<f64>> {
        let gamma = self.snr_gamma?;
        Some(
            timesteps
                .iter()
                .map(|&t| min_snr_weight(snr(alphas_cumprod, t), gamma, prediction_type))
                .collect(),
        )
    }
}

/// The signal-to-noise ratio `ᾱ_t / (1 − ᾱ_t)` of timestep `t` (diffusers' `compute_snr`).
pub fn snr(alphas_cumprod: &[f64], t: f64) -> f64 {
    let a = alphas_cumprod[(t as usize).min(alphas_cumprod.len() - 1)];
    let (alpha, sigma) = (a.sqrt(), (1.0 - a).sqrt());
    (alpha / sigma).powi(2)
}

/// The min-SNR-γ weight of a row with signal-to-noise ratio `snr`, for what the model
/// predicts.
pub fn min_snr_weight(snr: f64, gamma: f64, prediction_type: PredictionType) -> f64 {
    let clipped = snr.min(gamma);
    match prediction_type {
        PredictionType::Epsilon => clipped / snr,
        PredictionType::VPrediction => clipped / (snr + 1.0),
        PredictionType::Sample => clipped,
    }
}

/// One standard normal value (Box-Muller).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn defaults_draw_what_a_plain_run_draws() {
        let o = Objective::default();
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);
        let drawn = o.timesteps(&mut a, 5, 1000);
        let plain: Vec<f64> = (0..5).map(|_| b.gen_range(0..1000usize) as f64).collect();
        assert_eq!(drawn, plain);
        let n = o.noise(&mut a, &[2, 4, 3, 3], &Device::Cpu).unwrap();
        let p = normal(&mut b, &[2, 4, 3, 3], &Device::Cpu).unwrap();
        assert!(n.input_noise.is_none());
        assert_eq!(
            n.noise.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            p.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(o
            .snr_weights(&[0.5], PredictionType::Epsilon, &[0.0])
            .is_none());
    }

    #[test]
    fn logit_normal_stays_in_range_and_shifts_with_its_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut o = Objective {
            timestep_sampling: TimestepSampling::LogitNormal,
            min_timestep: 100,
            max_timestep: Some(900),
            ..Default::default()
        };
        let centred = o.timesteps(&mut rng, 4000, 1000);
        assert!(centred.iter().all(|&t| (100.0..900.0).contains(&t)));
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean(&centred) - 500.0).abs() < 15.0, "{}", mean(&centred));
        o.timestep_mean = 1.0;
        let shifted = o.timesteps(&mut rng, 4000, 1000);
        assert!(mean(&shifted) > 600.0, "{}", mean(&shifted));
    }

    #[test]
    fn noise_offset_is_constant_per_sample_and_channel() {
        let o = Objective {
            noise_offset: 0.1,
            input_perturbation: 0.05,
            ..Default::default()
        };
        let mut a = ChaCha8Rng::seed_from_u64(9);
        let n = o.noise(&mut a, &[2, 3, 4, 4], &Device::Cpu).unwrap();
        let mut b = ChaCha8Rng::seed_from_u64(9);
        let plain = normal(&mut b, &[2, 3, 4, 4], &Device::Cpu).unwrap();
        let offset = normal(&mut b, &[2, 3, 1, 1], &Device::Cpu).unwrap();
        let diff = (&n.noise - &plain).unwrap();
        let expected = (offset * 0.1)
            .unwrap()
            .broadcast_as((2, 3, 4, 4))
            .unwrap()
            .contiguous()
            .unwrap();
        let err = (diff - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err < 1e-6, "{err}");
        let input = n.input_noise.unwrap();
        let gap = (input - &n.noise)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(gap.to_scalar::<f32>().unwrap() > 0.0);
    }

    #[test]
    fn min_snr_weights_by_prediction_type() {
        // SNR 4 at ᾱ = 0.8; SNR 0.25 at ᾱ = 0.2.
        let ac = [0.8, 0.2];
        assert!((snr(&ac, 0.0) - 4.0).abs() < 1e-12);
        let w = |p, t| min_snr_weight(snr(&ac, t), 1.0, p);
        assert!((w(PredictionType::Epsilon, 0.0) - 0.25).abs() < 1e-12);
        assert!((w(PredictionType::VPrediction, 0.0) - 0.2).abs() < 1e-12);
        assert!((w(PredictionType::Epsilon, 1.0) - 1.0).abs() < 1e-12);
        assert!((w(PredictionType::VPrediction, 1.0) - 0.2).abs() < 1e-12);
        assert!(Objective {
            snr_gamma: Some(0.0),
            ..Default::default()
        }
        .validate(1000)
        .is_err());
    }
}
