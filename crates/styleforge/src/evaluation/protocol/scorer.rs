//! The real-image protocol on the shared engine: its jobs (each model's pictures for a
//! block of content prompts), and its scorer, Inception and CLIP as `styleforge eval` uses
//! them, with the comparison table they fill.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

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
        Ok(Self {
            settings,
            models,
            loaded: None,
        })
    }

    /// The resolved models, in row order.
    pub fn models(&self) -> &[ResolvedModel] {
        &self.models
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
            .map(|m| format!("score {} ({}) with Inception / CLIP", m.label, m.style))
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
            let cell = CellImages {
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

impl Scorer for InceptionClip {
    type Cell = CellImages;
    type Scores = EvalResult;

    fn columns(&self) -> Vec<Column> {
        metric_columns()
    }

    fn score(&mut self, cell: &CellImages, progress: &mut dyn Progress) -> Result<EvalResult> {
        let mut eval = self.eval.clone();
        eval.inputs.generated = ImageSet::Files(cell.generated.clone());
        eval.inputs.reference = ImageSet::Folder(cell.reference.clone());
        eval.inputs.prompts = PromptSource::Lines(cell.prompts.clone());
        let result = evaluate_with(&eval, &self.models, progress)?;
        crate::evaluation::report::write_outputs(&cell.report_dir, &result, &eval.inputs)?;
        Ok(result)
    }

    fn values(&self, scores: &EvalResult) -> Vec<Option<f64>> {
        COLUMNS
            .iter()
            .map(|(_, _, get)| get(&scores.metrics))
            .collect()
    }
}

fn metric_columns() -> Vec<Column> {
    COLUMNS
        .iter()
        .map(|(name, lower, _)| Column::new(*name, 3, *lower))
        .collect()
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
    let mut columns = Vec::new();
    for metric in metric_columns() {
        for st in &result.styles {
            columns.push(
                Column::new(format!("{} {st}", metric.name), 3, metric.lower_is_better)
                    .grouped(metric.name.clone(), st.clone()),
            );
        }
    }
    let rows = labels
        .iter()
        .map(|label| Row {
            label: label.clone(),
            values: COLUMNS
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
             CLIP-T against the content prompt, CLIP-I against the reference images."
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
        notes: vec![Note::Links {
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
        }],
        json: crate::protocol::table::to_json(result)?,
    })
}
