//! `styleforge protocol --toy`: the paper's comparison in miniature, measured exactly.
//!
//! For every held-out style and every method (StyleForge, Multi-StyleForge, DreamBooth,
//! LoRA, Textual Inversion, Custom Diffusion), train on 20 captioned StyleRef renders of
//! the style from the toy base model, then sample two prompt sets with fixed seeds:
//!
//! - **token prompts**: captions of evaluation scenes with the run's style phrase (`"a red
//!   person on grass by day, ohwx style"`). Scored against the style's renders: probe
//!   Fréchet and kernel distance (the toy FID / KID), style accuracy (the probe names the
//!   target style) and content accuracy (prompted objects found, prompted colours found —
//!   the toy CLIP-T).
//! - **drift prompts**: captions naming a *base* style (`"…, sketch style"`), never the
//!   token. A method that keeps the base model's language still draws the named style: the
//!   table gives how often it does ("kept"), how often the new style leaks in ("leak") and
//!   the probe Fréchet distance between its pictures and the base model's for the same
//!   prompts and seeds ("drift").
//!
//! The paper's two ablations run on the first style: StyleRef composition (people only,
//! backgrounds only, both) and the Aux set (none, generated "style" images, people in known
//! styles, the StyleRef scenes in known styles). Every run, image and table is written
//! under the output folder, and a rerun reuses what is there (runs finished under the same
//! config, generated pictures), so a long protocol can be stopped and continued. Beside each
//! model's pictures, [`VERDICTS`] records what the probes see in each one next to what its
//! prompt asked: the pictures behind every accuracy in the tables.
//!
//! The jobs, the generator and the tables are the shared [`crate::protocol`] engine's
//! ([`ToyProtocol`]); this module holds what is the toy world's own: the methods' recipes,
//! the runs and ablations, their data and configs, and the probe scorer ([`ProbeScorer`]).

mod engine;

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};
use styleforge_world::{ObjectKind, Scene, Style, World};

use super::data::{
    known_style_people, known_style_scenes, style_ref_samples, write_samples, AuxChoice,
    CaptionText, Composition, AUX_SEED, EVAL_SEED, STYLE_REF_SEED,
};
use super::measures::{
    content_scores_of, probe_frechet_distance, probe_kernel_distance, style_accuracy_of,
};
use super::probes::Probes;
use crate::adapters::generation::GenerationAdapters;
use crate::error::{Error, Result};
use crate::evaluation::protocol::method_label;
use crate::pipelines::SamplingOptions;
use crate::progress::Progress;
use crate::protocol::generate::{
    generate_missing, load_all, GenerateOptions, ImageSpec, LazyModel,
};
use crate::training::config::{ConceptConfig, DataSection, ModelSection, OptimSection};
use crate::training::config::{Method, OutputSection, TrainConfig, TrainingSection};
pub use engine::{tables, ProbeScorer, ToyCell, ToyProtocol, ToyWork, VERDICTS};

/// Every method of the paper's comparison, in its table order.
pub const ALL_METHODS: [Method; 6] = [
    Method::Styleforge,
    Method::MultiStyleforge,
    Method::Dreambooth,
    Method::Lora,
    Method::TextualInversion,
    Method::CustomDiffusion,
];

/// How a method is trained on the toy base model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ToyRecipe {
    /// Learning rate.
    pub lr: f64,
    /// Optimizer steps.
    pub steps: usize,
    /// The Aux set.
    pub aux: AuxChoice,
}

/// The toy recipe of `method`. The methods keep their own character (which weights train,
/// which Aux set) while learning rates are scaled to a 7M-parameter model pretrained at
/// 5e-4: full fine-tuning (StyleForge, Multi-StyleForge, DreamBooth) at 1e-4 — measured on
/// the demo against 3e-4 (which lost content and drifted) and 2e-5 (which moved nothing in
/// 400 steps) — and the adapters above it roughly as diffusers' scripts place them (LoRA
/// 10×, Textual Inversion 50×, Custom Diffusion 2×); only the full fine-tuning rate was
/// measured here.
pub fn toy_recipe(method: Method) -> ToyRecipe {
    let (lr, steps, aux) = match method {
        Method::Styleforge | Method::MultiStyleforge => (1e-4, 400, AuxChoice::KnownStyleScenes),
        Method::Dreambooth => (1e-4, 400, AuxChoice::Generated),
        Method::Lora => (1e-3, 400, AuxChoice::None),
        Method::TextualInversion => (5e-3, 400, AuxChoice::None),
        Method::CustomDiffusion => (2e-4, 400, AuxChoice::Generated),
    };
    ToyRecipe { lr, steps, aux }
}

