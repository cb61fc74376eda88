//! Checked against fixtures/single_file/*.safetensors: the tiny pipelines in the original
//! layout, which diffusers' `from_single_file` loads back to the folders' exact tensors
//! (tools/fixtures/make_single_file_fixtures.py).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::*;
use crate::folder::ModelFolder;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.dims() == b.dims()
        && a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn assert_same_maps(got: &HashMap<String, Tensor>, want: &HashMap<String, Tensor>, what: &str) {
    let mut g: Vec<&String> = got.keys().collect();
    let mut w: Vec<&String> = want.keys().collect();
    g.sort();
    w.sort();
    assert_eq!(g, w, "{what}: key sets differ");
    for (k, t) in want {
        assert!(same(&got[k], t), "{what}: tensor {k} differs");
    }
}

fn folder_component(name: &str, comp: &str) -> HashMap<String, Tensor> {
    let t = load_component_tensors(&fixtures().join(name).join(comp)).unwrap();
    if comp == "text_encoder" {
        t.into_iter()
            .filter(|(k, _)| !k.ends_with("position_ids"))
            .map(|(k, v)| (clip::with_text_model(&k), v))
            .collect()
    } else {
        t
    }
}

fn open_with_folder_config(name: &str) -> SingleFile {
    let opts = SingleFileOptions {
        config: Some(fixtures().join(name)),
        prediction_type: None,
    };
    SingleFile::open(
        fixtures()
            .join("single_file")
            .join(format!("{name}.safetensors")),
        &opts,
    )
    .unwrap()
}

#[test]
fn diffusers_converted_file_loads_to_the_folders_tensors() {
    for name in ["tiny-sd1", "tiny-sd2"] {
        let sf = open_with_folder_config(name);
        assert_same_maps(&sf.unet.tensors, &folder_component(name, "unet"), name);
        assert_same_maps(&sf.vae.tensors, &folder_component(name, "vae"), name);
        assert_same_maps(
            &sf.text_encoder.tensors,
            &folder_component(name, "text_encoder"),
            name,
        );
        let want = if name == "tiny-sd1" {
            Family::Sd1
        } else {
            Family::Sd2
        };
        assert_eq!(sf.family, want);
        // The models build from it with every tensor used.
        let opts = LoadOptions::default();
        assert!(sf.unet(&opts).unwrap().unused_tensors.is_empty());
        assert!(sf.vae(&opts).unwrap().unused_tensors.is_empty());
        assert!(sf.text_encoder(&opts).unwrap().unused_tensors.is_empty());
        assert!(sf.tokenizer().is_ok());
    }
}

#[test]
fn export_matches_the_diffusers_layout_exactly() {
    for name in ["tiny-sd1", "tiny-sd2"] {
        let (ours, family) = folder_to_ldm_tensors(&fixtures().join(name)).unwrap();
        let reference = read_tensors(
            &fixtures()
                .join("single_file")
                .join(format!("{name}.safetensors")),
        )
        .unwrap();
        assert_same_maps(&ours, &reference, name);
        assert_eq!(family == Family::Sd2, name == "tiny-sd2");
    }
}

