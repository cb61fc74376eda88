//! The bad-input catalogue: every kind of broken file, config, image, prompt or path a
//! user can hand the `styleforge` binary. Each case runs the real binary and checks what
//! the user sees: a non-zero exit with a message naming the file or key and what was
//! expected, no panic or backtrace, and nothing written (the output absent, the base model
//! unchanged). Inputs that a user rightly expects to work (16-bit and palette PNGs,
//! emoji prompts, paths with spaces or non-UTF-8 bytes) are checked to work.
//!
//! RELIABILITY.md ("Bad input") lists the cases and the messages.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use styleforge::models::candle::{DType, Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_styleforge"));
    c.env("RAYON_NUM_THREADS", "2").env_remove("RUST_BACKTRACE");
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file under `dir` (relative path → length and content hash), and every folder.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if p.is_dir() {
                out.insert(rel, (u64::MAX, 0));
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                out.insert(rel, (bytes.len() as u64, h.finish()));
            }
        }
    }
    out
}

/// Asserts a refusal: non-zero exit, every one of `names` in stderr, no panic, no
/// backtrace. Returns stderr.
fn assert_refused(o: &Output, names: &[&str]) -> String {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected a refusal, got success:\n{err}"
    );
    for n in names {
        assert!(err.contains(n), "`{n}` not named in:\n{err}");
    }
    assert!(err.contains("error:"), "no error line:\n{err}");
    assert_no_panic(&err);
    // What the user sees (shown with --nocapture).
    eprintln!("{err}");
    err
}

fn assert_no_panic(err: &str) {
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!err.contains(bad), "`{bad}` in stderr:\n{err}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A writable copy of the tiny SD 1.x model at `<dir>/<name>`.
fn model_copy(dir: &Path, name: &str) -> PathBuf {
    let m = dir.join(name);
    copy_dir(&fixture("tiny-sd1"), &m);
    m
}

const UNET_WEIGHTS: &str = "unet/diffusion_pytorch_model.safetensors";

fn load_tensors(path: &Path) -> HashMap<String, Tensor> {
    styleforge::models::candle::safetensors::load(path, &Device::Cpu).unwrap()
}

fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) {
    styleforge::models::candle::safetensors::save(tensors, path).unwrap();
}

/// Replaces tensor `name` of the model's UNet weights with `make(old)`.
fn edit_unet_tensor(model: &Path, name: &str, make: impl Fn(&Tensor) -> Tensor) {
    let path = model.join(UNET_WEIGHTS);
    let mut t = load_tensors(&path);
    let new = make(&t[name]);
    t.insert(name.to_string(), new);
    save_tensors(&t, &path);
}

/// `styleforge generate` on `model` at 16×16 in 2 steps, with `extra` arguments.
fn generate(model: &Path, prompt: &str, out: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("generate")
        .arg("--model")
        .arg(model)
        .arg("--prompt")
        .arg(prompt)
        .args([
            "--steps", "2", "--seed", "1", "--width", "16", "--height", "16", "--quiet",
        ])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// A generation from `model` that must be refused naming `names`, writing nothing and
/// leaving the model as it was.
fn generate_refused(model: &Path, names: &[&str]) -> String {
    let before = snapshot(model);
    let out_dir = model.parent().unwrap().join("out");
    let out = out_dir.join("o.png");
    let o = generate(model, "a red house", &out, &[]);
    let err = assert_refused(&o, names);
    assert!(
        !out_dir.exists(),
        "a refused generation left {}",
        out_dir.display()
    );
    assert_eq!(snapshot(model), before, "the model folder changed");
    err
}

/// A minimal training config: `base`, one concept with `style`, output `run`, 2 steps.
fn train_config(base: &Path, style: &Path, run: &Path, extra: &str) -> String {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    format!(
        "method = \"styleforge\"\nseed = 3\n\n[model]\nbase = {}\n\n\
         [[data.concepts]]\nstyle_dir = {}\ntoken = \"ohwx\"\n\n\
         [data]\nresolution = 16\n\n\
         [training]\nnum_aux_images = 1\naux_steps = 1\n\n\
         [optim]\nsteps = 2\nlr = 1e-4\n\n\
         [output]\ndir = {}\ncheckpoint_every = 1\nkeep_checkpoints = 1\n\
         validation_steps = 1\nvalidation_prompts = [\"a house, ohwx style\"]\n{extra}",
        q(base),
        q(style),
        q(run)
    )
}

/// A folder of `n` small valid style images.
fn style_dir(dir: &Path, n: usize) -> PathBuf {
    let s = dir.join("style");
    std::fs::create_dir_all(&s).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(24, 24, |x, y| {
            image::Rgb([(x * 10) as u8, (y * 10) as u8, (i * 60) as u8])
        });
        img.save(s.join(format!("{i}.png"))).unwrap();
    }
    s
}