/// Settings of a toy protocol.
#[derive(Debug, Clone)]
pub struct ToyProtocolOptions {
    /// The toy base model (a diffusers folder).
    pub base: PathBuf,
    /// The probes folder.
    pub probes: PathBuf,
    /// Where runs, pictures and tables go.
    pub out: PathBuf,
    /// Held-out styles to learn.
    pub styles: Vec<Style>,
    /// Methods to compare.
    pub methods: Vec<Method>,
    /// Also run the two ablations (on the first style).
    pub ablations: bool,
    /// Training steps of every run (default: each method's [`toy_recipe`]).
    pub steps: Option<usize>,
    /// StyleRef pictures per run.
    pub style_images: usize,
    /// Aux pictures per run.
    pub aux_images: usize,
    /// Token prompts (evaluation scenes, half with a person).
    pub eval_prompts: usize,
    /// Drift prompts (scenes captioned with a base style).
    pub drift_prompts: usize,
    /// Reference renders of the target style for the distances.
    pub reference_images: usize,
    /// Denoising steps.
    pub sample_steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Guidance rescale φ (0: off).
    pub guidance_rescale: f64,
    /// Seed of training runs; picture `i` of every prompt set uses seed `seed + i`.
    pub seed: u64,
    /// Training keys varied one at a time against each method's recipe (a table of their
    /// own; `training.snr_gamma=0,5` adds one run per value).
    pub vary: Vec<Variation>,
    /// Where training, sampling and the probes compute.
    pub device: candle_core::Device,
}

impl ToyProtocolOptions {
    /// The full protocol's settings.
    pub fn new(base: PathBuf, probes: PathBuf, out: PathBuf) -> Self {
        Self {
            base,
            probes,
            out,
            styles: Style::HELD_OUT.to_vec(),
            methods: ALL_METHODS.to_vec(),
            ablations: true,
            steps: None,
            style_images: 20,
            aux_images: 20,
            eval_prompts: 24,
            drift_prompts: 16,
            reference_images: 200,
            sample_steps: 25,
            guidance: 4.0,
            guidance_rescale: 0.0,
            seed: 1337,
            vary: Vec::new(),
            device: candle_core::Device::Cpu,
        }
    }
}

/// Settings tried against each method's recipe, one run each: `key=v1,v2,...` tries one
/// key at several values; `key=v;other=w` is one run with both overrides (e.g. a timestep
/// distribution and its mean).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variation {
    /// One entry per run: its `key=value` overrides joined by `;` (dotted training-config
    /// keys as `styleforge train --set` takes them; TOML values, bare words are strings).
    pub settings: Vec<String>,
}

impl Variation {
    /// Parses `key=v1,v2,...` or `key=v;other=w`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidRequest(format!(
                "`--vary {text}`: expected a dotted training-config key and values, \
                 e.g. training.snr_gamma=0,5 (or key=v;other=w for one run with both)"
            ))
        };
        let pair = |part: &str| -> Result<(String, String)> {
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || value.is_empty() {
                return Err(bad());
            }
            Ok((key.to_string(), value.to_string()))
        };
        let settings = if text.contains(';') {
            let parts = text
                .split(';')
                .filter(|p| !p.trim().is_empty())
                .map(|p| pair(p).map(|(k, v)| format!("{k}={v}")))
                .collect::<Result<Vec<_>>>()?;
            vec![parts.join(";")]
        } else {
            let (key, values) = pair(text)?;
            values
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| format!("{key}={v}"))
                .collect()
        };
        Ok(Self { settings })
    }
}

