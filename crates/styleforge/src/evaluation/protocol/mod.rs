//! `styleforge protocol`: the paper's evaluation for several trained models at once.
//!
//! For every model (a training run folder, or a model folder with the phrase that calls
//! its style) and every content prompt, generate `images_per_prompt` images with
//! `"{content}, {style phrase}"`, then score each model's images against its style's
//! reference set with [`evaluate_with`](crate::evaluation::evaluate_with) (FID, KID, CLIP-T against the content prompt,
//! CLIP-I; with a CSD model the CSD style score, with a DINO model the leak and, given
//! [`ProtocolSettings::content_from`], the DINO content score), and write one comparison
//! table shaped like the paper's main table: methods as rows, each metric × style as
//! columns (`protocol.md`, `protocol.html`, `protocol.json`), with a scatter plot of style
//! (CSD) against content (DINO content, else CLIP-T) per method ([`STYLE_CONTENT_CHART`]).
//!
//! Prompts are tagged `person:` or `scene:` ([`default_prompts`] ships 20 of each, simple
//! subjects first, then compositional ones); Multi-StyleForge and Custom Diffusion runs,
//! which bind people and backgrounds to two tokens, use the people token for `person:`
//! prompts and the background token for `scene:` prompts.
//!
//! Generation is resumable: an image already on disk (same model, prompt index and sample
//! index; its seed follows from them) is not made again, so a long protocol can be stopped
//! and rerun, or extended with more models. The jobs, the generator and the table renderer
//! are the shared [`crate::protocol`] engine's; this module is what is particular to real
//! images: prompts, models, and the Inception/CLIP scorer ([`InceptionClip`]).

mod checkpoints;
mod scorer;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use styleforge_models::files;

use super::{EvalSettings, ImageSet, Metrics};
use crate::adapters::generation::GenerationAdapters;
use crate::adapters::training::files as adapter_files;
use crate::error::{Error, Result};
use crate::pipelines::{SamplingOptions, SchedulerChoice};
use crate::progress::Progress;
use crate::training::{Method, ResolvedConfig};
use crate::RunDir;
pub use checkpoints::{
    best_checkpoint_step, checkpoint_model, export_checkpoint, run_checkpoint_steps,
    CheckpointModel, ExportedModel,
};
pub use scorer::{
    checkpoint_plateaus, report, style_content_points, write_charts, write_style_content_chart,
    CellImages, CheckpointPlateau, CheckpointScores, GenerationWork, ImageProtocol, InceptionClip,
    ScatterSeries, PLATEAU_TOLERANCE, PROMPTS_PER_JOB, STYLE_CONTENT_CHART,
};

/// What a content prompt shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptKind {
    /// People (Multi-StyleForge's `[V]` concept).
    Person,
    /// Places and things without people (the `[W]` concept).
    Scene,
}

/// A content prompt, without any style words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentPrompt {
    /// The prompt.
    pub text: String,
    /// What it shows.
    pub kind: PromptKind,
}

/// The shipped prompt list (`assets/protocol/prompts.txt`).
pub fn default_prompts() -> Vec<ContentPrompt> {
    parse_prompts(include_str!("../../../assets/protocol/prompts.txt"))
        .expect("the shipped prompt list parses")
}

/// Parses a prompt list: one prompt a line, `person: …` or `scene: …` (untagged lines count
/// as scenes), blank lines and `#` comments skipped.
pub fn parse_prompts(text: &str) -> Result<Vec<ContentPrompt>> {
    let prompts: Vec<ContentPrompt> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (kind, text) = match l.split_once(':') {
                Some((tag, rest)) if tag.trim().eq_ignore_ascii_case("person") => {
                    (PromptKind::Person, rest)
                }
                Some((tag, rest)) if tag.trim().eq_ignore_ascii_case("scene") => {
                    (PromptKind::Scene, rest)
                }
                _ => (PromptKind::Scene, l),
            };
            ContentPrompt {
                text: text.trim().to_string(),
                kind,
            }
        })
        .collect();
    if prompts.is_empty() {
        return Err(Error::InvalidRequest(
            "the prompt list holds no prompt".into(),
        ));
    }
    Ok(prompts)
}

