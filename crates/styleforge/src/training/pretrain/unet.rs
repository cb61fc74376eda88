//! Stage 2: a fresh UNet and text encoder trained jointly on the one training loop, the
//! VAE of stage 1 frozen; sample grids and the complete diffusers folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use styleforge_models::clip_text::{ClipTextConfig, ClipTextModel};
use styleforge_models::config::read_config;
use styleforge_models::files;
use styleforge_models::folder::{load_vae, LoadOptions};
use styleforge_models::init::PyTorchInit;
use styleforge_models::tokenizer::ClipTokenizer;
use styleforge_models::unet::{UNet2DConditionModel, UNetConfig};
use styleforge_models::vae::AutoencoderKL;
use styleforge_models::weights::{component_weight_files, save_safetensors_atomic, varmap_tensors};
use styleforge_schedulers::{DdpmScheduler, SchedulerConfig, SeededNoise};

use super::data::DataSet;
use super::{count_params, named_vars, read_json, write_json, PretrainConfig, Style};
use crate::data::{EpochSampler, SamplerState};
use crate::error::{Error, Result};
use crate::image_io::tensor_to_image;
use crate::pipelines::{SamplingOptions, StableDiffusion, Txt2ImgRequest};
use crate::progress::NoProgress;
use crate::report::ImageGrid;
use crate::run_dir::RunDir;
use crate::toy::{base_model_scores, BaseScores, BaseScoring, Probes};
use crate::training::core::{normal, TrainTask, TrainedWeights};
use crate::training::step::{compute_loss, LossParts, NoiseSchedule, StepBatch, StepModels};

/// The fixed contents of the sample grids (one column per sampled style).
const SAMPLE_CONTENTS: [&str; 4] = [
    "a red house on grass by day",
    "a blue car on snow at night",
    "a green tree and a yellow sun on sand by day",
    "a purple person and an orange cat on grass at sunset",
];

/// Stage 2 as a [`TrainTask`]: fresh UNet and text encoder trained jointly on captioned
/// pictures with caption dropout, the VAE frozen.
pub(super) struct UnetTask<'a> {
    cfg: &'a PretrainConfig,
    run: RunDir,
    tokenizer_dir: PathBuf,
    device: Device,
    tokenizer: ClipTokenizer,
    unet: UNet2DConditionModel,
    text_encoder: ClipTextModel,
    vae: AutoencoderKL,
    scheduler_config: SchedulerConfig,
    schedule: NoiseSchedule,
    unet_vars: VarMap,
    te_vars: VarMap,
    data: DataSet,
    sampler: EpochSampler,
    probes: Option<Probes>,
}

