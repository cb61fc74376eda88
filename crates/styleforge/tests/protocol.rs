//! `styleforge::evaluation::protocol` end to end on the tiny SD1 fixture: a LoRA training
//! run (2 steps) and the base model as a plain folder, each generating from two content
//! prompts, scored with the tiny CLIP and a random-weights FID Inception (and, in the first
//! test, the tiny CSD and DINOv2 of `fixtures/style` with the base model's pictures as
//! content references); the table files; a rerun that generates nothing; bad inputs.

#[path = "support/eval_data.rs"]
mod eval_data;

use std::path::{Path, PathBuf};

use eval_data::{clip_fixture, random_inception_weights, write_images};
use styleforge::evaluation::protocol::{
    parse_prompts, run_protocol, ProtocolModel, ProtocolResult, ProtocolSettings, ProtocolStyle,
};
use styleforge::evaluation::CacheLocation;
use styleforge::progress::NoProgress;
use styleforge::training::config::{ConceptConfig, TrainConfig};
use styleforge::training::{train, RunOptions};

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-sd1")
}

/// A finished 2-step LoRA run on tiny-sd1.
fn lora_run(data: &Path, out: &Path) {
    tiny_run("lora", 2, 0, data, out)
}

/// A finished run of `method` on tiny-sd1, `steps` long, checkpointed every
/// `checkpoint_every` steps (0: none), every checkpoint kept.
fn tiny_run(method: &str, steps: usize, checkpoint_every: usize, data: &Path, out: &Path) {
    tiny_run_with(method, steps, checkpoint_every, "", data, out)
}

/// [`tiny_run`] with more `[training]` keys.
fn tiny_run_with(
    method: &str,
    steps: usize,
    checkpoint_every: usize,
    training: &str,
    data: &Path,
    out: &Path,
) {
    write_images(&data.join("style"), 7, &[None, None, None]);
    write_images(&data.join("aux"), 8, &[None, None]);
    let text = format!(
        r#"
method = "{method}"
seed = 3
[model]
base = {:?}
[data]
resolution = 16
[training]
num_aux_images = 2
{training}
[optim]
steps = {steps}
[output]
dir = {:?}
checkpoint_every = {checkpoint_every}
keep_checkpoints = 10
validate_every = 0
"#,
        base().display().to_string(),
        out.display().to_string()
    );
    let mut cfg = TrainConfig::from_toml(&text, Path::new("run.toml")).unwrap();
    cfg.data.concepts = vec![ConceptConfig {
        style_dir: data.join("style"),
        aux_dir: Some(data.join("aux")),
        token: None,
    }];
    let resolved = cfg.resolve().unwrap();
    train(&resolved, &RunOptions::default(), &mut NoProgress).unwrap();
}

fn settings(tmp: &Path, run: &Path) -> ProtocolSettings {
    let reference = tmp.join("reference");
    write_images(&reference, 11, &[None, None, None]);
    let styles = vec![ProtocolStyle {
        name: "test style".into(),
        reference,
    }];
    let models = vec![
        ProtocolModel {
            label: None,
            style: None,
            run: Some(run.to_path_buf()),
            path: None,
            phrase: None,
            checkpoint: None,
        },
        ProtocolModel {
            label: Some("base".into()),
            style: None,
            run: None,
            path: Some(base()),
            phrase: None,
            checkpoint: None,
        },
    ];
    let mut s = ProtocolSettings::new(styles, models, tmp.join("protocol"));
    s.prompts = parse_prompts("person: a man with a hat\nscene: a red house").unwrap();
    s.images_per_prompt = 2;
    s.sampling.steps = 2;
    s.size = Some((16, 16));
    s.eval.inception = Some(random_inception_weights());
    s.eval.clip = Some(clip_fixture());
    s.eval.cache = CacheLocation::Dir(tmp.join("cache"));
    s.eval.kid_subsets = 5;
    s
}

fn cell<'a>(
    r: &'a ProtocolResult,
    label: &str,
) -> &'a styleforge::evaluation::protocol::ProtocolCell {
    r.cells
        .iter()
        .find(|c| c.label == label)
        .unwrap_or_else(|| panic!("no row {label}: {:?}", r.cells))
}

