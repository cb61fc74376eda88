//! The scheduler config as diffusers writes it (`scheduler/scheduler_config.json`).
//!
//! [`SchedulerConfig`] holds the keys exactly as found in the file: a key that is absent (or
//! `null`) stays `None`, so that each scheduler can fill in *its own* diffusers default. This
//! matters because diffusers' defaults differ between classes (for instance `timestep_spacing`
//! defaults to `"leading"` for DDPM/DDIM/PNDM but `"linspace"` for Euler and DPM-Solver), and
//! because diffusers' `Target.from_config(config)` carries over only the keys that were present
//! in the original file. Keys starting with `_` are ignored (`_class_name` is kept); keys no
//! scheduler knows are reported once through `tracing::warn!`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, SchedulerError};

/// How the training betas are laid out over the training timesteps (`beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BetaSchedule {
    /// `"linear"`: betas evenly spaced from `beta_start` to `beta_end`.
    #[serde(rename = "linear")]
    Linear,
    /// `"scaled_linear"`: square roots of the betas evenly spaced (Stable Diffusion).
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    /// `"squaredcos_cap_v2"`: the cosine schedule of Nichol & Dhariwal, betas capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// What the denoising model predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PredictionType {
    /// `"epsilon"`: the noise that was added (SD 1.x, SD 2.x base).
    #[serde(rename = "epsilon")]
    Epsilon,
    /// `"v_prediction"`: the velocity `v = sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * x0` (SD 2.x 768).
    #[serde(rename = "v_prediction")]
    VPrediction,
    /// `"sample"`: the denoised sample `x0` itself.
    #[serde(rename = "sample")]
    Sample,
}

/// How inference timesteps are picked among the training timesteps (`timestep_spacing`),
/// after Table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed" (Lin et al.).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestepSpacing {
    /// `"leading"`: `0, r, 2r, ...` (plus `steps_offset`), with `r = num_train_timesteps / steps`.
    #[serde(rename = "leading")]
    Leading,
    /// `"trailing"`: `T-1, T-1-r, ...` counting down from the last training timestep.
    #[serde(rename = "trailing")]
    Trailing,
    /// `"linspace"`: evenly spaced over `[0, T-1]`, both ends included.
    #[serde(rename = "linspace")]
    Linspace,
}

/// The DDPM posterior variance (`variance_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VarianceType {
    /// `"fixed_small"`: beta-tilde of DDPM eq. (7).
    #[serde(rename = "fixed_small")]
    FixedSmall,
    /// `"fixed_small_log"`: the same variance, computed through its logarithm.
    #[serde(rename = "fixed_small_log")]
    FixedSmallLog,
    /// `"fixed_large"`: beta_t.
    #[serde(rename = "fixed_large")]
    FixedLarge,
    /// `"fixed_large_log"` (not supported).
    #[serde(rename = "fixed_large_log")]
    FixedLargeLog,
    /// `"learned"` (not supported: needs a model predicting its variance).
    #[serde(rename = "learned")]
    Learned,
    /// `"learned_range"` (not supported: needs a model predicting its variance).
    #[serde(rename = "learned_range")]
    LearnedRange,
}

/// How Euler interpolates sigmas between training timesteps (`interpolation_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterpolationType {
    /// `"linear"`: linear in the timestep (diffusers' default).
    #[serde(rename = "linear")]
    Linear,
    /// `"log_linear"` (not supported).
    #[serde(rename = "log_linear")]
    LogLinear,
}

/// Whether Euler's timesteps are the discrete training indices (`timestep_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestepType {
    /// `"discrete"`: timesteps are (fractional) training timestep indices.
    #[serde(rename = "discrete")]
    Discrete,
    /// `"continuous"` (not supported together with v-prediction).
    #[serde(rename = "continuous")]
    Continuous,
}

/// The sigma after the last inference step (`final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinalSigmasType {
    /// `"zero"`: the last step lands on a clean sample (sigma 0).
    #[serde(rename = "zero")]
    Zero,
    /// `"sigma_min"`: the last step lands on the smallest training sigma.
    #[serde(rename = "sigma_min")]
    SigmaMin,
}

