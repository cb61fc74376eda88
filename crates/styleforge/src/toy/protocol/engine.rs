//! The toy protocol on the shared engine: its jobs (the base model's pictures, then every
//! run: train, sample), the probe scorer and the tables it fills.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;
use styleforge_world::Style;

use super::{
    data_paths, drift_scenes, eval_scenes, measure, plan, prepare_data, run_config, sample_model,
    sample_specs, Prompted, Sampled, ToyMetrics, ToyProtocolOptions, ToyProtocolResult, ToyRow,
    ToyRun, ToyTable, PROTOCOL_IMAGES,
};
use crate::adapters::generation::GenerationAdapters;
use crate::error::{Error, Result};
use crate::evaluation::protocol::{method_label, resolve_model, ProtocolModel, ProtocolStyle};
use crate::progress::Progress;
use crate::protocol::{Column, Job, JobKind, Note, Protocol, Report, Row, Scorer, Table};
use crate::report::ImageGrid;
use crate::toy::data::{style_ref_samples, Composition, EVAL_SEED};
use crate::toy::measures::PictureVerdict;
use crate::toy::probes::Probes;
use crate::training::{train, Method, RunOptions};
use crate::RunDir;

/// The phrase the base model is prompted with: its untrained token.
const BASE_PHRASE: &str = "ohwx style";

/// The per-picture probe verdicts written beside each model's pictures.
pub const VERDICTS: &str = "probes.json";

/// A job of the toy protocol.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToyWork {
    /// The base model's pictures (shared by every style).
    Base,
    /// Train a run (when it has no model yet), then sample its pictures.
    Run(ToyRun),
}

/// The toy protocol as the engine runs it.
pub struct ToyProtocol<'a> {
    opts: &'a ToyProtocolOptions,
    evals: Vec<Prompted>,
    drifts: Vec<Prompted>,
}

impl<'a> ToyProtocol<'a> {
    /// The protocol of `opts`.
    pub fn new(opts: &'a ToyProtocolOptions) -> Self {
        Self {
            opts,
            evals: eval_scenes(opts.eval_prompts),
            drifts: drift_scenes(opts.drift_prompts),
        }
    }

    fn base_images(&self) -> PathBuf {
        self.opts.out.join("images").join("base")
    }

    fn run_dir(&self, run: &ToyRun) -> RunDir {
        RunDir::new(
            self.opts
                .out
                .join("runs")
                .join(run.style.id())
                .join(run.folder()),
        )
    }

    /// Whether the run's folder holds a finished run of the very config the protocol would
    /// train now. A run trained under another recipe (say, before the Aux set changed) is
    /// trained again rather than reported under the new one.
    fn finished(&self, run: &ToyRun) -> bool {
        let dir = self.run_dir(run);
        if !dir.model().is_dir() {
            return false;
        }
        let (concepts, aux) = data_paths(self.opts, run);
        let planned = run_config(self.opts, run, &concepts, aux.as_deref(), dir.root())
            .and_then(|c| c.resolve())
            .and_then(|c| c.to_toml());
        match (planned, std::fs::read_to_string(dir.config())) {
            (Ok(planned), Ok(recorded)) => planned == recorded,
            _ => false,
        }
    }

    /// A trained run as the generator loads it: model, adapters and phrases.
    fn trained(&self, run: &ToyRun) -> Result<crate::evaluation::protocol::ResolvedModel> {
        resolve_model(
            &ProtocolModel {
                label: Some(run.label.clone()),
                style: Some(run.style.id().to_string()),
                run: Some(self.run_dir(run).root().to_path_buf()),
                path: None,
                phrase: None,
                checkpoint: None,
            },
            &[ProtocolStyle {
                name: run.style.id().to_string(),
                reference: PathBuf::new(),
            }],
        )
    }

