//! Forward parity with diffusers / transformers on the tiny random fixtures (f32, ≤ 1e-4).

mod common;

use candle_core::{DType, Tensor};
use common::{assert_close, fixture, load_options, reference};
use styleforge_models::folder::{LoadOptions, ModelFolder};

const TOL: f32 = 1e-4;

fn ids(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).unwrap()
}

fn check_text_encoder(model: &str) {
    let folder = ModelFolder::open(fixture(model)).unwrap();
    let loaded = folder.text_encoder(&load_options()).unwrap();
    assert!(
        loaded.unused_tensors.is_empty(),
        "unused: {:?}",
        loaded.unused_tensors
    );
    let te = loaded.model;
    let r = reference(model);
    let input_ids = ids(&r["input_ids"]);
    let out = te.forward_with_clip_skip(&input_ids, 0).unwrap();
    assert_close(
        "text_last_hidden",
        &out.hidden_state,
        &r["text_last_hidden"],
        TOL,
    );
    assert_close("text_pooled", &out.pooled, &r["text_pooled"], TOL);
    let skip = te.forward_with_clip_skip(&input_ids, 1).unwrap();
    assert_close(
        "text_clip_skip1",
        &skip.hidden_state,
        &r["text_clip_skip1"],
        TOL,
    );
}

#[test]
fn text_encoder_sd1_matches_transformers() {
    check_text_encoder("tiny-sd1");
}

#[test]
fn text_encoder_sd2_without_key_prefix_matches_transformers() {
    check_text_encoder("tiny-sd2");
}

fn check_unet(model: &str) {
    let folder = ModelFolder::open(fixture(model)).unwrap();
    let loaded = folder.unet(&load_options()).unwrap();
    assert!(
        loaded.unused_tensors.is_empty(),
        "unused: {:?}",
        loaded.unused_tensors
    );
    let r = reference(model);
    let out = loaded
        .model
        .forward(
            &r["unet_sample"],
            &r["unet_timesteps"],
            &r["unet_encoder_hidden_states"],
        )
        .unwrap();
    assert_close("unet_out", &out, &r["unet_out"], TOL);
}

#[test]
fn unet_sd1_matches_diffusers_with_a_timestep_per_sample() {
    check_unet("tiny-sd1");
}

#[test]
fn unet_sd2_linear_projection_head_list_odd_latent_matches_diffusers() {
    check_unet("tiny-sd2");
}

#[test]
fn unet_fp16_variant_is_upcast_and_close_to_fp32() {
    let folder = ModelFolder::open(fixture("tiny-sd2")).unwrap();
    let opts = LoadOptions {
        variant: Some("fp16".into()),
        ..load_options()
    };
    let unet = folder.unet(&opts).unwrap().model;
    let r = reference("tiny-sd2");
    let out = unet
        .forward(
            &r["unet_sample"],
            &r["unet_timesteps"],
            &r["unet_encoder_hidden_states"],
        )
        .unwrap();
    assert_eq!(out.dtype(), DType::F32);
    // fp16 weights round each weight by ~5e-4 relative; the output moves by about that much.
    assert_close("unet_out (fp16 weights)", &out, &r["unet_out"], 2e-2);
}

#[test]
fn components_without_the_variant_fall_back_to_their_plain_weights() {
    // tiny-sd2 ships `fp16` weights for the UNet only, as many hub repos do for a subset.
    let folder = ModelFolder::open(fixture("tiny-sd2")).unwrap();
    let opts = LoadOptions {
        variant: Some("fp16".into()),
        ..load_options()
    };
    let vae = folder.vae(&opts).unwrap();
    assert!(vae.unused_tensors.is_empty());
    let r = reference("tiny-sd2");
    let te = folder.text_encoder(&opts).unwrap().model;
    let out = te.forward(&ids(&r["input_ids"])).unwrap();
    assert_close(
        "text_last_hidden (plain fallback)",
        &out,
        &r["text_last_hidden"],
        TOL,
    );
}

fn check_vae(model: &str) {
    let folder = ModelFolder::open(fixture(model)).unwrap();
    let loaded = folder.vae(&load_options()).unwrap();
    assert!(
        loaded.unused_tensors.is_empty(),
        "unused: {:?}",
        loaded.unused_tensors
    );
    let vae = loaded.model;
    let r = reference(model);
    let posterior = vae.encode(&r["vae_image"]).unwrap();
    assert_close(
        "vae_posterior_mean",
        &posterior.mean,
        &r["vae_posterior_mean"],
        TOL,
    );
    assert_close(
        "vae_posterior_logvar",
        &posterior.logvar,
        &r["vae_posterior_logvar"],
        TOL,
    );
    let decoded = vae.decode(&r["vae_decode_input"]).unwrap();
    assert_close("vae_decoded", &decoded, &r["vae_decoded"], TOL);
}

#[test]
fn vae_sd1_matches_diffusers() {
    check_vae("tiny-sd1");
}

#[test]
fn vae_sd2_downscale_4_matches_diffusers() {
    check_vae("tiny-sd2");
    let folder = ModelFolder::open(fixture("tiny-sd2")).unwrap();
    let vae = folder.vae(&load_options()).unwrap().model;
    assert_eq!(vae.downscale_factor(), 4);
}
