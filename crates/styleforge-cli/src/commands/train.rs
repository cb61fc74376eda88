//! `styleforge train`: fine-tune a base model with StyleForge, Multi-StyleForge or a
//! baseline, from a TOML config whose keys flags can override.

use std::path::PathBuf;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use styleforge::training::config::{Method, SaveFormat};
use styleforge::training::{train, ConfigFile, RunOptions, StopReason, StopSignal};
use styleforge::RunDir;

use super::choices::{MethodArg, SaveFormatArg};
use crate::progress::Bar;

/// The config keys, printed after `train --help` (the subcommand's own line in `main.rs`
/// is its summary, so the keys come as the help's closing text).
const CONFIG_KEYS: &str = "\
The config file has sections [model] (base: a diffusers folder, a single-file
.safetensors converted once into <run>/base-model/, or a Hub model owner/name[@rev]
fetched into the Hugging Face cache; variant; config: configs for a single-file base, as
convert --config), [[data.concepts]] (style_dir, aux_dir, token) and [data] (resolution,
crop, flip, allow_upscale, min_images, caption_dropout, shuffle_tags, keep_tokens,
validation_dir, validation_split; caption_extension = \".txt\"; masked_loss: a
<stem>.mask.png beside each StyleRef image, white = train, black = ignore; aspect-ratio
bucketing: bucketing, bucket_step = VAE factor x 8, max_aspect = 2), [training]
(instance_prompt, aux_prompt, prior_loss_weight, train_text_encoder, num_aux_images,
aux_steps, gradient_checkpointing, ignore_memory_check; mixed precision:
precision = fp32|bf16|fp16, weights and optimizer states stay f32, fp16 scales the loss:
loss_scale_init = 65536, loss_scale_growth_interval = 2000; the objective: snr_gamma,
snr_weight_prior, timestep_sampling = uniform|logit-normal, min_timestep, max_timestep,
timestep_mean, timestep_scale, noise_offset, input_perturbation; an EMA of the weights:
ema_decay, ema_warmup, ema_power, ema_update_after_step), [optim] (steps, lr, beta1,
beta2, weight_decay, eps, batch_size, gradient_accumulation, max_grad_norm, lr_schedule,
warmup_steps, optimizer) and [output] (dir, checkpoint_every, keep_checkpoints,
validate_every, validation_prompts, validation_steps, validation_loss_every, save_format,
save_ema, save_raw), plus top-level method, seed and device. See examples/train/*.toml.

A run folder's config.toml (the effective config, every default applied) is a config
too: `train --config <run>/config.toml --resume` continues that run with exactly its
settings; with it, --set takes its own flat keys (steps=, output_dir=, adamw.lr=).

Stopping: SIGTERM or Ctrl-C finishes the step in progress, writes a checkpoint of it and
exits with code 130 (Ctrl-C) or 143 (SIGTERM); `--resume` continues from that step with
nothing lost. A second Ctrl-C quits at once (the run then resumes from its newest
checkpoint).";

/// Arguments of `styleforge train` (its config keys close `--help`: `CONFIG_KEYS`).
#[derive(Args, Debug)]
#[command(after_long_help = CONFIG_KEYS)]
pub struct TrainArgs {
    /// Where to compute.
    #[command(flatten)]
    device: super::device::DeviceArg,
    /// The run's TOML config, or a run folder's effective `config.toml`.
    #[arg(long)]
    config: PathBuf,
    /// Override a config key: `--set optim.lr=2e-6 --set output.dir=runs/b` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Shortcut for `--set method=...`.
    #[arg(long, value_enum)]
    method: Option<MethodArg>,
    /// Shortcut for `--set optim.steps=N`.
    #[arg(long)]
    steps: Option<usize>,
    /// Shortcut for `--set optim.lr=X`.
    #[arg(long)]
    lr: Option<f64>,
    /// Shortcut for `--set output.dir=DIR`.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Shortcut for `--set seed=N`.
    #[arg(long)]
    seed: Option<u64>,
    /// Shortcut for `--set output.save_format=...` [default: diffusers].
    #[arg(long, value_enum, value_name = "FORMAT")]
    save_format: Option<SaveFormatArg>,
    /// Continue from the newest checkpoint in the run folder.
    #[arg(long)]
    resume: bool,
    /// Print the effective config and exit.
    #[arg(long)]
    dry_run: bool,
    /// Start even when the estimated peak memory exceeds the memory available (shortcut
    /// for `--set training.ignore_memory_check=true`); the estimate is printed either way.
    #[arg(long)]
    ignore_memory_check: bool,
}

/// The keys the shortcut flags set: in a written config's sections, or in a run's
/// effective config.
struct Keys {
    steps: &'static str,
    lr: &'static str,
    output: &'static str,
    save_format: &'static str,
    ignore_memory_check: &'static str,
}

const WRITTEN_KEYS: Keys = Keys {
    steps: "optim.steps",
    lr: "optim.lr",
    output: "output.dir",
    save_format: "output.save_format",
    ignore_memory_check: "training.ignore_memory_check",
};

const EFFECTIVE_KEYS: Keys = Keys {
    steps: "steps",
    lr: "adamw.lr",
    output: "output_dir",
    save_format: "save_format",
    ignore_memory_check: "ignore_memory_check",
};

/// Runs `styleforge train`: exit code 0 when the run finished, 130/143 when a signal
/// stopped it (see [`crate::stop`]).
pub fn run(args: &TrainArgs, quiet: bool) -> Result<ExitCode> {
    let config = ConfigFile::from_file(&args.config)?;
    let keys = match &config {
        ConfigFile::Written(_) => &WRITTEN_KEYS,
        ConfigFile::Effective(_) => &EFFECTIVE_KEYS,
    };
    let mut overrides = args.overrides.clone();
    if let Some(m) = args.method {
        overrides.push(format!("method={:?}", Method::from(m).name()));
    }
    if let Some(s) = args.steps {
        overrides.push(format!("{}={s}", keys.steps));
    }
    if let Some(lr) = args.lr {
        overrides.push(format!("{}={lr:e}", keys.lr));
    }
    if let Some(o) = &args.output {
        overrides.push(format!("{}={:?}", keys.output, o.display().to_string()));
    }
    if let Some(s) = args.seed {
        overrides.push(format!("seed={s}"));
    }
    if let Some(f) = args.save_format {
        overrides.push(format!(
            "{}={:?}",
            keys.save_format,
            SaveFormat::from(f).name()
        ));
    }
    if args.ignore_memory_check {
        overrides.push(format!("{}=true", keys.ignore_memory_check));
    }
    let resolved = match config {
        ConfigFile::Written(c) => c.with_overrides(&overrides)?.resolve(),
        ConfigFile::Effective(c) => c.with_overrides(&overrides),
    }
    .with_context(|| format!("invalid config {}", args.config.display()))?;
    if args.dry_run {
        print!("{}", resolved.to_toml()?);
        return Ok(ExitCode::SUCCESS);
    }
    let stop = StopSignal::new();
    crate::stop::install(&stop);
    let opts = RunOptions {
        resume: args.resume,
        stop_after: None,
        device: args.device.resolve(resolved.device)?,
        stop,
    };
    let summary = train(&resolved, &opts, &mut Bar::new(quiet))?;
    if summary.stopped == Some(StopReason::Requested) {
        let config = RunDir::new(&summary.run_dir).config();
        println!(
            "stopped at step {}; continue with `{}`",
            summary.steps,
            crate::stop::resume_command("train", &config)
        );
        return Ok(crate::stop::exit_code());
    }
    if let Some(model) = &summary.model_dir {
        println!(
            "trained {} steps (last loss {:.4}); model: {}",
            summary.steps,
            summary.last_loss,
            model.display()
        );
    }
    println!("run folder: {}", summary.run_dir.display());
    Ok(ExitCode::SUCCESS)
}
