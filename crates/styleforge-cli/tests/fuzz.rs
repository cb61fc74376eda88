//! `styleforge selftest fuzz`: every target runs (so the fuzzer cannot rot), and every
//! input that once made the library panic (tests/fuzz-regressions/<target>/) is replayed.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_styleforge"));
    c.env("RAYON_NUM_THREADS", "2");
    c
}

#[test]
fn every_target_runs_a_few_hundred_iterations_without_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let findings = tmp.path().join("findings");
    let o = bin()
        .args(["selftest", "fuzz", "--iterations", "300", "--seed", "11"])
        .arg("--findings")
        .arg(&findings)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    for target in [
        "safetensors",
        "model-config",
        "train-config",
        "tokenizer",
        "image",
        "png-parameters",
        "adapters",
        "single-file",
        "prompt",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{target} ")))
            .unwrap_or_else(|| panic!("{target} missing:\n{out}"));
        assert!(line.contains(" 300 iterations"), "{line}");
        assert!(line.ends_with("panics 0"), "{line}");
    }
    assert!(!findings.exists(), "inputs were saved:\n{out}");
}

#[test]
fn inputs_that_once_panicked_are_refused_cleanly() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let target = dir.file_name().unwrap().to_str().unwrap().to_string();
        let o = bin()
            .args(["selftest", "fuzz", "--target", &target, "--replay"])
            .arg(&dir)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{target}:\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        replayed += out.lines().filter(|l| l.ends_with(": no panic")).count();
    }
    assert!(replayed >= 2, "only {replayed} inputs replayed");
}

#[test]
fn an_unknown_target_is_named() {
    let o = bin()
        .args(["selftest", "fuzz", "--target", "jpeg", "--iterations", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("jpeg") && err.contains("single-file"), "{err}");
}
