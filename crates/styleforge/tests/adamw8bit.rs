//! `optimizer = "adamw8bit"` against bitsandbytes' `AdamW8bit` (0.50.2, CPU), step by step
//! (`tools/fixtures/make_adamw8bit_fixtures.py` → `fixtures/optim/adamw8bit.*`): the
//! quantisation maps, the 8-bit codes and block absmax of both moments, the 32-bit moments of
//! the small tensor and the parameters after each of five steps; and resuming from a saved
//! state.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use styleforge::optim::adamw8bit::dynamic_map;
use styleforge::optim::{AdamW, AdamWConfig, OptimizerKind};

/// Largest relative error allowed on floats (absmax, parameters, 32-bit moments).
const REL_TOL: f64 = 1e-5;
/// Codes one step off bitsandbytes' allowed in at most this fraction of elements.
const ONE_CODE_FRACTION: f64 = 1e-3;

struct Fixture {
    tensors: HashMap<String, Tensor>,
    index: serde_json::Value,
}

impl Fixture {
    fn load() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/optim");
        let tensors =
            candle_core::safetensors::load(dir.join("adamw8bit.safetensors"), &Device::Cpu)
                .expect("fixtures/optim/adamw8bit.safetensors");
        let index = std::fs::read_to_string(dir.join("adamw8bit.json")).expect("adamw8bit.json");
        let index = serde_json::from_str(&index).expect("adamw8bit.json is JSON");
        Self { tensors, index }
    }

    fn get(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no `{key}`"))
    }

    fn f32s(&self, key: &str) -> Vec<f32> {
        let t = self.get(key).flatten_all().unwrap();
        t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()
    }

    fn u8s(&self, key: &str) -> Vec<u8> {
        self.get(key)
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap()
    }

    fn setting(&self, key: &str) -> f64 {
        self.index["settings"][key].as_f64().unwrap()
    }

    fn steps(&self) -> usize {
        self.index["steps"].as_u64().unwrap() as usize
    }

    /// Parameter names (sorted) with their kind (`8bit` / `32bit`).
    fn params(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self.index["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["kind"].as_str().unwrap().to_string()))
            .collect();
        out.sort();
        out
    }

    fn config(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.setting("lr"),
            beta1: self.setting("beta1"),
            beta2: self.setting("beta2"),
            eps: self.setting("eps"),
            weight_decay: self.setting("weight_decay"),
            optimizer: OptimizerKind::AdamW8bit,
            min_8bit_size: self.setting("min_8bit_size") as usize,
        }
    }

    /// Fresh variables holding the initial parameters.
    fn vars(&self) -> Vec<(String, Var)> {
        self.params()
            .into_iter()
            .map(|(name, _)| {
                let init = self.get(&format!("init.{name}"));
                (name, Var::from_tensor(init).unwrap())
            })
            .collect()
    }

    /// The gradients bitsandbytes was handed at `step` (1-based).
    fn grads(&self, step: usize, vars: &[(String, Var)]) -> GradStore {
        let mut grads = GradStore::default();
        for (name, var) in vars {
            let g = self.get(&format!("step{step}.{name}.grad"));
            grads.insert(var.as_tensor(), g.to_dtype(DType::F32).unwrap());
        }
        grads
    }
}

fn values_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn values_u8(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

/// Largest `|ours - theirs| / max(|theirs|, floor)`.
fn max_rel(ours: &[f32], theirs: &[f32], floor: f64) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    ours.iter()
        .zip(theirs)
        .map(|(&a, &b)| (a as f64 - b as f64).abs() / (b as f64).abs().max(floor))
        .fold(0.0, f64::max)
}

