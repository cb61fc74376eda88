//! The Stable Diffusion 1.x / 2.x model family in candle: UNet, VAE and CLIP text encoder.
//!
//! Every model is built from a [`candle_nn::VarBuilder`], loads diffusers-layout weights
//! (`config.json` + `*.safetensors`) and computes what diffusers computes. Every op on the
//! training path has a backward pass: the models can be fine-tuned, not only run.
//!
//! - [`unet`]: `UNet2DConditionModel`, the noise predictor.
//! - [`vae`]: `AutoencoderKL`, image ⇄ latent.
//! - [`clip_text`]: `CLIPTextModel`, prompt ids → conditioning.
//! - [`clip_vision`]: `CLIPVisionModel`, `CLIPModel` (both towers + projections), the CLIP
//!   image processor and CLIP-T / CLIP-I scores for evaluation.
//! - [`dino`]: DINO (`ViTModel`) and DINOv2 (`Dinov2Model`) class-token embeddings, for
//!   content similarity and content leakage.
//! - [`csd`]: the CSD style descriptor (CLIP image tower + style projection).
//! - [`inception`]: the FID InceptionV3 (pytorch-fid's), images → 2048-d pool3 features.
//! - [`nn`]: the layers these share (norms, attention, resampling), each with a backward.
//! - [`weights`]: strict safetensors loading with clear errors, frozen or trainable.
//! - [`files`]: atomic writes of files and folders, copies, errors that name the path.
//! - [`folder`]: a diffusers model folder (`model_index.json`, `unet/`, `vae/`, ...).
//! - [`source`]: a model argument (folder, single file or Hub name) resolved to files on
//!   disk; [`hub`]: the Hugging Face Hub part (the `hub` cargo feature).
//! - [`testing`]: the device and fixtures folder the test suites use (environment variables).

#![warn(missing_docs)]

pub mod blocks;
pub mod clip_text;
pub mod clip_vision;
pub mod config;
pub mod csd;
pub mod dino;
pub mod error;
pub mod files;
pub mod folder;
pub mod hub;
pub mod inception;
pub mod init;
pub mod nn;
pub mod single_file;
pub mod source;
pub mod testing;
pub mod unet;
pub mod vae;
pub mod weights;

pub use candle_core as candle;
pub use candle_nn;
pub use error::{ModelError, Result};
pub use styleforge_tokenizer as tokenizer;
