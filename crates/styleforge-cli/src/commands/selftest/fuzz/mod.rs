//! `styleforge selftest fuzz`: a seeded mutation fuzzer over the library's readers of user
//! files ([`targets`]): safetensors headers and tensors, model configs and the training
//! TOML, the tokenizer, image decoding and preprocessing, PNG parameters, LoRA/embedding/
//! Custom Diffusion files and single-file shape inference.
//!
//! Each target starts from a corpus of valid inputs built in code; each iteration takes a
//! corpus entry, mutates it ([`mutate`]) and runs the target under `catch_unwind`. An error
//! is an expected answer; an input that brings a new error message joins the corpus (so
//! mutations reach past the first check); a panic is a defect, and its input is saved. An
//! iteration that runs past the time limit is a hang: its input is saved and the process
//! stops. Inputs are size-capped and images decode under a small limit, so no target
//! allocates more than some megabytes.

pub mod mutate;
pub mod targets;

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The corpus grows to at most this many inputs per target.
const MAX_CORPUS: usize = 512;
/// At most this many panicking inputs are saved per target.
const MAX_SAVED: usize = 20;

/// How a fuzzing session is run.
pub struct Options {
    /// Iterations per target.
    pub iterations: u64,
    /// The targets to run (all of [`targets::NAMES`] when empty).
    pub targets: Vec<String>,
    /// Seed of the mutations.
    pub seed: u64,
    /// Where panicking (and hanging) inputs are saved.
    pub findings: PathBuf,
    /// An iteration running longer than this is a hang.
    pub hang_after: Duration,
}

/// What fuzzing one target found.
#[derive(Debug, Clone)]
pub struct TargetReport {
    /// The target.
    pub name: &'static str,
    /// Iterations run.
    pub iterations: u64,
    /// Wall-clock time.
    pub seconds: f64,
    /// Inputs the target accepted.
    pub accepted: u64,
    /// Distinct error messages (digits ignored).
    pub distinct_errors: usize,
    /// The corpus size at the end.
    pub corpus: usize,
    /// Panicking inputs: the message and where the input was saved.
    pub panics: Vec<(String, PathBuf)>,
    /// Iterations that panicked, in all.
    pub panic_count: u64,
}

/// The input being run, for the watchdog to save when an iteration hangs.
static CURRENT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);
static ITERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Fuzzes every target asked for, in turn; returns one report per target.
pub fn run(opts: &Options, mut on_done: impl FnMut(&TargetReport)) -> Result<Vec<TargetReport>> {
    let names: Vec<String> = if opts.targets.is_empty() {
        targets::NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        opts.targets.clone()
    };
    let scratch = scratch_folder()?;
    let mut ctx = targets::Context::new(scratch.path());
    // Build every target first: a bad name is refused before any fuzzing.
    let mut built = Vec::new();
    for name in &names {
        built.push(ctx.target(name)?);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    on_abort::install(&opts.findings);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = spawn_watchdog(opts.findings.clone(), opts.hang_after, stop.clone());
    // Quiet: the library logs warnings (unknown config keys) that would flood the output,
    // and the default panic hook would print every caught panic.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        PANIC_AT.with(|p| *p.borrow_mut() = Some(at));
    }));
    let mut reports = Vec::new();
    let result =
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            for (i, target) in built.into_iter().enumerate() {
                let seed = opts.seed.wrapping_add(i as u64 * 0x9e37_79b9);
                let report = fuzz_target(target, opts, seed)?;
                on_done(&report);
                reports.push(report);
            }
            Ok::<(), anyhow::Error>(())
        });
    std::panic::set_hook(previous_hook);
    stop.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    result?;
    Ok(reports)
}

/// Saves the input being run when the process aborts (an allocation that fails aborts
/// and cannot be caught), as `<findings>/abort-input.bin`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod on_abort {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::sync::OnceLock;

    static PATHS: OnceLock<(CString, CString)> = OnceLock::new();

    extern "C" fn handler(_: libc::c_int) {
        // Only async-signal-safe calls here: mkdir, open, write, close, signal, raise.
        if let Some((dir, file)) = PATHS.get() {
            let (ptr, len) = (
                super::CURRENT.load(Ordering::SeqCst),
                super::CURRENT_LEN.load(Ordering::SeqCst),
            );
            // SAFETY: plain system calls on valid C strings and the live input buffer.
            unsafe {
                libc::mkdir(dir.as_ptr(), 0o755);
                let fd = libc::open(
                    file.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                    0o644,
                );
                if fd >= 0 {
                    libc::write(fd, ptr as *const libc::c_void, len);
                    libc::close(fd);
                }
                let msg = b"error: the fuzzed library aborted; the input is saved as abort-input.bin in the findings folder\n";
                libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
            }
        }
        // SAFETY: restoring the default action and re-raising ends the process as abort would.
        unsafe {
            libc::signal(libc::SIGABRT, libc::SIG_DFL);
            libc::raise(libc::SIGABRT);
        }
    }

    /// Installs the handler, saving into `findings`.
    pub fn install(findings: &Path) {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
        if let (Some(dir), Some(file)) = (c(findings), c(&findings.join("abort-input.bin"))) {
            let _ = PATHS.set((dir, file));
            // SAFETY: installs a handler that only makes async-signal-safe calls.
            unsafe {
                libc::signal(libc::SIGABRT, handler as *const () as libc::sighandler_t);
            }
        }
    }
}

