//! Fine-tuning, every method on the one loop ([`super::core`]): load the base model
//! ([`super::models`]), prepare the data ([`super::concepts`]: Aux images generated when
//! missing, latents cached), then steps that sample a StyleRef/Aux pair and take the
//! prior-preservation loss, with checkpoints, exact resume, validation grids, the log and
//! the final model.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use styleforge_models::files;
use styleforge_models::single_file::SingleFileOptions;
use styleforge_models::source::{resolve_source, ModelSource, ResolveOptions};
use styleforge_models::weights::{save_safetensors_atomic, varmap_tensors};
use styleforge_schedulers::{DdpmScheduler, SeededNoise};

use super::concepts::{load_concepts, ConceptData};
use super::config::{ResolvedConfig, SaveFormat};
use super::core::{normal, LoopSettings, RunLoop, TrainTask, TrainedWeights};
use super::log::read_log;
use super::models::{load_models, Models};
use super::step::{
    compute_grouped_loss, compute_masked_loss, LossParts, NoiseSchedule, StepBatch, StepModels,
};
use super::stop::{StopReason, StopSignal};
use super::validation::ValidationSet;
use crate::data::{EpochSampler, SamplerState};
use crate::error::{Error, Result};
use crate::image_io::tensor_to_image;
use crate::pipelines::{SamplingOptions, Txt2ImgRequest};
use crate::progress::{NoProgress, Progress};
use crate::run_dir::RunDir;

/// How a run is started.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Continue from the newest checkpoint in the run folder.
    pub resume: bool,
    /// Stop (with a checkpoint) after this many steps even if the config asks for more, as
    /// an interrupted run would; used to test exact resume.
    pub stop_after: Option<usize>,
    /// Where the run computes (see [`crate::device`]).
    pub device: Device,
    /// Raised to stop the run after the step in progress, with a checkpoint (see
    /// [`super::stop`]).
    pub stop: StopSignal,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            resume: false,
            stop_after: None,
            device: Device::Cpu,
            stop: StopSignal::new(),
        }
    }
}

/// What a run produced: the model when it reached its last step, else where it stopped.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Optimizer steps done in total.
    pub steps: usize,
    /// Why the run stopped before its last step (`None`: it finished); its checkpoint of
    /// [`Self::steps`] is where `--resume` continues.
    pub stopped: Option<StopReason>,
    /// Loss of the last step.
    pub last_loss: f64,
    /// The fine-tuned model (when the run reached its last step): the diffusers folder, or
    /// `<run>/model.safetensors` with `save_format = "single-file"`.
    pub model_dir: Option<PathBuf>,
    /// The run folder.
    pub run_dir: PathBuf,
}

/// Refuses a run folder that is the base model's folder or inside it.
fn check_output_dir(base: &Path, out: &Path) -> Result<()> {
    let base = base.canonicalize().map_err(files::at(base))?;
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
    let mut resolved = probe.canonicalize().map_err(files::at(&probe))?;
    for part in tail.iter().rev() {
        resolved.push(part);
    }
    if resolved.starts_with(&base) {
        return Err(Error::RunFolder {
            path: out.to_path_buf(),
            message: format!(
                "the run folder is inside the base model {}; choose another output.dir (the base model is never written to)",
                base.display()
            ),
        });
    }
    Ok(())
}

/// Settings a resumed run may change: the length of the run, where it computes, and what
/// it writes and how often; every other setting defines the run its checkpoints belong to.
const RESUMABLE_CHANGES: [&str; 13] = [
    "steps",
    "device",
    "ignore_memory_check",
    "output_dir",
    "checkpoint_every",
    "keep_checkpoints",
    "validate_every",
    "validation_prompts",
    "validation_steps",
    "validation_loss_every",
    "save_format",
    "save_ema",
    "save_raw",
];

