//! `styleforge selftest …`: the trainer checked under adversity. `selftest faults` kills
//! a real training run at random moments of every phase, fills its disk, resumes it, and
//! compares the end with an uninterrupted run ([`campaign`]).

mod campaign;
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
    }
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
