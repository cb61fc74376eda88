//! `styleforge::evaluation` end to end on tiny data: the tiny CLIP fixture and an FID
//! InceptionV3 with deterministic random weights (see `support/eval_data.rs`).
//!
//! Checked: `metrics.json` fields; FID of a set against itself ≈ 0; KID reproducible with
//! a seed; CLIP-T equal to `clip_t_score` on the same embeddings; the feature cache (a
//! second run extracts nothing, one new image extracts one); a corrupt image is an error
//! naming the file; in-memory image sets.

#[path = "support/eval_data.rs"]
mod eval_data;

use std::path::Path;

use eval_data::{clip_fixture, random_inception_weights, test_image, write_images};
use styleforge::evaluation::{
    content_prompt, evaluate, evaluate_with, report, CacheLocation, EvalModels, EvalResult,
    EvalSettings, ImageSet, NamedImage, PromptSource, DEFAULT_STYLE_TOKENS,
};
use styleforge::models::candle::Device;
use styleforge::models::clip_vision::{clip_t_score, ClipModel};
use styleforge::progress::NoProgress;

const GEN_PROMPTS: [Option<&str>; 4] = [
    Some("a red house, ohwx style"),
    Some("a dog in the style of [V]"),
    None,
    Some("a red house, ohwx style"),
];

fn settings(gen: &Path, reference: &Path, cache: &Path) -> EvalSettings {
    let mut s = EvalSettings::new(
        ImageSet::Folder(gen.to_path_buf()),
        ImageSet::Folder(reference.to_path_buf()),
    );
    s.inception = Some(random_inception_weights());
    s.clip = Some(clip_fixture());
    s.cache = CacheLocation::Dir(cache.to_path_buf());
    s.kid_subsets = 20;
    s.kid_subset_size = Some(2);
    s.seed = 7;
    s.batch_size = 3;
    s
}

fn extracted(r: &EvalResult) -> (usize, usize) {
    (
        r.models.inception.as_ref().unwrap().extraction.extracted,
        r.models.clip.as_ref().unwrap().extraction.extracted,
    )
}

