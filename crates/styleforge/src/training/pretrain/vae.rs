//! Stage 1: the VAE, trained as an autoencoder on renders of every world style and frozen
//! with its measured `scaling_factor`.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use styleforge_models::config::read_config;
use styleforge_models::files;
use styleforge_models::init::PyTorchInit;
use styleforge_models::vae::{AutoencoderKL, VaeConfig};
use styleforge_models::weights::{save_safetensors_atomic, varmap_tensors};
use styleforge_world::World;

use super::data::world_images;
use super::{count_params, named_vars, read_json, write_json, PretrainConfig, Style, VaeReport};
use crate::error::{Error, Result};
use crate::optim::{AdamW, AdamWConfig};
use crate::progress::Progress;
use crate::run_dir::RunDir;
use crate::training::core::normal;
use crate::training::lr::{LrPlan, LrSchedule};
use crate::training::stop::StopSignal;

/// The held-out renders of the VAE evaluation: every style in turn, from another seed.
fn vae_eval_world(cfg: &PretrainConfig) -> World {
    World::new(cfg.data.world_seed.wrapping_add(1_000_003)).with_size(cfg.data.size)
}

/// What [`evaluate_vae`] measures: overall PSNR, PSNR per style, std of the latents.
type VaeEval = (f64, Vec<(Style, f64)>, f64);

/// PSNR per style and overall, and the std of the posterior means, on held-out renders.
fn evaluate_vae(vae: &AutoencoderKL, cfg: &PretrainConfig, device: &Device) -> Result<VaeEval> {
    let world = vae_eval_world(cfg);
    let n = cfg.vae.eval_images.max(Style::ALL.len());
    let mut sq_err = [0f64; 7];
    let mut count = [0usize; 7];
    let (mut sum, mut sum_sq, mut elems) = (0f64, 0f64, 0usize);
    for start in (0..n).step_by(32) {
        let end = (start + 32).min(n);
        let x = world_images(&world, start as u64..end as u64, device)?;
        let post = vae.encode(&x)?;
        let mean = post.mean.detach();
        sum += mean.sum_all()?.to_scalar::<f32>()? as f64;
        sum_sq += mean.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        elems += mean.elem_count();
        let recon = vae.decode(&mean)?.detach().clamp(-1f32, 1f32)?;
        // [-1, 1] → [0, 1]: squared errors shrink by 4.
        let per_image: Vec<f32> = ((recon - &x)?.sqr()?.mean((1, 2, 3))? / 4.0)?.to_vec1()?;
        for (k, e) in per_image.iter().enumerate() {
            let style = world.style((start + k) as u64);
            let si = Style::ALL.iter().position(|s| *s == style).unwrap_or(0);
            sq_err[si] += *e as f64;
            count[si] += 1;
        }
    }
    let psnr = |mse: f64| 10.0 * (1.0 / mse.max(1e-12)).log10();
    let total: f64 = sq_err.iter().sum::<f64>() / count.iter().sum::<usize>().max(1) as f64;
    let per_style = Style::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| count[*i] > 0)
        .map(|(i, s)| (*s, psnr(sq_err[i] / count[i] as f64)))
        .collect();
    let m = sum / elems.max(1) as f64;
    let std = (sum_sq / elems.max(1) as f64 - m * m).max(0.0).sqrt();
    Ok((psnr(total), per_style, std))
}

/// One line of `vae_log.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VaeLogEntry {
    step: usize,
    mse: f64,
    kl: f64,
    lr: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    psnr_db: Option<f64>,
    step_time_s: f64,
}

