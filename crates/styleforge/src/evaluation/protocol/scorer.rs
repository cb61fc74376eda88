//! The real-image protocol on the shared engine: its jobs (each model's pictures for a
//! block of content prompts), and its scorer, Inception and CLIP as `styleforge eval` uses
//! them, with the comparison table they fill.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{resolve_model, ProtocolCell, ProtocolResult, ProtocolSettings, ResolvedModel};
use crate::adapters::generation::AdaptedPipeline;
use crate::error::{Error, Result};
use crate::evaluation::{
    evaluate_with, EvalModels, EvalResult, EvalSettings, ImageSet, Metrics, PromptSource,
};
use crate::progress::Progress;
use crate::protocol::generate::{generate_missing, GenerateOptions, ImageSpec, LazyModel};
use crate::protocol::{slug, Column, Job, JobKind, Note, Protocol, Report, Row, Scorer, Table};

/// Content prompts per generation job: a shard's unit of work (one model loaded once for
/// the consecutive jobs of a shard).
pub const PROMPTS_PER_JOB: usize = 10;

/// A generation job: the pictures of one model for a range of content prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenerationWork {
    /// The model's index in [`ProtocolSettings::models`].
    pub model: usize,
    /// Its row label.
    pub label: String,
    /// Its style.
    pub style: String,
    /// The content prompts (indices).
    pub prompts: Range<usize>,
}

/// The real-image protocol as the engine runs it: the settings with their models resolved.
pub struct ImageProtocol<'a> {
    settings: &'a ProtocolSettings,
    models: Vec<ResolvedModel>,
    loaded: Option<(usize, AdaptedPipeline)>,
}

impl<'a> ImageProtocol<'a> {
    /// Checks the settings and resolves every model (reading run folders).
    pub fn new(settings: &'a ProtocolSettings) -> Result<Self> {
        if settings.models.is_empty() || settings.styles.is_empty() {
            return Err(Error::InvalidRequest(
                "the protocol needs at least one style (reference folder) and one model".into(),
            ));
        }
        if settings.images_per_prompt == 0 {
            return Err(Error::InvalidRequest(
                "images_per_prompt must be at least 1".into(),
            ));
        }
        for s in &settings.styles {
            if !s.reference.is_dir() {
                return Err(Error::Data {
                    path: s.reference.clone(),
                    message: format!("the reference folder of style `{}` does not exist", s.name),
                });
            }
        }
        let models = settings
            .models
            .iter()
            .map(|m| resolve_model(m, &settings.styles))
            .collect::<Result<Vec<_>>>()?;
        let mut labels: Vec<(String, String)> = Vec::new();
        for r in &models {
            let key = (r.label.clone(), r.style.clone());
            if labels.contains(&key) {
                return Err(Error::InvalidRequest(format!(
                    "two models are labelled `{}` for style `{}`; give them distinct labels",
                    r.label, r.style
                )));
            }
            labels.push(key);
        }
        let protocol = Self {
            settings,
            models,
            loaded: None,
        };
        if let Some(label) = &settings.content_from {
            protocol.content_model(label, "")?;
        }
        Ok(protocol)
    }

    /// The resolved models, in row order.
    pub fn models(&self) -> &[ResolvedModel] {
        &self.models
    }

    /// The row whose pictures are the content references: labelled `label`, for `style`
    /// where there is one, else the first so labelled.
    fn content_model(&self, label: &str, style: &str) -> Result<usize> {
        self.models
            .iter()
            .position(|m| m.label == label && m.style == style)
            .or_else(|| self.models.iter().position(|m| m.label == label))
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "content_from `{label}` names no model row (rows: {})",
                    self.models
                        .iter()
                        .map(|m| m.label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    fn images_dir(&self, model: &ResolvedModel) -> PathBuf {
        self.settings
            .out
            .join("images")
            .join(slug(&model.style))
            .join(slug(&model.label))
    }

    /// The pictures of model `m` for `prompts`, prompt-major: image `k` of prompt `p` is
    /// `p{p:04}-{k:02}-{seed}.png` with seed `seed + p·1000 + k`.
    fn images(&self, m: usize, prompts: Range<usize>) -> Vec<ImageSpec> {
        let s = self.settings;
        let model = &self.models[m];
        let dir = self.images_dir(model);
        let mut out = Vec::new();
        for p in prompts {
            for k in 0..s.images_per_prompt {
                let seed = s.seed + (p as u64) * 1000 + k as u64;
                out.push(ImageSpec {
                    path: dir.join(format!("p{p:04}-{k:02}-{seed}.png")),
                    prompt: model.prompt(&s.prompts[p]),
                    seed,
                });
            }
        }
        out
    }
}

impl Protocol for ImageProtocol<'_> {
    type Work = GenerationWork;
    type Output = ProtocolResult;

    fn stem(&self) -> &'static str {
        "protocol"
    }