#[test]
fn runs_and_folders_become_one_table_and_reruns_generate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    lora_run(&tmp.path().join("data"), &run);
    let mut s = settings(tmp.path(), &run);
    let style = clip_fixture().join("../style");
    s.eval.csd = Some(style.join("csd.safetensors"));
    s.eval.dino = Some(style.join("dinov2"));
    s.content_from = Some("base".into());

    let r = run_protocol(&s, &mut NoProgress).unwrap();
    assert_eq!(r.cells.len(), 2);
    // Style descriptors: CSD and leak for every row, DINO content against the base's
    // pictures for the others.
    for label in ["LoRA", "base"] {
        let m = &cell(&r, label).metrics;
        assert!(
            m.csd.is_some_and(f64::is_finite) && m.dino_leak.is_some(),
            "{m:?}"
        );
    }
    assert!(cell(&r, "LoRA")
        .metrics
        .dino_content
        .is_some_and(|v| v.abs() <= 1.0));
    assert!(cell(&r, "base").metrics.dino_content.is_none());
    assert!(s.out.join("style-content.png").is_file());
    for label in ["LoRA", "base"] {
        let c = cell(&r, label);
        assert_eq!((c.images, c.generated_now), (4, 4), "{label}");
        let m = &c.metrics;
        for v in [m.fid, m.kid.as_ref().map(|k| k.mean), m.clip_t, m.clip_i] {
            assert!(v.is_some_and(f64::is_finite), "{label}: {m:?}");
        }
        assert!(s.out.join(&c.eval_dir).join("report.html").is_file());
    }
    // The LoRA run's images were prompted with its style phrase, the base's without one.
    let lora_img = s.out.join("images/test-style/lora/p0000-00-1337.png");
    let params = styleforge::image_io::read_png_parameters(&lora_img)
        .unwrap()
        .unwrap();
    assert!(
        params.starts_with("a man with a hat, ohwx style"),
        "{params}"
    );
    let base_img = s.out.join("images/test-style/base/p0001-01-2338.png");
    let params = styleforge::image_io::read_png_parameters(&base_img)
        .unwrap()
        .unwrap();
    assert!(params.starts_with("a red house\n"), "{params}");

    let md = std::fs::read_to_string(&r.markdown).unwrap();
    assert!(md.contains("| LoRA |") && md.contains("| base |"), "{md}");
    assert!(md.contains("FID ↓ test style"), "{md}");
    for header in [
        "CSD ↑ test style",
        "DINO content ↑ test style",
        "leak ↓ test style",
    ] {
        assert!(md.contains(header), "{header}: {md}");
    }
    assert!(md.contains("(style-content.png)"), "{md}");
    let html = std::fs::read_to_string(&r.html).unwrap();
    assert!(html.contains("<table id=\"protocol\">"));
    assert!(s.out.join("protocol.json").is_file());
    fn partials(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .flat_map(|e| {
                let p = e.path();
                if p.is_dir() {
                    partials(&p)
                } else if p.to_string_lossy().ends_with(".partial") {
                    vec![p]
                } else {
                    vec![]
                }
            })
            .collect()
    }
    assert!(partials(&s.out).is_empty(), "{:?}", partials(&s.out));

    // A rerun finds every image on disk and gives the same numbers.
    let again = run_protocol(&s, &mut NoProgress).unwrap();
    for label in ["LoRA", "base"] {
        assert_eq!(cell(&again, label).generated_now, 0);
        assert_eq!(cell(&again, label).metrics, cell(&r, label).metrics);
    }
}

#[test]
fn bad_protocols_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = settings(tmp.path(), &tmp.path().join("no-run"));
    let err = run_protocol(&s, &mut NoProgress).unwrap_err().to_string();
    assert!(err.contains("no-run") && err.contains("config"), "{err}");

    s.models.remove(0);
    s.styles[0].reference = tmp.path().join("missing-ref");
    let err = run_protocol(&s, &mut NoProgress).unwrap_err().to_string();
    assert!(err.contains("missing-ref"), "{err}");

    let mut s = settings(tmp.path(), &tmp.path().join("no-run"));
    s.models.remove(0);
    s.models.push(s.models[0].clone());
    let err = run_protocol(&s, &mut NoProgress).unwrap_err().to_string();
    assert!(err.contains("distinct labels"), "{err}");
    assert!(!s.out.join("protocol.md").exists());

    let mut s = settings(tmp.path(), &tmp.path().join("no-run"));
    s.models.remove(0);
    s.content_from = Some("nobody".into());
    let err = run_protocol(&s, &mut NoProgress).unwrap_err().to_string();
    assert!(err.contains("content_from `nobody`"), "{err}");
}