#[test]
fn architecture_is_inferred_from_shapes() {
    let sd1 = SingleFile::open(
        fixtures().join("single_file/tiny-sd1.safetensors"),
        &SingleFileOptions::default(),
    )
    .unwrap();
    let u = &sd1.unet.config;
    assert_eq!(u["block_out_channels"], json!([32, 64]));
    assert_eq!(u["layers_per_block"], json!(1));
    assert_eq!(u["cross_attention_dim"], json!(32));
    assert_eq!(u["use_linear_projection"], json!(false));
    assert_eq!(
        u["down_block_types"],
        json!(["CrossAttnDownBlock2D", "DownBlock2D"])
    );
    assert_eq!(
        u["up_block_types"],
        json!(["UpBlock2D", "CrossAttnUpBlock2D"])
    );
    assert_eq!(sd1.vae.config["block_out_channels"], json!([16, 32]));
    assert_eq!(sd1.vae.config["layers_per_block"], json!(1));
    assert_eq!(sd1.vae.config["latent_channels"], json!(4));
    let t = &sd1.text_encoder.config;
    assert_eq!(t["hidden_size"], json!(32));
    assert_eq!(t["num_hidden_layers"], json!(2));
    assert_eq!(t["intermediate_size"], json!(37));
    assert_eq!(t["vocab_size"], json!(1000));
    assert_eq!(t["hidden_act"], json!("quick_gelu"));
    assert_eq!(sd1.scheduler["prediction_type"], json!("epsilon"));

    let sd2 = SingleFile::open(
        fixtures().join("single_file/tiny-sd2.safetensors"),
        &SingleFileOptions {
            prediction_type: Some("v_prediction".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let u = &sd2.unet.config;
    assert_eq!(u["block_out_channels"], json!([16, 32, 32]));
    assert_eq!(u["cross_attention_dim"], json!(48));
    assert_eq!(u["use_linear_projection"], json!(true));
    assert_eq!(sd2.family, Family::Sd2);
    assert_eq!(sd2.text_encoder.config["num_hidden_layers"], json!(3));
    assert_eq!(sd2.text_encoder.config["hidden_act"], json!("gelu"));
    assert_eq!(sd2.scheduler["prediction_type"], json!("v_prediction"));
    // Shapes cannot tell the prediction type: SD 2.x defaults to v-prediction as in
    // diffusers' from_single_file, and an explicit choice wins.
    let default = SingleFile::open(
        fixtures().join("single_file/tiny-sd2.safetensors"),
        &SingleFileOptions::default(),
    )
    .unwrap();
    assert_eq!(default.scheduler["prediction_type"], json!("v_prediction"));
    assert_eq!(default.scheduler["_class_name"], json!("DDIMScheduler"));
    assert_eq!(default.unet.config["upcast_attention"], json!(true));
    let eps = SingleFile::open(
        fixtures().join("single_file/tiny-sd2.safetensors"),
        &SingleFileOptions {
            prediction_type: Some("epsilon".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(eps.scheduler["prediction_type"], json!("epsilon"));
    assert_eq!(eps.unet.config["upcast_attention"], json!(false));
    let bad = SingleFile::open(
        fixtures().join("single_file/tiny-sd2.safetensors"),
        &SingleFileOptions {
            prediction_type: Some("noise".into()),
            ..Default::default()
        },
    );
    assert!(bad.unwrap_err().to_string().contains("v_prediction"));
}

#[test]
fn json_config_overrides_are_merged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("over.json");
    std::fs::write(
        &cfg,
        r#"{"unet": {"norm_num_groups": 8, "attention_head_dim": 4}, "prediction_type": "v_prediction"}"#,
    )
    .unwrap();
    let sf = SingleFile::open(
        fixtures().join("single_file/tiny-sd1.safetensors"),
        &SingleFileOptions {
            config: Some(cfg),
            prediction_type: None,
        },
    )
    .unwrap();
    assert_eq!(sf.unet.config["norm_num_groups"], json!(8));
    assert_eq!(sf.unet.config["attention_head_dim"], json!(4));
    assert_eq!(sf.unet.config["block_out_channels"], json!([32, 64]));
    assert_eq!(sf.scheduler["prediction_type"], json!("v_prediction"));
    assert!(sf.unet(&LoadOptions::default()).is_ok());
}

#[test]
fn round_trip_through_a_diffusers_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("converted");
    let sf = open_with_folder_config("tiny-sd2");
    sf.write_diffusers_folder(&out).unwrap();
    let folder = ModelFolder::open(&out).unwrap();
    let opts = LoadOptions::default();
    assert!(folder.unet(&opts).unwrap().unused_tensors.is_empty());
    assert!(folder.vae(&opts).unwrap().unused_tensors.is_empty());
    assert!(folder
        .text_encoder(&opts)
        .unwrap()
        .unused_tensors
        .is_empty());
    assert!(folder.tokenizer().is_ok());
    let file = dir.path().join("back.safetensors");
    assert_eq!(folder_to_single_file(&out, &file).unwrap(), Family::Sd2);
    let reference = read_tensors(&fixtures().join("single_file/tiny-sd2.safetensors")).unwrap();
    assert_same_maps(&read_tensors(&file).unwrap(), &reference, "round trip");
    // Nothing else was left beside the outputs.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["back.safetensors", "converted"]);
}

#[test]
fn unrelated_keys_are_a_clear_error_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("other.safetensors");
    let t = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &HashMap::from([("encoder.layer.0.weight".to_string(), t)]),
        &file,
    )
    .unwrap();
    let out = dir.path().join("out");
    let err = single_file_to_folder(&file, &out, &SingleFileOptions::default())
        .unwrap_err()
        .to_string();
    for prefix in EXPECTED_PREFIXES {
        assert!(err.contains(prefix), "{err}");
    }
    assert!(err.contains("encoder.layer.0.weight"), "{err}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn unknown_unet_keys_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = read_tensors(&fixtures().join("single_file/tiny-sd1.safetensors")).unwrap();
    let extra = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
    t.insert("model.diffusion_model.label_emb.0.0.weight".into(), extra);
    let file = dir.path().join("sdxl-ish.safetensors");
    candle_core::safetensors::save(&t, &file).unwrap();
    let err = SingleFile::open(&file, &SingleFileOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("label_emb.0.0.weight"), "{err}");
}

#[test]
fn truncated_file_is_a_clear_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures().join("single_file/tiny-sd1.safetensors")).unwrap();
    let file = dir.path().join("cut.safetensors");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.path().join("out");
    let err = single_file_to_folder(&file, &out, &SingleFileOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::InvalidWeights { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn export_errors_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.safetensors");
    assert!(folder_to_single_file(&dir.path().join("missing"), &out).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn existing_output_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "x").unwrap();
    let sf = open_with_folder_config("tiny-sd1");
    let err = sf.write_diffusers_folder(dir.path()).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(dir.path().join("keep.txt").exists());
}

/// Released-size SD 1.5 and SD 2.1 (768-v) checkpoints, as names and shapes
/// (fixtures/single_file/shapes_*.json, from diffusers' meta-device models), with the extras
/// real files carry. Tensors are stride-0 zeros, so nothing big is allocated.
fn real_size(name: &str) -> (SingleFile, serde_json::Value) {
    let text = std::fs::read_to_string(fixtures().join(format!("single_file/shapes_{name}.json")))
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let zero = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> = doc["ldm"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let shape: Vec<usize> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), zero.broadcast_as(shape).unwrap())
        })
        .collect();
    let sf = SingleFile::from_tensors(
        Path::new(&format!("{name}.safetensors")),
        tensors,
        &SingleFileOptions::default(),
    )
    .unwrap();
    (sf, doc)
}

