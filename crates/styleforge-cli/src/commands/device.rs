//! `--device`, shared by every command that computes.

use anyhow::Result;
use clap::Args;
use styleforge::device::{describe, DeviceChoice};
use styleforge::models::candle::Device;

/// The `--device` argument.
#[derive(Args, Debug, Clone, Default)]
pub struct DeviceArg {
    /// Where to compute: cpu, cuda, cuda:N or auto [default: auto, a CUDA GPU when this
    /// build has CUDA and one is present, else the CPU].
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceChoice>,
}

impl DeviceArg {
    /// The device: the flag, else `fallback` (a run config's `device`); logged (`--quiet`
    /// hides it).
    pub fn resolve(&self, fallback: DeviceChoice) -> Result<Device> {
        let device = self.device.unwrap_or(fallback).device()?;
        tracing::info!("device: {}", describe(&device));
        Ok(device)
    }
}
