//! The embedded demo: StyleForge end to end on a tiny base model and a small set of style
//! images that ship inside the binary — before/after samples, the loss curve and an HTML
//! page, in a couple of minutes on two cores.
//!
//! The base model today is the tiny random fixture model (`fixtures/tiny-sd1`): the path
//! is the real one, the pictures are not yet meaningful.

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::error::{Error, Result};
use crate::image_io::tensor_to_rgb;
use crate::models::folder::LoadOptions;
use crate::pipelines::{SamplingOptions, StableDiffusion, Txt2ImgRequest};
use crate::progress::{NoProgress, Progress};
use crate::report::ImageGrid;
use crate::schedulers::SeededNoise;
use crate::training::config::{ConceptConfig, DataSection, ModelSection, OptimSection};
use crate::training::config::{Method, OutputSection, TrainConfig, TrainingSection};
use crate::training::{train, RunOptions};

include!(concat!(env!("OUT_DIR"), "/demo_assets.rs"));

/// Settings of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where everything is written.
    pub out: PathBuf,
    /// Training steps.
    pub steps: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from("styleforge-demo"),
            steps: 300,
            seed: 1337,
        }
    }
}

/// What the demo produced.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// The HTML page.
    pub page: PathBuf,
    /// The before/after grid.
    pub samples: PathBuf,
    /// The fine-tuned model folder.
    pub model: PathBuf,
    /// Loss of the first and the last step.
    pub loss: (f64, f64),
}

/// Writes the embedded files (base model, StyleRef and Aux images) under `dir`.
pub fn unpack(dir: &Path) -> Result<()> {
    for (name, bytes) in DEMO_FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let same = std::fs::read(&path).map(|b| b == *bytes).unwrap_or(false);
        if !same {
            std::fs::write(&path, bytes).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// The content prompts sampled before and after training.
const PROMPTS: [&str; 3] = [
    "a person standing in a field, ohwx style",
    "a house under a tree, ohwx style",
    "a person standing in a field",
];

fn samples(model: &Path, seed: u64) -> Result<Vec<RgbImage>> {
    let sd = StableDiffusion::load(model, &LoadOptions::default())?;
    PROMPTS
        .iter()
        .map(|p| {
            let req = Txt2ImgRequest {
                sampling: SamplingOptions {
                    prompt: p.to_string(),
                    steps: 20,
                    ..Default::default()
                },
                width: 32,
                height: 32,
                latents: None,
            };
            let img = sd.txt2img(&req, &mut SeededNoise::new(seed), &mut NoProgress)?;
            tensor_to_rgb(&img.get(0)?)
        })
        .collect()
}

/// Runs the demo.
pub fn run(opts: &DemoOptions, progress: &mut dyn Progress) -> Result<DemoSummary> {
    let out = &opts.out;
    let data = out.join("data");
    unpack(&data)?;
    let base = data.join("base-model");
    let config = TrainConfig {
        method: Method::Styleforge,
        seed: Some(opts.seed),
        model: ModelSection {
            base: base.clone(),
            variant: None,
            config: None,
        },
        data: DataSection {
            concepts: vec![ConceptConfig {
                style_dir: data.join("style"),
                aux_dir: Some(data.join("aux")),
                token: Some("ohwx".into()),
            }],
            resolution: Some(32),
            ..Default::default()
        },
        training: TrainingSection::default(),
        optim: OptimSection {
            steps: Some(opts.steps),
            // The tiny random model needs a far larger step than SD's 1e-6 to move visibly.
            lr: Some(1e-4),
            ..Default::default()
        },
        output: OutputSection {
            dir: Some(out.join("run")),
            checkpoint_every: Some(0),
            validate_every: Some(0),
            validation_steps: Some(20),
            ..Default::default()
        },
    };
    let cfg = config.resolve()?;
    let run_dir = out.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).map_err(|source| Error::Io {
            path: run_dir.clone(),
            source,
        })?;
    }
    let before = samples(&base, opts.seed)?;
    let summary = train(&cfg, &RunOptions::default(), progress)?;
    let model = summary
        .model_dir
        .ok_or_else(|| Error::msg("the demo run ended before its last step"))?;
    let after = samples(&model, opts.seed)?;
    let mut grid = ImageGrid::new("StyleForge demo: before and after fine-tuning")
        .columns(["base model", "after StyleForge"]);
    for (i, p) in PROMPTS.iter().enumerate() {
        grid = grid.row(p.to_string(), [before[i].clone(), after[i].clone()]);
    }
    let samples_path = out.join("before-after.png");
    grid.save(&samples_path)?;
    let log = crate::training::engine::read_log(&run_dir.join("train_log.jsonl"));
    let loss = (
        log.first().map_or(f64::NAN, |e| e.loss),
        log.last().map_or(f64::NAN, |e| e.loss),
    );
    let style_grid = out.join("style-images.png");
    let style_imgs: Vec<RgbImage> = std::fs::read_dir(data.join("style"))
        .map_err(|source| Error::Io {
            path: data.join("style"),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| crate::data::is_image_file(p))
        .filter_map(|p| crate::image_io::load_rgb(&p).ok())
        .take(10)
        .collect();
    ImageGrid::new("StyleRef images (the style to learn)")
        .row("", style_imgs)
        .save(&style_grid)?;
    let page = out.join("index.html");
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>StyleForge demo</title>\
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}}img{{max-width:100%;image-rendering:pixelated;border:1px solid #ccc}}td,th{{padding:4px 10px;text-align:left}}</style></head><body>\
<h1>StyleForge demo</h1><p>StyleForge fine-tuned the UNet and the text encoder of a tiny base model on {n} style images bound to <code>ohwx style</code>, with Aux images bound to <code>style</code>, for {steps} steps.</p>\
<table><tr><th>first-step loss</th><td>{l0:.4}</td></tr><tr><th>last-step loss</th><td>{l1:.4}</td></tr><tr><th>model</th><td><code>{model}</code></td></tr></table>\
<h2>The style</h2><img src=\"style-images.png\" alt=\"style images\"><h2>Before and after</h2><img src=\"before-after.png\" alt=\"before and after\">\
<h2>Training loss</h2><img src=\"run/loss.png\" alt=\"loss curve\"><p>The embedded base model is still a tiny random model: the path is real, the pictures are not yet meaningful.</p></body></html>\n",
        n = DEMO_FILES.iter().filter(|(n, _)| n.starts_with("style/") && n.ends_with(".png")).count(),
        steps = opts.steps,
        l0 = loss.0,
        l1 = loss.1,
        model = model.display()
    );
    std::fs::write(&page, html).map_err(|source| Error::Io {
        path: page.clone(),
        source,
    })?;
    Ok(DemoSummary {
        page,
        samples: samples_path,
        model,
        loss,
    })
}
