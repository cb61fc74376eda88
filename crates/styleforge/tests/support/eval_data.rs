//! Test data for `styleforge eval`, shared by `crates/styleforge/tests/evaluation.rs` and
//! `crates/styleforge-cli/tests/eval_report.rs` (included there with `#[path]`).
//!
//! - [`random_inception_weights`]: a complete FID InceptionV3 safetensors file with
//!   deterministic random weights (no real weights are needed to test the plumbing: FID,
//!   KID and the cache only need *some* fixed feature extractor). The key list comes from
//!   building the model over an empty `VarMap`, so it always matches the model; the values
//!   follow the generator rules of the parity test (`styleforge-models/tests/inception.rs`),
//!   which keep the activations in a sane range. Written once into `CARGO_TARGET_TMPDIR`
//!   (temporary name + rename, so parallel test binaries never see a partial file).
//! - [`write_images`]: small deterministic RGB PNGs, optionally with an A1111 `parameters`
//!   chunk carrying a prompt.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::RgbImage;
use styleforge::models::candle::{DType, Device, Tensor};
use styleforge::models::candle_nn::{VarBuilder, VarMap};
use styleforge::models::inception::FidInceptionV3;

/// The tiny transformers `CLIPModel` fixture.
pub fn clip_fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clip-tiny")
}

fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` values in [-1, 1) from `stream`.
fn uniform(stream: u64, n: usize) -> impl Iterator<Item = f32> {
    let key = splitmix64(stream);
    (0..n as u64).map(move |i| (splitmix64(i ^ key) >> 40) as f32 / (1u32 << 23) as f32 - 1.0)
}

fn scale_offset(name: &str, shape: &[usize]) -> (f32, f32) {
    if name.ends_with("conv.weight") {
        let fan_in: usize = shape[1..].iter().product();
        ((6.0 / fan_in as f64).sqrt() as f32, 0.0)
    } else if name.ends_with("bn.weight") {
        (0.1, 1.0)
    } else if name.ends_with("bn.running_var") {
        (0.5, 1.0)
    } else {
        (0.1, 0.0)
    }
}

/// A complete FID InceptionV3 weights file with deterministic random values (see the
/// module docs); the same path and bytes in every test binary.
pub fn random_inception_weights() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("styleforge-eval-random-fid-inception-v1.safetensors");
        // A file left by an earlier run is reused if it still loads (the model's keys may
        // have changed since).
        if FidInceptionV3::load(&path, &Device::Cpu).is_ok() {
            return path;
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        FidInceptionV3::from_var_builder(vb).expect("the model builds over a VarMap");
        let mut keys: Vec<(String, Vec<usize>)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        keys.sort();
        let tensors: std::collections::HashMap<String, Tensor> = keys
            .iter()
            .enumerate()
            .map(|(k, (name, shape))| {
                let (scale, offset) = scale_offset(name, shape);
                let n = shape.iter().product();
                let values: Vec<f32> = uniform(1_000 + k as u64, n)
                    .map(|u| u * scale + offset)
                    .collect();
                let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu).unwrap();
                (name.clone(), t)
            })
            .collect();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        styleforge::models::candle::safetensors::save(&tensors, &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    })
    .clone()
}

/// A deterministic `w`×`h` image: a gradient whose direction and colours depend on `seed`,
/// with some per-pixel noise.
pub fn test_image(seed: u64, w: u32, h: u32) -> RgbImage {
    let s = splitmix64(seed);
    let c = |k: u32| ((s >> (8 * k)) & 0xff) as f32;
    RgbImage::from_fn(w, h, |x, y| {
        let t = (x as f32 / w as f32 + y as f32 / h as f32) * 0.5;
        let n = (splitmix64(s ^ ((y as u64) << 20 | x as u64)) & 0x3f) as f32;
        let px = |k: u32| (c(k) * t + c(k + 3) * (1.0 - t) * 0.6 + n).min(255.0) as u8;
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// Writes `prompts.len()` PNGs `img-NN.png` into `dir` (created), image `i` from seed
/// `seed + i`; `Some(prompt)` adds an A1111 `parameters` chunk with that prompt.
pub fn write_images(dir: &Path, seed: u64, prompts: &[Option<&str>]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    prompts
        .iter()
        .enumerate()
        .map(|(i, prompt)| {
            let path = dir.join(format!("img-{i:02}.png"));
            let img = test_image(seed + i as u64, 40 + 4 * i as u32, 36);
            match prompt {
                Some(p) => {
                    let params = format!("{p}\nNegative prompt: blurry\nSteps: 20, Seed: {i}");
                    styleforge::image_io::save_png_with_parameters(&img, &params, &path).unwrap()
                }
                None => img.save(&path).unwrap(),
            }
            path
        })
        .collect()
}