#[test]
fn shards_then_a_merge_write_what_one_process_writes() {
    use styleforge::evaluation::protocol::ImageProtocol;
    use styleforge::protocol::{merge, run_shard, Launch, Protocol, Shard};

    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    lora_run(&tmp.path().join("data"), &run);
    let s = settings(tmp.path(), &run);
    let single = run_protocol(&s, &mut NoProgress).unwrap();
    let md = std::fs::read_to_string(&single.markdown).unwrap();
    let json = std::fs::read_to_string(s.out.join("protocol.json")).unwrap();
    std::fs::rename(&s.out, tmp.path().join("single")).unwrap();

    let mut p = ImageProtocol::new(&s).unwrap();
    let jobs = p.jobs().unwrap();
    assert_eq!(jobs.len(), 2, "one job per model for two prompts");
    let launch = Launch {
        command: vec!["styleforge".into(), "protocol".into()],
        merge_command: vec!["styleforge".into(), "protocol".into(), "merge".into()],
        cwd: tmp.path().to_path_buf(),
        shards: 2,
    };
    let mut ran = Vec::new();
    for index in 0..2 {
        let shard = Shard { index, count: 2 };
        ran.extend(run_shard(&mut p, shard, Some(&launch), &mut NoProgress).unwrap());
    }
    assert_eq!(ran, jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>());
    let (files, merged) = merge(&mut p, &mut NoProgress).unwrap();
    for c in &merged.cells {
        assert_eq!(
            c.generated_now, 4,
            "{}: the shards' pictures count",
            c.label
        );
    }
    assert_eq!(std::fs::read_to_string(&files.markdown).unwrap(), md);
    assert_eq!(std::fs::read_to_string(&files.json).unwrap(), json);
}

/// The tensors of a safetensors file.
fn tensors(path: &Path) -> std::collections::HashMap<String, styleforge::models::candle::Tensor> {
    styleforge::models::candle::safetensors::load(path, &styleforge::models::candle::Device::Cpu)
        .unwrap()
}