fn train(config_text: &str, dir: &Path, extra: &[&str]) -> Output {
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, config_text).unwrap();
    bin()
        .arg("--quiet")
        .arg("train")
        .arg("--config")
        .arg(&cfg)
        .args(extra)
        .output()
        .unwrap()
}

/// A training run that must be refused naming `names`, leaving no run folder and the
/// base model as it was.
fn train_refused(base: &Path, style: &Path, extra_toml: &str, names: &[&str]) -> String {
    let dir = base.parent().unwrap();
    let run = dir.join("run");
    let before = snapshot(base);
    let o = train(&train_config(base, style, &run, extra_toml), dir, &[]);
    let err = assert_refused(&o, names);
    assert!(!run.exists(), "a refused run left {}", run.display());
    assert_eq!(snapshot(base), before, "the base model changed");
    err
}

// ---------------------------------------------------------------- weights files

#[test]
fn truncated_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    let path = m.join(UNET_WEIGHTS);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    generate_refused(&m, &[&path.display().to_string()]);
}

#[test]
fn zero_length_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    let path = m.join(UNET_WEIGHTS);
    std::fs::write(&path, b"").unwrap();
    generate_refused(&m, &[&path.display().to_string()]);
}

#[test]
fn oversized_safetensors_header() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    let path = m.join(UNET_WEIGHTS);
    let mut bytes = std::fs::read(&path).unwrap();
    // The header length claims 2^60 bytes.
    bytes[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    generate_refused(&m, &[&path.display().to_string()]);
}

#[test]
fn weights_that_are_not_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    let path = m.join(UNET_WEIGHTS);
    std::fs::write(
        &path,
        b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n",
    )
    .unwrap();
    generate_refused(&m, &[&path.display().to_string()]);
}

#[test]
fn wrong_tensor_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    edit_unet_tensor(&m, "conv_in.weight", |t| {
        Tensor::zeros((t.dim(0).unwrap() + 1, 4, 3, 3), DType::F32, &Device::Cpu).unwrap()
    });
    generate_refused(
        &m,
        &["conv_in.weight", "diffusion_pytorch_model.safetensors"],
    );
}

#[test]
fn integer_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    edit_unet_tensor(&m, "conv_in.weight", |t| {
        Tensor::zeros(t.shape(), DType::I64, &Device::Cpu).unwrap()
    });
    generate_refused(&m, &["conv_in.weight", "floating point"]);
}

fn poisoned_base(dir: &Path, value: f32) -> PathBuf {
    let m = model_copy(dir, "m");
    edit_unet_tensor(&m, "conv_in.weight", |t| {
        let mut v = t
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        v[3] = value;
        Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap()
    });
    m
}

#[test]
fn nan_weights_in_a_base_for_training() {
    let tmp = tempfile::tempdir().unwrap();
    let m = poisoned_base(tmp.path(), f32::NAN);
    let style = style_dir(tmp.path(), 2);
    train_refused(
        &m,
        &style,
        "",
        &["conv_in.weight", "1 NaN", "finite numbers"],
    );
}

