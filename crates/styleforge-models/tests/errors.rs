//! Bad input gets a clear error naming the file and the tensor, never a panic.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::fixture;
use styleforge_models::folder::{load_unet, load_vae, LoadOptions, ModelFolder};
use styleforge_models::ModelError;

/// A copy of the tiny SD1 UNet component folder in a temp dir.
fn unet_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("unet");
    std::fs::create_dir(&dir).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixture("tiny-sd1/unet").join(f), dir.join(f)).unwrap();
    }
    (tmp, dir)
}

fn weights(dir: &Path) -> PathBuf {
    dir.join("diffusion_pytorch_model.safetensors")
}

fn err_of<T>(r: Result<T, ModelError>) -> ModelError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn missing_tensor_is_named_with_the_file() {
    let (_tmp, dir) = unet_copy();
    let mut tensors = candle_core::safetensors::load(weights(&dir), &Device::Cpu).unwrap();
    tensors
        .remove("mid_block.attentions.0.proj_in.weight")
        .unwrap();
    candle_core::safetensors::save(&tensors, weights(&dir)).unwrap();
    let err = err_of(load_unet(&dir, &LoadOptions::default()));
    let msg = err.to_string();
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{msg}");
    assert!(
        msg.contains("mid_block.attentions.0.proj_in.weight"),
        "{msg}"
    );
    assert!(msg.contains("diffusion_pytorch_model.safetensors"), "{msg}");
}

#[test]
fn integer_typed_weights_are_refused_not_read_as_numbers() {
    let (_tmp, dir) = unet_copy();
    let mut tensors = candle_core::safetensors::load(weights(&dir), &Device::Cpu).unwrap();
    let name = "conv_in.weight";
    let as_ints = tensors[name].to_dtype(candle_core::DType::I64).unwrap();
    tensors.insert(name.to_string(), as_ints);
    candle_core::safetensors::save(&tensors, weights(&dir)).unwrap();
    let err = err_of(load_unet(&dir, &LoadOptions::default()));
    let msg = err.to_string();
    assert!(matches!(err, ModelError::InvalidWeights { .. }), "{msg}");
    assert!(
        msg.contains(name) && msg.contains("I64") && msg.contains("floating point"),
        "{msg}"
    );
}

#[test]
fn shape_that_does_not_match_the_config_says_expected_and_found() {
    let (_tmp, dir) = unet_copy();
    let cfg_path = dir.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let cfg = cfg.replace("\"cross_attention_dim\": 32", "\"cross_attention_dim\": 24");
    std::fs::write(&cfg_path, cfg).unwrap();
    let err = err_of(load_unet(&dir, &LoadOptions::default()));
    let msg = err.to_string();
    match &err {
        ModelError::ShapeMismatch {
            name,
            expected,
            found,
            ..
        } => {
            assert!(name.contains("attn2.to_k.weight"), "{msg}");
            assert_eq!(expected.last(), Some(&24), "{msg}");
            assert_eq!(found.last(), Some(&32), "{msg}");
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    assert!(msg.contains("expects"), "{msg}");
}

#[test]
fn truncated_weights_file_is_reported_as_invalid() {
    let (_tmp, dir) = unet_copy();
    let bytes = std::fs::read(weights(&dir)).unwrap();
    std::fs::write(weights(&dir), &bytes[..bytes.len() / 2]).unwrap();
    let err = err_of(load_unet(&dir, &LoadOptions::default()));
    let msg = err.to_string();
    assert!(matches!(err, ModelError::InvalidWeights { .. }), "{msg}");
    assert!(msg.contains("diffusion_pytorch_model.safetensors"), "{msg}");
}

#[test]
fn non_safetensors_file_is_reported_as_invalid() {
    let (_tmp, dir) = unet_copy();
    std::fs::write(weights(&dir), b"PK\x03\x04 this is a zip, not safetensors").unwrap();
    let err = err_of(load_unet(&dir, &LoadOptions::default()));
    assert!(matches!(err, ModelError::InvalidWeights { .. }), "{err}");
}

#[test]
fn pickle_only_folder_says_bin_files_are_not_loaded() {
    let (_tmp, dir) = unet_copy();
    std::fs::remove_file(weights(&dir)).unwrap();
    std::fs::write(dir.join("diffusion_pytorch_model.bin"), b"pickle").unwrap();
    let err = err_of(load_unet(&dir, &LoadOptions::default()));
    let msg = err.to_string();
    assert!(matches!(err, ModelError::NoWeights { .. }), "{msg}");
    assert!(msg.contains(".bin"), "{msg}");
}

#[test]
fn unknown_block_type_names_the_block_and_the_file() {
    let (_tmp, dir) = unet_copy();
    let cfg_path = dir.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let cfg = cfg.replacen("\"DownBlock2D\"", "\"SimpleCrossAttnDownBlock2D\"", 1);
    std::fs::write(&cfg_path, cfg).unwrap();
    let err = err_of(load_unet(&dir, &LoadOptions::default()));
    let msg = err.to_string();
    assert!(msg.contains("SimpleCrossAttnDownBlock2D"), "{msg}");
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
fn unsupported_setting_is_rejected_not_ignored() {
    let (_tmp, dir) = unet_copy();
    let cfg_path = dir.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let cfg = cfg.replace(
        "\"class_embed_type\": null",
        "\"class_embed_type\": \"timestep\"",
    );
    std::fs::write(&cfg_path, cfg).unwrap();
    let err = err_of(load_unet(&dir, &LoadOptions::default()));
    assert!(matches!(err, ModelError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("class_embed_type"), "{err}");
}

#[test]
fn missing_model_folder_and_missing_config_are_clear() {
    let err = err_of(ModelFolder::open("/nonexistent/model"));
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let err = err_of(load_vae(tmp.path(), &LoadOptions::default()));
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn wrong_input_shapes_are_errors_not_panics() {
    let folder = ModelFolder::open(fixture("tiny-sd1")).unwrap();
    let unet = folder.unet(&LoadOptions::default()).unwrap().model;
    let dev = Device::Cpu;
    let ctx = Tensor::zeros((2, 77, 32), candle_core::DType::F32, &dev).unwrap();
    let t = Tensor::new(&[1f32, 2.0], &dev).unwrap();
    let bad_channels = Tensor::zeros((2, 3, 8, 8), candle_core::DType::F32, &dev).unwrap();
    assert!(matches!(
        unet.forward(&bad_channels, &t, &ctx),
        Err(ModelError::BadInput(_))
    ));
    let sample = Tensor::zeros((2, 4, 8, 8), candle_core::DType::F32, &dev).unwrap();
    let three_t = Tensor::new(&[1f32, 2.0, 3.0], &dev).unwrap();
    assert!(matches!(
        unet.forward(&sample, &three_t, &ctx),
        Err(ModelError::BadInput(_))
    ));
    let bad_ctx = Tensor::zeros((2, 77, 16), candle_core::DType::F32, &dev).unwrap();
    assert!(matches!(
        unet.forward(&sample, &t, &bad_ctx),
        Err(ModelError::BadInput(_))
    ));

    let te = folder.text_encoder(&LoadOptions::default()).unwrap().model;
    let out_of_vocab = Tensor::new(&[[5u32, 5000]], &dev).unwrap();
    let err = err_of(te.forward(&out_of_vocab));
    assert!(err.to_string().contains("5000"), "{err}");

    let vae = folder.vae(&LoadOptions::default()).unwrap().model;
    let odd = Tensor::zeros((1, 3, 15, 16), candle_core::DType::F32, &dev).unwrap();
    assert!(matches!(vae.encode(&odd), Err(ModelError::BadInput(_))));
}
