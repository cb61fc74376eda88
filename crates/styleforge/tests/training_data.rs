//! The data options of fine-tuning end to end on the tiny SD1 fixture: aspect-ratio
//! bucketing, loss masks and a custom caption extension on non-square images of different
//! aspects, resumed bit-exactly.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::{GrayImage, Luma, Rgb, RgbImage};
use styleforge::models::folder::{LoadOptions, ModelFolder};
use styleforge::progress::NoProgress;
use styleforge::schedulers::{DdpmScheduler, SchedulerConfig};
use styleforge::training::config::{ConceptConfig, TrainConfig};
use styleforge::training::step::{
    compute_grouped_loss, compute_loss, compute_masked_loss, NoiseSchedule, StepBatch, StepModels,
};
use styleforge::training::{read_log, train, LogEntry, RunOptions};

#[path = "support/training.rs"]
mod training_support;
use training_support::{base, same_weights, train_interrupted, weights};

/// A striped picture of `w`×`h`.
fn picture(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let band = ((x + 2 * y + seed) / 3) % 2;
        let k = (seed * 53 % 256) as u8;
        if band == 0 {
            Rgb([k, 255 - k, 40])
        } else {
            Rgb([20, k / 2, 200])
        }
    })
}

/// StyleRef images of three aspects at 32 px (buckets 32x16, 16x32, 32x32 with the tiny
/// VAE's 16 px step), each with a mask (the left part white) and a `.caption` caption; a
/// `.txt` file that must not be read; Aux images wide and square, so that steps pair equal and different sizes.
fn dataset() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let style = tmp.path().join("style");
    let aux = tmp.path().join("aux");
    std::fs::create_dir_all(&style).unwrap();
    std::fs::create_dir_all(&aux).unwrap();
    for (i, (w, h)) in [(40, 20), (20, 40), (36, 36), (50, 22)]
        .into_iter()
        .enumerate()
    {
        picture(w, h, i as u32 + 1)
            .save(style.join(format!("s{i}.png")))
            .unwrap();
        let mask = GrayImage::from_fn(w, h, |x, _| Luma([if x < w * 2 / 3 { 255 } else { 0 }]));
        mask.save(style.join(format!("s{i}.mask.png"))).unwrap();
        std::fs::write(
            style.join(format!("s{i}.caption")),
            format!("stripes number {i}"),
        )
        .unwrap();
    }
    std::fs::write(style.join("s0.txt"), "not this caption").unwrap();
    for (i, (w, h)) in [(40, 20), (44, 22), (36, 36)].into_iter().enumerate() {
        picture(w, h, 9 + i as u32)
            .save(aux.join(format!("a{i}.png")))
            .unwrap();
    }
    tmp
}

fn config(data: &Path, out: &Path) -> TrainConfig {
    let text = format!(
        r#"
method = "styleforge"
seed = 5
[model]
base = {:?}
[data]
resolution = 32
crop = "random"
flip = true
caption_extension = ".caption"
masked_loss = true
bucketing = true
[training]
num_aux_images = 3
aux_steps = 2
snr_gamma = 5.0
snr_weight_prior = true
noise_offset = 0.05
[optim]
steps = 6
lr = 1e-4
[output]
dir = {:?}
checkpoint_every = 3
validate_every = 0
validation_steps = 2
validation_prompts = ["a house, {{token}} style"]
"#,
        base().display().to_string(),
        out.display().to_string()
    );
    let mut cfg = TrainConfig::from_toml(&text, Path::new("test.toml")).unwrap();
    cfg.data.concepts = vec![ConceptConfig {
        style_dir: data.join("style"),
        aux_dir: Some(data.join("aux")),
        token: None,
    }];
    cfg
}

/// Trains the bucketed, masked config with `batch_size` pairs a step into `<data>/straight`,
/// and again stopped after 4 of its 6 steps and resumed into `<data>/split`; checks that
/// both end with the same weights and losses, and returns the straight run's log.
fn straight_and_resumed(data: &Path, batch_size: Option<usize>) -> Vec<LogEntry> {
    let run = |name: &str, stop: Option<usize>| {
        let out = data.join(name);
        let mut cfg = config(data, &out);
        cfg.optim.batch_size = batch_size;
        let cfg = cfg.resolve().unwrap();
        assert_eq!(cfg.batch_size, batch_size.unwrap_or(1));
        assert_eq!(cfg.data_options.caption_extension, ".caption");
        let s = match stop {
            Some(k) => train_interrupted(&cfg, k),
            None => train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap(),
        };
        assert_eq!(s.steps, 6);
        (
            weights(&s.model_dir.unwrap()),
            read_log(&out.join("train_log.jsonl")),
        )
    };
    let (wa, log_a) = run("straight", None);
    let (wb, log_b) = run("split", Some(4));
    assert!(same_weights(&wa, &wb), "the weights differ after resume");
    assert_eq!(log_a.len(), 6);
    assert!(log_a
        .iter()
        .all(|e| e.loss.is_finite() && e.loss_prior > 0.0));
    assert_eq!(
        log_a.iter().map(|e| e.loss).collect::<Vec<_>>(),
        log_b.iter().map(|e| e.loss).collect::<Vec<_>>()
    );
    log_a
}