#[test]
fn infinite_weights_in_a_base_for_training() {
    let tmp = tempfile::tempdir().unwrap();
    let m = poisoned_base(tmp.path(), f32::INFINITY);
    let style = style_dir(tmp.path(), 2);
    train_refused(
        &m,
        &style,
        "",
        &["conv_in.weight", "1 infinite", "finite numbers"],
    );
}

#[test]
fn single_file_model_that_is_a_lora() {
    // A LoRA handed over as a single-file checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("model.safetensors");
    std::fs::copy(fixture("adapters/lora_kohya.safetensors"), &file).unwrap();
    let out = tmp.path().join("folder");
    let o = bin()
        .arg("convert")
        .arg("--from")
        .arg(&file)
        .arg("--to")
        .arg(&out)
        .output()
        .unwrap();
    assert_refused(&o, &["model.safetensors", "no Stable Diffusion keys"]);
    assert!(!out.exists());
}

#[test]
fn truncated_single_file_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(fixture("single_file/tiny-sd1.safetensors")).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 1000]).unwrap();
    let out = tmp.path().join("folder");
    let o = bin()
        .arg("convert")
        .arg("--from")
        .arg(&file)
        .arg("--to")
        .arg(&out)
        .arg("--config")
        .arg(fixture("tiny-sd1"))
        .output()
        .unwrap();
    assert_refused(&o, &[&file.display().to_string()]);
    assert!(!out.exists());
}

// ---------------------------------------------------------------- configs

fn edit_json(path: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn unet_config_with_absurd_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    edit_json(&m.join("unet/config.json"), |v| {
        v["block_out_channels"] = serde_json::json!([1_000_000, 1_000_000]);
        v["norm_num_groups"] = serde_json::json!(8);
    });
    generate_refused(&m, &["unet/config.json", "block_out_channels", "1000000"]);
}

#[test]
fn text_encoder_config_with_absurd_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    edit_json(&m.join("text_encoder/config.json"), |v| {
        v["num_hidden_layers"] = serde_json::json!(100_000_000u64);
    });
    generate_refused(&m, &["text_encoder/config.json", "num_hidden_layers"]);
}

#[test]
fn vae_config_with_absurd_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    edit_json(&m.join("vae/config.json"), |v| {
        v["layers_per_block"] = serde_json::json!(4_000_000_000u64);
    });
    generate_refused(&m, &["vae/config.json", "layers_per_block"]);
}

#[test]
fn config_json_that_is_not_json() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    std::fs::write(
        m.join("unet/config.json"),
        "{\"block_out_channels\": [32, 64],",
    )
    .unwrap();
    generate_refused(&m, &["unet/config.json"]);
}

#[test]
fn unknown_key_in_the_training_toml() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    let style = style_dir(tmp.path(), 1);
    // A typo in a section and at the top level: both refused, named, with the file.
    let text = train_config(&m, &style, &tmp.path().join("run"), "")
        .replace("lr = 1e-4", "lr = 1e-4\nlearnign_rate = 2e-6");
    assert_refused(
        &train(&text, tmp.path(), &["--dry-run"]),
        &["learnign_rate", "run.toml"],
    );
    let text = format!(
        "methd = \"styleforge\"\n{}",
        train_config(&m, &style, &tmp.path().join("run"), "")
    );
    assert_refused(
        &train(&text, tmp.path(), &["--dry-run"]),
        &["methd", "run.toml"],
    );
}

#[test]
fn training_toml_with_a_wrong_type() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    let style = style_dir(tmp.path(), 1);
    let text = train_config(&m, &style, &tmp.path().join("run"), "")
        .replace("steps = 2", "steps = \"two\"");
    assert_refused(
        &train(&text, tmp.path(), &["--dry-run"]),
        &["steps", "run.toml"],
    );
}

