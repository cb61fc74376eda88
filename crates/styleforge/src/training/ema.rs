//! An exponential moving average of the trained weights, as diffusers' `EMAModel` keeps it:
//! after every optimizer step `shadow ← shadow − (1 − d)·(shadow − weight)` with the decay
//! `d` of step `n` (counting updates from 1):
//!
//! - `k = n − update_after_step − 1`; `d = 0` while `k ≤ 0` (the shadow copies the weights);
//! - then `d = 1 − (1 + k / inv_gamma)^(−power)` with warm-up, `(1 + k) / (10 + k)` without;
//! - clamped to `[min_decay, decay]`.
//!
//! The shadow is kept in f32, saved in checkpoints beside the weights, swapped in for
//! validation, and written as the output model.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optim::StateSource;

/// EMA settings (`[training] ema_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmaConfig {
    /// The largest decay (diffusers' default 0.9999).
    pub decay: f64,
    /// The smallest decay once updates begin.
    pub min_decay: f64,
    /// Updates before the average starts moving (it copies the weights until then).
    pub update_after_step: usize,
    /// The warm-up `1 − (1 + k/inv_gamma)^−power` instead of `(1 + k)/(10 + k)`.
    pub warmup: bool,
    /// Warm-up's `inv_gamma`.
    pub inv_gamma: f64,
    /// Warm-up's `power` (2/3 suits long runs, 3/4 short ones).
    pub power: f64,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self {
            decay: 0.9999,
            min_decay: 0.0,
            update_after_step: 0,
            warmup: false,
            inv_gamma: 1.0,
            power: 2.0 / 3.0,
        }
    }
}

impl EmaConfig {
    /// The decay of update `n` (1-based).
    pub fn decay_at(&self, n: usize) -> f64 {
        let k = n.saturating_sub(self.update_after_step + 1);
        if k == 0 {
            return 0.0;
        }
        let k = k as f64;
        let d = if self.warmup {
            1.0 - (1.0 + k / self.inv_gamma).powf(-self.power)
        } else {
            (1.0 + k) / (10.0 + k)
        };
        d.min(self.decay).max(self.min_decay)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let ok = (0.0..1.0).contains(&self.decay)
            && (0.0..=self.decay).contains(&self.min_decay)
            && self.inv_gamma > 0.0
            && self.power > 0.0;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidConfig(format!(
                "EMA settings out of range: need 0 <= ema_min_decay <= ema_decay < 1 and positive ema_inv_gamma, ema_power (got {self:?})"
            )))
        }
    }
}

/// The moving average of a set of named variables.
pub struct Ema {
    config: EmaConfig,
    /// Updates done.
    updates: usize,
    /// The averaged weights, in the variables' order.
    shadow: Vec<(String, Var, Tensor)>,
}

/// The key of the update count in a saved state.
const UPDATES_KEY: &str = "ema.updates";

impl Ema {
    /// An average starting at the variables' current values.
    pub fn new(config: EmaConfig, vars: &[(String, Var)]) -> Result<Self> {
        config.validate()?;
        let shadow = vars
            .iter()
            .map(|(name, var)| {
                let t = var.as_tensor().to_dtype(DType::F32)?.copy()?;
                Ok((name.clone(), var.clone(), t))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            updates: 0,
            shadow,
        })
    }

    /// Updates done.
    pub fn updates(&self) -> usize {
        self.updates
    }

    /// Moves the average towards the variables' current values.
    pub fn update(&mut self) -> Result<()> {
        self.updates += 1;
        let one_minus = 1.0 - self.config.decay_at(self.updates);
        for (_, var, shadow) in &mut self.shadow {
            // Detached: arithmetic on a variable records an autograd node, and each new
            // average would keep the previous one (and every step's weights) alive.
            let w = var.as_tensor().detach().to_dtype(DType::F32)?;
            let step = ((&*shadow - &w)? * one_minus)?;
            *shadow = (&*shadow - step)?.detach();
        }
        Ok(())
    }