/// Stops the process when one iteration runs longer than `limit`, saving its input.
fn spawn_watchdog(
    findings: PathBuf,
    limit: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = (ITERATION.load(Ordering::SeqCst), Instant::now());
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
            let now = ITERATION.load(Ordering::SeqCst);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > limit {
                let (ptr, len) = (
                    CURRENT.load(Ordering::SeqCst),
                    CURRENT_LEN.load(Ordering::SeqCst),
                );
                // SAFETY: the fuzzing thread is stuck inside the iteration whose input this
                // is, so the buffer is alive and unchanged.
                let input = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
                let _ = std::fs::create_dir_all(&findings);
                let path = findings.join(format!("hang-{now}.bin"));
                let _ = std::fs::write(&path, input);
                eprintln!(
                    "error: iteration {now} has run for more than {:?} (a hang); its input is saved in {}",
                    limit,
                    path.display()
                );
                std::process::exit(3);
            }
        }
    })
}

/// A scratch folder for the inputs targets read from files: in memory (`/dev/shm`) where
/// there is one, since rewriting a file on a disk at every iteration (ext4 flushes a file
/// truncated and written again) makes those targets a hundred times slower.
fn scratch_folder() -> Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix("styleforge-fuzz-");
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return Ok(dir);
        }
    }
    builder.tempdir().context("creating a scratch folder")
}

/// An error message with its digits dropped, hashed: errors that differ only in numbers
/// count once.
fn error_class(message: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    message
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .take(300)
        .collect::<String>()
        .hash(&mut h);
    h.finish()
}

fn fuzz_target(mut target: targets::Target, opts: &Options, seed: u64) -> Result<TargetReport> {
    let mut mutator = mutate::Mutator::new(seed, std::mem::take(&mut target.dictionary));
    let mut corpus = target.corpus.clone();
    let mut errors = HashSet::new();
    let mut panic_classes = HashSet::new();
    let mut report = TargetReport {
        name: target.name,
        iterations: 0,
        seconds: 0.0,
        accepted: 0,
        distinct_errors: 0,
        corpus: 0,
        panics: Vec::new(),
        panic_count: 0,
    };
    // The corpus itself first, unmutated.
    let start = Instant::now();
    for i in 0..opts.iterations {
        let mut input = if (i as usize) < target.corpus.len() {
            target.corpus[i as usize].clone()
        } else {
            // Half the time from the valid inputs, else from any (grown) corpus entry.
            let pool = if mutator.below(2) == 0 {
                &target.corpus
            } else {
                &corpus
            };
            let mut input = pool[mutator.below(pool.len())].clone();
            mutator.mutate(&mut input, &corpus, target.max_len);
            if let Some(fix) = target.fixup {
                if mutator.below(2) == 0 {
                    fix(&mut input);
                }
            }
            input
        };
        CURRENT.store(input.as_mut_ptr(), Ordering::SeqCst);
        CURRENT_LEN.store(input.len(), Ordering::SeqCst);
        ITERATION.fetch_add(1, Ordering::SeqCst);
        let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        match outcome {
            Ok(Ok(())) => report.accepted += 1,
            Ok(Err(message)) => {
                if errors.insert(error_class(&message)) && corpus.len() < MAX_CORPUS {
                    corpus.push(input.clone());
                }
            }
            Err(payload) => {
                report.panic_count += 1;
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                let at = PANIC_AT.with(|p| p.borrow_mut().take()).unwrap_or_default();
                let message = format!("{text} at {at}");
                if panic_classes.insert(error_class(&message)) && report.panics.len() < MAX_SAVED {
                    std::fs::create_dir_all(&opts.findings)
                        .with_context(|| format!("creating {}", opts.findings.display()))?;
                    let path = opts
                        .findings
                        .join(format!("{}-{}-{i}.bin", target.name, opts.seed));
                    std::fs::write(&path, &input)
                        .with_context(|| format!("writing {}", path.display()))?;
                    report.panics.push((message, path));
                }
            }
        }
        report.iterations += 1;
    }
    CURRENT_LEN.store(0, Ordering::SeqCst);
    report.seconds = start.elapsed().as_secs_f64();
    report.distinct_errors = errors.len();
    report.corpus = corpus.len();
    Ok(report)
}

/// The report line of one target.
pub fn render(r: &TargetReport) -> String {
    format!(
        "{:<15} {:>10} iterations {:>8.1} s {:>9.0}/s  accepted {:>8}  distinct errors {:>6}  corpus {:>4}  panics {}",
        r.name,
        r.iterations,
        r.seconds,
        r.iterations as f64 / r.seconds.max(1e-9),
        r.accepted,
        r.distinct_errors,
        r.corpus,
        r.panic_count
    )
}

/// Reruns saved inputs of `target` (files or folders of them); returns each file with its
/// outcome: `Ok` (accepted or refused with an error) or the panic's message.
pub fn replay(
    target: &str,
    inputs: &[PathBuf],
) -> Result<Vec<(PathBuf, std::result::Result<(), String>)>> {
    let scratch = scratch_folder()?;
    let mut ctx = targets::Context::new(scratch.path());
    let mut t = ctx.target(target)?;
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("listing {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file())
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        let outcome =
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                catch_unwind(AssertUnwindSafe(|| (t.run)(&bytes)))
            });
        out.push((
            f,
            match outcome {
                Ok(_) => Ok(()),
                Err(p) => Err(p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default()),
            },
        ));
    }
    Ok(out)
}