#[test]
fn broken_tokenizer_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    std::fs::write(m.join("tokenizer/vocab.json"), "[1, 2").unwrap();
    let before = snapshot(&m);
    let o = bin()
        .arg("tokenize")
        .arg("--model")
        .arg(&m)
        .arg("a cat")
        .output()
        .unwrap();
    assert_refused(&o, &["vocab.json"]);
    assert_eq!(snapshot(&m), before);
}

// ---------------------------------------------------------------- images

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A PNG written by hand: the IHDR fields, an optional palette, and the raw scanlines
/// (filter bytes included) in one stored (uncompressed) zlib block.
fn png_by_hand(w: u32, h: u32, depth: u8, colour: u8, plte: Option<&[u8]>, raw: &[u8]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    if let Some(p) = plte {
        chunk(&mut out, b"PLTE", p);
    }
    let mut z = vec![0x78, 0x01, 0x01];
    let len = raw.len() as u16;
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(!len).to_le_bytes());
    z.extend_from_slice(raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// An 8×8 CMYK baseline JPEG (Adobe APP14, no transform), written by hand: every block
/// flat (DC difference 0), with one-code Huffman tables.
fn cmyk_jpeg() -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    j.extend_from_slice(&[0xFF, 0xEE, 0x00, 0x0E]);
    j.extend_from_slice(b"Adobe");
    j.extend_from_slice(&[0x00, 0x64, 0, 0, 0, 0, 0]);
    j.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    j.extend_from_slice(&[1u8; 64]);
    j.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x14, 8, 0, 8, 0, 8, 4]);
    for c in 1..=4u8 {
        j.extend_from_slice(&[c, 0x11, 0]);
    }
    for class in [0x00u8, 0x10] {
        j.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, class, 1]);
        j.extend_from_slice(&[0u8; 15]);
        j.push(0);
    }
    j.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x0E, 4]);
    for c in 1..=4u8 {
        j.extend_from_slice(&[c, 0x00]);
    }
    j.extend_from_slice(&[0, 63, 0]);
    // Four blocks of two bits each (DC category 0, then end of block): 0b00000000.
    j.push(0x00);
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