    fn out(&self) -> &Path {
        &self.settings.out
    }

    fn check(&self) -> Result<()> {
        Ok(())
    }

    fn jobs(&self) -> Result<Vec<Job<GenerationWork>>> {
        let n = self.settings.prompts.len();
        let mut jobs = Vec::new();
        for (m, model) in self.models.iter().enumerate() {
            for start in (0..n).step_by(PROMPTS_PER_JOB) {
                let prompts = start..(start + PROMPTS_PER_JOB).min(n);
                jobs.push(Job {
                    id: format!(
                        "generate/{}/{}/p{start:04}",
                        slug(&model.style),
                        slug(&model.label)
                    ),
                    kind: JobKind::Generate,
                    what: format!(
                        "generate {} ({}), prompts {}–{}",
                        model.label,
                        model.style,
                        prompts.start,
                        prompts.end - 1
                    ),
                    work: GenerationWork {
                        model: m,
                        label: model.label.clone(),
                        style: model.style.clone(),
                        prompts,
                    },
                });
            }
        }
        Ok(jobs)
    }

    fn scoring(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|m| format!("score {} ({}) with the evaluation models", m.label, m.style))
            .collect()
    }

    fn run_job(&mut self, job: &Job<GenerationWork>, progress: &mut dyn Progress) -> Result<usize> {
        let m = job.work.model;
        let images = self.images(m, job.work.prompts.clone());
        let model = &self.models[m];
        let opts = GenerateOptions {
            sampling: self.settings.sampling.clone(),
            size: self.settings.size,
            batch: None,
            parameters: Some(model.label.clone()),
            label: format!("generating for {} ({})", model.label, model.style),
        };
        // The pipeline of the previous job is kept while the model stays the same.
        let cached = match self.loaded.take() {
            Some((i, p)) if i == m => Some(p),
            _ => None,
        };
        let mut lazy = match cached {
            Some(p) => LazyModel::loaded(p),
            None => LazyModel::auto(&model.dir, &model.adapters, &self.settings.eval.device),
        };
        let made = generate_missing(&mut lazy, &images, &opts, progress)?;
        self.loaded = lazy.into_loaded().map(|p| (m, p));
        Ok(made)
    }

    fn is_done(&self, job: &Job<GenerationWork>) -> bool {
        self.images(job.work.model, job.work.prompts.clone())
            .iter()
            .all(|i| i.path.is_file())
    }

    fn score(
        &mut self,
        jobs: &[Job<GenerationWork>],
        made: &[usize],
        progress: &mut dyn Progress,
    ) -> Result<(Report, ProtocolResult)> {
        self.loaded = None;
        let s = self.settings;
        let mut scorer = InceptionClip::load(&s.eval)?;
        let mut cells = Vec::new();
        for (m, model) in self.models.iter().enumerate() {
            let files: Vec<PathBuf> = self
                .images(m, 0..s.prompts.len())
                .into_iter()
                .map(|i| i.path)
                .collect();
            let generated_now = jobs
                .iter()
                .zip(made)
                .filter(|(j, _)| j.work.model == m)
                .map(|(_, n)| n)
                .sum();
            let style = s
                .styles
                .iter()
                .find(|st| st.name == model.style)
                .expect("resolved against the styles");
            let eval_dir = s
                .out
                .join("evals")
                .join(slug(&model.style))
                .join(slug(&model.label));
            tracing::info!("scoring {} ({})", model.label, model.style);
            let content = match &s.content_from {
                Some(label) if *label != model.label => {
                    let c = self.content_model(label, &model.style)?;
                    Some(
                        self.images(c, 0..s.prompts.len())
                            .into_iter()
                            .map(|i| i.path)
                            .collect(),
                    )
                }
                _ => None,
            };
            let cell = CellImages {
                content,
                // Image i of `files` was made from content prompt i / images_per_prompt.
                prompts: (0..files.len())
                    .map(|i| s.prompts[i / s.images_per_prompt].text.clone())
                    .collect(),
                generated: files,
                reference: style.reference.clone(),
                report_dir: eval_dir.clone(),
            };
            let result = scorer.score(&cell, progress)?;
            cells.push(ProtocolCell {
                label: model.label.clone(),
                style: model.style.clone(),
                metrics: result.metrics.clone(),
                images: cell.generated.len(),
                generated_now,
                eval_dir: eval_dir
                    .strip_prefix(&s.out)
                    .unwrap_or(&eval_dir)
                    .to_path_buf(),
                checkpoint: model.checkpoint.clone(),
                run: model.run.clone(),
                ema: model.ema,
            });
        }
        let files = crate::protocol::ReportFiles::new(&s.out, self.stem());
        let result = ProtocolResult {
            cells,
            styles: s.styles.iter().map(|s| s.name.clone()).collect(),
            prompts: s.prompts.clone(),
            images_per_prompt: s.images_per_prompt,
            markdown: files.markdown,
            html: files.html,
        };
        write_charts(&result, &s.out)?;
        Ok((report(&result)?, result))
    }
}

