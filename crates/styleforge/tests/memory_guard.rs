//! The memory guard before a training run (refusal with the settings that fit, the
//! override), and an `#[ignore]`d calibration of the estimate against measured peaks.
//!
//! This binary counts its heap allocations (a wrapper around the system allocator) so the
//! calibration can tell live tensor bytes from what the allocator keeps besides.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::Device;
use image::{Rgb, RgbImage};
use styleforge::progress::NoProgress;
use styleforge::training::config::{ResolvedConfig, TrainConfig};
use styleforge::training::memory::{
    estimate, gb, peak_rss_bytes, MemorySettings, ModelConfigs, MEMORY_LIMIT_ENV,
};
use styleforge::training::{train, RunOptions};
use styleforge::Error;

#[path = "support/runtime.rs"]
mod runtime;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `n` striped `side × side` images.
fn make_images(dir: &Path, n: usize, side: u32, seed: u8) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = RgbImage::from_fn(side, side, |x, y| {
            let k = seed.wrapping_mul(37).wrapping_add(i as u8 * 53);
            if ((x + 2 * y + i as u32) / 3).is_multiple_of(2) {
                Rgb([k, 255 - k, 40])
            } else {
                Rgb([20, k / 2, 200])
            }
        });
        img.save(dir.join(format!("img-{i:02}.png"))).unwrap();
    }
}

fn config(base: &Path, data: &Path, out: &Path, resolution: u32, steps: usize) -> ResolvedConfig {
    let text = format!(
        r#"
method = "styleforge"
seed = 3
[model]
base = {:?}
[[data.concepts]]
style_dir = {:?}
aux_dir = {:?}
[data]
resolution = {resolution}
[training]
num_aux_images = 2
[optim]
steps = {steps}
lr = 1e-5
[output]
dir = {:?}
checkpoint_every = 0
validate_every = 0
validation_steps = 1
validation_prompts = ["a house, {{token}} style"]
"#,
        base.display().to_string(),
        data.join("style").display().to_string(),
        data.join("aux").display().to_string(),
        out.display().to_string()
    );
    TrainConfig::from_toml(&text, Path::new("test.toml"))
        .unwrap()
        .resolve()
        .unwrap()
}

fn total(cfg: &ResolvedConfig, checkpointing: bool) -> u64 {
    let models = ModelConfigs::read(&cfg.base).unwrap();
    let settings = MemorySettings {
        gradient_checkpointing: checkpointing,
        ..MemorySettings::from_config(cfg, &Device::Cpu)
    };
    estimate(&models, &settings).unwrap().total
}

#[test]
fn a_run_over_the_limit_is_refused_with_what_fits_and_the_override_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    make_images(&tmp.path().join("style"), 2, 16, 1);
    make_images(&tmp.path().join("aux"), 2, 16, 7);
    let mut cfg = config(
        &repo().join("fixtures/tiny-sd1"),
        tmp.path(),
        &tmp.path().join("run"),
        16,
        1,
    );
    let (plain, ckpt) = (total(&cfg, false), total(&cfg, true));
    assert!(ckpt < plain, "{ckpt} {plain}");
    // Room for the run with gradient checkpointing, not without.
    std::env::set_var(MEMORY_LIMIT_ENV, ((plain + ckpt) / 2).to_string());
    let err = train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap_err();
    let text = err.to_string();
    let Error::InsufficientMemory {
        estimate,
        available,
        suggestions,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*estimate, *available), (plain, (plain + ckpt) / 2));
    assert!(
        suggestions[0].starts_with("training.gradient_checkpointing = true"),
        "{text}"
    );
    assert!(text.contains("ignore_memory_check"), "{text}");
    assert!(
        !tmp.path().join("run").exists(),
        "a refused run leaves no run folder"
    );

    cfg.ignore_memory_check = true;
    let summary = train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(summary.steps, 1);
    std::env::remove_var(MEMORY_LIMIT_ENV);
}

