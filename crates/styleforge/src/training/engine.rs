//! The training engine every method runs on: load the base model, prepare the data
//! (generating missing Aux images, caching latents), then the loop — sample a StyleRef/Aux
//! pair, one prior-preservation step, clip, AdamW — with checkpoints, exact resume,
//! validation samples, logs and the final diffusers folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use styleforge_models::clip_text::ClipTextModel;
use styleforge_models::folder::{LoadOptions, ModelFolder};
use styleforge_models::nn::checkpoint::backward as checkpointed_backward;
use styleforge_models::tokenizer::ClipTokenizer;
use styleforge_models::unet::UNet2DConditionModel;
use styleforge_models::vae::AutoencoderKL;
use styleforge_models::weights::save_safetensors_atomic;
use styleforge_schedulers::{DdpmScheduler, SchedulerConfig, SeededNoise};

use super::checkpoint::{self, TrainState};
use super::config::{ResolvedConfig, SaveFormat};
use crate::adapters::training::AdapterState;
use crate::adapters::BaseWeights;

use super::step::{clip_grad_norm, compute_loss, NoiseSchedule, StepBatch, StepModels};
use crate::data::{CacheSource, EpochSampler, ImageFolder, LatentCache, Preprocess, RngState};
use crate::error::{Error, Result};
use crate::image_io::{save_png_with_parameters, tensor_to_rgb};
use crate::optim::AdamW;
use crate::pipelines::{
    GenerationParameters, SamplingOptions, SchedulerChoice, StableDiffusion, Txt2ImgRequest,
};
use crate::progress::{NoProgress, Progress};

/// How a run is started.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the newest checkpoint in the run folder.
    pub resume: bool,
    /// Stop (with a checkpoint) after this many steps even if the config asks for more, as
    /// an interrupted run would; used to test exact resume.
    pub stop_after: Option<usize>,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Optimizer steps done in total.
    pub steps: usize,
    /// Loss of the last step.
    pub last_loss: f64,
    /// The fine-tuned model (when the run reached its last step): the diffusers folder, or
    /// `<run>/model.safetensors` with `save_format = "single-file"`.
    pub model_dir: Option<PathBuf>,
    /// The run folder.
    pub run_dir: PathBuf,
}

/// The data of one concept: StyleRef and Aux latents with their prompt ids.
struct ConceptData {
    style: LatentCache,
    style_ids: Vec<Vec<u32>>,
    /// Absent when the run has no prior-preservation loss (`prior_loss_weight = 0`).
    aux: Option<LatentCache>,
    aux_ids: Vec<Vec<u32>>,
}

/// A standard normal tensor from `rng` (Box-Muller, both values of each pair used).
pub(crate) fn normal(rng: &mut ChaCha8Rng, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        let u1: f32 = 1.0 - rng.gen::<f32>();
        let u2: f32 = rng.gen();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = 2.0 * std::f32::consts::PI * u2;
        values.push(r * a.cos());
        values.push(r * a.sin());
    }
    values.truncate(n);
    Ok(Tensor::from_vec(values, shape, device)?)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Refuses a run folder that is the base model's folder or inside it.
fn check_output_dir(base: &Path, out: &Path) -> Result<()> {
    let base = base.canonicalize().map_err(io(base))?;
    let mut probe = out.to_path_buf();
    let mut tail = Vec::new();
    while !probe.exists() {
        match (probe.file_name(), probe.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name.to_os_string());
                probe = if parent.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    parent.to_path_buf()
                };
            }
            _ => break,
        }
    }
    let mut resolved = probe.canonicalize().map_err(io(&probe))?;
    for part in tail.iter().rev() {
        resolved.push(part);
    }
    if resolved.starts_with(&base) {
        return Err(Error::msg(format!(
            "the run folder {} is inside the base model {}; choose another output.dir (the base model is never written to)",
            out.display(),
            base.display()
        )));
    }
    Ok(())
}

/// A tag naming the VAE's weights, so cached latents are rebuilt when they change.
fn vae_tag(base: &Path) -> String {
    let dir = base.join("vae");
    let mut parts = vec![dir.display().to_string()];
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        files.sort_by_key(|e| e.file_name());
        for e in files {
            if let Ok(m) = e.metadata() {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                parts.push(format!(
                    "{}:{}:{mtime}",
                    e.file_name().to_string_lossy(),
                    m.len()
                ));
            }
        }
    }
    parts.join("|")
}