/// Which table a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToyTable {
    /// Methods × styles.
    Main,
    /// StyleRef composition ablation.
    Composition,
    /// Aux set ablation.
    Aux,
    /// A training key varied against the method's recipe ([`Variation`]).
    Vary,
}

/// One trained model of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToyRun {
    /// Its row label.
    pub label: String,
    /// Its table.
    pub table: ToyTable,
    /// The method.
    pub method: Method,
    /// The style learnt.
    pub style: Style,
    /// What the StyleRef set shows.
    pub composition: Composition,
    /// The Aux set.
    pub aux: AuxChoice,
    /// `key=value` overrides of the method's recipe, joined by `;` (the
    /// [`ToyTable::Vary`] runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
}

impl ToyRun {
    /// The run's folder name under `<out>/runs/<style>/`.
    pub fn folder(&self) -> String {
        match self.table {
            ToyTable::Main => self.method.name().to_string(),
            ToyTable::Composition => format!("ablation-styleref-{}", self.composition.name()),
            ToyTable::Aux => format!("ablation-aux-{}", self.aux.name()),
            ToyTable::Vary => {
                let setting: String = self
                    .setting
                    .as_deref()
                    .unwrap_or_default()
                    .chars()
                    .map(|c| match c {
                        'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
                        _ => '-',
                    })
                    .collect();
                format!("{}-vary-{setting}", self.method.name())
            }
        }
    }
}

/// The runs of a protocol, in table order.
pub fn plan(opts: &ToyProtocolOptions) -> Vec<ToyRun> {
    let mut runs = Vec::new();
    for &style in &opts.styles {
        for &method in &opts.methods {
            runs.push(ToyRun {
                label: method_label(method).to_string(),
                table: ToyTable::Main,
                method,
                style,
                composition: Composition::Mixed,
                aux: toy_recipe(method).aux,
                setting: None,
            });
        }
        for &method in &opts.methods {
            for setting in opts.vary.iter().flat_map(|v| v.settings.iter().cloned()) {
                runs.push(ToyRun {
                    label: format!(
                        "{}, {}",
                        method_label(method),
                        setting.replace('=', " = ").replace(';', ", ")
                    ),
                    table: ToyTable::Vary,
                    method,
                    style,
                    composition: Composition::Mixed,
                    aux: toy_recipe(method).aux,
                    setting: Some(setting),
                });
            }
        }
    }
    if let (true, Some(&style)) = (opts.ablations, opts.styles.first()) {
        for composition in [Composition::People, Composition::Backgrounds] {
            runs.push(ToyRun {
                label: format!("StyleRef: {}", composition.name()),
                table: ToyTable::Composition,
                method: Method::Styleforge,
                style,
                composition,
                aux: toy_recipe(Method::Styleforge).aux,
                setting: None,
            });
        }
        for aux in [
            AuxChoice::None,
            AuxChoice::Generated,
            AuxChoice::KnownStylePeople,
        ] {
            runs.push(ToyRun {
                label: format!("Aux: {}", aux.name()),
                table: ToyTable::Aux,
                method: Method::Styleforge,
                style,
                composition: Composition::Mixed,
                aux,
                setting: None,
            });
        }
    }
    runs
}

/// Measures of one model on one style.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ToyMetrics {
    /// Probe Fréchet distance of token-prompt pictures to renders of the style (↓).
    pub style_fd: f64,
    /// Probe kernel distance (KID's unbiased MMD² in probe-feature space; ↓).
    pub style_kd: f64,
    /// Fraction of token-prompt pictures the probe calls the target style (↑).
    pub style_accuracy: f64,
    /// Fraction of prompted objects found (↑).
    pub object_recall: f64,
    /// Fraction of prompted colour words found (↑).
    pub colour_accuracy: f64,
    /// Fraction of drift pictures in the base style their prompt names (↑).
    pub kept: f64,
    /// Fraction of drift pictures the probe calls the target style (↓).
    pub leak: f64,
    /// Probe Fréchet distance between drift pictures and the base model's (↓).
    pub drift_fd: f64,
}