/// `stylize` on an input image file holding `bytes`; returns the output and its path.
fn stylize(tmp: &Path, name: &str, bytes: &[u8]) -> (Output, PathBuf, PathBuf) {
    let input = tmp.join(name);
    std::fs::write(&input, bytes).unwrap();
    let out = tmp.join("out").join("s.png");
    let o = bin()
        .arg("stylize")
        .arg("--model")
        .arg(fixture("tiny-sd1"))
        .arg("--image")
        .arg(&input)
        .args([
            "--prompt",
            "zwx style",
            "--strength",
            "0.5",
            "--steps",
            "2",
            "--seed",
            "1",
            "--quiet",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    (o, input, out)
}

fn stylize_refused(name: &str, bytes: &[u8], names: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let (o, input, out) = stylize(tmp.path(), name, bytes);
    let mut all = names.to_vec();
    let shown = input.display().to_string();
    all.push(&shown);
    let err = assert_refused(&o, &all);
    assert!(!out.parent().unwrap().exists(), "left {}", out.display());
    err
}

fn stylize_works(name: &str, bytes: &[u8]) -> image::RgbImage {
    let tmp = tempfile::tempdir().unwrap();
    let (o, _, out) = stylize(tmp.path(), name, bytes);
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    assert_no_panic(&stderr(&o));
    image::open(&out).unwrap().to_rgb8()
}

#[test]
fn undecodable_image() {
    stylize_refused(
        "noise.png",
        b"\x89PNG\r\n\x1a\nthis is no image",
        &["cannot decode"],
    );
}

#[test]
fn zero_byte_image() {
    stylize_refused("empty.jpg", b"", &["cannot decode"]);
}

#[test]
fn cmyk_jpeg_is_read() {
    let img = stylize_works("cmyk.jpg", &cmyk_jpeg());
    assert_eq!(img.dimensions(), (8, 8));
}

#[test]
fn sixteen_bit_png_is_read() {
    // 8×8 RGB, 16 bits per channel.
    let mut raw = Vec::new();
    for y in 0..8u16 {
        raw.push(0);
        for x in 0..8u16 {
            for c in [x * 8000, y * 8000, 30000] {
                raw.extend_from_slice(&c.to_be_bytes());
            }
        }
    }
    let img = stylize_works("deep.png", &png_by_hand(8, 8, 16, 2, None, &raw));
    assert_eq!(img.dimensions(), (8, 8));
}

#[test]
fn palette_png_is_read() {
    let plte = [255, 0, 0, 0, 0, 255];
    let mut raw = Vec::new();
    for y in 0..8u8 {
        raw.push(0);
        raw.extend((0..8u8).map(|x| (x + y) % 2));
    }
    let img = stylize_works("palette.png", &png_by_hand(8, 8, 8, 3, Some(&plte), &raw));
    assert_eq!(img.dimensions(), (8, 8));
}

#[test]
fn huge_dimension_png_is_refused_without_allocating() {
    // The header claims 100000×100000 RGB (30 GB decoded); the data is one byte.
    let bomb = png_by_hand(100_000, 100_000, 8, 2, None, &[0]);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bomb.png");
    std::fs::write(&input, &bomb).unwrap();
    let out = tmp.path().join("out/s.png");
    let mut cmd = bin();
    cmd.arg("stylize")
        .arg("--model")
        .arg(fixture("tiny-sd1"))
        .arg("--image")
        .arg(&input)
        .args(["--prompt", "x", "--strength", "0.5", "--steps", "2"])
        .arg("--out")
        .arg(&out);
    // The process may not even reserve 4 GiB of address space.
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert_refused(&o, &["bomb.png", "limit"]);
    assert!(!out.parent().unwrap().exists());
}

#[test]
fn undecodable_image_in_training_data() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    let style = style_dir(tmp.path(), 2);
    let bad = style.join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 truncated").unwrap();
    train_refused(&m, &style, "", &["broken.jpg"]);
}

#[test]
fn zero_byte_image_in_an_eval_set() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = style_dir(&tmp.path().join("g"), 2);
    std::fs::write(gen.join("empty.png"), b"").unwrap();
    let reference = style_dir(&tmp.path().join("r"), 2);
    let out = tmp.path().join("eval");
    let o = bin()
        .arg("eval")
        .arg("--generated")
        .arg(&gen)
        .arg("--reference")
        .arg(&reference)
        .arg("--clip")
        .arg(fixture("clip-tiny"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_refused(&o, &["empty.png"]);
    assert!(!out.exists());
}

// ---------------------------------------------------------------- prompts

#[test]
fn emoji_only_prompt_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("e.png");
    let o = generate(&fixture("tiny-sd1"), "🎨🏠🌅", &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let params = styleforge::image_io::read_png_parameters(&out)
        .unwrap()
        .unwrap();
    assert!(params.starts_with("🎨🏠🌅\n"), "{params}");
}

#[test]
fn prompt_with_control_characters_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c.png");
    let o = generate(
        &fixture("tiny-sd1"),
        "a red\u{7} house\u{1b}[31m",
        &out,
        &[],
    );
    assert_refused(&o, &["control character", "U+0007", "--prompt"]);
    assert!(!out.exists());
    let o = generate(
        &fixture("tiny-sd1"),
        "a house",
        &out,
        &["--negative-prompt", "blur\u{1b}ry"],
    );
    assert_refused(&o, &["control character", "U+001B", "--negative-prompt"]);
    assert!(!out.exists());
    // Line breaks and tabs are white space, as CLIP reads them.
    let o = generate(&fixture("tiny-sd1"), "a red\thouse\nby the sea", &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn control_characters_in_a_training_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    let style = style_dir(tmp.path(), 1);
    let text = train_config(&m, &style, &tmp.path().join("run"), "").replace(
        "[\"a house, ohwx style\"]",
        "[\"a house\\u0007, ohwx style\"]",
    );
    let o = train(&text, tmp.path(), &["--dry-run"]);
    assert_refused(&o, &["output.validation_prompts[0]", "U+0007", "run.toml"]);
    assert!(!tmp.path().join("run").exists());
}

#[test]
fn tokenize_reports_control_characters() {
    let o = bin().args(["tokenize", "a\u{8}cat"]).output().unwrap();
    assert_refused(&o, &["control character", "U+0008"]);
}

// ---------------------------------------------------------------- paths

#[test]
fn paths_with_spaces_work() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "my model");
    let out = tmp.path().join("my outputs/a picture.png");
    let o = generate(&m, "a house", &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.is_file());
}

