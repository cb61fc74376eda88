//! Picking a scheduler by name (user choice) or by the model config's `_class_name`.

use std::fmt;

use crate::config::{AlgorithmType, SchedulerConfig};
use crate::ddim::DdimScheduler;
use crate::ddpm::DdpmScheduler;
use crate::dpm_solver::{DpmSolverMultistepConfig, DpmSolverMultistepScheduler};
use crate::error::{Result, SchedulerError};
use crate::euler::{EulerConfig, EulerScheduler};
use crate::euler_ancestral::EulerAncestralScheduler;
use crate::pndm::PndmScheduler;
use crate::Scheduler;

/// The schedulers this crate implements, with the options that select a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `DDPMScheduler` (`"ddpm"`).
    Ddpm,
    /// `DDIMScheduler` (`"ddim"`).
    Ddim,
    /// `PNDMScheduler` (`"pndm"`, `"plms"`).
    Pndm,
    /// `EulerDiscreteScheduler` (`"euler"`), optionally with Karras sigmas.
    Euler {
        /// Use Karras sigmas.
        karras: bool,
    },
    /// `EulerAncestralDiscreteScheduler` (`"euler_a"`).
    EulerAncestral,
    /// `DPMSolverMultistepScheduler` (`"dpm++2m"`, or `"dpm++2m_sde"` with `sde`).
    DpmSolverMultistep {
        /// Use Karras sigmas.
        karras: bool,
        /// Use `algorithm_type = "sde-dpmsolver++"` instead of `"dpmsolver++"`.
        sde: bool,
    },
}

/// The names [`SchedulerKind::from_name`] accepts, for messages.
const VALID_NAMES: &str = "ddpm, ddim, pndm (plms), euler, euler_a (euler-ancestral), \
    dpm++2m (dpmpp_2m), dpm++2m_sde (dpmpp_2m_sde); add a _karras suffix or pass karras = true \
    for Karras sigmas (euler, dpm++2m, dpm++2m_sde)";

/// The diffusers classes [`SchedulerKind::from_config`] accepts.
const SUPPORTED_CLASSES: &str = "DDPMScheduler, DDIMScheduler, PNDMScheduler, \
    EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler";

impl SchedulerKind {
    /// The scheduler a user names, e.g. `"ddim"`, `"pndm"`, `"euler"`, `"euler_a"` /
    /// `"euler-ancestral"`, `"dpm++2m"` / `"dpmpp_2m"`, `"dpm++2m_sde"`, or a diffusers class
    /// name. Case, `-`/`_`/spaces and a `_karras` suffix are accepted. `karras` (or the suffix)
    /// asks for Karras sigmas, which only Euler and DPM-Solver offer; for those two the choice is
    /// authoritative: without it the scheduler uses the plain sigmas even if the model's config
    /// says otherwise.
    pub fn from_name(name: &str, karras: bool) -> Result<Self> {
        let mut key = name
            .trim()
            .to_ascii_lowercase()
            .replace("++", "pp")
            .replace(['-', ' '], "_");
        let mut karras = karras;
        if let Some(stripped) = key.strip_suffix("_karras") {
            key = stripped.to_string();
            karras = true;
        }
        let kind = match key.as_str() {
            "ddpm" | "ddpmscheduler" => Self::Ddpm,
            "ddim" | "ddimscheduler" => Self::Ddim,
            "pndm" | "plms" | "pndmscheduler" => Self::Pndm,
            "euler" | "eulerdiscretescheduler" => Self::Euler { karras },
            "euler_a" | "eulera" | "euler_ancestral" | "eulerancestraldiscretescheduler" => {
                Self::EulerAncestral
            }
            "dpmpp_2m" | "dpmpp2m" | "dpmsolvermultistepscheduler" => {
                Self::DpmSolverMultistep { karras, sde: false }
            }
            "dpmpp_2m_sde" | "dpmpp2m_sde" => Self::DpmSolverMultistep { karras, sde: true },
            _ => {
                return Err(SchedulerError::UnknownScheduler {
                    name: name.to_string(),
                    valid: VALID_NAMES.to_string(),
                })
            }
        };
        if karras && !kind.supports_karras() {
            return Err(SchedulerError::KarrasUnsupported {
                scheduler: kind.base_name(),
            });
        }
        Ok(kind)
    }

