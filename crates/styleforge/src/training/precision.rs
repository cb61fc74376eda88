//! Mixed-precision training (`[training] precision`): the dtype forward and backward run
//! in, and dynamic loss scaling for fp16.
//!
//! Whatever the precision, the trained weights and the optimizer states stay f32 (master
//! weights): the models compute with bf16 or f16 copies cast from them
//! ([`styleforge_models::weights::CastCopies`]), whose cast hands each gradient back in f32.
//! Group-norm, layer-norm and softmax statistics and the loss are computed in f32.
//!
//! f16 keeps 5 exponent bits: gradients below about 6e-8 flush to zero. As PyTorch's
//! `torch.amp.GradScaler`, the loss is multiplied by a scale before backward and the
//! gradients divided by it after; a step whose gradients hold an inf or NaN is skipped and
//! the scale halved, and after `growth_interval` clean steps in a row it doubles. bf16 has
//! f32's exponent range and needs no scaling.

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The dtype a training run computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    Fp32,
    /// Forward and backward in bfloat16, no loss scaling.
    Bf16,
    /// Forward and backward in float16, with dynamic loss scaling.
    Fp16,
}

impl Precision {
    /// The name used in configs (`fp32`, `bf16`, `fp16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
            Self::Fp16 => "fp16",
        }
    }

    /// The dtype the models compute in.
    pub fn dtype(self) -> DType {
        match self {
            Self::Fp32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::Fp16 => DType::F16,
        }
    }

    /// Whether the models compute in another dtype than their f32 master weights.
    pub fn is_mixed(self) -> bool {
        self != Self::Fp32
    }

    /// Whether the loss is scaled (fp16).
    pub fn scales_loss(self) -> bool {
        self == Self::Fp16
    }
}

/// Dynamic loss scaling, with PyTorch `GradScaler`'s defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaleConfig {
    /// The first scale (65536).
    pub init_scale: f64,
    /// Factor after `growth_interval` clean steps (2).
    pub growth_factor: f64,
    /// Factor after an overflow (0.5).
    pub backoff_factor: f64,
    /// Clean steps in a row before the scale grows (2000).
    pub growth_interval: usize,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl LossScaleConfig {
    /// Checks the values (a finite positive scale, factors that grow and shrink it).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidConfig(what));
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return bad(format!(
                "training.loss_scale_init must be a positive number, got {}",
                self.init_scale
            ));
        }
        if self.growth_interval == 0 {
            return bad("training.loss_scale_growth_interval must be at least 1".into());
        }
        if !(self.growth_factor > 1.0 && self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return bad(format!(
                "loss scaling needs a growth factor above 1 and a backoff in (0, 1), got {} and {}",
                self.growth_factor, self.backoff_factor
            ));
        }
        Ok(())
    }
}

/// The scaler's state, saved in checkpoints (`state.json`) so a resumed run scales as the
/// uninterrupted one would.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaleState {
    /// The current scale.
    pub scale: f64,
    /// Clean steps since the last change of scale.
    pub growth_tracker: usize,
    /// Steps skipped for overflow so far in the run.
    pub skipped_steps: usize,
}

/// What [`LossScaler::unscale`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unscaled {
    /// Every gradient finite: the step goes ahead.
    Finite,
    /// Some gradient held an inf or NaN: the step is skipped.
    Overflow,
}

/// Dynamic loss scaling for one run.
#[derive(Debug, Clone)]
pub struct LossScaler {
    config: LossScaleConfig,
    state: LossScaleState,
}

impl LossScaler {
    /// A scaler at `config.init_scale`.
    pub fn new(config: LossScaleConfig) -> Self {
        Self {
            state: LossScaleState {
                scale: config.init_scale,
                growth_tracker: 0,
                skipped_steps: 0,
            },
            config,
        }
    }

    /// The scale the next loss is multiplied by.
    pub fn scale(&self) -> f64 {
        self.state.scale
    }

    /// The state to checkpoint.
    pub fn state(&self) -> LossScaleState {
        self.state
    }

    /// Continues from a checkpoint's state.
    pub fn restore(&mut self, state: LossScaleState) {
        self.state = state;
    }

