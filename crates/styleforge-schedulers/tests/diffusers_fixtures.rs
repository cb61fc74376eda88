//! Compares every scheduler with diffusers 0.42, using the fixtures written by
//! `tools/fixtures/make_scheduler_fixtures.py` (committed under `fixtures/schedulers/`).
//!
//! Values must agree within 1e-5: scalars absolutely up to 1 and relatively above; tensors
//! relative to their largest magnitude (at least 1). They run on `STYLEFORGE_TEST_DEVICE`
//! (default the CPU; see `styleforge_models::testing`).

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{DType, IndexOp, Tensor};
use serde_json::Value;
use styleforge_models::testing;
use styleforge_schedulers::{
    img2img_timesteps, DdpmScheduler, DpmSolverMultistepScheduler, EulerAncestralScheduler,
    EulerScheduler, QueuedNoise, Scheduler, SchedulerConfig, SchedulerKind,
};

const TOL: f64 = 1e-5;

struct Fixtures {
    index: Value,
    tensors: HashMap<String, Tensor>,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = testing::fixtures_dir().join("schedulers");
        let index_path = dir.join("index.json");
        let text = std::fs::read_to_string(&index_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", index_path.display()));
        let index: Value = serde_json::from_str(&text).expect("index.json is valid JSON");
        let tensors =
            candle_core::safetensors::load(dir.join("tensors.safetensors"), &testing::device())
                .expect("tensors.safetensors loads");
        Fixtures { index, tensors }
    })
}

fn tensor(name: &str) -> Tensor {
    fixtures()
        .tensors
        .get(name)
        .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
        .clone()
}

/// The fixture cases of `section`; never none, so that no test passes by checking nothing.
fn cases(section: &str) -> &'static [Value] {
    let cases = fixtures().index[section]
        .as_array()
        .unwrap_or_else(|| panic!("index.json has no {section}"));
    assert!(!cases.is_empty(), "index.json's {section} has no cases");
    cases
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn config_of(case: &Value) -> SchedulerConfig {
    SchedulerConfig::from_json_value(&case["config"]).expect("fixture config parses")
}

/// Collects mismatches so that one run reports all of them.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    checks: usize,
    worst: f64,
    worst_at: String,
}

impl Report {
    fn err(&mut self, msg: String) {
        self.failures.push(msg);
    }

    /// Scaled error: |a - b| / max(1, |b|).
    fn scalar(&mut self, what: &str, actual: f64, expected: f64) {
        self.checks += 1;
        let e = (actual - expected).abs() / expected.abs().max(1.0);
        if e > self.worst {
            self.worst = e;
            self.worst_at = what.to_string();
        }
        if e.is_nan() || e > TOL {
            self.err(format!("{what}: got {actual}, diffusers {expected}"));
        }
    }

