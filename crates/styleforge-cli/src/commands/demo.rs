//! `styleforge demo`: the whole path on the embedded default.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use styleforge::demo::{run as run_demo, DemoOptions};

use crate::progress::Bar;

/// Arguments of `styleforge demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "styleforge-demo")]
    out: PathBuf,
    /// Training steps.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Seed.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
}

/// Runs `styleforge demo`.
pub fn run(args: &DemoArgs, quiet: bool) -> Result<()> {
    let opts = DemoOptions {
        out: args.out.clone(),
        steps: args.steps,
        seed: args.seed,
    };
    let summary = run_demo(&opts, &mut Bar::new(quiet))?;
    println!(
        "loss {:.4} -> {:.4}\nbefore/after samples: {}\nfine-tuned model: {}\nopen {}",
        summary.loss.0,
        summary.loss.1,
        summary.samples.display(),
        summary.model.display(),
        summary.page.display()
    );
    Ok(())
}
