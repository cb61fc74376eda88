//! The training log (`train_log.jsonl`): one JSON line per optimizer step, appended as the
//! run goes and cut back to the checkpoint's step when a run resumes.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use styleforge_models::files;

use crate::error::{Error, Result};

/// One JSON line of the training log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// Optimizer step (1-based).
    pub step: usize,
    /// Total loss (mean over micro-batches).
    pub loss: f64,
    /// StyleRef part.
    pub loss_instance: f64,
    /// Aux part.
    pub loss_prior: f64,
    /// Gradient norm before clipping; NaN (`null` in the file) on a skipped step.
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Seconds the step took.
    pub step_time_s: f64,
    /// The validation loss after this step, on the steps where it is measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// The loss scale the step's loss was multiplied by (fp16 runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// Whether the step was skipped because its gradients overflowed (fp16 runs): no
    /// weight changed, and `grad_norm` is NaN.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// A number that JSON wrote as `null` (serde_json's NaN) read back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Reads a training log, skipping unreadable lines.
pub fn read_log(path: &Path) -> Vec<LogEntry> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn line(entry: &LogEntry) -> Result<String> {
    serde_json::to_string(entry).map_err(|e| Error::Json {
        what: "a training log line".into(),
        source: e,
    })
}

/// A log open for appending.
pub struct LogWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl LogWriter {
    /// Opens the log at `path` for a run at `step`: lines after `step` (left by a run that
    /// stopped after its last checkpoint) are dropped, atomically; a fresh run (`step` 0)
    /// starts an empty log.
    pub fn open(path: &Path, step: usize) -> Result<Self> {
        if path.is_file() {
            let mut text = String::new();
            for e in read_log(path).into_iter().filter(|e| e.step <= step) {
                text.push_str(&line(&e)?);
                text.push('\n');
            }
            files::write(path, text)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(files::at(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one entry.
    pub fn append(&mut self, entry: &LogEntry) -> Result<()> {
        let text = line(entry)?;
        writeln!(self.file, "{text}").map_err(files::at(&self.path))?;
        Ok(())
    }
}