/// The settings of a config as `section.key` → value, for comparison.
fn flat_settings(text: &str, path: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let value: toml::Table = toml::from_str(text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    fn walk(prefix: &str, v: &toml::Value, out: &mut std::collections::BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk("", &toml::Value::Table(value), &mut out);
    Ok(out)
}

/// A fingerprint of a base model (a folder or a single file): every weights and config
/// file's relative path and size, and a hash of its first and last MiB (a safetensors
/// header and the start and end of its data), so a changed model is told apart without
/// reading gigabytes.
fn base_fingerprint(base: &Path) -> Result<serde_json::Value> {
    let mut found = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p).map_err(files::at(&p))?;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).map_err(files::at(&p))? {
                stack.push(e.map_err(files::at(&p))?.path());
            }
        } else if p
            .extension()
            .is_some_and(|e| e == "safetensors" || e == "json" || e == "txt")
        {
            found.push((p, meta.len()));
        }
    }
    found.sort();
    let mut entries = serde_json::Map::new();
    for (p, len) in found {
        use std::io::{Read, Seek, SeekFrom};
        const SAMPLE: u64 = 1 << 20;
        let mut f = std::fs::File::open(&p).map_err(files::at(&p))?;
        let mut bytes = Vec::new();
        (&mut f)
            .take(SAMPLE)
            .read_to_end(&mut bytes)
            .map_err(files::at(&p))?;
        if len > 2 * SAMPLE {
            f.seek(SeekFrom::End(-(SAMPLE as i64)))
                .map_err(files::at(&p))?;
            f.read_to_end(&mut bytes).map_err(files::at(&p))?;
        } else if len > SAMPLE {
            f.read_to_end(&mut bytes).map_err(files::at(&p))?;
        }
        // FNV-1a: stable across builds and platforms.
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        let name = p
            .strip_prefix(base)
            .unwrap_or(&p)
            .to_string_lossy()
            .into_owned();
        entries.insert(name, serde_json::json!(format!("{len}:{hash:016x}")));
    }
    Ok(serde_json::Value::Object(entries))
}

