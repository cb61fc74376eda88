//! The runs of the runs folder, found from their files alone (so the studio finds them
//! again after a restart), and what the Runs page shows of each.
//!
//! A run is a folder directly in the runs folder with a `config.toml` (written by
//! `styleforge train` when it starts) or a `studio/` folder (written by the studio before
//! it starts the trainer). The studio keeps its own files in `<run>/studio/`:
//!
//! ```text
//! studio/train.toml   the config the studio started the run with (what `train --config` reads)
//! studio/train.log    the trainer's output
//! studio/pid          the trainer's process id while it runs
//! studio/exit.json    how the trainer's last sitting ended (stopped by the user, failed)
//! ```
//!
//! Where a run stopped is the trainer's own record (`<run>/stopped.json`, written when a
//! sitting stops between steps with a checkpoint); runs started from the command line are
//! resumed from their effective `config.toml`, in the folder they were started from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use styleforge::training::{checkpoint, read_log, LogEntry, ResolvedConfig, StopRecord};
use styleforge::RunDir;

use crate::error::{Result, StudioError};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// A process trains into it (its `run.lock` is held), or the studio has just started one.
    Running,
    /// The last step is done and the model written.
    Finished,
    /// Stopped before the end (by the user, or killed): resumable from its last checkpoint.
    Stopped,
    /// The trainer exited with an error.
    Failed,
}

/// How the trainer's last sitting ended (`studio/exit.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    /// `stopped` or `failed` (a clean exit leaves the run finished, or stopped short).
    pub state: RunState,
    /// The exit code, when there was one.
    pub code: Option<i32>,
}

/// The studio's files of a run.
#[derive(Debug, Clone)]
pub struct StudioFiles {
    dir: PathBuf,
}

impl StudioFiles {
    /// `<run>/studio/`.
    pub fn of(run: &Path) -> Self {
        Self {
            dir: run.join("studio"),
        }
    }
    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `train.toml`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("train.toml")
    }
    /// `train.log`.
    pub fn log(&self) -> PathBuf {
        self.dir.join("train.log")
    }
    /// `pid`.
    pub fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }
    /// `exit.json`.
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    /// The recorded end of the last sitting.
    pub fn read_exit(&self) -> Option<ExitRecord> {
        serde_json::from_str(&std::fs::read_to_string(self.exit()).ok()?).ok()
    }
}

/// Whether a live process holds the run's lock (`styleforge train` holds it while it runs;
/// the operating system drops it with the process).
pub fn locked(run: &RunDir) -> bool {
    let Ok(file) = std::fs::File::open(run.lock_file()) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// The run's effective config (`config.toml`), once the trainer has written it.
pub fn effective_config(run: &RunDir) -> Option<ResolvedConfig> {
    toml::from_str(&std::fs::read_to_string(run.config()).ok()?).ok()
}

/// Everything the Runs page shows of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    /// The folder's name.
    pub name: String,
    /// Where it stands.
    pub state: RunState,
    /// The method (from the config).
    pub method: Option<String>,
    /// The last logged step.
    pub step: usize,
    /// The steps the run is set to.
    pub steps: Option<usize>,
    /// The last logged loss.
    pub loss: Option<f64>,
    /// Estimated seconds left while running (mean of the last ten step times).
    pub eta_s: Option<f64>,
    /// The trainer's last line of output (what it is doing: Aux images, caching, steps).
    pub status: Option<String>,
    /// URLs of the validation grids, oldest first.
    pub grids: Vec<String>,
    /// The newest checkpoint's step: where a resume starts.
    pub checkpoint: Option<usize>,
    /// The step a stop ended the run at, with its checkpoint saved (the trainer's
    /// `stopped.json`); `None` for a run killed without one, or not stopped.
    pub stopped_at: Option<usize>,
    /// Whether the trained model is there.
    pub has_model: bool,
    /// Whether the studio can resume it (it has the config the studio started it with, or
    /// the trainer's effective config).
    pub resumable: bool,
    /// Lines in the training log.
    pub logged: usize,
    /// The loss curve `[step, loss]`, from `skip` on (see [`view`]).
    pub points: Vec<(usize, f64)>,
}

/// The runs in `runs`, by name.
pub fn discover(runs: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.') && is_run(&runs.join(n)))
        .collect();
    names.sort();
    names
}

/// Whether `dir` is a run folder.
pub fn is_run(dir: &Path) -> bool {
    dir.join("config.toml").is_file() || StudioFiles::of(dir).dir().is_dir()
}

/// The last non-empty line of a text file (its last 8 KiB read).
pub fn last_line(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(8192))).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    // Progress bars redraw with carriage returns: the last redraw is the line.
    text.lines()
        .rev()
        .filter_map(|l| l.rsplit('\r').find(|p| !p.trim().is_empty()))
        .map(|l| l.trim().to_string())
        .next()
}

