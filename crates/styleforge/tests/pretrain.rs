//! `styleforge pretrain` on a micro architecture: the VAE and UNet stages write a diffusers
//! folder that loads and generates, an interrupted run resumes bit-identically, f16
//! weights load with no flag, and a folder source with an uncaptioned image trains.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use styleforge::pipelines::{SamplingOptions, StableDiffusion, Txt2ImgRequest};
use styleforge::progress::NoProgress;
use styleforge::training::pretrain::{
    pretrain, write_standard_tokenizer, DataSource, PretrainConfig, PretrainOptions, Stage,
};
use styleforge_models::folder::LoadOptions;
use styleforge_models::tokenizer::ClipTokenizer;
use styleforge_schedulers::SeededNoise;

#[path = "support/training.rs"]
mod training_support;
use training_support::StopAt;

/// A micro architecture: UNet [32, 64], text encoder hidden 16 / 2 layers with the real
/// 49,408-token vocabulary, a one-block VAE with 8 channels.
fn micro_config_dir(root: &Path) -> PathBuf {
    let dir = root.join("config");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/toy/base-config");
    let copy = |rel: &str| {
        let to = dir.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(base.join(rel), to).unwrap();
    };
    copy("model_index.json");
    copy("scheduler/scheduler_config.json");
    let write = |rel: &str, text: &str| {
        let to = dir.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, text).unwrap();
    };
    write(
        "unet/config.json",
        r#"{"_class_name": "UNet2DConditionModel", "attention_head_dim": 2,
        "block_out_channels": [32, 64], "cross_attention_dim": 16,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
        "norm_num_groups": 8, "sample_size": 16}"#,
    );
    write(
        "text_encoder/config.json",
        r#"{"architectures": ["CLIPTextModel"], "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
        "vocab_size": 49408, "projection_dim": 16, "hidden_act": "quick_gelu",
        "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1}"#,
    );
    write(
        "vae/config.json",
        r#"{"_class_name": "AutoencoderKL", "block_out_channels": [8],
        "down_block_types": ["DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D"],
        "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4,
        "mid_block_add_attention": false, "sample_size": 16}"#,
    );
    dir
}

fn micro_run(root: &Path, out: &str) -> PretrainConfig {
    let mut cfg = PretrainConfig::default();
    cfg.model.config = micro_config_dir(root);
    cfg.data.size = 16;
    cfg.vae.steps = 3;
    cfg.vae.batch = 4;
    cfg.vae.eval_images = 7;
    cfg.vae.eval_every = 0;
    cfg.unet.steps = 3;
    cfg.unet.batch = 4;
    cfg.unet.warmup_steps = 1;
    cfg.unet.lr = 1e-3;
    cfg.output.dir = root.join(out);
    cfg.output.checkpoint_every = 0;
    cfg.output.sample_every = 0;
    cfg.output.sample_steps = 2;
    cfg
}

fn load(dir: &Path) -> StableDiffusion {
    StableDiffusion::load(dir, &LoadOptions::default()).expect("the model folder loads")
}