#[cfg(unix)]
#[test]
fn non_utf8_paths_work() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let name = OsStr::from_bytes(b"mod\xffel");
    let m = model_copy(tmp.path(), name.to_str().unwrap_or("x"));
    let m = if name.to_str().is_none() {
        let target = tmp.path().join(name);
        std::fs::rename(&m, &target).unwrap();
        target
    } else {
        m
    };
    let out = tmp.path().join(OsStr::from_bytes(b"out\xfe.png"));
    let o = generate(&m, "a house", &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.is_file());
}

#[test]
fn output_folder_inside_the_base_model() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    let style = style_dir(tmp.path(), 2);
    let before = snapshot(&m);
    let run = m.join("unet/run");
    let o = train(&train_config(&m, &style, &run, ""), tmp.path(), &[]);
    assert_refused(&o, &["inside the base model", "output.dir"]);
    assert_eq!(snapshot(&m), before, "the base model changed");
}

/// The binary run as an unprivileged user: itself when not root; as root (which ignores
/// permissions) through `setpriv` as `nobody`, when there is one.
#[cfg(unix)]
fn unprivileged() -> Option<Command> {
    if unsafe { libc::geteuid() } != 0 {
        return Some(bin());
    }
    let setpriv = Path::new("/usr/bin/setpriv");
    if !setpriv.exists() {
        return None;
    }
    let mut c = Command::new(setpriv);
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_styleforge"))
        .env("RAYON_NUM_THREADS", "2")
        .env_remove("RUST_BACKTRACE");
    Some(c)
}

