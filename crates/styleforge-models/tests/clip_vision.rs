//! `CLIPModel` (vision tower, projections), `CLIPImageProcessor` and CLIP scores against
//! transformers 5.23 / torchvision / torchmetrics on `fixtures/clip-tiny`, made by
//! `tools/fixtures/make_clip_fixtures.py` (f32).

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, fixture, max_abs_diff, reference};
use styleforge_models::clip_vision::preprocess::OPENAI_CLIP_STD;
use styleforge_models::clip_vision::{
    clip_i, clip_t_score, clip_t_scores, l2_normalize, ClipImageProcessor, ClipModel,
};
use styleforge_models::ModelError;

const TOL: f32 = 1e-4;
const FIXTURE: &str = "clip-tiny";

/// [`assert_close`], printing the measured difference (`--nocapture`).
fn check(name: &str, ours: &Tensor, expected: &Tensor) {
    eprintln!("{name}: max abs diff {:e}", max_abs_diff(ours, expected));
    assert_close(name, ours, expected, TOL);
}

fn model() -> ClipModel {
    ClipModel::load(&fixture(FIXTURE), &Device::Cpu).unwrap()
}

fn pngs() -> Vec<image::RgbImage> {
    ["image_40x30.png", "image_90x70.png"]
        .iter()
        .map(|f| image::open(fixture(FIXTURE).join(f)).unwrap().to_rgb8())
        .collect()
}

#[test]
fn vision_tower_and_image_embeds_match_transformers() {
    let m = model();
    let r = reference(FIXTURE);
    let out = m.vision_model().forward(&r["pixel_values"]).unwrap();
    check(
        "vision_last_hidden",
        &out.last_hidden_state,
        &r["vision_last_hidden"],
    );
    check("vision_pooled", &out.pooled, &r["vision_pooled"]);
    let embeds = m.image_embeds(&r["pixel_values"]).unwrap();
    check("image_embeds", &embeds, &r["image_embeds"]);
}

#[test]
fn text_embeds_match_transformers_from_ids_and_from_prompts() {
    let m = model();
    let r = reference(FIXTURE);
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let embeds = m.text_embeds(&ids).unwrap();
    check("text_embeds", &embeds, &r["text_embeds"]);
    // Our tokenizer gives transformers' ids, so prompts give the same embeddings.
    let prompts = [
        "a red cat",
        "an oil painting of a house by the sea",
        "style",
    ];
    let ours = m.tokenize(&prompts).unwrap();
    assert_eq!(
        ours.to_vec2::<u32>().unwrap(),
        ids.to_vec2::<u32>().unwrap()
    );
    let from_prompts = m.encode_prompts(&prompts).unwrap();
    check("encode_prompts", &from_prompts, &r["text_embeds"]);
}

#[test]
fn legacy_eos_token_id_2_pools_at_the_highest_id() {
    // Configs from before transformers PR #24773 say eos_token_id = 2 and pool at the
    // argmax of the ids; the fixture's ids hold no end-of-text token, so the first-eos rule
    // would pool position 0 instead.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(FIXTURE)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["text_config"]["eos_token_id"] = 2.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let m = ClipModel::load(dir.path(), &Device::Cpu).unwrap();
    let r = reference(FIXTURE);
    let ids = r["legacy_input_ids"].to_dtype(DType::U32).unwrap();
    let embeds = m.text_embeds(&ids).unwrap();
    check("legacy_text_embeds", &embeds, &r["legacy_text_embeds"]);
}

#[test]
fn image_processor_matches_transformers_on_pngs() {
    let processor =
        ClipImageProcessor::load(&fixture(FIXTURE).join("preprocessor_config.json")).unwrap();
    let r = reference(FIXTURE);
    let ours = processor.pixel_values(&pngs(), &Device::Cpu).unwrap();
    let diff = max_abs_diff(&ours, &r["png_pixel_values"]);
    // torch's uint8 antialiased bicubic is reproduced bit for bit (int16 fixed point,
    // horizontal pass first), so only float32 normalisation rounding is left; should a
    // torch build ever differ by one uint8 level, the bound would be 1/255/min(std) ≈ 0.015.
    let one_level = 1.0 / 255.0 / OPENAI_CLIP_STD.iter().cloned().fold(f32::MAX, f32::min);
    eprintln!("preprocessing max abs diff {diff:e} (one uint8 level = {one_level:e})");
    assert!(diff <= 1e-5, "preprocessing differs by {diff:e}");
}

