//! A single-file checkpoint (fixtures/single_file, the tiny pipelines in the original LDM
//! layout, which diffusers' from_single_file loads to the folders' exact tensors) generates
//! exactly what the diffusers folder it came from generates.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use styleforge::models::folder::LoadOptions;
use styleforge::models::single_file::SingleFileOptions;
use styleforge::pipelines::{SamplingOptions, StableDiffusion, Txt2ImgRequest};
use styleforge::progress::NoProgress;
use styleforge::schedulers::NoNoise;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[test]
fn single_file_generates_what_the_folder_generates() {
    for name in ["tiny-sd1", "tiny-sd2"] {
        let opts = LoadOptions::default();
        let folder = StableDiffusion::load(&fixtures().join(name), &opts).unwrap();
        let sf_opts = SingleFileOptions {
            config: Some(fixtures().join(name)),
            prediction_type: None,
        };
        let file = fixtures().join(format!("single_file/{name}.safetensors"));
        let single = StableDiffusion::load_single_file(&file, &sf_opts, &opts).unwrap();
        assert_eq!(
            single.scheduler_config_class(),
            folder.scheduler_config_class()
        );
        let f = 2usize.pow(folder.vae.config().block_out_channels.len() as u32 - 1);
        let latents = Tensor::randn(0f32, 1., (1, 4, 32 / f, 32 / f), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let req = Txt2ImgRequest {
            sampling: SamplingOptions {
                prompt: "a photo of a cat".into(),
                steps: 2,
                ..Default::default()
            },
            width: 32,
            height: 32,
            latents: Some(latents),
        };
        let a = folder.txt2img(&req, &mut NoNoise, &mut NoProgress).unwrap();
        let b = single.txt2img(&req, &mut NoNoise, &mut NoProgress).unwrap();
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b, "{name}: the single file generates another image");
    }
}

#[test]
fn load_accepts_a_file_and_reports_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("junk.safetensors");
    std::fs::write(&file, b"not a safetensors file").unwrap();
    let err = StableDiffusion::load(&file, &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a valid safetensors file"), "{err}");
}