/// One model's pictures for one style, as [`InceptionClip`] scores them.
#[derive(Debug, Clone)]
pub struct CellImages {
    /// The generated pictures.
    pub generated: Vec<PathBuf>,
    /// The content prompt of each (CLIP-T).
    pub prompts: Vec<String>,
    /// The style's reference folder.
    pub reference: PathBuf,
    /// Content references, one per generated picture (the content model's picture for the
    /// same prompt and seed), for the DINO content score.
    pub content: Option<Vec<PathBuf>>,
    /// Where the cell's own report goes (`metrics.json`, `report.html`).
    pub report_dir: PathBuf,
}

/// The paper's metrics as `styleforge eval` computes them: FID and KID with Inception,
/// CLIP-T and CLIP-I with CLIP; each cell's full report is written beside the table.
pub struct InceptionClip {
    eval: EvalSettings,
    models: EvalModels,
}

impl InceptionClip {
    /// Loads the networks `eval` names.
    pub fn load(eval: &EvalSettings) -> Result<Self> {
        Ok(Self {
            eval: eval.clone(),
            models: EvalModels::load(eval)?,
        })
    }
}

/// The table's metric columns: name, lower-is-better, getter.
type MetricColumn = (&'static str, bool, fn(&Metrics) -> Option<f64>);

const COLUMNS: [MetricColumn; 4] = [
    ("FID ↓", true, |m| m.fid),
    ("KID×10³ ↓", true, |m| {
        m.kid.as_ref().map(|k| k.mean * 1e3)
    }),
    ("CLIP-T ↑", false, |m| m.clip_t),
    ("CLIP-I ↑", false, |m| m.clip_i),
];

/// Style-descriptor columns, shown when their model was given.
const STYLE_COLUMNS: [MetricColumn; 3] = [
    ("CSD ↑", false, |m| m.csd),
    ("DINO content ↑", false, |m| m.dino_content),
    ("leak ↓", true, |m| m.dino_leak),
];

/// The columns in table order: the paper's four, then the style-descriptor columns for
/// which `shown` holds.
fn columns_where(shown: impl Fn(&MetricColumn) -> bool) -> Vec<MetricColumn> {
    COLUMNS
        .iter()
        .copied()
        .chain(STYLE_COLUMNS.iter().copied().filter(|c| shown(c)))
        .collect()
}

/// The columns of a result: the style-descriptor ones where some cell has a value.
fn result_columns(result: &ProtocolResult) -> Vec<MetricColumn> {
    columns_where(|(_, _, get)| result.cells.iter().any(|c| get(&c.metrics).is_some()))
}

impl Scorer for InceptionClip {
    type Cell = CellImages;
    type Scores = EvalResult;

    fn columns(&self) -> Vec<Column> {
        self.active()
            .iter()
            .map(|(name, lower, _)| Column::new(*name, 3, *lower))
            .collect()
    }

    fn score(&mut self, cell: &CellImages, progress: &mut dyn Progress) -> Result<EvalResult> {
        let mut eval = self.eval.clone();
        eval.inputs.generated = ImageSet::Files(cell.generated.clone());
        eval.inputs.reference = ImageSet::Folder(cell.reference.clone());
        eval.inputs.prompts = PromptSource::Lines(cell.prompts.clone());
        eval.inputs.content = cell.content.clone().map(ImageSet::Files);
        let result = evaluate_with(&eval, &self.models, progress)?;
        crate::evaluation::report::write_outputs(&cell.report_dir, &result, &eval.inputs)?;
        Ok(result)
    }

    fn values(&self, scores: &EvalResult) -> Vec<Option<f64>> {
        self.active()
            .iter()
            .map(|(_, _, get)| get(&scores.metrics))
            .collect()
    }
}

impl InceptionClip {
    /// The columns of the loaded models: CSD with a CSD model, the DINO ones with DINO.
    fn active(&self) -> Vec<MetricColumn> {
        let (csd, dino) = (self.models.csd.is_some(), self.models.dino.is_some());
        columns_where(|(name, _, _)| if *name == "CSD ↑" { csd } else { dino })
    }
}

/// Scatter-plot series: a method's label and its `(style, content)` points.
pub type ScatterSeries = (String, Vec<(f64, f64)>);

/// The file name of the style-against-content scatter plot beside the tables.
pub const STYLE_CONTENT_CHART: &str = "style-content.png";

/// The scatter plot's points: per method (labels in first-seen order) one `(CSD, content)`
/// point per style, content being the DINO content score where any cell has one, else
/// CLIP-T. Empty without CSD scores. Also returns the content axis label.
pub fn style_content_points(result: &ProtocolResult) -> (Vec<ScatterSeries>, &'static str) {
    let dino = result
        .cells
        .iter()
        .any(|c| c.metrics.dino_content.is_some());
    let (axis, content): (&'static str, fn(&Metrics) -> Option<f64>) = if dino {
        ("content: DINO cosine with the content reference ↑", |m| {
            m.dino_content
        })
    } else {
        ("content: CLIP-T ↑", |m| m.clip_t)
    };
    let mut series: Vec<ScatterSeries> = Vec::new();
    for c in &result.cells {
        let (Some(x), Some(y)) = (c.metrics.csd, content(&c.metrics)) else {
            continue;
        };
        match series.iter_mut().find(|(l, _)| *l == c.label) {
            Some((_, pts)) => pts.push((x, y)),
            None => series.push((c.label.clone(), vec![(x, y)])),
        }
    }
    (series, axis)
}

/// Draws the style-against-content scatter plot of `result` into `out` (nothing when it
/// has no points); returns whether it was written.
pub fn write_style_content_chart(result: &ProtocolResult, out: &Path) -> Result<bool> {
    let (series, axis) = style_content_points(result);
    if series.is_empty() {
        return Ok(false);
    }
    let mut chart = crate::report::LineChart::new(
        "Style against content, per method",
        "style: CSD cosine with the references ↑",
        axis,
    );
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = crate::report::PALETTE[i % crate::report::PALETTE.len()];
        chart = chart.scatter(label.clone(), pts, color);
    }
    chart.save(&out.join(STYLE_CONTENT_CHART), 720, 480)?;
    Ok(true)
}