impl<'a> UnetTask<'a> {
    pub(super) fn new(
        cfg: &'a PretrainConfig,
        run: &RunDir,
        tokenizer_dir: &Path,
        device: &Device,
    ) -> Result<Self> {
        let cdir = &cfg.model.config;
        let unet_path = cdir.join("unet/config.json");
        let te_path = cdir.join("text_encoder/config.json");
        let unet_cfg: UNetConfig = read_config(&unet_path)?;
        let te_cfg: ClipTextConfig = read_config(&te_path)?;
        let vae = load_vae(
            &run.vae(),
            &LoadOptions {
                device: device.clone(),
                ..LoadOptions::default()
            },
        )?
        .model;
        if unet_cfg.context_dim() != te_cfg.hidden_size {
            return Err(Error::Config {
                path: unet_path,
                message: format!(
                    "cross_attention_dim {} differs from the text encoder's hidden_size {}",
                    unet_cfg.context_dim(),
                    te_cfg.hidden_size
                ),
            });
        }
        if unet_cfg.in_channels != vae.config().latent_channels {
            return Err(Error::Config {
                path: unet_path,
                message: format!(
                    "in_channels {} differs from the VAE's latent_channels {}",
                    unet_cfg.in_channels,
                    vae.config().latent_channels
                ),
            });
        }
        let tokenizer = ClipTokenizer::standard()?;
        if te_cfg.vocab_size < tokenizer.vocab_size() {
            tracing::warn!(
                "text encoder vocab_size {} is below the tokenizer's {}: only prompts with small token ids work",
                te_cfg.vocab_size,
                tokenizer.vocab_size()
            );
        }
        let unet_vars = VarMap::new();
        let te_vars = VarMap::new();
        let unet = UNet2DConditionModel::new(
            &unet_cfg,
            PyTorchInit::var_builder(&unet_vars, cfg.seed.wrapping_add(1), DType::F32, device),
        )?;
        let text_encoder = ClipTextModel::new(
            &te_cfg,
            PyTorchInit::var_builder(&te_vars, cfg.seed.wrapping_add(2), DType::F32, device),
        )?;
        if let Some(init) = &cfg.model.init {
            load_into(
                &unet_vars,
                &component_weight_files(&init.join("unet"), None)?,
            )?;
            let te_files = component_weight_files(&init.join("text_encoder"), None)?;
            load_into(&te_vars, &te_files)?;
            tracing::info!("UNet and text encoder start from {}", init.display());
        }
        let scheduler_config = SchedulerConfig::from_model_dir(cdir)?;
        let ddpm = DdpmScheduler::from_config(&scheduler_config)?;
        let schedule = NoiseSchedule {
            prediction_type: ddpm.config().prediction_type,
            ddpm,
        };
        cfg.objective.validate(schedule.num_train_timesteps())?;
        let data = DataSet::open(cfg)?;
        let sampler = EpochSampler::new(data.sampler_len(), cfg.seed.wrapping_add(7))?;
        let probes = match &cfg.output.probes {
            Some(dir) => Some(Probes::load(dir, device)?),
            None => None,
        };
        Ok(Self {
            cfg,
            run: run.clone(),
            tokenizer_dir: tokenizer_dir.to_path_buf(),
            device: device.clone(),
            tokenizer,
            unet,
            text_encoder,
            vae,
            scheduler_config,
            schedule,
            unet_vars,
            te_vars,
            data,
            sampler,
            probes,
        })
    }

    /// Trainable parameters: UNet, text encoder.
    pub(super) fn parameters(&self) -> (usize, usize) {
        (count_params(&self.unet_vars), count_params(&self.te_vars))
    }

    /// The trained variables in the optimizer's order: the UNet's, then the text encoder's,
    /// each sorted by name.
    pub(super) fn named_vars(&self) -> Vec<(String, Var)> {
        let mut named = named_vars(&self.unet_vars, "unet.");
        named.extend(named_vars(&self.te_vars, "text_encoder."));
        named
    }

    /// Writes `<out>/model`: a complete diffusers folder, built aside and renamed.
    pub(super) fn save_model(&self) -> Result<PathBuf> {
        let out = self.run.model();
        let f16 = self.cfg.output.f16;
        files::write_dir_with(&out, |tmp| -> Result<()> {
            let cdir = &self.cfg.model.config;
            let mut index = read_json(&cdir.join("model_index.json"))?;
            index["tokenizer"] = serde_json::json!(["transformers", "CLIPTokenizer"]);
            write_json(&tmp.join("model_index.json"), &index)?;
            files::copy_dir(&cdir.join("scheduler"), &tmp.join("scheduler"))?;
            files::copy_dir(&self.tokenizer_dir, &tmp.join("tokenizer"))?;
            write_json(
                &tmp.join("unet/config.json"),
                &read_json(&cdir.join("unet/config.json"))?,
            )?;
            save_safetensors_atomic(
                &tensors_for_saving(&self.unet_vars, f16)?,
                &tmp.join("unet/diffusion_pytorch_model.safetensors"),
            )?;
            write_json(
                &tmp.join("text_encoder/config.json"),
                &read_json(&cdir.join("text_encoder/config.json"))?,
            )?;
            save_safetensors_atomic(
                &tensors_for_saving(&self.te_vars, f16)?,
                &tmp.join("text_encoder/model.safetensors"),
            )?;
            let vae_dir = self.run.vae();
            write_json(
                &tmp.join("vae/config.json"),
                &read_json(&vae_dir.join("config.json"))?,
            )?;
            let mut vae_tensors = candle_core::safetensors::load(
                vae_dir.join("diffusion_pytorch_model.safetensors"),
                &Device::Cpu,
            )?;
            if f16 {
                for t in vae_tensors.values_mut() {
                    *t = t.to_dtype(DType::F16)?;
                }
            }
            save_safetensors_atomic(
                &vae_tensors,
                &tmp.join("vae/diffusion_pytorch_model.safetensors"),
            )?;
            Ok(())
        })?;
        Ok(out)
    }