/// The loaded, trainable model.
struct Models {
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    scheduler_config: SchedulerConfig,
    unet_vars: VarMap,
    te_vars: Option<VarMap>,
    /// Adapter methods: the frozen base and the adapter; the UNet and text encoder above
    /// are rebuilt from them after every update, `unet_vars` holds the adapter's variables.
    adapter: Option<(BaseWeights, AdapterState)>,
}

/// The models of a run, with gradient checkpointing as the config asks (the text encoder
/// only when it is trained).
fn load_models(cfg: &ResolvedConfig, device: &Device) -> Result<Models> {
    let mut models = load_parts(cfg, device)?;
    let ckpt = cfg.gradient_checkpointing;
    models.set_gradient_checkpointing(ckpt, ckpt && models.trains_text_encoder(cfg));
    Ok(models)
}

fn load_parts(cfg: &ResolvedConfig, device: &Device) -> Result<Models> {
    let folder = ModelFolder::open(&cfg.base)?;
    let base = LoadOptions {
        dtype: DType::F32,
        device: device.clone(),
        variant: cfg.variant.clone(),
        trainable: None,
    };
    let unet_vars = VarMap::new();
    if cfg.method.is_adapter() {
        let weights = BaseWeights::load(&cfg.base, DType::F32, device)?;
        let mut tokenizer = folder.tokenizer()?;
        let adapter = AdapterState::from_config(cfg, &weights, &mut tokenizer)?;
        unet_vars
            .data()
            .lock()
            .expect("varmap lock")
            .extend(adapter.named_vars());
        let (unet, text_encoder) = adapter.build(&weights)?;
        return Ok(Models {
            tokenizer,
            text_encoder,
            unet,
            vae: folder.vae(&base)?.model,
            scheduler_config: SchedulerConfig::from_model_dir(&cfg.base)?,
            unet_vars,
            te_vars: None,
            adapter: Some((weights, adapter)),
        });
    }
    let unet = folder.unet(&base.trainable_in(&unet_vars))?.model;
    let te_vars = cfg.train_text_encoder.then(VarMap::new);
    let te_opts = match &te_vars {
        Some(v) => base.trainable_in(v),
        None => base.clone(),
    };
    let text_encoder = folder.text_encoder(&te_opts)?.model;
    let vae = folder.vae(&base)?.model;
    let tokenizer = folder.tokenizer()?;
    let scheduler_config = SchedulerConfig::from_model_dir(&cfg.base)?;
    Ok(Models {
        tokenizer,
        text_encoder,
        unet,
        vae,
        scheduler_config,
        unet_vars,
        te_vars,
        adapter: None,
    })
}

impl Models {
    /// Adapter methods: rebuilds the UNet and text encoder from the current variables.
    fn refresh(&mut self) -> Result<()> {
        if let Some((base, adapter)) = &self.adapter {
            let (unet, te) = adapter.build(base)?;
            let on = (
                self.unet.gradient_checkpointing(),
                self.text_encoder.gradient_checkpointing(),
            );
            self.unet = unet;
            self.text_encoder = te;
            self.set_gradient_checkpointing(on.0, on.1);
        }
        Ok(())
    }

    /// Gradient checkpointing of the UNet and of the text encoder (pointless for a frozen
    /// one: it runs outside the graph).
    fn set_gradient_checkpointing(&mut self, unet: bool, text_encoder: bool) {
        self.unet.set_gradient_checkpointing(unet);
        self.text_encoder.set_gradient_checkpointing(text_encoder);
    }

    /// Whether gradients flow through the text encoder.
    fn trains_text_encoder(&self, cfg: &ResolvedConfig) -> bool {
        match &self.adapter {
            Some((_, a)) => a.trains_text_encoder(),
            None => cfg.train_text_encoder,
        }
    }

    /// A sampling pipeline sharing the (possibly partly trained) weights.
    fn pipeline(&self, source: &Path, device: &Device) -> StableDiffusion {
        // Sampling keeps no graph: nothing to checkpoint.
        let mut unet = self.unet.clone();
        unet.set_gradient_checkpointing(false);
        let mut text_encoder = self.text_encoder.clone();
        text_encoder.set_gradient_checkpointing(false);
        StableDiffusion::from_parts(
            self.tokenizer.clone(),
            text_encoder,
            unet,
            self.vae.clone(),
            self.scheduler_config.clone(),
            source.to_path_buf(),
            device.clone(),
        )
    }
}

