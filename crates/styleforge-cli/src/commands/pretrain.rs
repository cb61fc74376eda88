//! `styleforge pretrain`: train a small base model from scratch (a one-block VAE, then the
//! UNet and text encoder jointly) on a captioned folder or the toy world, written as a
//! diffusers folder. All behaviour is in `styleforge::training::pretrain`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use styleforge::training::pretrain::{pretrain, PretrainConfig, PretrainOptions, Stage, Style};
use styleforge::training::{StopReason, StopSignal};

use crate::progress::Bar;

/// Which stages to run.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StageArg {
    /// Only the VAE (retrained even if `<out>/vae/` exists).
    Vae,
    /// Only the UNet and text encoder (needs `<out>/vae/`).
    Unet,
    /// The VAE when `<out>/vae/` is missing, then the UNet and text encoder.
    Both,
}

/// Arguments of `styleforge pretrain`.
///
/// Without `--config`, every key has its default: world data (seed 0, the base styles
/// plain, pixel art, sketch, watercolor; 32×32), the architecture in
/// assets/toy/base-config, VAE 3000 steps at batch 8, UNet 1800 steps at batch 32 (about
/// 100 minutes on a 2-core CPU), lr 5e-4 with 200 warm-up steps and cosine decay, 10%
/// caption dropout. Config sections: top-level `seed`;
/// `[data]` (source = "world" | "folder", folder, world_seed, styles, size); `[model]`
/// (config, init); `[objective]` (snr_gamma, timestep_sampling, ... as in train's
/// `[training]`); `[vae]` (steps, batch, lr, kl_weight, eval_images, eval_every); `[unet]`
/// (steps, max_minutes, batch, lr, warmup_steps, lr_schedule = "cosine" | "constant",
/// caption_dropout, max_grad_norm, weight_decay, ema_decay, ema_power); `[output]` (dir, checkpoint_every,
/// keep_checkpoints, sample_every, sample_steps, sample_guidance, f16, probes).
///
/// Stopping: SIGTERM or Ctrl-C finishes the UNet step in progress, writes a checkpoint of
/// it and the model, and exits with code 130 (Ctrl-C) or 143 (SIGTERM); `--resume`
/// continues from that step (the VAE stage keeps no checkpoints: stopped, it starts again).
/// A second Ctrl-C quits at once.
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct PretrainArgs {
    /// Where to compute.
    #[command(flatten)]
    device: super::device::DeviceArg,
    /// A TOML config (optional; flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key: `--set unet.lr=3e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Train on the toy world (the default data source).
    #[arg(long, conflicts_with = "data")]
    world: bool,
    /// Train on a captioned image folder (`img.png` + `img.txt`) instead of the world.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// World styles, comma-separated (`plain,pixel-art,sketch,watercolor`).
    #[arg(long, value_delimiter = ',')]
    styles: Option<Vec<String>>,
    /// The folder of configs to initialise from (diffusers layout).
    #[arg(long, value_name = "DIR")]
    model_config: Option<PathBuf>,
    /// Warm start: begin from this diffusers folder's weights (UNet, text encoder, VAE)
    /// instead of fresh ones; its architecture must be the one of --model-config.
    #[arg(long, value_name = "DIR")]
    init: Option<PathBuf>,
    /// Toy-world probes folder (e.g. assets/toy): score the samples at every sample grid.
    #[arg(long, value_name = "DIR")]
    probes: Option<PathBuf>,
    /// The run folder.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Total UNet steps (the learning-rate schedule spans them).
    #[arg(long)]
    steps: Option<usize>,
    /// Wall-clock budget of this sitting; stops with a checkpoint (resume with --resume).
    #[arg(long, value_name = "M")]
    max_minutes: Option<f64>,
    /// UNet batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// UNet peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// VAE steps.
    #[arg(long)]
    vae_steps: Option<usize>,
    /// Seed of weights, noise and dropout.
    #[arg(long)]
    seed: Option<u64>,
    /// Which stages to run.
    #[arg(long, value_enum, default_value = "both")]
    stage: StageArg,
    /// Shortcut for `--stage vae`.
    #[arg(long, conflicts_with = "stage")]
    vae_only: bool,
    /// Continue the UNet stage from the newest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Write the model's weights as f16 (for shipping; loads with no flag).
    #[arg(long)]
    f16: bool,
    /// Print the effective config and exit.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `styleforge pretrain`: exit code 0 when the call ran to its end (or its time
/// budget), 130/143 when a signal stopped it (see [`crate::stop`]).
pub fn run(args: &PretrainArgs, quiet: bool) -> Result<ExitCode> {
    let base = match &args.config {
        Some(p) => PretrainConfig::from_file(p)?,
        None => PretrainConfig::default(),
    };
    let mut o = args.overrides.clone();
    let quote = |p: &PathBuf| format!("{:?}", p.display().to_string());
    if args.world {
        o.push("data.source=\"world\"".into());
    }
    if let Some(d) = &args.data {
        o.push("data.source=\"folder\"".into());
        o.push(format!("data.folder={}", quote(d)));
    }
    if let Some(styles) = &args.styles {
        let ids = styles
            .iter()
            .map(|s| {
                s.parse::<Style>()
                    .map(|st| format!("{:?}", st.id()))
                    .map_err(anyhow::Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        o.push(format!("data.styles=[{}]", ids.join(",")));
    }
    if let Some(d) = &args.model_config {
        o.push(format!("model.config={}", quote(d)));
    }
    if let Some(d) = &args.init {
        o.push(format!("model.init={}", quote(d)));
    }
    if let Some(d) = &args.probes {
        o.push(format!("output.probes={}", quote(d)));
    }
    if let Some(d) = &args.out {
        o.push(format!("output.dir={}", quote(d)));
    }
    if let Some(s) = args.steps {
        o.push(format!("unet.steps={s}"));
    }
    if let Some(m) = args.max_minutes {
        o.push(format!("unet.max_minutes={m:?}"));
    }
    if let Some(b) = args.batch {
        o.push(format!("unet.batch={b}"));
    }
    if let Some(lr) = args.lr {
        o.push(format!("unet.lr={lr:e}"));
    }
    if let Some(s) = args.vae_steps {
        o.push(format!("vae.steps={s}"));
    }
    if let Some(s) = args.seed {
        o.push(format!("seed={s}"));
    }
    if args.f16 {
        o.push("output.f16=true".into());
    }
    let cfg = base
        .with_overrides(&o)
        .context("invalid pretrain settings")?;
    cfg.validate()?;
    if args.dry_run {
        print!("{}", cfg.to_toml()?);
        return Ok(ExitCode::SUCCESS);
    }
    let stage = match (args.vae_only, args.stage) {
        (true, _) | (_, StageArg::Vae) => Stage::Vae,
        (_, StageArg::Unet) => Stage::Unet,
        (_, StageArg::Both) => Stage::Both,
    };
    let stop = StopSignal::new();
    crate::stop::install(&stop);
    let opts = PretrainOptions {
        stage,
        resume: args.resume,
        stop_after: None,
        device: args.device.resolve(Default::default())?,
        stop,
    };
    let summary = pretrain(&cfg, &opts, &mut Bar::new(quiet))?;
    if summary.stopped == Some(StopReason::Requested) && summary.vae.is_none() {
        println!("stopped in the VAE stage, which keeps no checkpoints: run the command again");
        return Ok(crate::stop::exit_code());
    }
    if let Some(v) = &summary.vae {
        println!(
            "VAE: {} parameters, {} steps, PSNR {:.2} dB on held-out renders, scaling_factor {:.4} ({:.0} s)",
            v.parameters, v.steps, v.psnr_db, v.scaling_factor, v.seconds
        );
        let per_style: Vec<String> = v
            .psnr_per_style
            .iter()
            .map(|(s, p)| format!("{} {p:.1}", s.id()))
            .collect();
        println!("     per style (dB): {}", per_style.join(", "));
    }
    if summary.parameters.0 > 0 {
        println!(
            "UNet {} + text encoder {} parameters; step {}/{} (last loss {:.4}, {:.2} s/step this sitting)",
            summary.parameters.0,
            summary.parameters.1,
            summary.steps,
            cfg.unet.steps,
            summary.last_loss,
            summary.seconds_per_step
        );
    }
    if let Some(m) = &summary.model_dir {
        println!("model: {}", m.display());
    }
    if summary.stopped == Some(StopReason::Requested) {
        println!(
            "stopped at step {}; continue with `{}`",
            summary.steps,
            crate::stop::resume_command("pretrain", &summary.out_dir.join("pretrain.toml"))
        );
        println!("run folder: {}", summary.out_dir.display());
        return Ok(crate::stop::exit_code());
    }
    if !summary.finished && stage != Stage::Vae {
        println!("not finished: continue with the same command and --resume");
    }
    println!("run folder: {}", summary.out_dir.display());
    Ok(ExitCode::SUCCESS)
}