/// A style: its name and its reference images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProtocolStyle {
    /// The column label (`cubism`).
    pub name: String,
    /// The folder of reference images of the style.
    pub reference: PathBuf,
}

/// A model to evaluate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProtocolModel {
    /// The row label; default: the run's method (`StyleForge`, `LoRA`, …).
    #[serde(default)]
    pub label: Option<String>,
    /// The style (a [`ProtocolStyle::name`]) it was trained on; default: the only style.
    #[serde(default)]
    pub style: Option<String>,
    /// A `styleforge train` run folder (its `config.toml` and `model/`).
    #[serde(default)]
    pub run: Option<PathBuf>,
    /// Or a diffusers model folder with [`Self::phrase`].
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The style phrase appended to content prompts (`ohwx style`), for `path` models; a
    /// run's comes from its config.
    #[serde(default)]
    pub phrase: Option<String>,
    /// With `run`: this checkpoint step (`checkpoints/step-NNNNNNN`) instead of the final
    /// model (full fine-tuning runs), to see how the scores change over training.
    #[serde(default)]
    pub checkpoint: Option<usize>,
}

/// A model ready to sample from: where it is, what to apply, how to call its style.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// Row label.
    pub label: String,
    /// Style name.
    pub style: String,
    /// The diffusers folder to load.
    pub dir: PathBuf,
    /// Adapters to apply over it.
    pub adapters: GenerationAdapters,
    /// Phrase for `person:` prompts.
    pub person_phrase: String,
    /// Phrase for `scene:` prompts.
    pub scene_phrase: String,
    /// For a run's model: the run's row label without a step, and the training step (the
    /// final model's is the run's step count); `None` for a model folder.
    pub checkpoint: Option<(String, usize)>,
    /// The run folder (absolute) of a run's model.
    pub run: Option<PathBuf>,
    /// Whether the weights are the run's EMA (its final model when it ships the average,
    /// and such a run's checkpoints, see [`checkpoint_model`]).
    pub ema: bool,
}

impl ResolvedModel {
    /// `"{content}, {phrase}"` for this model.
    pub fn prompt(&self, p: &ContentPrompt) -> String {
        let phrase = match p.kind {
            PromptKind::Person => &self.person_phrase,
            PromptKind::Scene => &self.scene_phrase,
        };
        if phrase.is_empty() {
            p.text.clone()
        } else {
            format!("{}, {phrase}", p.text)
        }
    }
}

/// The row label of a method, as the paper names it.
pub fn method_label(method: Method) -> &'static str {
    match method {
        Method::Styleforge => "Single-StyleForge",
        Method::MultiStyleforge => "Multi-StyleForge",
        Method::Dreambooth => "DreamBooth",
        Method::Lora => "LoRA",
        Method::TextualInversion => "Textual Inversion",
        Method::CustomDiffusion => "Custom Diffusion",
    }
}

/// Reads a run folder: its effective `config.toml` and trained `model/`.
pub fn resolve_run(run: &Path) -> Result<(ResolvedConfig, PathBuf)> {
    let cfg = read_run_config(run)?;
    let model = RunDir::new(run).model();
    if !model.is_dir() {
        return Err(Error::Data {
            path: model,
            message: "the run has no trained model yet (train it to the end first)".into(),
        });
    }
    Ok((cfg, model))
}

/// Reads a run folder's effective `config.toml`.
pub fn read_run_config(run: &Path) -> Result<ResolvedConfig> {
    let config_path = RunDir::new(run).config();
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::Data {
        path: config_path.clone(),
        message: format!(
            "cannot read the run's config ({e}); is this a `styleforge train` run folder?"
        ),
    })?;
    toml::from_str(&text).map_err(|e| Error::Config {
        path: config_path,
        message: e.to_string(),
    })
}

