//! Shared helpers for the parity tests: fixture paths, the device, tensor comparisons.
//!
//! The tests compute on `STYLEFORGE_TEST_DEVICE` (default the CPU) and read
//! `STYLEFORGE_FIXTURES` (default `fixtures/`): see `styleforge_models::testing`.
//!
//! The fixtures are made by `tools/fixtures/make_fixtures.py` (PyTorch + diffusers +
//! transformers, versions pinned in `tools/fixtures/requirements.txt`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Tensor};
use styleforge_models::folder::LoadOptions;
use styleforge_models::testing;

/// `fixtures/<name>` at the workspace root.
pub fn fixture(name: &str) -> PathBuf {
    testing::fixtures_dir().join(name)
}

/// Default load options on the test device.
pub fn load_options() -> LoadOptions {
    LoadOptions {
        device: testing::device(),
        ..Default::default()
    }
}

/// The reference tensors of a tiny model (`reference.safetensors`), on the test device.
pub fn reference(model: &str) -> HashMap<String, Tensor> {
    let path = fixture(model).join("reference.safetensors");
    candle_core::safetensors::load(&path, &testing::device())
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
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

/// Largest absolute value in a tensor.
pub fn max_abs(a: &Tensor) -> f32 {
    a.to_dtype(DType::F32)
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

/// Asserts `ours` matches `expected` within `tol` (max abs), naming the tensor.
pub fn assert_close(name: &str, ours: &Tensor, expected: &Tensor, tol: f32) {
    let diff = max_abs_diff(ours, expected);
    assert!(
        diff <= tol,
        "{name}: max abs diff {diff:e} > {tol:e} (reference abs-max {:e})",
        max_abs(expected)
    );
}
