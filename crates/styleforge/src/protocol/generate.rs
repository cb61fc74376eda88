//! The protocol's one resumable generator: a list of pictures (file, prompt, seed) is made
//! from a model loaded on first need; a picture already on disk is not made again, and
//! every picture is written atomically, so a stopped protocol (or a shard of it) can be
//! rerun and never takes a half-written file for a finished one.

use std::path::{Path, PathBuf};

use candle_core::Device;
use image::RgbImage;
use styleforge_models::folder::LoadOptions;

use crate::adapters::generation::GenerationAdapters;
use crate::adapters::generation::{expand_placeholders, load_pipeline, AdaptedPipeline};
use crate::error::{Error, Result};
use crate::image_io::{load_rgb, save_png, save_png_with_parameters, tensor_to_image};
use crate::pipelines::{GenerationParameters, SamplingOptions, StableDiffusion, Txt2ImgRequest};
use crate::progress::{NoProgress, Progress};

/// One picture to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Where it goes (a PNG).
    pub path: PathBuf,
    /// The prompt, as written (placeholders of multi-vector embeddings are expanded for the
    /// model, not in the file's parameters).
    pub prompt: String,
    /// Its noise seed.
    pub seed: u64,
}

/// How pictures are made.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Sampler, steps, guidance, negative prompt (prompt and count are set per picture).
    pub sampling: SamplingOptions,
    /// Picture size; `None` takes the model's native size.
    pub size: Option<(usize, usize)>,
    /// `None`: one picture per call with its own seeded noise (as `styleforge generate`
    /// makes it); `Some(n)`: up to `n` pictures per call, one seed per row (far faster on
    /// small models).
    pub batch: Option<usize>,
    /// Write the AUTOMATIC1111 parameters into each PNG, naming the model so.
    pub parameters: Option<String>,
    /// The progress phase's name.
    pub label: String,
}

/// A model to sample from, loaded the first time a picture is missing.
pub struct LazyModel<'a> {
    load: Option<Box<dyn FnMut() -> Result<AdaptedPipeline> + 'a>>,
    loaded: Option<AdaptedPipeline>,
}

impl<'a> LazyModel<'a> {
    /// A model that `load` loads.
    pub fn new(load: impl FnMut() -> Result<AdaptedPipeline> + 'a) -> Self {
        Self {
            load: Some(Box::new(load)),
            loaded: None,
        }
    }

    /// A model loaded already (kept from an earlier call).
    pub fn loaded(pipeline: AdaptedPipeline) -> Self {
        Self {
            load: None,
            loaded: Some(pipeline),
        }
    }

    /// The loaded model, if it was needed.
    pub fn into_loaded(self) -> Option<AdaptedPipeline> {
        self.loaded
    }

    /// A diffusers folder with `adapters` applied ([`load_pipeline`]), on `device`.
    pub fn with_adapters(
        dir: &'a Path,
        adapters: &'a GenerationAdapters,
        device: &'a Device,
    ) -> Self {
        Self::new(move || {
            let opts = LoadOptions {
                device: device.clone(),
                ..LoadOptions::default()
            };
            load_pipeline(dir, adapters, &opts)
        })
    }

    /// A model folder or single file as it is, or with adapters when there are some: what
    /// `styleforge generate` loads.
    pub fn auto(dir: &'a Path, adapters: &'a GenerationAdapters, device: &'a Device) -> Self {
        Self::new(move || {
            let opts = LoadOptions {
                device: device.clone(),
                ..LoadOptions::default()
            };
            if adapters.is_empty() {
                Ok(AdaptedPipeline {
                    pipeline: StableDiffusion::load(dir, &opts)?,
                    placeholders: Vec::new(),
                })
            } else {
                load_pipeline(dir, adapters, &opts)
            }
        })
    }

    /// The model, loaded now if it was not yet.
    pub fn get(&mut self) -> Result<&AdaptedPipeline> {
        if let (None, Some(load)) = (&self.loaded, &mut self.load) {
            self.loaded = Some(load()?);
        }
        self.loaded
            .as_ref()
            .ok_or_else(|| Error::msg("a lazy model without a loader"))
    }
}

/// The pictures of `images` not on disk yet.
pub fn missing(images: &[ImageSpec]) -> Vec<&ImageSpec> {
    images.iter().filter(|i| !i.path.is_file()).collect()
}

/// Makes every picture of `images` that is not on disk; returns how many were made. The
/// model is loaded only when one is missing.
pub fn generate_missing(
    model: &mut LazyModel,
    images: &[ImageSpec],
    opts: &GenerateOptions,
    progress: &mut dyn Progress,
) -> Result<usize> {
    let todo = missing(images);
    if todo.is_empty() {
        return Ok(0);
    }
    let ap = model.get()?;
    let sd = &ap.pipeline;
    let native = sd.native_size();
    let (width, height) = opts.size.unwrap_or((native, native));
    progress.begin(&opts.label, todo.len());
    for chunk in todo.chunks(opts.batch.unwrap_or(1).max(1)) {
        let texts: Vec<String> = chunk
            .iter()
            .map(|i| expand_placeholders(&i.prompt, &ap.placeholders))
            .collect();
        let pictures = match opts.batch {
            None => {
                let req = Txt2ImgRequest {
                    sampling: SamplingOptions {
                        prompt: texts[0].clone(),
                        num_images: 1,
                        ..opts.sampling.clone()
                    },
                    width,
                    height,
                    latents: None,
                };
                let mut noise = styleforge_schedulers::SeededNoise::new(chunk[0].seed);
                sd.txt2img(&req, &mut noise, &mut NoProgress)?
            }
            Some(_) => {
                let seeds: Vec<u64> = chunk.iter().map(|i| i.seed).collect();
                sd.txt2img_prompts(
                    &texts,
                    &seeds,
                    &opts.sampling,
                    width,
                    height,
                    &mut NoProgress,
                )?
            }
        };
        for (k, spec) in chunk.iter().enumerate() {
            let img = tensor_to_image(&pictures.get(k)?)?;
            let parameters = opts.parameters.as_ref().map(|model| {
                GenerationParameters {
                    prompt: spec.prompt.clone(),
                    negative_prompt: opts.sampling.negative_prompt.clone(),
                    steps: opts.sampling.steps,
                    scheduler: opts.sampling.scheduler.clone(),
                    default_sampler: sd.scheduler_config_class(),
                    guidance_scale: opts.sampling.guidance_scale,
                    guidance_rescale: opts.sampling.guidance_rescale,
                    seed: Some(spec.seed),
                    size: (width, height),
                    model: model.clone(),
                    denoising_strength: None,
                    batch_index: None,
                }
                .to_a1111_text()
            });
            // Both writers are atomic: a picture on disk is always complete.
            match &parameters {
                Some(p) => save_png_with_parameters(&img, p, &spec.path)?,
                None => save_png(&img, &spec.path)?,
            }
            progress.advance(1);
        }
    }
    progress.finish();
    Ok(todo.len())
}

/// Reads the pictures of `images` back (after [`generate_missing`]).
pub fn load_all(images: &[ImageSpec]) -> Result<Vec<RgbImage>> {
    images.iter().map(|i| load_rgb(&i.path)).collect()
}