    /// Divides the gradients of `vars` by the scale (in f32) and says whether they are
    /// all finite. On an overflow the gradients are left as they are: the step is skipped.
    pub fn unscale(&self, grads: &mut GradStore, vars: &[Var]) -> Result<Unscaled> {
        let mut finite = true;
        for var in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                // `0·g` is 0 for a finite value and NaN for an inf or NaN: its sum is 0
                // exactly when every value is finite (a sum of |g| could overflow).
                let sum = g
                    .to_dtype(DType::F32)?
                    .affine(0.0, 0.0)?
                    .sum_all()?
                    .to_scalar::<f32>()?;
                if sum != 0.0 {
                    finite = false;
                    break;
                }
            }
        }
        if !finite {
            return Ok(Unscaled::Overflow);
        }
        let inv = 1.0 / self.state.scale;
        for var in vars {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g.to_dtype(DType::F32)? * inv)?);
            }
        }
        Ok(Unscaled::Finite)
    }

    /// Adapts the scale after a step (`torch.amp.GradScaler.update`): backed off and the
    /// clean-step count reset on an overflow, grown after `growth_interval` clean steps.
    pub fn update(&mut self, found: Unscaled) {
        let s = &mut self.state;
        match found {
            Unscaled::Overflow => {
                s.scale *= self.config.backoff_factor;
                s.growth_tracker = 0;
                s.skipped_steps += 1;
            }
            Unscaled::Finite => {
                s.growth_tracker += 1;
                if s.growth_tracker >= self.config.growth_interval {
                    s.scale *= self.config.growth_factor;
                    s.growth_tracker = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn grads_of(vars: &[Var], values: &[f32]) -> GradStore {
        let loss = vars
            .iter()
            .zip(values)
            .map(|(v, &x)| (v.as_tensor() * x as f64).unwrap().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        loss.backward().unwrap()
    }

    #[test]
    fn the_scale_backs_off_on_overflow_and_grows_after_clean_steps() {
        let dev = Device::Cpu;
        let vars = [
            Var::zeros(3, DType::F32, &dev).unwrap(),
            Var::zeros(2, DType::F32, &dev).unwrap(),
        ];
        let mut scaler = LossScaler::new(LossScaleConfig {
            init_scale: 1024.0,
            growth_interval: 3,
            ..Default::default()
        });
        // Finite gradients are divided by the scale.
        let mut g = grads_of(&vars, &[2048.0, 512.0]);
        assert_eq!(scaler.unscale(&mut g, &vars).unwrap(), Unscaled::Finite);
        let got = g
            .get(vars[0].as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, vec![2.0; 3]);
        let got = g
            .get(vars[1].as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, vec![0.5; 2]);
        scaler.update(Unscaled::Finite);
        scaler.update(Unscaled::Finite);
        assert_eq!(scaler.scale(), 1024.0);
        // An inf in any gradient is an overflow: halved, the clean count starts again.
        let mut g = grads_of(&vars, &[1.0, f32::INFINITY]);
        assert_eq!(scaler.unscale(&mut g, &vars).unwrap(), Unscaled::Overflow);
        scaler.update(Unscaled::Overflow);
        assert_eq!(scaler.scale(), 512.0);
        assert_eq!(scaler.state().skipped_steps, 1);
        let mut g = grads_of(&vars, &[f32::NAN, 1.0]);
        assert_eq!(scaler.unscale(&mut g, &vars).unwrap(), Unscaled::Overflow);
        scaler.update(Unscaled::Overflow);
        assert_eq!(scaler.scale(), 256.0);
        for _ in 0..2 {
            scaler.update(Unscaled::Finite);
        }
        assert_eq!(scaler.scale(), 256.0);
        scaler.update(Unscaled::Finite);
        assert_eq!(scaler.scale(), 512.0, "grown after 3 clean steps");
        let state = scaler.state();
        assert_eq!((state.growth_tracker, state.skipped_steps), (0, 2));
        let mut resumed = LossScaler::new(LossScaleConfig::default());
        resumed.restore(state);
        assert_eq!(resumed.scale(), 512.0);
        // Half-precision gradients are unscaled into f32.
        let h = Tensor::new(&[3.0f32], &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let v = Var::from_tensor(&h).unwrap();
        let mut g = (v.as_tensor() * 1024.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        scaler.unscale(&mut g, std::slice::from_ref(&v)).unwrap();
        let g = g.get(v.as_tensor()).unwrap();
        assert_eq!(g.dtype(), DType::F32);
        assert_eq!(g.to_vec1::<f32>().unwrap(), vec![2.0]);
    }

    #[test]
    fn precision_names_and_dtypes() {
        for (p, name, dtype) in [
            (Precision::Fp32, "fp32", DType::F32),
            (Precision::Bf16, "bf16", DType::BF16),
            (Precision::Fp16, "fp16", DType::F16),
        ] {
            assert_eq!((p.name(), p.dtype()), (name, dtype));
            let parsed: Precision = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(parsed, p);
        }
        assert!(LossScaleConfig::default().validate().is_ok());
        let zero = LossScaleConfig {
            growth_interval: 0,
            ..Default::default()
        };
        assert!(zero.validate().is_err());
    }
}