#[test]
fn clip_score_matches_torchmetrics() {
    let m = model();
    let r = reference(FIXTURE);
    let images = m.embed_images(&pngs()).unwrap();
    check("png_image_embeds", &images, &r["png_image_embeds"]);
    let texts = m
        .encode_prompts(&["a red cat", "an oil painting of a house by the sea"])
        .unwrap();
    let ours = clip_t_score(&images, &texts).unwrap();
    let expected = r["torchmetrics_clip_score"].to_vec1::<f32>().unwrap()[0];
    let rel = (ours - expected).abs() / expected.abs().max(1e-6);
    eprintln!("CLIP score ours {ours} torchmetrics {expected} rel {rel:e}");
    assert!(rel <= 1e-4, "CLIP score {ours} vs torchmetrics {expected}");
    let per_pair = clip_t_scores(&images, &texts).unwrap();
    let expected_pairs = r["torchmetrics_clip_score_per_pair"]
        .to_vec1::<f32>()
        .unwrap();
    assert!(!per_pair.is_empty());
    assert_eq!(per_pair.len(), expected_pairs.len());
    for (o, e) in per_pair.iter().zip(&expected_pairs) {
        assert!((o - e).abs() <= 1e-4 * e.abs().max(1.0), "{o} vs {e}");
    }
    // The fixture has one negative pair: torchmetrics clamps the mean, not each pair.
    let mean_of_clamped = per_pair.iter().sum::<f32>() / per_pair.len() as f32;
    assert!((mean_of_clamped - ours).abs() > 1.0);
}

#[test]
fn clip_i_and_normalisation_properties() {
    let a = Tensor::new(&[[3f32, 4.0], [0.0, 2.0]], &Device::Cpu).unwrap();
    let n = l2_normalize(&a).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(n, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
    // Identical single embeddings: 1; the mean over all 2 × 1 pairs otherwise.
    let b = Tensor::new(&[[0f32, 5.0]], &Device::Cpu).unwrap();
    assert!((clip_i(&b, &b).unwrap() - 1.0).abs() < 1e-6);
    let expected = (0.8 + 1.0) / 2.0;
    assert!((clip_i(&a, &b).unwrap() - expected).abs() < 1e-6);
    let m = model();
    let e = m.image_embeds(&reference(FIXTURE)["pixel_values"]).unwrap();
    let s = clip_i(&e, &e.narrow(0, 0, 2).unwrap()).unwrap();
    assert!((-1.0..=1.0).contains(&s));
    assert!(clip_i(
        &a,
        &Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap()
    )
    .is_err());
}

#[test]
fn wrong_image_shape_is_an_error() {
    let m = model();
    let bad = Tensor::zeros((1, 3, 48, 32), DType::F32, &Device::Cpu).unwrap();
    let err = m.image_embeds(&bad).unwrap_err();
    assert!(matches!(err, ModelError::BadInput(_)), "{err}");
    assert!(err.to_string().contains("[batch, 3, 32, 32]"), "{err}");
    let bad = Tensor::zeros((3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        m.image_embeds(&bad).unwrap_err(),
        ModelError::BadInput(_)
    ));
}

/// The fixture folder with its weights rewritten by `edit`.
fn folder_with_weights(
    edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(FIXTURE)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let weights = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    dir
}

#[test]
fn missing_tensor_is_named() {
    let dir = folder_with_weights(|t| {
        t.remove("vision_model.post_layernorm.weight");
    });
    let err = ClipModel::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("vision_model.post_layernorm.weight"),
        "{err}"
    );
}

#[test]
fn unused_tensor_is_named() {
    let dir = folder_with_weights(|t| {
        t.insert(
            "vision_model.extra_head.weight".to_string(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = ClipModel::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(
        err.to_string().contains("vision_model.extra_head.weight"),
        "{err}"
    );
}

#[test]
fn processor_defaults_are_transformers_clip_defaults() {
    let p = ClipImageProcessor::default();
    assert_eq!(p.resized_dims(300, 600).unwrap(), (224, 448));
    assert_eq!(p.resized_dims(70, 90).unwrap(), (224, 288));
    let img = image::RgbImage::from_pixel(10, 20, image::Rgb([255, 0, 128]));
    let t = p.preprocess(&img).unwrap();
    assert_eq!(t.dims(), &[3, 224, 224]);
}
