//! The training engine end to end on the tiny SD1 fixture: exact resume, the loss falling,
//! the output folder, Aux generation and reuse, NaN handling, the base model untouched.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use styleforge::models::folder::{LoadOptions, ModelFolder};
use styleforge::progress::NoProgress;
use styleforge::schedulers::{DdpmScheduler, SchedulerConfig};
use styleforge::training::config::{Method, TrainConfig};
use styleforge::training::read_log;
use styleforge::training::step::{compute_loss, NoiseSchedule, StepBatch, StepModels};
use styleforge::training::{train, RunOptions};
use styleforge::Error;

#[path = "support/training.rs"]
mod training_support;
use training_support::{base, config, dataset, same_weights, train_interrupted, weights, StopAt};

fn file_digest(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.push((e.clone(), std::fs::read(&e).unwrap()));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

#[test]
fn interrupted_and_resumed_run_ends_with_the_same_weights() {
    let data = dataset();
    let before = file_digest(&base());
    let straight = data.path().join("run-straight");
    let cfg = config(Method::Styleforge, data.path(), &straight)
        .resolve()
        .unwrap();
    let summary = train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(summary.steps, 6);
    let model_dir = summary.model_dir.unwrap();

    let split = data.path().join("run-split");
    let cfg2 = config(Method::Styleforge, data.path(), &split)
        .resolve()
        .unwrap();
    let first = RunOptions {
        resume: false,
        stop_after: Some(4),
        ..Default::default()
    };
    let s = train(&cfg2, &first, &mut NoProgress).unwrap();
    assert_eq!(s.steps, 4);
    assert!(s.model_dir.is_none());
    // A fresh start in a folder with checkpoints is refused rather than overwriting them.
    let err = train(&cfg2, &RunOptions::default(), &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    let resume = RunOptions {
        resume: true,
        stop_after: None,
        ..Default::default()
    };
    let s = train(&cfg2, &resume, &mut NoProgress).unwrap();
    assert_eq!(s.steps, 6);

    let a = weights(&model_dir);
    let b = weights(&s.model_dir.unwrap());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let d = (t - &b[name])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert_eq!(
            d.to_scalar::<f32>().unwrap(),
            0.0,
            "{name} differs after resume"
        );
    }
    let log_a = read_log(&straight.join("train_log.jsonl"));
    let log_b = read_log(&split.join("train_log.jsonl"));
    assert_eq!(log_a.len(), 6);
    assert_eq!(
        log_a.iter().map(|e| e.loss).collect::<Vec<_>>(),
        log_b.iter().map(|e| e.loss).collect::<Vec<_>>()
    );
    // The run leaves its effective config, the loss curve and a validation grid.
    assert!(straight.join("config.toml").is_file());
    assert!(straight.join("loss.png").is_file());
    assert!(straight.join("validation/step-0000006.png").is_file());
    // The output is a diffusers folder the pipelines load, and the base is untouched.
    let sd = styleforge::pipelines::StableDiffusion::load(&model_dir, &LoadOptions::default());
    assert!(sd.is_ok());
    assert_eq!(
        before,
        file_digest(&base()),
        "the base model folder changed"
    );
}

#[test]
fn loss_on_the_training_pair_falls_well_below_its_start() {
    let data = dataset();
    let out = data.path().join("run");
    let mut cfg = config(Method::Styleforge, data.path(), &out);
    cfg.optim.steps = Some(150);
    cfg.optim.lr = Some(3e-4);
    cfg.output.checkpoint_every = Some(0);
    cfg.data.concepts[0].aux_dir = Some(data.path().join("aux"));
    let cfg = cfg.resolve().unwrap();

    // A fixed (StyleRef, Aux) pair with fixed noise and timesteps, scored before and after.
    let folder = ModelFolder::open(base()).unwrap();
    let tok = folder.tokenizer().unwrap();
    let ids: Vec<u32> = ["ohwx style", "style"]
        .iter()
        .flat_map(|p| tok.encode_padded(p).ids)
        .collect();
    let dev = Device::Cpu;
    let prep = styleforge::data::Preprocess::new(16);
    let style = styleforge::data::ImageFolder::scan(&data.path().join("style"), &prep, 1).unwrap();
    let aux = styleforge::data::ImageFolder::scan(&data.path().join("aux"), &prep, 1).unwrap();
    let vae = folder.vae(&LoadOptions::default()).unwrap().model;
    let enc = |t: Tensor| {
        (vae.encode(&t.unsqueeze(0).unwrap()).unwrap().mean * vae.scaling_factor()).unwrap()
    };
    let latents = Tensor::cat(
        &[
            enc(style.tensor(0, &prep, false, &dev).unwrap()),
            enc(aux.tensor(0, &prep, false, &dev).unwrap()),
        ],
        0,
    )
    .unwrap();
    let noise = Tensor::randn(0f32, 1f32, latents.dims(), &dev).unwrap();
    let batch = StepBatch {
        latents,
        noise,
        timesteps: vec![300.0, 500.0],
        input_ids: Tensor::from_vec(ids, (2, 77), &dev).unwrap(),
        instance_rows: 1,
        input_noise: None,
        instance_weights: None,
        prior_weights: None,
    };
    let score = |model: &Path| -> f64 {
        let f = ModelFolder::open(model).unwrap();
        let unet = f.unet(&LoadOptions::default()).unwrap().model;
        let te = f.text_encoder(&LoadOptions::default()).unwrap().model;
        let sc = SchedulerConfig::from_model_dir(model).unwrap();
        let ddpm = DdpmScheduler::from_config(&sc).unwrap();
        let schedule = NoiseSchedule {
            prediction_type: ddpm.config().prediction_type,
            ddpm,
        };
        let models = StepModels {
            unet: &unet,
            text_encoder: &te,
            train_text_encoder: false,
        };
        let l = compute_loss(&models, &schedule, &batch, 1.0).unwrap();
        l.total
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let start = score(&base());
    let summary = train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap();
    let end = score(&summary.model_dir.unwrap());
    assert!(end < 0.5 * start, "loss went from {start} to {end}");
}

#[test]
fn missing_aux_images_are_generated_once_and_reused() {
    let data = dataset();
    let out = data.path().join("run");
    let mut cfg = config(Method::Dreambooth, data.path(), &out);
    cfg.data.concepts[0].aux_dir = None;
    cfg.optim.steps = Some(1);
    cfg.training.num_aux_images = Some(2);
    let resolved = cfg.resolve().unwrap();
    assert!(
        !resolved.train_text_encoder,
        "DreamBooth trains the UNet only by default"
    );
    assert_eq!(resolved.concepts[0].instance_prompt, "a ohwx style");
    train(&resolved, &RunOptions::default(), &mut NoProgress).unwrap();
    let aux = out.join("aux/concept-0");
    let first: Vec<_> = file_digest(&aux);
    assert_eq!(
        first
            .iter()
            .filter(|(p, _)| p.extension().unwrap() == "png")
            .count(),
        2
    );
    // DreamBooth leaves the text encoder as it was.
    let te_base = std::fs::read(base().join("text_encoder/model.safetensors")).unwrap();
    let te_out = std::fs::read(out.join("model/text_encoder/model.safetensors")).unwrap();
    assert_eq!(te_base, te_out);
    // A second run in a new folder with the same aux folder... reuses the generated images.
    std::fs::remove_dir_all(out.join("checkpoints")).ok();
    train(&resolved, &RunOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(first, file_digest(&aux));
}

#[test]
fn multi_styleforge_trains_two_tokens() {
    let data = dataset();
    let out = data.path().join("run");
    let mut cfg = config(Method::MultiStyleforge, data.path(), &out);
    cfg.optim.steps = Some(2);
    let resolved = cfg.resolve().unwrap();
    assert_eq!(resolved.concepts[0].instance_prompt, "ohwx style");
    assert_eq!(resolved.concepts[1].instance_prompt, "phol style");
    let s = train(&resolved, &RunOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(s.steps, 2);
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let data = dataset();
    let out = data.path().join("run");
    let mut cfg = config(Method::Styleforge, data.path(), &out);
    cfg.optim.lr = Some(1e30);
    cfg.optim.max_grad_norm = Some(0.0);
    cfg.optim.steps = Some(5);
    cfg.output.checkpoint_every = Some(1);
    let err = train(
        &cfg.resolve().unwrap(),
        &RunOptions::default(),
        &mut NoProgress,
    )
    .unwrap_err();
    let Error::NonFiniteLoss { step, .. } = err else {
        panic!("expected a non-finite loss error, got {err}");
    };
    assert!(step >= 2, "step {step}");
    let ckpts = styleforge::training::checkpoint::list(&out.join("checkpoints"));
    assert!(!ckpts.is_empty());
    assert!(ckpts.iter().all(|(s, _)| *s < step));
    assert!(
        !out.join("model").exists(),
        "no model is written from a failed run"
    );
}

#[test]
fn run_folder_inside_the_base_model_is_refused() {
    let data = dataset();
    let cfg = config(Method::Styleforge, data.path(), &base().join("runs/x"));
    let err = train(
        &cfg.resolve().unwrap(),
        &RunOptions::default(),
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("inside the base model"), "{err}");
    assert!(!base().join("runs").exists());
}

#[test]
fn a_run_refused_before_its_first_step_leaves_no_run_folder() {
    let data = dataset();
    // A missing style folder, and --resume of a run that never was: both refused, with
    // nothing left behind.
    let out = data.path().join("refused");
    let mut cfg = config(Method::Styleforge, data.path(), &out);
    cfg.data.concepts[0].style_dir = data.path().join("no-such-folder");
    let err = train(
        &cfg.resolve().unwrap(),
        &RunOptions::default(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no-such-folder"), "{err}");
    assert!(!out.exists(), "a refused run left {}", out.display());
    let cfg = config(Method::Styleforge, data.path(), &out);
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    let err = train(&cfg.resolve().unwrap(), &resume, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
    assert!(!out.exists(), "a refused resume left {}", out.display());
    // A folder that existed before is the user's: only what the run wrote may change.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    assert!(train(&cfg.resolve().unwrap(), &resume, &mut NoProgress).is_err());
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn a_second_run_into_a_live_runs_folder_is_refused() {
    let data = dataset();
    let out = data.path().join("busy");
    let cfg = config(Method::Styleforge, data.path(), &out)
        .resolve()
        .unwrap();
    // A live run holds the folder (another process's lock looks the same).
    let held = styleforge::RunDir::new(&out).lock().unwrap();
    let err = train(&cfg, &RunOptions::default(), &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("another styleforge process"), "{err}");
    assert_eq!(walk(&out), [out.join("run.lock")], "nothing else written");
    // Once it has ended, its leftover lock file does not block.
    drop(held);
    let stop = RunOptions {
        stop_after: Some(1),
        ..Default::default()
    };
    train(&cfg, &stop, &mut NoProgress).unwrap();
    assert_eq!(read_log(&out.join("train_log.jsonl")).len(), 1);
}

#[test]
fn config_defaults_overrides_and_errors() {
    let data = dataset();
    let cfg = config(Method::Styleforge, data.path(), &data.path().join("o"));
    let r = cfg.resolve().unwrap();
    assert!(r.train_text_encoder);
    // The default tokens are rare words that CLIP keeps as one token each.
    let clip = styleforge::tokenizer::ClipTokenizer::standard().unwrap();
    for token in ["ohwx", "phol"] {
        assert_eq!(clip.encode(token).len(), 3, "{token} is not a single token");
    }
    assert_eq!(r.concepts[0].instance_prompt, "ohwx style");
    assert_eq!(r.concepts[0].aux_prompt, "style");
    let o = cfg
        .with_overrides(&[
            "optim.lr=2e-6".into(),
            "training.aux_prompt=painting".into(),
        ])
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(o.adamw.lr, 2e-6);
    assert_eq!(o.concepts[0].aux_prompt, "painting");
    let err = TrainConfig::from_toml(
        "method = \"styleforge\"\n[model]\nbase = \"x\"\n[optim]\nlearning_rate = 1\n",
        Path::new("bad.toml"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("learning_rate"), "{err}");
    let mut two = cfg.clone();
    two.method = Method::MultiStyleforge;
    assert!(two
        .resolve()
        .unwrap_err()
        .to_string()
        .contains("2 [[data.concepts]]"));
    // The lr schedule.
    let mut c = cfg.clone();
    c.optim.lr_schedule = Some(styleforge::training::config::LrSchedule::Linear);
    c.optim.warmup_steps = Some(2);
    let r = c.resolve().unwrap();
    assert!((r.lr_plan().at(1) - 0.5e-4).abs() < 1e-12);
    assert!((r.lr_plan().at(2) - 1e-4).abs() < 1e-12);
    assert!(r.lr_plan().at(6).abs() < 1e-12);
}

#[test]
fn gradient_checkpointing_trains_to_the_same_weights() {
    let data = dataset();
    let mut runs = Vec::new();
    for (name, ckpt) in [("plain", false), ("ckpt", true)] {
        let out = data.path().join(name);
        let mut cfg = config(Method::Styleforge, data.path(), &out);
        cfg.optim.steps = Some(3);
        // Accumulation and clipping see the checkpointed gradients too.
        cfg.optim.gradient_accumulation = Some(2);
        cfg.optim.max_grad_norm = Some(0.5);
        cfg.training.gradient_checkpointing = Some(ckpt);
        let cfg = cfg.resolve().unwrap();
        assert!(cfg.train_text_encoder);
        let s = train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap();
        runs.push((
            weights(&s.model_dir.unwrap()),
            read_log(&out.join("train_log.jsonl")),
        ));
    }
    let (a, b) = (&runs[0].0, &runs[1].0);
    assert_eq!(a.len(), b.len());
    let mut worst = (0f32, String::new());
    for (name, t) in a {
        let scale = t
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let diff = (t - &b[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let rel = diff / scale.max(1e-20);
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
    }
    assert!(worst.0 <= 1e-5, "{}: {:e} relative", worst.1, worst.0);
    assert!(
        a.keys().any(|k| k.starts_with("te.")),
        "text encoder trained"
    );
    assert_eq!(runs[1].1.len(), 3);
    for (x, y) in runs[0].1.iter().zip(&runs[1].1) {
        assert!(
            (x.loss - y.loss).abs() <= 1e-6 * x.loss.abs(),
            "{x:?} vs {y:?}"
        );
        assert!(
            (x.grad_norm - y.grad_norm).abs() <= 1e-5 * x.grad_norm,
            "{x:?} vs {y:?}"
        );
    }
}

#[test]
fn an_8bit_checkpointed_run_resumes_bit_exactly() {
    let data = dataset();
    let run = |name: &str| {
        let mut cfg = config(Method::Styleforge, data.path(), &data.path().join(name));
        cfg.optim.optimizer = Some(styleforge::optim::OptimizerKind::AdamW8bit);
        cfg.training.gradient_checkpointing = Some(true);
        cfg.resolve().unwrap()
    };
    let straight = train(&run("straight"), &RunOptions::default(), &mut NoProgress).unwrap();
    let resumed = train_interrupted(&run("split"), 4);
    assert_eq!(resumed.steps, 6);
    let a = weights(&straight.model_dir.unwrap());
    let b = weights(&resumed.model_dir.unwrap());
    assert!(same_weights(&a, &b), "the weights differ after resume");
    // The checkpoint holds 8-bit states (u8 codes and per-block absmax).
    let ckpt = data
        .path()
        .join("split/checkpoints/step-0000003/optimizer.safetensors");
    let state = candle_core::safetensors::load(ckpt, &Device::Cpu).unwrap();
    assert!(state.values().any(|t| t.dtype() == DType::U8));
    assert!(state.keys().any(|k| k.ends_with(".absmax1")));
}

#[test]
fn ema_and_objective_options_resume_bit_exactly_and_the_model_is_the_average() {
    use styleforge::training::objective::TimestepSampling;
    let data = dataset();
    let run = |name: &str| {
        let mut cfg = config(Method::Styleforge, data.path(), &data.path().join(name));
        let t = &mut cfg.training;
        t.snr_gamma = Some(5.0);
        t.snr_weight_prior = Some(true);
        t.timestep_sampling = Some(TimestepSampling::LogitNormal);
        t.timestep_mean = Some(0.5);
        t.min_timestep = Some(10);
        t.noise_offset = Some(0.05);
        t.input_perturbation = Some(0.1);
        t.ema_decay = Some(0.9);
        cfg.output.save_raw = Some(true);
        cfg.data.caption_dropout = Some(0.3);
        cfg.data.shuffle_tags = Some(true);
        cfg.data.validation_dir = Some(data.path().join("style2"));
        cfg.output.validation_loss_every = Some(2);
        cfg.resolve().unwrap()
    };
    let straight = train(&run("straight"), &RunOptions::default(), &mut NoProgress).unwrap();
    let resumed = train_interrupted(&run("split"), 4);
    // The checkpoint of the first sitting held the EMA.
    assert!(data
        .path()
        .join("split/checkpoints/step-0000003/ema.safetensors")
        .is_file());
    let same = same_weights;
    let ema_a = weights(&straight.model_dir.unwrap());
    let ema_b = weights(&resumed.model_dir.unwrap());
    assert!(same(&ema_a, &ema_b), "the EMA model differs after resume");
    let raw_a = weights(&data.path().join("straight/model-raw"));
    let raw_b = weights(&data.path().join("split/model-raw"));
    assert!(same(&raw_a, &raw_b), "the raw model differs after resume");
    assert!(
        !same(&ema_a, &raw_a),
        "the EMA model equals the raw weights"
    );
    let log = read_log(&data.path().join("straight/train_log.jsonl"));
    assert_eq!(log.len(), 6);
    assert!(log.iter().all(|e| e.loss.is_finite() && e.loss_prior > 0.0));
    // The validation loss every 2 steps, the same in the resumed run (fixed noise and
    // timesteps, its own generator).
    let val = |log: &[styleforge::training::LogEntry]| -> Vec<(usize, f64)> {
        log.iter()
            .filter_map(|e| Some((e.step, e.val_loss?)))
            .collect()
    };
    let measured = val(&log);
    assert_eq!(measured.iter().map(|m| m.0).collect::<Vec<_>>(), [2, 4, 6]);
    assert!(measured.iter().all(|m| m.1.is_finite() && m.1 > 0.0));
    let resumed_log = read_log(&data.path().join("split/train_log.jsonl"));
    assert_eq!(measured, val(&resumed_log));

    // Options out of range are refused when the config is resolved.
    let mut bad = config(Method::Styleforge, data.path(), &data.path().join("bad"));
    bad.training.ema_decay = Some(1.5);
    assert!(bad.resolve().is_err());
    let mut bad = config(Method::Styleforge, data.path(), &data.path().join("bad"));
    bad.training.min_timestep = Some(500);
    bad.training.max_timestep = Some(400);
    let err = bad.resolve().unwrap_err().to_string();
    assert!(err.contains("min_timestep"), "{err}");
}

#[test]
fn a_held_out_split_gives_a_validation_loss_and_needs_the_images() {
    let data = dataset();
    let mut cfg = config(
        Method::Styleforge,
        data.path(),
        &data.path().join("split-val"),
    );
    cfg.data.validation_split = Some(1);
    cfg.output.validation_loss_every = Some(3);
    cfg.optim.steps = Some(3);
    let resolved = cfg.resolve().unwrap();
    assert_eq!(resolved.validation_loss_every, 3);
    train(&resolved, &RunOptions::default(), &mut NoProgress).unwrap();
    let log = read_log(&data.path().join("split-val/train_log.jsonl"));
    assert_eq!(log.len(), 3);
    let measured: Vec<usize> = log
        .iter()
        .filter(|e| e.val_loss.is_some_and(|v| v.is_finite() && v > 0.0))
        .map(|e| e.step)
        .collect();
    assert_eq!(measured, [3]);

    // Holding out 3 of the 4 StyleRef images leaves fewer than min_images (2) to train on.
    let mut greedy = config(Method::Styleforge, data.path(), &data.path().join("greedy"));
    greedy.data.validation_split = Some(3);
    let err = train(
        &greedy.resolve().unwrap(),
        &RunOptions::default(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("style"), "{err}");
}

#[test]
fn a_stop_request_checkpoints_its_step_and_the_resumed_run_ends_bit_exactly() {
    use styleforge::training::{StopReason, StopRecord, StopSignal};
    let data = dataset();
    let straight = data.path().join("straight");
    let cfg = config(Method::Styleforge, data.path(), &straight)
        .resolve()
        .unwrap();
    let whole = train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(whole.stopped, None);

    // Steps 6, a checkpoint every 3: the stop after step 2 falls between two.
    let split = data.path().join("split");
    let cfg = config(Method::Styleforge, data.path(), &split)
        .resolve()
        .unwrap();
    let stop = StopSignal::new();
    let opts = RunOptions {
        stop: stop.clone(),
        ..Default::default()
    };
    let s = train(&cfg, &opts, &mut StopAt { at: 2, stop }).unwrap();
    assert_eq!(s.stopped, Some(StopReason::Requested));
    assert_eq!(s.steps, 2);
    assert!(s.model_dir.is_none());
    assert!(split.join("checkpoints/step-0000002/state.json").is_file());
    let run = styleforge::RunDir::new(&split);
    assert_eq!(
        StopRecord::read(&run),
        Some(StopRecord {
            step: 2,
            reason: StopReason::Requested
        })
    );
    assert_eq!(read_log(&run.log()).len(), 2);

    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    let s = train(&cfg, &resume, &mut NoProgress).unwrap();
    assert_eq!((s.steps, s.stopped), (6, None));
    assert_eq!(StopRecord::read(&run), None);
    assert!(same_weights(
        &weights(&whole.model_dir.unwrap()),
        &weights(&s.model_dir.unwrap())
    ));
    let losses = |dir: &Path| -> Vec<u64> {
        read_log(&dir.join("train_log.jsonl"))
            .iter()
            .map(|e| e.loss.to_bits())
            .collect()
    };
    assert_eq!(losses(&straight), losses(&split));
}
