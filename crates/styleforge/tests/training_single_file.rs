//! Training from a single-file base and writing the trained model as a single file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};
use styleforge::models::single_file::{single_file_to_folder, SingleFileOptions};
use styleforge::progress::NoProgress;
use styleforge::training::config::{ConceptConfig, TrainConfig};
use styleforge::training::{train, RunOptions};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn make_images(dir: &Path, n: usize, seed: u8) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = RgbImage::from_fn(20, 16, |x, y| {
            let k = seed.wrapping_mul(37).wrapping_add(i as u8 * 53);
            if ((x + 2 * y + i as u32) / 3).is_multiple_of(2) {
                Rgb([k, 255 - k, 40])
            } else {
                Rgb([20, k / 2, 200])
            }
        });
        img.save(dir.join(format!("img-{i:02}.png"))).unwrap();
    }
}

fn config(data: &Path, out: &Path, save_format: &str) -> TrainConfig {
    let text = format!(
        r#"
method = "styleforge"
seed = 3
[model]
base = {:?}
config = {:?}
[data]
resolution = 16
[training]
num_aux_images = 2
aux_steps = 2
[optim]
steps = 2
lr = 1e-4
[output]
dir = {:?}
checkpoint_every = 0
validate_every = 0
validation_steps = 2
validation_prompts = ["a house, {{token}} style"]
save_format = "{save_format}"
"#,
        fixtures()
            .join("single_file/tiny-sd1.safetensors")
            .display()
            .to_string(),
        fixtures().join("tiny-sd1").display().to_string(),
        out.display().to_string()
    );
    let mut cfg = TrainConfig::from_toml(&text, Path::new("test.toml")).unwrap();
    make_images(&data.join("style"), 2, 1);
    make_images(&data.join("aux"), 2, 5);
    cfg.data.concepts = vec![ConceptConfig {
        style_dir: data.join("style"),
        aux_dir: Some(data.join("aux")),
        token: None,
    }];
    cfg
}

fn weights(dir: &Path) -> HashMap<String, Tensor> {
    let load = |p: PathBuf| candle_core::safetensors::load(p, &Device::Cpu).unwrap();
    let mut all = load(dir.join("unet/diffusion_pytorch_model.safetensors"));
    all.extend(
        load(dir.join("text_encoder/model.safetensors"))
            .into_iter()
            .map(|(k, v)| (format!("te.{k}"), v)),
    );
    all.extend(
        load(dir.join("vae/diffusion_pytorch_model.safetensors"))
            .into_iter()
            .map(|(k, v)| (format!("vae.{k}"), v)),
    );
    all
}

fn assert_same(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    let mut ka: Vec<_> = a.keys().collect();
    let mut kb: Vec<_> = b.keys().collect();
    ka.sort();
    kb.sort();
    assert!(!ka.is_empty(), "no tensors to compare");
    assert_eq!(ka, kb);
    for (k, t) in a {
        let u = &b[k];
        assert_eq!(t.dims(), u.dims(), "{k}");
        let diff = (t.to_dtype(candle_core::DType::F32).unwrap()
            - u.to_dtype(candle_core::DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
        assert_eq!(diff, 0.0, "{k}");
    }
}

#[test]
fn trains_from_a_single_file_and_saves_both_formats() {
    let base_file = fixtures().join("single_file/tiny-sd1.safetensors");
    let before = std::fs::read(&base_file).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = config(&tmp.path().join("data"), &run, "both")
        .resolve()
        .unwrap();
    assert_eq!(cfg.base, base_file);
    let summary = train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(
        summary.model_dir.as_deref(),
        Some(run.join("model").as_path())
    );
    assert_eq!(
        std::fs::read(&base_file).unwrap(),
        before,
        "base file written"
    );
    assert!(run.join("base-model/model_index.json").is_file());
    assert!(run.join("model/model_index.json").is_file());
    let file = run.join("model.safetensors");
    assert!(file.is_file());

    // The trained weights differ from the base, and the single file round-trips.
    let trained = weights(&run.join("model"));
    let base = weights(&run.join("base-model"));
    assert!(trained.keys().any(|k| {
        let d = (&trained[k] - &base[k]).unwrap().abs().unwrap();
        d.flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    }));
    let back = tmp.path().join("back");
    let opts = SingleFileOptions {
        config: Some(run.join("model")),
        prediction_type: None,
    };
    single_file_to_folder(&file, &back, &opts).unwrap();
    assert_same(&weights(&back), &trained);

    // A second run reuses the converted base.
    let stamp = std::fs::metadata(run.join("base-model/model_index.json"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::remove_dir_all(run.join("model")).unwrap();
    train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap();
    let again = std::fs::metadata(run.join("base-model/model_index.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(stamp, again);
}

#[test]
fn single_file_only_leaves_no_folder_and_adapters_refuse_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = config(&tmp.path().join("data"), &run, "single-file")
        .resolve()
        .unwrap();
    let summary = train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(
        summary.model_dir.as_deref(),
        Some(run.join("model.safetensors").as_path())
    );
    assert!(run.join("model.safetensors").is_file());
    assert!(!run.join("model").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let mut lora = config(&tmp.path().join("data2"), &tmp.path().join("r2"), "both");
    lora.method = styleforge::training::config::Method::Lora;
    let err = lora.resolve().unwrap_err().to_string();
    assert!(err.contains("save_format"), "{err}");

    let bad = TrainConfig::from_toml(
        "method = \"styleforge\"\n[model]\nbase = \"x\"\n[output]\nsave_format = \"ckpt\"\n",
        Path::new("t.toml"),
    );
    assert!(bad.is_err());
}
