//! The maths every scheduler shares, in `f64`: training betas and `alphas_cumprod`, the
//! spacing of inference timesteps, sigmas and Karras sigmas, and the numpy-style helpers
//! (`linspace`, `arange`, `interp`, round-half-to-even) whose exact behaviour decides which
//! timesteps diffusers picks.
//!
//! Notation (DDPM, Ho et al. 2020): `beta_t` is the noise variance added at training step `t`,
//! `alpha_t = 1 - beta_t`, and `alpha_bar_t = prod_{s<=t} alpha_s` (diffusers: `alphas_cumprod`),
//! so that `x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps` (eq. 4). The
//! variance-exploding view used by Euler-type samplers (Karras et al. 2022) writes the same
//! marginal as `x_t / sqrt(alpha_bar_t) = x_0 + sigma_t eps` with
//! `sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)`.

use crate::config::{BetaSchedule, SchedulerConfig, TimestepSpacing};
use crate::error::{Result, SchedulerError};

/// The training noise schedule of a model, with every diffusers default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    /// Number of diffusion steps the model was trained with (`num_train_timesteps`).
    pub num_train_timesteps: usize,
    /// First beta (`beta_start`).
    pub beta_start: f64,
    /// Last beta (`beta_end`).
    pub beta_end: f64,
    /// How betas go from `beta_start` to `beta_end`.
    pub beta_schedule: BetaSchedule,
    /// Explicit betas; when set they replace `beta_schedule`.
    pub trained_betas: Option<Vec<f64>>,
    /// Rescale the betas to zero terminal SNR (Lin et al. 2023, Algorithm 1).
    pub rescale_betas_zero_snr: bool,
}

impl Default for NoiseSchedule {
    /// diffusers' defaults: 1000 steps, linear betas from 0.0001 to 0.02.
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            rescale_betas_zero_snr: false,
        }
    }
}

impl NoiseSchedule {
    /// Takes the schedule keys from `config`, defaulting the missing ones as diffusers does.
    /// `accepts_zero_snr` is false for schedulers whose diffusers class has no
    /// `rescale_betas_zero_snr` parameter (PNDM), which then ignore that key.
    pub fn from_config(config: &SchedulerConfig, accepts_zero_snr: bool) -> Self {
        let d = Self::default();
        Self {
            num_train_timesteps: config.num_train_timesteps.unwrap_or(d.num_train_timesteps),
            beta_start: config.beta_start.unwrap_or(d.beta_start),
            beta_end: config.beta_end.unwrap_or(d.beta_end),
            beta_schedule: config.beta_schedule.unwrap_or(d.beta_schedule),
            trained_betas: config.trained_betas.clone(),
            rescale_betas_zero_snr: accepts_zero_snr
                && config.rescale_betas_zero_snr.unwrap_or(false),
        }
    }

    /// The training betas, one per training timestep, rounded to `f32` exactly as diffusers
    /// computes them (torch float32; see [`torch_linspace_f32`]).
    pub fn betas(&self, scheduler: &'static str) -> Result<Vec<f64>> {
        let n = self.num_train_timesteps;
        if n < 2 {
            return Err(SchedulerError::InvalidConfig {
                scheduler,
                key: "num_train_timesteps",
                message: format!("must be at least 2, found {n}"),
            });
        }
        let betas: Vec<f64> = match &self.trained_betas {
            Some(betas) => {
                if betas.len() != n {
                    return Err(SchedulerError::InvalidConfig {
                        scheduler,
                        key: "trained_betas",
                        message: format!(
                            "has {} entries but num_train_timesteps is {n}; they must match",
                            betas.len()
                        ),
                    });
                }
                betas.iter().map(|&b| to_f32_precision(b)).collect()
            }
            None => match self.beta_schedule {
                BetaSchedule::Linear => torch_linspace_f32(self.beta_start, self.beta_end, n),
                // Latent diffusion's schedule: linear in sqrt(beta).
                BetaSchedule::ScaledLinear => {
                    torch_linspace_f32(self.beta_start.sqrt(), self.beta_end.sqrt(), n)
                        .into_iter()
                        .map(|b| to_f32_precision(b * b))
                        .collect()
                }
                BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar_cosine(n, 0.999)
                    .into_iter()
                    .map(to_f32_precision)
                    .collect(),
            },
        };
        if let Some(bad) = betas.iter().find(|b| !(**b > 0.0 && **b <= 1.0)) {
            return Err(SchedulerError::InvalidConfig {
                scheduler,
                key: "beta_start/beta_end/trained_betas",
                message: format!("every beta must lie in (0, 1], found {bad}"),
            });
        }
        Ok(if self.rescale_betas_zero_snr {
            rescale_zero_terminal_snr(&betas)
                .into_iter()
                .map(to_f32_precision)
                .collect()
        } else {
            betas
        })
    }