    /// The model being trained as a pipeline.
    fn pipeline(&self) -> StableDiffusion {
        StableDiffusion::from_parts(
            self.tokenizer.clone(),
            self.text_encoder.clone(),
            self.unet.clone(),
            self.vae.clone(),
            self.scheduler_config.clone(),
            self.cfg.output.dir.clone(),
            self.device.clone(),
        )
    }

    /// With `output.probes`: the probes' scores of the model's samples at `step`, appended
    /// to `probe_scores.jsonl` and logged.
    pub(super) fn probe_scores(&self, step: usize) -> Result<Option<BaseScores>> {
        let Some(probes) = &self.probes else {
            return Ok(None);
        };
        let scoring = BaseScoring {
            styles: self.cfg.data.styles.clone(),
            ..BaseScoring::default()
        };
        let scores = base_model_scores(&self.pipeline(), probes, &scoring)?;
        let line = serde_json::json!({
            "step": step,
            "images": scores.images,
            "style_accuracy": scores.style_accuracy,
            "object_recall": scores.content.object_recall,
            "colour_accuracy": scores.content.colour_accuracy,
            "pair_accuracy": scores.content.pair_accuracy,
        });
        files::append_line(
            &self.run.root().join("probe_scores.jsonl"),
            &line.to_string(),
        )?;
        tracing::info!(
            "step {step}: probes see style {:.3}, objects {:.3}, colours {:.3} ({} samples)",
            scores.style_accuracy,
            scores.content.object_recall,
            scores.content.colour_accuracy,
            scores.images
        );
        Ok(Some(scores))
    }

    /// A grid of samples: one row per fixed content, one column per data style.
    pub(super) fn sample_grid(&self, step: usize) -> Result<PathBuf> {
        let sd = self.pipeline();
        let styles = if self.cfg.data.styles.is_empty() {
            vec![Style::Plain]
        } else {
            self.cfg.data.styles.clone()
        };
        let size = self.cfg.data.size as usize;
        let mut grid = ImageGrid::new(format!("pretraining samples at step {step}"))
            .columns(styles.iter().map(|s| s.name().to_string()));
        for content in SAMPLE_CONTENTS {
            let mut row = Vec::with_capacity(styles.len());
            for style in &styles {
                let req = Txt2ImgRequest {
                    sampling: SamplingOptions {
                        prompt: format!("{content}, {}", style.phrase()),
                        steps: self.cfg.output.sample_steps,
                        guidance_scale: self.cfg.output.sample_guidance,
                        eta: self.cfg.output.sample_eta,
                        scheduler: crate::pipelines::SchedulerChoice {
                            name: Some("ddim".into()),
                            karras: false,
                        },
                        ..Default::default()
                    },
                    width: size,
                    height: size,
                    latents: None,
                };
                let img =
                    sd.txt2img(&req, &mut SeededNoise::new(self.cfg.seed), &mut NoProgress)?;
                row.push(tensor_to_image(&img.get(0)?)?);
            }
            grid = grid.row(content.to_string(), row);
        }
        let path = self.run.sample_grid(step);
        grid.save(&path)?;
        Ok(path)
    }
}