/// One row of a result table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToyRow {
    /// Row label.
    pub label: String,
    /// Table.
    pub table: ToyTable,
    /// Style.
    pub style: Style,
    /// The run folder (none for the base model's row).
    pub run: Option<PathBuf>,
    /// Measures.
    pub metrics: ToyMetrics,
}

/// What a protocol wrote.
#[derive(Debug, Clone)]
pub struct ToyProtocolResult {
    /// Every row.
    pub rows: Vec<ToyRow>,
    /// `toy-protocol.md`.
    pub markdown: PathBuf,
    /// `toy-protocol.html`.
    pub html: PathBuf,
    /// `toy-protocol.json`.
    pub json: PathBuf,
}

/// A prompt with the scene it describes.
#[derive(Clone)]
pub(crate) struct Prompted {
    pub(crate) scene: Scene,
    /// The named base style (drift prompts).
    pub(crate) base_style: Option<Style>,
    pub(crate) person: bool,
}

pub(crate) fn eval_scenes(n: usize) -> Vec<Prompted> {
    style_ref_samples(Style::Plain, Composition::Mixed, n, EVAL_SEED)
        .into_iter()
        .map(|s| Prompted {
            person: s.scene.contains(ObjectKind::Person),
            scene: s.scene,
            base_style: None,
        })
        .collect()
}

pub(crate) fn drift_scenes(n: usize) -> Vec<Prompted> {
    let world = World::new(EVAL_SEED + 1);
    (0..n as u64)
        .map(|i| {
            let scene = world.scene(i);
            Prompted {
                person: scene.contains(ObjectKind::Person),
                scene,
                base_style: Some(Style::BASE[i as usize % Style::BASE.len()]),
            }
        })
        .collect()
}

/// Pictures denoised together.
const SAMPLE_BATCH: usize = 16;

/// A run's pictures for the protocol, inside its run folder.
pub const PROTOCOL_IMAGES: &str = "protocol-images";

/// `dir/{prefix}_NNN.png` for `prompts`, picture `i` with seed `seed + i`.
fn image_specs(prompts: Vec<String>, dir: &Path, prefix: &str, seed: u64) -> Vec<ImageSpec> {
    prompts
        .into_iter()
        .enumerate()
        .map(|(i, prompt)| ImageSpec {
            path: dir.join(format!("{prefix}_{i:03}.png")),
            prompt,
            seed: seed.wrapping_add(i as u64),
        })
        .collect()
}

fn generate_options(opts: &ToyProtocolOptions, label: String) -> GenerateOptions {
    GenerateOptions {
        sampling: toy_sampling(opts),
        size: None,
        batch: Some(SAMPLE_BATCH),
        parameters: None,
        label,
    }
}

/// The model's own sampler (the toy base model's is Euler a) with the protocol's steps and
/// guidance.
fn toy_sampling(opts: &ToyProtocolOptions) -> SamplingOptions {
    SamplingOptions {
        steps: opts.sample_steps,
        guidance_scale: opts.guidance,
        guidance_rescale: opts.guidance_rescale,
        ..Default::default()
    }
}

/// The data folders of one run, as [`prepare_data`] writes them: StyleRef concepts (people
/// first for Multi-StyleForge) and the Aux folder (none without a prior loss).
pub(crate) fn data_paths(
    opts: &ToyProtocolOptions,
    run: &ToyRun,
) -> (Vec<PathBuf>, Option<PathBuf>) {
    let data = opts.out.join("data");
    let style_dir = data.join(run.style.id());
    let concepts = if run.method == Method::MultiStyleforge {
        vec![
            style_dir.join("people-of-mixed"),
            style_dir.join("backgrounds-of-mixed"),
        ]
    } else {
        vec![style_dir.join(run.composition.name())]
    };
    let aux = match run.aux {
        AuxChoice::KnownStylePeople => Some(data.join("aux-known-style-people")),
        // The twins of this run's StyleRef scenes (the same for every held-out style).
        AuxChoice::KnownStyleScenes => {
            Some(data.join(format!("aux-known-style-scenes-{}", run.composition.name())))
        }
        AuxChoice::Generated => Some(data.join("aux-generated")),
        AuxChoice::None => None,
    };
    (concepts, aux)
}

