//! The training-objective options against diffusers (`fixtures/objective/objective.json`,
//! made by `tools/fixtures/make_objective_fixtures.py`): the SNR of `compute_snr`, the
//! min-SNR-γ weights of `train_text_to_image.py` for ε- and v-prediction, and `EMAModel`'s
//! decay schedule and averages with and without warm-up.

use std::path::PathBuf;

use candle_core::{Device, Tensor, Var};
use serde_json::Value;
use styleforge::schedulers::config::PredictionType;
use styleforge::schedulers::{DdpmScheduler, SchedulerConfig};
use styleforge::training::ema::{Ema, EmaConfig};
use styleforge::training::objective::{min_snr_weight, snr};

fn fixture() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/objective/objective.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn snr_and_min_snr_weights_match_diffusers() {
    let f = fixture();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-sd1");
    let ddpm = DdpmScheduler::from_config(&SchedulerConfig::from_model_dir(&dir).unwrap()).unwrap();
    let ac = ddpm.alphas_cumprod();
    let timesteps = floats(&f["timesteps"]);
    let gamma = f["gamma"].as_f64().unwrap();
    let expected = [
        (PredictionType::Epsilon, floats(&f["min_snr_epsilon"])),
        (
            PredictionType::VPrediction,
            floats(&f["min_snr_v_prediction"]),
        ),
    ];
    let mut checked = 0;
    for (i, (&t, &want)) in timesteps.iter().zip(&floats(&f["snr"])).enumerate() {
        // diffusers computes in float32: 1e-5 relative.
        let got = snr(ac, t);
        assert!(close(got, want, 1e-5), "snr at t={t}: {got} vs {want}");
        for (pred, weights) in &expected {
            let w = min_snr_weight(got, gamma, *pred);
            assert!(
                close(w, weights[i], 1e-5),
                "{pred:?} at t={t}: {w} vs {}",
                weights[i]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * timesteps.len());
    assert!(checked >= 20);
}

#[test]
fn ema_matches_diffusers_ema_model() {
    let f = fixture();
    let cases = f["ema"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let config = EmaConfig {
            decay: case["decay"].as_f64().unwrap(),
            warmup: case["warmup"].as_bool().unwrap(),
            power: case["power"].as_f64().unwrap(),
            update_after_step: case["update_after_step"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let values: Vec<Vec<f64>> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let shadows: Vec<Vec<f64>> = case["shadows"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let decays = floats(&case["decays"]);
        let as_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let var = Var::from_vec(as_f32(&values[0]), values[0].len(), &Device::Cpu).unwrap();
        let mut ema = Ema::new(config, &[("p".to_string(), var.clone())]).unwrap();
        assert_eq!(shadows.len(), 8);
        for (step, shadow) in shadows.iter().enumerate() {
            assert!(
                close(config.decay_at(step + 1), decays[step], 1e-12),
                "decay of step {}",
                step + 1
            );
            let next =
                Tensor::from_vec(as_f32(&values[step + 1]), values[0].len(), &Device::Cpu).unwrap();
            var.set(&next).unwrap();
            ema.update().unwrap();
            let got = ema.state().unwrap()["p"].to_vec1::<f32>().unwrap();
            for (g, w) in got.iter().zip(shadow) {
                assert!(
                    (*g as f64 - w).abs() < 1e-5,
                    "step {}: {g} vs {w} ({config:?})",
                    step + 1
                );
            }
        }
    }
}
