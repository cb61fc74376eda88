//! Parity of `styleforge_models::inception` with pytorch-fid's FID InceptionV3 and with the
//! two resizes FID tools use (clean-fid's PIL bicubic on float data, PyTorch's bilinear).
//!
//! The fixture `fixtures/inception/reference.safetensors` is made by
//! `tools/fixtures/make_inception_fixtures.py`, whose docstring has the recipe. The 91 MB of
//! weights are not stored: both sides fill every tensor from the same counter-based
//! generator (splitmix64, exact in f32), the Python side inside pytorch-fid's own
//! `fid_inception_v3()` (its weight download patched out), this side into a temporary
//! safetensors file loaded with `FidInceptionV3::load`. The input images come from the same
//! generator.
//!
//! Tolerances: resizes within 1e-5 absolute (values in [0, 1]); features within 1e-4 of the
//! largest |feature| (≈ 19 here), i.e. relative to the output scale.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use styleforge_models::inception::{
    resize_chw, resize_for_fid, FidInceptionV3, ResizeMode, FEATURE_DIM, FID_INPUT_SIZE,
};
use styleforge_models::ModelError;

const WEIGHT_SEED: u64 = 1_000_000;
const IMAGE_SEED: u64 = 2_000_000;
const IMAGE_SHAPES: [[usize; 3]; 2] = [[3, 512, 512], [3, 170, 230]];
const SMALL: (usize, usize) = (23, 31);

fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` values in [-1, 1) from `stream`, exact in f32 (24 random bits each).
fn uniform(stream: u64, n: usize) -> impl Iterator<Item = f32> {
    let key = splitmix64(stream);
    (0..n as u64).map(move |i| (splitmix64(i ^ key) >> 40) as f32 / (1u32 << 23) as f32 - 1.0)
}

/// The generator's `(scale, offset)` for a tensor, by key suffix (as the fixture script).
fn scale_offset(name: &str, shape: &[usize]) -> (f32, f32) {
    if name.ends_with("conv.weight") {
        let fan_in = shape[1] * shape[2] * shape[3];
        ((6.0 / fan_in as f64).sqrt() as f32, 0.0)
    } else if name.ends_with("bn.weight") {
        (0.1, 1.0)
    } else if name.ends_with("bn.bias") || name.ends_with("bn.running_mean") {
        (0.1, 0.0)
    } else if name.ends_with("bn.running_var") {
        (0.5, 1.0)
    } else if name == "fc.weight" {
        ((3.0 / shape[1] as f64).sqrt() as f32, 0.0)
    } else if name == "fc.bias" {
        (0.1, 0.0)
    } else {
        panic!("no generator rule for {name}")
    }
}

fn image(j: usize) -> Vec<f32> {
    let n = IMAGE_SHAPES[j].iter().product();
    uniform(IMAGE_SEED + j as u64, n)
        .map(|u| (u + 1.0) / 2.0)
        .collect()
}

struct Fixture {
    tensors: HashMap<String, Tensor>,
    recipe: serde_json::Value,
}

fn fixture() -> Fixture {
    let path = common::fixture("inception").join("reference.safetensors");
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let recipe = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("recipe"))
        .expect("recipe metadata");
    let recipe: serde_json::Value = serde_json::from_str(recipe).expect("recipe json");
    assert_eq!(recipe["weight_seed"], WEIGHT_SEED);
    assert_eq!(recipe["image_seed"], IMAGE_SEED);
    assert_eq!(recipe["small"], serde_json::json!([SMALL.0, SMALL.1]));
    assert_eq!(recipe["image_shapes"], serde_json::json!(IMAGE_SHAPES));
    Fixture {
        tensors: common::reference("inception"),
        recipe,
    }
}

/// Every weight name with its shape, sorted (the generator's tensor order).
fn keys(recipe: &serde_json::Value) -> Vec<(String, Vec<usize>)> {
    recipe["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|kv| {
            let name = kv[0].as_str().expect("name").to_string();
            let shape = kv[1]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            (name, shape)
        })
        .collect()
}

/// Writes the generated weights to `dir/name`, leaving out `skip` and giving `reshape` its
/// listed shape instead.
fn write_weights(
    dir: &Path,
    name: &str,
    keys: &[(String, Vec<usize>)],
    skip: Option<&str>,
    reshape: Option<(&str, Vec<usize>)>,
) -> PathBuf {
    let mut tensors = HashMap::new();
    for (k, (key, shape)) in keys.iter().enumerate() {
        if Some(key.as_str()) == skip {
            continue;
        }
        let (scale, offset) = scale_offset(key, shape);
        let n = shape.iter().product();
        let values: Vec<f32> = uniform(WEIGHT_SEED + k as u64, n)
            .map(|u| u * scale + offset)
            .collect();
        let shape = match &reshape {
            Some((r, s)) if r == key => s.clone(),
            _ => shape.clone(),
        };
        let t = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
        tensors.insert(key.clone(), t);
    }
    let path = dir.join(name);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn mode_of(name: &str) -> ResizeMode {
    match name {
        "clean_fid" => ResizeMode::CleanFid,
        "pytorch_fid" => ResizeMode::PytorchFid,
        other => panic!("unknown mode {other}"),
    }
}

#[test]
fn resizes_match_pil_and_torch() {
    let fx = fixture();
    let images: Vec<Vec<f32>> = (0..IMAGE_SHAPES.len()).map(image).collect();
    let s = FID_INPUT_SIZE;
    for entry in fx.recipe["stored_299"].as_array().unwrap() {
        let j = entry[0].as_u64().unwrap() as usize;
        let mode = entry[1].as_str().unwrap();
        let ch = entry[2].as_u64().unwrap() as usize;
        let [c, h, w] = IMAGE_SHAPES[j];
        let ours = resize_chw(&images[j], c, (h, w), (s, s), mode_of(mode)).unwrap();
        let ours = Tensor::from_vec(ours, (c, s, s), &Device::Cpu).unwrap();
        let theirs = &fx.tensors[&format!("resize.img{j}.{mode}.c{ch}")];
        let d = common::max_abs_diff(&ours.get(ch).unwrap(), theirs);
        println!("img{j} {h}x{w} -> 299 {mode} (channel {ch}): max |diff| {d:.3e}");
        assert!(d < 1e-5, "img{j} {mode}: {d}");
    }
    let [c, h, w] = IMAGE_SHAPES[1];
    for mode in ["clean_fid", "pytorch_fid"] {
        let ours = resize_chw(&images[1], c, (h, w), SMALL, mode_of(mode)).unwrap();
        let ours = Tensor::from_vec(ours, (c, SMALL.0, SMALL.1), &Device::Cpu).unwrap();
        let d = common::max_abs_diff(&ours, &fx.tensors[&format!("resize.small.{mode}")]);
        println!("img1 {h}x{w} -> {SMALL:?} {mode}: max |diff| {d:.3e}");
        assert!(d < 1e-5, "small {mode}: {d}");
    }
    // The tensor entry point is the same resize.
    let t = Tensor::from_vec(images[1].clone(), (c, h, w), &Device::Cpu).unwrap();
    let via_tensor = resize_for_fid(&t, ResizeMode::default()).unwrap();
    let direct = resize_chw(&images[1], c, (h, w), (s, s), ResizeMode::CleanFid).unwrap();
    let direct = Tensor::from_vec(direct, (c, s, s), &Device::Cpu).unwrap();
    assert_eq!(common::max_abs_diff(&via_tensor, &direct), 0.0);
    let err = resize_for_fid(&t.unsqueeze(0).unwrap(), ResizeMode::CleanFid).unwrap_err();
    assert!(matches!(err, ModelError::BadInput(_)), "{err}");
}

#[test]
fn features_match_pytorch_fid() {
    let fx = fixture();
    let keys = keys(&fx.recipe);
    let dir = tempfile::tempdir().unwrap();
    let path = write_weights(
        dir.path(),
        "fid_inception_v3.safetensors",
        &keys,
        None,
        None,
    );
    let model = FidInceptionV3::load(&path, &Device::Cpu).unwrap();

    let s = FID_INPUT_SIZE;
    let inputs: Vec<Tensor> = [(0, ResizeMode::CleanFid), (1, ResizeMode::PytorchFid)]
        .into_iter()
        .map(|(j, mode)| {
            let [c, h, w] = IMAGE_SHAPES[j];
            let r = resize_chw(&image(j), c, (h, w), (s, s), mode).unwrap();
            Tensor::from_vec(r, (c, s, s), &Device::Cpu).unwrap()
        })
        .collect();
    let batch = Tensor::stack(&inputs, 0).unwrap();
    let ours = model.features(&batch).unwrap();
    let theirs = &fx.tensors["features"];
    assert_eq!(ours.dims(), &[2, FEATURE_DIM]);
    let d = common::max_abs_diff(&ours, theirs);
    let scale = max_abs(theirs);
    println!(
        "features: max |diff| {d:.3e}, max |ref| {scale:.3}, relative {:.3e}",
        d / scale
    );
    assert!(
        d <= 1e-4 * scale,
        "features differ by {d} (max |ref| {scale})"
    );

    for bad in [
        Tensor::zeros((1, 3, 224, 224), candle_core::DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros((3, s, s), candle_core::DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros((1, 1, s, s), candle_core::DType::F32, &Device::Cpu).unwrap(),
    ] {
        let err = model.features(&bad).unwrap_err();
        assert!(matches!(err, ModelError::BadInput(_)), "{err}");
        assert!(err.to_string().contains("299"), "{err}");
    }
}

#[test]
fn missing_or_misshapen_tensor_is_named_with_the_file() {
    let fx = fixture();
    let keys = keys(&fx.recipe);
    let dir = tempfile::tempdir().unwrap();
    let missing = "Mixed_6b.branch7x7_2.conv.weight";
    let path = write_weights(
        dir.path(),
        "missing.safetensors",
        &keys,
        Some(missing),
        None,
    );
    let err = FidInceptionV3::load(&path, &Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{msg}");
    assert!(
        msg.contains(missing) && msg.contains("missing.safetensors"),
        "{msg}"
    );

    let wrong = "Mixed_7c.branch_pool.bn.running_var";
    let path = write_weights(
        dir.path(),
        "wrong.safetensors",
        &keys,
        None,
        Some((wrong, vec![2, 96])),
    );
    let err = FidInceptionV3::load(&path, &Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains(wrong) && msg.contains("wrong.safetensors"),
        "{msg}"
    );

    let err =
        FidInceptionV3::load(&dir.path().join("absent.safetensors"), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("absent.safetensors"), "{err}");
}