#[test]
fn bucketed_masked_run_with_a_caption_extension_resumes_bit_exactly() {
    let data = dataset();
    straight_and_resumed(data.path(), None);
    let straight = data.path().join("straight");

    // The StyleRef latents are cached per bucket with their masks: three sizes.
    let caches: Vec<_> = std::fs::read_dir(straight.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let style_cache = caches
        .iter()
        .map(|p| candle_core::safetensors::load(p, &Device::Cpu).unwrap())
        .find(|t| t.contains_key("mask.0"))
        .expect("a bucketed, masked cache");
    let mut sizes: Vec<Vec<usize>> = (0..3)
        .map(|g| style_cache[&format!("mean.{g}")].dims()[3..].to_vec())
        .collect();
    sizes.sort();
    assert_eq!(sizes, [vec![8, 16], vec![16, 8], vec![16, 16]]);
    assert!(!style_cache.contains_key("mask.3"));
}

#[test]
fn batches_of_pairs_over_buckets_resume_bit_exactly() {
    // Three pairs a step over three bucket sizes: the rows go as one batch per size, each
    // StyleRef row with its mask and min-SNR weight.
    let data = dataset();
    let log_a = straight_and_resumed(data.path(), Some(3));
    // not the one-pair run's losses
    let one = data.path().join("one");
    let cfg = config(data.path(), &one).resolve().unwrap();
    train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap();
    let log_one = read_log(&one.join("train_log.jsonl"));
    assert_ne!(log_one[0].loss, log_a[0].loss);
    let mut bad = config(data.path(), &one);
    bad.optim.batch_size = Some(0);
    assert!(bad
        .resolve()
        .unwrap_err()
        .to_string()
        .contains("batch_size"));
}

#[test]
fn a_missing_mask_is_named_when_masked_loss_is_on() {
    let data = dataset();
    std::fs::remove_file(data.path().join("style/s2.mask.png")).unwrap();
    let out = data.path().join("run");
    let err = train(
        &config(data.path(), &out).resolve().unwrap(),
        &RunOptions::default(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("s2.png") && err.contains("s2.mask.png"),
        "{err}"
    );
    assert!(err.contains("masked_loss"), "{err}");
}

#[test]
fn data_options_are_checked_when_resolved() {
    let data = dataset();
    let out = data.path().join("o");
    let r = config(data.path(), &out).resolve().unwrap();
    assert!(r.data_options.bucketing && r.data_options.masked_loss);
    assert_eq!(r.data_options.bucket_step, None);
    assert_eq!(r.data_options.max_aspect, 2.0);
    // defaults
    let mut d = config(data.path(), &out);
    d.data.caption_extension = None;
    d.data.bucketing = None;
    d.data.masked_loss = None;
    let r = d.resolve().unwrap();
    assert_eq!(r.data_options, Default::default());
    assert_eq!(r.data_options.caption_extension, ".txt");
    for (ext, ok) in [
        ("txt", false),
        (".png", false),
        (".", false),
        (".tags", true),
    ] {
        let mut c = config(data.path(), &out);
        c.data.caption_extension = Some(ext.to_string());
        assert_eq!(c.resolve().is_ok(), ok, "{ext}");
    }
    let mut c = config(data.path(), &out);
    c.data.max_aspect = Some(0.5);
    assert!(c.resolve().unwrap_err().to_string().contains("max_aspect"));
    let mut c = config(data.path(), &out);
    c.data.bucket_step = Some(0);
    assert!(c.resolve().is_err());
}

#[test]
fn captions_are_read_with_the_configured_extension() {
    let data = dataset();
    // invalid UTF-8 under the configured extension is reported by name, so it is read
    std::fs::write(data.path().join("style/s1.caption"), [0xff, 0xfe, 0x41]).unwrap();
    let out = data.path().join("run");
    let err = train(
        &config(data.path(), &out).resolve().unwrap(),
        &RunOptions::default(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("s1.caption") && err.contains("UTF-8"), "{err}");
}

#[test]
fn batches_by_size_give_the_loss_of_one_batch_and_a_white_mask_changes_nothing() {
    let folder = ModelFolder::open(base()).unwrap();
    let unet = folder.unet(&LoadOptions::default()).unwrap().model;
    let te = folder.text_encoder(&LoadOptions::default()).unwrap().model;
    let tok = folder.tokenizer().unwrap();
    let ddpm =
        DdpmScheduler::from_config(&SchedulerConfig::from_model_dir(base()).unwrap()).unwrap();
    let schedule = NoiseSchedule {
        prediction_type: ddpm.config().prediction_type,
        ddpm,
    };
    let models = StepModels {
        unet: &unet,
        text_encoder: &te,
        train_text_encoder: true,
    };
    let dev = Device::Cpu;
    let ids = |p: &str| tok.encode_padded(p).ids;
    // two StyleRef rows, then two Aux rows
    let latents = Tensor::randn(0f32, 1f32, (4, 4, 8, 8), &dev).unwrap();
    let noise = Tensor::randn(0f32, 1f32, (4, 4, 8, 8), &dev).unwrap();
    let prompts = ["ohwx style", "a cat, ohwx style", "style", "a car, style"];
    let all_ids: Vec<u32> = prompts.iter().flat_map(|p| ids(p)).collect();
    let timesteps = vec![200.0, 450.0, 700.0, 90.0];
    let joint = StepBatch {
        latents: latents.clone(),
        noise: noise.clone(),
        input_noise: None,
        timesteps: timesteps.clone(),
        input_ids: Tensor::from_vec(all_ids, (4, 77), &dev).unwrap(),
        instance_rows: 2,
        instance_weights: Some(vec![0.5, 1.5]),
        prior_weights: Some(vec![2.0, 0.25]),
    };
    let rows = |from: usize, n: usize, weights: Vec<f64>| StepBatch {
        latents: latents.narrow(0, from, n).unwrap(),
        noise: noise.narrow(0, from, n).unwrap(),
        input_noise: None,
        timesteps: timesteps[from..from + n].to_vec(),
        input_ids: Tensor::from_vec(
            prompts[from..from + n]
                .iter()
                .flat_map(|p| ids(p))
                .collect(),
            (n, 77),
            &dev,
        )
        .unwrap(),
        instance_rows: n,
        instance_weights: Some(weights),
        prior_weights: None,
    };
    // each StyleRef row alone (as buckets of two sizes would give), the Aux rows together
    let (s0, s1) = (rows(0, 1, vec![0.5]), rows(1, 1, vec![1.5]));
    let aux = rows(2, 2, vec![2.0, 0.25]);
    let a = compute_loss(&models, &schedule, &joint, 0.7).unwrap();
    let b = compute_grouped_loss(
        &models,
        &schedule,
        &[(&s0, None), (&s1, None)],
        &[&aux],
        0.7,
    )
    .unwrap();
    let total = |l: &styleforge::training::step::LossParts| l.total.to_scalar::<f32>().unwrap();
    assert!(a.instance > 0.0 && a.prior > 0.0);
    assert!(
        (a.instance - b.instance).abs() <= 1e-6 * a.instance,
        "{a:?} {b:?}"
    );
    assert!((a.prior - b.prior).abs() <= 1e-6 * a.prior, "{a:?} {b:?}");
    assert!((total(&a) - total(&b)).abs() <= 1e-6 * total(&a));
    // a white mask is the unmasked loss; a half-black one is not
    let white = Tensor::ones((2, 1, 8, 8), candle_core::DType::F32, &dev).unwrap();
    let m = compute_masked_loss(&models, &schedule, &joint, 0.7, Some(&white)).unwrap();
    assert!((m.instance - a.instance).abs() <= 1e-6 * a.instance);
    assert_eq!(m.prior, a.prior);
    let half = Tensor::cat(
        &[
            Tensor::ones((2, 1, 8, 4), candle_core::DType::F32, &dev).unwrap(),
            Tensor::zeros((2, 1, 8, 4), candle_core::DType::F32, &dev).unwrap(),
        ],
        3,
    )
    .unwrap();
    let h = compute_masked_loss(&models, &schedule, &joint, 0.7, Some(&half)).unwrap();
    assert!((h.instance - a.instance).abs() > 1e-4 * a.instance);
    assert_eq!(h.prior, a.prior);
}