fn assert_same_shapes(got: &HashMap<String, Tensor>, want: &serde_json::Value, what: &str) {
    let want = want.as_object().unwrap();
    let mut g: Vec<&String> = got.keys().collect();
    let mut w: Vec<&String> = want.keys().collect();
    g.sort();
    w.sort();
    assert_eq!(g, w, "{what}: names differ");
    for (k, t) in got {
        let shape: Vec<usize> = want[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.dims(), shape.as_slice(), "{what}: {k}");
    }
}

#[test]
fn released_sd15_and_sd21_layouts_are_understood() {
    for name in ["sd15", "sd21"] {
        let (sf, doc) = real_size(name);
        assert_same_shapes(&sf.unet.tensors, &doc["diffusers"]["unet"], name);
        assert_same_shapes(&sf.vae.tensors, &doc["diffusers"]["vae"], name);
        assert_same_shapes(
            &sf.text_encoder.tensors,
            &doc["diffusers"]["text_encoder"],
            name,
        );
        let want = &doc["configs"];
        for key in [
            "block_out_channels",
            "layers_per_block",
            "cross_attention_dim",
            "attention_head_dim",
            "use_linear_projection",
            "upcast_attention",
            "down_block_types",
            "up_block_types",
            "sample_size",
            "norm_num_groups",
        ] {
            assert_eq!(sf.unet.config[key], want["unet"][key], "{name}: unet {key}");
        }
        for key in ["block_out_channels", "layers_per_block", "latent_channels"] {
            assert_eq!(sf.vae.config[key], want["vae"][key], "{name}: vae {key}");
        }
        for key in [
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "hidden_act",
            "vocab_size",
            "max_position_embeddings",
        ] {
            assert_eq!(
                sf.text_encoder.config[key], want["text_encoder"][key],
                "{name}: text encoder {key}"
            );
        }
        let v = if name == "sd21" {
            "v_prediction"
        } else {
            "epsilon"
        };
        assert_eq!(sf.scheduler["prediction_type"], json!(v));
        assert_eq!(sf.ignored, ["alphas_cumprod", "model_ema.decay"]);
        // Our configs parse, and the models take every tensor with the right shape.
        let opts = LoadOptions::default();
        assert!(sf.text_encoder(&opts).unwrap().unused_tensors.is_empty());
        assert!(sf.vae(&opts).unwrap().unused_tensors.is_empty());
        assert!(sf.unet(&opts).unwrap().unused_tensors.is_empty());
    }
}