#[test]
fn maps_equal_bitsandbytes_qmaps() {
    let fx = Fixture::load();
    for (signed, key) in [(true, "qmap1"), (false, "qmap2")] {
        let theirs = fx.f32s(key);
        let ours = dynamic_map(signed);
        assert_eq!(theirs.len(), 256);
        let differing: Vec<usize> = (0..256)
            .filter(|&i| ours[i].to_bits() != theirs[i].to_bits())
            .collect();
        assert!(
            differing.is_empty(),
            "{key}: {} entries differ, first {:?}",
            differing.len(),
            differing
                .iter()
                .take(5)
                .map(|&i| (i, ours[i], theirs[i]))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn every_step_follows_bitsandbytes() {
    let fx = Fixture::load();
    let vars = fx.vars();
    let mut opt = AdamW::new(vars.clone(), fx.config()).unwrap();
    let (mut codes, mut one_off, mut floats) = (0usize, 0usize, 0usize);
    let (mut worst_absmax, mut worst_param, mut worst_moment) = (0.0f64, 0.0f64, 0.0f64);
    let mut eight_bit_params = 0;
    for step in 1..=fx.steps() {
        opt.step(&fx.grads(step, &vars)).unwrap();
        let state = opt.state().unwrap();
        for (name, kind) in fx.params() {
            let at = |key: &str| format!("step{step}.{name}.{key}");
            let var = &vars.iter().find(|(n, _)| *n == name).unwrap().1;
            let rel = max_rel(&values_f32(var.as_tensor()), &fx.f32s(&at("param")), 1e-3);
            assert!(
                rel <= REL_TOL,
                "step {step} `{name}`: parameter off by {rel:e}"
            );
            worst_param = worst_param.max(rel);
            floats += var.elem_count();
            if kind == "8bit" {
                eight_bit_params += 1;
                for key in ["state1", "state2"] {
                    let ours = values_u8(&state[&format!("{name}.{key}")]);
                    let theirs = fx.u8s(&at(key));
                    assert_eq!(ours.len(), theirs.len(), "{name}.{key}");
                    for (i, (&a, &b)) in ours.iter().zip(&theirs).enumerate() {
                        let d = (a as i32 - b as i32).abs();
                        assert!(
                            d <= 1,
                            "step {step} `{name}.{key}`[{i}]: code {a}, bitsandbytes {b}"
                        );
                        one_off += d as usize;
                    }
                    codes += ours.len();
                }
                for key in ["absmax1", "absmax2"] {
                    let ours = values_f32(&state[&format!("{name}.{key}")]);
                    let rel = max_rel(&ours, &fx.f32s(&at(key)), 1e-30);
                    assert!(rel <= REL_TOL, "step {step} `{name}.{key}`: off by {rel:e}");
                    worst_absmax = worst_absmax.max(rel);
                    floats += ours.len();
                }
                assert!(!state.contains_key(&format!("{name}.exp_avg")));
            } else {
                for key in ["exp_avg", "exp_avg_sq"] {
                    let ours = values_f32(&state[&format!("{name}.{key}")]);
                    let rel = max_rel(&ours, &fx.f32s(&at(key)), 1e-30);
                    assert!(rel <= REL_TOL, "step {step} `{name}.{key}`: off by {rel:e}");
                    worst_moment = worst_moment.max(rel);
                    floats += ours.len();
                }
                assert!(!state.contains_key(&format!("{name}.state1")));
            }
        }
    }
    println!(
        "{codes} codes compared, {one_off} one code off bitsandbytes; {floats} floats, \
         largest relative error: parameters {worst_param:e}, absmax {worst_absmax:e}, \
         32-bit moments {worst_moment:e}"
    );
    assert!(codes > 0 && floats > 0 && eight_bit_params > 0);
    assert!(
        one_off as f64 <= ONE_CODE_FRACTION * codes as f64,
        "{one_off} of {codes} codes one off bitsandbytes"
    );
}

/// All of an optimizer's state and the parameters, as bits.
fn snapshot(opt: &AdamW, vars: &[(String, Var)]) -> Vec<(String, Vec<u32>)> {
    let mut out: Vec<(String, Vec<u32>)> = opt
        .state()
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let bits = match t.dtype() {
                DType::U8 => values_u8(&t).into_iter().map(u32::from).collect(),
                DType::F64 => t
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
                    .into_iter()
                    .map(|x| x as u32)
                    .collect(),
                _ => values_f32(&t).into_iter().map(f32::to_bits).collect(),
            };
            (k, bits)
        })
        .collect();
    for (name, var) in vars {
        let bits = values_f32(var.as_tensor()).into_iter().map(f32::to_bits);
        out.push((format!("param {name}"), bits.collect()));
    }
    out.sort();
    out
}

#[test]
fn resuming_from_a_saved_state_is_bit_identical() {
    let fx = Fixture::load();
    let steps = fx.steps();
    let split = 2;
    assert!(split < steps);

    let vars = fx.vars();
    let mut opt = AdamW::new(vars.clone(), fx.config()).unwrap();
    for step in 1..=steps {
        opt.step(&fx.grads(step, &vars)).unwrap();
    }
    let uninterrupted = snapshot(&opt, &vars);

    let vars = fx.vars();
    let mut opt = AdamW::new(vars.clone(), fx.config()).unwrap();
    for step in 1..=split {
        opt.step(&fx.grads(step, &vars)).unwrap();
    }
    // Through a safetensors file, as checkpoints store it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimizer.safetensors");
    candle_core::safetensors::save(&opt.state().unwrap(), &path).unwrap();
    drop(opt);
    let saved = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    assert!(saved.values().any(|t| t.dtype() == DType::U8));
    let mut opt = AdamW::new(vars.clone(), fx.config()).unwrap();
    opt.load_state(&saved).unwrap();
    assert_eq!(opt.step_count(), split as u64);
    for step in split + 1..=steps {
        opt.step(&fx.grads(step, &vars)).unwrap();
    }
    let resumed = snapshot(&opt, &vars);

    let compared: usize = uninterrupted.iter().map(|(_, v)| v.len()).sum();
    assert!(compared > 0 && uninterrupted.iter().any(|(k, _)| k.ends_with(".state1")));
    assert_eq!(uninterrupted.len(), resumed.len());
    for ((ka, a), (kb, b)) in uninterrupted.iter().zip(&resumed) {
        assert_eq!(ka, kb);
        assert!(a == b, "`{ka}` differs after resuming");
    }
    println!(
        "{} tensors, {compared} values bit-identical after resuming",
        resumed.len()
    );
}

#[test]
fn a_state_of_the_other_kind_is_refused_with_the_key() {
    let fx = Fixture::load();
    let vars = fx.vars();
    let mut eight = AdamW::new(vars.clone(), fx.config()).unwrap();
    eight.step(&fx.grads(1, &vars)).unwrap();
    let plain_config = AdamWConfig {
        optimizer: OptimizerKind::AdamW,
        ..fx.config()
    };
    let mut plain = AdamW::new(fx.vars(), plain_config).unwrap();
    let err = plain.load_state(&eight.state().unwrap()).unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("a.state1") && err.contains("optimizer = \"adamw8bit\""),
        "{err}"
    );
    let err = eight.load_state(&plain.state().unwrap()).unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("a.exp_avg") && err.contains("optimizer = \"adamw\""),
        "{err}"
    );
    // A refused state leaves the optimizer as it was.
    assert_eq!(eight.step_count(), 1);
}

#[test]
fn the_training_config_selects_the_optimizer() {
    use styleforge::training::config::TrainConfig;
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/train/styleforge.toml");
    let cfg = TrainConfig::from_file(&path).unwrap();
    // The example runs the paper's optimizer; the default is PyTorch's AdamW.
    let eight = cfg.resolve().unwrap();
    assert_eq!(eight.adamw.optimizer, OptimizerKind::AdamW8bit);
    assert_eq!(eight.adamw.min_8bit_size, 4096);
    let mut plain = cfg.clone();
    plain.optim.optimizer = None;
    assert_eq!(
        plain.resolve().unwrap().adamw.optimizer,
        OptimizerKind::AdamW
    );
    let back = cfg
        .with_overrides(&["optim.optimizer=adamw".to_string()])
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(back.adamw.optimizer, OptimizerKind::AdamW);
    let err = cfg
        .with_overrides(&["optim.optimizer=adam8".to_string()])
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("adamw8bit"), "{err}");
}
