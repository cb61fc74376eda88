//! LoRA, Textual Inversion and Custom Diffusion through the training engine on the tiny SD1
//! fixture: the method chosen in the config, checkpoints and exact resume, the adapter
//! files of a finished run, and loading them back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::{Rgb, RgbImage};
use styleforge::adapters::custom_diffusion::CustomDiffusionFile;
use styleforge::adapters::lora::{merge_lora_files, LoraFile, LoraFormat};
use styleforge::adapters::textual_inversion::{install_embeddings, EmbeddingFile};
use styleforge::adapters::training::files;
use styleforge::adapters::{BaseWeights, TOKEN_TABLE};
use styleforge::models::folder::ModelFolder;
use styleforge::progress::NoProgress;
use styleforge::training::config::{ConceptConfig, Method, TrainConfig};
use styleforge::training::read_log;
use styleforge::training::{train, RunOptions};

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-sd1")
}

fn make_images(dir: &Path, n: usize, seed: u8) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = RgbImage::from_fn(20, 16, |x, y| {
            let k = seed.wrapping_mul(37).wrapping_add(i as u8 * 53);
            if ((x + 2 * y + i as u32) / 3).is_multiple_of(2) {
                Rgb([k, 255 - k, 40])
            } else {
                Rgb([20, k / 2, 200])
            }
        });
        img.save(dir.join(format!("img-{i:02}.png"))).unwrap();
    }
}

fn config(method: Method, data: &Path, out: &Path, extra: &str, concepts: usize) -> TrainConfig {
    let text = format!(
        r#"
method = "{}"
seed = 5
[model]
base = {:?}
[data]
resolution = 16
[training]
num_aux_images = 3
aux_steps = 2
{extra}
[optim]
steps = 4
lr = 1e-3
[output]
dir = {:?}
checkpoint_every = 2
validate_every = 0
validation_steps = 2
validation_prompts = ["a house, {{token}} style"]
"#,
        method.name(),
        base().display().to_string(),
        out.display().to_string()
    );
    let mut cfg = TrainConfig::from_toml(&text, Path::new("test.toml")).unwrap();
    cfg.data.concepts = (0..concepts)
        .map(|i| ConceptConfig {
            style_dir: data.join(format!("style{i}")),
            aux_dir: Some(data.join("aux")),
            token: None,
        })
        .collect();
    cfg
}

fn dataset() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    make_images(&tmp.path().join("style0"), 3, 1);
    make_images(&tmp.path().join("style1"), 3, 9);
    make_images(&tmp.path().join("aux"), 3, 5);
    tmp
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// The largest |x|.
fn abs_max(x: &Tensor) -> f32 {
    x.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn same(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    for (k, t) in a {
        assert_eq!(abs_max(&(t - &b[k]).unwrap()), 0.0, "{k} differs");
    }
}

/// Trains straight through and with an interruption at step 2; returns the model folder.
fn straight_and_resumed(method: Method, extra: &str, concepts: usize, file: &str) -> PathBuf {
    let data = dataset();
    let keep = data.path().to_path_buf();
    std::mem::forget(data); // the folder outlives this function; the OS temp dir cleans up
    let a = config(method, &keep, &keep.join("a"), extra, concepts)
        .resolve()
        .unwrap();
    let sa = train(&a, &RunOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(sa.steps, 4);
    let b = config(method, &keep, &keep.join("b"), extra, concepts)
        .resolve()
        .unwrap();
    let first = RunOptions {
        resume: false,
        stop_after: Some(2),
        ..Default::default()
    };
    assert_eq!(train(&b, &first, &mut NoProgress).unwrap().steps, 2);
    let resume = RunOptions {
        resume: true,
        stop_after: None,
        ..Default::default()
    };
    let sb = train(&b, &resume, &mut NoProgress).unwrap();
    let da = sa.model_dir.unwrap();
    let db = sb.model_dir.unwrap();
    same(&load(&da.join(file)), &load(&db.join(file)));
    let log = read_log(&keep.join("a/train_log.jsonl"));
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|e| e.loss.is_finite()));
    assert!(keep.join("a/validation/step-0000004.png").is_file());
    da
}

