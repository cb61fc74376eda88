//! Helpers shared by the training tests (`training_engine.rs`, `training_data.rs`): the
//! tiny SD1 fixture and the weights of a trained model folder.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

/// The tiny SD1 diffusers fixture.
pub fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-sd1")
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