/// Writes the data folders of one run ([`data_paths`]) and returns them.
pub(crate) fn prepare_data(
    opts: &ToyProtocolOptions,
    run: &ToyRun,
    progress: &mut dyn Progress,
) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let (concepts, aux) = data_paths(opts, run);
    let samples = style_ref_samples(
        run.style,
        run.composition,
        opts.style_images,
        STYLE_REF_SEED,
    );
    if run.method == Method::MultiStyleforge {
        let (people, backgrounds): (Vec<_>, Vec<_>) = samples
            .into_iter()
            .partition(|s| s.scene.contains(ObjectKind::Person));
        write_samples(&concepts[0], &people, CaptionText::Content)?;
        write_samples(&concepts[1], &backgrounds, CaptionText::Content)?;
    } else {
        write_samples(&concepts[0], &samples, CaptionText::Content)?;
    }
    if let Some(dir) = &aux {
        match run.aux {
            AuxChoice::KnownStylePeople => write_samples(
                dir,
                &known_style_people(opts.aux_images, AUX_SEED),
                CaptionText::Full,
            )?,
            AuxChoice::KnownStyleScenes => write_samples(
                dir,
                &known_style_scenes(run.composition, opts.aux_images, STYLE_REF_SEED),
                CaptionText::Full,
            )?,
            AuxChoice::Generated => {
                // DreamBooth's class images, made once for every run (the trainer would
                // make them per run) with the protocol's sampler.
                let specs = image_specs(
                    vec!["style".to_string(); opts.aux_images],
                    dir,
                    "img",
                    AUX_SEED,
                );
                let none = GenerationAdapters::default();
                generate_missing(
                    &mut LazyModel::auto(&opts.base, &none, &opts.device),
                    &specs,
                    &generate_options(opts, "generating the Aux set".into()),
                    progress,
                )?;
            }
            AuxChoice::None => {}
        }
    }
    Ok((concepts, aux))
}

/// The training config of one run: its method's recipe, with the run's setting applied.
pub fn run_config(
    opts: &ToyProtocolOptions,
    run: &ToyRun,
    concepts: &[PathBuf],
    aux: Option<&Path>,
    dir: &Path,
) -> Result<TrainConfig> {
    let config = recipe_config(opts, run, concepts, aux, dir);
    match &run.setting {
        Some(setting) => {
            let overrides: Vec<String> = setting.split(';').map(str::to_string).collect();
            config.with_overrides(&overrides)
        }
        None => Ok(config),
    }
}

fn recipe_config(
    opts: &ToyProtocolOptions,
    run: &ToyRun,
    concepts: &[PathBuf],
    aux: Option<&Path>,
    dir: &Path,
) -> TrainConfig {
    let recipe = toy_recipe(run.method);
    TrainConfig {
        method: run.method,
        seed: Some(opts.seed),
        device: None,
        model: ModelSection {
            base: opts.base.clone(),
            variant: None,
            config: None,
        },
        data: DataSection {
            concepts: concepts
                .iter()
                .map(|c| ConceptConfig {
                    style_dir: c.clone(),
                    aux_dir: aux.map(Path::to_path_buf),
                    token: None,
                })
                .collect(),
            resolution: Some(32),
            ..Default::default()
        },
        training: TrainingSection {
            prior_loss_weight: Some(if run.aux == AuxChoice::None { 0.0 } else { 1.0 }),
            num_aux_images: Some(opts.aux_images),
            aux_steps: Some(opts.sample_steps),
            ..Default::default()
        },
        optim: OptimSection {
            steps: Some(opts.steps.unwrap_or(recipe.steps)),
            lr: Some(recipe.lr),
            ..Default::default()
        },
        output: OutputSection {
            dir: Some(dir.to_path_buf()),
            checkpoint_every: Some(0),
            validate_every: Some(0),
            validation_prompts: Some(vec![
                "a red person on grass by day, {token} style".into(),
                "a blue house and a yellow sun on sand at sunset, {token} style".into(),
            ]),
            validation_steps: Some(opts.sample_steps),
            ..Default::default()
        },
    }
}