/// The estimate against the measured peak of real runs on the toy base model:
/// `cargo test --release -p styleforge --test memory_guard -- --ignored --nocapture`
/// (`STYLEFORGE_CALIBRATION_RESOLUTION`, default 128). Prints, for gradient checkpointing
/// off and on, the estimate, the peak of live heap bytes and the peak RSS.
#[test]
#[ignore]
fn calibrate_on_the_toy_base_model() {
    runtime::configure_cpu_runtime();
    let resolution: u32 = std::env::var("STYLEFORGE_CALIBRATION_RESOLUTION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let tmp = tempfile::tempdir().unwrap();
    make_images(&tmp.path().join("style"), 2, resolution, 1);
    make_images(&tmp.path().join("aux"), 2, resolution, 7);
    for checkpointing in [false, true] {
        let mut cfg = config(
            &repo().join("assets/toy/base-model"),
            tmp.path(),
            &tmp.path().join(format!("run-{checkpointing}")),
            resolution,
            2,
        );
        cfg.gradient_checkpointing = checkpointing;
        cfg.ignore_memory_check = true;
        let models = ModelConfigs::read(&cfg.base).unwrap();
        let est = estimate(&models, &MemorySettings::from_config(&cfg, &Device::Cpu)).unwrap();
        // Reset the peaks: ours, and the kernel's VmHWM (`5` to clear_refs).
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = LIVE.load(Ordering::Relaxed);
        train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap();
        let live = PEAK.load(Ordering::Relaxed) - before;
        let rss = peak_rss_bytes().unwrap_or(0);
        println!(
            "toy base {resolution} px, checkpointing {checkpointing}:\n{est}\n  measured: live heap peak {:.3} GB, peak RSS {:.3} GB; estimate / RSS {:.2}",
            gb(live as u64),
            gb(rss),
            est.total as f64 / rss as f64
        );
    }
}

/// One training step of the toy base model (UNet + text encoder trained, batch 2) taken
/// apart: the live heap bytes the forward pass holds (the estimate's "activations") and the
/// peak over the backward pass above the weights (its gradients + activations +
/// workspace), with gradient checkpointing off and on:
/// `cargo test --release -p styleforge --test memory_guard calibrate_step -- --ignored --nocapture`.
#[test]
#[ignore]
fn calibrate_step_parts() {
    use candle_core::{DType, Tensor};
    use candle_nn::VarMap;
    use styleforge::models::folder::{LoadOptions, ModelFolder};
    use styleforge::schedulers::{DdpmScheduler, SchedulerConfig};
    use styleforge::training::step::{compute_loss, NoiseSchedule, StepBatch, StepModels};

    runtime::configure_cpu_runtime();
    let resolution: usize = std::env::var("STYLEFORGE_CALIBRATION_RESOLUTION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let dir = repo().join("assets/toy/base-model");
    let models = ModelConfigs::read(&dir).unwrap();
    let side = resolution / models.vae_scale_factor() as usize;
    for checkpointing in [false, true] {
        let folder = ModelFolder::open(&dir).unwrap();
        let (unet_vars, te_vars) = (VarMap::new(), VarMap::new());
        let base = LoadOptions {
            dtype: DType::F32,
            ..LoadOptions::default()
        };
        let mut unet = folder.unet(&base.trainable_in(&unet_vars)).unwrap().model;
        let mut te = folder
            .text_encoder(&base.trainable_in(&te_vars))
            .unwrap()
            .model;
        unet.set_gradient_checkpointing(checkpointing);
        te.set_gradient_checkpointing(checkpointing);
        let sc = SchedulerConfig::from_model_dir(&dir).unwrap();
        let ddpm = DdpmScheduler::from_config(&sc).unwrap();
        let schedule = NoiseSchedule {
            prediction_type: ddpm.config().prediction_type,
            ddpm,
        };
        let dev = Device::Cpu;
        let shape = (2, 4, side, side);
        let batch = StepBatch {
            latents: Tensor::randn(0f32, 1.0, shape, &dev).unwrap(),
            noise: Tensor::randn(0f32, 1.0, shape, &dev).unwrap(),
            timesteps: vec![300.0, 500.0],
            input_ids: Tensor::from_vec(
                (0..154u32).map(|i| 49406 + i % 2).collect::<Vec<_>>(),
                (2, 77),
                &dev,
            )
            .unwrap(),
            instance_rows: 1,
            input_noise: None,
            instance_weights: None,
            prior_weights: None,
        };
        let step_models = StepModels {
            unet: &unet,
            text_encoder: &te,
            train_text_encoder: true,
        };
        let settings = MemorySettings {
            batch: 2,
            resolution: resolution as u32,
            trained: styleforge::training::memory::Trained::Full { text_encoder: true },
            gradient_checkpointing: checkpointing,
            optimizer: styleforge::training::memory::OptimizerKind::AdamW,
            gradient_accumulation: 1,
            attention: styleforge::training::memory::AttentionMemory::Fused,
            checkpoint_saves: false,
            ema: false,
            precision: Default::default(),
        };
        let est = estimate(&models, &settings).unwrap();
        let base_live = LIVE.load(Ordering::Relaxed);
        PEAK.store(base_live, Ordering::Relaxed);
        let loss = compute_loss(&step_models, &schedule, &batch, 1.0).unwrap();
        let after_forward = LIVE.load(Ordering::Relaxed) - base_live;
        let forward_peak = PEAK.load(Ordering::Relaxed) - base_live;
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let grads = styleforge::models::nn::checkpoint::backward(&loss.total).unwrap();
        let backward_peak = PEAK.load(Ordering::Relaxed) - base_live;
        drop(loss);
        // What the gradients keep alive (tensors reached through their ops' arguments),
        // and what is left once they are detached.
        let with_grads = LIVE.load(Ordering::Relaxed) - base_live;
        let mut grads = grads;
        let ids: Vec<_> = grads.get_ids().copied().collect();
        for id in ids {
            let g = grads.get_id(id).unwrap().detach();
            grads.insert_id(id, g);
        }
        let detached = LIVE.load(Ordering::Relaxed) - base_live;
        drop(grads);
        println!(
            "toy {resolution} px b2, checkpointing {checkpointing}: held after forward {:.3} GB (forward peak {:.3}), estimate activations {:.3} GB; backward peak {:.3} GB, estimate gradients + activations + workspace {:.3} GB; held by the gradients alone {:.3} GB, once detached {:.3} GB",
            gb(after_forward as u64),
            gb(forward_peak as u64),
            gb(est.activations),
            gb(backward_peak as u64),
            gb(est.step_part()),
            gb(with_grads as u64),
            gb(detached as u64),
        );
    }
}
