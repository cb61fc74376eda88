//! `styleforge demo`: the whole path on the embedded toy world.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use styleforge::demo::{run as run_demo, DemoOptions};
use styleforge::world::Style;

use super::choices::HeldOutStyleArg;

use crate::progress::Bar;

/// Arguments of `styleforge demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to compute.
    #[command(flatten)]
    device: super::device::DeviceArg,
    /// Output folder.
    #[arg(long, default_value = "styleforge-demo")]
    out: PathBuf,
    /// The held-out style to learn.
    #[arg(long, value_enum, default_value = "cel")]
    style: HeldOutStyleArg,
    /// Training steps.
    #[arg(long, default_value_t = DemoOptions::default().steps)]
    steps: usize,
    /// Learning rate [default: StyleForge's toy recipe].
    #[arg(long)]
    lr: Option<f64>,
    /// Seed.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Another base model folder [default: the embedded toy base model].
    #[arg(long)]
    base: Option<PathBuf>,
}

/// Runs `styleforge demo`.
pub fn run(args: &DemoArgs, quiet: bool) -> Result<()> {
    let style = Style::from(args.style);
    let opts = DemoOptions {
        out: args.out.clone(),
        style,
        steps: args.steps,
        lr: args.lr,
        seed: args.seed,
        base: args.base.clone(),
        device: args.device.resolve(Default::default())?,
        ..DemoOptions::default()
    };
    let s = run_demo(&opts, &mut Bar::new(quiet))?;
    println!(
        "loss {:.4} -> {:.4}\n{} style accuracy {:.2} -> {:.2}, objects {:.2} -> {:.2}, \
         base styles kept {:.2} -> {:.2}, leak {:.2} -> {:.2}\n\
         before/after samples: {}\nfine-tuned model: {}\nopen {}",
        s.loss.0,
        s.loss.1,
        style.name(),
        s.before.style_accuracy,
        s.after.style_accuracy,
        s.before.object_recall,
        s.after.object_recall,
        s.before.kept,
        s.after.kept,
        s.before.leak,
        s.after.leak,
        s.samples.display(),
        s.model.display(),
        s.page.display()
    );
    Ok(())
}
