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