/// The DPM-Solver variant (`algorithm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlgorithmType {
    /// `"dpmsolver++"`: DPM-Solver++ (data prediction), "DPM++ 2M" in UIs.
    #[serde(rename = "dpmsolver++")]
    DpmSolverPlusPlus,
    /// `"sde-dpmsolver++"`: the SDE variant, "DPM++ 2M SDE" in UIs (draws noise every step).
    #[serde(rename = "sde-dpmsolver++")]
    SdeDpmSolverPlusPlus,
    /// `"dpmsolver"` (deprecated in diffusers; not supported).
    #[serde(rename = "dpmsolver")]
    DpmSolver,
    /// `"sde-dpmsolver"` (deprecated in diffusers; not supported).
    #[serde(rename = "sde-dpmsolver")]
    SdeDpmSolver,
    /// `"deis"` (found in DEIS configs; diffusers' DPM-Solver treats it as `dpmsolver++`).
    #[serde(rename = "deis")]
    Deis,
}

/// The second-order DPM-Solver update rule (`solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SolverType {
    /// `"midpoint"` (diffusers' default).
    #[serde(rename = "midpoint")]
    Midpoint,
    /// `"heun"`.
    #[serde(rename = "heun")]
    Heun,
    /// `"logrho"` (DEIS configs; DPM-Solver treats it as `midpoint`).
    #[serde(rename = "logrho")]
    Logrho,
    /// `"bh1"` (UniPC configs; DPM-Solver treats it as `midpoint`).
    #[serde(rename = "bh1")]
    Bh1,
    /// `"bh2"` (UniPC configs; DPM-Solver treats it as `midpoint`).
    #[serde(rename = "bh2")]
    Bh2,
}

/// A scheduler config as read from diffusers' `scheduler_config.json`.
///
/// Every field is `None` when the key is absent or `null`; the schedulers substitute their own
/// diffusers defaults. Fields are public so a caller can adjust a loaded config before building.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerConfig {
    /// `_class_name`: the diffusers class that wrote the config (e.g. `"PNDMScheduler"`).
    pub class_name: Option<String>,
    /// `num_train_timesteps` (diffusers default 1000).
    pub num_train_timesteps: Option<usize>,
    /// `beta_start` (default 0.0001).
    pub beta_start: Option<f64>,
    /// `beta_end` (default 0.02).
    pub beta_end: Option<f64>,
    /// `beta_schedule` (default `linear`).
    pub beta_schedule: Option<BetaSchedule>,
    /// `trained_betas`: explicit betas overriding `beta_schedule`.
    pub trained_betas: Option<Vec<f64>>,
    /// `prediction_type` (default `epsilon`).
    pub prediction_type: Option<PredictionType>,
    /// `timestep_spacing` (default depends on the scheduler).
    pub timestep_spacing: Option<TimestepSpacing>,
    /// `steps_offset`: added to `leading` timesteps (default 0; SD uses 1).
    pub steps_offset: Option<usize>,
    /// `set_alpha_to_one`: DDIM/PNDM's alpha-bar "before" timestep 0.
    pub set_alpha_to_one: Option<bool>,
    /// `clip_sample`: clip the predicted `x0` (DDPM/DDIM; default true there).
    pub clip_sample: Option<bool>,
    /// `clip_sample_range` (default 1.0).
    pub clip_sample_range: Option<f64>,
    /// `skip_prk_steps`: PNDM without its Runge-Kutta warm-up (SD uses true).
    pub skip_prk_steps: Option<bool>,
    /// `use_karras_sigmas` (Euler, DPM-Solver).
    pub use_karras_sigmas: Option<bool>,
    /// `sigma_min`: lower end of the Karras sigmas (default: the schedule's).
    pub sigma_min: Option<f64>,
    /// `sigma_max`: upper end of the Karras sigmas (default: the schedule's).
    pub sigma_max: Option<f64>,
    /// `thresholding`: dynamic thresholding (only `false` is supported).
    pub thresholding: Option<bool>,
    /// `variance_type` (DDPM default `fixed_small`; DPM-Solver default `null`).
    pub variance_type: Option<VarianceType>,
    /// `rescale_betas_zero_snr`: rescale betas to zero terminal SNR.
    pub rescale_betas_zero_snr: Option<bool>,
    /// `interpolation_type` (Euler).
    pub interpolation_type: Option<InterpolationType>,
    /// `timestep_type` (Euler).
    pub timestep_type: Option<TimestepType>,
    /// `final_sigmas_type` (Euler, DPM-Solver).
    pub final_sigmas_type: Option<FinalSigmasType>,
    /// `use_exponential_sigmas` (only `false` is supported).
    pub use_exponential_sigmas: Option<bool>,
    /// `use_beta_sigmas` (only `false` is supported).
    pub use_beta_sigmas: Option<bool>,
    /// `use_lu_lambdas` (only `false` is supported).
    pub use_lu_lambdas: Option<bool>,
    /// `use_flow_sigmas` (only `false` is supported).
    pub use_flow_sigmas: Option<bool>,
    /// `use_dynamic_shifting` (only `false` is supported).
    pub use_dynamic_shifting: Option<bool>,
    /// `solver_order` (DPM-Solver; default 2).
    pub solver_order: Option<usize>,
    /// `algorithm_type` (DPM-Solver; default `dpmsolver++`).
    pub algorithm_type: Option<AlgorithmType>,
    /// `solver_type` (DPM-Solver; default `midpoint`).
    pub solver_type: Option<SolverType>,
    /// `lower_order_final` (DPM-Solver; default true).
    pub lower_order_final: Option<bool>,
    /// `euler_at_final` (DPM-Solver; default false).
    pub euler_at_final: Option<bool>,
    /// `lambda_min_clipped` (DPM-Solver; default -infinity).
    pub lambda_min_clipped: Option<f64>,
    /// Keys no scheduler of this crate knows, with their values (already warned about).
    pub unknown: BTreeMap<String, Value>,
}

