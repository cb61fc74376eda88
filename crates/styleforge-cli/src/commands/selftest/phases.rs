//! Where a `styleforge train` process is, read from its stderr: the progress lines of the
//! preparation phases (`aux images 0/6`, `encoding training images 0/10`) and the library's
//! phase lines (`writing checkpoint …`, `sampling the validation grid of step 6`, `writing
//! the model to …`, and with `styleforge::training::core=debug` `step 7 begins` / `step 7
//! done`).

use std::fmt;

/// A phase the campaign kills runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Phase {
    /// Generating the Aux images with the base model.
    Aux,
    /// Encoding the training images' latents.
    Caching,
    /// An optimizer step.
    Step,
    /// Writing a checkpoint.
    Checkpoint,
    /// Sampling a validation grid (periodic or final).
    Validation,
    /// Writing the final model.
    Model,
}

impl Phase {
    /// Every phase, in the order a run meets them.
    pub const ALL: [Phase; 6] = [
        Phase::Aux,
        Phase::Caching,
        Phase::Step,
        Phase::Checkpoint,
        Phase::Validation,
        Phase::Model,
    ];

    /// The phase's name in the campaign's table.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Aux => "Aux generation",
            Phase::Caching => "latent caching",
            Phase::Step => "training step",
            Phase::Checkpoint => "checkpoint write",
            Phase::Validation => "validation pictures",
            Phase::Model => "final model write",
        }
    }
}

/// What happens inside the training loop at step `k`, in the loop's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// Computing the step.
    Compute,
    /// The loop's bookkeeping after the step (log, progress).
    AfterCompute,
    /// The step's validation grid.
    Validation,
    /// After the grid.
    AfterValidation,
    /// The step's checkpoint.
    Checkpoint,
    /// After the checkpoint.
    AfterCheckpoint,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum At {
    /// Before any phase line: loading the models, restoring a checkpoint.
    Startup,
    /// Generating Aux images (`n` to make when the phase began).
    Aux(usize),
    /// Between preparation phases.
    Setup,
    /// Encoding the latents of `n` images.
    Caching(usize),
    /// Step `k` of the loop, at `Part`.
    Loop(usize, Part),
    /// Writing the final model.
    Model,
    /// Between the model and the final grid.
    AfterModel,
    /// The final validation grid.
    FinalValidation,
    /// After the final grid (the loss curve), or the run is over.
    Finishing,
}

impl At {
    /// The phase a kill here counts in (`None`: between phases, not one the campaign
    /// targets).
    pub fn phase(self) -> Option<Phase> {
        match self {
            At::Aux(_) => Some(Phase::Aux),
            At::Caching(_) => Some(Phase::Caching),
            At::Loop(_, Part::Validation) | At::FinalValidation => Some(Phase::Validation),
            At::Loop(_, Part::Checkpoint) => Some(Phase::Checkpoint),
            At::Loop(..) => Some(Phase::Step),
            At::Model => Some(Phase::Model),
            At::Startup | At::Setup | At::AfterModel | At::Finishing => None,
        }
    }

    /// Position in the run, for places inside or after the loop (`None` before it).
    fn order(self) -> Option<(usize, usize)> {
        match self {
            At::Loop(k, part) => Some((k, part as usize)),
            At::Model => Some((usize::MAX, 0)),
            At::AfterModel => Some((usize::MAX, 1)),
            At::FinalValidation => Some((usize::MAX, 2)),
            At::Finishing => Some((usize::MAX, 3)),
            At::Startup | At::Aux(_) | At::Setup | At::Caching(_) => None,
        }
    }

    /// Whether a run at `self` is past `target` for good in this sitting (it cannot be
    /// entered again before the process ends).
    pub fn is_past(self, target: At) -> bool {
        // Inside one step, whichever of the grid and the checkpoint comes first: a place is
        // past one of them only once that one is over.
        if let (At::Loop(k, now), At::Loop(t, part)) = (self, target) {
            if k == t && part != Part::Compute {
                return matches!(
                    (part, now),
                    (Part::Validation, Part::AfterValidation)
                        | (Part::Checkpoint, Part::AfterCheckpoint)
                );
            }
        }
        match (target.order(), self.order()) {
            // Preparation phases: past once the loop has begun.
            (None, now) => now.is_some(),
            (Some(t), Some(now)) => now > t,
            (Some(_), None) => false,
        }
    }

