//! StyleForge: teach a Stable Diffusion model an artistic style from a handful of images.
//!
//! This crate is the library behind the `styleforge` command. It re-exports the model stack
//! and the schedulers, and holds the pipelines, training methods and evaluation built on them.
//!
//! - [`models`]: UNet, VAE, CLIP text encoder, weight loading ([`styleforge_models`]).
//! - [`tokenizer`]: the CLIP tokenizer ([`styleforge_tokenizer`]).
//! - [`schedulers`]: noise schedulers ([`styleforge_schedulers`]).
//! - [`pipelines`]: text-to-image and image-to-image (SDEdit) generation.
//! - [`image_io`]: images in and out, PNG generation metadata.
//! - [`run_dir`]: the layout of a run folder ([`RunDir`]).
//! - [`device`]: `--device cpu | cuda[:N] | auto` as a [`candle_core::Device`].
//! - [`optim`]: in-place AdamW.
//! - [`report`]: labelled image grids and line charts (loss curves) as PNG, with a built-in font.
//! - [`evaluation`]: `styleforge eval`: FID, KID, CLIP-T and CLIP-I of generated images, with
//!   a feature cache and an HTML report.
//! - [`protocol`]: the protocol engine behind `styleforge protocol` (real images and
//!   `--toy`): jobs, shards and merge, one resumable generator, one table renderer.
//! - [`toy`]: the toy world's probes (style, objects, colours, sky, ground classifiers),
//!   personalization sets and `protocol --toy`; [`world`] is the renderer itself.
//! - [`demo`]: `styleforge demo`, StyleForge on the embedded toy base model.
//! - [`bench`](mod@bench): named benchmark workloads shared with the PyTorch companion script.

#![warn(missing_docs)]

pub mod adapters;
pub mod bench;
pub mod data;
pub mod demo;
pub mod device;
pub mod error;
pub mod evaluation;
pub mod image_io;
pub mod optim;
pub mod pipelines;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod run_dir;
pub mod toy;
pub mod training;

pub use error::{Error, Result};
pub use run_dir::RunDir;

pub use styleforge_models as models;
pub use styleforge_schedulers as schedulers;
pub use styleforge_tokenizer as tokenizer;
pub use styleforge_world as world;
