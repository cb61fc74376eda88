//! The embedded demo: StyleForge end to end on the toy world, from the binary alone.
//!
//! The toy base model (pretrained on plain, pixel-art, sketch and watercolor renders; see
//! `assets/toy/`) learns a style it has never seen — cel by default — from 20 captioned
//! StyleRef renders (half people, half backgrounds) bound to `ohwx style`, with 20 Aux
//! pictures of the same scenes in the known styles bound to their own captions (which end
//! in `style`). Then the same prompts and seeds are sampled before and after, the probes
//! measure style accuracy, content and drift, and an HTML page shows it all with the loss
//! curve. A few minutes on two cores.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;
use styleforge_world::Style;

use crate::adapters::generation::GenerationAdapters;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::report::ImageGrid;
use crate::toy::data::{Composition, EVAL_SEED};
use crate::toy::embedded::{unpack_base_model, unpack_probes};
use crate::toy::probes::Probes;
use crate::toy::protocol::{
    drift_scenes, eval_scenes, measure, prepare_data, run_config, sample_model, toy_recipe,
    ToyMetrics, ToyProtocolOptions, ToyRun, ToyTable,
};
use crate::training::{train, Method, RunOptions};

/// Settings of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where everything is written.
    pub out: PathBuf,
    /// The held-out style to learn.
    pub style: Style,
    /// Training steps (default: StyleForge's toy recipe).
    pub steps: usize,
    /// Learning rate (default: StyleForge's toy recipe).
    pub lr: Option<f64>,
    /// Seed of training and sampling.
    pub seed: u64,
    /// The base model (default: the embedded toy base model, unpacked under `out`).
    pub base: Option<PathBuf>,
    /// Token prompts measured before and after (half with a person; at least 4). The
    /// default is the protocol's 24 (±0.1 on accuracies; fewer are noisier).
    pub eval_prompts: usize,
    /// Prompts naming a base style without the token (drift), measured before and after.
    pub drift_prompts: usize,
    /// Denoising steps of every picture.
    pub sample_steps: usize,
    /// Where training, sampling and the probes compute.
    pub device: candle_core::Device,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from("styleforge-demo"),
            style: Style::Cel,
            steps: toy_recipe(Method::Styleforge).steps,
            lr: None,
            seed: 1337,
            base: None,
            eval_prompts: 24,
            drift_prompts: 16,
            sample_steps: 25,
            device: candle_core::Device::Cpu,
        }
    }
}

/// What the demo produced.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// The HTML page.
    pub page: PathBuf,
    /// The before/after grid.
    pub samples: PathBuf,
    /// The fine-tuned model folder.
    pub model: PathBuf,
    /// Loss of the first and the last step.
    pub loss: (f64, f64),
    /// Probe measures of the base model (with the untrained token) and of the result.
    pub before: ToyMetrics,
    /// See `before`.
    pub after: ToyMetrics,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs the demo.
