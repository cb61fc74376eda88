//! The toy world's probes: small classifiers, trained by the project on rendered pictures,
//! that stand in for the real evaluation's Inception and CLIP models (issue #9).
//!
//! [`ProbeNet`] reads a 32×32 render and predicts its style, the object kinds and colour
//! words present, the (object, colour) pairs, the sky and the ground. [`train_probes`]
//! trains it on seeded renders of [`styleforge_world::World`] and measures it on renders of
//! another seed ([`ProbeAccuracy`]); the shipped probes live in `assets/toy/` with their
//! accuracy recorded. [`measures`] turns probe outputs into the toy analogues of the style
//! metrics, CLIP-T and FID/KID. [`data`] writes personalization sets (StyleRef renders
//! of a held-out style, Aux sets), [`protocol`] runs every method on them and scores the
//! results (`styleforge protocol --toy`), and [`embedded`] unpacks the shipped base model
//! and probes built into the library.
//!
//! ```no_run
//! use std::path::Path;
//! use styleforge::toy::{probe_frechet_distance, style_accuracy, Probes};
//! use styleforge_world::{Style, World};
//!
//! let probes = Probes::load(Path::new("assets/toy"), &candle_core::Device::Cpu)?;
//! let cel: Vec<_> = (0..50).map(|i| World::new(1).sample_in_style(i, Style::Cel).image).collect();
//! let more: Vec<_> = (0..50).map(|i| World::new(2).sample_in_style(i, Style::Cel).image).collect();
//! assert!(style_accuracy(&probes, &cel, Style::Cel)? > 0.9);
//! let fd = probe_frechet_distance(&probes, &cel, &more)?;
//! # let _ = fd;
//! # Ok::<(), styleforge::Error>(())
//! ```

pub mod data;
pub mod embedded;
pub mod measures;
pub mod probes;
pub mod protocol;
pub mod train;

pub use data::{AuxChoice, Composition};
pub use embedded::{unpack_base_model, unpack_probes};
pub use measures::{
    base_model_scores, content_scores, content_scores_of, probe_features, probe_frechet_distance,
    probe_kernel_distance, style_accuracy, style_accuracy_of, BaseScores, BaseScoring,
    ContentScores, LabelWords, PictureVerdict,
};
pub use probes::{
    images_to_tensor, LabelVocabulary, ProbeConfig, ProbeFile, ProbeLabels, ProbeNet, ProbeOutput,
    Probes, CONFIG_FILE, WEIGHTS_FILE,
};
pub use protocol::{
    run_toy_protocol, toy_recipe, ToyMetrics, ToyProtocolOptions, ToyProtocolResult, ToyRecipe,
};
pub use train::{
    accuracy_of, evaluate_probes, held_out_seed, render_set, train_probes, ProbeAccuracy,
    ProbeTrainOptions, ProbeTraining,
};