fn generate(sd: &StableDiffusion) -> candle_core::Tensor {
    let req = Txt2ImgRequest {
        sampling: SamplingOptions {
            prompt: "a red house on grass by day, sketch style".to_string(),
            steps: 2,
            ..Default::default()
        },
        width: 16,
        height: 16,
        latents: None,
    };
    sd.txt2img(&req, &mut SeededNoise::new(1), &mut NoProgress)
        .expect("txt2img runs")
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn pretrain_writes_a_loadable_model_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = micro_run(tmp.path(), "straight");
    cfg.output.sample_every = 3;
    let summary = pretrain(&cfg, &PretrainOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(summary.steps, 3);
    assert!(summary.finished);
    let vae = summary.vae.expect("the VAE stage ran");
    assert!(vae.scaling_factor.is_finite() && vae.scaling_factor > 0.0);
    let model = summary.model_dir.expect("a model folder");
    for f in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ] {
        assert!(model.join(f).is_file(), "model/{f} missing");
    }
    let out = &cfg.output.dir;
    assert!(out.join("train_log.jsonl").is_file());
    assert!(out.join("loss.png").is_file());
    assert!(out.join("samples/step-0000003.png").is_file());
    let vae_cfg: serde_json::Value =
        serde_json::from_slice(&bytes(&model.join("vae/config.json"))).unwrap();
    assert!((vae_cfg["scaling_factor"].as_f64().unwrap() - vae.scaling_factor).abs() < 1e-9);

    let sd = load(&model);
    assert_eq!(sd.vae_scale_factor(), 1);
    let image = generate(&sd);
    assert_eq!(image.dims(), &[1, 3, 16, 16]);

    // Interrupted after step 2, resumed to step 3: the same weights to the bit.
    let cfg_b = micro_run(tmp.path(), "interrupted");
    let stop = PretrainOptions {
        stop_after: Some(2),
        ..Default::default()
    };
    let first = pretrain(&cfg_b, &stop, &mut NoProgress).unwrap();
    assert_eq!(first.steps, 2);
    assert!(!first.finished);
    let resume = PretrainOptions {
        resume: true,
        ..Default::default()
    };
    let second = pretrain(&cfg_b, &resume, &mut NoProgress).unwrap();
    assert_eq!(second.steps, 3);
    assert!(second.finished);
    let model_b = second.model_dir.unwrap();
    for f in [
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ] {
        assert!(
            bytes(&model.join(f)) == bytes(&model_b.join(f)),
            "{f} differs after resume"
        );
    }
    let log_a = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    let log_b = std::fs::read_to_string(cfg_b.output.dir.join("train_log.jsonl")).unwrap();
    let losses = |t: &str| -> Vec<f64> {
        t.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(losses(&log_a), losses(&log_b));

    // A fresh run into a folder with checkpoints is refused without --resume.
    assert!(pretrain(&cfg_b, &PretrainOptions::default(), &mut NoProgress).is_err());
}

#[test]
fn pretraining_with_an_ema_writes_the_average_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let with_ema = |out: &str| {
        let mut cfg = micro_run(tmp.path(), out);
        cfg.unet.ema_decay = Some(0.9);
        cfg
    };
    let plain = pretrain(
        &micro_run(tmp.path(), "plain"),
        &PretrainOptions::default(),
        &mut NoProgress,
    )
    .unwrap();
    let straight = pretrain(
        &with_ema("ema"),
        &PretrainOptions::default(),
        &mut NoProgress,
    )
    .unwrap();
    let split = with_ema("ema-split");
    let stop = PretrainOptions {
        stop_after: Some(2),
        ..Default::default()
    };
    assert_eq!(pretrain(&split, &stop, &mut NoProgress).unwrap().steps, 2);
    let resume = PretrainOptions {
        resume: true,
        ..Default::default()
    };
    let resumed = pretrain(&split, &resume, &mut NoProgress).unwrap();
    let unet = |m: &Option<PathBuf>| {
        bytes(
            &m.as_ref()
                .unwrap()
                .join("unet/diffusion_pytorch_model.safetensors"),
        )
    };
    assert!(
        unet(&straight.model_dir) == unet(&resumed.model_dir),
        "the EMA model differs after resume"
    );
    assert!(
        unet(&straight.model_dir) != unet(&plain.model_dir),
        "the EMA model equals the last weights"
    );
}