    /// Copies the average into the variables; returns their previous values, for
    /// [`Self::restore`].
    pub fn swap_in(&self) -> Result<Vec<Tensor>> {
        let mut saved = Vec::with_capacity(self.shadow.len());
        for (_, var, shadow) in &self.shadow {
            saved.push(var.as_tensor().copy()?);
            var.set(&shadow.to_dtype(var.dtype())?)?;
        }
        Ok(saved)
    }

    /// Puts back the values [`Self::swap_in`] returned.
    pub fn restore(&self, saved: Vec<Tensor>) -> Result<()> {
        for ((_, var, _), t) in self.shadow.iter().zip(saved) {
            var.set(&t)?;
        }
        Ok(())
    }

    /// The averaged weights by name, and the update count, for a checkpoint.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out: HashMap<String, Tensor> = self
            .shadow
            .iter()
            .map(|(name, _, t)| (name.clone(), t.clone()))
            .collect();
        out.insert(
            UPDATES_KEY.to_string(),
            Tensor::new(&[self.updates as f64], &candle_core::Device::Cpu)?,
        );
        Ok(out)
    }

    /// Restores the average from a checkpoint's state (`path` names it in errors).
    pub fn load_state(&mut self, source: &impl StateSource, path: &Path) -> Result<()> {
        let missing = |what: &str| Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("its EMA state lacks `{what}`; was it made with EMA off?"),
        };
        let updates = source
            .tensor(UPDATES_KEY)?
            .ok_or_else(|| missing(UPDATES_KEY))?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        self.updates = updates.first().copied().unwrap_or(0.0) as usize;
        for (name, var, shadow) in &mut self.shadow {
            let t = source.tensor(name)?.ok_or_else(|| missing(name))?;
            if t.dims() != var.dims() {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!(
                        "EMA weight `{name}` has shape {:?}, the model {:?}",
                        t.dims(),
                        var.dims()
                    ),
                });
            }
            *shadow = t.to_dtype(DType::F32)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn decay_follows_diffusers_schedule() {
        let c = EmaConfig::default();
        assert_eq!(c.decay_at(1), 0.0);
        assert!((c.decay_at(2) - 2.0 / 11.0).abs() < 1e-15);
        let w = EmaConfig {
            warmup: true,
            update_after_step: 2,
            ..Default::default()
        };
        assert_eq!(w.decay_at(3), 0.0);
        assert!((w.decay_at(4) - (1.0 - 2f64.powf(-2.0 / 3.0))).abs() < 1e-15);
        assert!((EmaConfig::default().decay_at(10_000_000) - 0.9999).abs() < 1e-15);
    }

    #[test]
    fn averages_swaps_and_restores() {
        let var = Var::from_vec(vec![1f32, 2.0], 2, &Device::Cpu).unwrap();
        let mut ema = Ema::new(EmaConfig::default(), &[("w".into(), var.clone())]).unwrap();
        var.set(&Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap())
            .unwrap();
        ema.update().unwrap(); // decay 0: copies
        var.set(&Tensor::new(&[14f32, 15.0], &Device::Cpu).unwrap())
            .unwrap();
        ema.update().unwrap(); // decay 2/11: 3 + 9/11·11 = 12
                               // The average is plain data: no autograd node chaining it to the previous average
                               // and the weights of every step (which kept them all alive).
        assert!(ema.state().unwrap().values().all(|t| !t.track_op()));
        let saved = ema.swap_in().unwrap();
        let v = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (v[0] - 12.0).abs() < 1e-5 && (v[1] - 13.0).abs() < 1e-5,
            "{v:?}"
        );
        ema.restore(saved).unwrap();
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), [14.0, 15.0]);
        let state = ema.state().unwrap();
        let mut back = Ema::new(EmaConfig::default(), &[("w".into(), var.clone())]).unwrap();
        back.load_state(&state, Path::new("x")).unwrap();
        assert_eq!(back.updates(), 2);
        assert_eq!(
            back.state().unwrap()["w"].to_vec1::<f32>().unwrap(),
            state["w"].to_vec1::<f32>().unwrap()
        );
    }
}