/// Stage 1: trains the VAE of `model.config/vae/config.json` as an autoencoder on renders
/// of every world style, measures it on held-out renders, sets its `scaling_factor` to
/// `1 / std` of the latents and writes `<out>/vae/` and `<out>/vae_metrics.json`.
///
/// Not checkpointed (a few minutes); an interrupted stage 1 starts again. A raised `stop`
/// ends it after the step in progress with nothing written but its log (`Ok(None)`).
pub fn pretrain_vae(
    cfg: &PretrainConfig,
    device: &Device,
    stop: &StopSignal,
    progress: &mut dyn Progress,
) -> Result<Option<VaeReport>> {
    let device = device.clone();
    let start = Instant::now();
    let run = RunDir::new(&cfg.output.dir);
    let out = run.root();
    files::create_dir_all(out)?;
    let config_path = cfg.model.config.join("vae/config.json");
    let vae_cfg: VaeConfig = read_config(&config_path)?;
    if vae_cfg.downscale_factor() != 1 {
        tracing::warn!(
            "{}: the VAE downsamples {}×; the toy base keeps pixel-level detail with one block",
            config_path.display(),
            vae_cfg.downscale_factor()
        );
    }
    let vars = VarMap::new();
    let vb = PyTorchInit::var_builder(&vars, cfg.seed.wrapping_add(3), DType::F32, &device);
    let vae = AutoencoderKL::new(&vae_cfg, vb)?;
    let parameters = count_params(&vars);
    let mut opt = AdamW::new(
        named_vars(&vars, ""),
        AdamWConfig {
            lr: cfg.vae.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let world = World::new(cfg.data.world_seed ^ 0x5641_4531)
        .with_size(cfg.data.size)
        .with_styles(&Style::ALL);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(11));
    let log_path = run.vae_log();
    let mut log = std::fs::File::create(&log_path).map_err(files::at(&log_path))?;
    let b = cfg.vae.batch;
    let steps = cfg.vae.steps;
    let lr_plan = LrPlan::new(cfg.vae.lr, 20.min(steps), steps, LrSchedule::Cosine);
    progress.begin("vae", steps);
    for step in 0..steps {
        if stop.is_requested() {
            progress.finish();
            tracing::info!(
                "stop requested: the VAE stage ends at step {step} (it keeps no checkpoints)"
            );
            return Ok(None);
        }
        let t0 = Instant::now();
        let x = world_images(&world, (step * b) as u64..((step + 1) * b) as u64, &device)?;
        let post = vae.encode(&x)?;
        let eps = normal(&mut rng, post.mean.dims(), &device)?;
        let z = post.sample_with(&eps)?;
        let recon = vae.decode(&z)?;
        let mse = (recon - &x)?.sqr()?.mean_all()?;
        // KL(q ‖ N(0, I)) summed over latent elements, per image pixel value: LDM sums
        // both its reconstruction loss and the KL over a sample; with the reconstruction as
        // a per-value mean here, the KL is divided by the same count to keep LDM's ratio.
        let per_elem = ((post.mean.sqr()? + post.logvar.exp()?)? - 1.0)?;
        let kl = ((per_elem - &post.logvar)? * 0.5)?.sum_all()?;
        let kl = (kl / x.elem_count() as f64)?;
        let loss = (&mse + (&kl * cfg.vae.kl_weight)?)?;
        let grads = loss.backward()?;
        let n = step + 1;
        let lr = lr_plan.at(n);
        opt.set_lr(lr);
        opt.step(&grads)?;
        let mse_v = mse.to_scalar::<f32>()? as f64;
        if !mse_v.is_finite() {
            return Err(Error::NonFiniteLoss {
                step: n,
                value: mse_v,
            });
        }
        let psnr_db = if cfg.vae.eval_every > 0 && n % cfg.vae.eval_every == 0 && n < steps {
            Some(evaluate_vae(&vae, cfg, &device)?.0)
        } else {
            None
        };
        let entry = VaeLogEntry {
            step: n,
            mse: mse_v,
            kl: kl.to_scalar::<f32>()? as f64,
            lr,
            psnr_db,
            step_time_s: t0.elapsed().as_secs_f64(),
        };
        let line = serde_json::to_string(&entry).map_err(|e| Error::Json {
            what: "a VAE log line".into(),
            source: e,
        })?;
        writeln!(log, "{line}").map_err(files::at(&log_path))?;
        progress.advance(1);
    }
    progress.finish();
    let (psnr_db, psnr_per_style, latent_std) = evaluate_vae(&vae, cfg, &device)?;
    let scaling_factor = 1.0 / latent_std.max(1e-6);
    let report = VaeReport {
        steps,
        psnr_db,
        psnr_per_style,
        latent_std,
        scaling_factor,
        parameters,
        seconds: start.elapsed().as_secs_f64(),
    };
    // The trained VAE as a diffusers component, with the measured scaling factor.
    let dir = run.vae();
    let mut json = read_json(&config_path)?;
    json["scaling_factor"] = scaling_factor.into();
    write_json(&dir.join("config.json"), &json)?;
    save_safetensors_atomic(
        &varmap_tensors(&vars),
        &dir.join("diffusion_pytorch_model.safetensors"),
    )?;
    write_json(&out.join("vae_metrics.json"), &report)?;
    tracing::info!(
        "VAE: {steps} steps, PSNR {psnr_db:.2} dB on held-out renders, latent std {latent_std:.4}, scaling_factor {scaling_factor:.4}"
    );
    Ok(Some(report))
}

pub(super) fn read_vae_report(run: &RunDir) -> Option<VaeReport> {
    let text = std::fs::read_to_string(run.root().join("vae_metrics.json")).ok()?;
    let report = serde_json::from_str(&text).ok()?;
    run.vae()
        .join("diffusion_pytorch_model.safetensors")
        .is_file()
        .then_some(report)
}

/// Stage 1 for a warm start: the VAE of the diffusers folder `init` (its config, with its
/// `scaling_factor`, and its weights as f32) becomes `<out>/vae/`, measured on the held-out
/// renders like a trained one (`steps` 0 in `vae_metrics.json`).
pub(super) fn adopt_vae(cfg: &PretrainConfig, init: &Path, device: &Device) -> Result<VaeReport> {
    let start = Instant::now();
    let run = RunDir::new(&cfg.output.dir);
    let src = init.join("vae");
    let loaded = styleforge_models::folder::load_vae(
        &src,
        &styleforge_models::folder::LoadOptions {
            device: device.clone(),
            ..Default::default()
        },
    )?;
    let vae = loaded.model;
    let (psnr_db, psnr_per_style, latent_std) = evaluate_vae(&vae, cfg, device)?;
    let mut tensors = std::collections::HashMap::new();
    for file in &loaded.weight_files {
        for (name, t) in candle_core::safetensors::load(file, &Device::Cpu)? {
            tensors.insert(name, t.to_dtype(DType::F32)?);
        }
    }
    let parameters = tensors.values().map(|t| t.elem_count()).sum();
    let dir = run.vae();
    write_json(
        &dir.join("config.json"),
        &read_json(&src.join("config.json"))?,
    )?;
    save_safetensors_atomic(&tensors, &dir.join("diffusion_pytorch_model.safetensors"))?;
    let report = VaeReport {
        steps: 0,
        psnr_db,
        psnr_per_style,
        latent_std,
        scaling_factor: vae.scaling_factor(),
        parameters,
        seconds: start.elapsed().as_secs_f64(),
    };
    write_json(&run.root().join("vae_metrics.json"), &report)?;
    tracing::info!(
        "VAE taken from {}: PSNR {psnr_db:.2} dB on held-out renders, scaling_factor {:.4}",
        src.display(),
        report.scaling_factor
    );
    Ok(report)
}