    fn sample(
        &self,
        dir: &Path,
        adapters: &GenerationAdapters,
        phrases: (&str, &str),
        images: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Sampled> {
        sample_model(
            self.opts,
            dir,
            adapters,
            phrases,
            &self.evals,
            &self.drifts,
            images,
            progress,
        )
    }

    /// Writes the probes' verdict on each picture in `images` (prompted with `phrases`;
    /// token prompts ask for `learnt`) as `probes.json` beside them: which pictures missed
    /// the style, an object or a colour.
    fn write_verdicts(
        &self,
        probes: &Probes,
        phrases: (&str, &str),
        learnt: Option<Style>,
        sampled: &Sampled,
        images: &Path,
    ) -> Result<()> {
        let (token, drift) = sample_specs(self.opts, phrases, &self.evals, &self.drifts, images);
        let mut verdicts = Vec::with_capacity(token.len() + drift.len());
        let groups = [
            (&token, &sampled.token, &self.evals, true),
            (&drift, &sampled.drift, &self.drifts, false),
        ];
        for (specs, pictures, prompted, is_token) in groups {
            let seen = probes.predict(pictures)?;
            for ((spec, labels), p) in specs.iter().zip(&seen).zip(prompted) {
                let file = spec
                    .path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let style = if is_token { learnt } else { p.base_style };
                verdicts.push(PictureVerdict::new(
                    file,
                    spec.prompt.clone(),
                    &p.scene,
                    style,
                    labels,
                ));
            }
        }
        let json = serde_json::to_vec_pretty(&verdicts).map_err(|source| Error::Json {
            what: "the probe verdicts".into(),
            source,
        })?;
        styleforge_models::files::write(&images.join(VERDICTS), json)?;
        Ok(())
    }

    /// How many pictures prompted with `phrases` are not in `images` yet.
    fn missing(&self, phrases: (&str, &str), images: &Path) -> usize {
        let (token, drift) = sample_specs(self.opts, phrases, &self.evals, &self.drifts, images);
        token
            .iter()
            .chain(&drift)
            .filter(|i| !i.path.is_file())
            .count()
    }
}

impl Protocol for ToyProtocol<'_> {
    type Work = ToyWork;
    type Output = ToyProtocolResult;

