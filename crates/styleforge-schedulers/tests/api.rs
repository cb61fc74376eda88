//! Behaviour of the public API beyond the numbers checked against diffusers: loading configs,
//! errors, img2img, dtypes and state handling.

use candle_core::{DType, Device, Tensor};
use styleforge_schedulers::{
    build_scheduler, img2img_timesteps, DdimScheduler, NoNoise, PredictionType, Scheduler,
    SchedulerConfig, SchedulerError, SchedulerKind, SeededNoise, TimestepSpacing,
};

/// The scheduler_config.json of runwayml/stable-diffusion-v1-5.
const SD15: &str = r#"{
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
}"#;

fn sd15() -> SchedulerConfig {
    SchedulerConfig::from_json_str(SD15).unwrap()
}

fn sample(dtype: DType) -> Tensor {
    Tensor::arange(0f32, 32.0, &Device::Cpu)
        .unwrap()
        .affine(0.1, -1.5)
        .unwrap()
        .reshape((1, 2, 4, 4))
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Runs a full generation with a fake model (`0.1 * x`) and returns the final latents.
fn generate(scheduler: &mut dyn Scheduler, steps: usize, dtype: DType, seed: u64) -> Tensor {
    scheduler.set_timesteps(steps).unwrap();
    let mut noise = SeededNoise::new(seed);
    let mut x = sample(dtype)
        .affine(scheduler.init_noise_sigma(), 0.0)
        .unwrap();
    for t in scheduler.timesteps().to_vec() {
        let input = scheduler.scale_model_input(&x, t).unwrap();
        let model_output = input.affine(0.1, 0.0).unwrap();
        x = scheduler
            .step(&model_output, t, &x, &mut noise)
            .unwrap()
            .prev_sample;
    }
    x
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn sd15_model_dir_gives_pndm_with_leading_spacing() {
    let dir = std::env::temp_dir().join(format!("styleforge-sched-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("scheduler")).unwrap();
    std::fs::write(dir.join("scheduler/scheduler_config.json"), SD15).unwrap();
    let config = SchedulerConfig::from_model_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(config.class_name.as_deref(), Some("PNDMScheduler"));
    assert_eq!(config.steps_offset, Some(1));
    assert_eq!(config.timestep_spacing, None);

    let mut scheduler = build_scheduler(&config).unwrap();
    assert_eq!(scheduler.kind(), SchedulerKind::Pndm);
    assert_eq!(scheduler.prediction_type(), PredictionType::Epsilon);
    scheduler.set_timesteps(50).unwrap();
    let ts = scheduler.timesteps();
    // PLMS repeats the second timestep: 51 entries.
    assert_eq!(ts.len(), 51);
    assert_eq!(&ts[..4], &[981.0, 961.0, 961.0, 941.0]);
    assert_eq!(ts[50], 1.0);
}

#[test]
fn switching_to_euler_uses_euler_defaults() {
    // The SD 1.5 file has no timestep_spacing, so Euler gets its own default (linspace).
    let mut euler = SchedulerKind::from_name("euler", false)
        .unwrap()
        .build(&sd15())
        .unwrap();
    euler.set_timesteps(10).unwrap();
    assert_eq!(euler.timesteps()[0], 999.0);
    assert_eq!(euler.timesteps()[9], 0.0);
    assert!((euler.init_noise_sigma() - 14.6146).abs() < 1e-3);

    let mut config = sd15();
    config.timestep_spacing = Some(TimestepSpacing::Leading);
    let mut euler = SchedulerKind::from_name("euler", false)
        .unwrap()
        .build(&config)
        .unwrap();
    euler.set_timesteps(10).unwrap();
    assert_eq!(euler.timesteps()[0], 901.0);
    // With leading spacing diffusers uses sqrt(sigma_max^2 + 1).
    let sigma_901 = euler.init_noise_sigma();
    assert!(sigma_901 > 1.0 && sigma_901 < 14.0, "{sigma_901}");
}

#[test]
fn errors_say_what_to_do() {
    let mut ddim = DdimScheduler::from_config(&sd15()).unwrap();
    let err = ddim.set_timesteps(1001).unwrap_err();
    assert!(matches!(err, SchedulerError::InvalidStepCount { .. }));
    let msg = err.to_string();
    assert!(msg.contains("1001") && msg.contains("1000"), "{msg}");
    assert!(ddim.set_timesteps(0).is_err());
    let err = ddim
        .step(&sample(DType::F32), 1.0, &sample(DType::F32), &mut NoNoise)
        .unwrap_err();
    assert!(err.to_string().contains("set_timesteps"), "{err}");

    let err = SchedulerKind::from_name("lms", false)
        .unwrap_err()
        .to_string();
    for name in ["ddim", "pndm", "euler", "euler_a", "dpm++2m", "ddpm"] {
        assert!(err.contains(name), "{err}");
    }
    let err = SchedulerKind::from_name("euler_a", true).unwrap_err();
    assert!(
        matches!(err, SchedulerError::KarrasUnsupported { .. }),
        "{err}"
    );

    let mut config = sd15();
    config.thresholding = Some(true);
    let err = SchedulerKind::Ddim.build(&config).unwrap_err().to_string();
    assert!(err.contains("thresholding"), "{err}");

    let mut config = sd15();
    config.class_name = Some("LMSDiscreteScheduler".into());
    let err = build_scheduler(&config).unwrap_err().to_string();
    assert!(
        err.contains("LMSDiscreteScheduler") && err.contains("EulerDiscreteScheduler"),
        "{err}"
    );

    let path = std::env::temp_dir().join(format!("styleforge-bad-{}.json", std::process::id()));
    std::fs::write(&path, "{\"beta_start\": 0.1,").unwrap();
    let err = SchedulerConfig::from_file(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(err.contains(&path.display().to_string()), "{err}");
    let err = SchedulerConfig::from_json_str(r#"{"timestep_spacing": "even"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("timestep_spacing") && err.contains("leading"),
        "{err}"
    );

    // Trailing spacing with 61 steps makes diffusers' numpy produce timestep -1.
    let mut config = sd15();
    config.timestep_spacing = Some(TimestepSpacing::Trailing);
    let mut ddim = DdimScheduler::from_config(&config).unwrap();
    let err = ddim.set_timesteps(61).unwrap_err().to_string();
    assert!(err.contains("-1"), "{err}");
}

#[test]
fn stochastic_steps_need_noise_and_are_reproducible() {
    let mut euler_a = SchedulerKind::EulerAncestral.build(&sd15()).unwrap();
    euler_a.set_timesteps(5).unwrap();
    let t = euler_a.timesteps()[0];
    let x = sample(DType::F32);
    let err = euler_a.step(&x, t, &x, &mut NoNoise).unwrap_err();
    assert!(err.to_string().contains("SeededNoise"), "{err}");

    let a = generate(euler_a.as_mut(), 8, DType::F32, 3);
    let b = generate(euler_a.as_mut(), 8, DType::F32, 3);
    let c = generate(euler_a.as_mut(), 8, DType::F32, 4);
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert!(max_abs_diff(&a, &c) > 1e-3);

    // DDIM only needs noise with eta > 0.
    let mut ddim = SchedulerKind::Ddim.build(&sd15()).unwrap();
    ddim.set_timesteps(5).unwrap();
    let t = ddim.timesteps()[0];
    ddim.step(&x, t, &x, &mut NoNoise).unwrap();
    ddim.set_eta(1.0).unwrap();
    assert!(ddim.step(&x, t, &x, &mut NoNoise).is_err());
    assert!(ddim.set_eta(-0.5).is_err());
}

#[test]
fn set_timesteps_resets_state() {
    for name in [
        "pndm",
        "dpm++2m",
        "dpm++2m_karras",
        "euler",
        "euler_a",
        "ddim",
        "ddpm",
    ] {
        let mut scheduler = SchedulerKind::from_name(name, false)
            .unwrap()
            .build(&sd15())
            .unwrap();
        let a = generate(scheduler.as_mut(), 12, DType::F32, 1);
        let b = generate(scheduler.as_mut(), 12, DType::F32, 1);
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{name}");
        // One step past the end is refused (or, for table-indexed schedulers, harmless).
        let t = *scheduler.timesteps().last().unwrap();
        let extra = scheduler.step(&a, t, &a, &mut SeededNoise::new(0));
        if matches!(name, "euler" | "euler_a" | "dpm++2m" | "dpm++2m_karras") {
            let err = extra.unwrap_err();
            assert!(
                matches!(err, SchedulerError::ScheduleExhausted { .. }),
                "{name}: {err}"
            );
        }
    }
}

#[test]
fn half_precision_samples_keep_their_dtype() {
    for name in ["pndm", "dpm++2m", "euler", "euler_a", "ddim", "ddpm"] {
        let kind = SchedulerKind::from_name(name, false).unwrap();
        let mut s32 = kind.build(&sd15()).unwrap();
        let mut s16 = kind.build(&sd15()).unwrap();
        let x32 = generate(s32.as_mut(), 6, DType::F32, 9);
        let x16 = generate(s16.as_mut(), 6, DType::F16, 9);
        assert_eq!(x16.dtype(), DType::F16, "{name}");
        let scale = x32
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(max_abs_diff(&x32, &x16) <= 2e-2 * scale.max(1.0), "{name}");
    }
}

#[test]
fn img2img_schedule() {
    let mut euler = SchedulerKind::Euler { karras: false }
        .build(&sd15())
        .unwrap();
    let plan = img2img_timesteps(euler.as_mut(), 10, 0.3).unwrap();
    // int(10 * 0.3) = 3 steps, starting at index 7.
    assert_eq!(plan.num_inference_steps, 3);
    assert_eq!(plan.begin_index, 7);
    assert_eq!(plan.timesteps, euler.timesteps()[7..].to_vec());
    assert_eq!(plan.latent_timestep(), 222.0);

    // add_noise uses the sigma at the begin index, x + sigma * noise.
    let x = sample(DType::F32);
    let zeros = x.zeros_like().unwrap();
    let noised = euler
        .add_noise(&zeros, &x, &[plan.latent_timestep()])
        .unwrap();
    let ratio = (noised.sum_all().unwrap().to_scalar::<f32>().unwrap()
        / x.sum_all().unwrap().to_scalar::<f32>().unwrap()) as f64;
    assert!(
        ratio > 0.5 && ratio < 1.0,
        "sigma at t=222 is ~0.77, got {ratio}"
    );

    assert!(img2img_timesteps(euler.as_mut(), 10, 1.5).is_err());
    let err = img2img_timesteps(euler.as_mut(), 10, 0.05)
        .unwrap_err()
        .to_string();
    assert!(err.contains("strength"), "{err}");
    let full = img2img_timesteps(euler.as_mut(), 10, 1.0).unwrap();
    assert_eq!(full.timesteps.len(), 10);
    assert_eq!(full.begin_index, 0);
}

#[test]
fn training_noise_and_velocity() {
    let ddpm = styleforge_schedulers::DdpmScheduler::from_config(&sd15()).unwrap();
    let x0 = Tensor::ones((2, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let noise = Tensor::zeros((2, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let noisy = ddpm.add_noise(&x0, &noise, &[0.0, 999.0]).unwrap();
    let values: Vec<f32> = noisy.flatten_all().unwrap().to_vec1().unwrap();
    let ac = ddpm.alphas_cumprod();
    assert!((values[0] as f64 - ac[0].sqrt()).abs() < 1e-6);
    assert!((values[7] as f64 - ac[999].sqrt()).abs() < 1e-6);
    let v = ddpm.get_velocity(&x0, &noise, &[999.0, 999.0]).unwrap();
    let v: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
    assert!((v[0] as f64 + (1.0 - ac[999]).sqrt()).abs() < 1e-6);
    // Fractional or out-of-range training timesteps are refused.
    assert!(ddpm.add_noise(&x0, &noise, &[0.5, 1.0]).is_err());
    assert!(ddpm.add_noise(&x0, &noise, &[1000.0, 1.0]).is_err());
    // One timestep per batch element (or one for all).
    assert!(ddpm.add_noise(&x0, &noise, &[1.0, 2.0, 3.0]).is_err());
    assert!(ddpm.add_noise(&x0, &noise, &[10.0]).is_ok());
}

#[test]
fn repeated_first_timestep_runs_to_the_end() {
    // DPM-Solver++ with Karras sigmas on the cosine schedule repeats timestep 998 (diffusers
    // itself then skips a sigma and fails on the last step); the whole schedule must run here.
    let mut config = sd15();
    config.beta_schedule = Some(styleforge_schedulers::BetaSchedule::SquaredcosCapV2);
    let mut dpm = SchedulerKind::from_name("dpm++2m", true)
        .unwrap()
        .build(&config)
        .unwrap();
    dpm.set_timesteps(10).unwrap();
    assert_eq!(&dpm.timesteps()[..3], &[998.0, 998.0, 998.0]);
    let x = generate(dpm.as_mut(), 10, DType::F32, 0);
    assert_eq!(x.dims(), &[1, 2, 4, 4]);
}