/// `--resume`: refuses a config or a base model that differ from those the run folder's
/// checkpoints were made with (its `config.toml` and `base.json`), before anything in the
/// folder is changed.
fn check_resume(cfg: &ResolvedConfig, run: &RunDir, base: &Path) -> Result<()> {
    let stored = run.config();
    if let Ok(text) = std::fs::read_to_string(&stored) {
        let (was, now) = (
            flat_settings(&text, &stored)?,
            flat_settings(&cfg.to_toml()?, &stored)?,
        );
        let keys: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
        let changed: Vec<String> = keys
            .into_iter()
            .filter(|k| {
                !RESUMABLE_CHANGES.contains(&k.as_str())
                    && k.as_str() != "base"
                    && was.get(*k) != now.get(*k)
            })
            .map(|k| {
                let show = |v: Option<&String>| v.map_or("unset".to_string(), |v| v.clone());
                format!(
                    "{k} (the run: {}, now: {})",
                    show(was.get(k)),
                    show(now.get(k))
                )
            })
            .collect();
        if !changed.is_empty() {
            return Err(Error::RunFolder {
                path: stored,
                message: format!(
                    "--resume: the config differs from the one the run's checkpoints were made \
                     with in {}; resume with that config (only the steps, the device and the \
                     output settings may change), or start a new run in another folder",
                    changed.join(", ")
                ),
            });
        }
    }
    let recorded = run.base_fingerprint();
    if let Ok(text) = std::fs::read_to_string(&recorded) {
        let was: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: recorded.clone(),
            message: e.to_string(),
        })?;
        let now = base_fingerprint(base)?;
        if was != now {
            let differ: Vec<String> = match (was.as_object(), now.as_object()) {
                (Some(a), Some(b)) => a
                    .keys()
                    .chain(b.keys())
                    .filter(|k| a.get(*k) != b.get(*k))
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                _ => Vec::new(),
            };
            return Err(Error::RunFolder {
                path: run.root().to_path_buf(),
                message: format!(
                    "--resume: the base model {} is not the one the run started from ({} \
                     changed: {}); resume with that base model, or start a new run in another folder",
                    base.display(),
                    recorded.display(),
                    differ.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// One step's batches: StyleRef and Aux rows in one batch, or (aspect-ratio buckets of
/// different latent sizes) one batch per latent size.
enum Drawn {
    Joint(StepBatch),
    Groups(Vec<RowGroup>),
}

/// Rows of one latent size, all StyleRef or all Aux, with the StyleRef rows' loss mask
/// `[rows, 1, h, w]` when masks are on.
struct RowGroup {
    batch: StepBatch,
    prior: bool,
    mask: Option<Tensor>,
}

/// What [`FineTune::draw_batch`] draws: the batches and, for a joint batch, the StyleRef
/// rows' loss mask `[rows, 1, h, w]` when masks are on.
struct DrawnStep {
    batches: Drawn,
    mask: Option<Tensor>,
}

/// A batch of `instance_rows` StyleRef rows then the rest, Aux rows.
fn step_batch(
    latents: Tensor,
    noise: super::objective::BatchNoise,
    timesteps: Vec<f64>,
    ids: Vec<Vec<u32>>,
    instance_rows: usize,
    (instance_weights, prior_weights): (Option<Vec<f64>>, Option<Vec<f64>>),
) -> Result<StepBatch> {
    let (rows, len) = (ids.len(), ids.first().map_or(0, |i| i.len()));
    let flat: Vec<u32> = ids.into_iter().flatten().collect();
    let input_ids = Tensor::from_vec(flat, (rows, len), latents.device())?;
    Ok(StepBatch {
        latents,
        noise: noise.noise,
        input_noise: noise.input_noise,
        timesteps,
        input_ids,
        instance_rows,
        instance_weights,
        prior_weights,
    })
}

/// One drawn row: its latent, prompt ids and (StyleRef rows with masks on) loss mask.
struct Row {
    latent: Tensor,
    ids: Vec<u32>,
    mask: Option<Tensor>,
}

/// Stacks the masks of `rows` (`None` when masks are off, and for Aux rows).
fn stacked_masks(rows: &[&Row]) -> Result<Option<Tensor>> {
    let masks: Vec<Tensor> = rows.iter().filter_map(|r| r.mask.clone()).collect();
    if masks.is_empty() {
        return Ok(None);
    }
    Ok(Some(Tensor::cat(&masks, 0)?))
}

/// Indices of `rows` grouped by latent size, in order of first appearance.
fn size_groups(rows: &[Row]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|g| rows[g[0]].latent.dims() == r.latent.dims())
        {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

/// A fine-tuning method as a [`TrainTask`]: the models, the concepts' data and the samplers
/// that pick each step's StyleRef and Aux images.
struct FineTune<'a> {
    cfg: &'a ResolvedConfig,
    run: RunDir,
    device: Device,
    models: Models,
    concepts: Vec<ConceptData>,
    schedule: NoiseSchedule,
    /// Over pooled (concept, StyleRef image) pairs.
    style_sampler: EpochSampler,
    style_pairs: Vec<(usize, usize)>,
    aux_samplers: Vec<EpochSampler>,
    validation: Option<ValidationSet>,
}

impl FineTune<'_> {
    /// Draws one micro-batch of `batch_size` (StyleRef, Aux) pairs. For each pair in turn:
    /// concept and image from the samplers, flips, the caption, the posterior samples. Then
    /// noise and one timestep per row, StyleRef rows first. When all rows have the same
    /// latent size they form one batch; else (aspect-ratio buckets) the StyleRef rows and
    /// the Aux rows each form one batch per size (StyleRef batches first, sizes in order of
    /// first appearance), their noise drawn in that order before all the timesteps.
    fn draw_batch(&mut self, rng: &mut ChaCha8Rng) -> Result<DrawnStep> {
        let with_prior = self.cfg.prior_loss_weight > 0.0;
        let mut style_rows = Vec::with_capacity(self.cfg.batch_size);
        let mut aux_rows = Vec::with_capacity(self.cfg.batch_size);
        for _ in 0..self.cfg.batch_size {
            let (ci, si) = self.style_pairs[self.style_sampler.next_index()];
            let ai = self.aux_samplers[ci].next_index();
            let c = &self.concepts[ci];
            let flip_style = self.cfg.flip && rng.gen_bool(0.5);
            let flip_aux = self.cfg.flip && rng.gen_bool(0.5);
            let style_ids = if self.cfg.captions.is_active() {
                let instance = &self.cfg.concepts[ci].instance_prompt;
                let prompt = self
                    .cfg
                    .captions
                    .prompt(&c.style_entries[si], instance, rng);
                self.models.tokenizer.encode_padded(&prompt).ids
            } else {
                c.style_ids[si].clone()
            };
            let eps = normal(rng, &c.style.latent_shape_of(si)?, &self.device)?;
            style_rows.push(Row {
                latent: c.style.sample(si, flip_style, &eps)?,
                ids: style_ids,
                mask: c.style.mask(si, flip_style)?,
            });
            if let (true, Some(aux)) = (with_prior, &c.aux) {
                let eps = normal(rng, &aux.latent_shape_of(ai)?, &self.device)?;
                aux_rows.push(Row {
                    latent: aux.sample(ai, flip_aux, &eps)?,
                    ids: c.aux_ids[ai].clone(),
                    mask: None,
                });
            }
        }
        let n_style = style_rows.len();
        let objective = &self.cfg.objective;
        let t_max = self.schedule.num_train_timesteps();
        let device = &self.device;
        let size = style_rows[0].latent.dims().to_vec();
        if aux_rows
            .iter()
            .chain(&style_rows)
            .all(|r| r.latent.dims() == size)
        {
            let rows: Vec<Row> = style_rows.into_iter().chain(aux_rows).collect();
            let latents: Vec<Tensor> = rows.iter().map(|r| r.latent.clone()).collect();
            let latents = Tensor::cat(&latents, 0)?;
            let noise = objective.noise(rng, latents.dims(), device)?;
            let timesteps = objective.timesteps(rng, latents.dim(0)?, t_max);
            let weights = self.snr_weights(&timesteps, n_style);
            let mask = stacked_masks(&rows[..n_style].iter().collect::<Vec<_>>())?;
            let ids = rows.into_iter().map(|r| r.ids).collect();
            let batch = step_batch(latents, noise, timesteps, ids, n_style, weights)?;
            return Ok(DrawnStep {
                batches: Drawn::Joint(batch),
                mask,
            });
        }
        // One batch per latent size of each half, StyleRef sizes first.
        let groups: Vec<(bool, Vec<usize>)> = [(false, &style_rows), (true, &aux_rows)]
            .into_iter()
            .flat_map(|(prior, rows)| size_groups(rows).into_iter().map(move |g| (prior, g)))
            .collect();
        let half = |prior: bool| if prior { &aux_rows } else { &style_rows };
        let mut noises = Vec::with_capacity(groups.len());
        for (prior, g) in &groups {
            let mut dims = half(*prior)[g[0]].latent.dims().to_vec();
            dims[0] = g.len();
            noises.push(objective.noise(rng, &dims, device)?);
        }
        let timesteps = objective.timesteps(rng, n_style + aux_rows.len(), t_max);
        let (style_w, prior_w) = self.snr_weights(&timesteps, n_style);
        let mut out = Vec::with_capacity(groups.len());
        for ((prior, g), noise) in groups.into_iter().zip(noises) {
            let (offset, weights) = if prior {
                (n_style, &prior_w)
            } else {
                (0, &style_w)
            };
            let members: Vec<&Row> = g.iter().map(|&i| &half(prior)[i]).collect();
            let latents: Vec<Tensor> = members.iter().map(|r| r.latent.clone()).collect();
            let weights = weights.as_ref().map(|w| g.iter().map(|&i| w[i]).collect());
            out.push(RowGroup {
                mask: stacked_masks(&members)?,
                batch: step_batch(
                    Tensor::cat(&latents, 0)?,
                    noise,
                    g.iter().map(|&i| timesteps[offset + i]).collect(),
                    members.iter().map(|r| r.ids.clone()).collect(),
                    g.len(),
                    (weights, None),
                )?,
                prior,
            });
        }
        Ok(DrawnStep {
            batches: Drawn::Groups(out),
            mask: None,
        })
    }

    /// The min-SNR weights of a step's rows (`n_style` StyleRef rows first): the StyleRef
    /// rows', and the Aux rows' with `snr_weight_prior`; `None` when min-SNR is off.
    fn snr_weights(
        &self,
        timesteps: &[f64],
        n_style: usize,
    ) -> (Option<Vec<f64>>, Option<Vec<f64>>) {
        let objective = &self.cfg.objective;
        let weights = objective.snr_weights(
            self.schedule.ddpm.alphas_cumprod(),
            self.schedule.prediction_type,
            timesteps,
        );
        match weights {
            Some(w) => {
                let prior = objective.snr_weight_prior.then(|| w[n_style..].to_vec());
                (Some(w[..n_style].to_vec()), prior.filter(|p| !p.is_empty()))
            }
            None => (None, None),
        }
    }

    /// Samples every validation prompt with and without the token at a fixed seed, and
    /// writes a labelled grid for `step`.
    fn validate(&self, step: usize) -> Result<PathBuf> {
        tracing::info!("sampling the validation grid of step {step}");
        let sd = self.models.pipeline(&self.cfg.base, &self.device);
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
                images.push(tensor_to_image(&img.get(0)?)?);
            }
            rows.push((prompt.clone(), images));
        }
        let path = self.run.validation_grid(step);
        super::report::validation_grid(&rows, step, &path)?;
        tracing::info!("wrote the validation grid {}", path.display());
        Ok(path)
    }

    /// Writes the fine-tuned model: `<run>/model`, a diffusers folder with the trained UNet
    /// (and text encoder) and the rest copied from the base, or the adapter's files; built
    /// aside and renamed. With `save_format` "single-file" or "both", also
    /// `<run>/model.safetensors`. A write that fails returns [`Error::OutputWrite`].
    fn save_model(&self) -> Result<PathBuf> {
        let out = self.run.model();
        tracing::info!("writing the model to {}", out.display());
        self.write_model(&out)?;
        if self.models.adapter.is_some() || self.cfg.save_format == SaveFormat::Diffusers {
            tracing::info!("wrote the model {}", out.display());
            return Ok(out);
        }
        let file = self.run.model_single_file();
        styleforge_models::single_file::folder_to_single_file(&out, &file)
            .map_err(|e| super::checkpoint::write_failed("model", &file, &self.run, e.into()))?;
        if self.cfg.save_format == SaveFormat::SingleFile {
            files::remove_dir(&out)?;
            tracing::info!("wrote the model {}", file.display());
            return Ok(file);
        }
        tracing::info!("wrote the model {} and {}", out.display(), file.display());
        Ok(out)
    }

    /// Writes the current weights as a diffusers folder (or the adapter's files) at `out`;
    /// a write that fails returns [`Error::OutputWrite`].
    fn write_model(&self, out: &Path) -> Result<()> {
        self.write_model_files(out)
            .map_err(|e| super::checkpoint::write_failed("model", out, &self.run, e))
    }

    fn write_model_files(&self, out: &Path) -> Result<()> {
        let base = &self.cfg.base;
        files::write_dir_with(out, |tmp| -> Result<()> {
            if let Some((weights, adapter)) = &self.models.adapter {
                return adapter.save(weights, tmp);
            }
            files::copy_file(
                &base.join("model_index.json"),
                &tmp.join("model_index.json"),
            )?;
            for part in ["scheduler", "tokenizer", "vae"] {
                // A folder converted from a single file may have no tokenizer.
                if part != "tokenizer" || base.join(part).is_dir() {
                    files::copy_dir(&base.join(part), &tmp.join(part))?;
                }
            }
            files::copy_file(
                &base.join("unet/config.json"),
                &tmp.join("unet/config.json"),
            )?;
            save_safetensors_atomic(
                &varmap_tensors(&self.models.unet_vars),
                &tmp.join("unet/diffusion_pytorch_model.safetensors"),
            )?;
            match &self.models.te_vars {
                Some(vars) => {
                    files::copy_file(
                        &base.join("text_encoder/config.json"),
                        &tmp.join("text_encoder/config.json"),
                    )?;
                    save_safetensors_atomic(
                        &varmap_tensors(vars),
                        &tmp.join("text_encoder/model.safetensors"),
                    )?;
                }
                None => files::copy_dir(&base.join("text_encoder"), &tmp.join("text_encoder"))?,
            }
            Ok(())
        })
    }
}

impl TrainTask for FineTune<'_> {
    fn loss(&mut self, _steps_done: usize, rng: &mut ChaCha8Rng) -> Result<LossParts> {
        let step = self.draw_batch(rng)?;
        let models = StepModels {
            unet: &self.models.unet,
            text_encoder: &self.models.text_encoder,
            train_text_encoder: self.models.trains_text_encoder(self.cfg),
        };
        let (w, mask) = (self.cfg.prior_loss_weight, step.mask.as_ref());
        match &step.batches {
            Drawn::Joint(batch) => compute_masked_loss(&models, &self.schedule, batch, w, mask),
            Drawn::Groups(groups) => {
                let (style, aux): (Vec<&RowGroup>, Vec<&RowGroup>) =
                    groups.iter().partition(|g| !g.prior);
                let style: Vec<_> = style.iter().map(|g| (&g.batch, g.mask.as_ref())).collect();
                let aux: Vec<_> = aux.iter().map(|g| &g.batch).collect();
                compute_grouped_loss(&models, &self.schedule, &style, &aux, w)
            }
        }
    }

    fn after_update(&mut self) -> Result<()> {
        self.models.refresh()
    }

    fn weights(&self) -> TrainedWeights<'_> {
        TrainedWeights {
            unet: &self.models.unet_vars,
            text_encoder: self.models.te_vars.as_ref(),
        }
    }

    fn samplers(&self) -> (SamplerState, Vec<SamplerState>) {
        (
            self.style_sampler.state(),
            self.aux_samplers.iter().map(|s| s.state()).collect(),
        )
    }

    fn restore_samplers(&mut self, main: SamplerState, others: Vec<SamplerState>) -> Result<()> {
        self.style_sampler = EpochSampler::from_state(main)?;
        self.aux_samplers = others
            .into_iter()
            .map(EpochSampler::from_state)
            .collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    fn validation_loss(&mut self) -> Result<Option<f64>> {
        let Some(set) = &self.validation else {
            return Ok(None);
        };
        let models = StepModels {
            unet: &self.models.unet,
            text_encoder: &self.models.text_encoder,
            train_text_encoder: false,
        };
        set.loss(&models, &self.schedule).map(Some)
    }

    fn pictures(&mut self, step: usize) -> Result<()> {
        self.validate(step).map(|_| ())
    }
}