/// Keys diffusers writes that this crate reads without using (no warning for them).
const KNOWN_UNUSED_KEYS: &[&str] = &[
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "flow_shift",
    "time_shift_type",
];

impl SchedulerConfig {
    /// Reads a `scheduler_config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SchedulerError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Reads `<model_dir>/scheduler/scheduler_config.json` of a diffusers model folder.
    pub fn from_model_dir(model_dir: impl AsRef<Path>) -> Result<Self> {
        let path: PathBuf = model_dir
            .as_ref()
            .join("scheduler")
            .join("scheduler_config.json");
        Self::from_file(path)
    }

    /// Parses the text of a `scheduler_config.json`.
    ///
    /// Python's non-standard `Infinity`, `-Infinity` and `NaN` tokens (which diffusers writes for
    /// e.g. `lambda_min_clipped`) are accepted.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::parse(text, "<memory>")
    }

    /// Builds a config from an already parsed JSON object.
    pub fn from_json_value(value: &Value) -> Result<Self> {
        Self::from_value(value, "<memory>")
    }

    fn parse(text: &str, origin: &str) -> Result<Self> {
        let text = quote_non_finite_numbers(text);
        let value: Value =
            serde_json::from_str(&text).map_err(|e| SchedulerError::ConfigSyntax {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
        Self::from_value(&value, origin)
    }

    fn from_value(value: &Value, origin: &str) -> Result<Self> {
        let map = value
            .as_object()
            .ok_or_else(|| SchedulerError::ConfigSyntax {
                origin: origin.to_string(),
                message: "expected a JSON object at the top level".to_string(),
            })?;
        let mut config = SchedulerConfig::default();
        for (key, value) in map {
            let p = FieldParser { origin, key, value };
            match key.as_str() {
                "_class_name" => config.class_name = p.parse()?,
                "num_train_timesteps" => config.num_train_timesteps = p.parse()?,
                "beta_start" => config.beta_start = p.float()?,
                "beta_end" => config.beta_end = p.float()?,
                "beta_schedule" => config.beta_schedule = p.parse()?,
                "trained_betas" => config.trained_betas = p.parse()?,
                "prediction_type" => config.prediction_type = p.parse()?,
                "timestep_spacing" => config.timestep_spacing = p.parse()?,
                "steps_offset" => config.steps_offset = p.parse()?,
                "set_alpha_to_one" => config.set_alpha_to_one = p.parse()?,
                "clip_sample" => config.clip_sample = p.parse()?,
                "clip_sample_range" => config.clip_sample_range = p.float()?,
                "skip_prk_steps" => config.skip_prk_steps = p.parse()?,
                "use_karras_sigmas" => config.use_karras_sigmas = p.parse()?,
                "sigma_min" => config.sigma_min = p.float()?,
                "sigma_max" => config.sigma_max = p.float()?,
                "thresholding" => config.thresholding = p.parse()?,
                "variance_type" => config.variance_type = p.parse()?,
                "rescale_betas_zero_snr" => config.rescale_betas_zero_snr = p.parse()?,
                "interpolation_type" => config.interpolation_type = p.parse()?,
                "timestep_type" => config.timestep_type = p.parse()?,
                "final_sigmas_type" => config.final_sigmas_type = p.parse()?,
                "use_exponential_sigmas" => config.use_exponential_sigmas = p.parse()?,
                "use_beta_sigmas" => config.use_beta_sigmas = p.parse()?,
                "use_lu_lambdas" => config.use_lu_lambdas = p.parse()?,
                "use_flow_sigmas" => config.use_flow_sigmas = p.parse()?,
                "use_dynamic_shifting" => config.use_dynamic_shifting = p.parse()?,
                "solver_order" => config.solver_order = p.parse()?,
                "algorithm_type" => config.algorithm_type = p.parse()?,
                "solver_type" => config.solver_type = p.parse()?,
                "lower_order_final" => config.lower_order_final = p.parse()?,
                "euler_at_final" => config.euler_at_final = p.parse()?,
                "lambda_min_clipped" => config.lambda_min_clipped = p.float()?,
                k if k.starts_with('_') || KNOWN_UNUSED_KEYS.contains(&k) => {}
                _ => {
                    config.unknown.insert(key.clone(), value.clone());
                }
            }
        }
        warn_unknown_keys_once(origin, &config.unknown);
        Ok(config)
    }
}

/// Parses one key of the config, naming it in errors.
struct FieldParser<'a> {
    origin: &'a str,
    key: &'a str,
    value: &'a Value,
}

