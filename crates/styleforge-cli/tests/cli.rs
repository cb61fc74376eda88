//! The `styleforge` binary as users run it: outputs, exit codes, and bad input leaving no
//! files behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_styleforge"));
    c.env("RAYON_NUM_THREADS", "2");
    c
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn tokenize_json_pads_to_77_and_reports_truncation() {
    let o = run(&["tokenize", "--json", "a photo of zwx style"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), 77);
    assert_eq!(v["ids"][0], 49406);
    assert_eq!(v["length"], 8);
    assert_eq!(v["truncated"], false);
    let long = "word ".repeat(100);
    let o = run(&["tokenize", "--json", &long]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["truncated"], true);
    assert_eq!(v["length"], 102);
    assert!(stderr(&o).contains("dropped"), "{}", stderr(&o));
}

#[test]
fn generate_writes_a_png_with_its_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("img.png");
    let model = fixture("tiny-sd1");
    let o = run(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a red house",
        "--negative-prompt",
        "blurry",
        "--steps",
        "3",
        "--seed",
        "42",
        "--scheduler",
        "euler",
        "--width",
        "32",
        "--height",
        "32",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let params = styleforge::image_io::read_png_parameters(&out)
        .unwrap()
        .unwrap();
    assert!(
        params.starts_with("a red house\nNegative prompt: blurry\n"),
        "{params}"
    );
    assert!(
        params.contains("Steps: 3, Sampler: Euler, CFG scale: 7.5, Seed: 42, Size: 32x32"),
        "{params}"
    );
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (32, 32));
    // The same seed gives the same image.
    let again = tmp.path().join("again.png");
    let o = run(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a red house",
        "--negative-prompt",
        "blurry",
        "--steps",
        "3",
        "--seed",
        "42",
        "--scheduler",
        "euler",
        "--width",
        "32",
        "--height",
        "32",
        "--out",
        again.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success());
    assert_eq!(image::open(&again).unwrap().to_rgb8(), img.to_rgb8());
}

#[test]
fn stylize_writes_an_image_of_the_input_size() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s.png");
    let o = run(&[
        "stylize",
        "--model",
        fixture("tiny-sd1").to_str().unwrap(),
        "--image",
        fixture("pipelines/img2img_input.png").to_str().unwrap(),
        "--prompt",
        "zwx style",
        "--strength",
        "0.5",
        "--steps",
        "4",
        "--seed",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (40, 32));
    let params = styleforge::image_io::read_png_parameters(&out)
        .unwrap()
        .unwrap();
    assert!(params.contains("Denoising strength: 0.5"), "{params}");
}

fn assert_fails_cleanly(args: &[&str], out: &Path, expect: &str) {
    let o = run(args);
    assert!(!o.status.success(), "{args:?} should fail");
    let err = stderr(&o);
    assert!(err.contains(expect), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "{args:?} left {}", out.display());
}

#[test]
fn bad_input_is_a_clear_error_with_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.png");
    let o = out.to_str().unwrap();
    let model = fixture("tiny-sd1");
    let m = model.to_str().unwrap();
    let img = fixture("pipelines/img2img_input.png");
    let i = img.to_str().unwrap();
    assert_fails_cleanly(
        &[
            "generate",
            "--model",
            "/no/such/model",
            "--prompt",
            "x",
            "--out",
            o,
        ],
        &out,
        "not found",
    );
    assert_fails_cleanly(
        &[
            "generate", "--model", m, "--prompt", "x", "--width", "30", "--out", o,
        ],
        &out,
        "multiple of 8",
    );
    assert_fails_cleanly(
        &[
            "generate",
            "--model",
            m,
            "--prompt",
            "x",
            "--scheduler",
            "warp",
            "--out",
            o,
        ],
        &out,
        "warp",
    );
    assert_fails_cleanly(
        &[
            "stylize",
            "--model",
            m,
            "--image",
            i,
            "--prompt",
            "x",
            "--strength",
            "1.5",
            "--out",
            o,
        ],
        &out,
        "strength",
    );
    let bad = tmp.path().join("bad.png");
    std::fs::write(&bad, b"not an image").unwrap();
    assert_fails_cleanly(
        &[
            "stylize",
            "--model",
            m,
            "--image",
            bad.to_str().unwrap(),
            "--prompt",
            "x",
            "--strength",
            "0.5",
            "--out",
            o,
        ],
        &out,
        "bad.png",
    );
}