/// Every value of every tensor, by name, as f32.
fn values(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<(String, Vec<f32>)> = tensors(path)
        .into_iter()
        .map(|(k, t)| {
            let v = t
                .to_dtype(styleforge::models::candle::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            (k, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether anything under `dir` is a symbolic link.
fn holds_links(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let path = e.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        meta.file_type().is_symlink() || (meta.is_dir() && holds_links(&path))
    })
}

#[test]
fn checkpoints_of_a_run_become_rows_with_a_plateau() {
    use styleforge::evaluation::protocol::{
        best_checkpoint_step, checkpoint_model, checkpoint_plateaus, export_checkpoint,
        read_run_config, run_checkpoint_steps,
    };
    use styleforge::training::checkpoint::EMA_FILE;
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // An EMA that moves from the second update on (decay 2/11 there), so the average
    // differs from the trained weights by step 2.
    tiny_run_with(
        "styleforge",
        3,
        1,
        "ema_decay = 0.5",
        &tmp.path().join("data"),
        &run,
    );
    assert_eq!(run_checkpoint_steps(&run), [1, 2]);
    let mut s = settings(tmp.path(), &run);
    s.eval.inception = None;
    let style = clip_fixture().join("../style");
    s.eval.csd = Some(style.join("csd.safetensors"));
    s.eval.dino = Some(style.join("dino-vit"));
    s.images_per_prompt = 1;
    let rows = s.models.remove(0);
    s.models = [Some(1), Some(2), None]
        .into_iter()
        .map(|checkpoint| ProtocolModel {
            checkpoint,
            ..rows.clone()
        })
        .collect();
    let r = run_protocol(&s, &mut NoProgress).unwrap();
    let labels: Vec<&str> = r.cells.iter().map(|c| c.label.as_str()).collect();
    // The run writes its EMA as the model, so its checkpoints are scored with the EMA too,
    // and say so.
    assert_eq!(
        labels,
        [
            "Single-StyleForge step 1 (EMA)",
            "Single-StyleForge step 2 (EMA)",
            "Single-StyleForge"
        ]
    );
    assert!(r.cells.iter().all(|c| c.ema), "{:?}", r.cells);
    // The checkpoint's model folder holds the averaged weights, written out (the rest are
    // links to the base), and they are not the trained weights.
    let ckpt = run.join("checkpoints/step-0000002");
    let unet = ckpt.join("model-ema/unet/diffusion_pytorch_model.safetensors");
    assert!(!std::fs::symlink_metadata(&unet)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::symlink_metadata(ckpt.join("model-ema/vae"))
        .unwrap()
        .file_type()
        .is_symlink());
    let ema_values = values(&unet);
    let raw = tensors(&ckpt.join("unet.safetensors"));
    let averaged = tensors(&ckpt.join(EMA_FILE));
    assert_eq!(ema_values.len(), raw.len());
    let mut differ = false;
    for (name, v) in &ema_values {
        assert_eq!(
            tensors(&unet)[name].dtype(),
            raw[name].dtype(),
            "{name}: the dtype the final model is written with"
        );
        let want: Vec<f32> = averaged[&format!("unet.{name}")]
            .to_dtype(raw[name].dtype())
            .unwrap()
            .to_dtype(styleforge::models::candle::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(v, &want, "{name}");
        let trained: Vec<f32> = raw[name]
            .to_dtype(styleforge::models::candle::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        differ |= v != &trained;
    }
    assert!(differ, "the EMA weights equal the trained ones");
    // A run that writes its trained weights (save_ema = false) keeps the linked folder of
    // the checkpoint's own weights.
    let mut raw_cfg = read_run_config(&run).unwrap();
    raw_cfg.save_ema = false;
    let m = checkpoint_model(&raw_cfg, &run, 2).unwrap();
    assert!(!m.ema && m.dir.ends_with("step-0000002/model"));
    assert!(
        std::fs::symlink_metadata(m.dir.join("unet/diffusion_pytorch_model.safetensors"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(r.cells[2].checkpoint, Some(("Single-StyleForge".into(), 3)));
    let plateaus = checkpoint_plateaus(&r);
    assert_eq!(plateaus.len(), 1);
    let p = &plateaus[0];
    assert_eq!(p.steps.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(p.ema);
    let best = p.plateau.expect("a plateau with CSD scores");
    assert!(s.out.join(p.file()).is_file());
    let md = std::fs::read_to_string(&r.markdown).unwrap();
    assert!(
        md.contains("EMA weights): style (CSD) reaches its plateau at step"),
        "{md}"
    );
    // protocol.json records the step, which export reads back.
    assert_eq!(best_checkpoint_step(&s.out, &run, None).unwrap(), best);
    assert_eq!(
        best_checkpoint_step(&s.out.join("protocol.json"), &run, Some("test style")).unwrap(),
        best
    );
    let err = best_checkpoint_step(&s.out, &run, Some("ink"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no style `ink`"), "{err}");
    let err = best_checkpoint_step(&s.out, &tmp.path().join("other"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no checkpoint sweep"), "{err}");

    // Export: a standalone folder of real files that the pipeline loads, with the EMA
    // weights of the checkpoint.
    let exported = tmp.path().join("exported/step-2");
    let e = export_checkpoint(&run, 2, &exported).unwrap();
    assert!(e.ema && !e.final_model && e.step == 2);
    assert!(!holds_links(&exported));
    assert_eq!(
        values(&exported.join("unet/diffusion_pytorch_model.safetensors")),
        ema_values
    );
    styleforge::pipelines::StableDiffusion::load(
        &exported,
        &styleforge::models::folder::LoadOptions::default(),
    )
    .unwrap();
    // The last step has no checkpoint: it is the final model.
    let last = export_checkpoint(&run, 3, &tmp.path().join("exported/final")).unwrap();
    assert!(last.final_model && last.ema);
    assert_eq!(
        values(
            &tmp.path()
                .join("exported/final/unet/diffusion_pytorch_model.safetensors")
        ),
        values(&run.join("model/unet/diffusion_pytorch_model.safetensors"))
    );
    // Refused: a step not kept, an existing folder, a folder inside the base model.
    let err = export_checkpoint(&run, 7, &tmp.path().join("exported/none"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no complete checkpoint of step 7") && err.contains("[1, 2]"),
        "{err}"
    );
    assert!(!tmp.path().join("exported/none").exists());
    let before = values(&exported.join("unet/diffusion_pytorch_model.safetensors"));
    let err = export_checkpoint(&run, 1, &exported)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        values(&exported.join("unet/diffusion_pytorch_model.safetensors")),
        before
    );
    let err = export_checkpoint(&run, 1, &base().join("exported"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("inside the base model"), "{err}");
    assert!(!base().join("exported").exists());

    // Adapter runs' checkpoints are refused with the reason, for scoring and for export.
    let lora = tmp.path().join("lora");
    tiny_run("lora", 2, 1, &tmp.path().join("data-lora"), &lora);
    let err = export_checkpoint(&lora, 1, &tmp.path().join("exported/lora"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("full fine-tuning"), "{err}");
    let mut s2 = settings(tmp.path(), &lora);
    s2.models.truncate(1);
    s2.models[0].checkpoint = Some(1);
    s2.out = tmp.path().join("protocol-lora");
    let err = run_protocol(&s2, &mut NoProgress).unwrap_err().to_string();
    assert!(err.contains("full fine-tuning"), "{err}");
}
