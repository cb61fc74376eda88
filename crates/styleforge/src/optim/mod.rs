//! Optimizers that update trainable variables in place.

pub mod adamw;

pub use adamw::{AdamW, AdamWConfig};
