//! SIGTERM and Ctrl-C during `train` and `pretrain`: the first raises the run's
//! [`StopSignal`] (the loop ends after the step in progress and writes a checkpoint of it,
//! so `--resume` loses nothing); a second ends the process at once, as the signal would
//! have without a handler. On Windows only Ctrl-C is caught.
//!
//! A run stopped this way exits with 128 + the signal's number, the shells' convention:
//! [`EXIT_INTERRUPTED`] (130) after Ctrl-C, [`EXIT_TERMINATED`] (143) after SIGTERM.

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use styleforge::training::StopSignal;

/// The exit code of a run stopped by Ctrl-C (SIGINT, 2).
pub const EXIT_INTERRUPTED: u8 = 130;
/// The exit code of a run stopped by SIGTERM (15).
pub const EXIT_TERMINATED: u8 = 143;

#[cfg(windows)]
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// The signal being acted on and the run it stops (one per process).
struct Watch {
    stop: StopSignal,
    /// The first signal's number, 0 before any.
    first: AtomicI32,
}

static WATCH: OnceLock<Watch> = OnceLock::new();

/// Catches SIGTERM and Ctrl-C from now on, to raise `stop`. Once per process; a failure
/// to install leaves the default behaviour (the process ends at the signal) with a warning.
pub fn install(stop: &StopSignal) {
    if WATCH
        .set(Watch {
            stop: stop.clone(),
            first: AtomicI32::new(0),
        })
        .is_err()
    {
        return;
    }
    if let Err(e) = platform::install() {
        tracing::warn!("cannot catch SIGTERM/Ctrl-C ({e}): a stop ends the run at once");
    }
}

/// The exit code for a run stopped early: from the signal that stopped it, 130 when none
/// was caught.
pub fn exit_code() -> ExitCode {
    let first = WATCH.get().map_or(0, |w| w.first.load(Ordering::SeqCst));
    ExitCode::from(if first == SIGTERM {
        EXIT_TERMINATED
    } else {
        EXIT_INTERRUPTED
    })
}

/// The first signal, in an ordinary thread (not a signal handler): raises the stop and
/// says what happens now.
fn first_signal(number: i32) {
    let Some(watch) = WATCH.get() else {
        return;
    };
    watch.first.store(number, Ordering::SeqCst);
    watch.stop.request();
    let what = if number == SIGTERM {
        "SIGTERM"
    } else {
        "Ctrl-C"
    };
    match watch.stop.training_step() {
        Some(step) => eprintln!(
            "{what}: stopping after step {step}: writing a checkpoint (press Ctrl-C again to quit at once)"
        ),
        None => eprintln!("{what}: stopping at the next step (press Ctrl-C again to quit at once)"),
    }
}

/// What a second signal prints before the process ends.
const QUIT_NOW: &[u8] = b"\nquitting at once: a --resume continues from the newest checkpoint\n";

#[cfg(unix)]
mod platform {
    //! A self-pipe: the handler only writes the signal's number to a pipe (async-signal
    //! safe); a thread reads it and does the rest.

    use std::io::Read;
    use std::os::fd::FromRawFd;
    use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

    static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
    static RECEIVED: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn on_signal(number: libc::c_int) {
        if RECEIVED.fetch_add(1, Ordering::SeqCst) > 0 {
            // SAFETY: write(2) and _exit(2) are async-signal-safe; QUIT_NOW is static.
            unsafe {
                libc::write(
                    libc::STDERR_FILENO,
                    super::QUIT_NOW.as_ptr().cast(),
                    super::QUIT_NOW.len(),
                );
                libc::_exit(128 + number);
            }
        }
        let byte = number as u8;
        // SAFETY: write(2) is async-signal-safe; the pipe's write end stays open for the
        // life of the process.
        unsafe {
            libc::write(
                PIPE_WRITE.load(Ordering::SeqCst),
                (&byte as *const u8).cast(),
                1,
            );
        }
    }

    pub fn install() -> std::io::Result<()> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe(2) fills the two descriptors of the array it is given.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for fd in fds {
            // SAFETY: fcntl(2) on a descriptor this function owns; kept from child processes.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        PIPE_WRITE.store(fds[1], Ordering::SeqCst);
        // SAFETY: the read end is owned here alone, and moves into the thread.
        let mut read_end = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        std::thread::Builder::new()
            .name("stop-signal".into())
            .spawn(move || {
                let mut byte = [0u8; 1];
                if read_end.read_exact(&mut byte).is_ok() {
                    super::first_signal(i32::from(byte[0]));
                }
            })?;
        for number in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed sigaction is a valid starting point; the handler has the
            // signature sigaction(2) expects and does only async-signal-safe work.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(number, &action, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

#[cfg(windows)]
mod platform {
    //! `SetConsoleCtrlHandler`: Windows calls the handler in a thread of its own, so it
    //! can do the work directly.

    use std::sync::atomic::{AtomicUsize, Ordering};

    type Handler = unsafe extern "system" fn(u32) -> i32;

    #[link(name = "kernel32")]
    unsafe extern "system" {
        fn SetConsoleCtrlHandler(handler: Option<Handler>, add: i32) -> i32;
    }

    const CTRL_C_EVENT: u32 = 0;
    static RECEIVED: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "system" fn on_ctrl(kind: u32) -> i32 {
        if kind != CTRL_C_EVENT {
            return 0;
        }
        if RECEIVED.fetch_add(1, Ordering::SeqCst) > 0 {
            use std::io::Write;
            let _ = std::io::stderr().write_all(super::QUIT_NOW);
            std::process::exit(i32::from(super::EXIT_INTERRUPTED));
        }
        super::first_signal(super::SIGINT);
        1
    }

    pub fn install() -> std::io::Result<()> {
        // SAFETY: registers a handler with the signature the API expects.
        if unsafe { SetConsoleCtrlHandler(Some(on_ctrl), 1) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(not(any(unix, windows)))]
mod platform {
    pub fn install() -> std::io::Result<()> {
        Err(std::io::Error::other("no signal handling on this platform"))
    }
}

/// `styleforge <command> --config <config> --resume`, quoted for a shell when needed.
pub fn resume_command(command: &str, config: &std::path::Path) -> String {
    let path = config.display().to_string();
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:@,=".contains(c);
    let path = if path.chars().all(safe) {
        path
    } else {
        format!("'{}'", path.replace('\'', r"'\''"))
    };
    format!("styleforge {command} --config {path} --resume")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_commands_quote_paths_only_when_needed() {
        let p = std::path::Path::new;
        assert_eq!(
            resume_command("train", p("runs/a-1/config.toml")),
            "styleforge train --config runs/a-1/config.toml --resume"
        );
        assert_eq!(
            resume_command("pretrain", p("my runs/it's/pretrain.toml")),
            r"styleforge pretrain --config 'my runs/it'\''s/pretrain.toml' --resume"
        );
    }
}
