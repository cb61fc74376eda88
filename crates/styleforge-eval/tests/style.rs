//! Style-similarity maths (mean cosine, CSLS, paired cosine) against numpy values in
//! `fixtures/style/reference.safetensors`, made by `tools/fixtures/make_style_fixtures.py`.

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};
use styleforge_eval::style::{cosine_matrix, csls, csls_matrix, mean_cosine, paired_cosine};
use styleforge_eval::FeatureMatrix;

const TOL: f64 = 1e-6;

/// `metrics.*` tensors as f64 values with their shapes.
fn load() -> HashMap<String, (Vec<f64>, Vec<usize>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/style/reference.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(n, _)| n.starts_with("metrics."))
        .map(|(name, view)| {
            let values: Vec<f64> = match view.dtype() {
                Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                Dtype::F64 => view
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, (values, view.shape().to_vec()))
        })
        .collect()
}

fn close(name: &str, ours: &[f64], expected: &[f64]) {
    assert_eq!(ours.len(), expected.len(), "{name}: length");
    let diff = ours
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("{name}: max abs diff {diff:e}");
    assert!(diff <= TOL, "{name}: max abs diff {diff:e} > {TOL:e}");
}

fn sets(m: &HashMap<String, (Vec<f64>, Vec<usize>)>) -> (Vec<f32>, Vec<f32>, usize) {
    let (g, shape) = &m["metrics.gen"];
    let (r, _) = &m["metrics.ref"];
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    (to32(g), to32(r), shape[1])
}

#[test]
fn mean_cosine_and_paired_cosine_match_numpy() {
    let m = load();
    let (g, r, d) = sets(&m);
    let gen = FeatureMatrix::new(&g, d).unwrap();
    let refs = FeatureMatrix::new(&r, d).unwrap();
    let cos: Vec<f64> = cosine_matrix(&gen, &refs).unwrap().concat();
    close("cos", &cos, &m["metrics.cos"].0);
    let s = mean_cosine(&gen, &refs).unwrap();
    close("per_image", &s.per_image, &m["metrics.per_image"].0);
    close("mean", &[s.mean], &m["metrics.mean"].0);
    let first5 = FeatureMatrix::new(&g[..5 * d], d).unwrap();
    let paired = paired_cosine(&first5, &refs).unwrap();
    close("paired", &paired, &m["metrics.paired"].0);
}

#[test]
fn csls_matches_numpy_with_k_clamped_to_the_set_sizes() {
    let m = load();
    let (g, r, d) = sets(&m);
    let gen = FeatureMatrix::new(&g, d).unwrap();
    let refs = FeatureMatrix::new(&r, d).unwrap();
    for k in [3, 10] {
        let matrix = csls_matrix(&gen, &refs, k).unwrap().concat();
        close(
            &format!("csls_k{k}"),
            &matrix,
            &m[&format!("metrics.csls_k{k}")].0,
        );
        let s = csls(&gen, &refs, k).unwrap();
        close(
            &format!("csls_mean_k{k}"),
            &[s.mean],
            &m[&format!("metrics.csls_mean_k{k}")].0,
        );
        if k == 3 {
            close(
                "csls_per_image_k3",
                &s.per_image,
                &m["metrics.csls_per_image_k3"].0,
            );
        }
    }
}

#[test]
fn errors_name_the_problem() {
    let a = [1.0f32, 0.0, 0.0, 0.0];
    let b = [1.0f32, 0.0, 0.0];
    let x = FeatureMatrix::new(&a, 2).unwrap();
    let y = FeatureMatrix::new(&b, 3).unwrap();
    assert!(mean_cosine(&x, &y).is_err());
    let err = mean_cosine(&x, &x).unwrap_err().to_string();
    assert!(err.contains("all zeros"), "{err}");
    let ok = FeatureMatrix::new(&a[..2], 2).unwrap();
    assert!(csls(&ok, &ok, 0).unwrap_err().to_string().contains("k"));
    // One image on each side: CSLS = 2·cos − cos − cos = 0.
    let s = csls(&ok, &ok, 10).unwrap();
    assert!(s.mean.abs() < 1e-12);
}
