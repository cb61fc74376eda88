//! `styleforge generate --lora FILE[:SCALE] --embedding FILE`: the fixture script's kohya
//! LoRA and AUTOMATIC1111 embedding load and change the image; bad files are refused
//! naming the key or token.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn generate(out: &std::path::Path, extra: &[String]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_styleforge"));
    c.env("RAYON_NUM_THREADS", "2").args([
        "generate",
        "--model",
        fixtures().join("tiny-sd1").to_str().unwrap(),
        "--prompt",
        "a a1111_embedding style",
        "--steps",
        "2",
        "--seed",
        "3",
        "--width",
        "16",
        "--height",
        "16",
        "--out",
        out.to_str().unwrap(),
    ]);
    c.args(extra).output().unwrap()
}

#[test]
fn generate_applies_lora_and_embedding_and_refuses_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let lora = fixtures().join("adapters/lora_kohya.safetensors");
    let emb = fixtures().join("adapters/a1111_embedding.safetensors");
    let plain = generate(&tmp.path().join("plain.png"), &[]);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let with = generate(
        &tmp.path().join("with.png"),
        &[
            "--lora".into(),
            format!("{}:0.75", lora.display()),
            "--embedding".into(),
            emb.display().to_string(),
        ],
    );
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let a = image::open(tmp.path().join("plain.png")).unwrap().to_rgb8();
    let b = image::open(tmp.path().join("with.png")).unwrap().to_rgb8();
    assert_ne!(
        a.as_raw(),
        b.as_raw(),
        "the adapters did not change the image"
    );

    // an embedding passed as a LoRA: the offending key is named
    let bad = generate(
        &tmp.path().join("bad.png"),
        &["--lora".into(), emb.display().to_string()],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("emb_params"), "{err}");
    // the same embedding twice: its token already exists
    let twice = generate(
        &tmp.path().join("twice.png"),
        &[
            "--embedding".into(),
            emb.display().to_string(),
            "--embedding".into(),
            emb.display().to_string(),
        ],
    );
    assert!(!twice.status.success());
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(err.contains("a1111_embedding"), "{err}");
}

#[test]
fn stylize_applies_embeddings_as_generate_does() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &std::path::Path, prompt: &str, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_styleforge"));
        c.env("RAYON_NUM_THREADS", "2").args([
            "stylize",
            "--model",
            fixtures().join("tiny-sd1").to_str().unwrap(),
            "--image",
            fixtures()
                .join("pipelines/img2img_input.png")
                .to_str()
                .unwrap(),
            "--prompt",
            prompt,
            "--strength",
            "0.8",
            "--steps",
            "4",
            "--seed",
            "3",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        let o = c.args(extra).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        image::open(out).unwrap().to_rgb8()
    };
    let emb = fixtures().join("adapters/a1111_embedding.safetensors");
    let prompt = "a a1111_embedding style";
    let plain = run(&tmp.path().join("plain.png"), prompt, &[]);
    let with = run(
        &tmp.path().join("with.png"),
        prompt,
        &["--embedding", emb.to_str().unwrap()],
    );
    assert_eq!(plain.dimensions(), with.dimensions());
    assert_ne!(
        plain, with,
        "the embedding did not change the stylized image"
    );
}
