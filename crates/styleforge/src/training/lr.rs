//! The learning-rate schedule every training loop uses: a linear warm-up to the peak, then
//! constant, linear or cosine decay over the remaining steps (to 0, or to a floor).

use serde::{Deserialize, Serialize};

/// The shape of the learning rate after warm-up (`lr_schedule` in the TOML files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// Constant at the peak.
    #[default]
    Constant,
    /// Linear decay to the floor at the last step.
    Linear,
    /// Half a cosine from the peak to the floor at the last step.
    Cosine,
}

/// A learning-rate plan over a run of `total_steps` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrPlan {
    /// The learning rate after warm-up.
    pub peak: f64,
    /// Steps of linear warm-up from 0 (0: none).
    pub warmup_steps: usize,
    /// The steps the decay spans to its end.
    pub total_steps: usize,
    /// The shape after warm-up.
    pub schedule: LrSchedule,
    /// Where the decay ends, as a fraction of the peak (0: decays to 0).
    pub floor: f64,
}

impl LrPlan {
    /// A plan decaying to 0.
    pub fn new(peak: f64, warmup_steps: usize, total_steps: usize, schedule: LrSchedule) -> Self {
        Self {
            peak,
            warmup_steps,
            total_steps,
            schedule,
            floor: 0.0,
        }
    }

    /// The learning rate of optimizer step `step` (1-based: the first update is step 1).
    pub fn at(&self, step: usize) -> f64 {
        let base = self.peak;
        if self.warmup_steps > 0 && step <= self.warmup_steps {
            return base * step as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = (step.saturating_sub(self.warmup_steps) as f64 / span).min(1.0);
        let decay = match self.schedule {
            LrSchedule::Constant => return base,
            LrSchedule::Linear if self.floor == 0.0 => return base * (1.0 - progress),
            LrSchedule::Cosine if self.floor == 0.0 => {
                return base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            LrSchedule::Linear => 1.0 - progress,
            LrSchedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        base * (self.floor + (1.0 - self.floor) * decay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays() {
        let plan = LrPlan::new(1e-3, 10, 110, LrSchedule::Cosine);
        assert!((plan.at(1) - 1e-4).abs() < 1e-15);
        assert!((plan.at(10) - 1e-3).abs() < 1e-15);
        assert!((plan.at(60) - 5e-4).abs() < 1e-12);
        assert!(plan.at(110).abs() < 1e-15);
        assert!(plan.at(500).abs() < 1e-15);
        let linear = LrPlan::new(1.0, 0, 4, LrSchedule::Linear);
        let seen: Vec<f64> = (1..=4).map(|s| linear.at(s)).collect();
        assert_eq!(seen, [0.75, 0.5, 0.25, 0.0]);
        let constant = LrPlan::new(2.0, 2, 10, LrSchedule::Constant);
        assert_eq!(
            [constant.at(1), constant.at(2), constant.at(9)],
            [1.0, 2.0, 2.0]
        );
    }

    #[test]
    fn a_floor_keeps_the_end_above_zero() {
        let plan = LrPlan {
            floor: 0.01,
            ..LrPlan::new(1.0, 0, 100, LrSchedule::Cosine)
        };
        assert!((plan.at(100) - 0.01).abs() < 1e-12);
        assert!((plan.at(50) - 0.505).abs() < 1e-12);
    }
}