#[test]
fn metrics_cache_and_reproducibility() {
    let tmp = tempfile::tempdir().unwrap();
    let (gen, reference, cache) = (
        tmp.path().join("gen"),
        tmp.path().join("ref"),
        tmp.path().join("cache"),
    );
    let gen_files = write_images(&gen, 100, &GEN_PROMPTS);
    write_images(&reference, 200, &[None; 4]);
    let s = settings(&gen, &reference, &cache);
    let models = EvalModels::load(&s).unwrap();

    // First run: every image through both networks.
    let first = evaluate_with(&s, &models, &mut NoProgress).unwrap();
    assert_eq!(extracted(&first), (8, 8));
    let m = &first.metrics;
    let fid = m.fid.expect("FID computed");
    assert!(fid.is_finite() && fid > 0.0, "FID {fid}");
    let kid = m.kid.as_ref().expect("KID computed");
    assert_eq!((kid.subsets, kid.subset_size, kid.seed), (20, 2, 7));
    assert!(m.clip_t.is_some() && m.clip_i.is_some());
    assert_eq!(first.counts.generated, 4);
    assert_eq!(first.counts.reference, 4);
    assert_eq!(first.counts.with_prompt, 3);
    assert_eq!(
        first.generated[1].content_prompt.as_deref(),
        Some("a dog"),
        "the style phrase is removed for CLIP-T"
    );
    assert!(first.generated[2].clip_t.is_none(), "no prompt, no CLIP-T");
    assert!(
        first.warnings.iter().any(|w| w.contains("small sets")),
        "{:?}",
        first.warnings
    );

    // metrics.json carries metrics, counts, per-prompt CLIP-T, settings, models, versions.
    let out = tmp.path().join("out");
    let files = report::write_outputs(&out, &first, &s.inputs).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files.metrics_json).unwrap()).unwrap();
    for key in [
        "metrics",
        "counts",
        "clip_t_per_prompt",
        "warnings",
        "settings",
        "models",
        "version",
        "timestamp",
    ] {
        assert!(json.get(key).is_some(), "metrics.json lacks {key}: {json}");
    }
    assert_eq!(json["settings"]["resize"], "clean-fid");
    assert_eq!(
        json["models"]["inception"]["id"]["model_name"],
        "styleforge-eval-random-fid-inception-v1.safetensors"
    );
    assert_eq!(json["models"]["clip"]["id"]["model_name"], "clip-tiny");
    let per_prompt = json["clip_t_per_prompt"].as_array().unwrap();
    assert_eq!(per_prompt.len(), 2);
    assert_eq!(per_prompt[0]["prompt"], "a red house, ohwx style");
    assert_eq!(per_prompt[0]["content_prompt"], "a red house");
    assert_eq!(per_prompt[0]["images"], 2);
    let back: EvalResult =
        serde_json::from_str(&std::fs::read_to_string(&files.metrics_json).unwrap()).unwrap();
    assert_eq!(back.counts, first.counts);
    assert_eq!(back.generated.len(), 4);
    let close = |a: Option<f64>, b: Option<f64>| (a.unwrap() - b.unwrap()).abs() < 1e-9;
    assert!(close(back.metrics.fid, first.metrics.fid));
    assert!(close(back.metrics.clip_t, first.metrics.clip_t));
    let html = std::fs::read_to_string(&files.report_html).unwrap();
    for needle in [
        r#"<table id="metrics">"#,
        r#"<section id="generated">"#,
        r#"<section id="reference">"#,
        r#"<table id="clip-t">"#,
        "a red house, ohwx style",
    ] {
        assert!(html.contains(needle), "report.html lacks {needle}");
    }
    assert!(out.join("thumbs/g-0003.png").is_file());
    assert!(out.join("thumbs/r-0003.png").is_file());

    // CLIP-T is torchmetrics' score on the same embeddings, against the content prompts.
    let clip = ClipModel::load(&clip_fixture(), &Device::Cpu).unwrap();
    let scored = [0usize, 1, 3];
    let images: Vec<_> = scored
        .iter()
        .map(|&i| styleforge::image_io::load_rgb(&gen_files[i]).unwrap())
        .collect();
    let contents: Vec<String> = scored
        .iter()
        .map(|&i| content_prompt(GEN_PROMPTS[i].unwrap(), &DEFAULT_STYLE_TOKENS))
        .collect();
    let texts: Vec<&str> = contents.iter().map(String::as_str).collect();
    let expected = clip_t_score(
        &clip.embed_images(&images).unwrap(),
        &clip.encode_prompts(&texts).unwrap(),
    )
    .unwrap() as f64;
    let clip_t = first.metrics.clip_t.unwrap();
    assert!((clip_t - expected).abs() < 1e-4, "{clip_t} vs {expected}");

    // Second run: everything from the cache, the same numbers (KID reproducible with a seed).
    let second = evaluate_with(&s, &models, &mut NoProgress).unwrap();
    assert_eq!(extracted(&second), (0, 0));
    assert_eq!(second.metrics, first.metrics);
    let mut other_seed = s.clone();
    other_seed.seed = 8;
    let third = evaluate_with(&other_seed, &models, &mut NoProgress).unwrap();
    assert_ne!(
        third.metrics.kid, first.metrics.kid,
        "another seed draws other subsets"
    );
    assert_eq!(third.metrics.fid, first.metrics.fid);

    // FID of a set against itself is 0 (features from the cache).
    let mut same = s.clone();
    same.inputs.reference = ImageSet::Files(gen_files.clone());
    let selfie = evaluate_with(&same, &models, &mut NoProgress).unwrap();
    assert_eq!(extracted(&selfie), (0, 0));
    let fid_self = selfie.metrics.fid.unwrap();
    assert!(
        fid_self.abs() < 1e-6 * fid.max(1.0),
        "FID(x, x) = {fid_self}"
    );

    // One new image: one extraction per model.
    image::RgbImage::save(&test_image(999, 50, 30), gen.join("img-99.png")).unwrap();
    let fourth = evaluate_with(&s, &models, &mut NoProgress).unwrap();
    assert_eq!(extracted(&fourth), (1, 1));
    assert_eq!(fourth.counts.generated, 5);
}