#[test]
fn lora_run_resumes_exactly_and_writes_both_layouts() {
    let dir = straight_and_resumed(
        Method::Lora,
        "lora_rank = 2\nlora_alpha = 4.0\ntrain_text_encoder = true",
        1,
        files::LORA_KOHYA,
    );
    let weights = BaseWeights::load(&base(), DType::F32, &Device::Cpu).unwrap();
    let peft = LoraFile::load(&dir.join(files::LORA_PEFT)).unwrap();
    let kohya = LoraFile::load(&dir.join(files::LORA_KOHYA)).unwrap();
    assert_eq!(peft.format, LoraFormat::Peft);
    assert!(peft.layers.keys().any(|k| k.starts_with("text_encoder.")));
    let [u1, t1] = merge_lora_files(&weights, &[(peft, 1.0)]).unwrap();
    let [u2, t2] = merge_lora_files(&weights, &[(kohya, 1.0)]).unwrap();
    for (a, b) in [(&u1, &u2), (&t1, &t2)] {
        assert_eq!(a.len(), b.len());
        for (k, t) in a {
            let d = (t - &b[k])
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-6, "{k}: {d}");
        }
    }
    // the adapters moved away from the base
    let moved = u1.iter().any(|(k, t)| {
        (t - &weights.unet[k])
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    });
    assert!(moved);
}

#[test]
fn textual_inversion_run_writes_both_embedding_files() {
    let dir = straight_and_resumed(
        Method::TextualInversion,
        "initializer_tokens = [\"a\"]\nnum_vectors = 2",
        1,
        files::TI_DIFFUSERS,
    );
    let e = EmbeddingFile::load(&dir.join(files::TI_DIFFUSERS), None).unwrap();
    assert_eq!(e.token, "<ohwx>");
    assert_eq!(e.vectors.dims(), &[2, 32]);
    let a = EmbeddingFile::load(&dir.join("ohwx.safetensors"), None).unwrap();
    assert_eq!(a.token, "ohwx");
    let weights = BaseWeights::load(&base(), DType::F32, &Device::Cpu).unwrap();
    let mut tok = ModelFolder::open(base()).unwrap().tokenizer().unwrap();
    let (table, p) = install_embeddings(&weights, &mut tok, &[e]).unwrap();
    assert_eq!(p, vec![("<ohwx>".to_string(), 2)]);
    assert_eq!(table[TOKEN_TABLE].dim(0).unwrap(), 1002);
}

