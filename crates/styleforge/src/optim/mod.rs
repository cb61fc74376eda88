//! Optimizers that update trainable variables in place.

pub mod adamw;
pub mod adamw8bit;

pub use adamw::{AdamW, AdamWConfig, OptimizerKind, StateSource};