#[test]
fn train_dry_run_prints_the_effective_config_with_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        "method = \"styleforge\"\n[model]\nbase = \"m\"\n[[data.concepts]]\nstyle_dir = \"s\"\n",
    )
    .unwrap();
    let o = run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "optim.lr=3e-6",
        "--steps",
        "10",
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("steps = 10"), "{text}");
    assert!(
        text.contains("lr = 3e-6") || text.contains("lr = 0.000003"),
        "{text}"
    );
    assert!(text.contains("instance_prompt = \"ohwx style\""), "{text}");
    let o = run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "optim.bogus=1",
        "--dry-run",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bogus"), "{}", stderr(&o));
}

#[test]
fn hub_models_offline_without_cache_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.png");
    let o = bin()
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "generate",
            "--model",
            "nobody/nothing",
            "--prompt",
            "x",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("nobody/nothing"), "{err}");
    assert!(err.contains("not in the Hugging Face cache"), "{err}");
    assert!(!out.exists());

    // tokenize and train take Hub names too, with the same answer offline
    let o = bin()
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .args(["tokenize", "--model", "nobody/nothing", "a cat"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not in the Hugging Face cache"),
        "{}",
        stderr(&o)
    );
    let cfg = tmp.path().join("run.toml");
    let run_dir = tmp.path().join("run");
    std::fs::write(
        &cfg,
        format!(
            "method = \"styleforge\"\n[model]\nbase = \"nobody/nothing\"\n[[data.concepts]]\nstyle_dir = \"s\"\n[output]\ndir = {:?}\n",
            run_dir.display().to_string()
        ),
    )
    .unwrap();
    let o = bin()
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .args(["train", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("nobody/nothing") && err.contains("not in the Hugging Face cache"),
        "{err}"
    );
    assert!(!run_dir.exists(), "a failed Hub lookup left a run folder");

    // eval's --clip takes Hub names (transformers repos) the same way
    let o = bin()
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "eval",
            "--generated",
            tmp.path().to_str().unwrap(),
            "--reference",
            tmp.path().to_str().unwrap(),
            "--clip",
            "nobody/clip",
            "--out",
            tmp.path().join("e").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("nobody/clip") && err.contains("not in the Hugging Face cache"),
        "{err}"
    );
}

#[test]
fn train_save_format_flag_reaches_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        "method = \"styleforge\"\n[model]\nbase = \"m.safetensors\"\nconfig = \"c\"\n[[data.concepts]]\nstyle_dir = \"s\"\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let o = run(&["train", "--config", c, "--save-format", "both", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("save_format = \"both\""), "{text}");
    assert!(text.contains("base_config = \"c\""), "{text}");
    let o = run(&["train", "--config", c, "--save-format", "zip", "--dry-run"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("--save-format") && err.contains("zip"),
        "{err}"
    );
    assert!(err.contains("diffusers, single-file, both"), "{err}");
}

