//! One and three steps of DreamBooth-with-prior-preservation training (text encoder trained
//! too, AdamW, gradient clipping) against PyTorch + diffusers
//! (`tools/fixtures/make_training_fixtures.py`): losses, gradient norms and the updated
//! weights. On `STYLEFORGE_TEST_DEVICE` (default the CPU; see `styleforge_models::testing`).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use styleforge::models::folder::{LoadOptions, ModelFolder};
use styleforge::models::testing;
use styleforge::optim::{AdamW, AdamWConfig};
use styleforge::schedulers::{DdpmScheduler, SchedulerConfig};
use styleforge::training::step::{
    clip_grad_norm, compute_loss, NoiseSchedule, StepBatch, StepModels,
};

fn fixtures() -> PathBuf {
    testing::fixtures_dir()
}

fn scalar(t: &Tensor) -> f64 {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

struct Setup {
    unet_vars: HashMap<String, Var>,
    te_vars: HashMap<String, Var>,
    unet: styleforge::models::unet::UNet2DConditionModel,
    te: styleforge::models::clip_text::ClipTextModel,
    schedule: NoiseSchedule,
    reference: HashMap<String, Tensor>,
}

fn setup(model: &str, train_te: bool) -> Setup {
    let dir = fixtures().join(model);
    let folder = ModelFolder::open(&dir).unwrap();
    let unet_map = VarMap::new();
    let te_map = VarMap::new();
    let base = LoadOptions {
        device: testing::device(),
        ..Default::default()
    };
    let unet = folder.unet(&base.trainable_in(&unet_map)).unwrap().model;
    let te_opts = if train_te {
        base.trainable_in(&te_map)
    } else {
        base
    };
    let te = folder.text_encoder(&te_opts).unwrap().model;
    let config = SchedulerConfig::from_model_dir(&dir).unwrap();
    let ddpm = DdpmScheduler::from_config(&config).unwrap();
    let prediction_type = ddpm.config().prediction_type;
    let reference = candle_core::safetensors::load(
        fixtures()
            .join("training")
            .join(format!("{model}.safetensors")),
        &testing::device(),
    )
    .unwrap();
    let unet_vars = unet_map.data().lock().unwrap().clone();
    let te_vars = te_map.data().lock().unwrap().clone();
    Setup {
        unet_vars,
        te_vars,
        unet,
        te,
        schedule: NoiseSchedule {
            ddpm,
            prediction_type,
        },
        reference,
    }
}

fn batch(r: &HashMap<String, Tensor>, step: usize) -> StepBatch {
    let timesteps: Vec<f64> = r[&format!("step{step}.timesteps")]
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    StepBatch {
        latents: r[&format!("step{step}.latents")].clone(),
        noise: r[&format!("step{step}.noise")].clone(),
        timesteps,
        input_ids: r["input_ids"].to_dtype(DType::U32).unwrap(),
        instance_rows: 1,
        input_noise: None,
        instance_weights: None,
        prior_weights: None,
    }
}

/// Compares recorded weights: within 1e-5 relative (2-norm of the difference over the
/// tensor's; elementwise within 2e-5 of its largest value), and the
/// update itself (weights move ~1e-4 a step) within 5% plus f32 rounding. Adam's update is
/// `lr·m/(sqrt(v)+eps)`: for gradients near `eps` it depends on digits that are rounding
/// noise in both frameworks, which moves single elements by ~1% of `lr`.
fn check_weights(prefix: &str, s: &Setup, initial: &HashMap<String, Tensor>) -> usize {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (key, expected) in &s.reference {
        let (vars, name) = if let Some(n) = key.strip_prefix(&format!("{prefix}.unet.")) {
            (&s.unet_vars, n.to_string())
        } else if let Some(n) = key.strip_prefix(&format!("{prefix}.text_encoder.")) {
            (&s.te_vars, format!("text_model.{n}"))
        } else {
            continue;
        };
        let ours = vars[&name].as_tensor();
        let diff = max_abs(&(ours - expected).unwrap());
        let scale = max_abs(expected);
        let update = max_abs(&(expected - &initial[&name]).unwrap());
        let tol = 5e-2 * update + 4.0 * f32::EPSILON * scale;
        let norm = |t: &Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .sqrt()
        };
        let rel = norm(&(ours - expected).unwrap()) / norm(expected).max(1e-12);
        if diff > tol || rel > 1e-5 || diff > 2e-5 * scale.max(1e-3) {
            failures.push(format!(
                "{name}: diff {diff:e}, update {update:e}, scale {scale:e}"
            ));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{prefix}:\n{}", failures.join("\n"));
    checked
}

fn check_three_steps(model: &str) {
    let mut s = setup(model, true);
    let initial: HashMap<String, Tensor> = s
        .unet_vars
        .iter()
        .chain(s.te_vars.iter())
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    let all: Vec<(String, Var)> = s
        .unet_vars
        .iter()
        .chain(s.te_vars.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vars: Vec<Var> = all.iter().map(|(_, v)| v.clone()).collect();
    let config = AdamWConfig {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-2,
        ..Default::default()
    };
    let mut opt = AdamW::new(all, config).unwrap();
    for step in 1..=3 {
        let models = StepModels {
            unet: &s.unet,
            text_encoder: &s.te,
            train_text_encoder: true,
        };
        let b = batch(&s.reference, step);
        let loss = compute_loss(&models, &s.schedule, &b, 1.0).unwrap();
        let r = &s.reference;
        for (ours, key) in [
            (loss.total.to_scalar::<f32>().unwrap() as f64, "loss"),
            (loss.instance, "loss_instance"),
            (loss.prior, "loss_prior"),
        ] {
            let want = scalar(&r[&format!("step{step}.{key}")]);
            assert!(
                ((ours - want) / want).abs() < 1e-5,
                "{model} step {step} {key}: {ours} vs {want}"
            );
        }
        let mut grads = loss.total.backward().unwrap();
        let norm = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
        let want = scalar(&r[&format!("step{step}.grad_norm")]);
        assert!(
            ((norm - want) / want).abs() < 1e-5,
            "{model} step {step} grad norm {norm} vs {want}"
        );
        opt.step(&grads).unwrap();
        if step == 1 || step == 3 {
            let checked = check_weights(&format!("step{step}"), &s, &initial);
            assert!(checked > 50, "only {checked} weights compared");
        }
    }
    s.reference.clear();
}

#[test]
fn three_steps_with_text_encoder_match_pytorch_sd1_epsilon() {
    check_three_steps("tiny-sd1");
}

#[test]
fn three_steps_with_text_encoder_match_pytorch_sd2_v_prediction() {
    check_three_steps("tiny-sd2");
}

#[test]
fn one_step_with_frozen_text_encoder_matches_pytorch() {
    let s = setup("tiny-sd1", false);
    assert!(s.te_vars.is_empty());
    let initial: HashMap<String, Tensor> = s
        .unet_vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    let all: Vec<(String, Var)> = s
        .unet_vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vars: Vec<Var> = all.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = AdamW::new(
        all,
        AdamWConfig {
            lr: 1e-4,
            ..Default::default()
        },
    )
    .unwrap();
    let models = StepModels {
        unet: &s.unet,
        text_encoder: &s.te,
        train_text_encoder: false,
    };
    let loss = compute_loss(&models, &s.schedule, &batch(&s.reference, 1), 1.0).unwrap();
    let want = scalar(&s.reference["frozen_te.step1.loss"]);
    let ours = loss.total.to_scalar::<f32>().unwrap() as f64;
    assert!(((ours - want) / want).abs() < 1e-5, "{ours} vs {want}");
    let mut grads = loss.total.backward().unwrap();
    let norm = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
    let want = scalar(&s.reference["frozen_te.step1.grad_norm"]);
    assert!(
        ((norm - want) / want).abs() < 1e-5,
        "grad norm {norm} vs {want}"
    );
    opt.step(&grads).unwrap();
    let checked = check_weights("frozen_te.step1", &s, &initial);
    assert!(checked > 50, "only {checked} weights compared");
}
