//! `styleforge convert`: a diffusers folder ⇄ a single-file checkpoint (the original LDM
//! layout A1111 and ComfyUI load). The direction follows the paths: a `.safetensors` file
//! in, a folder out, or the other way round.

use std::path::PathBuf;

use anyhow::{bail, Context};
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
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Sd1 => "SD 1.x",
        Family::Sd2 => "SD 2.x",
    }
}

/// Runs `styleforge convert`.
pub fn run(args: &ConvertArgs, quiet: bool) -> anyhow::Result<()> {
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
