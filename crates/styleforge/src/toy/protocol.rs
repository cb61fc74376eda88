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
//! styles). Every run, image and table is written under the output folder, and a rerun
//! reuses what is there (finished runs, generated pictures), so a long protocol can be
//! stopped and continued.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};
use styleforge_world::{ObjectKind, Scene, Style, World};

use super::data::{
    known_style_people, style_ref_samples, write_samples, AuxChoice, CaptionText, Composition,
    AUX_SEED, EVAL_SEED, STYLE_REF_SEED,
};
use super::measures::{
    content_scores_of, probe_frechet_distance, probe_kernel_distance, style_accuracy_of,
};
use super::probes::Probes;
use crate::adapters::generation::{expand_placeholders, load_pipeline, GenerationAdapters};
use crate::error::{Error, Result};
use crate::evaluation::protocol::{method_label, resolve_model, ProtocolModel, ProtocolStyle};
use crate::evaluation::report::escape_html;
use crate::image_io::{load_rgb, tensor_to_rgb};
use crate::pipelines::{SamplingOptions, StableDiffusion};
use crate::progress::Progress;
use crate::report::{save_png, ImageGrid};
use crate::training::config::{ConceptConfig, DataSection, ModelSection, OptimSection};
use crate::training::config::{Method, OutputSection, TrainConfig, TrainingSection};
use crate::training::{train, RunOptions};

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
        Method::Styleforge | Method::MultiStyleforge => (1e-4, 400, AuxChoice::KnownStylePeople),
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
    /// Seed of training runs; picture `i` of every prompt set uses seed `seed + i`.
    pub seed: u64,
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
            seed: 1337,
        }
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
}

