//! Property tests of the FID and KID maths on seeded synthetic features.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use styleforge_eval::{
    draw_subsets, fid, frechet_distance, kid, EvalError, FeatureMatrix, FeatureStats, KidConfig,
};

/// `n × d` row-major features: standard normals (Box–Muller) mixed by a fixed matrix,
/// scaled and offset.
fn gaussian(n: usize, d: usize, seed: u64, scale: f64, offset: f64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut normal = move || {
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    };
    let z: Vec<f64> = (0..n * d).map(|_| normal()).collect();
    let mut out = vec![0.0; n * d];
    for i in 0..n {
        for j in 0..d {
            // A fixed banded mix so the covariance is not diagonal.
            let mut v = z[i * d + j];
            if j > 0 {
                v += 0.5 * z[i * d + j - 1];
            }
            out[i * d + j] = scale * v + offset + 0.01 * j as f64;
        }
    }
    out
}

fn fm(data: &[f64], d: usize) -> FeatureMatrix<'_, f64> {
    FeatureMatrix::new(data, d).unwrap()
}

#[test]
fn fid_of_a_set_with_itself_is_zero() {
    for (n, d) in [(200, 16), (10, 32), (3, 8)] {
        let x = gaussian(n, d, 1, 1.0, 0.0);
        let v = fid(&fm(&x, d), &fm(&x, d)).unwrap();
        assert!(v.abs() < 1e-6, "n={n} d={d}: {v}");
    }
}

