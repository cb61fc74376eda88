//! `styleforge convert`: a diffusers folder ⇄ a single-file checkpoint (the original LDM
//! layout A1111 and ComfyUI load). The direction follows the paths: a `.safetensors` file
//! in, a folder out, or the other way round. With `--step`, a training run's checkpoint
//! (or the one a checkpoint sweep named best) out as a standalone diffusers folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use styleforge::evaluation::protocol::{best_checkpoint_step, export_checkpoint};
use styleforge::models::single_file::{self, Family, SingleFile, SingleFileOptions};

use super::choices::PredictionTypeArg;

/// Arguments of `styleforge convert`.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// What to convert: a single-file checkpoint (`*.safetensors`) or a diffusers folder.
    #[arg(long)]
    pub from: PathBuf,
    /// Where to write it: a new folder (from a file) or a `.safetensors` file (from a folder).
    #[arg(long)]
    pub to: PathBuf,
    /// For a single file: a diffusers folder whose configs (and tokenizer) replace the ones
    /// inferred from tensor shapes, or a JSON file with `unet`/`vae`/`text_encoder`/
    /// `scheduler` objects merged over them.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// For a single file: what the model predicts. Shapes cannot tell; the default is
    /// diffusers' (epsilon for SD 1.x, v_prediction for SD 2.x).
    #[arg(long, value_enum)]
    pub prediction_type: Option<PredictionTypeArg>,
    /// With a `styleforge train` run folder as --from (full fine-tuning): write the model of
    /// this training step to the new folder --to, from its kept checkpoint (EMA weights
    /// when the run writes its EMA as the model; the last step is the final model), or
    /// `best`: the step where `styleforge protocol --checkpoints` found the style stops
    /// improving (needs --sweep).
    #[arg(long, value_name = "N|best", value_parser = parse_step)]
    pub step: Option<StepArg>,
    /// With --step best: the output folder (or its protocol.json) of the
    /// `styleforge protocol --checkpoints` that swept the run.
    #[arg(long, value_name = "DIR", requires = "step")]
    pub sweep: Option<PathBuf>,
    /// With --step best: the style whose sweep to follow, when several were scored.
    #[arg(long, requires = "sweep")]
    pub style: Option<String>,
}

/// A training step, or the best one a sweep named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepArg {
    /// This step.
    Step(usize),
    /// The sweep's.
    Best,
}

fn parse_step(s: &str) -> Result<StepArg, String> {
    if s.eq_ignore_ascii_case("best") {
        return Ok(StepArg::Best);
    }
    s.parse()
        .map(StepArg::Step)
        .map_err(|_| format!("`{s}`: expected a training step (a number) or `best`"))
}

/// `convert --from RUN --step N|best --to DIR`.
fn export(args: &ConvertArgs, step: StepArg, quiet: bool) -> anyhow::Result<()> {
    if args.config.is_some() || args.prediction_type.is_some() {
        bail!("--config and --prediction-type apply to single-file input only");
    }
    let run = &args.from;
    let step = match (step, &args.sweep) {
        (StepArg::Step(n), None) => n,
        (StepArg::Step(_), Some(_)) => bail!("--sweep goes with --step best"),
        (StepArg::Best, None) => bail!(
            "--step best needs --sweep DIR: the output folder of `styleforge protocol              --checkpoints --run {}`",
            run.display()
        ),
        (StepArg::Best, Some(sweep)) => best_checkpoint_step(sweep, run, args.style.as_deref())
            .with_context(|| format!("cannot find the best step of {}", run.display()))?,
    };
    let m = export_checkpoint(run, step, &args.to).with_context(|| {
        format!(
            "cannot export step {step} of {} to {}",
            run.display(),
            args.to.display()
        )
    })?;
    if !quiet {
        eprintln!(
            "{} step {step} ({}{} weights) -> diffusers folder {}",
            run.display(),
            if m.final_model { "final model, " } else { "" },
            if m.ema { "EMA" } else { "trained" },
            m.dir.display()
        );
    }
    Ok(())
}

/// Whether `dir` looks like a training run folder rather than a model.
fn is_run_folder(dir: &Path) -> bool {
    dir.join("config.toml").is_file() && !dir.join("model_index.json").is_file()
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Sd1 => "SD 1.x",
        Family::Sd2 => "SD 2.x",
    }
}

/// Runs `styleforge convert`.
pub fn run(args: &ConvertArgs, quiet: bool) -> anyhow::Result<()> {
    if let Some(step) = args.step {
        return export(args, step, quiet);
    }
    if args.from.is_file() {
        if args.to.extension().is_some_and(|e| e == "safetensors") {
            bail!(
                "{} is already a single file; --to must be a folder to write a diffusers model into",
                args.from.display()
            );
        }
        let opts = SingleFileOptions {
            config: args.config.clone(),
            prediction_type: args.prediction_type.map(|p| p.name().to_string()),
        };
        let sf = SingleFile::open(&args.from, &opts)
            .with_context(|| format!("cannot read {}", args.from.display()))?;
        sf.write_diffusers_folder(&args.to)
            .with_context(|| format!("cannot write {}", args.to.display()))?;
        if !quiet {
            eprintln!(
                "{} ({}, {}) -> diffusers folder {}{}",
                args.from.display(),
                family_name(sf.family),
                sf.scheduler["prediction_type"]
                    .as_str()
                    .unwrap_or("epsilon"),
                args.to.display(),
                if sf.tokenizer_dir.is_none() {
                    " (no tokenizer/: single files carry none; the standard CLIP tokenizer applies)"
                } else {
                    ""
                }
            );
        }
        Ok(())
    } else if args.from.is_dir() {
        if is_run_folder(&args.from) {
            bail!(
                "{} is a training run folder: give --step N (a kept checkpoint's step) or                  --step best --sweep DIR to write one of its models to --to",
                args.from.display()
            );
        }
        if args.config.is_some() || args.prediction_type.is_some() {
            bail!("--config and --prediction-type apply to single-file input only");
        }
        if args.to.is_dir() || args.to.extension().is_none_or(|e| e != "safetensors") {
            bail!(
                "--to {} must be a new `.safetensors` file to write the single-file checkpoint into",
                args.to.display()
            );
        }
        let family = single_file::folder_to_single_file(&args.from, &args.to)
            .with_context(|| format!("cannot convert {}", args.from.display()))?;
        if !quiet {
            eprintln!(
                "{} ({}) -> single file {}",
                args.from.display(),
                family_name(family),
                args.to.display()
            );
        }
        Ok(())
    } else {
        bail!(
            "{} not found: expected a single-file checkpoint (.safetensors) or a diffusers folder",
            args.from.display()
        )
    }
}