/// The comparison table: methods (labels in first-seen order) as rows, each metric × style
/// as a column, the best value per column marked; per-model report links below it.
pub fn report(result: &ProtocolResult) -> Result<Report> {
    let mut labels: Vec<String> = Vec::new();
    for c in &result.cells {
        if !labels.contains(&c.label) {
            labels.push(c.label.clone());
        }
    }
    let metrics = result_columns(result);
    let mut columns = Vec::new();
    for (name, lower, _) in &metrics {
        for st in &result.styles {
            columns.push(
                Column::new(format!("{name} {st}"), 3, *lower)
                    .grouped(name.to_string(), st.clone()),
            );
        }
    }
    let rows = labels
        .iter()
        .map(|label| Row {
            label: label.clone(),
            values: metrics
                .iter()
                .flat_map(|(_, _, get)| {
                    result.styles.iter().map(move |s| {
                        result
                            .cells
                            .iter()
                            .find(|c| &c.label == label && &c.style == s)
                            .and_then(|c| get(&c.metrics))
                    })
                })
                .collect(),
        })
        .collect();
    let (n, k) = (result.prompts.len(), result.images_per_prompt);
    Ok(Report {
        title: "StyleForge protocol".into(),
        intro: format!(
            "{n} prompts × {k} images per model; FID/KID against each style's reference set, \
             CLIP-T against the content prompt, CLIP-I against the reference images{}.",
            descriptor_intro(&metrics)
        ),
        html_intro: Some(format!(
            "{n} prompts × {k} images per model. FID and KID against each style's reference \
             set (lower is better); CLIP-T against the content prompt and CLIP-I against the \
             reference images (higher is better). Best per column in bold."
        )),
        tables: vec![Table {
            title: None,
            id: Some("protocol".into()),
            label_header: "method".into(),
            columns,
            rows,
            mark_best: true,
            align_right: false,
        }],
        notes: chart_note(result)
            .into_iter()
            .chain(
                checkpoint_plateaus(result)
                    .into_iter()
                    .map(|p| Note::Image {
                        alt: p.summary(),
                        heading: p.summary(),
                        file: p.file(),
                    }),
            )
            .chain([Note::Links {
                heading: "Per model".into(),
                items: result
                    .cells
                    .iter()
                    .map(|c| {
                        (
                            format!("{} ({}): {} images", c.label, c.style, c.images),
                            c.eval_dir.join("report.html").display().to_string(),
                            "report".to_string(),
                        )
                    })
                    .collect(),
            }])
            .collect(),
        json: crate::protocol::table::to_json(&ResultJson {
            result,
            checkpoint_sweeps: checkpoint_plateaus(result),
        })?,
    })
}