/// Turns a [`ProtocolModel`] into what to load and how to prompt it.
pub fn resolve_model(m: &ProtocolModel, styles: &[ProtocolStyle]) -> Result<ResolvedModel> {
    let style = match (&m.style, styles) {
        (Some(s), _) => {
            if !styles.iter().any(|st| &st.name == s) {
                return Err(Error::InvalidRequest(format!(
                    "model style `{s}` is not one of the protocol's styles ({})",
                    styles
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            s.clone()
        }
        (None, [only]) => only.name.clone(),
        (None, _) => {
            return Err(Error::InvalidRequest(
                "with several styles, every model needs `style = …`".into(),
            ))
        }
    };
    match (&m.run, &m.path) {
        (Some(run), None) => {
            let (cfg, model) = resolve_run(run)?;
            let phrases: Vec<String> =
                cfg.concepts.iter().map(|c| style_phrase(&c.instance_prompt)).collect();
            let (person, scene) = match phrases.as_slice() {
                [one] => (one.to_string(), one.to_string()),
                [people, backgrounds, ..] => (people.to_string(), backgrounds.to_string()),
                [] => {
                    return Err(Error::Config {
                        path: RunDir::new(run).config(),
                        message: "the run's config lists no concept".into(),
                    })
                }
            };
            let mut adapters = GenerationAdapters::default();
            let series = m
                .label
                .clone()
                .unwrap_or_else(|| method_label(cfg.method).to_string());
            let run_abs = run.canonicalize().unwrap_or_else(|_| run.clone());
            if let Some(step) = m.checkpoint {
                let model = checkpoint_model(&cfg, run, step)?;
                // The averaged weights get a label (and image folder) of their own: pictures
                // of the trained weights made before are not theirs.
                let ema = if model.ema { " (EMA)" } else { "" };
                return Ok(ResolvedModel {
                    label: format!("{series} step {step}{ema}"),
                    style,
                    dir: model.dir,
                    adapters,
                    person_phrase: person,
                    scene_phrase: scene,
                    checkpoint: Some((series, step)),
                    run: Some(run_abs),
                    ema: model.ema,
                });
            }
            let dir = if cfg.method.is_adapter() {
                match cfg.method {
                    Method::Lora => adapters
                        .loras
                        .push((model.join(adapter_files::LORA_PEFT), 1.0)),
                    Method::TextualInversion => adapters
                        .embeddings
                        .push(model.join(adapter_files::TI_DIFFUSERS)),
                    Method::CustomDiffusion => {
                        adapters.custom_diffusion =
                            Some(model.join(adapter_files::CUSTOM_DIFFUSION))
                    }
                    _ => {}
                }
                base_folder(&cfg, run)?
            } else {
                model
            };
            Ok(ResolvedModel {
                label: series.clone(),
                style,
                dir,
                adapters,
                person_phrase: person,
                scene_phrase: scene,
                checkpoint: Some((series, cfg.steps)),
                run: Some(run_abs),
                ema: cfg.save_ema,
            })
        }
        (None, Some(path)) => {
            let phrase = m.phrase.clone().unwrap_or_default();
            Ok(ResolvedModel {
                label: m
                    .label
                    .clone()
                    .unwrap_or_else(|| path.display().to_string()),
                style,
                dir: path.clone(),
                adapters: GenerationAdapters::default(),
                person_phrase: phrase.clone(),
                scene_phrase: phrase,
                checkpoint: None,
                run: None,
                ema: false,
            })
        }
        _ => Err(Error::InvalidRequest(
            "a protocol model needs exactly one of `run` (a training run folder) or `path` (a model folder)"
                .into(),
        )),
    }
}

/// The phrase that calls a run's style inside a content prompt: its StyleRef prompt
/// without a leading article (DreamBooth's "a ohwx style" → "ohwx style").
pub fn style_phrase(instance_prompt: &str) -> String {
    let p = instance_prompt.trim();
    for article in ["a photo of ", "an ", "a "] {
        if let Some(rest) = p.strip_prefix(article) {
            return rest.trim().to_string();
        }
    }
    p.to_string()
}

/// An adapter run's base model as a diffusers folder: the `base-model/` a single-file base
/// was converted into, or the base resolved as the trainer resolves it (a folder, a single
/// file converted into `base-model/`, a Hub name from the cache).
fn base_folder(cfg: &ResolvedConfig, run: &Path) -> Result<PathBuf> {
    let converted = RunDir::new(run).base_model();
    // A single-file base converted by the run is used even when the file has moved since.
    if converted.join("model_index.json").is_file() {
        return Ok(converted);
    }
    let opts = styleforge_models::source::ResolveOptions {
        convert_into: Some(converted),
        ..styleforge_models::source::ResolveOptions::diffusers(cfg.variant.clone())
    };
    Ok(styleforge_models::source::resolve(&cfg.base, &opts)?.path)
}

/// A protocol file (TOML): `[[style]]` and `[[model]]` tables and optional settings;
/// relative paths are taken from the file's folder.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolFile {
    /// The styles.
    #[serde(default)]
    pub style: Vec<ProtocolStyle>,
    /// The models.
    #[serde(default)]
    pub model: Vec<ProtocolModel>,
    /// A prompts file ([`parse_prompts`]).
    pub prompts: Option<PathBuf>,
    /// Images per prompt and model.
    pub images_per_prompt: Option<usize>,
    /// Denoising steps.
    pub steps: Option<usize>,
    /// Guidance scale.
    pub guidance: Option<f64>,
    /// Guidance rescale φ, 0 to 1 (0: off).
    pub guidance_rescale: Option<f64>,
    /// Sampler name.
    pub scheduler: Option<String>,
    /// Negative prompt.
    pub negative_prompt: Option<String>,
    /// Seed of the first image.
    pub seed: Option<u64>,
    /// Image width.
    pub width: Option<usize>,
    /// Image height.
    pub height: Option<usize>,
    /// FID Inception weights.
    pub inception: Option<PathBuf>,
    /// CLIP model folder.
    pub clip: Option<PathBuf>,
    /// CSD file (from `tools/convert_csd.py`).
    pub csd: Option<PathBuf>,
    /// DINO / DINOv2 folder or Hub name.
    pub dino: Option<PathBuf>,
    /// The row label whose pictures are the content references of the DINO content score
    /// (usually the base model's row).
    pub content_from: Option<String>,
    /// Output folder.
    pub out: Option<PathBuf>,
}

impl ProtocolFile {
    /// Reads a protocol file, resolving its relative paths against its folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = files::read_to_string(path)?;
        let mut f: ProtocolFile = toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        for s in &mut f.style {
            s.reference = rel(&s.reference);
        }
        for m in &mut f.model {
            m.run = m.run.as_deref().map(rel);
            m.path = m.path.as_deref().map(rel);
        }
        for p in [&mut f.prompts, &mut f.inception, &mut f.csd, &mut f.out]
            .into_iter()
            .flatten()
        {
            *p = rel(p);
        }
        // `clip` may be a Hub name (`openai/clip-vit-base-patch16`): relative to the file
        // only when such a folder is there.
        for c in [&mut f.clip, &mut f.dino].into_iter().flatten() {
            if base.join(&*c).exists() {
                *c = rel(c);
            }
        }
        Ok(f)
    }
}

/// The protocol's settings.
#[derive(Debug, Clone)]
pub struct ProtocolSettings {
    /// The styles (columns).
    pub styles: Vec<ProtocolStyle>,
    /// The models (rows).
    pub models: Vec<ProtocolModel>,
    /// Content prompts.
    pub prompts: Vec<ContentPrompt>,
    /// Images per prompt and model.
    pub images_per_prompt: usize,
    /// Sampling settings (prompt and count are set per image).
    pub sampling: SamplingOptions,
    /// Image size; `None` takes the model's native size.
    pub size: Option<(usize, usize)>,
    /// Seed of the first image; image `k` of prompt `p` uses `seed + p·1000 + k`.
    pub seed: u64,
    /// Output folder: `images/<style>/<label>/`, `evals/`, the tables.
    pub out: PathBuf,
    /// Metric settings (`inputs` are replaced per model).
    pub eval: EvalSettings,
    /// The row label whose pictures (same prompt and seed) are every other row's content
    /// references for the DINO content score, e.g. the base model's; `None`: no content
    /// score.
    pub content_from: Option<String>,
}

impl ProtocolSettings {
    /// The paper's sampling (DDIM, 30 steps, guidance 7.5), 4 images per prompt, seed 1337.
    pub fn new(styles: Vec<ProtocolStyle>, models: Vec<ProtocolModel>, out: PathBuf) -> Self {
        Self {
            styles,
            models,
            prompts: default_prompts(),
            images_per_prompt: 4,
            sampling: SamplingOptions {
                scheduler: SchedulerChoice {
                    name: Some("ddim".into()),
                    karras: false,
                },
                ..SamplingOptions::default()
            },
            size: None,
            seed: 1337,
            out,
            eval: EvalSettings::new(ImageSet::Files(vec![]), ImageSet::Files(vec![])),
            content_from: None,
        }
    }
}

/// One row × style cell of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProtocolCell {
    /// Row label.
    pub label: String,
    /// Style.
    pub style: String,
    /// The metrics.
    pub metrics: Metrics,
    /// Generated images scored.
    pub images: usize,
    /// Images made in this call (the rest were on disk already).
    pub generated_now: usize,
    /// The evaluation's folder (`metrics.json`, `report.html`), relative to the output.
    pub eval_dir: PathBuf,
    /// For a run's model: the run's row label without a step, and the training step
    /// ([`ResolvedModel::checkpoint`]).
    #[serde(default)]
    pub checkpoint: Option<(String, usize)>,
    /// The run folder of a run's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<PathBuf>,
    /// Whether the weights are the run's EMA ([`ResolvedModel::ema`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ema: bool,
}

/// Everything the protocol produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProtocolResult {
    /// Every model × style result, in model order.
    pub cells: Vec<ProtocolCell>,
    /// Style names, in column order.
    pub styles: Vec<String>,
    /// Prompts used.
    pub prompts: Vec<ContentPrompt>,
    /// Images per prompt.
    pub images_per_prompt: usize,
    /// `protocol.md`.
    pub markdown: PathBuf,
    /// `protocol.html`.
    pub html: PathBuf,
}