#[cfg(unix)]
#[test]
fn unwritable_output_folder() {
    use std::os::unix::fs::PermissionsExt;
    let Some(mut generate) = unprivileged() else {
        eprintln!("skipped: running as root without setpriv (root ignores permissions)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let m = model_copy(tmp.path(), "m");
    let out = ro.join("sub/o.png");
    let o = generate
        .arg("generate")
        .arg("--model")
        .arg(&m)
        .args([
            "--prompt", "x", "--steps", "2", "--width", "16", "--height", "16",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = assert_refused(&o, &[&ro.display().to_string(), "cannot write into"]);
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0, "{err}");
    // A training run into it: refused before anything is computed.
    let style = style_dir(tmp.path(), 2);
    let run = ro.join("run");
    let cfg = tmp.path().join("run.toml");
    std::fs::write(&cfg, train_config(&m, &style, &run, "")).unwrap();
    let o = unprivileged()
        .unwrap()
        .arg("train")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_refused(
        &o,
        &[&run.display().to_string(), "cannot create the run folder"],
    );
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// ---------------------------------------------------------------- resume

/// A finished 2-step run of `base` in `<dir>/run`; returns the run folder.
fn finished_run(dir: &Path, base: &Path, style: &Path) -> PathBuf {
    let run = dir.join("run");
    let o = train(&train_config(base, style, &run, ""), dir, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run.join("checkpoints").is_dir());
    run
}

#[test]
fn resume_with_a_changed_config_or_base() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_copy(tmp.path(), "m");
    let style = style_dir(tmp.path(), 2);
    let run = finished_run(tmp.path(), &m, &style);
    let before = snapshot(&run);
    // Another learning rate: not the run the checkpoints belong to.
    let text = train_config(&m, &style, &run, "").replace("lr = 1e-4", "lr = 3e-4");
    let o = train(&text, tmp.path(), &["--resume"]);
    assert_refused(&o, &["--resume", "adamw.lr", "config.toml"]);
    assert_eq!(
        snapshot(&run),
        before,
        "a refused resume changed the run folder"
    );
    // More steps is how a run is extended: allowed (checked with --dry-run-free resume
    // below only for the refusal; the extension itself is covered by the trainer's tests).
    // The base model's weights changed under the run.
    edit_unet_tensor(&m, "conv_in.bias", |t| (t + 1.0).unwrap());
    let o = train(
        &train_config(&m, &style, &run, ""),
        tmp.path(),
        &["--resume"],
    );
    assert_refused(&o, &["--resume", "base model", &m.display().to_string()]);
    assert_eq!(
        snapshot(&run),
        before,
        "a refused resume changed the run folder"
    );
}

// ---------------------------------------------------------------- adapters

fn write_tensors(path: &Path, tensors: Vec<(&str, Tensor)>) {
    let map: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| (k.to_string(), t))
        .collect();
    save_tensors(&map, path);
}

fn randn(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
}

#[test]
fn lora_made_for_another_architecture() {
    // An SD 2.x-sized LoRA (1024-wide cross-attention context) for a layer the tiny SD 1.x
    // model has with a 32-wide context.
    let tmp = tempfile::tempdir().unwrap();
    let lora = tmp.path().join("sd2_lora.safetensors");
    let key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    write_tensors(
        &lora,
        vec![
            (&format!("{key}.lora_down.weight"), randn(&[4, 1024])),
            (&format!("{key}.lora_up.weight"), randn(&[32, 4])),
        ],
    );
    let out = tmp.path().join("o.png");
    let o = generate(
        &fixture("tiny-sd1"),
        "x",
        &out,
        &["--lora", lora.to_str().unwrap()],
    );
    assert_refused(&o, &[key, "1024"]);
    assert!(!out.exists());
}

#[test]
fn embedding_made_for_another_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("wide.safetensors");
    write_tensors(&emb, vec![("emb_params", randn(&[2, 1024]))]);
    let out = tmp.path().join("o.png");
    let o = generate(
        &fixture("tiny-sd1"),
        "a wide style",
        &out,
        &["--embedding", emb.to_str().unwrap()],
    );
    assert_refused(&o, &["wide", "1024"]);
    assert!(!out.exists());
}

#[test]
fn checkpoint_of_another_method_as_a_lora() {
    // A full fine-tuning's UNet weights handed over as a LoRA.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("unet.safetensors");
    std::fs::copy(fixture("tiny-sd1").join(UNET_WEIGHTS), &file).unwrap();
    let out = tmp.path().join("o.png");
    let o = generate(
        &fixture("tiny-sd1"),
        "x",
        &out,
        &["--lora", file.to_str().unwrap()],
    );
    assert_refused(&o, &["unet.safetensors", "is not a lora_A/lora_B"]);
    assert!(!out.exists());
}

#[test]
fn lora_as_a_custom_diffusion_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.png");
    let lora = fixture("adapters/lora_kohya.safetensors");
    let o = generate(
        &fixture("tiny-sd1"),
        "x",
        &out,
        &["--custom-diffusion", lora.to_str().unwrap()],
    );
    assert_refused(&o, &["lora_kohya.safetensors", "Custom Diffusion key"]);
    assert!(!out.exists());
}