#[test]
fn released_layouts_export_back_to_the_same_names() {
    for name in ["sd15", "sd21"] {
        let (sf, doc) = real_size(name);
        let unet = unet::Layout::from_config(&sf.unet.config).unwrap().table();
        for k in sf.unet.tensors.keys() {
            let back = unet.to_ldm(k).unwrap().name;
            assert!(
                doc["ldm"].get(format!("{}{back}", unet::PREFIX)).is_some(),
                "{name}: {k} -> {back}"
            );
        }
        let (levels, layers) = vae::layout_from_config(&sf.vae.config);
        let vt = vae::table(levels, layers);
        for k in sf.vae.tensors.keys() {
            let back = vt.to_ldm(k).unwrap().name;
            assert!(
                doc["ldm"].get(format!("{}{back}", vae::PREFIX)).is_some(),
                "{name}: {k} -> {back}"
            );
        }
    }
}

#[test]
fn half_precision_files_load_and_export_keeps_their_dtype() {
    let t = read_tensors(&fixtures().join("single_file/tiny-sd1.safetensors")).unwrap();
    let half: HashMap<String, Tensor> = t
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(candle_core::DType::F16).unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("half.safetensors");
    candle_core::safetensors::save(&half, &file).unwrap();
    let opts = SingleFileOptions {
        config: Some(fixtures().join("tiny-sd1")),
        prediction_type: None,
    };
    let sf = SingleFile::open(&file, &opts).unwrap();
    let unet = sf.unet(&LoadOptions::default()).unwrap();
    assert!(unet.unused_tensors.is_empty());
    let out = dir.path().join("folder");
    sf.write_diffusers_folder(&out).unwrap();
    let back = dir.path().join("back.safetensors");
    folder_to_single_file(&out, &back).unwrap();
    let back = read_tensors(&back).unwrap();
    assert_eq!(back.len(), half.len());
    assert!(back.values().all(|t| t.dtype() == candle_core::DType::F16));
}

#[test]
fn pickle_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.ckpt");
    std::fs::write(&file, b"PK\x03\x04").unwrap();
    let err = SingleFile::open(&file, &SingleFileOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("pickle"), "{err}");
}

#[test]
fn damaged_block_indices_are_refused_not_searched() {
    // Found by `styleforge selftest fuzz --target single-file`: an index at the top of
    // usize overflowed `max_input + 1`, and a large one made the search for the first
    // downsampler loop (and allocate) for that long.
    for index in ["18446744073709551615", "99999999999", "257"] {
        let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
        shapes.insert(
            format!("{}input_blocks.{index}.0.weight", unet::PREFIX),
            vec![4],
        );
        shapes.insert(
            format!("{}input_blocks.1.0.out_layers.3.weight", unet::PREFIX),
            vec![8],
        );
        let err = infer_configs(Path::new("damaged.safetensors"), &shapes).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("damaged.safetensors") && msg.contains("more input blocks"),
            "{msg}"
        );
    }
}