/// Runs the protocol: generate what is missing, score every model, write the tables.
pub fn run_protocol(
    settings: &ProtocolSettings,
    progress: &mut dyn Progress,
) -> Result<ProtocolResult> {
    let mut p = ImageProtocol::new(settings)?;
    Ok(crate::protocol::run(&mut p, progress)?.1)
}

/// The comparison table as markdown (best value per column in bold).
pub fn render_markdown(result: &ProtocolResult) -> Result<String> {
    Ok(crate::protocol::table::render_markdown(&report(result)?))
}

/// The comparison table as a self-contained HTML page.
pub fn render_html(result: &ProtocolResult) -> Result<String> {
    Ok(crate::protocol::table::render_html(&report(result)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_prompts_mix_people_and_scenes() {
        let p = default_prompts();
        let people = p.iter().filter(|p| p.kind == PromptKind::Person).count();
        assert_eq!((people, p.len() - people), (20, 20));
        assert!(p
            .iter()
            .all(|p| !p.text.contains("style") && !p.text.is_empty()));
    }

    #[test]
    fn prompt_lists_parse_tags_and_skip_comments() {
        let p = parse_prompts("# c\n\nperson: a man\nScene : a lake\na tree\n").unwrap();
        let got: Vec<(&str, PromptKind)> = p.iter().map(|p| (p.text.as_str(), p.kind)).collect();
        assert_eq!(
            got,
            [
                ("a man", PromptKind::Person),
                ("a lake", PromptKind::Scene),
                ("a tree", PromptKind::Scene)
            ]
        );
        assert!(parse_prompts("# nothing\n").is_err());
    }

    #[test]
    fn protocol_files_take_the_sampling_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("protocol.toml");
        std::fs::write(
            &path,
            "guidance = 7.0\nguidance_rescale = 0.7\nsteps = 20\n\n\
             [[style]]\nname = \"x\"\nreference = \"refs\"\n",
        )
        .unwrap();
        let f = ProtocolFile::from_file(&path).unwrap();
        assert_eq!(
            (f.guidance, f.guidance_rescale, f.steps),
            (Some(7.0), Some(0.7), Some(20))
        );
        assert_eq!(f.style[0].reference, dir.path().join("refs"));
    }

    #[test]
    fn style_phrases_drop_the_article() {
        assert_eq!(style_phrase("a ohwx style"), "ohwx style");
        assert_eq!(style_phrase("ohwx style"), "ohwx style");
        assert_eq!(style_phrase("<new1> style"), "<new1> style");
        let m = ResolvedModel {
            label: "x".into(),
            style: "s".into(),
            dir: PathBuf::new(),
            adapters: GenerationAdapters::default(),
            person_phrase: "ohwx style".into(),
            scene_phrase: "phol style".into(),
            checkpoint: None,
            run: None,
            ema: false,
        };
        let person = ContentPrompt {
            text: "a man".into(),
            kind: PromptKind::Person,
        };
        let scene = ContentPrompt {
            text: "a lake".into(),
            kind: PromptKind::Scene,
        };
        assert_eq!(m.prompt(&person), "a man, ohwx style");
        assert_eq!(m.prompt(&scene), "a lake, phol style");
    }

    #[test]
    fn tables_mark_the_best_value_per_column() {
        let cell = |label: &str, fid: f64, clip: f64| ProtocolCell {
            label: label.into(),
            style: "cubism".into(),
            metrics: Metrics {
                fid: Some(fid),
                kid: None,
                clip_t: Some(clip),
                clip_i: None,
                ..Default::default()
            },
            images: 4,
            generated_now: 0,
            eval_dir: PathBuf::from("evals/cubism/x"),
            checkpoint: None,
            run: None,
            ema: false,
        };
        let r = ProtocolResult {
            cells: vec![
                cell("LoRA", 20.0, 28.0),
                cell("Single-StyleForge", 13.0, 27.0),
            ],
            styles: vec!["cubism".into()],
            prompts: default_prompts(),
            images_per_prompt: 4,
            markdown: PathBuf::new(),
            html: PathBuf::new(),
        };
        let md = render_markdown(&r).unwrap();
        assert!(
            md.contains("| Single-StyleForge | **13.000** | – | 27.000 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| LoRA | 20.000 | – | **28.000** | – |"),
            "{md}"
        );
        let html = render_html(&r).unwrap();
        assert!(html.contains("<td class=\"best\">13.000</td>"));
        assert!(html.contains("<table id=\"protocol\">"));
        // Without style descriptors: no CSD / DINO columns and no scatter plot.
        assert!(!md.contains("CSD") && !md.contains("leak"), "{md}");
        assert!(style_content_points(&r).0.is_empty());
    }

    #[test]
    fn style_descriptor_columns_and_the_scatter_plot() {
        let cell = |label: &str, style: &str, csd: f64, content: f64, leak: f64| ProtocolCell {
            label: label.into(),
            style: style.into(),
            metrics: Metrics {
                clip_t: Some(25.0),
                csd: Some(csd),
                dino_content: Some(content),
                dino_leak: Some(leak),
                ..Default::default()
            },
            images: 4,
            generated_now: 0,
            eval_dir: PathBuf::from("evals/x"),
            checkpoint: None,
            run: None,
            ema: false,
        };
        let r = ProtocolResult {
            cells: vec![
                cell("LoRA", "cubism", 0.61, 0.70, 0.40),
                cell("StyleForge", "cubism", 0.72, 0.65, 0.30),
                cell("LoRA", "ink", 0.55, 0.80, 0.35),
            ],
            styles: vec!["cubism".into(), "ink".into()],
            prompts: default_prompts(),
            images_per_prompt: 4,
            markdown: PathBuf::new(),
            html: PathBuf::new(),
        };
        let md = render_markdown(&r).unwrap();
        for header in ["CSD ↑ cubism", "DINO content ↑ ink", "leak ↓ cubism"] {
            assert!(md.contains(header), "{header}: {md}");
        }
        // Higher CSD is better, lower leak is better.
        assert!(md.contains("**0.720**") && md.contains("**0.300**"), "{md}");
        assert!(md.contains("![style (CSD) against content: DINO"), "{md}");
        let (series, axis) = style_content_points(&r);
        assert!(axis.contains("DINO"));
        assert_eq!(
            series[0],
            ("LoRA".to_string(), vec![(0.61, 0.70), (0.55, 0.80)])
        );
        assert_eq!(series[1].1, vec![(0.72, 0.65)]);
        let dir = tempfile::tempdir().unwrap();
        assert!(write_style_content_chart(&r, dir.path()).unwrap());
        let png = image::open(dir.path().join(STYLE_CONTENT_CHART)).unwrap();
        assert_eq!((png.width(), png.height()), (720, 480));
    }
}