impl TrainTask for UnetTask<'_> {
    /// A batch, caption dropout, posterior samples, noise and timesteps (drawn in that
    /// order), and the prediction loss.
    fn loss(&mut self, steps_done: usize, rng: &mut ChaCha8Rng) -> Result<LossParts> {
        let b = self.cfg.unet.batch;
        let (images, captions) = self
            .data
            .batch(steps_done, b, &mut self.sampler, &self.device)?;
        let mut ids = Vec::with_capacity(b * 77);
        let mut len = 0;
        for c in &captions {
            let drop = rng.gen::<f64>() < self.cfg.unet.caption_dropout;
            let row = self.tokenizer.encode_padded(if drop { "" } else { c }).ids;
            len = row.len();
            ids.extend(row);
        }
        let post = self.vae.encode(&images)?;
        let eps = normal(rng, post.mean.dims(), &self.device)?;
        let latents = (post.sample_with(&eps)?.detach() * self.vae.scaling_factor())?;
        let objective = &self.cfg.objective;
        let noise = objective.noise(rng, latents.dims(), &self.device)?;
        let t_max = self.schedule.num_train_timesteps();
        let timesteps = objective.timesteps(rng, b, t_max);
        let instance_weights = objective.snr_weights(
            self.schedule.ddpm.alphas_cumprod(),
            self.schedule.prediction_type,
            &timesteps,
        );
        let batch = StepBatch {
            latents,
            noise: noise.noise,
            timesteps,
            input_ids: Tensor::from_vec(ids, (b, len), &self.device)?,
            instance_rows: b,
            input_noise: noise.input_noise,
            instance_weights,
            prior_weights: None,
        };
        let models = StepModels {
            unet: &self.unet,
            text_encoder: &self.text_encoder,
            train_text_encoder: true,
        };
        compute_loss(&models, &self.schedule, &batch, 0.0)
    }

    fn weights(&self) -> TrainedWeights<'_> {
        TrainedWeights {
            unet: &self.unet_vars,
            text_encoder: Some(&self.te_vars),
        }
    }

    fn samplers(&self) -> (SamplerState, Vec<SamplerState>) {
        (self.sampler.state(), Vec::new())
    }

    fn restore_samplers(&mut self, main: SamplerState, _others: Vec<SamplerState>) -> Result<()> {
        self.sampler = EpochSampler::from_state(main)?;
        Ok(())
    }

    /// At every checkpoint the model folder is rewritten too, so a long run always has a
    /// usable model.
    const WRITES_AT_CHECKPOINTS: bool = true;

    fn after_checkpoint(&mut self, _step: usize) -> Result<()> {
        self.save_model().map(|_| ())
    }

    fn pictures(&mut self, step: usize) -> Result<()> {
        self.sample_grid(step)?;
        self.probe_scores(step).map(|_| ())
    }
}

/// The weights of `vars`, cast to f16 when `f16`.
fn tensors_for_saving(vars: &VarMap, f16: bool) -> Result<HashMap<String, Tensor>> {
    let mut out = varmap_tensors(vars);
    if f16 {
        for t in out.values_mut() {
            *t = t.to_dtype(DType::F16)?;
        }
    }
    Ok(out)
}

/// Sets every variable of `vars` from the tensor of the same name in `files` (cast to the
/// variable's dtype); a missing tensor or another shape is an error naming it.
fn load_into(vars: &VarMap, files: &[PathBuf]) -> Result<()> {
    let mut tensors = HashMap::new();
    for file in files {
        for (name, t) in candle_core::safetensors::load(file, &Device::Cpu)? {
            tensors.insert(name, (t, file));
        }
    }
    let data = vars.data().lock().expect("varmap lock");
    for (name, var) in data.iter() {
        let Some((t, file)) = tensors.get(name) else {
            return Err(Error::InvalidRequest(format!(
                "warm start: {} has no tensor {name}; model.init must be a model of the architecture in model.config",
                files.first().map_or_else(String::new, |f| f.display().to_string())
            )));
        };
        if t.dims() != var.dims() {
            return Err(Error::InvalidRequest(format!(
                "warm start: {name} in {} has shape {:?}, model.config expects {:?}",
                file.display(),
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}