#[test]
fn protocol_explains_what_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&["protocol", "--out", tmp.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nothing to evaluate"), "{}", stderr(&o));
    let o = run(&[
        "protocol",
        "--run",
        "r",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--reference"), "{}", stderr(&o));
    let o = run(&[
        "protocol",
        "--model",
        "base=fixtures/tiny-sd1",
        "--reference",
        tmp.path().to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no metric"), "{}", stderr(&o));
}

#[test]
fn help_lists_every_method_and_sampler() {
    let methods = [
        "styleforge",
        "multi-styleforge",
        "dreambooth",
        "lora",
        "textual-inversion",
        "custom-diffusion",
    ];
    for command in ["train", "protocol"] {
        let o = run(&[command, "--help"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let help = String::from_utf8_lossy(&o.stdout);
        for m in methods {
            assert!(
                help.contains(&format!("{m}:")),
                "{command}: {m} missing\n{help}"
            );
        }
    }
    let o = run(&["generate", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for s in [
        "ddim",
        "pndm",
        "euler",
        "euler_a",
        "dpm++2m",
        "dpm++2m_sde",
        "ddpm",
    ] {
        assert!(help.contains(&format!("{s}:")), "{s} missing\n{help}");
    }
    let o = run(&["train", "--config", "x.toml", "--method", "dreamboth"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("dreamboth") && err.contains("dreambooth"),
        "{err}"
    );
}

#[test]
fn device_choice_is_printed_and_cuda_without_it_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("d.png");
    let o = out.to_str().unwrap();
    let model = fixture("tiny-sd1");
    let m = model.to_str().unwrap();
    let base = [
        "generate", "--model", m, "--prompt", "x", "--steps", "2", "--width", "32", "--height",
        "32",
    ];
    let mut args = base.to_vec();
    args.extend(["--device", "tpu", "--out", o]);
    assert_fails_cleanly(&args, &out, "cpu, cuda, cuda:N or auto");
    if !styleforge::device::cuda_built() {
        let mut args = base.to_vec();
        args.extend(["--device", "cuda:1", "--out", o]);
        assert_fails_cleanly(&args, &out, "built without CUDA");
    }
    let mut args = base.to_vec();
    args.extend(["--device", "cpu", "--out", o]);
    let done = run(&args);
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(stderr(&done).contains("device: cpu"), "{}", stderr(&done));
    assert!(out.is_file());
}

#[test]
fn half_precision_generation_and_training_precision_are_options() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny-sd1");
    let m = model.to_str().unwrap();
    // stylize in bf16 (the VAE encodes in bf16 too), generate in f16.
    let styled = tmp.path().join("s.png");
    let o = run(&[
        "stylize",
        "--model",
        m,
        "--image",
        fixture("pipelines/img2img_input.png").to_str().unwrap(),
        "--prompt",
        "zwx style",
        "--strength",
        "0.5",
        "--steps",
        "2",
        "--seed",
        "1",
        "--dtype",
        "bf16",
        "--out",
        styled.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(image::open(&styled).unwrap().width(), 40);
    let drawn = tmp.path().join("g.png");
    let args = |dtype: &'static str| {
        vec![
            "generate", "--model", m, "--prompt", "x", "--steps", "2", "--width", "32", "--height",
            "32", "--dtype", dtype, "--quiet", "--out",
        ]
    };
    let mut ok = args("f16");
    ok.push(drawn.to_str().unwrap());
    let o = run(&ok);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(drawn.is_file());
    let bad_out = tmp.path().join("bad.png");
    let mut bad = args("f8");
    bad.push(bad_out.to_str().unwrap());
    assert_fails_cleanly(&bad, &bad_out, "f8");
    // train: the key in --help, settable with --set, checked.
    let help = run(&["train", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("precision = fp32|bf16|fp16"), "{help}");
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        "method = \"styleforge\"\n[model]\nbase = \"m\"\n[[data.concepts]]\nstyle_dir = \"s\"\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let o = run(&[
        "train",
        "--config",
        c,
        "--set",
        "training.precision=bf16",
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("precision = \"bf16\""));
    let o = run(&[
        "train",
        "--config",
        c,
        "--set",
        "training.precision=half",
        "--dry-run",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("half"), "{}", stderr(&o));
}

#[test]
fn toy_score_measures_a_model_and_prints_json() {
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/toy");
    let model = assets.join("base-model");
    let o = run(&[
        "toy",
        "score",
        "--device",
        "cpu",
        "--model",
        model.to_str().unwrap(),
        "--probes",
        assets.to_str().unwrap(),
        "--prompts",
        "4",
        "--seeds",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["images"], 4);
    for key in ["style_accuracy", "object_recall", "colour_accuracy"] {
        let x = v[key].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&x), "{key} = {x}");
    }

    // A folder without a model is a clear error naming it.
    let o = run(&[
        "toy",
        "score",
        "--device",
        "cpu",
        "--model",
        assets.join("no-such-model").to_str().unwrap(),
        "--probes",
        assets.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no-such-model"), "{}", stderr(&o));
}
