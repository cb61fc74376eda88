use std::path::PathBuf;

use super::*;
use styleforge_models::config::parse_config;

const SD15_UNET: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu", "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false, "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0,
  "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1,
  "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;
const SD15_TEXT: &str = r#"{
  "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
  "hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072,
  "num_attention_heads": 12, "num_hidden_layers": 12, "max_position_embeddings": 77,
  "vocab_size": 49408, "projection_dim": 768, "layer_norm_eps": 1e-05,
  "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1
}"#;
const SD15_VAE: &str = r#"{
  "_class_name": "AutoencoderKL", "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
  "out_channels": 3, "sample_size": 512, "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

fn sd15() -> ModelConfigs {
    ModelConfigs {
        unet: parse_config(SD15_UNET, Path::new("unet.json")).unwrap(),
        text_encoder: parse_config(SD15_TEXT, Path::new("te.json")).unwrap(),
        vae: parse_config(SD15_VAE, Path::new("vae.json")).unwrap(),
    }
}

fn styleforge_512() -> MemorySettings {
    MemorySettings {
        batch: 2,
        resolution: 512,
        trained: Trained::Full { text_encoder: true },
        gradient_checkpointing: false,
        optimizer: OptimizerKind::AdamW,
        gradient_accumulation: 1,
        attention: AttentionMemory::Fused,
        checkpoint_saves: true,
        ema: false,
        precision: Precision::Fp32,
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

#[test]
fn parameter_counts_match_sd15() {
    // The published counts of runwayml/stable-diffusion-v1-5.
    let (unet, te, vae) = parameter_counts(&sd15()).unwrap();
    assert_eq!(unet, 859_520_964);
    assert_eq!(te, 123_060_480);
    assert_eq!(vae, 83_653_863);
}

#[test]
fn parameter_counts_match_the_fixture_weights() {
    for name in ["tiny-sd1", "tiny-sd2"] {
        let dir = fixture(name);
        let models = ModelConfigs::read(&dir).unwrap();
        let (unet, te, vae) = parameter_counts(&models).unwrap();
        for (part, want) in [("unet", unet), ("text_encoder", te), ("vae", vae)] {
            let files =
                styleforge_models::weights::component_weight_files(&dir.join(part), None).unwrap();
            let mut got = 0u64;
            for f in files {
                let t = candle_core::safetensors::load(&f, &Device::Cpu).unwrap();
                got += t
                    .iter()
                    .filter(|(k, _)| !k.ends_with("position_ids"))
                    .map(|(_, v)| v.elem_count() as u64)
                    .sum::<u64>();
            }
            assert_eq!(got, want, "{name}/{part}");
        }
    }
}

#[test]
fn grows_with_resolution_and_batch() {
    let m = sd15();
    let s = styleforge_512();
    let base = estimate(&m, &s).unwrap();
    let bigger = estimate(
        &m,
        &MemorySettings {
            resolution: 768,
            ..s
        },
    )
    .unwrap();
    let wider = estimate(&m, &MemorySettings { batch: 4, ..s }).unwrap();
    assert!(bigger.activations > base.activations && bigger.total > base.total);
    assert!(wider.activations > base.activations && wider.total > base.total);
    assert_eq!(bigger.gradients, base.gradients);
}

#[test]
fn checkpointing_lowers_activations_and_8bit_the_states() {
    let m = sd15();
    let s = styleforge_512();
    let plain = estimate(&m, &s).unwrap();
    let ckpt = estimate(
        &m,
        &MemorySettings {
            gradient_checkpointing: true,
            ..s
        },
    )
    .unwrap();
    assert!(
        ckpt.activations * 3 < plain.activations,
        "{ckpt:?} {plain:?}"
    );
    let eight = estimate(
        &m,
        &MemorySettings {
            optimizer: OptimizerKind::AdamW8bit,
            ..s
        },
    )
    .unwrap();
    assert!(eight.optimizer_states * 3 < plain.optimizer_states);
    assert_eq!(eight.activations, plain.activations);
}

#[test]
fn sd15_at_512_fits_only_with_checkpointing_and_8bit() {
    let m = sd15();
    let s = styleforge_512();
    let plain = estimate(&m, &s).unwrap();
    let both = estimate(
        &m,
        &MemorySettings {
            gradient_checkpointing: true,
            optimizer: OptimizerKind::AdamW8bit,
            ..s
        },
    )
    .unwrap();
    assert!(gb(plain.total) > 17.0, "plain:\n{plain}");
    assert!(gb(both.total) < 12.0, "checkpointing + 8-bit:\n{both}");
}

#[test]
fn an_ema_holds_one_more_copy_of_the_trained_weights() {
    let (m, s) = (sd15(), styleforge_512());
    let plain = estimate(&m, &s).unwrap();
    let with = estimate(&m, &MemorySettings { ema: true, ..s }).unwrap();
    assert_eq!(plain.ema_weights, 0);
    assert_eq!(with.ema_weights, with.trainable_params * 4);
    assert!(with.total > plain.total + with.ema_weights);
}

#[test]
fn mixed_precision_adds_compute_copies_and_halves_activations() {
    let (m, s) = (sd15(), styleforge_512());
    let f32_run = estimate(&m, &s).unwrap();
    for precision in [Precision::Bf16, Precision::Fp16] {
        let half = estimate(&m, &MemorySettings { precision, ..s }).unwrap();
        // f32 masters plus 2-byte copies; gradients and optimizer states unchanged.
        assert_eq!(half.trainable_weights, half.trainable_params * 6);
        assert_eq!(half.gradients, f32_run.gradients);
        assert_eq!(half.optimizer_states, f32_run.optimizer_states);
        assert_eq!(half.activations, f32_run.activations / 2);
        // Only the VAE is frozen here, and it stays f32.
        assert_eq!(half.frozen_weights, f32_run.frozen_weights);
        assert!(half.total < f32_run.total, "{half}\nvs\n{f32_run}");
    }
    // DreamBooth: the frozen text encoder is held in 2 bytes.
    let unet_only = MemorySettings {
        trained: Trained::Full {
            text_encoder: false,
        },
        ..s
    };
    let a = estimate(&m, &unet_only).unwrap();
    let b = estimate(
        &m,
        &MemorySettings {
            precision: Precision::Bf16,
            ..unet_only
        },
    )
    .unwrap();
    let (_, te, _) = parameter_counts(&m).unwrap();
    assert_eq!(a.frozen_weights - b.frozen_weights, te * 2);
}

#[test]
fn adapters_train_few_parameters() {
    let m = sd15();
    let s = styleforge_512();
    let full = estimate(&m, &s).unwrap();
    for trained in [
        Trained::Lora {
            rank: 4,
            text_encoder: false,
        },
        Trained::TextualInversion { vectors: 1 },
        Trained::CustomDiffusion { tokens: 1 },
    ] {
        let e = estimate(&m, &MemorySettings { trained, ..s }).unwrap();
        assert!(e.trainable_params < 60_000_000, "{trained:?}: {e:?}");
        assert!(e.optimizer_states < full.optimizer_states / 10);
        assert!(e.total < full.total);
    }
}

#[test]
fn refusal_names_only_settings_that_fit() {
    let m = sd15();
    let s = styleforge_512();
    let plain = estimate(&m, &s).unwrap();
    let ckpt = estimate(
        &m,
        &MemorySettings {
            gradient_checkpointing: true,
            ..s
        },
    )
    .unwrap();
    // Room for checkpointing but not for the plain run.
    let limit = (plain.total + ckpt.total) / 2;
    let err = check(&m, &s, &plain, limit, false).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("training.gradient_checkpointing = true"),
        "{text}"
    );
    assert!(text.contains("training.ignore_memory_check"), "{text}");
    let Error::InsufficientMemory {
        suggestions: named, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(named[0].starts_with("training.gradient_checkpointing = true"));
    // Every suggestion, recomputed, fits.
    for sug in suggestions(&m, &s, limit).unwrap() {
        assert!(sug.estimate <= limit, "{sug:?}");
    }
    // The override lets it through; a run that fits passes.
    check(&m, &s, &plain, limit, true).unwrap();
    check(&m, &s, &plain, plain.total, false).unwrap();
    // Nothing fits in 1 GB.
    let none = suggestions(&m, &s, 1_000_000_000).unwrap();
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn a_lower_resolution_is_suggested_when_it_fits() {
    let m = sd15();
    let s = MemorySettings {
        gradient_checkpointing: true,
        optimizer: OptimizerKind::AdamW8bit,
        checkpoint_saves: false,
        ema: false,
        precision: Precision::Fp32,
        ..styleforge_512()
    };
    let at_384 = estimate(
        &m,
        &MemorySettings {
            resolution: 384,
            ..s
        },
    )
    .unwrap();
    let found = suggestions(&m, &s, at_384.total).unwrap();
    assert!(
        found.iter().any(|x| x.setting == "data.resolution = 384"),
        "{found:?}"
    );
}

#[test]
fn table_renders_in_gb() {
    let e = estimate(&sd15(), &styleforge_512()).unwrap();
    let text = e.to_string();
    assert!(text.contains("estimated peak"), "{text}");
    assert!(text.contains(" GB"), "{text}");
    assert_eq!(text.lines().count(), 9);
}

#[test]
fn peak_rss_is_read_on_linux() {
    if cfg!(target_os = "linux") {
        let peak = peak_rss_bytes().unwrap();
        assert!(peak > 1_000_000 && peak >= rss_bytes().unwrap() / 2);
    }
}

/// Prints estimates for calibration against `/usr/bin/time -v` and `styleforge bench`:
/// `cargo test -p styleforge --release --lib memory::tests::print_estimates -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_estimates() {
    let m = sd15();
    let s = styleforge_512();
    for (label, settings) in [
        ("SD-1.5 512 px b2, AdamW", s),
        (
            "SD-1.5 512 px b2, checkpointing",
            MemorySettings {
                gradient_checkpointing: true,
                ..s
            },
        ),
        (
            "SD-1.5 512 px b2, checkpointing + 8-bit",
            MemorySettings {
                gradient_checkpointing: true,
                optimizer: OptimizerKind::AdamW8bit,
                ..s
            },
        ),
    ] {
        println!("{label}:\n{}\n", estimate(&m, &settings).unwrap());
    }
    // The calibration runs (see the report): the tiny fixture at 16 px and the toy base
    // model at 128 px through `styleforge train`, and `styleforge bench`'s
    // `sd15-half-train-b1` (UNet alone, 32×32 latent, batch 1: no text encoder, no VAE).
    let toy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/toy/base-model");
    for (label, dir, resolution, ckpt) in [
        ("tiny-sd1 16 px", fixture("tiny-sd1"), 16, false),
        ("toy base 128 px", toy.clone(), 128, false),
        ("toy base 128 px, checkpointing", toy, 128, true),
    ] {
        let models = ModelConfigs::read(&dir).unwrap();
        let settings = MemorySettings {
            resolution,
            gradient_checkpointing: ckpt,
            ..s
        };
        println!("{label}:\n{}\n", estimate(&models, &settings).unwrap());
    }
    // `styleforge bench` workloads build only what they train (no VAE, and no text
    // encoder for the UNet ones) and save no checkpoint: the frozen weights come off.
    let bench = |models: &ModelConfigs, settings: MemorySettings| {
        let e = estimate(models, &settings).unwrap();
        let frozen = (e.frozen_weights as f64 * (1.0 + ALLOCATOR_SLACK)) as u64;
        (e, e.total - frozen)
    };
    let no_save = MemorySettings {
        checkpoint_saves: false,
        ema: false,
        precision: Precision::Fp32,
        ..s
    };
    for (name, file, batch) in [
        ("sd15-half-train-b1", "unet-sd15-half.json", 1),
        ("tiny-train-b1", "unet-tiny.json", 1),
        ("tiny-train-b4", "unet-tiny.json", 4),
    ] {
        let unet: UNetConfig =
            parse_config(crate::bench::config_text(file).unwrap(), Path::new(file)).unwrap();
        let models = ModelConfigs { unet, ..m.clone() };
        let (e, without) = bench(
            &models,
            MemorySettings {
                batch,
                resolution: 256,
                trained: Trained::Full {
                    text_encoder: false,
                },
                ..no_save
            },
        );
        println!(
            "{name} (UNet only):\n{e}\n  without the text encoder and VAE {:.3} GB\n",
            gb(without)
        );
    }
    for (name, ckpt, optimizer) in [
        ("sd15-512-styleforge", false, OptimizerKind::AdamW),
        ("sd15-512-styleforge-ckpt", true, OptimizerKind::AdamW),
        (
            "sd15-512-styleforge-ckpt-8bit",
            true,
            OptimizerKind::AdamW8bit,
        ),
    ] {
        let (_, without) = bench(
            &m,
            MemorySettings {
                gradient_checkpointing: ckpt,
                optimizer,
                ..no_save
            },
        );
        println!(
            "{name}: without the VAE and checkpoint saves {:.2} GB",
            gb(without)
        );
    }
}
