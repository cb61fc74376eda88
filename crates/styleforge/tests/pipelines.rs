//! End-to-end generation against diffusers' `StableDiffusionPipeline` and
//! `StableDiffusionImg2ImgPipeline` on the tiny fixture models (fixtures from
//! `tools/fixtures/make_pipeline_fixtures.py`): the decoded image within 1e-3 in [0, 1].

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde_json::Value;
use styleforge::image_io::{load_rgb, rgb_to_tensor};
use styleforge::models::folder::LoadOptions;
use styleforge::pipelines::{
    Img2ImgRequest, SamplingOptions, SchedulerChoice, StableDiffusion, Txt2ImgRequest,
};
use styleforge::progress::NoProgress;
use styleforge::schedulers::{NoNoise, QueuedNoise, SeededNoise};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn index() -> Value {
    let text = std::fs::read_to_string(fixtures().join("pipelines/index.json")).unwrap();
    // Python's json writes -Infinity/NaN for some scheduler settings; they are not used here.
    let text = text.replace("-Infinity", "null").replace("NaN", "null");
    serde_json::from_str(&text).unwrap()
}

fn case(name: &str) -> (Value, HashMap<String, Tensor>) {
    let idx = index();
    let case = idx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
        .clone();
    let file = fixtures()
        .join("pipelines")
        .join(case["file"].as_str().unwrap());
    let tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    (case, tensors)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
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

fn pipeline(model: &str) -> StableDiffusion {
    StableDiffusion::load(&fixtures().join(model), &LoadOptions::default()).unwrap()
}

fn sampling(case: &Value) -> SamplingOptions {
    let class = case["scheduler"]["class"].as_str().unwrap();
    let own = match case["model"].as_str().unwrap() {
        "tiny-sd1" => "PNDMScheduler",
        _ => "DDIMScheduler",
    };
    SamplingOptions {
        prompt: case["prompt"].as_str().unwrap().to_string(),
        negative_prompt: case["negative_prompt"].as_str().map(str::to_string),
        steps: case["num_inference_steps"].as_u64().unwrap() as usize,
        guidance_scale: case["guidance_scale"].as_f64().unwrap(),
        guidance_rescale: case["guidance_rescale"].as_f64().unwrap_or(0.0),
        scheduler: SchedulerChoice {
            name: (class != own).then(|| class.to_string()),
            karras: false,
        },
        num_images: case["num_images_per_prompt"].as_u64().unwrap() as usize,
        eta: 0.0,
    }
}

fn noise_draws(tensors: &HashMap<String, Tensor>) -> QueuedNoise {
    match tensors.get("noise_draws") {
        Some(draws) => {
            let n = draws.dim(0).unwrap();
            QueuedNoise::new((0..n).map(|i| draws.get(i).unwrap()))
        }
        None => QueuedNoise::new(Vec::new()),
    }
}

/// The fixture case's txt2img request, starting from its recorded latents.
fn txt2img_request(case: &Value, tensors: &HashMap<String, Tensor>) -> Txt2ImgRequest {
    Txt2ImgRequest {
        sampling: sampling(case),
        width: case["width"].as_u64().unwrap() as usize,
        height: case["height"].as_u64().unwrap() as usize,
        latents: Some(tensors["latents"].clone()),
    }
}

fn check_txt2img(name: &str) {
    let (case, tensors) = case(name);
    let sd = pipeline(case["model"].as_str().unwrap());
    let req = txt2img_request(&case, &tensors);
    let mut noise = noise_draws(&tensors);
    let image = sd.txt2img(&req, &mut noise, &mut NoProgress).unwrap();
    assert_eq!(
        noise.remaining(),
        0,
        "{name}: not every recorded noise draw was used"
    );
    let diff = max_abs_diff(&image, &tensors["image"]);
    assert!(diff <= 1e-3, "{name}: image max abs diff {diff:e}");
}

#[test]
fn timed_generation_reports_its_stages() {
    let (case, tensors) = case("sd1_txt2img_ddim");
    let sd = pipeline(case["model"].as_str().unwrap());
    let req = txt2img_request(&case, &tensors);
    let plain = sd.txt2img(&req, &mut NoNoise, &mut NoProgress).unwrap();
    let start = std::time::Instant::now();
    let (image, times) = sd
        .txt2img_timed(&req, &mut NoNoise, &mut NoProgress)
        .unwrap();
    let total = start.elapsed();
    assert_eq!(max_abs_diff(&image, &plain), 0.0);
    let named = times.named();
    let names: Vec<&str> = named.iter().map(|s| s.0).collect();
    assert_eq!(names, ["text_encoding", "denoising", "vae_decode"]);
    assert!(named.iter().all(|s| !s.1.is_zero()), "{times:?}");
    let sum: std::time::Duration = named.iter().map(|s| s.1).sum();
    assert!(sum <= total, "stages {sum:?} > total {total:?}");
}

#[test]
fn txt2img_ddim_with_negative_prompt_matches_diffusers() {
    check_txt2img("sd1_txt2img_ddim");
}

#[test]
fn txt2img_euler_non_square_matches_diffusers() {
    check_txt2img("sd1_txt2img_euler");
}

#[test]
fn txt2img_dpmpp_2m_two_images_matches_diffusers() {
    check_txt2img("sd1_txt2img_dpmpp2m");
}

#[test]
fn txt2img_model_default_pndm_without_guidance_matches_diffusers() {
    check_txt2img("sd1_txt2img_pndm_nocfg");
}

#[test]
fn txt2img_euler_ancestral_with_given_noise_matches_diffusers() {
    check_txt2img("sd1_txt2img_euler_ancestral");
}

#[test]
fn txt2img_sd2_v_prediction_ddim_matches_diffusers() {
    check_txt2img("sd2_txt2img_ddim");
}

#[test]
fn txt2img_sd2_v_prediction_euler_matches_diffusers() {
    check_txt2img("sd2_txt2img_euler");
}

#[test]
fn txt2img_guidance_rescale_two_images_matches_diffusers() {
    let name = "sd2_txt2img_ddim_rescale";
    check_txt2img(name);
    // The rescale is doing something in this case: without it the image is another one.
    let (case, tensors) = case(name);
    let sd = pipeline(case["model"].as_str().unwrap());
    let mut req = txt2img_request(&case, &tensors);
    req.sampling.guidance_rescale = 0.0;
    let plain = sd
        .txt2img(&req, &mut noise_draws(&tensors), &mut NoProgress)
        .unwrap();
    let diff = max_abs_diff(&plain, &tensors["image"]);
    assert!(
        diff > 1e-2,
        "{name}: rescale changed the image by only {diff:e}"
    );
}

#[test]
fn guidance_rescale_outside_zero_to_one_is_refused() {
    let (case, tensors) = case("sd2_txt2img_ddim_rescale");
    let sd = pipeline(case["model"].as_str().unwrap());
    let mut req = txt2img_request(&case, &tensors);
    req.sampling.guidance_rescale = 1.5;
    let err = sd
        .txt2img(&req, &mut NoNoise, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("guidance rescale 1.5 is outside [0, 1]"),
        "{err}"
    );
}

fn check_img2img(name: &str) {
    let (case, tensors) = case(name);
    let sd = pipeline(case["model"].as_str().unwrap());
    let png = fixtures().join("pipelines/img2img_input.png");
    let image = rgb_to_tensor(&load_rgb(&png).unwrap(), &Device::Cpu).unwrap();
    let diff = max_abs_diff(&image, &tensors["init_image"]);
    assert!(
        diff <= 1e-6,
        "{name}: preprocessed image differs by {diff:e}"
    );
    let req = Img2ImgRequest {
        sampling: sampling(&case),
        image,
        strength: case["strength"].as_f64().unwrap(),
    };
    let mut noise = noise_draws(&tensors);
    let out = sd.img2img(&req, &mut noise, &mut NoProgress).unwrap();
    assert_eq!(
        noise.remaining(),
        0,
        "{name}: not every recorded noise draw was used"
    );
    let diff = max_abs_diff(&out, &tensors["image"]);
    assert!(diff <= 1e-3, "{name}: image max abs diff {diff:e}");
}

#[test]
fn img2img_ddim_strength_060_matches_diffusers() {
    check_img2img("sd1_img2img_ddim_s060");
}

#[test]
fn img2img_ddim_strength_035_matches_diffusers() {
    check_img2img("sd1_img2img_ddim_s035");
}

#[test]
fn img2img_euler_strength_060_matches_diffusers() {
    check_img2img("sd1_img2img_euler_s060");
}

#[test]
fn img2img_euler_strength_035_matches_diffusers() {
    check_img2img("sd1_img2img_euler_s035");
}

#[test]
fn bad_requests_are_clear_errors() {
    let sd = pipeline("tiny-sd1");
    let mut req = Txt2ImgRequest {
        sampling: SamplingOptions {
            prompt: "x".into(),
            steps: 2,
            ..Default::default()
        },
        width: 36,
        height: 32,
        latents: None,
    };
    let err = sd.txt2img(&req, &mut NoNoise, &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("width 36"), "{err}");
    req.width = 32;
    req.sampling.scheduler.name = Some("bogus".into());
    let err = sd.txt2img(&req, &mut NoNoise, &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");

    let image = Tensor::zeros((1, 3, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    for strength in [0.0, 1.5, -0.1] {
        let req = Img2ImgRequest {
            sampling: SamplingOptions::default(),
            image: image.clone(),
            strength,
        };
        let err = sd.img2img(&req, &mut NoNoise, &mut NoProgress).unwrap_err();
        assert!(err.to_string().contains("strength"), "{err}");
    }
}

#[test]
fn batched_prompts_give_the_one_at_a_time_pictures() {
    for (name, eta) in [("ddim", 0.0), ("ddim", 1.0), ("euler_a", 0.0)] {
        check_batched_prompts(name, eta);
    }
}

fn check_batched_prompts(scheduler: &str, eta: f64) {
    let sd = pipeline("tiny-sd1");
    let sampling = SamplingOptions {
        steps: 6,
        guidance_scale: 5.0,
        eta,
        scheduler: SchedulerChoice {
            name: Some(scheduler.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let prompts = [
        "a red house".to_string(),
        "a cat at night".to_string(),
        "".to_string(),
    ];
    let seeds = [7u64, 8, 1234];
    let batch = sd
        .txt2img_prompts(&prompts, &seeds, &sampling, 32, 32, &mut NoProgress)
        .unwrap();
    assert_eq!(batch.dims(), &[3, 3, 32, 32]);
    for (i, (p, s)) in prompts.iter().zip(seeds).enumerate() {
        let req = Txt2ImgRequest {
            sampling: SamplingOptions {
                prompt: p.clone(),
                ..sampling.clone()
            },
            width: 32,
            height: 32,
            latents: None,
        };
        let one = sd
            .txt2img(&req, &mut SeededNoise::new(s), &mut NoProgress)
            .unwrap();
        let d = max_abs_diff(&batch.get(i).unwrap(), &one.get(0).unwrap());
        assert!(
            d < 1e-4,
            "{scheduler} eta {eta}, prompt {i}: batched and single differ by {d}"
        );
    }
    let err = sd
        .txt2img_prompts(&prompts, &seeds[..2], &sampling, 32, 32, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("one seed per prompt"), "{err}");
}