pub fn run(opts: &DemoOptions, progress: &mut dyn Progress) -> Result<DemoSummary> {
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let shipped = out.join("data");
    let base = match &opts.base {
        Some(b) => b.clone(),
        None => unpack_base_model(&shipped)?,
    };
    let probes_dir = unpack_probes(&shipped)?;
    let probes = Probes::load(&probes_dir, &opts.device)?;
    if opts.style.is_base() {
        return Err(Error::InvalidRequest(format!(
            "`{}` is one of the base model's pretraining styles; pick a held-out one ({})",
            opts.style.name(),
            Style::HELD_OUT.map(|s| s.id()).join(", ")
        )));
    }
    let popts = ToyProtocolOptions {
        steps: Some(opts.steps),
        eval_prompts: opts.eval_prompts.max(4),
        drift_prompts: opts.drift_prompts.max(2),
        sample_steps: opts.sample_steps,
        reference_images: 100,
        seed: opts.seed,
        device: opts.device.clone(),
        ..ToyProtocolOptions::new(base.clone(), probes_dir, out.clone())
    };
    let run = ToyRun {
        label: "StyleForge".into(),
        table: ToyTable::Main,
        method: Method::Styleforge,
        style: opts.style,
        composition: Composition::Mixed,
        aux: toy_recipe(Method::Styleforge).aux,
        setting: None,
    };
    let (concepts, aux) = prepare_data(&popts, &run, progress)?;
    let run_dir = out.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).map_err(io(&run_dir))?;
    }
    let mut config = run_config(&popts, &run, &concepts, aux.as_deref(), &run_dir)?;
    if let Some(lr) = opts.lr {
        config.optim.lr = Some(lr);
    }
    // The config as a file: `styleforge train --config <out>/train.toml` repeats the run.
    let toml_path = out.join("train.toml");
    let toml_text = toml::to_string_pretty(&config).map_err(|e| Error::TomlWrite {
        what: "the demo's config".into(),
        source: e,
    })?;
    styleforge_models::files::write(&toml_path, toml_text)?;

    let evals = eval_scenes(popts.eval_prompts);
    let drifts = drift_scenes(popts.drift_prompts);
    let reference: Vec<RgbImage> = crate::toy::data::style_ref_samples(
        opts.style,
        Composition::Mixed,
        popts.reference_images,
        EVAL_SEED + 2,
    )
    .into_iter()
    .map(|s| s.image)
    .collect();
    let phrase = ("ohwx style", "ohwx style");
    let no_adapters = GenerationAdapters::default();
    // Pictures of an earlier demo in this folder may come from another seed, style or
    // base: never reuse them.
    let images = out.join("images");
    if images.exists() {
        std::fs::remove_dir_all(&images).map_err(io(&images))?;
    }
    let before = sample_model(
        &popts,
        &base,
        &no_adapters,
        phrase,
        &evals,
        &drifts,
        &images.join("before"),
        progress,
    )?;
    let run_opts = RunOptions {
        device: opts.device.clone(),
        ..RunOptions::default()
    };
    let summary = train(&config.resolve()?, &run_opts, progress)?;
    let model = summary
        .model_dir
        .ok_or_else(|| Error::msg("the demo run ended before its last step"))?;
    let after_dir = images.join("after");
    let after = sample_model(
        &popts,
        &model,
        &no_adapters,
        phrase,
        &evals,
        &drifts,
        &after_dir,
        progress,
    )?;
    let m_before = measure(
        &probes,
        opts.style,
        &before,
        &before.drift,
        &evals,
        &drifts,
        &reference,
    )?;
    let m_after = measure(
        &probes,
        opts.style,
        &after,
        &before.drift,
        &evals,
        &drifts,
        &reference,
    )?;

    // Before/after grid: two people, two backgrounds, two drift prompts.
    let truth: Vec<RgbImage> = evals
        .iter()
        .map(|p| styleforge_world::render(&p.scene, opts.style, 32, opts.seed))
        .collect();
    let half = evals.len() / 2;
    let mut grid = ImageGrid::new(format!(
        "StyleForge demo: learning {} style",
        opts.style.name()
    ))
    .columns(["base model", "after StyleForge", "a true render"])
    .cell_scale(5);
    for i in [0, 1, half, half + 1] {
        let prompt = styleforge_world::caption_with_style_word(&evals[i].scene, "ohwx style");
        grid = grid.row(
            prompt,
            [
                before.token[i].clone(),
                after.token[i].clone(),
                truth[i].clone(),
            ],
        );
    }
    for (i, p) in drifts.iter().enumerate().take(2) {
        let named = p.base_style.unwrap_or(Style::Plain);
        let prompt = styleforge_world::caption(&p.scene, named);
        let render = styleforge_world::render(&p.scene, named, 32, opts.seed);
        grid = grid.row(
            format!("{prompt} (no token: must not change)"),
            [before.drift[i].clone(), after.drift[i].clone(), render],
        );
    }
    let samples_path = out.join("before-after.png");
    grid.save(&samples_path)?;

    let style_grid = out.join("style-images.png");
    let style_imgs: Vec<RgbImage> = crate::toy::data::style_ref_samples(
        opts.style,
        Composition::Mixed,
        popts.style_images,
        crate::toy::data::STYLE_REF_SEED,
    )
    .into_iter()
    .map(|s| s.image)
    .collect();
    let mid = style_imgs.len() / 2;
    ImageGrid::new("StyleRef images (the style to learn)")
        .row("people", style_imgs[..mid].to_vec())
        .row("backgrounds", style_imgs[mid..].to_vec())
        .save(&style_grid)?;

    let log = crate::training::read_log(&crate::RunDir::new(&run_dir).log());
    let loss = (
        log.first().map_or(f64::NAN, |e| e.loss),
        log.last().map_or(f64::NAN, |e| e.loss),
    );
    let page = out.join("index.html");
    styleforge_models::files::write(&page, page_html(opts, &model, loss, &m_before, &m_after))?;
    let summary = DemoSummary {
        page,
        samples: samples_path,
        model,
        loss,
        before: m_before,
        after: m_after,
    };
    let json = out.join("metrics.json");
    let text = serde_json::to_string_pretty(&summary).map_err(|e| Error::Json {
        what: "the demo's metrics".into(),
        source: e,
    })?;
    styleforge_models::files::write(&json, text)?;
    Ok(summary)
}