    /// `alpha_bar_t = prod_{s<=t} (1 - beta_s)` for every training timestep (DDPM eq. 4), as
    /// diffusers' float32 table: `1 - beta` in `f32`, the product accumulated in `f64` (as torch's
    /// CPU `cumprod`) and each value rounded to `f32`. The models were trained and are run with
    /// exactly these values; all maths downstream of the table is `f64`.
    pub fn alphas_cumprod(&self, scheduler: &'static str) -> Result<Vec<f64>> {
        let mut acc = 1.0f64;
        Ok(self
            .betas(scheduler)?
            .into_iter()
            .map(|beta| {
                acc *= to_f32_precision(1.0 - beta);
                to_f32_precision(acc)
            })
            .collect())
    }
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU, value for value: the
/// ends are rounded to `f32`, `step = (end - start) / (steps - 1)` in `f32`, the first half counts
/// up from `start` and the second half down from `end`, each value a single rounding of
/// `start + i * step` (fused multiply-add).
pub fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f64> {
    if steps == 1 {
        return vec![to_f32_precision(start)];
    }
    let start = start as f32;
    let end = end as f32;
    let step = ((end - start) / (steps - 1) as f32) as f64;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                to_f32_precision(start as f64 + step * i as f64)
            } else {
                to_f32_precision(end as f64 - step * (steps - 1 - i) as f64)
            }
        })
        .collect()
}

/// `alpha_bar_t = prod_{s<=t} (1 - beta_s)`.
pub fn alphas_cumprod(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    betas
        .iter()
        .map(|beta| {
            acc *= 1.0 - beta;
            acc
        })
        .collect()
}

/// Betas of the cosine schedule (Nichol & Dhariwal 2021, eq. 17):
/// `alpha_bar(t) = cos^2(((t + s) / (1 + s)) * pi / 2)` with `s = 0.008`, and
/// `beta_i = min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta)`.
pub fn betas_for_alpha_bar_cosine(num_diffusion_timesteps: usize, max_beta: f64) -> Vec<f64> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    let n = num_diffusion_timesteps as f64;
    (0..num_diffusion_timesteps)
        .map(|i| {
            let t1 = i as f64 / n;
            let t2 = (i + 1) as f64 / n;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect()
}

/// Rescales betas so that the last timestep has zero signal-to-noise ratio
/// (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Alg. 1):
/// shift `sqrt(alpha_bar)` so its last value is 0 and scale it so its first value is unchanged.
pub fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let alphas_bar_sqrt: Vec<f64> = alphas_cumprod(betas).iter().map(|a| a.sqrt()).collect();
    let first = alphas_bar_sqrt[0];
    let last = alphas_bar_sqrt[alphas_bar_sqrt.len() - 1];
    let alphas_bar: Vec<f64> = alphas_bar_sqrt
        .iter()
        .map(|a| {
            let a = (a - last) * first / (first - last);
            a * a
        })
        .collect();
    let mut out = Vec::with_capacity(betas.len());
    out.push(1.0 - alphas_bar[0]);
    for w in alphas_bar.windows(2) {
        out.push(1.0 - w[1] / w[0]);
    }
    out
}

/// `sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)`, the noise level of the
/// variance-exploding formulation, for each training timestep (ascending in `t`); each
/// operation rounded to `f32` as diffusers' float32 table is.
pub fn sigmas_from_alphas_cumprod(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|a| {
            let one_minus = to_f32_precision(1.0 - a);
            to_f32_precision(to_f32_precision(one_minus / a).sqrt())
        })
        .collect()
}

/// `numpy.linspace(start, stop, num)`: `start + i * (stop - start) / (num - 1)`, with the last
/// value set to `stop` exactly, and `[start]` when `num == 1`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            out[num - 1] = stop;
            out
        }
    }
}

/// `numpy.arange(start, stop, step)` for floats: `ceil((stop - start) / step)` values
/// `start + i * delta` with `delta = (start + step) - start`. Note that the length can exceed
/// the "obvious" one by float rounding (e.g. `arange(1000, 0, -1000 / 61)` has 62 values).
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let delta = (start + step) - start;
    (0..len as usize)
        .map(|i| start + i as f64 * delta)
        .collect()
}

/// `numpy.round`: rounds half to even (`2.5 -> 2`, `3.5 -> 4`).
pub fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// `numpy.interp(x, [0, 1, ..., len-1], fp)`: piecewise-linear interpolation of `fp` at the
/// fractional index `x`, clamped to the end values outside `[0, len-1]`.
pub fn interp_at_index(x: f64, fp: &[f64]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    let slope = fp[j + 1] - fp[j];
    slope * (x - j as f64) + fp[j]
}

