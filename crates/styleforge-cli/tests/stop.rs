//! SIGTERM to a running `styleforge train`: it finishes the step in progress, writes a
//! checkpoint of it, says how to continue and exits with 143; the command it prints
//! continues the run.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn tiny_base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-sd1")
}

fn style_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..3u8 {
        image::RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([i * 80, ((x + y) * 8) as u8, 120])
        })
        .save(dir.join(format!("img-{i}.png")))
        .unwrap();
    }
}

fn styleforge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_styleforge"));
    c.env("RAYON_NUM_THREADS", "2");
    c
}

#[test]
fn sigterm_stops_train_with_a_checkpoint_of_its_step_and_exit_code_143() {
    let tmp = tempfile::tempdir().unwrap();
    let style = tmp.path().join("style");
    style_images(&style);
    let run = tmp.path().join("run");
    let config = tmp.path().join("train.toml");
    // Far more steps than the test waits for, no periodic checkpoint: only the stop writes one.
    std::fs::write(
        &config,
        format!(
            "method = \"styleforge\"\nseed = 5\n[model]\nbase = {:?}\n\
             [[data.concepts]]\nstyle_dir = {:?}\n[data]\nresolution = 16\n\
             [training]\nnum_aux_images = 2\naux_steps = 2\n\
             [optim]\nsteps = 100000\nlr = 1e-4\n\
             [output]\ndir = {:?}\ncheckpoint_every = 0\nvalidate_every = 0\n\
             validation_steps = 2\nvalidation_prompts = [\"a house, {{token}} style\"]\n",
            tiny_base().display().to_string(),
            style.display().to_string(),
            run.display().to_string()
        ),
    )
    .unwrap();
    let mut child = styleforge()
        .arg("train")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let _ = tx.send(line.clone());
            all.push(line);
        }
        all
    });
    let limit = Instant::now() + Duration::from_secs(300);
    loop {
        match lines.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.starts_with("step ") => break,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() > limit {
            let _ = child.kill();
            panic!("no training step within the time limit");
        }
    }
    // SAFETY: kill(2) with the child's id and a signal number has no memory effects.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    let stderr = reader.join().unwrap().join("\n");
    assert_eq!(status.code(), Some(143), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("SIGTERM: stopping after step ")
            && stderr.contains(": writing a checkpoint (press Ctrl-C again to quit at once)"),
        "{stderr}"
    );
    let resume = format!(
        "; continue with `styleforge train --config {} --resume`",
        run.join("config.toml").display()
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("stopped at step "))
        .unwrap_or_else(|| panic!("no stop message: {stdout}\n{stderr}"));
    assert!(line.ends_with(&resume), "{line}");
    let step: usize = line["stopped at step ".len()..line.len() - resume.len()]
        .parse()
        .unwrap();
    assert!(step >= 1, "{line}");
    let checkpoint = run.join(format!("checkpoints/step-{step:07}/state.json"));
    assert!(checkpoint.is_file(), "no {}", checkpoint.display());
    let record = std::fs::read_to_string(run.join("stopped.json")).unwrap();
    assert!(record.contains("\"requested\""), "{record}");

    // The printed command continues the run (here for two more steps, to its end).
    let out = styleforge()
        .arg("train")
        .arg("--config")
        .arg(run.join("config.toml"))
        .arg("--resume")
        .arg("--steps")
        .arg((step + 2).to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("(step {step})")), "{text}");
    assert!(run.join("model/unet").is_dir());
    assert!(!run.join("stopped.json").exists());
}