    fn stem(&self) -> &'static str {
        "toy-protocol"
    }

    fn out(&self) -> &Path {
        &self.opts.out
    }

    fn check(&self) -> Result<()> {
        let opts = self.opts;
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
        // A misspelt or mistyped key fails now, not after the first runs.
        for run in plan(opts).iter().filter(|r| r.setting.is_some()) {
            run_config(opts, run, &[], None, &opts.out)?;
        }
        Ok(())
    }

    fn jobs(&self) -> Result<Vec<Job<ToyWork>>> {
        let mut jobs = vec![Job {
            id: "generate/base".into(),
            kind: JobKind::Generate,
            what: "sample the base model".into(),
            work: ToyWork::Base,
        }];
        for run in plan(self.opts) {
            jobs.push(Job {
                id: format!("train/{}/{}", run.style.id(), run.folder()),
                kind: JobKind::Train,
                what: format!("train and sample {} on {}", run.label, run.style.name()),
                work: ToyWork::Run(run),
            });
        }
        Ok(jobs)
    }

    fn scoring(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for style in &self.opts.styles {
            lines.push(format!(
                "score the base model on {} with the probes",
                style.name()
            ));
        }
        for run in plan(self.opts) {
            lines.push(format!(
                "score {} on {} with the probes",
                run.label,
                run.style.name()
            ));
        }
        lines
    }

    fn run_job(&mut self, job: &Job<ToyWork>, progress: &mut dyn Progress) -> Result<usize> {
        let run = match &job.work {
            ToyWork::Base => {
                let images = self.base_images();
                let missing = self.missing((BASE_PHRASE, BASE_PHRASE), &images);
                self.sample(
                    &self.opts.base,
                    &GenerationAdapters::default(),
                    (BASE_PHRASE, BASE_PHRASE),
                    &images,
                    progress,
                )?;
                return Ok(missing);
            }
            ToyWork::Run(run) => run,
        };
        let dir = self.run_dir(run);
        if !self.finished(run) {
            let (concepts, aux) = prepare_data(self.opts, run, progress)?;
            let cfg = run_config(self.opts, run, &concepts, aux.as_deref(), dir.root())?;
            if dir.root().exists() {
                // An unfinished or outdated run: start it again (the protocol's runs
                // are short).
                std::fs::remove_dir_all(dir.root())
                    .map_err(styleforge_models::files::at(dir.root()))?;
            }
            tracing::info!(
                "training {} on {} → {}",
                run.label,
                run.style.name(),
                dir.root().display()
            );
            let run_opts = RunOptions {
                device: self.opts.device.clone(),
                ..RunOptions::default()
            };
            train(&cfg.resolve()?, &run_opts, progress)?;
        }
        let model = self.trained(run)?;
        let images = dir.root().join(PROTOCOL_IMAGES);
        let phrases = (model.person_phrase.as_str(), model.scene_phrase.as_str());
        let missing = self.missing(phrases, &images);
        self.sample(&model.dir, &model.adapters, phrases, &images, progress)?;
        Ok(missing)
    }

    fn is_done(&self, job: &Job<ToyWork>) -> bool {
        match &job.work {
            ToyWork::Base => self.missing((BASE_PHRASE, BASE_PHRASE), &self.base_images()) == 0,
            ToyWork::Run(run) => {
                let dir = self.run_dir(run);
                self.finished(run)
                    && self.trained(run).is_ok_and(|m| {
                        let phrases = (m.person_phrase.as_str(), m.scene_phrase.as_str());
                        self.missing(phrases, &dir.root().join(PROTOCOL_IMAGES)) == 0
                    })
            }
        }
    }

    fn score(
        &mut self,
        _jobs: &[Job<ToyWork>],
        _made: &[usize],
        progress: &mut dyn Progress,
    ) -> Result<(Report, ToyProtocolResult)> {
        let opts = self.opts;
        let mut scorer = ProbeScorer::load(opts)?;
        let mut rows = Vec::new();
        let mut grids: Vec<SampleGrid> = Vec::new();
        // Every picture is on disk (the jobs are done): sampling only reads them back.
        let base = self.sample(
            &opts.base,
            &GenerationAdapters::default(),
            (BASE_PHRASE, BASE_PHRASE),
            &self.base_images(),
            progress,
        )?;
        let base_phrases = (BASE_PHRASE, BASE_PHRASE);
        self.write_verdicts(
            &scorer.probes,
            base_phrases,
            None,
            &base,
            &self.base_images(),
        )?;
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
            // The base model with the (untrained) token: where every method starts from.
            let cell = |sampled: &Sampled| ToyCell {
                style,
                token: sampled.token.clone(),
                drift: sampled.drift.clone(),
                base_drift: base.drift.clone(),
                reference: reference.clone(),
            };
            rows.push(ToyRow {
                label: "Base model".into(),
                table: ToyTable::Main,
                style,
                run: None,
                metrics: scorer.score(&cell(&base), progress)?,
            });
            let mut grid = vec![
                (
                    format!("true {} renders", style.name()),
                    // The prompted scenes themselves, drawn in the style: what a perfect
                    // model would make.
                    shown(&self.evals)
                        .iter()
                        .map(|p| styleforge_world::render(&p.scene, style, 32, opts.seed))
                        .collect(),
                ),
                ("base model".to_string(), shown(&base.token)),
            ];
            for run in plan(opts).into_iter().filter(|r| r.style == style) {
                let dir = self.run_dir(&run);
                let model = self.trained(&run)?;
                let sampled = self.sample(
                    &model.dir,
                    &model.adapters,
                    (&model.person_phrase, &model.scene_phrase),
                    &dir.root().join(PROTOCOL_IMAGES),
                    progress,
                )?;
                let metrics = scorer.score(&cell(&sampled), progress)?;
                self.write_verdicts(
                    &scorer.probes,
                    (&model.person_phrase, &model.scene_phrase),
                    Some(style),
                    &sampled,
                    &dir.root().join(PROTOCOL_IMAGES),
                )?;
                tracing::info!("{} on {}: {metrics:?}", run.label, style.name());
                if run.table == ToyTable::Main {
                    grid.push((run.label.clone(), shown(&sampled.token)));
                }
                rows.push(ToyRow {
                    label: run.label.clone(),
                    table: run.table,
                    style,
                    run: Some(dir.root().to_path_buf()),
                    metrics,
                });
            }
            grids.push((style, grid));
        }
        let report = self.report(&scorer, &rows, &grids)?;
        let files = crate::protocol::ReportFiles::new(&opts.out, self.stem());
        Ok((
            report,
            ToyProtocolResult {
                rows,
                markdown: files.markdown,
                html: files.html,
                json: files.json,
            },
        ))
    }
}

