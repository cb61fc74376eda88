//! Training-path checks: gradients match PyTorch's, and every trainable parameter of the UNet
//! and the text encoder receives one (candle's fused softmax / layer norm silently drop them).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use common::{fixture, max_abs, max_abs_diff, reference};
use styleforge_models::folder::{LoadOptions, ModelFolder};

struct Run {
    loss: f32,
    grads: HashMap<String, Tensor>,
    unet_vars: HashMap<String, Var>,
    te_vars: HashMap<String, Var>,
}

/// One forward/backward of `mse(unet(sample, t, text_encoder(ids)), target)`.
fn run(model: &str) -> Run {
    run_with(model, false, DType::F32)
}

/// [`run`] in `dtype`, with gradient checkpointing of both models when `checkpointing`
/// (gradients are returned in f64 for other dtypes than f32).
fn run_with(model: &str, checkpointing: bool, dtype: DType) -> Run {
    let folder = ModelFolder::open(fixture(model)).unwrap();
    let unet_map = VarMap::new();
    let te_map = VarMap::new();
    let base = LoadOptions {
        dtype,
        ..LoadOptions::default()
    };
    let mut unet = folder.unet(&base.trainable_in(&unet_map)).unwrap().model;
    let mut te = folder
        .text_encoder(&base.trainable_in(&te_map))
        .unwrap()
        .model;
    unet.set_gradient_checkpointing(checkpointing);
    te.set_gradient_checkpointing(checkpointing);
    let r = reference(model);
    let ids = r["grad_input_ids"].to_dtype(DType::U32).unwrap();
    let context = te.forward(&ids).unwrap();
    let pred = unet
        .forward(
            &r["grad_sample"].to_dtype(dtype).unwrap(),
            &r["grad_timesteps"],
            &context,
        )
        .unwrap();
    let loss = (pred - &r["grad_target"].to_dtype(dtype).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let store = styleforge_models::nn::checkpoint::backward(&loss).unwrap();
    let unet_vars = unet_map.data().lock().unwrap().clone();
    let te_vars = te_map.data().lock().unwrap().clone();
    let mut grads = HashMap::new();
    for (name, var) in unet_vars.iter().chain(te_vars.iter()) {
        if let Some(g) = store.get(var.as_tensor()) {
            let g = if dtype == DType::F32 {
                g.clone()
            } else {
                g.to_dtype(DType::F64).unwrap()
            };
            grads.insert(name.clone(), g);
        }
    }
    Run {
        loss: loss
            .to_dtype(DType::F32)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        grads,
        unet_vars,
        te_vars,
    }
}

/// A key bias adds `q·b` to every score of a query alike, which softmax cancels: its
/// gradient is exactly zero in exact arithmetic (PyTorch's is ~1e-10 of rounding noise).
fn is_provably_zero(name: &str) -> bool {
    name.ends_with("self_attn.k_proj.bias")
}

fn check_gradients_match(model: &str) {
    let run = run(model);
    let r = reference(model);
    let ref_loss = r["grad_loss"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    assert!(
        ((run.loss - ref_loss) / ref_loss).abs() < 1e-5,
        "loss {} vs reference {ref_loss}",
        run.loss
    );
    let mut compared = 0;
    let mut failures = Vec::new();
    for (key, expected) in &r {
        let ours_name = if let Some(n) = key.strip_prefix("grad.unet.") {
            n.to_string()
        } else if let Some(n) = key.strip_prefix("grad.text_encoder.") {
            format!("text_model.{n}")
        } else {
            continue;
        };
        let ours = run
            .grads
            .get(&ours_name)
            .unwrap_or_else(|| panic!("no gradient for {ours_name}"));
        if is_provably_zero(&ours_name) {
            // Both sides are rounding noise around an exact zero.
            assert!(
                max_abs(ours) < 1e-6 && max_abs(expected) < 1e-6,
                "{ours_name}"
            );
            compared += 1;
            continue;
        }
        let rel = max_abs_diff(ours, expected) / max_abs(expected).max(1e-12);
        if rel > 1e-4 {
            failures.push(format!(
                "{ours_name}: relative error {rel:e} (reference abs-max {:e})",
                max_abs(expected)
            ));
        }
        compared += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared > 50, "only {compared} reference gradients found");
}

/// Checkpointed gradients equal the plain ones. The forward is bit-identical; in f64 the
/// gradients agree to 1e-12 relative, so what remains in f32 (≤ 1e-5 of a gradient's
/// largest value, relative L2 ≤ 5e-6) is the order in which f32 sums meet: a segment's
/// input collects its inner contributions before the outer ones.
fn check_checkpointing_changes_no_gradient(model: &str, dtype: DType, l2_tol: f64, max_tol: f64) {
    let plain = run_with(model, false, dtype);
    let ckpt = run_with(model, true, dtype);
    assert_eq!(plain.loss, ckpt.loss, "the forward must not change");
    assert_eq!(plain.grads.len(), ckpt.grads.len());
    let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let l2 = |t: &Tensor| -> f64 {
        f64s(t)
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            .sqrt()
    };
    let amax = |t: &Tensor| -> f64 {
        f64s(t)
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let (mut worst_l2, mut worst_max) = ((0.0f64, String::new()), (0.0f64, String::new()));
    for (name, g) in &plain.grads {
        let c = ckpt
            .grads
            .get(name)
            .unwrap_or_else(|| panic!("{name}: no gradient with checkpointing"));
        if is_provably_zero(name) {
            assert!(amax(c) < 1e-6, "{name}");
            continue;
        }
        let diff = (f64s(g) - f64s(c)).unwrap();
        let rel_l2 = l2(&diff) / l2(g).max(1e-30);
        let rel_max = amax(&diff) / amax(g).max(1e-30);
        if rel_l2 > worst_l2.0 {
            worst_l2 = (rel_l2, name.clone());
        }
        if rel_max > worst_max.0 {
            worst_max = (rel_max, name.clone());
        }
    }
    eprintln!("{model} {dtype:?}: worst relative L2 {worst_l2:?}, worst max-abs {worst_max:?}");
    assert!(
        worst_l2.0 <= l2_tol,
        "{}: relative L2 difference {:e}",
        worst_l2.1,
        worst_l2.0
    );
    assert!(
        worst_max.0 <= max_tol,
        "{}: max-abs difference {:e}",
        worst_max.1,
        worst_max.0
    );
    assert!(
        plain.grads.len() > 50,
        "only {} gradients",
        plain.grads.len()
    );
}

#[test]
fn gradient_checkpointing_changes_no_gradient_sd1() {
    check_checkpointing_changes_no_gradient("tiny-sd1", DType::F32, 5e-6, 1e-5);
}

#[test]
fn gradient_checkpointing_changes_no_gradient_sd2() {
    check_checkpointing_changes_no_gradient("tiny-sd2", DType::F32, 5e-6, 1e-5);
}

#[test]
fn gradient_checkpointing_changes_no_gradient_in_f64() {
    for model in ["tiny-sd1", "tiny-sd2"] {
        check_checkpointing_changes_no_gradient(model, DType::F64, 1e-12, 1e-12);
    }
}

#[test]
fn gradients_sd1_match_pytorch() {
    check_gradients_match("tiny-sd1");
}

#[test]
fn gradients_sd2_match_pytorch() {
    check_gradients_match("tiny-sd2");
}

fn check_every_parameter_gets_a_gradient(model: &str) {
    let run = run(model);
    let mut missing = Vec::new();
    for (name, var) in run.unet_vars.iter().chain(run.te_vars.iter()) {
        let Some(g) = run.grads.get(name) else {
            missing.push(format!("{name}: none"));
            continue;
        };
        let values = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        if is_provably_zero(name) {
            assert!(values.iter().all(|v| v.abs() < 1e-6), "{name} should be ~0");
            continue;
        }
        if values.iter().any(|v| !v.is_finite()) {
            missing.push(format!("{name}: not finite"));
        } else if values.iter().all(|v| *v == 0.0) {
            missing.push(format!("{name}: all zero"));
        }
        assert_eq!(g.dims(), var.dims(), "{name}: gradient shape");
    }
    assert!(
        missing.is_empty(),
        "{} of {} parameters without a usable gradient:\n{}",
        missing.len(),
        run.unet_vars.len() + run.te_vars.len(),
        missing.join("\n")
    );
    assert!(run.unet_vars.len() > 100 && run.te_vars.len() > 30);
}

#[test]
fn every_unet_and_text_encoder_parameter_gets_a_gradient_sd1() {
    check_every_parameter_gets_a_gradient("tiny-sd1");
}

#[test]
fn every_unet_and_text_encoder_parameter_gets_a_gradient_sd2() {
    check_every_parameter_gets_a_gradient("tiny-sd2");
}