impl ToyRun {
    /// The run's folder name under `<out>/runs/<style>/`.
    pub fn folder(&self) -> String {
        match self.table {
            ToyTable::Main => self.method.name().to_string(),
            ToyTable::Composition => format!("ablation-styleref-{}", self.composition.name()),
            ToyTable::Aux => format!("ablation-aux-{}", self.aux.name()),
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
            });
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
                aux: AuxChoice::KnownStylePeople,
            });
        }
        for aux in [AuxChoice::None, AuxChoice::Generated] {
            runs.push(ToyRun {
                label: format!("Aux: {}", aux.name()),
                table: ToyTable::Aux,
                method: Method::Styleforge,
                style,
                composition: Composition::Mixed,
                aux,
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One style's sample grid: labelled rows of pictures.
type SampleGrid = (Style, Vec<(String, Vec<RgbImage>)>);

/// Pictures denoised together.
const SAMPLE_BATCH: usize = 16;

/// Samples `prompts` (picture `i` with seed `seed + i`) into `dir/{prefix}_NNN.png`,
/// reusing pictures already there.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sample_set(
    sd: &StableDiffusion,
    prompts: &[String],
    dir: &Path,
    prefix: &str,
    sampling: &SamplingOptions,
    seed: u64,
    progress: &mut dyn Progress,
) -> Result<Vec<RgbImage>> {
    let size = sd.native_size();
    let (w, h) = (size, size);
    let path = |i: usize| dir.join(format!("{prefix}_{i:03}.png"));
    let mut out: Vec<Option<RgbImage>> = (0..prompts.len())
        .map(|i| path(i).is_file().then(|| load_rgb(&path(i)).ok()).flatten())
        .collect();
    let missing: Vec<usize> = (0..prompts.len()).filter(|&i| out[i].is_none()).collect();
    // One batch per chunk: far faster than one picture at a time on small models.
    for chunk in missing.chunks(SAMPLE_BATCH) {
        let texts: Vec<String> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        let seeds: Vec<u64> = chunk.iter().map(|&i| seed.wrapping_add(i as u64)).collect();
        let t = sd.txt2img_prompts(&texts, &seeds, sampling, w, h, progress)?;
        for (k, &i) in chunk.iter().enumerate() {
            let img = tensor_to_rgb(&t.get(k)?)?;
            save_png(&img, &path(i))?;
            out[i] = Some(img);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// The model's own sampler (the toy base model's is Euler a) with the protocol's steps and
/// guidance.
fn toy_sampling(opts: &ToyProtocolOptions) -> SamplingOptions {
    SamplingOptions {
        steps: opts.sample_steps,
        guidance_scale: opts.guidance,
        ..Default::default()
    }
}

/// The data folders of one run: StyleRef concepts (people first for Multi-StyleForge) and
/// the Aux folder (none when generated or absent).
pub(crate) fn prepare_data(
    opts: &ToyProtocolOptions,
    run: &ToyRun,
    progress: &mut dyn Progress,
) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let data = opts.out.join("data");
    let style_dir = data.join(run.style.id());
    let n = opts.style_images;
    let samples = style_ref_samples(run.style, run.composition, n, STYLE_REF_SEED);
    let concepts = if run.method == Method::MultiStyleforge {
        let (people, backgrounds): (Vec<_>, Vec<_>) = samples
            .into_iter()
            .partition(|s| s.scene.contains(ObjectKind::Person));
        let p = style_dir.join("people-of-mixed");
        let b = style_dir.join("backgrounds-of-mixed");
        write_samples(&p, &people, CaptionText::Content)?;
        write_samples(&b, &backgrounds, CaptionText::Content)?;
        vec![p, b]
    } else {
        let dir = style_dir.join(run.composition.name());
        write_samples(&dir, &samples, CaptionText::Content)?;
        vec![dir]
    };
    let aux = match run.aux {
        AuxChoice::KnownStylePeople => {
            let dir = data.join("aux-known-style-people");
            write_samples(
                &dir,
                &known_style_people(opts.aux_images, AUX_SEED),
                CaptionText::Full,
            )?;
            Some(dir)
        }
        AuxChoice::Generated => {
            // DreamBooth's class images, made once for every run (the trainer would make
            // them per run) with the protocol's sampler.
            let dir = data.join("aux-generated");
            let n = opts.aux_images;
            if (0..n).any(|i| !dir.join(format!("img_{i:03}.png")).is_file()) {
                let sd = StableDiffusion::load(&opts.base, &Default::default())?;
                let prompts = vec!["style".to_string(); n];
                let sampling = toy_sampling(opts);
                sample_set(&sd, &prompts, &dir, "img", &sampling, AUX_SEED, progress)?;
            }
            Some(dir)
        }
        AuxChoice::None => None,
    };
    Ok((concepts, aux))
}

/// The training config of one run.
pub fn run_config(
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
    let ap = load_pipeline(dir, adapters)?;
    let token: Vec<String> = evals
        .iter()
        .map(|p| {
            let phrase = if p.person { phrases.0 } else { phrases.1 };
            let text = styleforge_world::caption_with_style_word(&p.scene, phrase);
            expand_placeholders(&text, &ap.placeholders)
        })
        .collect();
    let drift: Vec<String> = drifts
        .iter()
        .map(|p| styleforge_world::caption(&p.scene, p.base_style.unwrap_or(Style::Plain)))
        .collect();
    let sampling = toy_sampling(opts);
    let seed = opts.seed;
    Ok(Sampled {
        token: sample_set(
            &ap.pipeline,
            &token,
            images,
            "token",
            &sampling,
            seed,
            progress,
        )?,
        drift: sample_set(
            &ap.pipeline,
            &drift,
            images,
            "drift",
            &sampling,
            seed,
            progress,
        )?,
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
    if opts.styles.is_empty() || (opts.methods.is_empty() && !opts.ablations) {
        return Err(Error::InvalidRequest(
            "the toy protocol needs at least one style and one method".into(),
        ));
    }
    if let Some(s) = opts.styles.iter().find(|s| s.is_base()) {
        return Err(Error::InvalidRequest(format!(
            "`{}` is one of the base model's pretraining styles; learn a held-out one ({})",
            s.name(),
            Style::HELD_OUT.map(|s| s.id()).join(", ")
        )));
    }
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let probes = Probes::load(&opts.probes, &candle_core::Device::Cpu)?;
    let evals = eval_scenes(opts.eval_prompts);
    let drifts = drift_scenes(opts.drift_prompts);
    let runs_dir = opts.out.join("runs");

    let base_images = opts.out.join("images").join("base");
    let mut rows = Vec::new();
    let mut grids: Vec<SampleGrid> = Vec::new();
    let mut base_drift = None;
    for &style in &opts.styles {
        let reference: Vec<RgbImage> = style_ref_samples(
            style,
            Composition::Mixed,
            opts.reference_images,
            EVAL_SEED + 2,
        )
        .into_iter()
        .map(|s| s.image)
        .collect();
        // The base model with the (untrained) token: where every method starts from. Its
        // prompts do not depend on the style, so its pictures are made once.
        let base = sample_model(
            opts,
            &opts.base,
            &GenerationAdapters::default(),
            ("ohwx style", "ohwx style"),
            &evals,
            &drifts,
            &base_images,
            progress,
        )?;
        let bd = base_drift.get_or_insert_with(|| base.drift.clone()).clone();
        rows.push(ToyRow {
            label: "Base model".into(),
            table: ToyTable::Main,
            style,
            run: None,
            metrics: measure(&probes, style, &base, &bd, &evals, &drifts, &reference)?,
        });
        let mut grid = vec![
            (
                format!("true {} renders", style.name()),
                // The prompted scenes themselves, drawn in the style: what a perfect
                // model would make.
                shown(&evals)
                    .iter()
                    .map(|p| styleforge_world::render(&p.scene, style, 32, opts.seed))
                    .collect(),
            ),
            ("base model".to_string(), shown(&base.token)),
        ];
        for run in plan(opts).into_iter().filter(|r| r.style == style) {
            let dir = runs_dir.join(style.id()).join(run.folder());
            if !dir.join("model").is_dir() {
                let (concepts, aux) = prepare_data(opts, &run, progress)?;
                let cfg = run_config(opts, &run, &concepts, aux.as_deref(), &dir);
                if dir.exists() {
                    // An unfinished run: start it again (the protocol's runs are short).
                    std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
                }
                tracing::info!(
                    "training {} on {} → {}",
                    run.label,
                    style.name(),
                    dir.display()
                );
                train(&cfg.resolve()?, &RunOptions::default(), progress)?;
            }
            let model = resolve_model(
                &ProtocolModel {
                    label: Some(run.label.clone()),
                    style: Some(style.id().to_string()),
                    run: Some(dir.clone()),
                    path: None,
                    phrase: None,
                },
                &[ProtocolStyle {
                    name: style.id().to_string(),
                    reference: PathBuf::new(),
                }],
            )?;
            let sampled = sample_model(
                opts,
                &model.dir,
                &model.adapters,
                (&model.person_phrase, &model.scene_phrase),
                &evals,
                &drifts,
                &dir.join("protocol-images"),
                progress,
            )?;
            let metrics = measure(&probes, style, &sampled, &bd, &evals, &drifts, &reference)?;
            tracing::info!("{} on {}: {metrics:?}", run.label, style.name());
            if run.table == ToyTable::Main {
                grid.push((run.label.clone(), shown(&sampled.token)));
            }
            rows.push(ToyRow {
                label: run.label.clone(),
                table: run.table,
                style,
                run: Some(dir),
                metrics,
            });
        }
        grids.push((style, grid));
    }
    write_results(opts, &rows, &grids, &evals)
}

/// The token-prompt pictures shown in the sample grids: four with a person (the first half
/// of the prompts), four without.
fn shown<T: Clone>(items: &[T]) -> Vec<T> {
    let half = items.len() / 2;
    let mut v: Vec<T> = items.iter().take(half.min(4)).cloned().collect();
    v.extend(items.iter().skip(half).take(4).cloned());
    v
}

const COLUMNS: [(&str, &str); 8] = [
    (
        "style FD ↓",
        "Probe Fréchet distance to renders of the style",
    ),
    (
        "style KD ↓",
        "Probe kernel distance to renders of the style",
    ),
    (
        "style acc ↑",
        "Token pictures the probe calls the target style",
    ),
    ("objects ↑", "Prompted objects found"),
    ("colours ↑", "Prompted colour words found"),
    (
        "kept ↑",
        "Drift pictures in the base style their prompt names",
    ),
    ("leak ↓", "Drift pictures in the learnt style"),
    (
        "drift FD ↓",
        "Probe Fréchet distance of drift pictures to the base model's",
    ),
];

fn cells(m: &ToyMetrics) -> [String; 8] {
    [
        format!("{:.1}", m.style_fd),
        format!("{:.1}", m.style_kd),
        format!("{:.2}", m.style_accuracy),
        format!("{:.2}", m.object_recall),
        format!("{:.2}", m.colour_accuracy),
        format!("{:.2}", m.kept),
        format!("{:.2}", m.leak),
        format!("{:.1}", m.drift_fd),
    ]
}

fn mean_metrics(ms: &[&ToyMetrics]) -> ToyMetrics {
    let n = ms.len().max(1) as f64;
    let avg = |f: fn(&ToyMetrics) -> f64| ms.iter().map(|m| f(m)).sum::<f64>() / n;
    ToyMetrics {
        style_fd: avg(|m| m.style_fd),
        style_kd: avg(|m| m.style_kd),
        style_accuracy: avg(|m| m.style_accuracy),
        object_recall: avg(|m| m.object_recall),
        colour_accuracy: avg(|m| m.colour_accuracy),
        kept: avg(|m| m.kept),
        leak: avg(|m| m.leak),
        drift_fd: avg(|m| m.drift_fd),
    }
}

/// The tables of the protocol: `(title, rows of (label, metrics))`.
pub fn tables(rows: &[ToyRow], styles: &[Style]) -> Vec<(String, Vec<(String, ToyMetrics)>)> {
    let mut out = Vec::new();
    let main = |r: &&ToyRow| r.table == ToyTable::Main;
    if styles.len() > 1 {
        let mut labels: Vec<String> = Vec::new();
        for r in rows.iter().filter(main) {
            if !labels.contains(&r.label) {
                labels.push(r.label.clone());
            }
        }
        let mean = labels
            .iter()
            .map(|l| {
                let ms: Vec<&ToyMetrics> = rows
                    .iter()
                    .filter(main)
                    .filter(|r| &r.label == l)
                    .map(|r| &r.metrics)
                    .collect();
                (l.clone(), mean_metrics(&ms))
            })
            .collect();
        out.push((format!("Mean over {} held-out styles", styles.len()), mean));
    }
    for s in styles {
        let t: Vec<_> = rows
            .iter()
            .filter(main)
            .filter(|r| r.style == *s)
            .map(|r| (r.label.clone(), r.metrics))
            .collect();
        out.push((format!("Style: {}", s.name()), t));
    }
    let Some(first) = styles.first() else {
        return out;
    };
    let full = rows.iter().find(|r| {
        r.table == ToyTable::Main
            && r.style == *first
            && r.label == method_label(Method::Styleforge)
    });
    for (table, title, full_label) in [
        (
            ToyTable::Composition,
            "Ablation: StyleRef composition",
            "StyleRef: mixed (StyleForge)",
        ),
        (
            ToyTable::Aux,
            "Ablation: Aux set",
            "Aux: known-style-people (StyleForge)",
        ),
    ] {
        let mut t: Vec<_> = rows
            .iter()
            .filter(|r| r.table == table)
            .map(|r| (r.label.clone(), r.metrics))
            .collect();
        if t.is_empty() {
            continue;
        }
        if let Some(f) = full {
            t.push((full_label.to_string(), f.metrics));
        }
        out.push((format!("{title} ({})", first.name()), t));
    }
    out
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn write_results(
    opts: &ToyProtocolOptions,
    rows: &[ToyRow],
    grids: &[SampleGrid],
    evals: &[Prompted],
) -> Result<ToyProtocolResult> {
    let tables = tables(rows, &opts.styles);
    let header = COLUMNS.map(|(c, _)| c);
    let mut md = String::from("# Toy-world protocol\n\n");
    md.push_str(&format!(
        "{} token prompts and {} drift prompts per model, {} steps of the model's sampler, \
         guidance {}, seeds {}…; distances against {} renders per style.\n\n",
        opts.eval_prompts,
        opts.drift_prompts,
        opts.sample_steps,
        opts.guidance,
        opts.seed,
        opts.reference_images
    ));
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Toy-world protocol</title>\
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}td,th{padding:3px 9px;border-bottom:1px solid #ddd;text-align:right}\
td:first-child,th:first-child{text-align:left}img{image-rendering:pixelated;max-width:100%}</style></head><body>\
<h1>Toy-world protocol</h1>",
    );
    for (title, t) in &tables {
        md.push_str(&format!(
            "## {title}\n\n| method | {} |\n|---|",
            header.join(" | ")
        ));
        md.push_str(&"---:|".repeat(header.len()));
        md.push('\n');
        html.push_str(&format!(
            "<h2>{}</h2><table><tr><th>method</th>",
            escape_html(title)
        ));
        for (c, tip) in COLUMNS {
            html.push_str(&format!(
                "<th title=\"{}\">{}</th>",
                escape_html(tip),
                escape_html(c)
            ));
        }
        html.push_str("</tr>");
        for (label, m) in t {
            let c = cells(m);
            md.push_str(&format!("| {label} | {} |\n", c.join(" | ")));
            html.push_str(&format!("<tr><td>{}</td>", escape_html(label)));
            for v in &c {
                html.push_str(&format!("<td>{v}</td>"));
            }
            html.push_str("</tr>");
        }
        md.push('\n');
        html.push_str("</table>");
    }
    md.push_str("Columns: ");
    md.push_str(
        &COLUMNS
            .iter()
            .map(|(c, tip)| format!("**{c}**: {tip}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    md.push_str(".\n");
    let prompts: Vec<String> = shown(evals)
        .iter()
        .map(|p| styleforge_world::content_caption(&p.scene))
        .collect();
    for (style, grid) in grids {
        let mut g = ImageGrid::new(format!("Token prompts, {} style learnt", style.name()))
            .columns(prompts.iter().map(|p| p.as_str()));
        for (label, imgs) in grid {
            g = g.row(label.clone(), imgs.clone());
        }
        let name = format!("samples-{}.png", style.id());
        g.save(&opts.out.join(&name))?;
        md.push_str(&format!("\n![{}]({name})\n", style.name()));
        html.push_str(&format!(
            "<h2>Samples: {}</h2><img src=\"{name}\" alt=\"samples\">",
            escape_html(style.name())
        ));
    }
    html.push_str("</body></html>\n");
    let markdown = opts.out.join("toy-protocol.md");
    let html_path = opts.out.join("toy-protocol.html");
    let json = opts.out.join("toy-protocol.json");
    write_atomic(&markdown, &md)?;
    write_atomic(&html_path, &html)?;
    let json_text = serde_json::to_string_pretty(rows)
        .map_err(|e| Error::msg(format!("cannot encode the protocol's rows: {e}")))?;
    write_atomic(&json, &json_text)?;
    Ok(ToyProtocolResult {
        rows: rows.to_vec(),
        markdown,
        html: html_path,
        json,
    })
}
