//! Stopping a run early with nothing lost: a [`StopSignal`] the caller raises (the CLI on
//! SIGTERM or Ctrl-C, a test at a chosen step) and the loop ([`super::core::RunLoop`])
//! reads between optimizer steps. The loop finishes the step in progress, writes a
//! checkpoint of it as a periodic one is written, records the stop in the run folder
//! ([`StopRecord`], `<run>/stopped.json`) and returns; `--resume` continues from there
//! exactly.
//!
//! The library never installs signal handlers: whoever owns the process does, and raises
//! the signal from there.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::run_dir::RunDir;

/// A request to stop a run at the next step boundary, shared between the loop and the
/// code that asks (clones share one flag).
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    /// The step the loop is training (1-based), 0 when no step is under way.
    training: AtomicUsize,
}

impl StopSignal {
    /// A signal not raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop after the step in progress. Safe to call from any thread.
    pub fn request(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// The step being trained now (1-based), `None` outside the loop's steps (loading,
    /// Aux images, the final model): what "stopping after step N" names.
    pub fn training_step(&self) -> Option<usize> {
        match self.inner.training.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }

    pub(crate) fn set_training_step(&self, step: Option<usize>) {
        self.inner
            .training
            .store(step.unwrap_or(0), Ordering::SeqCst);
    }
}

/// Why a sitting ended before the run's last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// A [`StopSignal`] was raised (SIGTERM, Ctrl-C, the studio's Stop button).
    Requested,
    /// The sitting's wall-clock budget was spent (pretraining's `unet.max_minutes`).
    TimeBudget,
    /// The sitting was asked to end at an earlier step (`stop_after`).
    StepLimit,
}

/// `<run>/stopped.json`: the run stopped at `step`, whose checkpoint is in `checkpoints/`,
/// and resumes from there. Written when a sitting ends early, removed when the next
/// sitting starts training.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRecord {
    /// Optimizer steps done when the sitting stopped.
    pub step: usize,
    /// Why it stopped.
    pub reason: StopReason,
}

impl StopRecord {
    /// The record of `run`, if its last sitting stopped early.
    pub fn read(run: &RunDir) -> Option<Self> {
        serde_json::from_str(&std::fs::read_to_string(run.stop_record()).ok()?).ok()
    }

    /// Writes the record into `run` (atomically).
    pub fn write(&self, run: &RunDir) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Json {
            what: "the stop record".into(),
            source: e,
        })?;
        Ok(styleforge_models::files::write(
            &run.stop_record(),
            text + "\n",
        )?)
    }

    /// Removes the record of `run` (a new sitting trains on).
    pub fn clear(run: &RunDir) -> Result<()> {
        remove_if_present(&run.stop_record())
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}
