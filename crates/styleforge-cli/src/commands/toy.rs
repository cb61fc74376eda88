//! `styleforge toy …`: the toy world's tools (`toy probes` trains the probes, `toy score`
//! measures a base model's samples with them).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use styleforge::models::folder::LoadOptions;
use styleforge::pipelines::StableDiffusion;
use styleforge::toy::{
    base_model_scores, train_probes, BaseScoring, ProbeTrainOptions, Probes, CONFIG_FILE,
    WEIGHTS_FILE,
};

use crate::progress::Bar;

/// Arguments of `styleforge toy`.
#[derive(Args, Debug)]
pub struct ToyArgs {
    #[command(subcommand)]
    command: ToyCommand,
}

/// The `toy` subcommands.
#[derive(Subcommand, Debug)]
enum ToyCommand {
    /// Train the probes (style, objects, colours, sky, ground classifiers) on renders and
    /// measure them on held-out renders.
    Probes(ProbesArgs),
    /// Sample a toy base model on captions naming the base styles and measure the
    /// pictures with the probes: style accuracy, object recall, colour accuracy.
    Score(ScoreArgs),
}

/// Arguments of `styleforge toy score`.
#[derive(Args, Debug)]
struct ScoreArgs {
    /// Where to compute.
    #[command(flatten)]
    device: super::device::DeviceArg,
    /// The model folder (diffusers layout), e.g. assets/toy/base-model.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The probes folder (probes.safetensors and probes.json).
    #[arg(long, value_name = "DIR", default_value = "assets/toy")]
    probes: PathBuf,
    /// Captions (each names one of the base styles in turn).
    #[arg(long, default_value_t = BaseScoring::default().prompts)]
    prompts: usize,
    /// Seeds per caption.
    #[arg(long, default_value_t = BaseScoring::default().seeds)]
    seeds: usize,
    /// World seed the captions come from.
    #[arg(long, default_value_t = BaseScoring::default().world_seed)]
    world_seed: u64,
    /// Print the scores as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Arguments of `styleforge toy probes`.
#[derive(Args, Debug)]
struct ProbesArgs {
    /// Where to compute.
    #[command(flatten)]
    device: super::device::DeviceArg,
    /// Output folder (gets probes.safetensors and probes.json).
    #[arg(long)]
    out: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = ProbeTrainOptions::default().steps)]
    steps: usize,
    /// Seed of the training world, initialisation and batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pictures per step.
    #[arg(long, default_value_t = ProbeTrainOptions::default().batch_size)]
    batch_size: usize,
    /// Distinct training pictures.
    #[arg(long, default_value_t = ProbeTrainOptions::default().train_samples)]
    train_samples: usize,
    /// Held-out pictures to measure accuracy on.
    #[arg(long, default_value_t = ProbeTrainOptions::default().held_out_samples)]
    held_out_samples: usize,
}

/// Runs `styleforge toy …`.
pub fn run(args: &ToyArgs, quiet: bool) -> Result<()> {
    match &args.command {
        ToyCommand::Probes(a) => run_probes(a, quiet),
        ToyCommand::Score(a) => run_score(a),
    }
}

fn run_score(args: &ScoreArgs) -> Result<()> {
    let device = args.device.resolve(Default::default())?;
    let load = LoadOptions {
        device: device.clone(),
        ..LoadOptions::default()
    };
    let sd = StableDiffusion::load(&args.model, &load)
        .with_context(|| format!("loading the model in {}", args.model.display()))?;
    let probes = Probes::load(&args.probes, &device)
        .with_context(|| format!("loading the probes in {}", args.probes.display()))?;
    let scoring = BaseScoring {
        world_seed: args.world_seed,
        prompts: args.prompts,
        seeds: args.seeds,
        ..BaseScoring::default()
    };
    let start = std::time::Instant::now();
    let s = base_model_scores(&sd, &probes, &scoring)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model,
                "images": s.images,
                "style_accuracy": s.style_accuracy,
                "object_recall": s.content.object_recall,
                "colour_accuracy": s.content.colour_accuracy,
                "pair_accuracy": s.content.pair_accuracy,
            })
        );
    } else {
        println!(
            "{} pictures ({} captions x {} seeds): style accuracy {:.3}, object recall {:.3}, \
             colour accuracy {:.3}, pairs {:.3} ({:.0} s)",
            s.images,
            args.prompts,
            args.seeds,
            s.style_accuracy,
            s.content.object_recall,
            s.content.colour_accuracy,
            s.content.pair_accuracy,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn run_probes(args: &ProbesArgs, quiet: bool) -> Result<()> {
    let command = std::iter::once("styleforge".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let opts = ProbeTrainOptions {
        seed: args.seed,
        steps: args.steps,
        batch_size: args.batch_size,
        train_samples: args.train_samples,
        held_out_samples: args.held_out_samples,
        command: Some(command),
        ..ProbeTrainOptions::default()
    };
    let start = std::time::Instant::now();
    let device = args.device.resolve(Default::default())?;
    let (probes, acc) =
        train_probes(&opts, &device, &mut Bar::new(quiet)).context("training probes")?;
    probes
        .save(&args.out)
        .with_context(|| format!("writing probes into {}", args.out.display()))?;
    let training = probes.file().training.as_ref();
    println!(
        "held-out accuracy on {} renders: style {:.3}, objects exact {:.3} (macro F1 {:.3}), \
         colours exact {:.3} (macro F1 {:.3}), pairs F1 {:.3}, sky {:.3}, ground {:.3}",
        acc.images,
        acc.style,
        acc.objects_exact,
        acc.objects_macro_f1,
        acc.colours_exact,
        acc.colours_macro_f1,
        acc.pairs_micro_f1,
        acc.sky,
        acc.ground
    );
    if let Some(t) = training {
        println!(
            "final loss {:.4}; render {:.0} s, train {:.0} s, total {:.0} s",
            t.final_loss,
            t.render_seconds,
            t.train_seconds,
            start.elapsed().as_secs_f64()
        );
    }
    println!(
        "wrote {} and {}",
        args.out.join(WEIGHTS_FILE).display(),
        args.out.join(CONFIG_FILE).display()
    );
    Ok(())
}