#[test]
fn f16_weights_load_with_no_flag_and_an_uncaptioned_folder_image_trains() {
    let tmp = tempfile::tempdir().unwrap();
    // A captioned folder from the world, one caption removed.
    let data = tmp.path().join("data");
    styleforge_world::World::new(3)
        .with_size(16)
        .write_folder(&data, 0..6, &styleforge_world::CaptionKind::Full)
        .unwrap();
    std::fs::remove_file(data.join("img_0002.txt")).unwrap();

    let mut cfg = micro_run(tmp.path(), "folder");
    cfg.data.source = DataSource::Folder;
    cfg.data.folder = Some(data);
    cfg.unet.steps = 2;
    cfg.output.f16 = true;
    let summary = pretrain(&cfg, &PretrainOptions::default(), &mut NoProgress).unwrap();
    let model = summary.model_dir.unwrap();
    let tensors = candle_core::safetensors::load(
        model.join("unet/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(tensors.values().all(|t| t.dtype() == DType::F16));
    let image = generate(&load(&model));
    assert_eq!(image.dims(), &[1, 3, 16, 16]);

    // The VAE-only stage retrains just the VAE.
    let opts = PretrainOptions {
        stage: Stage::Vae,
        ..Default::default()
    };
    let vae_only = pretrain(&cfg, &opts, &mut NoProgress).unwrap();
    assert!(vae_only.vae.is_some() && vae_only.model_dir.is_none());
}

#[test]
fn written_tokenizer_folder_is_the_standard_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tokenizer");
    write_standard_tokenizer(&dir).unwrap();
    let written = ClipTokenizer::from_folder(&dir).unwrap();
    let standard = ClipTokenizer::standard().unwrap();
    assert_eq!(written.vocab_size(), standard.vocab_size());
    let world = styleforge_world::World::new(0);
    for i in 0..50 {
        let caption = world.sample(i).caption;
        assert_eq!(
            written.encode_padded(&caption).ids,
            standard.encode_padded(&caption).ids
        );
    }
}

#[test]
fn a_warm_start_begins_from_the_given_model_and_min_snr_changes_the_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let first = pretrain(
        &micro_run(tmp.path(), "first"),
        &PretrainOptions::default(),
        &mut NoProgress,
    )
    .unwrap();
    let init = first.model_dir.unwrap();
    let warm = |out: &str, lr: f64, gamma: Option<f64>| {
        let mut cfg = micro_run(tmp.path(), out);
        cfg.model.init = Some(init.clone());
        cfg.unet.steps = 1;
        cfg.unet.warmup_steps = 0;
        cfg.unet.lr = lr;
        cfg.objective.snr_gamma = gamma;
        cfg
    };
    let tensors = |dir: &Path, file: &str| {
        candle_core::safetensors::load(dir.join(file), &Device::Cpu).unwrap()
    };
    let same = |a: &Path, b: &Path, file: &str| {
        let (ta, tb) = (tensors(a, file), tensors(b, file));
        assert_eq!(ta.len(), tb.len(), "{file}");
        for (name, t) in &ta {
            let diff = (t - &tb[name])
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(diff, 0.0, "{file}: {name}");
        }
    };
    // A step at learning rate 0 leaves every weight of the starting model as it was.
    let still = pretrain(
        &warm("still", 0.0, None),
        &PretrainOptions::default(),
        &mut NoProgress,
    )
    .unwrap();
    let still_dir = still.model_dir.unwrap();
    assert_eq!(
        still.vae.as_ref().unwrap().steps,
        0,
        "the VAE is taken, not trained"
    );
    for file in [
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ] {
        same(&init, &still_dir, file);
    }
    // Min-SNR weighting changes the step (same seed, same batch).
    let plain = pretrain(
        &warm("plain", 1e-3, None),
        &PretrainOptions::default(),
        &mut NoProgress,
    )
    .unwrap();
    let snr = pretrain(
        &warm("snr", 1e-3, Some(1e-3)),
        &PretrainOptions::default(),
        &mut NoProgress,
    )
    .unwrap();
    assert!(plain.last_loss.is_finite() && snr.last_loss.is_finite());
    assert!(
        snr.last_loss < plain.last_loss,
        "min-SNR weights are at most 1: {} vs {}",
        snr.last_loss,
        plain.last_loss
    );
    // A model of another architecture is refused, naming the tensor.
    let mut other = warm("other", 1e-3, None);
    other.model.init =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/toy/base-model"));
    let err = pretrain(&other, &PretrainOptions::default(), &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape") || err.contains("no tensor"), "{err}");
}

#[test]
fn a_stop_request_ends_the_vae_stage_at_once_and_the_unet_stage_with_a_checkpoint() {
    use styleforge::training::{StopReason, StopSignal};
    let tmp = tempfile::tempdir().unwrap();
    let cfg = micro_run(tmp.path(), "stopped");
    let out = &cfg.output.dir;
    // Raised before the call: the VAE stage, which keeps no checkpoints, writes nothing.
    let stop = StopSignal::new();
    stop.request();
    let opts = PretrainOptions {
        stop: stop.clone(),
        ..Default::default()
    };
    let s = pretrain(&cfg, &opts, &mut NoProgress).unwrap();
    assert_eq!(s.stopped, Some(StopReason::Requested));
    assert!(s.vae.is_none() && !out.join("vae").exists());

    let stop = StopSignal::new();
    let opts = PretrainOptions {
        stop: stop.clone(),
        ..Default::default()
    };
    let s = pretrain(&cfg, &opts, &mut StopAt { at: 1, stop }).unwrap();
    assert_eq!(
        (s.steps, s.stopped, s.finished),
        (1, Some(StopReason::Requested), false)
    );
    assert!(out.join("checkpoints/step-0000001/state.json").is_file());
    assert!(out.join("stopped.json").is_file());
    let resume = PretrainOptions {
        resume: true,
        ..Default::default()
    };
    let s = pretrain(&cfg, &resume, &mut NoProgress).unwrap();
    assert_eq!((s.steps, s.stopped, s.finished), (3, None, true));
    assert!(!out.join("stopped.json").exists());
}