/// The Aux folder to train on: the user's when it holds enough images, else a folder in
/// the run with the user's images copied and the rest generated by the base model (kept
/// for the next run).
fn prepare_aux(
    cfg: &ResolvedConfig,
    concept_index: usize,
    models: &Models,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    let concept = &cfg.concepts[concept_index];
    let wanted = cfg.num_aux_images.max(1);
    let user_images: Vec<PathBuf> = match &concept.aux_dir {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Error::Data {
                    path: dir.clone(),
                    message: "Aux folder not found".to_string(),
                });
            }
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io(dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| crate::data::is_image_file(p))
                .collect();
            v.sort();
            v
        }
        None => Vec::new(),
    };
    if let Some(dir) = &concept.aux_dir {
        if user_images.len() >= wanted {
            return Ok(dir.clone());
        }
    }
    let run_aux = cfg
        .output_dir
        .join("aux")
        .join(format!("concept-{concept_index}"));
    std::fs::create_dir_all(&run_aux).map_err(io(&run_aux))?;
    for src in &user_images {
        let name = src.file_name().expect("listed files have names");
        let dst = run_aux.join(name);
        if !dst.exists() {
            std::fs::copy(src, &dst).map_err(io(&dst))?;
            let caption = src.with_extension("txt");
            if caption.is_file() {
                let cdst = dst.with_extension("txt");
                std::fs::copy(&caption, &cdst).map_err(io(&cdst))?;
            }
        }
    }
    let have = std::fs::read_dir(&run_aux)
        .map_err(io(&run_aux))?
        .filter_map(|e| e.ok())
        .filter(|e| crate::data::is_image_file(&e.path()))
        .count();
    if have < wanted {
        tracing::info!(
            "generating {} Aux image(s) for concept {concept_index} with the base model (\"{}\"); they are kept in {} for later runs",
            wanted - have,
            concept.aux_prompt,
            run_aux.display()
        );
        let sd = models.pipeline(&cfg.base, device);
        progress.begin("aux images", wanted - have);
        for i in have..wanted {
            let seed = cfg
                .seed
                .wrapping_add(1_000_003 * (concept_index as u64 + 1) + i as u64);
            let req = Txt2ImgRequest {
                sampling: SamplingOptions {
                    prompt: concept.aux_prompt.clone(),
                    steps: cfg.aux_steps,
                    ..Default::default()
                },
                width: cfg.resolution as usize,
                height: cfg.resolution as usize,
                latents: None,
            };
            let images = sd.txt2img(&req, &mut SeededNoise::new(seed), &mut NoProgress)?;
            let params = GenerationParameters {
                prompt: concept.aux_prompt.clone(),
                negative_prompt: None,
                steps: cfg.aux_steps,
                scheduler: SchedulerChoice::default(),
                default_sampler: sd.scheduler_config_class(),
                guidance_scale: 7.5,
                seed: Some(seed),
                size: (cfg.resolution as usize, cfg.resolution as usize),
                model: sd.model_name(),
                denoising_strength: None,
                batch_index: None,
            };
            let path = run_aux.join(format!("generated-{i:05}.png"));
            save_png_with_parameters(
                &tensor_to_rgb(&images.get(0)?)?,
                &params.to_a1111_text(),
                &path,
            )?;
            progress.advance(1);
        }
        progress.finish();
    }
    Ok(run_aux)
}

fn prompt_ids(tokenizer: &ClipTokenizer, folder: &ImageFolder, default: &str) -> Vec<Vec<u32>> {
    folder
        .entries()
        .iter()
        .map(|e| tokenizer.encode_padded(&e.prompt(default, default)).ids)
        .collect()
}

