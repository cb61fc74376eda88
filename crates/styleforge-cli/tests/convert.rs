//! `styleforge convert` both ways on the tiny fixtures, and its bad-input behaviour.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use styleforge::models::candle::{DType, Device, Tensor};

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

/// Whether anything under `dir` is a symbolic link.
fn holds_links(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let path = e.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        meta.file_type().is_symlink() || (meta.is_dir() && holds_links(&path))
    })
}

/// The UNet of checkpoint `step` of `run` as the run's model would hold it: its EMA
/// weights, in the trained weights' dtype.
fn ema_unet(run: &Path, step: usize) -> Vec<(String, Vec<f32>)> {
    let ckpt = run.join(format!("checkpoints/step-{step:07}"));
    let raw = load(&ckpt.join("unet.safetensors"));
    let ema = load(&ckpt.join("ema.safetensors"));
    let mut out: Vec<(String, Vec<f32>)> = raw
        .iter()
        .map(|(name, t)| {
            let avg = ema[&format!("unet.{name}")].to_dtype(t.dtype()).unwrap();
            (name.clone(), values(&avg.to_dtype(DType::F32).unwrap()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn unet_of(model: &Path) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<(String, Vec<f32>)> =
        load(&model.join("unet/diffusion_pytorch_model.safetensors"))
            .into_iter()
            .map(|(k, t)| (k, values(&t.to_dtype(DType::F32).unwrap())))
            .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_run_s_checkpoint_exports_as_a_standalone_model() {
    let tmp = tempfile::tempdir().unwrap();
    let style = tmp.path().join("style");
    std::fs::create_dir_all(&style).unwrap();
    for i in 0..2u32 {
        image::RgbImage::from_fn(24, 24, |x, y| {
            image::Rgb([(x * 10) as u8, (y * 10) as u8, (i * 60) as u8])
        })
        .save(style.join(format!("{i}.png")))
        .unwrap();
    }
    let run_dir = tmp.path().join("run");
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let config = format!(
        "method = \"styleforge\"\nseed = 3\n\n[model]\nbase = {}\n\n\
         [[data.concepts]]\nstyle_dir = {}\ntoken = \"ohwx\"\n\n\
         [data]\nresolution = 16\n\n\
         [training]\nnum_aux_images = 1\naux_steps = 1\nema_decay = 0.5\n\n\
         [optim]\nsteps = 3\nlr = 1e-3\n\n\
         [output]\ndir = {}\ncheckpoint_every = 1\nkeep_checkpoints = 10\nvalidate_every = 0\n",
        q(&fixture("tiny-sd1")),
        q(&style),
        q(&run_dir)
    );
    let cfg = tmp.path().join("run.toml");
    std::fs::write(&cfg, config).unwrap();
    let cfg = cfg.display().to_string();
    let o = run(&["--quiet", "train", "--config", &cfg]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run_s = run_dir.display().to_string();

    // A step by number: real files, the checkpoint's EMA weights.
    let out = tmp.path().join("export-2");
    let o = run(&[
        "convert",
        "--from",
        &run_s,
        "--step",
        "2",
        "--to",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("EMA weights"), "{}", stderr(&o));
    assert!(out.join("model_index.json").is_file() && !holds_links(&out));
    assert_eq!(unet_of(&out), ema_unet(&run_dir, 2));

    // `best`: the step a sweep's protocol.json names for the run.
    let sweep = tmp.path().join("sweep");
    std::fs::create_dir_all(&sweep).unwrap();
    let json = serde_json::json!({
        "cells": [],
        "checkpoint_sweeps": [{
            "series": "Single-StyleForge",
            "style": "style",
            "run": run_dir.canonicalize().unwrap(),
            "ema": true,
            "steps": [[1, 0.61, null, null], [2, 0.605, null, null], [3, 0.6, null, null]],
            "plateau": 1
        }]
    });
    std::fs::write(sweep.join("protocol.json"), json.to_string()).unwrap();
    let best = tmp.path().join("export-best");
    let best_s = best.display().to_string();
    let sweep_s = sweep.display().to_string();
    let o = run(&[
        "convert", "--from", &run_s, "--step", "best", "--sweep", &sweep_s, "--to", &best_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(unet_of(&best), ema_unet(&run_dir, 1));

    // Refused, writing nothing: a step not kept, an existing folder, `best` without a
    // sweep, a run folder without a step.
    let none = tmp.path().join("export-none");
    let none_s = none.display().to_string();
    let o = run(&["convert", "--from", &run_s, "--step", "9", "--to", &none_s]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no complete checkpoint of step 9"),
        "{}",
        stderr(&o)
    );
    assert!(!none.exists());
    let o = run(&["convert", "--from", &run_s, "--step", "1", "--to", &best_s]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(unet_of(&best), ema_unet(&run_dir, 1));
    let o = run(&[
        "convert", "--from", &run_s, "--step", "best", "--to", &none_s,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--sweep"), "{}", stderr(&o));
    let o = run(&["convert", "--from", &run_s, "--to", &none_s]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("training run folder"), "{}", stderr(&o));
    assert!(!none.exists());
}