/// `protocol.json`: the result, and each run's checkpoint sweep with the step it names
/// (what `styleforge convert --step best` reads).
#[derive(Serialize)]
struct ResultJson<'a> {
    #[serde(flatten)]
    result: &'a ProtocolResult,
    checkpoint_sweeps: Vec<CheckpointPlateau>,
}

/// How far below its best CSD score a checkpoint may be and still count as having reached
/// the plateau.
pub const PLATEAU_TOLERANCE: f64 = 0.01;

/// A checkpoint's scores: `(step, CSD, CLIP-T, DINO leak)`.
pub type CheckpointScores = (usize, Option<f64>, Option<f64>, Option<f64>);

/// One run's checkpoints for one style: the scores by step and the step where the style
/// score stops improving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointPlateau {
    /// The run's row label (without the step).
    pub series: String,
    /// The style.
    pub style: String,
    /// The run folder.
    #[serde(default)]
    pub run: Option<PathBuf>,
    /// Whether the weights scored are the run's EMA (as the model it writes).
    #[serde(default)]
    pub ema: bool,
    /// `(step, CSD, CLIP-T, DINO leak)` per checkpoint, by step.
    pub steps: Vec<CheckpointScores>,
    /// The earliest step whose CSD is within [`PLATEAU_TOLERANCE`] of the best (`None`
    /// without CSD scores): later checkpoints add no style, so only their alignment and
    /// leakage change. The sweep's best checkpoint.
    pub plateau: Option<usize>,
}

impl CheckpointPlateau {
    /// The chart's file name.
    pub fn file(&self) -> String {
        format!(
            "checkpoints-{}-{}.png",
            slug(&self.series),
            slug(&self.style)
        )
    }

    /// One sentence: where the plateau is and how CLIP-T and the leak change after it.
    pub fn summary(&self) -> String {
        let Some(p) = self.plateau else {
            return format!("{} ({}): no CSD scores", self.series, self.style);
        };
        let at = |k: usize| self.steps.iter().find(|s| s.0 == k).copied();
        let (Some(first), Some(last)) = (at(p), self.steps.last().copied()) else {
            return String::new();
        };
        let mut s = format!(
            "{} ({}{}): style (CSD) reaches its plateau at step {p}",
            self.series,
            self.style,
            if self.ema { ", EMA weights" } else { "" }
        );
        if last.0 > p {
            let delta = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| b - a);
            let mut parts = Vec::new();
            if let Some(d) = delta(first.2, last.2) {
                parts.push(format!("CLIP-T {d:+.2}"));
            }
            if let Some(d) = delta(first.3, last.3) {
                parts.push(format!("leak {d:+.3}"));
            }
            if !parts.is_empty() {
                s.push_str(&format!(
                    "; from there to step {}: {}",
                    last.0,
                    parts.join(", ")
                ));
            }
        }
        s
    }
}

