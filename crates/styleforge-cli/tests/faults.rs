//! The fault campaign in short (`styleforge selftest faults`): a real training run killed
//! with SIGKILL in chosen phases and, on Linux, stopped by a full disk at a checkpoint and
//! at the final model, resumed after each, and compared with an uninterrupted run.

use std::process::Command;

#[test]
fn a_short_fault_campaign_ends_bit_identical_to_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_styleforge"))
        .env("RAYON_NUM_THREADS", "2")
        .args([
            "selftest",
            "faults",
            "--kills",
            "3",
            "--steps",
            "13",
            "--phases",
            "checkpoint,validation,model",
            "--seed",
            "7",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("outcome: PASSED"), "{stdout}");
    // A kill in each chosen phase (one that lands past its phase is counted where it
    // landed and made again; the campaign fails when a chosen phase gets none).
    for phase in [
        "checkpoint write",
        "validation pictures",
        "final model write",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(phase))
            .unwrap_or_else(|| panic!("no row for {phase}: {stdout}"));
        let died: usize = row[phase.len()..]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!(died >= 1, "{stdout}");
    }
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        for what in ["checkpoint write", "final model write"] {
            assert!(
                stdout.contains(&format!("disk full at the {what}: ok")),
                "{stdout}"
            );
        }
    }
}