#[test]
fn corrupt_image_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (gen, reference) = (tmp.path().join("gen"), tmp.path().join("ref"));
    write_images(&gen, 1, &[Some("a cat"), None]);
    write_images(&reference, 2, &[None, None]);
    let bad = reference.join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let mut s = EvalSettings::new(ImageSet::Folder(gen), ImageSet::Folder(reference));
    s.clip = Some(clip_fixture());
    s.cache = CacheLocation::Disabled;
    let err = evaluate(&s, &mut NoProgress).unwrap_err().to_string();
    assert!(err.contains("broken.jpg"), "{err}");
}

#[test]
fn clip_only_in_memory_with_prompt_lines() {
    let gen: Vec<NamedImage> = (0..3)
        .map(|i| NamedImage {
            name: format!("mem-{i}"),
            image: test_image(300 + i, 32, 32),
            prompt: None,
        })
        .collect();
    let reference: Vec<NamedImage> = (0..2)
        .map(|i| NamedImage {
            name: format!("ref-{i}"),
            image: test_image(400 + i, 32, 32),
            prompt: None,
        })
        .collect();
    let mut s = EvalSettings::new(ImageSet::Memory(gen), ImageSet::Memory(reference));
    s.clip = Some(clip_fixture());
    s.cache = CacheLocation::Disabled;
    s.inputs.prompts = PromptSource::Lines(vec!["a cat, <zz> style".into(), "a dog".into()]);
    let r = evaluate(&s, &mut NoProgress).unwrap();
    assert!(r.metrics.fid.is_none() && r.metrics.kid.is_none());
    assert!(r.metrics.clip_t.is_some() && r.metrics.clip_i.is_some());
    let prompts: Vec<_> = r
        .generated
        .iter()
        .map(|g| g.prompt.clone().unwrap())
        .collect();
    assert_eq!(prompts, ["a cat, <zz> style", "a dog", "a cat, <zz> style"]);
    assert_eq!(r.generated[0].content_prompt.as_deref(), Some("a cat"));
    assert_eq!(r.clip_t_per_prompt.len(), 2);
    assert_eq!(r.clip_t_per_prompt[0].images, 2);
    // The per-prompt score is torchmetrics' rule on that prompt's images.
    let clip = ClipModel::load(&clip_fixture(), &Device::Cpu).unwrap();
    let imgs = [test_image(300, 32, 32), test_image(302, 32, 32)];
    let text = clip.encode_prompts(&["a cat", "a cat"]).unwrap();
    let expected = clip_t_score(&clip.embed_images(&imgs).unwrap(), &text).unwrap() as f64;
    assert!((r.clip_t_per_prompt[0].clip_t - expected).abs() < 1e-4);
    let rows = r.metric_rows();
    assert_eq!(rows[0].value, "skipped");
    assert!(rows[0].detail.contains("--inception"), "{}", rows[0].detail);
    assert_eq!(r.models.clip.as_ref().unwrap().extraction.extracted, 5);

    // Nothing to compute is an error that says what to give.
    let mut none = s.clone();
    none.clip = None;
    let err = evaluate(&none, &mut NoProgress).unwrap_err().to_string();
    assert!(err.contains("CLIP") && err.contains("Inception"), "{err}");
}

/// Mean over all pairs of the cosine matrix of two embedding batches.
fn mean_pair_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<f64> {
    let cos = |x: &[f32], y: &[f32]| {
        let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
        let n = |v: &[f32]| v.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        dot / (n(x) * n(y))
    };
    a.iter()
        .map(|x| b.iter().map(|y| cos(x, y)).sum::<f64>() / b.len() as f64)
        .collect()
}