    /// The scheduler a model's config describes: its `_class_name` with its own
    /// `use_karras_sigmas` and `algorithm_type`. A config without `_class_name` is an error.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let class_name = config
            .class_name
            .as_deref()
            .unwrap_or("<missing _class_name>");
        let karras = config.use_karras_sigmas.unwrap_or(false);
        Ok(match class_name {
            "DDPMScheduler" => Self::Ddpm,
            "DDIMScheduler" => Self::Ddim,
            "PNDMScheduler" => Self::Pndm,
            "EulerDiscreteScheduler" => Self::Euler { karras },
            "EulerAncestralDiscreteScheduler" => Self::EulerAncestral,
            "DPMSolverMultistepScheduler" => Self::DpmSolverMultistep {
                karras,
                sde: config.algorithm_type == Some(AlgorithmType::SdeDpmSolverPlusPlus),
            },
            other => {
                return Err(SchedulerError::UnknownSchedulerClass {
                    class_name: other.to_string(),
                    supported: SUPPORTED_CLASSES.to_string(),
                })
            }
        })
    }

    /// Whether diffusers offers Karras sigmas for this scheduler.
    pub fn supports_karras(&self) -> bool {
        matches!(self, Self::Euler { .. } | Self::DpmSolverMultistep { .. })
    }

    /// Whether `step` draws noise (DDIM only when `eta > 0`, which is not known here: false).
    pub fn is_stochastic(&self) -> bool {
        matches!(
            self,
            Self::Ddpm | Self::EulerAncestral | Self::DpmSolverMultistep { sde: true, .. }
        )
    }

    /// The diffusers class implementing this scheduler.
    pub fn class_name(&self) -> &'static str {
        match self {
            Self::Ddpm => "DDPMScheduler",
            Self::Ddim => "DDIMScheduler",
            Self::Pndm => "PNDMScheduler",
            Self::Euler { .. } => "EulerDiscreteScheduler",
            Self::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Self::DpmSolverMultistep { .. } => "DPMSolverMultistepScheduler",
        }
    }

    fn base_name(&self) -> &'static str {
        match self {
            Self::Ddpm => "ddpm",
            Self::Ddim => "ddim",
            Self::Pndm => "pndm",
            Self::Euler { .. } => "euler",
            Self::EulerAncestral => "euler_a",
            Self::DpmSolverMultistep { sde: false, .. } => "dpm++2m",
            Self::DpmSolverMultistep { sde: true, .. } => "dpm++2m_sde",
        }
    }

    /// Builds this scheduler from a model's config, as diffusers'
    /// `Target.from_config(pipe.scheduler.config)`: the keys present in the config file that
    /// the target accepts are used, every other option takes the target's own diffusers default
    /// (so e.g. SD 1.5's PNDM config gives Euler `linspace` spacing, Euler's default). The
    /// Karras and SDE flags of `self` override the config's `use_karras_sigmas` and
    /// `algorithm_type`.
    pub fn build(&self, config: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
        Ok(match *self {
            Self::Ddpm => Box::new(DdpmScheduler::from_config(config)?),
            Self::Ddim => Box::new(DdimScheduler::from_config(config)?),
            Self::Pndm => Box::new(PndmScheduler::from_config(config)?),
            Self::Euler { karras } => {
                let mut c = EulerConfig::from_config(config)?;
                c.use_karras_sigmas = karras;
                Box::new(EulerScheduler::new(c)?)
            }
            Self::EulerAncestral => Box::new(EulerAncestralScheduler::from_config(config)?),
            Self::DpmSolverMultistep { karras, sde } => {
                let mut c = DpmSolverMultistepConfig::from_config(config)?;
                c.use_karras_sigmas = karras;
                c.algorithm_type = if sde {
                    AlgorithmType::SdeDpmSolverPlusPlus
                } else {
                    AlgorithmType::DpmSolverPlusPlus
                };
                Box::new(DpmSolverMultistepScheduler::new(c)?)
            }
        })
    }
}

impl fmt::Display for SchedulerKind {
    /// The canonical name, accepted back by [`SchedulerKind::from_name`] (e.g. `dpm++2m_karras`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let karras = matches!(
            self,
            Self::Euler { karras: true } | Self::DpmSolverMultistep { karras: true, .. }
        );
        write!(
            f,
            "{}{}",
            self.base_name(),
            if karras { "_karras" } else { "" }
        )
    }
}

/// Builds the scheduler a model's config describes (its `_class_name`), e.g. PNDM for SD 1.5.
pub fn build_scheduler(config: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
    SchedulerKind::from_config(config)?.build(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            SchedulerKind::from_name("DDIM", false).unwrap(),
            SchedulerKind::Ddim
        );
        assert_eq!(
            SchedulerKind::from_name("euler-ancestral", false).unwrap(),
            SchedulerKind::EulerAncestral
        );
        assert_eq!(
            SchedulerKind::from_name("dpm++2m", true).unwrap(),
            SchedulerKind::DpmSolverMultistep {
                karras: true,
                sde: false
            }
        );
        assert_eq!(
            SchedulerKind::from_name("dpmpp_2m_sde_karras", false).unwrap(),
            SchedulerKind::DpmSolverMultistep {
                karras: true,
                sde: true
            }
        );
        assert_eq!(
            SchedulerKind::from_name("Euler Karras", false).unwrap(),
            SchedulerKind::Euler { karras: true }
        );
        for kind in [
            SchedulerKind::Ddpm,
            SchedulerKind::Pndm,
            SchedulerKind::Euler { karras: true },
            SchedulerKind::DpmSolverMultistep {
                karras: false,
                sde: true,
            },
        ] {
            assert_eq!(
                SchedulerKind::from_name(&kind.to_string(), false).unwrap(),
                kind
            );
        }
        let err = SchedulerKind::from_name("lms", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lms") && err.contains("dpm++2m"), "{err}");
        let err = SchedulerKind::from_name("ddim", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Karras"), "{err}");
    }
}