/// The trained variables of `models`, named `unet.…` / `text_encoder.…`, sorted by name.
fn named_vars(models: &Models) -> Vec<(String, Var)> {
    let mut named: Vec<(String, Var)> = models
        .unet_vars
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (format!("{}{k}", super::checkpoint::UNET_PREFIX), v.clone()))
        .collect();
    if let Some(te) = &models.te_vars {
        named.extend(te.data().lock().expect("varmap lock").iter().map(|(k, v)| {
            (
                format!("{}{k}", super::checkpoint::TEXT_ENCODER_PREFIX),
                v.clone(),
            )
        }));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Records the run's config (the base as the user named it: a Hub name stays a Hub name)
/// and returns the config with the base as a local diffusers folder: `fetched` itself, or
/// a single file converted into `<run>/base-model/`.
fn local_base(
    cfg: &ResolvedConfig,
    run: &RunDir,
    fetched: &Path,
    mut resolve: ResolveOptions,
) -> Result<ResolvedConfig> {
    files::write(&run.config(), cfg.to_toml()?)?;
    resolve.convert_into = Some(run.base_model());
    resolve.single_file = SingleFileOptions {
        config: cfg.base_config.clone(),
        prediction_type: None,
    };
    let local = resolve_source(ModelSource::parse(fetched)?, &resolve)?;
    let mut resolved = cfg.clone();
    resolved.base = local.path.clone();
    if local.is_converted() {
        // The converted folder holds the file's weights under the standard names.
        resolved.variant = None;
    }
    Ok(resolved)
}

/// Everything before the first step: the memory guard (before anything large is loaded;
/// training.ignore_memory_check overrides), the models, the data, the validation set, and
/// the loop started fresh or resumed.
fn start<'a>(
    cfg: &'a ResolvedConfig,
    opts: &RunOptions,
    run: &RunDir,
    progress: &mut dyn Progress,
) -> Result<RunLoop<FineTune<'a>>> {
    let device = opts.device.clone();
    super::memory::guard(cfg, &device)?;
    let models = load_models(cfg, &device)?;
    let concepts = load_concepts(cfg, &models, &device, progress)?;
    let ddpm = DdpmScheduler::from_config(&models.scheduler_config)?;
    cfg.objective
        .validate(styleforge_schedulers::Scheduler::num_train_timesteps(&ddpm))?;
    let schedule = NoiseSchedule {
        prediction_type: ddpm.config().prediction_type,
        ddpm,
    };
    let held_out = concepts
        .first()
        .map(|c| c.held_out.clone())
        .unwrap_or_default();
    let validation = ValidationSet::load(cfg, &models, &schedule, &held_out, &device, progress)?;
    let named = named_vars(&models);
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
    let task = FineTune {
        cfg,
        run: run.clone(),
        device: device.clone(),
        style_sampler: EpochSampler::new(style_pairs.len(), cfg.seed.wrapping_add(7))?,
        style_pairs,
        aux_samplers,
        models,
        concepts,
        schedule,
        validation,
    };
    let settings = LoopSettings {
        total_steps: cfg.steps,
        gradient_accumulation: cfg.gradient_accumulation,
        max_grad_norm: cfg.max_grad_norm,
        lr: cfg.lr_plan(),
        checkpoint_every: cfg.checkpoint_every,
        keep_checkpoints: cfg.keep_checkpoints,
        pictures_every: cfg.validate_every,
        validation_loss_every: cfg.validation_loss_every,
        seed: cfg.seed,
        ema: cfg.ema,
        label: "training",
        loss_scaling: cfg.precision.scales_loss().then_some(cfg.loss_scale),
        stop: opts.stop.clone(),
    };
    let mut run_loop = RunLoop::new(task, named, cfg.adamw, settings, run.clone(), &device)?;
    run_loop.start(opts.resume)?;
    Ok(run_loop)
}