/// One style's sample grid: labelled rows of pictures.
type SampleGrid = (Style, Vec<(String, Vec<RgbImage>)>);

impl ToyProtocol<'_> {
    /// The tables, the column legend and the sample grids (written beside the tables).
    fn report(
        &self,
        scorer: &ProbeScorer,
        rows: &[ToyRow],
        grids: &[SampleGrid],
    ) -> Result<Report> {
        let opts = self.opts;
        let columns = scorer.columns();
        let tables = tables(rows, &opts.styles)
            .into_iter()
            .map(|(title, t)| Table {
                title: Some(title),
                id: None,
                label_header: "method".into(),
                columns: columns.clone(),
                rows: t
                    .iter()
                    .map(|(label, m)| Row {
                        label: label.clone(),
                        values: scorer.values(m),
                    })
                    .collect(),
                mark_best: false,
                align_right: true,
            })
            .collect();
        let mut notes = vec![Note::Legend];
        let prompts: Vec<String> = shown(&self.evals)
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
            notes.push(Note::Image {
                alt: style.name().to_string(),
                heading: format!("Samples: {}", style.name()),
                file: name,
            });
        }
        Ok(Report {
            title: "Toy-world protocol".into(),
            intro: format!(
                "{} token prompts and {} drift prompts per model, {} steps of the model's \
                 sampler, guidance {}{}, seeds {}…; distances against {} renders per style.",
                opts.eval_prompts,
                opts.drift_prompts,
                opts.sample_steps,
                opts.guidance,
                if opts.guidance_rescale > 0.0 {
                    format!(" (rescale {})", opts.guidance_rescale)
                } else {
                    String::new()
                },
                opts.seed,
                opts.reference_images
            ),
            html_intro: None,
            tables,
            notes,
            json: crate::protocol::table::to_json(&rows)?,
        })
    }
}

/// One model's pictures for one style, as the probes score them.
#[derive(Debug, Clone)]
pub struct ToyCell {
    /// The style learnt.
    pub style: Style,
    /// Token-prompt pictures.
    pub token: Vec<RgbImage>,
    /// Drift-prompt pictures.
    pub drift: Vec<RgbImage>,
    /// The base model's drift pictures (same prompts and seeds).
    pub base_drift: Vec<RgbImage>,
    /// True renders of the style.
    pub reference: Vec<RgbImage>,
}

/// The toy world's scorer: the probes' distances, accuracies and drift
/// ([`ToyMetrics`]).
pub struct ProbeScorer {
    /// The probes.
    pub probes: Probes,
    evals: Vec<Prompted>,
    drifts: Vec<Prompted>,
}

impl ProbeScorer {
    /// Loads the probes of `opts` and builds its prompts.
    pub fn load(opts: &ToyProtocolOptions) -> Result<Self> {
        Ok(Self {
            probes: Probes::load(&opts.probes, &opts.device)?,
            evals: eval_scenes(opts.eval_prompts),
            drifts: drift_scenes(opts.drift_prompts),
        })
    }
}

impl Scorer for ProbeScorer {
    type Cell = ToyCell;
    type Scores = ToyMetrics;