fn load_concepts(
    cfg: &ResolvedConfig,
    models: &Models,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<Vec<ConceptData>> {
    let prep = Preprocess {
        resolution: cfg.resolution,
        crop: cfg.crop,
        seed: cfg.seed,
        allow_upscale: cfg.allow_upscale,
    };
    let cache_dir = cfg.output_dir.join("cache");
    let tag = vae_tag(&cfg.base);
    let mut out = Vec::new();
    for (i, concept) in cfg.concepts.iter().enumerate() {
        let style_folder = ImageFolder::scan(&concept.style_dir, &prep, cfg.min_images)?;
        // Without a prior-preservation loss, Aux images would be loaded (or generated) only
        // to be ignored.
        let aux_folder = if cfg.prior_loss_weight > 0.0 {
            let aux_dir = prepare_aux(cfg, i, models, device, progress)?;
            Some(ImageFolder::scan(&aux_dir, &prep, 1)?)
        } else {
            None
        };
        let cache = |folder: &ImageFolder, progress: &mut dyn Progress| -> Result<LatentCache> {
            let source = CacheSource {
                folder,
                preprocess: &prep,
                with_flips: cfg.flip,
                vae_tag: &tag,
            };
            let (c, _) = LatentCache::load_or_build(
                &cache_dir,
                &source,
                &models.vae,
                DType::F32,
                device,
                progress,
            )?;
            Ok(c)
        };
        let style = cache(&style_folder, progress)?;
        let aux = match &aux_folder {
            Some(folder) => Some(cache(folder, progress)?),
            None => None,
        };
        out.push(ConceptData {
            style_ids: prompt_ids(&models.tokenizer, &style_folder, &concept.instance_prompt),
            aux_ids: aux_folder
                .as_ref()
                .map(|f| prompt_ids(&models.tokenizer, f, &concept.aux_prompt))
                .unwrap_or_default(),
            style,
            aux,
        });
    }
    Ok(out)
}

/// One JSON line of the training log.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LogEntry {
    /// Optimizer step (1-based).
    pub step: usize,
    /// Total loss (mean over micro-batches).
    pub loss: f64,
    /// StyleRef part.
    pub loss_instance: f64,
    /// Aux part.
    pub loss_prior: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Seconds the step took.
    pub step_time_s: f64,
}

/// Reads a training log, skipping unreadable lines.
pub fn read_log(path: &Path) -> Vec<LogEntry> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Keeps only log lines up to `step` (a resumed run rewrites what came after).
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    if !path.is_file() {
        return Ok(());
    }
    let kept: Vec<String> = read_log(path)
        .into_iter()
        .filter(|e| e.step <= step)
        .filter_map(|e| serde_json::to_string(&e).ok())
        .collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(path, text).map_err(io(path))
}

/// The training engine's state while a run is going.
struct Loop<'a> {
    cfg: &'a ResolvedConfig,
    device: Device,
    models: Models,
    concepts: Vec<ConceptData>,
    schedule: NoiseSchedule,
    optimizer: AdamW,
    vars: Vec<Var>,
    rng: ChaCha8Rng,
    /// Over pooled (concept, StyleRef image) pairs.
    style_sampler: EpochSampler,
    style_pairs: Vec<(usize, usize)>,
    aux_samplers: Vec<EpochSampler>,
    step: usize,
}