    /// Whether `self` is the occurrence `target` (Aux generation matches whatever is left
    /// to make).
    pub fn matches(self, target: At) -> bool {
        match (self, target) {
            (At::Aux(_), At::Aux(_)) => true,
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Startup => write!(f, "startup"),
            At::Aux(_) => write!(f, "Aux generation"),
            At::Setup => write!(f, "between preparation phases"),
            At::Caching(n) => write!(f, "latent caching ({n} images)"),
            At::Loop(k, Part::Compute) => write!(f, "step {k}"),
            At::Loop(k, Part::Validation) => write!(f, "validation grid of step {k}"),
            At::Loop(k, Part::Checkpoint) => write!(f, "checkpoint of step {k}"),
            At::Loop(k, _) => write!(f, "after step {k}"),
            At::Model => write!(f, "final model write"),
            At::AfterModel => write!(f, "after the final model write"),
            At::FinalValidation => write!(f, "final validation grid"),
            At::Finishing => write!(f, "finishing"),
        }
    }
}

/// Follows a run's stderr line by line.
#[derive(Debug, Clone)]
pub struct Tracker {
    at: At,
    total: usize,
}

impl Tracker {
    /// A tracker for a run of `total` steps, at its start.
    pub fn new(total: usize) -> Self {
        Self {
            at: At::Startup,
            total,
        }
    }

    /// Where the run is.
    pub fn at(&self) -> At {
        self.at
    }

    /// Reads one line; returns the new place when the line moves the run.
    pub fn feed(&mut self, line: &str) -> Option<At> {
        let next = self.next(line)?;
        if next == self.at {
            return None;
        }
        self.at = next;
        Some(next)
    }

    fn next(&self, line: &str) -> Option<At> {
        if let Some(n) = count_after(line, "aux images 0/") {
            return Some(At::Aux(n));
        }
        if line.starts_with("aux images done") {
            return Some(At::Setup);
        }
        if let Some(n) = count_after(line, "encoding training images 0/") {
            return Some(At::Caching(n));
        }
        if line.starts_with("encoding training images done") {
            return Some(At::Setup);
        }
        if let Some(k) = number_between(line, "step ", " begins") {
            return Some(At::Loop(k, Part::Compute));
        }
        if let Some(k) = number_between(line, "step ", " done") {
            return Some(At::Loop(k, Part::AfterCompute));
        }
        if let Some(k) = number_after(line, "sampling the validation grid of step ") {
            return Some(if k >= self.total {
                At::FinalValidation
            } else {
                At::Loop(k, Part::Validation)
            });
        }
        if line.contains("wrote the validation grid") {
            return Some(match self.at {
                At::Loop(k, _) => At::Loop(k, Part::AfterValidation),
                _ => At::Finishing,
            });
        }
        if line.contains("writing checkpoint ") {
            return checkpoint_step(line).map(|k| At::Loop(k, Part::Checkpoint));
        }
        if line.contains("checkpoint written: ") {
            return checkpoint_step(line).map(|k| At::Loop(k, Part::AfterCheckpoint));
        }
        if line.contains("writing the model to ") {
            return Some(At::Model);
        }
        if line.contains("wrote the model ") {
            return Some(At::AfterModel);
        }
        None
    }
}

/// `N` in `…prefix N…` where the line's message starts with `prefix` (progress lines).
fn count_after(line: &str, prefix: &str) -> Option<usize> {
    let rest = line.strip_prefix(prefix)?;
    leading_number(rest)
}

/// The number right after `prefix`, anywhere in the line.
fn number_after(line: &str, prefix: &str) -> Option<usize> {
    let at = line.find(prefix)?;
    leading_number(&line[at + prefix.len()..])
}

/// `N` in `…prefix N suffix`, the suffix ending the line.
fn number_between(line: &str, prefix: &str, suffix: &str) -> Option<usize> {
    let head = line.trim_end().strip_suffix(suffix)?;
    let at = head.rfind(prefix)?;
    head[at + prefix.len()..].parse().ok()
}

