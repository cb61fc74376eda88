//! One `styleforge train` process of a campaign: its stderr read line by line on a thread
//! and timestamped as the lines arrive, killed with SIGKILL when asked, and (Linux) its
//! file-size limit lowered while it runs, so that its next large write fails as on a full
//! disk.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result};

/// The log filter of a watched run: the library's info lines plus the loop's per-step
/// debug lines (`step 7 begins`, `step 7 done`) that mark each step's bounds.
const LOG_FILTER: &str = "info,styleforge::training::core=debug";

/// What [`Sitting::next`] got.
pub enum Next {
    /// A line of stderr and when it arrived.
    Line(Instant, String),
    /// Nothing before the deadline.
    Timeout,
    /// stderr closed: the process is ending.
    Closed,
}

/// A running `styleforge train`.
pub struct Sitting {
    child: Child,
    lines: Receiver<(Instant, String)>,
    reader: Option<JoinHandle<()>>,
    transcript: Vec<String>,
}

impl Sitting {
    /// Starts `exe train --config config` (with `--resume`).
    pub fn spawn(exe: &Path, config: &Path, resume: bool) -> Result<Self> {
        let mut command = Command::new(exe);
        command
            .arg("train")
            .arg("--config")
            .arg(config)
            .env("STYLEFORGE_LOG", LOG_FILTER)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if resume {
            command.arg("--resume");
        }
        ignore_file_size_signal(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} train", exe.display()))?;
        let stderr = child.stderr.take().context("the child's stderr")?;
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            reader: Some(reader),
            transcript: Vec::new(),
        })
    }

    /// The next stderr line, waiting until `until` (forever when `None`).
    pub fn next(&mut self, until: Option<Instant>) -> Next {
        let got = match until {
            Some(t) => self
                .lines
                .recv_timeout(t.saturating_duration_since(Instant::now())),
            None => self
                .lines
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok((at, line)) => {
                self.transcript.push(line.clone());
                Next::Line(at, line)
            }
            Err(RecvTimeoutError::Timeout) => Next::Timeout,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }

    /// Sends SIGKILL and waits for the process to end.
    pub fn kill(&mut self) -> Result<()> {
        // Child::kill is SIGKILL on Unix: no handler runs, nothing is flushed or cleaned.
        self.child.kill().context("killing the training process")?;
        self.child
            .wait()
            .context("waiting for the killed process")?;
        Ok(())
    }

    /// Waits for the process to end; returns its status and the lines it wrote that were
    /// not read yet.
    pub fn finish(&mut self) -> Result<(ExitStatus, Vec<String>)> {
        let status = self
            .child
            .wait()
            .context("waiting for the training process")?;
        if let Some(reader) = self.reader.take() {
            // Ends at the end of the pipe, which the process's end closed.
            let _ = reader.join();
        }
        let rest: Vec<String> = self.lines.try_iter().map(|(_, l)| l).collect();
        self.transcript.extend(rest.iter().cloned());
        Ok((status, rest))
    }

    /// Everything the process wrote to stderr so far.
    pub fn transcript(&self) -> &[String] {
        &self.transcript
    }

    /// Lowers the process's file-size limit to `bytes` from now on: a write past it fails
    /// with `EFBIG`, a real error from the kernel, as a full disk's `ENOSPC` would.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn limit_file_size(&self, bytes: u64) -> Result<()> {
        let pid = self.child.id() as libc::pid_t;
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit writes the current limits into `old` and sets none (null new).
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut old) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .context("reading the training process's file-size limit");
        }
        // The hard limit stays: lowering the soft one needs no privilege.
        let limit = libc::rlimit {
            rlim_cur: bytes.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        // SAFETY: prlimit reads `limit` and writes nothing (null old-limit pointer).
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .context("lowering the training process's file-size limit");
        }
        Ok(())
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
impl Sitting {
    /// Lowering another process's file-size limit needs Linux's `prlimit`.
    pub fn limit_file_size(&self, _bytes: u64) -> Result<()> {
        anyhow::bail!("filling the disk of a running process needs Linux (prlimit)")
    }
}

impl Drop for Sitting {
    fn drop(&mut self) {
        // A campaign that stops on an error leaves no training process behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether this build can fill a disk (lower a running process's file-size limit).
pub const CAN_FILL_DISK: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// The child ignores SIGXFSZ, so a write past its file-size limit fails with an error the
/// trainer reports instead of killing it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn ignore_file_size_signal(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only `signal` runs, which is async-signal-safe; an
    // ignored disposition survives the exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn ignore_file_size_signal(_command: &mut Command) {}