impl Loop<'_> {
    fn state(&self) -> TrainState {
        TrainState {
            step: self.step,
            rng: RngState::capture(&self.rng),
            style_sampler: self.style_sampler.state(),
            aux_samplers: self.aux_samplers.iter().map(|s| s.state()).collect(),
        }
    }

    /// Draws one (StyleRef, Aux) batch: concept and image from the samplers, flips, the
    /// posterior samples, noise and one timestep per row, in that order.
    fn draw_batch(&mut self) -> Result<StepBatch> {
        let (ci, si) = self.style_pairs[self.style_sampler.next_index()];
        let ai = self.aux_samplers[ci].next_index();
        let c = &self.concepts[ci];
        let with_prior = self.cfg.prior_loss_weight > 0.0;
        let flip_style = self.cfg.flip && self.rng.gen_bool(0.5);
        let flip_aux = self.cfg.flip && self.rng.gen_bool(0.5);
        let shape = c.style.latent_shape();
        let eps = normal(&mut self.rng, &shape, &self.device)?;
        let mut latents = vec![c.style.sample(si, flip_style, &eps)?];
        let mut ids = vec![c.style_ids[si].clone()];
        if let (true, Some(aux)) = (with_prior, &c.aux) {
            let eps = normal(&mut self.rng, &aux.latent_shape(), &self.device)?;
            latents.push(aux.sample(ai, flip_aux, &eps)?);
            ids.push(c.aux_ids[ai].clone());
        }
        let latents = Tensor::cat(&latents, 0)?;
        let b = latents.dim(0)?;
        let noise = normal(&mut self.rng, latents.dims(), &self.device)?;
        let t_max = self.schedule.num_train_timesteps();
        let timesteps: Vec<f64> = (0..b)
            .map(|_| self.rng.gen_range(0..t_max) as f64)
            .collect();
        let len = ids[0].len();
        let flat: Vec<u32> = ids.into_iter().flatten().collect();
        Ok(StepBatch {
            latents,
            noise,
            timesteps,
            input_ids: Tensor::from_vec(flat, (b, len), &self.device)?,
            instance_rows: 1,
        })
    }

    /// One optimizer step over `gradient_accumulation` micro-batches.
    fn train_step(&mut self) -> Result<LogEntry> {
        let start = Instant::now();
        let accum = self.cfg.gradient_accumulation;
        let mut grads_sum: Option<candle_core::backprop::GradStore> = None;
        let (mut loss_sum, mut inst_sum, mut prior_sum) = (0.0, 0.0, 0.0);
        for _ in 0..accum {
            let batch = self.draw_batch()?;
            let models = StepModels {
                unet: &self.models.unet,
                text_encoder: &self.models.text_encoder,
                train_text_encoder: self.models.trains_text_encoder(self.cfg),
            };
            let loss = compute_loss(&models, &self.schedule, &batch, self.cfg.prior_loss_weight)?;
            let value = loss.total.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(Error::NonFiniteLoss {
                    step: self.step + 1,
                    value,
                });
            }
            loss_sum += value;
            inst_sum += loss.instance;
            prior_sum += loss.prior;
            let total = if accum > 1 {
                (loss.total / accum as f64)?
            } else {
                loss.total
            };
            let grads = checkpointed_backward(&total)?;
            grads_sum = Some(match grads_sum {
                None => grads,
                Some(mut acc) => {
                    for var in &self.vars {
                        if let Some(g) = grads.get(var.as_tensor()) {
                            let sum = match acc.remove(var.as_tensor()) {
                                Some(prev) => (prev + g)?,
                                None => g.clone(),
                            };
                            acc.insert(var.as_tensor(), sum);
                        }
                    }
                    acc
                }
            });
        }
        let mut grads = grads_sum.expect("at least one micro-batch");
        // With clipping off (max_grad_norm 0) the norm is still measured for the log (a
        // NaN would not survive the JSON log).
        let max_norm = if self.cfg.max_grad_norm > 0.0 {
            self.cfg.max_grad_norm
        } else {
            f64::INFINITY
        };
        let grad_norm = clip_grad_norm(&mut grads, &self.vars, max_norm)?;
        let lr = self.cfg.lr_at(self.step + 1);
        self.optimizer.set_lr(lr);
        self.optimizer.step(&grads)?;
        self.models.refresh()?;
        self.step += 1;
        let n = accum as f64;
        Ok(LogEntry {
            step: self.step,
            loss: loss_sum / n,
            loss_instance: inst_sum / n,
            loss_prior: prior_sum / n,
            grad_norm,
            lr,
            step_time_s: start.elapsed().as_secs_f64(),
        })
    }

    fn save_checkpoint(&self) -> Result<PathBuf> {
        checkpoint::save(
            &self.cfg.output_dir.join("checkpoints"),
            &self.state(),
            &self.models.unet_vars,
            self.models.te_vars.as_ref(),
            &self.optimizer,
            self.cfg.keep_checkpoints,
        )
    }

    /// Samples every validation prompt with and without the token at a fixed seed, and
    /// writes the images and a labelled grid for this step.
    fn validate(&self) -> Result<PathBuf> {
        let sd = self.models.pipeline(&self.cfg.base, &self.device);
        let dir = self.cfg.output_dir.join("validation");
        let token = &self.cfg.concepts[0].token;
        let mut rows = Vec::new();
        for prompt in &self.cfg.validation_prompts {
            let without: String = prompt
                .replace(token.as_str(), "")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let mut images = Vec::new();
            for p in [prompt.as_str(), without.as_str()] {
                let req = Txt2ImgRequest {
                    sampling: SamplingOptions {
                        prompt: p.to_string(),
                        steps: self.cfg.validation_steps,
                        ..Default::default()
                    },
                    width: self.cfg.resolution as usize,
                    height: self.cfg.resolution as usize,
                    latents: None,
                };
                let img =
                    sd.txt2img(&req, &mut SeededNoise::new(self.cfg.seed), &mut NoProgress)?;
                images.push(tensor_to_rgb(&img.get(0)?)?);
            }
            rows.push((prompt.clone(), images));
        }
        let path = dir.join(format!("step-{:07}.png", self.step));
        crate::training::report::validation_grid(&rows, self.step, &path)?;
        Ok(path)
    }

    /// Writes the fine-tuned model as a diffusers folder `<run>/model`: the trained UNet
    /// (and text encoder), the rest copied from the base. Built aside and renamed.
    fn save_model(&self) -> Result<PathBuf> {
        let out = self.cfg.output_dir.join("model");
        let tmp = self
            .cfg
            .output_dir
            .join(format!(".model.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        let result = (|| -> Result<()> {
            if let Some((weights, adapter)) = &self.models.adapter {
                adapter.save(weights, &tmp)?;
                if out.exists() {
                    std::fs::remove_dir_all(&out).map_err(io(&out))?;
                }
                return std::fs::rename(&tmp, &out).map_err(io(&out));
            }
            let base = &self.cfg.base;
            copy_file(
                &base.join("model_index.json"),
                &tmp.join("model_index.json"),
            )?;
            for part in ["scheduler", "tokenizer", "vae"] {
                // A folder converted from a single file may have no tokenizer.
                if part != "tokenizer" || base.join(part).is_dir() {
                    copy_dir(&base.join(part), &tmp.join(part))?;
                }
            }
            copy_file(
                &base.join("unet/config.json"),
                &tmp.join("unet/config.json"),
            )?;
            save_safetensors_atomic(
                &styleforge_models::weights::varmap_tensors(&self.models.unet_vars),
                &tmp.join("unet/diffusion_pytorch_model.safetensors"),
            )?;
            match &self.models.te_vars {
                Some(vars) => {
                    copy_file(
                        &base.join("text_encoder/config.json"),
                        &tmp.join("text_encoder/config.json"),
                    )?;
                    save_safetensors_atomic(
                        &styleforge_models::weights::varmap_tensors(vars),
                        &tmp.join("text_encoder/model.safetensors"),
                    )?;
                }
                None => copy_dir(&base.join("text_encoder"), &tmp.join("text_encoder"))?,
            }
            if out.exists() {
                std::fs::remove_dir_all(&out).map_err(io(&out))?;
            }
            std::fs::rename(&tmp, &out).map_err(io(&out))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result?;
        if self.models.adapter.is_some() || self.cfg.save_format == SaveFormat::Diffusers {
            return Ok(out);
        }
        let file = self.cfg.output_dir.join("model.safetensors");
        styleforge_models::single_file::folder_to_single_file(&out, &file)?;
        if self.cfg.save_format == SaveFormat::SingleFile {
            std::fs::remove_dir_all(&out).map_err(io(&out))?;
            return Ok(file);
        }
        Ok(out)
    }
}

fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::copy(src, dst).map_err(io(src))?;
    Ok(())
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(io(dst))?;
    for entry in std::fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &dst.join(entry.file_name()))?;
        } else {
            copy_file(&path, &dst.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// For a single-file base: converts it once into `<run>/base-model/` (atomically; reused by
/// later runs and `--resume`) and returns the config with that folder as its base. The base
/// file itself is only read.
fn folder_base(cfg: &ResolvedConfig) -> Result<Option<ResolvedConfig>> {
    if !styleforge_models::single_file::is_single_file(&cfg.base) {
        return Ok(None);
    }
    let dir = cfg.output_dir.join("base-model");
    if !dir.join("model_index.json").is_file() {
        tracing::info!(
            "converting the single-file base {} into {}",
            cfg.base.display(),
            dir.display()
        );
        let opts = styleforge_models::single_file::SingleFileOptions {
            config: cfg.base_config.clone(),
            prediction_type: None,
        };
        styleforge_models::single_file::single_file_to_folder(&cfg.base, &dir, &opts)?;
    }
    let mut out = cfg.clone();
    out.base = dir;
    // The converted folder holds the file's weights under the standard names.
    out.variant = None;
    Ok(Some(out))
}

/// For a Hub base (`owner/name[@revision]` that is no local path): the config with the
/// model's snapshot folder in the Hugging Face cache as its base, downloaded if needed.
fn hub_base(cfg: &ResolvedConfig) -> Result<Option<ResolvedConfig>> {
    use styleforge_models::hub;
    let opts = hub::HubOptions {
        variant: cfg.variant.clone(),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..hub::HubOptions::from_env()
    };
    let Some(found) = hub::resolve_arg(&cfg.base, &opts) else {
        return Ok(None);
    };
    let mut out = cfg.clone();
    out.base = found?;
    Ok(Some(out))
}

/// Runs a training job from its resolved config.
pub fn train(
    cfg: &ResolvedConfig,
    opts: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let device = Device::Cpu;
    let hub_cfg;
    let (cfg, as_named) = match hub_base(cfg)? {
        Some(c) => {
            hub_cfg = c;
            (&hub_cfg, cfg)
        }
        None => (cfg, cfg),
    };
    check_output_dir(&cfg.base, &cfg.output_dir)?;
    let fresh_folder = !cfg.output_dir.exists();
    std::fs::create_dir_all(&cfg.output_dir).map_err(io(&cfg.output_dir))?;
    let config_path = cfg.output_dir.join("config.toml");
    // The run records the base as the user named it (a Hub name stays a Hub name).
    std::fs::write(&config_path, as_named.to_toml()?).map_err(io(&config_path))?;
    let folder_cfg;
    let cfg = match folder_base(cfg)? {
        Some(c) => {
            folder_cfg = c;
            &folder_cfg
        }
        None => cfg,
    };

    // Before anything large is loaded: the peak-memory estimate, and a refusal when the
    // machine cannot hold it (training.ignore_memory_check overrides). A refused run
    // leaves no run folder behind (a single-file base is converted into it first, since
    // its configs come from that conversion).
    if let Err(e) = super::memory::guard(cfg, &device) {
        if fresh_folder {
            let _ = std::fs::remove_dir_all(&cfg.output_dir);
        }
        return Err(e);
    }

    let models = load_models(cfg, &device)?;
    let concepts = load_concepts(cfg, &models, &device, progress)?;
    let ddpm = DdpmScheduler::from_config(&models.scheduler_config)?;
    let schedule = NoiseSchedule {
        prediction_type: ddpm.config().prediction_type,
        ddpm,
    };
    let mut named: Vec<(String, Var)> = models
        .unet_vars
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (format!("unet.{k}"), v.clone()))
        .collect();
    if let Some(te) = &models.te_vars {
        named.extend(
            te.data()
                .lock()
                .expect("varmap lock")
                .iter()
                .map(|(k, v)| (format!("text_encoder.{k}"), v.clone())),
        );
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let optimizer = AdamW::new(named, cfg.adamw)?;
    let style_pairs: Vec<(usize, usize)> = concepts
        .iter()
        .enumerate()
        .flat_map(|(ci, c)| (0..c.style.len()).map(move |si| (ci, si)))
        .collect();
    let aux_samplers = concepts
        .iter()
        .enumerate()
        .map(|(ci, c)| {
            // A run without Aux keeps a one-item sampler so that checkpoints keep their shape.
            let n = c.aux.as_ref().map_or(1, |a| a.len());
            EpochSampler::new(n, cfg.seed.wrapping_add(101 + ci as u64))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut run = Loop {
        cfg,
        device: device.clone(),
        style_sampler: EpochSampler::new(style_pairs.len(), cfg.seed.wrapping_add(7))?,
        style_pairs,
        aux_samplers,
        models,
        concepts,
        schedule,
        optimizer,
        vars,
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        step: 0,
    };

    let log_path = cfg.output_dir.join("train_log.jsonl");
    let ckpt_dir = cfg.output_dir.join("checkpoints");
    if opts.resume {
        let Some((_, latest)) = checkpoint::list(&ckpt_dir).pop() else {
            return Err(Error::msg(format!(
                "--resume: no checkpoint in {}",
                ckpt_dir.display()
            )));
        };
        let loaded = checkpoint::load(&latest, &device)?;
        checkpoint::restore_vars(&run.models.unet_vars, &loaded.unet, "UNet")?;
        match (&run.models.te_vars, &loaded.text_encoder) {
            (Some(vars), Some(t)) => checkpoint::restore_vars(vars, t, "text-encoder")?,
            (None, None) => {}
            _ => {
                return Err(Error::msg(
                    "the checkpoint and the config disagree on training the text encoder",
                ))
            }
        }
        run.optimizer.load_state(&loaded.optimizer)?;
        run.models.refresh()?;
        run.rng = loaded.state.rng.restore();
        run.style_sampler = EpochSampler::from_state(loaded.state.style_sampler)?;
        run.aux_samplers = loaded
            .state
            .aux_samplers
            .into_iter()
            .map(EpochSampler::from_state)
            .collect::<Result<Vec<_>>>()?;
        run.step = loaded.state.step;
        truncate_log(&log_path, run.step)?;
        tracing::info!("resuming from {} (step {})", latest.display(), run.step);
    } else if !checkpoint::list(&ckpt_dir).is_empty() {
        return Err(Error::msg(format!(
            "{} already holds checkpoints: pass --resume to continue that run, or choose another output.dir",
            ckpt_dir.display()
        )));
    } else {
        truncate_log(&log_path, 0)?;
    }

    let end = opts.stop_after.map_or(cfg.steps, |s| s.min(cfg.steps));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let mut last_loss = f64::NAN;
    progress.begin("training", end.saturating_sub(run.step));
    while run.step < end {
        let entry = run.train_step()?;
        last_loss = entry.loss;
        let line = serde_json::to_string(&entry).map_err(|e| Error::msg(e.to_string()))?;
        writeln!(log, "{line}").map_err(io(&log_path))?;
        progress.advance(1);
        progress.step(&crate::progress::StepReport {
            step: entry.step,
            total: end,
            loss: entry.loss,
            lr: entry.lr,
            step_time_s: entry.step_time_s,
            peak_memory_bytes: super::memory::peak_rss_bytes(),
        });
        let step = run.step;
        if cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every) && step < cfg.steps
        {
            run.save_checkpoint()?;
        }
        if cfg.validate_every > 0 && step.is_multiple_of(cfg.validate_every) && step < cfg.steps {
            run.validate()?;
        }
    }
    progress.finish();
    if run.step < cfg.steps {
        run.save_checkpoint()?;
        return Ok(TrainSummary {
            steps: run.step,
            last_loss,
            model_dir: None,
            run_dir: cfg.output_dir.clone(),
        });
    }
    let model_dir = run.save_model()?;
    run.validate()?;
    crate::training::report::loss_curve(&read_log(&log_path), &cfg.output_dir.join("loss.png"))?;
    Ok(TrainSummary {
        steps: run.step,
        last_loss,
        model_dir: Some(model_dir),
        run_dir: cfg.output_dir.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::config::{ConceptConfig, TrainConfig};

    #[test]
    fn gradient_checkpointing_reaches_the_models_that_are_trained() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-sd1");
        for (method, te_trained) in [("styleforge", true), ("dreambooth", false), ("lora", false)] {
            for ckpt in [false, true] {
                let text = format!(
                    "method = \"{method}\"\n[model]\nbase = {:?}\n[training]\ngradient_checkpointing = {ckpt}\n",
                    base.display().to_string()
                );
                let mut cfg = TrainConfig::from_toml(&text, Path::new("t.toml")).unwrap();
                cfg.data.concepts = vec![ConceptConfig {
                    style_dir: "/nonexistent".into(),
                    aux_dir: None,
                    token: None,
                }];
                let cfg = cfg.resolve().unwrap();
                let mut models = load_models(&cfg, &Device::Cpu).unwrap();
                let te = ckpt && te_trained;
                let flags = |m: &Models| {
                    (
                        m.unet.gradient_checkpointing(),
                        m.text_encoder.gradient_checkpointing(),
                    )
                };
                assert_eq!(flags(&models), (ckpt, te), "{method}, checkpointing {ckpt}");
                // Adapters rebuild their models after every update and keep the flags.
                models.refresh().unwrap();
                assert_eq!(flags(&models), (ckpt, te), "{method} after refresh");
                let sd = models.pipeline(&base, &Device::Cpu);
                assert!(
                    !sd.unet.gradient_checkpointing() && !sd.text_encoder.gradient_checkpointing()
                );
            }
        }
    }
}
