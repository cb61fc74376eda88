//! `styleforge selftest …`: the trainer checked under adversity. `selftest faults` kills
//! a real training run at random moments of every phase, fills its disk, resumes it, and
//! compares the end with an uninterrupted run ([`campaign`]). `selftest fuzz` feeds mutated
//! files to the library's readers of user input ([`fuzz`]).

mod campaign;
mod fuzz;
mod phases;
mod report;
mod sitting;
mod verify;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

pub use phases::Phase;

/// Arguments of `styleforge selftest`.
#[derive(Args, Debug)]
pub struct SelftestArgs {
    #[command(subcommand)]
    command: SelftestCommand,
}

/// The `selftest` subcommands.
#[derive(Subcommand, Debug)]
enum SelftestCommand {
    /// Kill a small training run (SIGKILL) at seeded random moments of every phase, fail
    /// its checkpoint and model writes on a full disk, resume it after each, and check the
    /// end against an uninterrupted run: weights bit-identical, the log continuous, every
    /// checkpoint loadable, no temporary left. Prints kills per phase; exits non-zero on
    /// any failure.
    Faults(FaultsArgs),
    /// Fuzz the readers of user files with seeded mutations of valid inputs: safetensors,
    /// model configs, the training TOML, the tokenizer, images, PNG parameters, adapters,
    /// single-file shape inference, prompts. Prints iterations, distinct errors and panics
    /// per target; saves panicking inputs; exits non-zero on any panic.
    Fuzz(FuzzArgs),
}

/// Arguments of `styleforge selftest fuzz`.
#[derive(Args, Debug)]
struct FuzzArgs {
    /// Iterations per target.
    #[arg(long, default_value_t = 100_000)]
    iterations: u64,
    /// The targets (comma-separated) [default: all]: safetensors, model-config,
    /// train-config, tokenizer, image, png-parameters, adapters, single-file, prompt.
    #[arg(long, value_delimiter = ',')]
    target: Vec<String>,
    /// Seed of the mutations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where panicking and hanging inputs are saved.
    #[arg(long, default_value = "styleforge-fuzz-findings")]
    findings: PathBuf,
    /// Seconds one iteration may run before it counts as a hang (the process then stops).
    #[arg(long, default_value_t = 20)]
    hang_after: u64,
    /// Rerun saved inputs (files or folders) of the one --target instead of fuzzing.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
}

/// Arguments of `styleforge selftest faults`.
#[derive(Args, Debug)]
struct FaultsArgs {
    /// Kills, spread over the phases in turn.
    #[arg(long, default_value_t = 24)]
    kills: usize,
    /// Seed of the kill plan (which occurrence of each phase, what moment in it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training steps of the run.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// The phases to kill in (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    phases: Vec<Phase>,
    /// Skip the full-disk sittings.
    #[arg(long)]
    no_disk_full: bool,
    /// Working folder (data, both runs, each sitting's log) [default: a temporary folder,
    /// removed after a passing campaign].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the working folder after a passing campaign.
    #[arg(long)]
    keep: bool,
}

/// Runs `styleforge selftest …`.
pub fn run(args: &SelftestArgs) -> Result<()> {
    match &args.command {
        SelftestCommand::Faults(a) => run_faults(a),
        SelftestCommand::Fuzz(a) => run_fuzz(a),
    }
}

fn run_fuzz(args: &FuzzArgs) -> Result<()> {
    if !args.replay.is_empty() {
        let [target] = &args.target[..] else {
            bail!("--replay needs exactly one --target");
        };
        let mut panicked = 0;
        for (path, outcome) in fuzz::replay(target, &args.replay)? {
            match outcome {
                Ok(()) => println!("{}: no panic", path.display()),
                Err(message) => {
                    panicked += 1;
                    println!("{}: PANIC {message}", path.display());
                }
            }
        }
        if panicked > 0 {
            bail!("{panicked} input(s) made {target} panic");
        }
        return Ok(());
    }
    let opts = fuzz::Options {
        iterations: args.iterations,
        targets: args.target.clone(),
        seed: args.seed,
        findings: args.findings.clone(),
        hang_after: std::time::Duration::from_secs(args.hang_after),
    };
    println!(
        "fuzzing with seed {}, {} iterations per target",
        args.seed, args.iterations
    );
    let reports = fuzz::run(&opts, |r| {
        println!("{}", fuzz::render(r));
        for (message, path) in &r.panics {
            println!(
                "  PANIC {message}
    input saved in {}",
                path.display()
            );
        }
    })?;
    let panics: u64 = reports.iter().map(|r| r.panic_count).sum();
    if panics > 0 {
        bail!(
            "{panics} iteration(s) panicked; the inputs are in {}",
            args.findings.display()
        );
    }
    println!("no panics");
    Ok(())
}

fn run_faults(args: &FaultsArgs) -> Result<()> {
    if args.steps < 2 * 4 + 1 {
        bail!(
            "--steps {}: the run needs at least 9 steps for two checkpoints",
            args.steps
        );
    }
    let (out, temporary) = match &args.out {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("styleforge-faults-")
                .tempdir()
                .context("creating a working folder")?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let opts = campaign::Options {
        exe: std::env::current_exe().context("locating the styleforge binary")?,
        out: out.clone(),
        kills: args.kills,
        seed: args.seed,
        steps: args.steps,
        phases: if args.phases.is_empty() {
            Phase::ALL.to_vec()
        } else {
            args.phases.clone()
        },
        disk_full: !args.no_disk_full,
    };
    let report = campaign::run(&opts);
    let keep = args.keep || !report.as_ref().is_ok_and(|r| r.passed());
    if let Some(dir) = temporary {
        if keep {
            let _ = dir.keep();
        }
    }
    let report = report.with_context(|| format!("fault campaign in {}", out.display()))?;
    print!("{}", report.render());
    if !report.passed() {
        bail!(
            "the fault campaign failed; its runs and logs are in {}",
            out.display()
        );
    }
    if keep {
        println!("runs and logs kept in {}", out.display());
    }
    Ok(())
}