#[test]
fn fid_is_symmetric() {
    for (n1, n2, d) in [(300, 150, 16), (12, 40, 24), (5, 6, 10)] {
        let x = gaussian(n1, d, 2, 1.0, 0.0);
        let y = gaussian(n2, d, 3, 1.5, 0.3);
        let a = fid(&fm(&x, d), &fm(&y, d)).unwrap();
        let b = fid(&fm(&y, d), &fm(&x, d)).unwrap();
        assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn mean_shift_gives_squared_norm() {
    for (n, d) in [(100, 12), (8, 20)] {
        let x = gaussian(n, d, 4, 1.0, 0.0);
        let shift: Vec<f64> = (0..d).map(|j| 0.25 * (j as f64 - 3.0)).collect();
        let y: Vec<f64> = x
            .chunks(d)
            .flat_map(|row| row.iter().zip(&shift).map(|(a, s)| a + s))
            .collect();
        let expected: f64 = shift.iter().map(|s| s * s).sum();
        let v = fid(&fm(&x, d), &fm(&y, d)).unwrap();
        assert!(
            (v - expected).abs() <= 1e-6 * expected,
            "n={n} d={d}: {v} vs {expected}"
        );
    }
}

#[test]
fn fid_is_non_negative_and_grows_with_distance() {
    let d = 16;
    let x = gaussian(120, d, 5, 1.0, 0.0);
    let mut last = -1.0;
    for (k, off) in [0.0, 0.5, 1.0, 2.0].into_iter().enumerate() {
        let y = gaussian(60 + 40 * k, d, 6 + k as u64, 1.0, off);
        let v = fid(&fm(&x, d), &fm(&y, d)).unwrap();
        assert!(v >= 0.0, "{v}");
        assert!(v > last, "{v} <= {last}");
        last = v;
    }
    // Small singular sets too.
    for seed in 0..10 {
        let a = gaussian(4, 12, 100 + seed, 1.0, 0.0);
        let b = gaussian(5, 12, 200 + seed, 0.5, 0.1);
        assert!(fid(&fm(&a, 12), &fm(&b, 12)).unwrap() >= 0.0);
    }
}

#[test]
fn f32_and_f64_inputs_agree() {
    let d = 10;
    let x64: Vec<f64> = gaussian(50, d, 7, 1.0, 0.0)
        .into_iter()
        .map(|v| v as f32 as f64)
        .collect();
    let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
    let y = gaussian(40, d, 8, 1.0, 0.2);
    let a = fid(&FeatureMatrix::new(&x32, d).unwrap(), &fm(&y, d)).unwrap();
    let b = fid(&fm(&x64, d), &fm(&y, d)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn covariance_matches_unbiased_definition() {
    let x = [1.0f64, 2.0, 3.0, 1.0, 4.0, 9.0];
    let s = FeatureStats::from_features(&fm(&x, 2)).unwrap();
    assert_eq!(s.count, 3);
    assert!((s.mean[0] - 8.0 / 3.0).abs() < 1e-12 && (s.mean[1] - 4.0).abs() < 1e-12);
    // numpy.cov([[1,3,4],[2,1,9]]) = [[2.3333, 4.5], [4.5, 19]]
    let expected = [7.0 / 3.0, 4.5, 4.5, 19.0];
    assert_eq!(s.cov.len(), expected.len());
    for (a, b) in s.cov.iter().zip(expected) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}

#[test]
fn stats_round_trip_through_safetensors() {
    let d = 9;
    let x = gaussian(30, d, 9, 1.0, 0.0);
    let y = gaussian(25, d, 10, 1.0, 0.5);
    let sx = FeatureStats::from_features(&fm(&x, d)).unwrap();
    let sy = FeatureStats::from_features(&fm(&y, d)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ref_stats.safetensors");
    sx.save(&path).unwrap();
    let loaded = FeatureStats::load(&path).unwrap();
    assert_eq!(loaded, sx);
    assert_eq!(
        frechet_distance(&loaded, &sy).unwrap(),
        frechet_distance(&sx, &sy).unwrap()
    );
    assert!(FeatureStats::from_safetensors_bytes(b"not a file").is_err());
}

#[test]
fn bad_inputs_are_errors() {
    let x = [1.0f64; 10];
    assert!(matches!(
        FeatureMatrix::new(&x, 3),
        Err(EvalError::Shape { .. })
    ));
    assert!(matches!(
        FeatureMatrix::new(&x, 0),
        Err(EvalError::Shape { .. })
    ));
    let nan = [1.0, f64::NAN, 0.0, 0.0];
    assert!(matches!(
        FeatureMatrix::new(&nan, 2),
        Err(EvalError::NonFinite { row: 0, col: 1 })
    ));
    assert!(matches!(
        FeatureStats::from_features(&fm(&x[..5], 5)),
        Err(EvalError::TooFewSamples { .. })
    ));
    assert!(matches!(
        fid(&fm(&x, 5), &fm(&x, 2)),
        Err(EvalError::DimensionMismatch(5, 2))
    ));
    let cfg = KidConfig {
        subset_size: Some(3),
        ..KidConfig::default()
    };
    assert!(matches!(
        kid(&fm(&x, 5), &fm(&x, 5), &cfg),
        Err(EvalError::InvalidConfig(_))
    ));
}

#[test]
fn subsets_are_without_replacement_and_seeded() {
    let cfg = KidConfig {
        subsets: 20,
        subset_size: Some(30),
        seed: 42,
        ..KidConfig::default()
    };
    let a = draw_subsets(40, 35, &cfg).unwrap();
    assert_eq!(a, draw_subsets(40, 35, &cfg).unwrap());
    let other = draw_subsets(
        40,
        35,
        &KidConfig {
            seed: 43,
            ..cfg.clone()
        },
    )
    .unwrap();
    assert_ne!(a, other);
    for s in &a {
        for (idx, n) in [(&s.x, 40), (&s.y, 35)] {
            assert_eq!(idx.len(), 30);
            let mut sorted = idx.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 30);
            assert!(sorted.iter().all(|&i| i < n));
        }
    }
    // Default size: min(n_x, n_y, 1000).
    let d = draw_subsets(2000, 1500, &KidConfig::default()).unwrap();
    assert_eq!(d.len(), 100);
    assert_eq!(d[0].x.len(), 1000);
    let d = draw_subsets(50, 70, &KidConfig::default()).unwrap();
    assert_eq!(d[0].y.len(), 50);
}

#[test]
fn kid_of_same_distribution_is_zero_on_average() {
    let d = 16;
    let cfg = KidConfig {
        subsets: 50,
        subset_size: Some(100),
        ..KidConfig::default()
    };
    let mut same = Vec::new();
    let mut shifted = Vec::new();
    for seed in 0..8u64 {
        let x = gaussian(400, d, 1000 + seed, 1.0, 0.0);
        let y = gaussian(400, d, 2000 + seed, 1.0, 0.0);
        let z = gaussian(400, d, 3000 + seed, 1.0, 0.5);
        let cfg = KidConfig {
            seed,
            ..cfg.clone()
        };
        same.push(kid(&fm(&x, d), &fm(&y, d), &cfg).unwrap());
        shifted.push(kid(&fm(&x, d), &fm(&z, d), &cfg).unwrap());
    }
    let avg =
        |r: &[styleforge_eval::KidResult]| r.iter().map(|k| k.mean).sum::<f64>() / r.len() as f64;
    let (s, t) = (avg(&same), avg(&shifted));
    // The per-subset spread bounds the noise of the average.
    let spread = same.iter().map(|k| k.std).sum::<f64>() / same.len() as f64;
    assert!(
        s.abs() < spread,
        "same-distribution KID {s} (spread {spread})"
    );
    assert!(
        t > 10.0 * spread && t > 20.0 * s.abs(),
        "shifted {t} vs same {s}"
    );
    for k in &same {
        assert_eq!(k.scores.len(), 50);
        let mean = k.scores.iter().sum::<f64>() / 50.0;
        assert!((mean - k.mean).abs() < 1e-15);
    }
}

#[test]
fn kid_is_seed_deterministic() {
    let d = 8;
    let x = gaussian(60, d, 11, 1.0, 0.0);
    let y = gaussian(70, d, 12, 1.0, 0.3);
    let cfg = KidConfig {
        subsets: 5,
        ..KidConfig::default()
    };
    let a = kid(&fm(&x, d), &fm(&y, d), &cfg).unwrap();
    assert_eq!(a, kid(&fm(&x, d), &fm(&y, d), &cfg).unwrap());
    assert_eq!(a.scores.len(), 5);
    assert!(a.std >= 0.0);
}

/// Timing at Inception's size (d = 2048); run with `--ignored --nocapture`.
#[test]
#[ignore = "slow: full-size timing"]
fn fid_full_size_timing() {
    let d = 2048;
    let x: Vec<f32> = gaussian(2100, d, 21, 1.0, 0.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let y: Vec<f32> = gaussian(2100, d, 22, 1.0, 0.1)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let t = std::time::Instant::now();
    let sx = FeatureStats::from_features(&FeatureMatrix::new(&x, d).unwrap()).unwrap();
    let sy = FeatureStats::from_features(&FeatureMatrix::new(&y, d).unwrap()).unwrap();
    let t_stats = t.elapsed();
    let v = frechet_distance(&sx, &sy).unwrap();
    eprintln!(
        "stats {t_stats:?}, distance {:?}, fid {v}",
        t.elapsed() - t_stats
    );
    let t = std::time::Instant::now();
    let k = kid(
        &FeatureMatrix::new(&x, d).unwrap(),
        &FeatureMatrix::new(&y, d).unwrap(),
        &KidConfig::default(),
    )
    .unwrap();
    eprintln!("kid {:?}: {} ± {}", t.elapsed(), k.mean, k.std);
}

/// Small sets (`n < d`) take the `n × n` route in `fid`; it must give the `d × d` answer.
#[test]
fn small_set_fid_equals_the_covariance_route() {
    use styleforge_eval::{fid, frechet_distance, FeatureMatrix, FeatureStats};
    let features = |seed: u64, n: usize, d: usize, shift: f32| -> Vec<f32> {
        let mut s = seed;
        (0..n * d)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 + shift
            })
            .collect()
    };
    let d = 24;
    for (n1, n2, shift) in [
        (5, 7, 0.0),
        (9, 4, 0.3),
        (2, 2, -0.5),
        (23, 6, 0.1),
        (30, 6, 0.2),
    ] {
        let x = features(1 + n1 as u64, n1, d, 0.0);
        let y = features(100 + n2 as u64, n2, d, shift);
        let (fx, fy) = (
            FeatureMatrix::new(&x, d).unwrap(),
            FeatureMatrix::new(&y, d).unwrap(),
        );
        let full = frechet_distance(
            &FeatureStats::from_features(&fx).unwrap(),
            &FeatureStats::from_features(&fy).unwrap(),
        )
        .unwrap();
        let small = fid(&fx, &fy).unwrap();
        assert!(
            (full - small).abs() <= 1e-9 * full.max(1.0),
            "n = ({n1}, {n2}): {full} vs {small}"
        );
    }
    let x = features(3, 6, d, 0.0);
    let fx = FeatureMatrix::new(&x, d).unwrap();
    assert!(fid(&fx, &fx).unwrap().abs() < 1e-9);
}