/// Every run scored at two or more training steps (its checkpoints and final model) in
/// `result`, per style, in first-seen order.
pub fn checkpoint_plateaus(result: &ProtocolResult) -> Vec<CheckpointPlateau> {
    let mut out: Vec<CheckpointPlateau> = Vec::new();
    for c in &result.cells {
        let Some((series, step)) = &c.checkpoint else {
            continue;
        };
        let row = (*step, c.metrics.csd, c.metrics.clip_t, c.metrics.dino_leak);
        match out
            .iter_mut()
            .find(|p| &p.series == series && p.style == c.style)
        {
            Some(p) => {
                p.ema |= c.ema;
                if !p.steps.iter().any(|s| s.0 == *step) {
                    p.steps.push(row)
                }
            }
            None => out.push(CheckpointPlateau {
                series: series.clone(),
                style: c.style.clone(),
                run: c.run.clone(),
                ema: c.ema,
                steps: vec![row],
                plateau: None,
            }),
        }
    }
    out.retain(|p| p.steps.len() >= 2);
    for p in &mut out {
        p.steps.sort_by_key(|s| s.0);
        let best = p
            .steps
            .iter()
            .filter_map(|s| s.1)
            .fold(f64::NEG_INFINITY, f64::max);
        p.plateau = p
            .steps
            .iter()
            .find(|s| s.1.is_some_and(|v| v >= best - PLATEAU_TOLERANCE))
            .map(|s| s.0);
    }
    out
}

/// Writes the pictures beside the tables: the style-against-content scatter plot and one
/// chart per run's checkpoint series (CSD and leak on the left axis, CLIP-T on the right).
pub fn write_charts(result: &ProtocolResult, out: &Path) -> Result<()> {
    write_style_content_chart(result, out)?;
    for p in checkpoint_plateaus(result) {
        let series = |i: usize| -> Vec<(f64, f64)> {
            p.steps
                .iter()
                .filter_map(|s| {
                    let v = [s.1, s.2, s.3][i];
                    v.map(|v| (s.0 as f64, v))
                })
                .collect()
        };
        let palette = crate::report::PALETTE;
        let mut chart = crate::report::LineChart::new(
            format!(
                "{} ({}) by checkpoint{}",
                p.series,
                p.style,
                if p.ema { ", EMA weights" } else { "" }
            ),
            "training step",
            "cosine",
        )
        .series("CSD style ↑", &series(0), palette[0])
        .series("DINO leak ↓", &series(2), palette[3]);
        let clip_t = series(1);
        if !clip_t.is_empty() {
            chart = chart.secondary_series("CLIP-T ↑", "CLIP-T", &clip_t, palette[2]);
        }
        chart.save(&out.join(p.file()), 720, 420)?;
    }
    Ok(())
}

/// What the style-descriptor columns among `metrics` measure, as a clause of the intro.
fn descriptor_intro(metrics: &[MetricColumn]) -> String {
    let parts: Vec<&str> = metrics
        .iter()
        .filter_map(|(name, _, _)| match *name {
            "CSD ↑" => Some("CSD style cosine against the references"),
            "DINO content ↑" => {
                Some("DINO content against the content row's picture for the same prompt and seed")
            }
            "leak ↓" => Some("DINO leak against the references"),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join(", "))
    }
}

/// The scatter plot's note when the result has points for it.
fn chart_note(result: &ProtocolResult) -> Option<Note> {
    let (series, axis) = style_content_points(result);
    (!series.is_empty()).then(|| Note::Image {
        alt: format!("style (CSD) against {axis}, per method"),
        heading: "Style against content".into(),
        file: STYLE_CONTENT_CHART.into(),
    })
}
