//! Which device a command computes on: `cpu`, `cuda`, `cuda:N`, or `auto` (the first CUDA
//! GPU when this build has CUDA and one is present, else the CPU). Library functions take
//! the resulting [`Device`]; only this module creates one from a user's choice.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A device as a user names it (`--device`, `device = "..."` in a run config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA GPU when available, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA GPU number N (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "unknown device `{s}`: use cpu, cuda, cuda:N or auto"
                    ))
                }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether this build can compute on CUDA GPUs (the `cuda` cargo feature).
pub fn cuda_built() -> bool {
    candle_core::utils::cuda_is_available()
}

impl DeviceChoice {
    /// The device: CUDA asked for in a build without CUDA, or a GPU that cannot be opened,
    /// is an error that says which.
    pub fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto if !cuda_built() => Ok(Device::Cpu),
            Self::Auto => match Device::new_cuda(0) {
                Ok(d) => Ok(d),
                Err(e) => {
                    tracing::info!("no usable CUDA GPU ({e}); computing on the CPU");
                    Ok(Device::Cpu)
                }
            },
            Self::Cuda(_) if !cuda_built() => Err(Error::Device(format!(
                "--device {self}: this styleforge was built without CUDA; rebuild it with `cargo build --release --features cuda` (see README, Building with CUDA), or use --device cpu"
            ))),
            Self::Cuda(n) => Device::new_cuda(n).map_err(|e| {
                Error::Device(format!(
                    "--device {self}: cannot open CUDA GPU {n} ({e}); check `nvidia-smi`, or use --device cpu"
                ))
            }),
        }
    }
}

/// A short name of `device` for messages (`cpu`, `cuda:0`).
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => match device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            _ => "cuda".to_string(),
        },
        Device::Metal(_) => "metal".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_choices() {
        for (text, want) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:2", DeviceChoice::Cuda(2)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap(), want, "{text}");
        }
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
        let err = "tpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("cpu, cuda, cuda:N or auto"), "{err}");
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn cpu_and_auto_work_and_cuda_without_it_says_why() {
        assert!(DeviceChoice::Cpu.device().unwrap().is_cpu());
        let auto = DeviceChoice::Auto.device().unwrap();
        if !cuda_built() {
            assert!(auto.is_cpu());
            let err = DeviceChoice::Cuda(0).device().unwrap_err().to_string();
            assert!(err.contains("built without CUDA"), "{err}");
        }
        assert_eq!(describe(&Device::Cpu), "cpu");
    }
}
