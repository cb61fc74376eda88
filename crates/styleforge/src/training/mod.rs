//! Training: the one run loop ([`core`]) and the tasks on it — fine-tuning with every
//! method ([`engine`]: StyleForge, Multi-StyleForge, DreamBooth and the adapter baselines)
//! and pretraining a base model from scratch ([`pretrain`]).
//!
//! - [`config`]: the TOML run configuration and each method's defaults.
//! - [`core`]: the loop — optimizer, learning-rate plan ([`lr`]), accumulation, clipping,
//!   the log ([`log`]), checkpoints ([`checkpoint`]) and exact resume.
//! - [`step`]: the loss of one step (prior preservation) and gradient clipping;
//!   [`objective`]: timestep sampling, noise offset, min-SNR weighting; [`ema`]: the
//!   moving average of the weights.
//! - [`engine`]: fine-tuning: [`models`] (what is trained), [`concepts`] (the data;
//!   [`captions`]: caption dropout and tag shuffling; [`data_options`]: caption extension,
//!   loss masks, aspect-ratio buckets),
//!   validation and the final model.
//! - [`pretrain`]: `styleforge pretrain`, stage by stage.
//! - [`stop`]: stopping a run between steps with a checkpoint (the [`stop::StopSignal`]).
//! - [`validation`]: the validation loss on held-out images.
//! - [`report`]: validation grids and the loss curve.
//! - [`memory`]: the peak-memory estimate and the guard that refuses runs that cannot fit.
//! - [`precision`]: mixed precision (bf16, fp16 with dynamic loss scaling).

pub mod captions;
pub mod checkpoint;
pub mod concepts;
pub mod config;
pub mod core;
pub mod data_options;
pub mod ema;
pub mod engine;
pub mod log;
pub mod lr;
pub mod memory;
pub mod models;
pub mod objective;
pub mod precision;
pub mod pretrain;
pub mod report;
pub mod step;
pub mod stop;
pub mod validation;

pub use config::{ConfigFile, Method, ResolvedConfig, TrainConfig};
pub use engine::{train, RunOptions, TrainSummary};
pub use log::{read_log, LogEntry};
pub use stop::{StopReason, StopRecord, StopSignal};