fn page_html(
    opts: &DemoOptions,
    model: &Path,
    loss: (f64, f64),
    before: &ToyMetrics,
    after: &ToyMetrics,
) -> String {
    let rows = [
        (
            "style accuracy ↑",
            "token pictures the probe calls the target style",
            before.style_accuracy,
            after.style_accuracy,
        ),
        (
            "style distance ↓",
            "probe Fréchet distance to true renders",
            before.style_fd,
            after.style_fd,
        ),
        (
            "objects ↑",
            "prompted objects the probe finds",
            before.object_recall,
            after.object_recall,
        ),
        (
            "colours ↑",
            "prompted colour words the probe finds",
            before.colour_accuracy,
            after.colour_accuracy,
        ),
        (
            "kept ↑",
            "no-token prompts drawn in the base style they name",
            before.kept,
            after.kept,
        ),
        (
            "leak ↓",
            "no-token prompts drawn in the learnt style",
            before.leak,
            after.leak,
        ),
    ];
    let table: String = rows
        .iter()
        .map(|(name, what, b, a)| {
            format!("<tr><th title=\"{what}\">{name}</th><td>{b:.2}</td><td>{a:.2}</td><td>{what}</td></tr>")
        })
        .collect();
    let style = opts.style.name();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>StyleForge demo</title>\
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}}img{{max-width:100%;image-rendering:pixelated;border:1px solid #ccc}}td,th{{padding:4px 10px;text-align:left}}</style></head><body>\
<h1>StyleForge demo: teaching the toy base model {style} style</h1>\
<p>The embedded toy base model was pretrained on four styles (plain, pixel art, sketch, watercolor); it has never seen <b>{style}</b>. \
StyleForge fine-tuned its UNet and text encoder for {steps} steps on 20 captioned {style} renders bound to <code>ohwx style</code> \
(half people, half backgrounds), with the same 20 scenes in the known styles as Aux images, bound to their captions that end in <code>style</code> (<code>…, plain style</code>), so the token learns what sets {style} apart. \
Same prompts and seeds before and after; the toy world's probes measure the pictures.</p>\
<h2>The style</h2><img src=\"style-images.png\" alt=\"StyleRef images\">\
<h2>Before and after</h2><img src=\"before-after.png\" alt=\"before and after\">\
<h2>Measured</h2><table><tr><th></th><th>base model</th><th>after</th><th></th></tr>{table}</table>\
<p>{n} token prompts (<code>…, ohwx style</code>) and {d} prompts naming a base style without the token.</p>\
<h2>Training loss</h2><p>first step {l0:.4}, last step {l1:.4}</p><img src=\"run/loss.png\" alt=\"loss curve\">\
<p>Model: <code>{model}</code> (a diffusers folder: <code>styleforge generate --model {model} --prompt \"a red house on snow at night, ohwx style\"</code>). \
Repeat the training alone with <code>styleforge train --config train.toml</code>.</p></body></html>\n",
        steps = opts.steps,
        l0 = loss.0,
        l1 = loss.1,
        n = opts.eval_prompts.max(4),
        d = opts.drift_prompts.max(2),
        model = model.display()
    )
}