/// The inference timesteps of DDPM, DDIM, Euler and Euler ancestral, in descending order,
/// for `num_inference_steps` steps among `num_train_timesteps` (diffusers' `set_timesteps`):
///
/// * `Linspace`: `linspace(0, T-1, n)` reversed; rounded half-to-even if `round_linspace`
///   (integer schedulers), kept fractional otherwise (Euler-type schedulers).
/// * `Leading`: `i * (T / n)` (integer division) reversed, plus `steps_offset`.
/// * `Trailing`: `round(arange(T, 0, -T / n)) - 1`.
pub fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: usize,
    round_linspace: bool,
) -> Vec<f64> {
    let t_max = num_train_timesteps as f64;
    let n = num_inference_steps;
    match spacing {
        TimestepSpacing::Linspace => linspace(0.0, t_max - 1.0, n)
            .into_iter()
            .rev()
            .map(|t| {
                if round_linspace {
                    round_half_even(t)
                } else {
                    t
                }
            })
            .collect(),
        TimestepSpacing::Leading => {
            let step_ratio = num_train_timesteps / n;
            (0..n)
                .rev()
                .map(|i| (i * step_ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let step_ratio = t_max / n as f64;
            arange(t_max, 0.0, -step_ratio)
                .into_iter()
                .map(|t| round_half_even(t) - 1.0)
                .collect()
        }
    }
}

/// Karras et al. 2022, eq. (5): `sigma_i = (sigma_max^(1/rho) + i/(n-1) * (sigma_min^(1/rho) -
/// sigma_max^(1/rho)))^rho` for `i = 0..n`, with `rho = 7`; descending from `sigma_max`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, num_inference_steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    linspace(0.0, 1.0, num_inference_steps)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// The fractional training timestep whose sigma is `sigma`: linear interpolation in
/// `log(sigma)` between the two neighbouring training timesteps (diffusers' `_sigma_to_t`).
/// `log_sigmas` are the logs of the training sigmas, ascending in `t`. Sigmas outside the
/// training range are clamped to its ends.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // Last index whose log-sigma is <= log_sigma (0 if none), kept below the last index.
    let low_idx = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// The position of `timestep` in `schedule` as diffusers' `index_for_timestep` finds it: the
/// first match, or the *second* one if the timestep occurs more than once (so that a schedule
/// entered in the middle, as img2img does, does not skip a sigma). `None` if absent.
///
/// diffusers compares exactly; here values within `1e-5` relative also match, so timesteps that
/// went through another float conversion (or came from diffusers itself) are still found.
pub fn index_for_timestep(schedule: &[f64], timestep: f64) -> Option<usize> {
    let tolerance = 1e-5 * timestep.abs().max(1.0);
    let mut matches = schedule
        .iter()
        .enumerate()
        .filter(|(_, t)| (**t - timestep).abs() <= tolerance)
        .map(|(i, _)| i);
    let first = matches.next()?;
    Some(matches.next().unwrap_or(first))
}

/// Rounds to the nearest `f32` (diffusers keeps its tables and timesteps in float32).
pub fn to_f32_precision(x: f64) -> f64 {
    x as f32 as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_helpers() {
        assert_eq!(linspace(0.0, 999.0, 1), vec![0.0]);
        assert_eq!(linspace(0.0, 1.0, 3), vec![0.0, 0.5, 1.0]);
        assert_eq!(arange(1000.0, 0.0, -1000.0 / 61.0).len(), 62);
        assert_eq!(arange(1000.0, 0.0, -100.0).len(), 10);
        assert_eq!(round_half_even(812.5), 812.0);
        assert_eq!(round_half_even(937.5), 938.0);
        assert_eq!(interp_at_index(1.5, &[0.0, 1.0, 3.0]), 2.0);
        assert_eq!(interp_at_index(7.0, &[0.0, 1.0, 3.0]), 3.0);
        assert_eq!(index_for_timestep(&[5.0, 3.0, 3.0, 1.0], 3.0), Some(2));
        assert_eq!(index_for_timestep(&[5.0, 3.0, 1.0], 3.0), Some(1));
        assert_eq!(index_for_timestep(&[5.0, 3.0, 1.0], 4.0), None);
    }

    #[test]
    fn sd_timesteps() {
        let leading = spaced_timesteps(TimestepSpacing::Leading, 1000, 10, 1, true);
        assert_eq!(leading[0], 901.0);
        assert_eq!(leading[9], 1.0);
        let trailing = spaced_timesteps(TimestepSpacing::Trailing, 1000, 10, 1, true);
        assert_eq!(trailing[0], 999.0);
        assert_eq!(trailing[9], 99.0);
    }

    #[test]
    fn zero_snr_rescale_ends_at_zero() {
        let schedule = NoiseSchedule {
            beta_schedule: BetaSchedule::ScaledLinear,
            beta_start: 0.00085,
            beta_end: 0.012,
            rescale_betas_zero_snr: true,
            ..NoiseSchedule::default()
        };
        let ac = schedule.alphas_cumprod("test").unwrap();
        assert!(ac[999].abs() < 1e-12);
        let plain = NoiseSchedule {
            rescale_betas_zero_snr: false,
            ..schedule
        };
        let ac_plain = plain.alphas_cumprod("test").unwrap();
        assert!((ac[0] - ac_plain[0]).abs() < 1e-12);
    }
}