/// The view of run `name`; `live` says the studio's own child trains it; `skip` leaves out
/// the first loss points (a page that has them already).
pub fn view(runs: &Path, name: &str, live: bool, skip: usize) -> RunView {
    let root = runs.join(name);
    let run = RunDir::new(&root);
    let studio = StudioFiles::of(&root);
    let cfg = effective_config(&run);
    let log: Vec<LogEntry> = read_log(&run.log());
    let step = log.last().map_or(0, |e| e.step);
    let steps = cfg.as_ref().map(|c| c.steps).or_else(|| {
        let t = styleforge::training::TrainConfig::from_file(&studio.config()).ok()?;
        t.optim.steps
    });
    let has_model = run.model().is_dir() || run.model_single_file().is_file();
    let state = if live || locked(&run) {
        RunState::Running
    } else if has_model && steps.is_some_and(|s| step >= s) {
        RunState::Finished
    } else {
        match studio.read_exit() {
            Some(ExitRecord {
                state: RunState::Failed,
                ..
            }) => RunState::Failed,
            _ => RunState::Stopped,
        }
    };
    let recent: Vec<f64> = log.iter().rev().take(10).map(|e| e.step_time_s).collect();
    let eta_s = match (state, steps) {
        (RunState::Running, Some(s)) if !recent.is_empty() && step > 0 => {
            Some(recent.iter().sum::<f64>() / recent.len() as f64 * s.saturating_sub(step) as f64)
        }
        _ => None,
    };
    let mut grids: Vec<String> = std::fs::read_dir(run.validation())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with("step-") && n.ends_with(".png"))
                .map(|n| format!("/files/{name}/validation/{n}"))
                .collect()
        })
        .unwrap_or_default();
    grids.sort();
    let checkpoint = checkpoint::list(&run.checkpoints()).last().map(|c| c.0);
    let stopped_at = StopRecord::read(&run)
        .filter(|r| state == RunState::Stopped && checkpoint == Some(r.step))
        .map(|r| r.step);
    RunView {
        name: name.to_string(),
        state,
        method: cfg.as_ref().map(|c| c.method.name().to_string()),
        step,
        steps,
        loss: log.last().map(|e| e.loss),
        eta_s,
        status: last_line(&studio.log()),
        grids,
        checkpoint,
        stopped_at,
        has_model,
        resumable: studio.config().is_file() || cfg.is_some(),
        logged: log.len(),
        points: log
            .iter()
            .skip(skip)
            .filter(|e| e.loss.is_finite())
            .map(|e| (e.step, e.loss))
            .collect(),
    }
}

/// How the studio runs `styleforge train` to continue a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The config given to `--config`.
    pub config: PathBuf,
    /// The folder the trainer runs in (the relative paths of `config` start there).
    pub cwd: Option<PathBuf>,
}

/// How to continue the run in `root`: the studio's own config when the studio started it;
/// else the trainer's effective `config.toml`, run from the folder the run was started in.
/// That folder is found from the config's output folder, which names `root`: as written
/// (absolute), or relative to one of `root`'s ancestors.
pub fn resume_plan(root: &Path) -> Result<Resume> {
    let studio = StudioFiles::of(root);
    if studio.config().is_file() {
        return Ok(Resume {
            config: studio.config(),
            cwd: None,
        });
    }
    let run = RunDir::new(root);
    let name = root.file_name().map_or_else(
        || root.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let Some(cfg) = effective_config(&run) else {
        return Err(StudioError::Conflict(format!(
            "{name} has no config to resume with (neither studio/train.toml nor a readable \
             config.toml)"
        )));
    };
    let here = root.canonicalize().map_err(StudioError::io(root))?;
    let names_root = |dir: &Path| {
        dir.join(&cfg.output_dir)
            .canonicalize()
            .is_ok_and(|p| p == here)
    };
    let cwd = if cfg.output_dir.is_absolute() {
        names_root(Path::new("/")).then_some(None)
    } else {
        here.ancestors()
            .skip(1)
            .find(|dir| names_root(dir))
            .map(|dir| Some(dir.to_path_buf()))
    };
    match cwd {
        Some(cwd) => Ok(Resume {
            config: run.config(),
            cwd,
        }),
        None => Err(StudioError::Conflict(format!(
            "{name}: its config.toml writes to {}, not this folder (was the run moved?); resume \
             it with styleforge train --config <its config> --resume",
            cfg.output_dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_takes_the_last_progress_redraw() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("log");
        std::fs::write(&p, "one\nstep 1/4\rstep 2/4\r\n\n").unwrap();
        assert_eq!(last_line(&p).as_deref(), Some("step 2/4"));
    }

    #[test]
    fn a_folder_with_a_studio_folder_is_a_run_and_hidden_ones_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/studio")).unwrap();
        std::fs::create_dir_all(tmp.path().join(".b/studio")).unwrap();
        std::fs::create_dir_all(tmp.path().join("gallery")).unwrap();
        assert_eq!(discover(tmp.path()), vec!["a".to_string()]);
        let v = view(tmp.path(), "a", false, 0);
        assert_eq!(v.state, RunState::Stopped);
        assert!(!v.resumable);
    }
}
