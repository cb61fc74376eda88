//! DINO (`ViTModel`), DINOv2 (`Dinov2Model`), their image processors and the CSD style
//! descriptor against transformers 5.23 / torchvision / open_clip on `fixtures/style`, made
//! by `tools/fixtures/make_style_fixtures.py` (f32; the CSD file went through
//! `tools/convert_csd.py`).

mod common;

use candle_core::{Device, Tensor};
use common::{assert_close, fixture, max_abs_diff, reference};
use styleforge_models::csd::CsdModel;
use styleforge_models::dino::DinoModel;
use styleforge_models::ModelError;

const TOL: f32 = 1e-5;
const FIXTURE: &str = "style";

fn check(name: &str, ours: &Tensor, expected: &Tensor) {
    eprintln!("{name}: max abs diff {:e}", max_abs_diff(ours, expected));
    assert_close(name, ours, expected, TOL);
}

fn pngs() -> Vec<image::RgbImage> {
    ["image_45x33.png", "image_70x91.png", "image_27x27.png"]
        .iter()
        .map(|f| image::open(fixture(FIXTURE).join(f)).unwrap().to_rgb8())
        .collect()
}

fn device() -> Device {
    styleforge_models::testing::device()
}

#[test]
fn dino_vit_matches_transformers() {
    let m = DinoModel::load(&fixture(FIXTURE).join("dino-vit"), &device()).unwrap();
    let r = reference(FIXTURE);
    let pv = r["vit.pixel_values"].to_device(&device()).unwrap();
    check(
        "vit.last_hidden_state",
        &m.forward(&pv).unwrap(),
        &r["vit.last_hidden_state"],
    );
    check("vit.cls", &m.cls_embeddings(&pv).unwrap(), &r["vit.cls"]);
    let ppv = m.processor().pixel_values(&pngs(), &Device::Cpu).unwrap();
    check("vit.png_pixel_values", &ppv, &r["vit.png_pixel_values"]);
    check(
        "vit.png_cls",
        &m.embed_images(&pngs()).unwrap(),
        &r["vit.png_cls"],
    );
}

#[test]
fn dinov2_matches_transformers_with_interpolated_positions() {
    let m = DinoModel::load(&fixture(FIXTURE).join("dinov2"), &device()).unwrap();
    let r = reference(FIXTURE);
    // 32 px inputs on a model trained at 40 px: the 5×5 position grid is resampled to 4×4.
    let pv = r["dinov2.pixel_values"].to_device(&device()).unwrap();
    check(
        "dinov2.last_hidden_state",
        &m.forward(&pv).unwrap(),
        &r["dinov2.last_hidden_state"],
    );
    check(
        "dinov2.cls",
        &m.cls_embeddings(&pv).unwrap(),
        &r["dinov2.cls"],
    );
    // 48×40: upsampled in one direction, kept in the other.
    let pv = r["dinov2.pixel_values_48x40"].to_device(&device()).unwrap();
    check(
        "dinov2.cls_48x40",
        &m.cls_embeddings(&pv).unwrap(),
        &r["dinov2.cls_48x40"],
    );
    let ppv = m.processor().pixel_values(&pngs(), &Device::Cpu).unwrap();
    check(
        "dinov2.png_pixel_values",
        &ppv,
        &r["dinov2.png_pixel_values"],
    );
    check(
        "dinov2.png_cls",
        &m.embed_images(&pngs()).unwrap(),
        &r["dinov2.png_cls"],
    );
}

#[test]
fn csd_converted_checkpoint_matches_the_reference_module() {
    let m = CsdModel::load(&fixture(FIXTURE).join("csd.safetensors"), &device()).unwrap();
    let r = reference(FIXTURE);
    let pv = r["csd.pixel_values"].to_device(&device()).unwrap();
    let out = m.forward(&pv).unwrap();
    check("csd.feature", &out.feature, &r["csd.feature"]);
    check("csd.style", &out.style, &r["csd.style"]);
    check("csd.content", &out.content.unwrap(), &r["csd.content"]);
    let ppv = m.processor().pixel_values(&pngs(), &Device::Cpu).unwrap();
    check("csd.png_pixel_values", &ppv, &r["csd.png_pixel_values"]);
    check(
        "csd.png_style",
        &m.embed_images(&pngs()).unwrap(),
        &r["csd.png_style"],
    );
}

#[test]
fn csd_refuses_files_without_its_metadata() {
    // A DINO weights file is a valid safetensors file but not a converted CSD checkpoint.
    let err = CsdModel::load(
        &fixture(FIXTURE).join("dino-vit/model.safetensors"),
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Config { .. }), "{err}");
    assert!(err.to_string().contains("convert_csd.py"), "{err}");
}

#[test]
fn dino_refuses_swiglu_and_unknown_model_types() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(FIXTURE).join("dinov2");
    for f in ["model.safetensors", "preprocessor_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let mut swiglu = config.clone();
    swiglu["use_swiglu_ffn"] = true.into();
    std::fs::write(dir.path().join("config.json"), swiglu.to_string()).unwrap();
    let err = DinoModel::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("SwiGLU"), "{err}");
    let mut other = config;
    other["model_type"] = "dinov2_with_registers".into();
    std::fs::write(dir.path().join("config.json"), other.to_string()).unwrap();
    let err = DinoModel::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("dinov2_with_registers"), "{err}");
}
