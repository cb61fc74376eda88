//! The trainer and generator child processes. Training runs as `styleforge train` in its
//! own process, so the server stays responsive and a crash of one run cannot take it down;
//! a thread per child waits for it and records how it ended.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::error::{Result, StudioError};
use crate::runs::{locked, ExitRecord, Resume, RunState, StudioFiles};

/// The children the studio started, by run name.
#[derive(Debug, Default)]
pub struct Jobs {
    live: Mutex<HashMap<String, Live>>,
}

#[derive(Debug)]
struct Live {
    pid: u32,
    stop_requested: bool,
}

impl Jobs {
    /// Whether the studio's own child trains run `name` now.
    pub fn is_live(&self, name: &str) -> bool {
        self.live.lock().expect("not poisoned").contains_key(name)
    }

    /// Starts `exe train --config <plan.config>` (with `--resume`) in `plan.cwd`, its
    /// output appended to `studio/train.log`.
    pub fn start_training(
        self: &Arc<Self>,
        exe: &Path,
        name: &str,
        run: &Path,
        plan: &Resume,
        resume: bool,
    ) -> Result<()> {
        let studio = StudioFiles::of(run);
        std::fs::create_dir_all(studio.dir()).map_err(StudioError::io(studio.dir()))?;
        let mut live = self.live.lock().expect("not poisoned");
        if live.contains_key(name) || locked(&styleforge::RunDir::new(run)) {
            return Err(StudioError::Conflict(format!("{name} is already running")));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(studio.log())
            .map_err(StudioError::io(studio.log()))?;
        let err = log.try_clone().map_err(StudioError::io(studio.log()))?;
        let mut command = Command::new(exe);
        command
            .arg("train")
            .arg("--config")
            .arg(&plan.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        if resume {
            command.arg("--resume");
        }
        if let Some(cwd) = &plan.cwd {
            command.current_dir(cwd);
        }
        // Its own process group: Ctrl-C in the studio's terminal stops the studio, not the
        // training, which a restarted studio finds again (and can stop by its recorded id).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(StudioError::io(exe))?;
        let _ = std::fs::remove_file(studio.exit());
        std::fs::write(studio.pid(), child.id().to_string())
            .map_err(StudioError::io(studio.pid()))?;
        live.insert(
            name.to_string(),
            Live {
                pid: child.id(),
                stop_requested: false,
            },
        );
        drop(live);
        let jobs = Arc::clone(self);
        let name = name.to_string();
        std::thread::spawn(move || jobs.wait(child, name, studio));
        Ok(())
    }

    fn wait(&self, mut child: Child, name: String, studio: StudioFiles) {
        let status = child.wait();
        let stop_requested = self
            .live
            .lock()
            .expect("not poisoned")
            .get(&name)
            .is_some_and(|l| l.stop_requested);
        let _ = std::fs::remove_file(studio.pid());
        let code = status.as_ref().ok().and_then(|s| s.code());
        // 130 and 143: the trainer caught Ctrl-C or SIGTERM (from anyone) and stopped with
        // a checkpoint.
        let state = if stop_requested || matches!(code, Some(130 | 143)) {
            Some(RunState::Stopped)
        } else if status.as_ref().is_ok_and(|s| s.success()) {
            None
        } else {
            Some(RunState::Failed)
        };
        // Recorded before the run stops counting as live, so that no one sees it ended
        // without knowing how.
        if let Some(state) = state {
            write_exit(&studio, &ExitRecord { state, code });
        }
        self.live.lock().expect("not poisoned").remove(&name);
        tracing::info!("run {name}: the trainer exited ({status:?})");
    }

    /// Stops run `name`: SIGTERM to its trainer (the studio's child, or the process whose
    /// id the studio recorded before a restart), which finishes the step in progress,
    /// writes a checkpoint of it and exits; the run resumes from that step. (On Windows the
    /// trainer is ended at once and resumes from its newest periodic checkpoint.)
    pub fn stop(&self, name: &str, run: &Path) -> Result<()> {
        let studio = StudioFiles::of(run);
        let pid = {
            let mut live = self.live.lock().expect("not poisoned");
            match live.get_mut(name) {
                Some(l) => {
                    l.stop_requested = true;
                    Some(l.pid)
                }
                None => None,
            }
        };
        let pid = match pid {
            Some(p) => p,
            None => {
                // A trainer the studio started before it restarted: its id is on disk, and
                // the lock it holds says it is still that run's trainer.
                let recorded = std::fs::read_to_string(studio.pid())
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok());
                match recorded {
                    Some(p) if locked(&styleforge::RunDir::new(run)) => {
                        write_exit(
                            &studio,
                            &ExitRecord {
                                state: RunState::Stopped,
                                code: None,
                            },
                        );
                        p
                    }
                    _ => return Err(StudioError::Conflict(format!("{name} is not running"))),
                }
            }
        };
        terminate(pid);
        Ok(())
    }
}

fn write_exit(studio: &StudioFiles, record: &ExitRecord) {
    if let Ok(text) = serde_json::to_string(record) {
        let _ = std::fs::write(studio.exit(), text);
    }
}

/// Asks process `pid` to end.
#[cfg(unix)]
fn terminate(pid: u32) {
    // SAFETY: kill(2) with a process id and a signal number has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

#[cfg(not(unix))]
fn terminate(pid: u32) {
    let _ = Command::new("taskkill")
        .args(["/PID", &pid.to_string(), "/F"])
        .status();
}

/// Runs `exe` with `args` to the end in a thread, then calls `done` with whether it
/// succeeded and the last lines of its output.
pub fn run_to_end(
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
    done: impl FnOnce(bool, String) + Send + 'static,
) {
    std::thread::spawn(move || {
        let out = Command::new(&exe).args(&args).stdin(Stdio::null()).output();
        match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stderr);
                let tail: Vec<&str> = text.lines().rev().take(6).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                done(o.status.success(), tail.join("\n"));
            }
            Err(e) => done(false, format!("cannot start {}: {e}", exe.display())),
        }
    });
}
