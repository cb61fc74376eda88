//! `styleforge convert` both ways on the tiny fixtures, and its bad-input behaviour.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use styleforge::models::candle::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_styleforge"))
        .env("RAYON_NUM_THREADS", "2")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn load(path: &std::path::Path) -> HashMap<String, Tensor> {
    styleforge::models::candle::safetensors::load(path, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn single_file_to_folder_and_back_is_lossless() {
    for name in ["tiny-sd1", "tiny-sd2"] {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("model");
        let file = fixture(&format!("single_file/{name}.safetensors"));
        let cfg = fixture(name);
        let o = run(&[
            "convert",
            "--from",
            file.to_str().unwrap(),
            "--to",
            folder.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        for part in [
            "model_index.json",
            "unet/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors",
            "scheduler/scheduler_config.json",
            "tokenizer/vocab.json",
        ] {
            assert!(folder.join(part).is_file(), "{name}: {part} missing");
        }
        let back = dir.path().join("back.safetensors");
        let o = run(&[
            "convert",
            "--from",
            folder.to_str().unwrap(),
            "--to",
            back.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let (a, b) = (load(&file), load(&back));
        let mut ka: Vec<&String> = a.keys().collect();
        let mut kb: Vec<&String> = b.keys().collect();
        ka.sort();
        kb.sort();
        assert!(!ka.is_empty(), "{name}: no tensors");
        assert_eq!(ka, kb, "{name}");
        for (k, t) in &a {
            assert_eq!(t.dims(), b[k].dims(), "{name}: {k}");
            assert_eq!(values(t), values(&b[k]), "{name}: {k}");
        }
    }
}

#[test]
fn unrelated_checkpoint_fails_clearly_and_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bert.safetensors");
    let t = Tensor::zeros((2, 3), styleforge::models::candle::DType::F32, &Device::Cpu).unwrap();
    styleforge::models::candle::safetensors::save(
        &HashMap::from([("bert.encoder.layer.0.attention.weight".to_string(), t)]),
        &file,
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "convert",
        "--from",
        file.to_str().unwrap(),
        "--to",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    for prefix in [
        "model.diffusion_model.",
        "first_stage_model.",
        "cond_stage_model.transformer.",
        "cond_stage_model.model.",
    ] {
        assert!(err.contains(prefix), "{err}");
    }
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn truncated_checkpoint_fails_clearly_and_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("single_file/tiny-sd1.safetensors")).unwrap();
    let file = dir.path().join("cut.safetensors");
    std::fs::write(&file, &bytes[..bytes.len() - 1000]).unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "convert",
        "--from",
        file.to_str().unwrap(),
        "--to",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Runs the binary under umask 022, so the expected modes are known whatever the test
/// runner's umask.
#[cfg(unix)]
fn run_with_umask_022(args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_styleforge"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("sh runs")
}

#[cfg(unix)]
#[test]
fn converted_files_and_folders_get_the_normal_mode() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    let file = fixture("single_file/tiny-sd1.safetensors");
    let cfg = fixture("tiny-sd1");
    let o = run_with_umask_022(&[
        "convert",
        "--from",
        file.to_str().unwrap(),
        "--to",
        folder.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut checked = 0;
    for dir in ["", "unet", "vae", "text_encoder", "scheduler", "tokenizer"] {
        assert_eq!(mode(&folder.join(dir)), 0o755, "folder {dir:?}");
        checked += 1;
    }
    for part in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
    ] {
        assert_eq!(mode(&folder.join(part)), 0o644, "{part}");
        checked += 1;
    }
    let back = dir.path().join("back.safetensors");
    let o = run_with_umask_022(&[
        "convert",
        "--from",
        folder.to_str().unwrap(),
        "--to",
        back.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&back), 0o644, "single file");
    assert_eq!(checked + 1, 12);
}