    fn list(&mut self, what: &str, actual: &[f64], expected: &[f64]) {
        if actual.len() != expected.len() {
            self.err(format!(
                "{what}: got {} values {actual:?}, diffusers {} values {expected:?}",
                actual.len(),
                expected.len()
            ));
            return;
        }
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            self.scalar(&format!("{what}[{i}]"), *a, *e);
        }
    }

    /// Tensors: |a - b| <= 1e-5 * max(1, max |b|) elementwise. The scale is the tensor's largest
    /// value because float32 rounding noise in diffusers' own output is proportional to the
    /// magnitudes the step works with, not to each element.
    fn tensor(&mut self, what: &str, actual: &Tensor, expected: &Tensor) {
        self.tensor_scaled(what, actual, expected, 1.0)
    }

    /// As `tensor`, with a scale of at least `min_scale`.
    fn tensor_scaled(&mut self, what: &str, actual: &Tensor, expected: &Tensor, min_scale: f64) {
        self.checks += 1;
        if actual.dims() != expected.dims() {
            self.err(format!(
                "{what}: shape {:?}, diffusers {:?}",
                actual.dims(),
                expected.dims()
            ));
            return;
        }
        let a: Vec<f32> = actual
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        let e: Vec<f32> = expected.flatten_all().unwrap().to_vec1().unwrap();
        let scale = e
            .iter()
            .fold(min_scale.max(1.0), |m, y| m.max((*y as f64).abs()));
        let mut worst = 0.0f64;
        for (x, y) in a.iter().zip(&e) {
            let err = (*x as f64 - *y as f64).abs() / scale;
            if err.is_nan() || err > worst {
                worst = err;
            }
        }
        if worst > self.worst || worst.is_nan() {
            self.worst = worst;
            self.worst_at = what.to_string();
        }
        if worst.is_nan() || worst > TOL {
            self.err(format!(
                "{what}: max error {worst:e} (relative to max |value| {scale:.3})"
            ));
        }
    }

    fn finish(self, section: &str) {
        eprintln!(
            "{section}: {} checks, worst scaled error {:e} at {}",
            self.checks, self.worst, self.worst_at
        );
        assert!(
            self.checks > 0 || !self.failures.is_empty(),
            "{section}: nothing was compared with diffusers"
        );
        if !self.failures.is_empty() {
            let shown: Vec<&String> = self.failures.iter().take(40).collect();
            panic!(
                "{section}: {} mismatches with diffusers:\n{}",
                self.failures.len(),
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

fn build(case: &Value) -> Box<dyn Scheduler> {
    let config = config_of(case);
    match case.get("switch_name").and_then(Value::as_str) {
        Some(name) => {
            let karras = case["switch_karras"].as_bool().unwrap_or(false);
            SchedulerKind::from_name(name, karras)
                .and_then(|kind| kind.build(&config))
                .unwrap_or_else(|e| panic!("{}: {e}", case["name"]))
        }
        None => styleforge_schedulers::build_scheduler(&config)
            .unwrap_or_else(|e| panic!("{}: {e}", case["name"])),
    }
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn bank_noise(count: usize) -> QueuedNoise {
    let noise = tensor("bank/noise");
    QueuedNoise::new((0..count).map(|i| noise.i(i).unwrap()))
}

/// Runs one recorded generation (text-to-image or img2img) and compares every step.
fn check_trajectory(case: &Value, report: &mut Report) {
    let name = case["name"].as_str().unwrap().to_string();
    let mut scheduler = build(case);
    let eta = case["eta"].as_f64().unwrap_or(0.0);
    scheduler.set_eta(eta).unwrap();
    let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
    let model_outputs = tensor("bank/model_outputs");

    let (timesteps, mut sample) =
        if let Some(strength) = case.get("strength").and_then(Value::as_f64) {
            let plan = match img2img_timesteps(scheduler.as_mut(), steps, strength) {
                Ok(plan) => plan,
                Err(e) => return report.err(format!("{name}: img2img_timesteps: {e}")),
            };
            report.list(
                &format!("{name} timesteps"),
                scheduler.timesteps(),
                &floats(&case["timesteps"]),
            );
            report.list(
                &format!("{name} img2img timesteps"),
                &plan.timesteps,
                &floats(&case["img2img_timesteps"]),
            );
            report.scalar(
                &format!("{name} img2img steps"),
                plan.num_inference_steps as f64,
                case["img2img_steps"].as_f64().unwrap(),
            );
            let original = tensor("bank/original").i(0..1).unwrap();
            let noise = tensor("bank/add_noise").i(0..1).unwrap();
            let noised = scheduler
                .add_noise(&original, &noise, &[plan.latent_timestep()])
                .unwrap();
            report.tensor(
                &format!("{name} noised latents"),
                &noised,
                &tensor(case["noised_latents"].as_str().unwrap()),
            );
            (plan.timesteps, noised)
        } else {
            if let Err(e) = scheduler.set_timesteps(steps) {
                return report.err(format!("{name}: set_timesteps: {e}"));
            }
            report.list(
                &format!("{name} timesteps"),
                scheduler.timesteps(),
                &floats(&case["timesteps"]),
            );
            let sigma = case["init_noise_sigma"].as_f64().unwrap();
            report.scalar(
                &format!("{name} init_noise_sigma"),
                scheduler.init_noise_sigma(),
                sigma,
            );
            // The pipeline's `latents * init_noise_sigma`, in float32 like torch.
            let sample = tensor("bank/sample")
                .affine(sigma as f32 as f64, 0.0)
                .unwrap();
            (scheduler.timesteps().to_vec(), sample)
        };

    let expected_prev = tensor(case["prev"].as_str().unwrap());
    let expected_scaled = case["scaled"].as_str().map(tensor);
    let mut noise = bank_noise(32);
    // See the fixture's "ill_conditioned" note.
    let ill_conditioned = case.get("ill_conditioned").is_some();
    if expected_prev.dim(0).unwrap() != timesteps.len() {
        return report.err(format!(
            "{name}: {} steps recorded for {} timesteps",
            expected_prev.dim(0).unwrap(),
            timesteps.len()
        ));
    }
    for (i, &t) in timesteps.iter().enumerate() {
        let scaled = match scheduler.scale_model_input(&sample, t) {
            Ok(s) => s,
            Err(e) => return report.err(format!("{name} step {i}: scale_model_input: {e}")),
        };
        match &expected_scaled {
            Some(expected) => report.tensor(
                &format!("{name} scaled[{i}]"),
                &scaled,
                &expected.i(i).unwrap(),
            ),
            None => report.tensor(&format!("{name} scaled[{i}] (identity)"), &scaled, &sample),
        }
        let out = match scheduler.step(&model_outputs.i(i).unwrap(), t, &sample, &mut noise) {
            Ok(out) => out,
            Err(e) => return report.err(format!("{name} step {i}: {e}")),
        };
        let expected = expected_prev.i(i).unwrap();
        if ill_conditioned {
            // Each step on diffusers' own input; the first relative to the input's magnitude.
            let min_scale = if i == 0 { max_abs(&sample) } else { 1.0 };
            report.tensor_scaled(
                &format!("{name} prev[{i}]"),
                &out.prev_sample,
                &expected,
                min_scale,
            );
            sample = expected;
        } else {
            report.tensor(&format!("{name} prev[{i}]"), &out.prev_sample, &expected);
            sample = out.prev_sample;
        }
    }
    report.scalar(
        &format!("{name} noise draws"),
        noise.taken() as f64,
        case["noise_calls"].as_f64().unwrap(),
    );
}

#[test]
fn trajectories_match_diffusers() {
    let mut report = Report::default();
    for case in cases("trajectories")
        .iter()
        .filter(|c| c.get("switch_name").is_none())
    {
        check_trajectory(case, &mut report);
    }
    report.finish("trajectories");
}

#[test]
fn switching_scheduler_matches_from_config() {
    let mut report = Report::default();
    for case in cases("trajectories")
        .iter()
        .filter(|c| c.get("switch_name").is_some())
    {
        check_trajectory(case, &mut report);
    }
    report.finish("switch");
}

#[test]
fn schedules_match_diffusers() {
    let mut report = Report::default();
    for case in cases("schedules") {
        let name = case["name"].as_str().unwrap();
        let config = config_of(case);
        let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
        let mut scheduler = match styleforge_schedulers::build_scheduler(&config) {
            Ok(s) => s,
            Err(e) => {
                report.err(format!("{name}: build: {e}"));
                continue;
            }
        };
        let expected_timesteps = floats(&case["timesteps"]);
        let table_indexed = matches!(
            config.class_name.as_deref(),
            Some("DDPMScheduler" | "DDIMScheduler" | "PNDMScheduler")
        );
        match scheduler.set_timesteps(steps) {
            // diffusers would index alphas_cumprod[-1]; styleforge refuses such a schedule.
            Err(e) if table_indexed && expected_timesteps.iter().any(|t| *t < 0.0) => {
                if !e.to_string().contains("-1") {
                    report.err(format!("{name}: unexpected error {e}"));
                }
                continue;
            }
            Err(e) => {
                report.err(format!("{name}: set_timesteps: {e}"));
                continue;
            }
            Ok(()) => {}
        }
        report.list(
            &format!("{name} timesteps"),
            scheduler.timesteps(),
            &expected_timesteps,
        );
        report.scalar(
            &format!("{name} init_noise_sigma"),
            scheduler.init_noise_sigma(),
            case["init_noise_sigma"].as_f64().unwrap(),
        );
        if let Some(expected) = case.get("sigmas") {
            let sigmas = match config.class_name.as_deref() {
                Some("EulerDiscreteScheduler") => {
                    let mut s = EulerScheduler::from_config(&config).unwrap();
                    s.set_timesteps(steps).unwrap();
                    s.sigmas().to_vec()
                }
                Some("EulerAncestralDiscreteScheduler") => {
                    let mut s = EulerAncestralScheduler::from_config(&config).unwrap();
                    s.set_timesteps(steps).unwrap();
                    s.sigmas().to_vec()
                }
                _ => {
                    let mut s = DpmSolverMultistepScheduler::from_config(&config).unwrap();
                    s.set_timesteps(steps).unwrap();
                    s.sigmas().to_vec()
                }
            };
            report.list(&format!("{name} sigmas"), &sigmas, &floats(expected));
        }
    }
    report.finish("schedules");
}

#[test]
fn training_schedules_match_diffusers() {
    let mut report = Report::default();
    for case in cases("training") {
        let name = case["name"].as_str().unwrap();
        let scheduler = DdpmScheduler::from_config(&config_of(case)).unwrap();
        let expected: Vec<f32> = tensor(case["alphas_cumprod"].as_str().unwrap())
            .to_vec1()
            .unwrap();
        let expected: Vec<f64> = expected.into_iter().map(f64::from).collect();
        report.list(
            &format!("{name} alphas_cumprod"),
            scheduler.alphas_cumprod(),
            &expected,
        );
    }
    report.finish("training");
}

#[test]
fn add_noise_matches_diffusers() {
    let mut report = Report::default();
    let original = tensor("bank/original");
    let noise = tensor("bank/add_noise");
    for case in cases("add_noise") {
        let name = case["name"].as_str().unwrap();
        let mut scheduler = styleforge_schedulers::build_scheduler(&config_of(case)).unwrap();
        if let Some(steps) = case["num_inference_steps"].as_u64() {
            scheduler.set_timesteps(steps as usize).unwrap();
        }
        let timesteps = floats(&case["timesteps"]);
        match scheduler.add_noise(&original, &noise, &timesteps) {
            Ok(noisy) => report.tensor(name, &noisy, &tensor(case["noisy"].as_str().unwrap())),
            Err(e) => report.err(format!("{name}: {e}")),
        }
    }
    for case in cases("velocity") {
        let name = case["name"].as_str().unwrap();
        let scheduler = DdpmScheduler::from_config(&config_of(case)).unwrap();
        let v = scheduler
            .get_velocity(&original, &noise, &floats(&case["timesteps"]))
            .unwrap();
        report.tensor(
            &format!("velocity {name}"),
            &v,
            &tensor(case["velocity"].as_str().unwrap()),
        );
    }
    report.finish("add_noise");
}