/// The step of the checkpoint folder a line names (`…/step-0000012`).
fn checkpoint_step(line: &str) -> Option<usize> {
    let at = line.rfind("step-")?;
    leading_number(&line[at + "step-".len()..])
}

fn leading_number(s: &str) -> Option<usize> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(lines: &[&str]) -> Vec<At> {
        let mut t = Tracker::new(12);
        lines.iter().filter_map(|l| t.feed(l)).collect()
    }

    #[test]
    fn a_run_s_lines_give_its_phases_in_order() {
        // As `styleforge train` writes them to a pipe (INFO/DEBUG prefixes from tracing).
        let seen = walk(&[
            " INFO device: cpu",
            " INFO generating 6 Aux image(s) for concept 0 with the base model (\"style\")",
            "aux images 0/6",
            "aux images 1/6 | 0s | eta 1s",
            "aux images done: 6 in 1s",
            "encoding training images 0/10",
            "encoding training images done: 10 in 0s",
            " INFO training steps 1 to 12 of 12",
            "DEBUG step 1 begins",
            "DEBUG step 1 done",
            "step 1/12 | loss 0.1 | lr 1.00e-4 | 0.20 s/step | eta 2s | peak 0.30 GB",
            "DEBUG step 6 begins",
            "DEBUG step 6 done",
            " INFO sampling the validation grid of step 6",
            " INFO wrote the validation grid /r/validation/step-0000006.png",
            " INFO writing checkpoint /r/checkpoints/step-0000006",
            " INFO checkpoint written: /r/checkpoints/step-0000006 (0.1 s)",
            "DEBUG step 12 begins",
            "DEBUG step 12 done",
            " INFO writing the model to /r/model",
            " INFO wrote the model /r/model",
            " INFO sampling the validation grid of step 12",
            " INFO wrote the validation grid /r/validation/step-0000012.png",
        ]);
        assert_eq!(
            seen,
            [
                At::Aux(6),
                At::Setup,
                At::Caching(10),
                At::Setup,
                At::Loop(1, Part::Compute),
                At::Loop(1, Part::AfterCompute),
                At::Loop(6, Part::Compute),
                At::Loop(6, Part::AfterCompute),
                At::Loop(6, Part::Validation),
                At::Loop(6, Part::AfterValidation),
                At::Loop(6, Part::Checkpoint),
                At::Loop(6, Part::AfterCheckpoint),
                At::Loop(12, Part::Compute),
                At::Loop(12, Part::AfterCompute),
                At::Model,
                At::AfterModel,
                At::FinalValidation,
                At::Finishing,
            ]
        );
    }

    #[test]
    fn places_know_what_is_behind_them() {
        let ckpt = At::Loop(8, Part::Checkpoint);
        assert!(At::Loop(9, Part::Compute).is_past(ckpt));
        assert!(At::Loop(8, Part::AfterCheckpoint).is_past(ckpt));
        assert!(!At::Loop(8, Part::Validation).is_past(ckpt));
        assert!(!At::Loop(8, Part::AfterCheckpoint).is_past(At::Loop(8, Part::Validation)));
        assert!(At::Loop(8, Part::AfterValidation).is_past(At::Loop(8, Part::Validation)));
        assert!(At::Loop(8, Part::AfterCompute).is_past(At::Loop(8, Part::Compute)));
        assert!(!At::Caching(10).is_past(ckpt));
        assert!(At::Loop(1, Part::Compute).is_past(At::Caching(6)));
        assert!(!At::Setup.is_past(At::Caching(6)));
        assert!(At::Model.is_past(At::Loop(12, Part::Compute)));
        assert!(!At::AfterModel.is_past(At::FinalValidation));
        assert!(At::Aux(3).matches(At::Aux(6)));
        assert_eq!(
            At::Loop(3, Part::AfterCheckpoint).phase(),
            Some(Phase::Step)
        );
        assert_eq!(At::FinalValidation.phase(), Some(Phase::Validation));
        assert_eq!(At::Setup.phase(), None);
    }
}