/// Runs a training job from its resolved config.
///
/// A run refused before its first step (a bad base, the memory guard, unusable images, a
/// `--resume` without checkpoints) leaves no run folder behind when it created one.
pub fn train(
    cfg: &ResolvedConfig,
    opts: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let run = RunDir::new(&cfg.output_dir);
    // The base as a local path: a Hub name fetched into the Hugging Face cache; a single
    // file is converted once into <run>/base-model/ (reused by later runs and --resume),
    // after the run folder has been checked. The base itself is only ever read.
    let source = ModelSource::parse(&cfg.base)?;
    let resolve = ResolveOptions::diffusers(cfg.variant.clone())
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fetched = resolve_source(source, &resolve)?;
    check_output_dir(&fetched.path, &cfg.output_dir)?;
    let fresh_folder = !run.root().exists();
    let refused = |e: Error| {
        if fresh_folder {
            let _ = std::fs::remove_dir_all(run.root());
        }
        e
    };
    // One live run per folder: a second `train` into it is refused before it writes.
    let _lock = run.lock().map_err(|e| match e {
        Error::RunFolder { .. } => e,
        other => refused(other),
    })?;
    if opts.resume {
        check_resume(cfg, &run, &fetched.path)?;
    }
    let fingerprint = run.base_fingerprint();
    if !fingerprint.exists() {
        let text = serde_json::to_string_pretty(&base_fingerprint(&fetched.path).map_err(refused)?)
            .map_err(|source| Error::Json {
                what: "the base model's fingerprint".into(),
                source,
            })
            .map_err(refused)?;
        files::write(&fingerprint, text).map_err(|e| refused(e.into()))?;
    }
    let resolved = local_base(cfg, &run, &fetched.path, resolve).map_err(refused)?;
    let cfg = &resolved;
    let mut run_loop = start(cfg, opts, &run, progress).map_err(refused)?;
    let end = opts.stop_after.map_or(cfg.steps, |s| s.min(cfg.steps));
    let sitting = run_loop.run(end, None, progress)?;
    let steps = run_loop.step();
    if steps < cfg.steps {
        return Ok(TrainSummary {
            steps,
            stopped: sitting.stopped,
            last_loss: sitting.last_loss,
            model_dir: None,
            run_dir: cfg.output_dir.clone(),
        });
    }
    if cfg.save_ema {
        if cfg.save_raw {
            run_loop.task().write_model(&run.model_raw())?;
        }
        run_loop.apply_ema()?;
    }
    let model_dir = run_loop.task().save_model()?;
    run_loop.task().validate(steps)?;
    super::report::loss_curve(&read_log(&run.log()), &run.loss_curve())?;
    Ok(TrainSummary {
        steps,
        stopped: None,
        last_loss: sitting.last_loss,
        model_dir: Some(model_dir),
        run_dir: cfg.output_dir.clone(),
    })
}
