//! Parity with pytorch-fid (FID) and torchmetrics (KID) on the committed fixtures made by
//! `tools/fixtures/make_metric_fixtures.py`.

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use styleforge_eval::{fid, kid_with_subsets, FeatureMatrix, FeatureStats, KidConfig, KidSubset};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/metrics")
}

struct Fixtures {
    sets: HashMap<String, (Vec<f32>, usize)>,
    reference: Value,
}

fn load() -> Fixtures {
    let dir = fixture_dir();
    let bytes = std::fs::read(dir.join("features.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut sets = HashMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        sets.insert(name, (values, view.shape()[1]));
    }
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    Fixtures { sets, reference }
}

impl Fixtures {
    fn features(&self, name: &str) -> FeatureMatrix<'_, f32> {
        let (data, d) = &self.sets[name];
        FeatureMatrix::new(data, *d).unwrap()
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

fn indices(v: &Value) -> Vec<Vec<usize>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as usize)
                .collect()
        })
        .collect()
}

#[test]
fn fid_matches_pytorch_fid() {
    let f = load();
    let cases = f.reference["fid"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let (xn, yn) = (case["x"].as_str().unwrap(), case["y"].as_str().unwrap());
        let (x, y) = (f.features(xn), f.features(yn));
        let ours = fid(&x, &y).unwrap();
        let reference = case["pytorch_fid"].as_f64().unwrap();
        let eigen = case["eigen"].as_f64().unwrap();
        if xn == yn {
            assert!(
                ours.abs() < 1e-9 && reference.abs() < 1e-9,
                "{ours} {reference}"
            );
            continue;
        }
        assert!(
            rel(ours, reference) < 1e-6,
            "{xn} vs {yn}: ours {ours}, pytorch-fid {reference}"
        );
        assert!(
            rel(ours, eigen) < 1e-9,
            "{xn} vs {yn}: ours {ours}, numpy eigen route {eigen}"
        );
        // Statistics as numpy computes them.
        let s = FeatureStats::from_features(&x).unwrap();
        let d = s.dim;
        assert!(rel(s.cov_trace(), case["trace_sigma_x"].as_f64().unwrap()) < 1e-12);
        assert!(rel(s.mean[0], case["mean_x_first"].as_f64().unwrap()) < 1e-12);
        assert!(rel(s.cov[0], case["cov_x_00"].as_f64().unwrap()) < 1e-12);
        assert!(rel(s.cov[1], case["cov_x_01"].as_f64().unwrap()) < 1e-12);
        assert_eq!(s.cov[1], s.cov[d]);
    }
}

#[test]
fn kid_matches_torchmetrics_on_its_subsets() {
    let f = load();
    let cases = f.reference["kid"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let (xn, yn) = (case["x"].as_str().unwrap(), case["y"].as_str().unwrap());
        let subsets: Vec<KidSubset> = indices(&case["idx_x"])
            .into_iter()
            .zip(indices(&case["idx_y"]))
            .map(|(x, y)| KidSubset { x, y })
            .collect();
        assert_eq!(subsets.len(), case["subsets"].as_u64().unwrap() as usize);
        let ours = kid_with_subsets(
            &f.features(xn),
            &f.features(yn),
            &subsets,
            &KidConfig::default(),
        )
        .unwrap();
        let expected_scores = case["scores"].as_array().unwrap();
        assert_eq!(ours.scores.len(), expected_scores.len(), "{xn} vs {yn}");
        for (a, b) in ours.scores.iter().zip(expected_scores) {
            let b = b.as_f64().unwrap();
            assert!(rel(*a, b) < 1e-6, "{xn} vs {yn}: subset {a} vs {b}");
        }
        let (mean, std) = (
            case["mean"].as_f64().unwrap(),
            case["std"].as_f64().unwrap(),
        );
        assert!(
            rel(ours.mean, mean) < 1e-6,
            "{xn} vs {yn}: mean {} vs {mean}",
            ours.mean
        );
        assert!(
            rel(ours.std, std) < 1e-6,
            "{xn} vs {yn}: std {} vs {std}",
            ours.std
        );
    }
}
