//! The error type shared by every scheduler.

use std::path::PathBuf;

/// Everything that can go wrong while loading a scheduler config, building a scheduler or
/// running a denoising step. Each message says what went wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The scheduler config file could not be read.
    #[error("cannot read scheduler config {path}: {source} (expected diffusers' scheduler/scheduler_config.json)")]
    ConfigRead {
        /// The file that was opened.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The scheduler config is not valid JSON, or not a JSON object.
    #[error("scheduler config {origin} is not a valid diffusers scheduler config: {message}")]
    ConfigSyntax {
        /// Where the config came from (a path, or `<memory>`).
        origin: String,
        /// What the parser said.
        message: String,
    },

    /// A key of the scheduler config holds a value of the wrong type or an unknown variant.
    #[error("scheduler config {origin}: invalid value for `{key}`: {message}")]
    ConfigValue {
        /// Where the config came from (a path, or `<memory>`).
        origin: String,
        /// The offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },

    /// A config value is well-formed but makes no sense (e.g. `num_train_timesteps = 0`).
    #[error("{scheduler}: invalid config value `{key}`: {message}")]
    InvalidConfig {
        /// The scheduler being built.
        scheduler: &'static str,
        /// The offending key.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The config asks for a diffusers feature this crate does not implement.
    #[error("{scheduler}: `{key} = {value}` is not supported by styleforge; {hint}")]
    Unsupported {
        /// The scheduler being built.
        scheduler: &'static str,
        /// The config key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What to do instead.
        hint: &'static str,
    },

    /// `set_timesteps` was asked for more steps than the model was trained with, or for none.
    #[error(
        "{scheduler}: num_inference_steps = {requested} is invalid: it must be between 1 and \
         num_train_timesteps = {num_train_timesteps}; use fewer steps"
    )]
    InvalidStepCount {
        /// The scheduler.
        scheduler: &'static str,
        /// The requested number of steps.
        requested: usize,
        /// The number of training timesteps.
        num_train_timesteps: usize,
    },

    /// A method that needs the inference schedule was called before `set_timesteps`.
    #[error("{scheduler}: {operation} called before set_timesteps; call set_timesteps(num_inference_steps) first")]
    TimestepsNotSet {
        /// The scheduler.
        scheduler: &'static str,
        /// The method that was called.
        operation: &'static str,
    },

    /// A timestep that is not part of the current schedule was passed.
    #[error(
        "{scheduler}: timestep {timestep} is not in the current schedule; pass the values returned by \
         timesteps() (after set_timesteps)"
    )]
    UnknownTimestep {
        /// The scheduler.
        scheduler: &'static str,
        /// The timestep passed.
        timestep: f64,
    },

    /// `step` was called more often than the schedule has timesteps.
    #[error(
        "{scheduler}: step called after the last timestep (step index {step_index}, {num_timesteps} timesteps); \
         call set_timesteps again to start a new generation"
    )]
    ScheduleExhausted {
        /// The scheduler.
        scheduler: &'static str,
        /// The step index that was reached.
        step_index: usize,
        /// The number of timesteps in the schedule.
        num_timesteps: usize,
    },

    /// A scheduler name given by the user is not known.
    #[error("unknown scheduler `{name}`; valid names: {valid}")]
    UnknownScheduler {
        /// The name given.
        name: String,
        /// The valid names, comma separated.
        valid: String,
    },

    /// The model's config names a diffusers scheduler class this crate does not implement.
    #[error(
        "scheduler class `{class_name}` is not implemented; supported classes: {supported}. \
         Pick a scheduler by name instead (e.g. \"euler\" or \"dpm++2m\")"
    )]
    UnknownSchedulerClass {
        /// The `_class_name` found.
        class_name: String,
        /// The supported class names, comma separated.
        supported: String,
    },

    /// Karras sigmas were requested for a scheduler that has none in diffusers.
    #[error("{scheduler} has no Karras sigmas option (diffusers offers it for: euler, dpm++2m, dpm++2m_sde)")]
    KarrasUnsupported {
        /// The scheduler name.
        scheduler: &'static str,
    },

    /// An invalid argument was passed to a scheduler method.
    #[error("{scheduler}: {message}")]
    InvalidArgument {
        /// The scheduler (or helper) that rejected the argument.
        scheduler: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A stochastic step needed noise but the noise source could not provide it.
    #[error("noise source: {0}")]
    Noise(String),

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias used throughout this crate.
pub type Result<T> = std::result::Result<T, SchedulerError>;