impl FieldParser<'_> {
    fn error(&self, message: String) -> SchedulerError {
        SchedulerError::ConfigValue {
            origin: self.origin.to_string(),
            key: self.key.to_string(),
            message,
        }
    }

    /// `null` reads as "absent", like diffusers' `None`.
    fn parse<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        if self.value.is_null() {
            return Ok(None);
        }
        serde_json::from_value(self.value.clone())
            .map(Some)
            .map_err(|e| self.error(format!("{e} (found {})", self.value)))
    }

    /// A float; also accepts the strings `inf`, `-inf` and `nan` (see [`quote_non_finite_numbers`]).
    fn float(&self) -> Result<Option<f64>> {
        match self.value {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.error(format!("{n} is not a float"))),
            Value::String(s) => match s.as_str() {
                "inf" | "Infinity" => Ok(Some(f64::INFINITY)),
                "-inf" | "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
                "nan" | "NaN" => Ok(Some(f64::NAN)),
                _ => Err(self.error(format!("expected a number, found the string {s:?}"))),
            },
            other => Err(self.error(format!("expected a number, found {other}"))),
        }
    }
}

/// Replaces Python's bare `Infinity`, `-Infinity` and `NaN` tokens (outside strings) by the
/// strings `"inf"`, `"-inf"` and `"nan"`, so that the text becomes standard JSON.
fn quote_non_finite_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else {
            let mut replaced = false;
            for (token, with) in [
                ("-Infinity", "\"-inf\""),
                ("Infinity", "\"inf\""),
                ("NaN", "\"nan\""),
            ] {
                if rest.starts_with(token) {
                    out.push_str(with);
                    rest = &rest[token.len()..];
                    replaced = true;
                    break;
                }
            }
            if replaced {
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Warns about unknown keys, each key once per process.
fn warn_unknown_keys_once(origin: &str, unknown: &BTreeMap<String, Value>) {
    static WARNED: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    if unknown.is_empty() {
        return;
    }
    let mut warned = WARNED
        .get_or_init(|| Mutex::new(BTreeSet::new()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let fresh: Vec<&str> = unknown
        .keys()
        .filter(|k| warned.insert((*k).clone()))
        .map(String::as_str)
        .collect();
    if !fresh.is_empty() {
        tracing::warn!(
            config = origin,
            keys = ?fresh,
            "ignoring scheduler config keys that no styleforge scheduler uses"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_tokens_outside_strings_are_quoted() {
        let text = r#"{"a": -Infinity, "b": "NaN -Infinity", "c": [Infinity, NaN]}"#;
        let fixed = quote_non_finite_numbers(text);
        assert_eq!(
            fixed,
            r#"{"a": "-inf", "b": "NaN -Infinity", "c": ["inf", "nan"]}"#
        );
    }

    #[test]
    fn parses_python_infinity_and_nulls() {
        let config = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.30.0",
                "lambda_min_clipped": -Infinity, "variance_type": null, "trained_betas": null,
                "some_future_key": 3}"#,
        )
        .unwrap();
        assert_eq!(config.lambda_min_clipped, Some(f64::NEG_INFINITY));
        assert_eq!(config.variance_type, None);
        assert_eq!(config.trained_betas, None);
        assert!(config.unknown.contains_key("some_future_key"));
        assert_eq!(
            config.class_name.as_deref(),
            Some("DPMSolverMultistepScheduler")
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = SchedulerConfig::from_json_str(r#"{"beta_schedule": "quadratic"}"#).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("beta_schedule"), "{message}");
        assert!(message.contains("quadratic"), "{message}");
        let err = SchedulerConfig::from_file("/nonexistent/scheduler_config.json").unwrap_err();
        assert!(err
            .to_string()
            .contains("/nonexistent/scheduler_config.json"));
    }
}