    fn columns(&self) -> Vec<Column> {
        [
            (
                "style FD ↓",
                1,
                true,
                "Probe Fréchet distance to renders of the style",
            ),
            (
                "style KD ↓",
                1,
                true,
                "Probe kernel distance to renders of the style",
            ),
            (
                "style acc ↑",
                2,
                false,
                "Token pictures the probe calls the target style",
            ),
            ("objects ↑", 2, false, "Prompted objects found"),
            ("colours ↑", 2, false, "Prompted colour words found"),
            (
                "kept ↑",
                2,
                false,
                "Drift pictures in the base style their prompt names",
            ),
            ("leak ↓", 2, true, "Drift pictures in the learnt style"),
            (
                "drift FD ↓",
                1,
                true,
                "Probe Fréchet distance of drift pictures to the base model's",
            ),
        ]
        .into_iter()
        .map(|(name, decimals, lower, tip)| Column::new(name, decimals, lower).tip(tip))
        .collect()
    }

    fn score(&mut self, cell: &ToyCell, _: &mut dyn Progress) -> Result<ToyMetrics> {
        let sampled = Sampled {
            token: cell.token.clone(),
            drift: cell.drift.clone(),
        };
        measure(
            &self.probes,
            cell.style,
            &sampled,
            &cell.base_drift,
            &self.evals,
            &self.drifts,
            &cell.reference,
        )
    }

    fn values(&self, m: &ToyMetrics) -> Vec<Option<f64>> {
        [
            m.style_fd,
            m.style_kd,
            m.style_accuracy,
            m.object_recall,
            m.colour_accuracy,
            m.kept,
            m.leak,
            m.drift_fd,
        ]
        .map(Some)
        .to_vec()
    }
}

/// The token-prompt pictures shown in the sample grids: four with a person (the first half
/// of the prompts), four without.
fn shown<T: Clone>(items: &[T]) -> Vec<T> {
    let half = items.len() / 2;
    let mut v: Vec<T> = items.iter().take(half.min(4)).cloned().collect();
    v.extend(items.iter().skip(half).take(4).cloned());
    v
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

/// The mean over styles of the rows that `keep`, one per label, in first-seen order.
fn mean_by_label(rows: &[ToyRow], keep: impl Fn(&ToyRow) -> bool) -> Vec<(String, ToyMetrics)> {
    let mut labels: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| keep(r)) {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    labels
        .into_iter()
        .map(|l| {
            let ms: Vec<&ToyMetrics> = rows
                .iter()
                .filter(|r| keep(r) && r.label == l)
                .map(|r| &r.metrics)
                .collect();
            (l.to_string(), mean_metrics(&ms))
        })
        .collect()
}

/// The tables of the protocol: `(title, rows of (label, metrics))`.
pub fn tables(rows: &[ToyRow], styles: &[Style]) -> Vec<(String, Vec<(String, ToyMetrics)>)> {
    let mut out = Vec::new();
    let main = |r: &ToyRow| r.table == ToyTable::Main;
    let of_style = |keep: &dyn Fn(&ToyRow) -> bool, s: Style| -> Vec<(String, ToyMetrics)> {
        rows.iter()
            .filter(|r| keep(r) && r.style == s)
            .map(|r| (r.label.clone(), r.metrics))
            .collect()
    };
    if styles.len() > 1 {
        let title = format!("Mean over {} held-out styles", styles.len());
        out.push((title, mean_by_label(rows, main)));
    }
    for &s in styles {
        out.push((format!("Style: {}", s.name()), of_style(&main, s)));
    }
    // Varied settings: each varied run beside its method's recipe run.
    let varied = |r: &ToyRow| r.table == ToyTable::Vary;
    if rows.iter().any(varied) {
        let in_table = |r: &ToyRow| {
            varied(r)
                || (main(r)
                    && rows
                        .iter()
                        .any(|v| varied(v) && v.label.starts_with(&format!("{}, ", r.label))))
        };
        let recipe = |mut t: Vec<(String, ToyMetrics)>| {
            for (label, _) in &mut t {
                if !label.contains(", ") {
                    label.push_str(" (recipe)");
                }
            }
            t
        };
        if styles.len() > 1 {
            out.push((
                format!(
                    "Varied settings: mean over {} held-out styles",
                    styles.len()
                ),
                recipe(mean_by_label(rows, in_table)),
            ));
        }
        for &s in styles {
            out.push((
                format!("Varied settings: {}", s.name()),
                recipe(of_style(&in_table, s)),
            ));
        }
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
            "Aux: known-style-scenes (StyleForge)",
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
