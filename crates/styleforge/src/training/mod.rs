//! Fine-tuning: StyleForge, Multi-StyleForge and the DreamBooth baseline as configurations
//! of one training engine.
//!
//! - [`config`]: the TOML run configuration and each method's defaults.
//! - [`step`]: the loss of one step (prior preservation) and gradient clipping.
//! - [`engine`]: the loop, with checkpoints, exact resume, validation and the final model.
//! - [`checkpoint`]: atomic checkpoints holding weights, optimizer and RNG state.
//! - [`report`]: validation grids and the loss curve.
//! - [`memory`]: the peak-memory estimate and the guard that refuses runs that cannot fit.

pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod memory;
pub mod pretrain;
pub mod report;
pub mod step;

pub use config::{Method, ResolvedConfig, TrainConfig};
pub use engine::{train, RunOptions, TrainSummary};