/// The pictures of one model for the token and drift prompts.
pub(crate) struct Sampled {
    pub(crate) token: Vec<RgbImage>,
    pub(crate) drift: Vec<RgbImage>,
}

/// The token and drift pictures of a model prompted with `phrases` (people, backgrounds),
/// in `images/token_NNN.png` and `images/drift_NNN.png`.
pub(crate) fn sample_specs(
    opts: &ToyProtocolOptions,
    phrases: (&str, &str),
    evals: &[Prompted],
    drifts: &[Prompted],
    images: &Path,
) -> (Vec<ImageSpec>, Vec<ImageSpec>) {
    let token: Vec<String> = evals
        .iter()
        .map(|p| {
            let phrase = if p.person { phrases.0 } else { phrases.1 };
            styleforge_world::caption_with_style_word(&p.scene, phrase)
        })
        .collect();
    let drift: Vec<String> = drifts
        .iter()
        .map(|p| styleforge_world::caption(&p.scene, p.base_style.unwrap_or(Style::Plain)))
        .collect();
    (
        image_specs(token, images, "token", opts.seed),
        image_specs(drift, images, "drift", opts.seed),
    )
}

/// Samples the token and drift pictures of a model (those not on disk yet) and reads them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sample_model(
    opts: &ToyProtocolOptions,
    dir: &Path,
    adapters: &GenerationAdapters,
    phrases: (&str, &str),
    evals: &[Prompted],
    drifts: &[Prompted],
    images: &Path,
    progress: &mut dyn Progress,
) -> Result<Sampled> {
    let (token, drift) = sample_specs(opts, phrases, evals, drifts, images);
    let mut model = LazyModel::with_adapters(dir, adapters, &opts.device);
    let gen = generate_options(opts, format!("sampling {}", images.display()));
    generate_missing(&mut model, &token, &gen, progress)?;
    generate_missing(&mut model, &drift, &gen, progress)?;
    Ok(Sampled {
        token: load_all(&token)?,
        drift: load_all(&drift)?,
    })
}

pub(crate) fn measure(
    probes: &Probes,
    style: Style,
    s: &Sampled,
    base_drift: &[RgbImage],
    evals: &[Prompted],
    drifts: &[Prompted],
    reference: &[RgbImage],
) -> Result<ToyMetrics> {
    let token_labels = probes.predict(&s.token)?;
    let scenes: Vec<Scene> = evals.iter().map(|p| p.scene.clone()).collect();
    let content = content_scores_of(&token_labels, &scenes)?;
    let drift_labels = probes.predict(&s.drift)?;
    let kept = drift_labels
        .iter()
        .zip(drifts)
        .filter(|(l, p)| Some(l.style) == p.base_style)
        .count() as f64
        / drifts.len().max(1) as f64;
    let kid = probe_kernel_distance(
        probes,
        &s.token,
        reference,
        &styleforge_eval::KidConfig {
            subset_size: Some(s.token.len().min(reference.len())),
            ..Default::default()
        },
    )?;
    Ok(ToyMetrics {
        style_fd: probe_frechet_distance(probes, &s.token, reference)?,
        style_kd: kid.mean,
        style_accuracy: style_accuracy_of(&token_labels, style),
        object_recall: content.object_recall,
        colour_accuracy: content.colour_accuracy,
        kept,
        leak: style_accuracy_of(&drift_labels, style),
        drift_fd: probe_frechet_distance(probes, &s.drift, base_drift)?,
    })
}

/// Runs the toy protocol: trains what is not trained yet, samples what is not sampled yet,
/// measures everything and writes the tables.
pub fn run_toy_protocol(
    opts: &ToyProtocolOptions,
    progress: &mut dyn Progress,
) -> Result<ToyProtocolResult> {
    let mut p = ToyProtocol::new(opts);
    Ok(crate::protocol::run(&mut p, progress)?.1)
}
