//! Helpers shared by the training tests (`training_engine.rs`, `training_data.rs`,
//! `mixed_precision.rs`, `pretrain.rs`): the tiny SD1 fixture, a small striped dataset
//! with a run config over it, the weights of a trained model folder, and a progress
//! sink that raises a stop at a chosen step.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};
use styleforge::training::config::{ConceptConfig, Method, TrainConfig};

/// The tiny SD1 diffusers fixture.
pub fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-sd1")
}

/// Writes `n` distinct 16×16 images: stripes in a palette, a caption for odd ones.
pub fn make_images(dir: &Path, n: usize, seed: u8, captions: bool) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = RgbImage::from_fn(20, 16, |x, y| {
            let band = ((x + 2 * y + i as u32) / 3) % 2;
            let k = seed.wrapping_mul(37).wrapping_add(i as u8 * 53);
            if band == 0 {
                Rgb([k, 255 - k, 40])
            } else {
                Rgb([20, k / 2, 200])
            }
        });
        img.save(dir.join(format!("img-{i:02}.png"))).unwrap();
        if captions && i % 2 == 1 {
            std::fs::write(dir.join(format!("img-{i:02}.txt")), "a striped thing").unwrap();
        }
    }
}

pub fn config(method: Method, data: &Path, out: &Path) -> TrainConfig {
    let mut concepts = vec![ConceptConfig {
        style_dir: data.join("style"),
        aux_dir: Some(data.join("aux")),
        token: None,
    }];
    if method == Method::MultiStyleforge {
        concepts.push(ConceptConfig {
            style_dir: data.join("style2"),
            aux_dir: Some(data.join("aux")),
            token: None,
        });
    }
    let text = format!(
        r#"
method = "{}"
seed = 3
[model]
base = {:?}
[data]
resolution = 16
[training]
num_aux_images = 3
aux_steps = 2
[optim]
steps = 6
lr = 1e-4
[output]
dir = {:?}
checkpoint_every = 3
validate_every = 0
validation_steps = 2
validation_prompts = ["a house, {{token}} style"]
"#,
        method.name(),
        base().display().to_string(),
        out.display().to_string()
    );
    let mut cfg = TrainConfig::from_toml(&text, Path::new("test.toml")).unwrap();
    cfg.data.concepts = concepts;
    cfg
}

pub fn dataset() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    make_images(&tmp.path().join("style"), 4, 1, true);
    make_images(&tmp.path().join("style2"), 3, 9, false);
    make_images(&tmp.path().join("aux"), 3, 5, false);
    tmp
}

/// The UNet and text-encoder weights of a model folder (text-encoder names prefixed `te.`).
pub fn weights(dir: &Path) -> HashMap<String, Tensor> {
    let mut all = candle_core::safetensors::load(
        dir.join("unet/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let te =
        candle_core::safetensors::load(dir.join("text_encoder/model.safetensors"), &Device::Cpu)
            .unwrap();
    all.extend(te.into_iter().map(|(k, v)| (format!("te.{k}"), v)));
    all
}

/// Trains `cfg` in two sittings, stopped after `stop_after` steps and resumed to the end,
/// as an interrupted run would be.
pub fn train_interrupted(
    cfg: &styleforge::training::ResolvedConfig,
    stop_after: usize,
) -> styleforge::training::TrainSummary {
    use styleforge::progress::NoProgress;
    use styleforge::training::{train, RunOptions};
    let first = RunOptions {
        stop_after: Some(stop_after),
        ..Default::default()
    };
    assert_eq!(
        train(cfg, &first, &mut NoProgress).unwrap().steps,
        stop_after
    );
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    train(cfg, &resume, &mut NoProgress).unwrap()
}

/// Whether two weight sets hold the same tensors, value for value (`f32` bits compared).
pub fn same_weights(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> bool {
    assert!(!a.is_empty(), "no weights to compare");
    a.len() == b.len()
        && a.iter().all(|(name, t)| {
            b.get(name).is_some_and(|u| {
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                    == u.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
        })
}

/// Raises `stop` when step `at` is reported, as SIGTERM arriving during that step would.
pub struct StopAt {
    pub at: usize,
    pub stop: styleforge::training::StopSignal,
}

impl styleforge::progress::Progress for StopAt {
    fn step(&mut self, report: &styleforge::progress::StepReport) {
        if report.step == self.at {
            self.stop.request();
        }
    }
}