#[test]
fn csd_style_and_dino_content_and_leak() {
    use styleforge::models::csd::CsdModel;
    use styleforge::models::dino::DinoModel;
    let style_fixtures = clip_fixture().join("../style");
    let named = |base: u64, n: u64| -> Vec<NamedImage> {
        (0..n)
            .map(|i| NamedImage {
                name: format!("img-{base}-{i}"),
                image: test_image(base + i, 40 + 3 * i as u32, 36),
                prompt: None,
            })
            .collect()
    };
    let (gen, reference, content) = (named(500, 3), named(600, 4), named(700, 1));
    let mut s = EvalSettings::new(
        ImageSet::Memory(gen.clone()),
        ImageSet::Memory(reference.clone()),
    );
    s.csd = Some(style_fixtures.join("csd.safetensors"));
    s.dino = Some(style_fixtures.join("dinov2"));
    s.inputs.content = Some(ImageSet::Memory(content.clone()));
    s.cache = CacheLocation::Disabled;
    s.csls_k = 2;
    let r = evaluate(&s, &mut NoProgress).unwrap();
    assert!(r.metrics.fid.is_none() && r.metrics.clip_i.is_none());

    let imgs = |v: &[NamedImage]| v.iter().map(|n| n.image.clone()).collect::<Vec<_>>();
    let csd = CsdModel::load(s.csd.as_ref().unwrap(), &Device::Cpu).unwrap();
    let embed_csd = |v: &[NamedImage]| -> Vec<Vec<f32>> {
        csd.embed_images(&imgs(v)).unwrap().to_vec2().unwrap()
    };
    let per_image = mean_pair_cosine(&embed_csd(&gen), &embed_csd(&reference));
    let mean = per_image.iter().sum::<f64>() / 3.0;
    assert!((r.metrics.csd.unwrap() - mean).abs() < 1e-6);
    for (rec, v) in r.generated.iter().zip(&per_image) {
        assert!((rec.csd.unwrap() - v).abs() < 1e-6);
    }
    assert_eq!(r.metrics.csd_csls.as_ref().unwrap().k, 2);

    let dino = DinoModel::load(s.dino.as_ref().unwrap(), &Device::Cpu).unwrap();
    let embed_dino = |v: &[NamedImage]| -> Vec<Vec<f32>> {
        dino.embed_images(&imgs(v)).unwrap().to_vec2().unwrap()
    };
    let g = embed_dino(&gen);
    let leak = mean_pair_cosine(&g, &embed_dino(&reference));
    assert!((r.metrics.dino_leak.unwrap() - leak.iter().sum::<f64>() / 3.0).abs() < 1e-6);
    // One content reference is compared with every generated image.
    let content_cos = mean_pair_cosine(&g, &embed_dino(&content));
    for (rec, v) in r.generated.iter().zip(&content_cos) {
        assert!((rec.dino_content.unwrap() - v).abs() < 1e-6);
    }
    let expected = content_cos.iter().sum::<f64>() / 3.0;
    assert!((r.metrics.dino_content.unwrap() - expected).abs() < 1e-6);
    assert_eq!(r.models.dino.as_ref().unwrap().extraction.extracted, 8);

    let rows = r.metric_rows();
    for id in ["csd", "csd-csls", "dino-content", "dino-leak"] {
        let row = rows.iter().find(|row| row.id == id).unwrap();
        assert_ne!(row.value, "skipped", "{id}: {}", row.detail);
    }
    // metrics.json carries the new fields and reads back (to the printed precision).
    let json = r.to_json().unwrap();
    let back: EvalResult = serde_json::from_str(&json).unwrap();
    let near = |a: Option<f64>, b: Option<f64>| (a.unwrap() - b.unwrap()).abs() < 1e-12;
    assert!(near(back.metrics.csd, r.metrics.csd));
    assert!(near(back.metrics.dino_content, r.metrics.dino_content));
    assert!(near(back.metrics.dino_leak, r.metrics.dino_leak));
    assert!(near(back.generated[0].csd, r.generated[0].csd));
    assert_eq!(back.models.dino, r.models.dino);

    // A content set that pairs with neither one nor every generated image is refused.
    s.inputs.content = Some(ImageSet::Memory(named(800, 2)));
    let err = evaluate(&s, &mut NoProgress).unwrap_err().to_string();
    assert!(err.contains("one per generated image"), "{err}");
}