#[test]
fn custom_diffusion_run_with_two_modifiers_saves_deltas() {
    let dir = straight_and_resumed(
        Method::CustomDiffusion,
        "initializer_tokens = [\"a\", \"art\"]",
        2,
        files::CUSTOM_DIFFUSION,
    );
    let f = CustomDiffusionFile::load(&dir.join(files::CUSTOM_DIFFUSION)).unwrap();
    let tokens: Vec<&str> = f.embeddings.iter().map(|e| e.token.as_str()).collect();
    assert_eq!(tokens, ["<new1>", "<new2>"]);
    assert!(f
        .deltas
        .iter()
        .all(|(n, _)| n.ends_with("attn2.to_k.weight") || n.ends_with("attn2.to_v.weight")));
    let weights = BaseWeights::load(&base(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(f.unet_overrides(&weights).unwrap().len(), f.deltas.len());
}

#[test]
fn adapter_defaults_follow_the_diffusers_scripts() {
    let data = Path::new("/nonexistent");
    let r = config(Method::Lora, data, &data.join("o"), "", 1);
    let mut r = r;
    r.optim = Default::default();
    let r = r.resolve().unwrap();
    assert_eq!((r.adamw.lr, r.steps, r.adapter.lora_rank), (1e-4, 500, 4));
    assert_eq!(r.adapter.lora_alpha, 4.0);
    assert_eq!(r.prior_loss_weight, 0.0);
    assert!(!r.train_text_encoder);
    let mut t = config(
        Method::TextualInversion,
        data,
        &data.join("o"),
        "num_vectors = 2",
        1,
    );
    t.optim = Default::default();
    let t = t.resolve().unwrap();
    assert_eq!((t.adamw.lr, t.steps, t.max_grad_norm), (5e-4, 3000, 0.0));
    assert_eq!(t.concepts[0].instance_prompt, "<ohwx> <ohwx>_1 style");
    let mut c = config(Method::CustomDiffusion, data, &data.join("o"), "", 2);
    c.optim = Default::default();
    let c = c.resolve().unwrap();
    assert_eq!((c.adamw.lr, c.steps, c.prior_loss_weight), (1e-5, 250, 1.0));
    assert_eq!(c.concepts[1].instance_prompt, "<new2> style");
    assert_eq!(c.adapter.initializer_tokens, ["pll", "ucd"]);
}

#[test]
fn example_configs_parse_and_resolve() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/train");
    for (file, method) in [
        ("lora.toml", Method::Lora),
        ("textual-inversion.toml", Method::TextualInversion),
        ("custom-diffusion.toml", Method::CustomDiffusion),
    ] {
        let cfg = TrainConfig::from_file(&dir.join(file)).unwrap();
        assert_eq!(cfg.method, method);
        cfg.resolve().unwrap();
    }
}

/// Largest |a - b| over the largest |a|, across all tensors (which must match by name).
fn max_relative_difference(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f32 {
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    let (mut diff, mut scale) = (0f32, 0f32);
    for (k, t) in a {
        diff = diff.max(abs_max(&(t - &b[k]).unwrap()));
        scale = scale.max(abs_max(t));
    }
    diff / scale
}

/// Every adapter trains to the same weights with gradient checkpointing as without:
/// LoRA in the UNet and the text encoder, Textual Inversion's token rows (the text
/// encoder's input), Custom Diffusion's cross-attention keys and values and tokens.
#[test]
fn adapters_with_gradient_checkpointing_train_to_the_same_weights() {
    let data = dataset();
    let cases = [
        (
            Method::Lora,
            "lora_rank = 2\nlora_alpha = 4.0\ntrain_text_encoder = true",
            1,
            files::LORA_PEFT,
        ),
        (
            Method::TextualInversion,
            "initializer_tokens = [\"a\"]\nnum_vectors = 2",
            1,
            files::TI_DIFFUSERS,
        ),
        (
            Method::CustomDiffusion,
            "initializer_tokens = [\"a\", \"art\"]",
            2,
            files::CUSTOM_DIFFUSION,
        ),
    ];
    for (method, extra, concepts, file) in cases {
        let mut out = Vec::new();
        for (name, ckpt) in [("plain", ""), ("ckpt", "\ngradient_checkpointing = true")] {
            let dir = data.path().join(format!("{}-{name}", method.name()));
            let mut cfg = config(
                method,
                data.path(),
                &dir,
                &format!("{extra}{ckpt}"),
                concepts,
            );
            cfg.optim.steps = Some(3);
            let cfg = cfg.resolve().unwrap();
            assert_eq!(cfg.gradient_checkpointing, !ckpt.is_empty());
            let s = train(&cfg, &RunOptions::default(), &mut NoProgress).unwrap();
            out.push((
                load(&s.model_dir.unwrap().join(file)),
                read_log(&dir.join("train_log.jsonl")),
            ));
        }
        // Adam divides by the gradient's running scale, so the f32 summation-order noise
        // of near-zero gradient elements moves their weights by up to ~lr: a few 1e-5 of
        // the largest weight after three steps at lr 1e-3.
        let rel = max_relative_difference(&out[0].0, &out[1].0);
        assert!(
            rel <= 5e-5,
            "{method:?}: weights differ by {rel:e} relative"
        );
        assert_eq!(out[1].1.len(), 3);
        for (a, b) in out[0].1.iter().zip(&out[1].1) {
            assert!(
                (a.loss - b.loss).abs() <= 1e-6 * a.loss.abs(),
                "{method:?}: {a:?} vs {b:?}"
            );
            assert!(
                (a.grad_norm - b.grad_norm).abs() <= 1e-5 * a.grad_norm.max(1e-12),
                "{method:?}: {a:?} vs {b:?}"
            );
        }
    }
}
