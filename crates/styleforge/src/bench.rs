//! Named benchmark workloads that run the real model code paths.
//!
//! The same names, configs (`bench/configs/*.json`, embedded here) and shapes are timed in
//! PyTorch + diffusers by `tools/bench/bench_torch.py`, so the two can be reported as
//! ratios measured in one run on one machine.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use styleforge_models::clip_text::{ClipTextConfig, ClipTextModel};
use styleforge_models::config::parse_config;
use styleforge_models::init::PyTorchInit;
use styleforge_models::unet::{UNet2DConditionModel, UNetConfig};
use styleforge_models::vae::{AutoencoderKL, VaeConfig};

use crate::optim::{AdamW, AdamWConfig};

/// Which model a workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchModel {
    /// A UNet from one of the embedded configs.
    UNet(&'static str),
    /// SD 1.5's text encoder.
    TextEncoder,
    /// SD 1.5's VAE decoder on latents of this side (32: 256 px images, 64: 512 px).
    VaeDecode(usize),
    /// The FID InceptionV3 (pool3 features of 299×299 images).
    Inception,
    /// CLIP ViT-B/16's vision tower (image features for CLIP-T / CLIP-I).
    ClipVision,
    /// CSD: CLIP ViT-L/14's vision tower and the 1024 → 768 style projection, normalised
    /// (the CSD style score's features).
    Csd,
    /// DINOv2-base (`Dinov2Model`, trained at 518 px) on 224 px images: the class-token
    /// embedding of the DINO content and leak scores, position embeddings resampled.
    Dinov2,
    /// The Fréchet distance of two 2048-d feature sets of this many images each: 2500
    /// takes the `d × d` route from statistics, 20 (a style's reference set) the small-set
    /// route from the features.
    Fid(usize),
    /// StyleForge's training step (the SD-1.5 topology at 512 px, or tiny models): UNet and
    /// text encoder trained, one StyleRef and one Aux row, the prior-preservation loss,
    /// gradient clipping at 1 and AdamW, as `styleforge train` runs it.
    StyleForgeStep {
        /// The models and latent size.
        topology: Topology,
        /// Gradient checkpointing of both models.
        checkpointing: bool,
        /// 8-bit AdamW instead of f32 AdamW.
        adamw8bit: bool,
    },
    /// Text-to-image through the txt2img pipeline: one image, DDIM with classifier-free
    /// guidance 7.5 (the UNet on a batch of 2), prompt encoding and the VAE decode included;
    /// the time of each stage is reported beside the total ([`Timing::stages`]).
    Generate {
        /// The models and latent size.
        topology: Topology,
        /// Denoising steps.
        steps: usize,
    },
}

/// The models of the end-to-end workloads: SD 1.5's at 512 px, or tiny ones of the same
/// kinds (the GPU check's dry run on a CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// SD 1.5's UNet, text encoder and VAE; 64×64 latents (512 px).
    Sd15,
    /// `unet-tiny.json`, `text-encoder-tiny.json`, `vae-tiny.json`; 32×32 latents.
    Tiny,
}

impl Topology {
    /// The UNet, text-encoder and VAE config files.
    fn configs(self) -> [&'static str; 3] {
        match self {
            Self::Sd15 => ["unet-sd15.json", "text-encoder-sd15.json", "vae-sd15.json"],
            Self::Tiny => ["unet-tiny.json", "text-encoder-tiny.json", "vae-tiny.json"],
        }
    }

    /// The latents' side.
    fn latent_side(self) -> usize {
        match self {
            Self::Sd15 => 64,
            Self::Tiny => 32,
        }
    }
}

/// What is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchKind {
    /// One forward pass without gradients.
    Forward,
    /// Forward, MSE loss, backward and an AdamW step.
    TrainStep,
}

/// One named workload.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// The name shared with the PyTorch script.
    pub name: &'static str,
    /// The model.
    pub model: BenchModel,
    /// Forward or training step.
    pub kind: BenchKind,
    /// Batch size.
    pub batch: usize,
}

impl Workload {
    /// The full-size workloads, the SD-1.5 training steps, generation and the VAE decode at
    /// 512 px: GBs of memory and up to minutes a repetition on a CPU, run only when named
    /// (`styleforge bench --workloads memory` for the training steps).
    pub fn is_large(&self) -> bool {
        match self.model {
            BenchModel::StyleForgeStep { topology, .. } | BenchModel::Generate { topology, .. } => {
                topology == Topology::Sd15
            }
            BenchModel::VaeDecode(side) => side >= 64,
            _ => false,
        }
    }
}

/// The embedded configs, by file name.
pub fn config_text(name: &str) -> Option<&'static str> {
    Some(match name {
        "unet-tiny.json" => include_str!("../../../bench/configs/unet-tiny.json"),
        "unet-sd15-half.json" => include_str!("../../../bench/configs/unet-sd15-half.json"),
        "unet-sd15.json" => include_str!("../../../bench/configs/unet-sd15.json"),
        "text-encoder-sd15.json" => include_str!("../../../bench/configs/text-encoder-sd15.json"),
        "text-encoder-tiny.json" => include_str!("../../../bench/configs/text-encoder-tiny.json"),
        "vae-sd15.json" => include_str!("../../../bench/configs/vae-sd15.json"),
        "vae-tiny.json" => include_str!("../../../bench/configs/vae-tiny.json"),
        "clip-vit-b16-vision.json" => {
            include_str!("../../../bench/configs/clip-vit-b16-vision.json")
        }
        "csd-vit-l14.json" => include_str!("../../../bench/configs/csd-vit-l14.json"),
        "dinov2-base.json" => include_str!("../../../bench/configs/dinov2-base.json"),
        _ => return None,
    })
}

/// Every workload, in the order they are reported.
pub fn workloads() -> Vec<Workload> {
    use BenchKind::*;
    use BenchModel::*;
    let w = |name, model, kind, batch| Workload {
        name,
        model,
        kind,
        batch,
    };
    let sf = |checkpointing, adamw8bit| StyleForgeStep {
        topology: Topology::Sd15,
        checkpointing,
        adamw8bit,
    };
    let generate = |topology, steps| Generate { topology, steps };
    let tiny = UNet("unet-tiny.json");
    let half = UNet("unet-sd15-half.json");
    vec![
        w("tiny-forward-b1", tiny, Forward, 1),
        w("tiny-forward-b2", tiny, Forward, 2),
        w("tiny-forward-b4", tiny, Forward, 4),
        w("tiny-train-b1", tiny, TrainStep, 1),
        w("tiny-train-b4", tiny, TrainStep, 4),
        w("sd15-half-forward-b1", half, Forward, 1),
        w("sd15-half-train-b1", half, TrainStep, 1),
        w("sd15-forward-b2", UNet("unet-sd15.json"), Forward, 2),
        w("text-encoder-sd15-b2", TextEncoder, Forward, 2),
        w("vae-decode-sd15-b1", VaeDecode(32), Forward, 1),
        w("inception-fid-b16", Inception, Forward, 16),
        w("clip-b16-image-b16", ClipVision, Forward, 16),
        w("csd-l14-style-b8", Csd, Forward, 8),
        w("dinov2-base-cls-b16", Dinov2, Forward, 16),
        w("fid-2048", Fid(2500), Forward, 1),
        w("fid-2048-n20", Fid(20), Forward, 1),
        w(
            "tiny-styleforge-ckpt-8bit",
            StyleForgeStep {
                topology: Topology::Tiny,
                checkpointing: true,
                adamw8bit: true,
            },
            TrainStep,
            2,
        ),
        w("tiny-ddim30", generate(Topology::Tiny, 30), Forward, 1),
        w("tiny-generate", generate(Topology::Tiny, 5), Forward, 1),
        w("sd15-512-styleforge", sf(false, false), TrainStep, 2),
        w("sd15-512-styleforge-ckpt", sf(true, false), TrainStep, 2),
        w(
            "sd15-512-styleforge-ckpt-8bit",
            sf(true, true),
            TrainStep,
            2,
        ),
        w("sd15-512-ddim30", generate(Topology::Sd15, 30), Forward, 1),
        w("vae-decode-sd15-512", VaeDecode(64), Forward, 1),
        w("sd15-generate-512", generate(Topology::Sd15, 5), Forward, 1),
    ]
}

/// Looks a workload up by name.
pub fn workload(name: &str) -> Option<Workload> {
    workloads().into_iter().find(|w| w.name == name)
}

/// Timings of one workload, in milliseconds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    /// Median over the repeats.
    pub median_ms: f64,
    /// Fastest repeat.
    pub min_ms: f64,
    /// Slowest repeat.
    pub max_ms: f64,
    /// Number of timed repeats.
    pub repeats: usize,
    /// Conv / matmul / attention-product FLOPs of one repetition, in GFLOP (a training
    /// step counts its forward pass three times: the backward of each product is two
    /// products of the same size).
    #[serde(default)]
    pub gflop: f64,
    /// The stages of a workload that reports them (generation: `text_encoding`,
    /// `denoising`, `vae_decode`), in the order they run, timed in the median repetition
    /// (the mean of the two middle ones for an even count), so they sum to at most
    /// `median_ms`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageTiming>,
}

/// The time of one stage of a workload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageTiming {
    /// The stage's name, shared with the PyTorch script.
    pub name: String,
    /// Milliseconds in the median repetition.
    pub median_ms: f64,
}

/// Named stage times of one repetition in milliseconds (empty for workloads without
/// stages).
type Stages = Vec<(&'static str, f64)>;

/// One repetition of a workload, returning its stage times.
type Repetition = Box<dyn FnMut() -> crate::Result<Stages>>;

/// A repetition without stages.
fn plain(mut f: impl FnMut() -> crate::Result<()> + 'static) -> Repetition {
    Box::new(move || f().map(|()| Stages::new()))
}

impl Timing {
    /// Achieved GFLOP/s at the median time.
    pub fn gflops(&self) -> f64 {
        self.gflop / (self.median_ms / 1e3)
    }
}

impl Timing {
    /// The timing of repetitions, each its milliseconds and stages; at least one.
    fn from_samples(mut samples: Vec<(f64, Stages)>) -> Self {
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = samples.len();
        let middle = if n % 2 == 1 {
            &samples[n / 2..n / 2 + 1]
        } else {
            &samples[n / 2 - 1..n / 2 + 1]
        };
        let mean = |f: &dyn Fn(&(f64, Stages)) -> f64| {
            middle.iter().map(f).sum::<f64>() / middle.len() as f64
        };
        let stages = middle[0]
            .1
            .iter()
            .enumerate()
            .map(|(i, (name, _))| StageTiming {
                name: name.to_string(),
                median_ms: mean(&|s| s.1.get(i).map_or(0.0, |st| st.1)),
            })
            .collect();
        Self {
            median_ms: mean(&|s| s.0),
            min_ms: samples[0].0,
            max_ms: samples[n - 1].0,
            repeats: n,
            gflop: 0.0,
            stages,
        }
    }
}

/// Seeded standard normal inputs, from the same generator the pipelines use.
fn seeded_normal(shape: &[usize], seed: u64, device: &Device) -> crate::Result<Tensor> {
    use styleforge_schedulers::NoiseSource;
    let shape = candle_core::Shape::from_dims(shape);
    Ok(styleforge_schedulers::SeededNoise::new(seed).sample(&shape, DType::F32, device)?)
}

/// Weights for a forward workload: fresh values (as [`PyTorchInit`] draws them) held as
/// plain tensors, not variables, so a forward pass records no backward graph (what
/// `torch.no_grad()` does on the PyTorch side, and what generation does with loaded
/// weights). Training workloads keep the variables.
fn frozen_weights(
    device: &Device,
    build: impl Fn(candle_nn::VarBuilder<'static>) -> crate::Result<()>,
) -> crate::Result<candle_nn::VarBuilder<'static>> {
    let varmap = VarMap::new();
    build(PyTorchInit::var_builder(&varmap, 0, DType::F32, device))?;
    let tensors: std::collections::HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    Ok(candle_nn::VarBuilder::from_backend(
        Box::new(TakeOnce(std::sync::Mutex::new(tensors))),
        DType::F32,
        device.clone(),
    ))
}

/// A weights backend that hands each tensor out once and forgets it, as loading from a
/// file does: a model that keeps a re-laid-out copy of a weight then holds the only one,
/// and the benchmark's peak memory is the model's, not the model's beside the originals.
struct TakeOnce(std::sync::Mutex<std::collections::HashMap<String, Tensor>>);

impl TakeOnce {
    fn take(&self, name: &str) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .expect("bench weights lock")
            .remove(name)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "bench weights: `{name}` is missing or was already taken"
                ))
            })
    }
}

impl candle_nn::var_builder::SimpleBackend for TakeOnce {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, dev)?;
        if tensor.shape() != &s {
            candle_core::bail!(
                "bench weights: `{name}` has shape {:?}, the model asks for {s:?}",
                tensor.shape()
            );
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.take(name)?.to_device(dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0
            .lock()
            .expect("bench weights lock")
            .contains_key(name)
    }
}

/// Builds the workload's model with fresh weights and returns a closure running one
/// repetition.
fn prepare(w: &Workload, device: &Device) -> crate::Result<Repetition> {
    if w.kind == BenchKind::Forward
        && !matches!(w.model, BenchModel::Fid(_) | BenchModel::Generate { .. })
    {
        let vb = frozen_weights(device, |vb| {
            prepare_with(w, device, VarMap::new(), vb).map(|_| ())
        })?;
        return prepare_with(w, device, VarMap::new(), vb);
    }
    let varmap = VarMap::new();
    let vb = PyTorchInit::var_builder(&varmap, 0, DType::F32, device);
    prepare_with(w, device, varmap, vb)
}

fn prepare_with(
    w: &Workload,
    device: &Device,
    varmap: VarMap,
    vb: candle_nn::VarBuilder<'static>,
) -> crate::Result<Repetition> {
    let b = w.batch;
    match w.model {
        BenchModel::UNet(file) => {
            let path = Path::new(file);
            let text =
                config_text(file).ok_or_else(|| crate::Error::msg(format!("no config {file}")))?;
            let cfg: UNetConfig = parse_config(text, path)?;
            let unet = UNet2DConditionModel::new(&cfg, vb)?;
            let sample = seeded_normal(&[b, cfg.in_channels, 32, 32], 1, device)?;
            let context = seeded_normal(&[b, 77, cfg.context_dim()], 2, device)?;
            let t: Vec<f32> = (0..b).map(|i| (100 + 400 * i) as f32).collect();
            let timesteps = Tensor::from_vec(t, b, device)?;
            match w.kind {
                BenchKind::Forward => Ok(plain(move || {
                    unet.forward(&sample, &timesteps, &context)?;
                    Ok(())
                })),
                BenchKind::TrainStep => {
                    let target = seeded_normal(&[b, cfg.out_channels, 32, 32], 3, device)?;
                    let vars = varmap.data().lock().expect("varmap lock").clone();
                    let mut opt = AdamW::new(
                        vars,
                        AdamWConfig {
                            lr: 1e-5,
                            ..Default::default()
                        },
                    )?;
                    Ok(plain(move || {
                        let pred = unet.forward(&sample, &timesteps, &context)?;
                        let loss = (pred - &target)?.sqr()?.mean_all()?;
                        let grads = loss.backward()?;
                        opt.step(&grads)?;
                        Ok(())
                    }))
                }
            }
        }
        BenchModel::TextEncoder => {
            let path = Path::new("text-encoder-sd15.json");
            let text = config_text("text-encoder-sd15.json").expect("embedded");
            let cfg: ClipTextConfig = parse_config(text, path)?;
            let te = ClipTextModel::new(&cfg, vb)?;
            let ids: Vec<u32> = (0..b * 77).map(|i| (i * 7919 % 49000) as u32).collect();
            let ids = Tensor::from_vec(ids, (b, 77), device)?;
            Ok(plain(move || {
                te.forward(&ids)?;
                Ok(())
            }))
        }
        BenchModel::Inception => {
            let net = styleforge_models::inception::FidInceptionV3::from_var_builder(vb)?;
            let x = seeded_normal(&[b, 3, 299, 299], 5, device)?
                .tanh()?
                .affine(0.5, 0.5)?;
            Ok(plain(move || {
                net.features(&x)?;
                Ok(())
            }))
        }
        BenchModel::ClipVision => {
            let path = Path::new("clip-vit-b16-vision.json");
            let text = config_text("clip-vit-b16-vision.json").expect("embedded");
            let cfg: styleforge_models::clip_vision::ClipVisionConfig = parse_config(text, path)?;
            let tower =
                styleforge_models::clip_vision::ClipVisionModel::new(&cfg, vb.pp("vision_model"))?;
            let projection = styleforge_models::nn::linear_no_bias(
                cfg.hidden_size,
                512,
                vb.pp("visual_projection"),
            )?;
            let x = seeded_normal(&[b, 3, cfg.image_size, cfg.image_size], 6, device)?;
            Ok(plain(move || {
                use candle_core::Module;
                projection.forward(&tower.forward(&x)?.pooled)?;
                Ok(())
            }))
        }
        BenchModel::Csd => {
            let text = config_text("csd-vit-l14.json").expect("embedded");
            let cfg: styleforge_models::clip_vision::ClipVisionConfig =
                parse_config(text, Path::new("csd-vit-l14.json"))?;
            let csd = styleforge_models::csd::CsdModel::new(&cfg, vb, false)?;
            let x = seeded_normal(&[b, 3, cfg.image_size, cfg.image_size], 9, device)?;
            Ok(plain(move || {
                csd.forward(&x)?;
                Ok(())
            }))
        }
        BenchModel::Dinov2 => {
            let text = config_text("dinov2-base.json").expect("embedded");
            let cfg: styleforge_models::dino::DinoConfig =
                parse_config(text, Path::new("dinov2-base.json"))?;
            let processor = styleforge_models::clip_vision::ClipImageProcessor::default();
            let dino = styleforge_models::dino::DinoModel::new(&cfg, vb, processor)?;
            let x = seeded_normal(&[b, 3, 224, 224], 10, device)?;
            Ok(plain(move || {
                dino.cls_embeddings(&x)?;
                Ok(())
            }))
        }
        BenchModel::Fid(n) => {
            // Two sets of n 2048-d features. With more rows than dimensions the statistics
            // are made once and the distance (the d × d route pytorch-fid always takes) is
            // timed; with fewer, `fid` on the features (the exact small-set route) is timed.
            let d = 2048;
            let a = seeded_normal(&[n, d], 7, device)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let b2 = seeded_normal(&[n, d], 8, device)?
                .affine(1.1, 0.05)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let err = |e| crate::evaluation::eval_error("the FID workload")(e);
            if n < d {
                return Ok(plain(move || {
                    let x = styleforge_eval::FeatureMatrix::new(&a, d).map_err(err)?;
                    let y = styleforge_eval::FeatureMatrix::new(&b2, d).map_err(err)?;
                    styleforge_eval::fid(&x, &y).map_err(err)?;
                    Ok(())
                }));
            }
            let stats = |v: &[f32]| -> crate::Result<styleforge_eval::FeatureStats> {
                let m = styleforge_eval::FeatureMatrix::new(v, d).map_err(err)?;
                styleforge_eval::FeatureStats::from_features(&m).map_err(err)
            };
            let (s1, s2) = (stats(&a)?, stats(&b2)?);
            Ok(plain(move || {
                styleforge_eval::frechet_distance(&s1, &s2).map_err(err)?;
                Ok(())
            }))
        }
        BenchModel::StyleForgeStep {
            topology,
            checkpointing,
            adamw8bit,
        } => styleforge_step(device, varmap, vb, topology, checkpointing, adamw8bit),
        BenchModel::Generate { topology, steps } => generate(device, topology, steps),
        BenchModel::VaeDecode(side) => {
            let path = Path::new("vae-sd15.json");
            let text = config_text("vae-sd15.json").expect("embedded");
            let cfg: VaeConfig = parse_config(text, path)?;
            let vae = AutoencoderKL::new(&cfg, vb)?;
            let z = seeded_normal(&[b, cfg.latent_channels, side, side], 4, device)?;
            Ok(plain(move || {
                vae.decode(&z)?;
                Ok(())
            }))
        }
    }
}

/// The SD-1.5 scheduler's noise schedule (scaled linear betas, epsilon prediction).
const SD15_SCHEDULER: &str = r#"{"num_train_timesteps": 1000, "beta_start": 0.00085,
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}"#;

/// One StyleForge optimizer step through the training code itself ([`compute_loss`],
/// the checkpoint-aware backward, [`clip_grad_norm`], [`AdamW`]).
///
/// [`compute_loss`]: crate::training::step::compute_loss
/// [`clip_grad_norm`]: crate::training::step::clip_grad_norm
fn styleforge_step(
    device: &Device,
    varmap: VarMap,
    vb: candle_nn::VarBuilder<'static>,
    topology: Topology,
    checkpointing: bool,
    adamw8bit: bool,
) -> crate::Result<Repetition> {
    use crate::training::step::{
        clip_grad_norm, compute_loss, NoiseSchedule, StepBatch, StepModels,
    };
    let [unet_file, te_file, _] = topology.configs();
    let cfg: UNetConfig = embedded_config(unet_file)?;
    let mut unet = UNet2DConditionModel::new(&cfg, vb.clone())?;
    let te_cfg: ClipTextConfig = embedded_config(te_file)?;
    let mut text_encoder = ClipTextModel::new(&te_cfg, vb)?;
    unet.set_gradient_checkpointing(checkpointing);
    text_encoder.set_gradient_checkpointing(checkpointing);
    let ddpm = styleforge_schedulers::DdpmScheduler::from_config(
        &styleforge_schedulers::SchedulerConfig::from_json_str(SD15_SCHEDULER)?,
    )?;
    let schedule = NoiseSchedule {
        prediction_type: ddpm.config().prediction_type,
        ddpm,
    };
    let b = 2;
    let side = topology.latent_side();
    let ids: Vec<u32> = (0..b * 77).map(|i| (i * 7919 % 49000) as u32).collect();
    let batch = StepBatch {
        latents: seeded_normal(&[b, cfg.in_channels, side, side], 1, device)?,
        noise: seeded_normal(&[b, cfg.in_channels, side, side], 2, device)?,
        timesteps: vec![100.0, 500.0],
        input_ids: Tensor::from_vec(ids, (b, 77), device)?,
        instance_rows: 1,
        input_noise: None,
        instance_weights: None,
        prior_weights: None,
    };
    let named: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vars: Vec<candle_core::Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let optimizer = if adamw8bit {
        crate::optim::OptimizerKind::AdamW8bit
    } else {
        crate::optim::OptimizerKind::AdamW
    };
    let mut opt = AdamW::new(
        named,
        AdamWConfig {
            lr: 1e-5,
            optimizer,
            ..Default::default()
        },
    )?;
    Ok(plain(move || {
        let models = StepModels {
            unet: &unet,
            text_encoder: &text_encoder,
            train_text_encoder: true,
        };
        let loss = compute_loss(&models, &schedule, &batch, 1.0)?;
        let mut grads = styleforge_models::nn::checkpoint::backward(&loss.total)?;
        drop(loss);
        clip_grad_norm(&mut grads, &vars, 1.0)?;
        opt.step(&grads)?;
        Ok(())
    }))
}

/// A config of [`config_text`], parsed.
fn embedded_config<T: styleforge_models::config::ModelConfig>(file: &str) -> crate::Result<T> {
    let text = config_text(file).ok_or_else(|| crate::Error::msg(format!("no config {file}")))?;
    Ok(parse_config(text, Path::new(file))?)
}

/// The SD-1.5 pipeline's scheduler config (what its `scheduler_config.json` holds).
const SD15_PIPELINE_SCHEDULER: &str = r#"{"_class_name": "PNDMScheduler",
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "clip_sample": false,
    "set_alpha_to_one": false, "steps_offset": 1, "skip_prk_steps": true}"#;

/// Text-to-image through [`StableDiffusion::txt2img_timed`] on fresh weights (frozen
/// tensors, as loaded weights are), DDIM, `steps` steps, guidance 7.5, one image; the
/// repetition reports the pipeline's stage times.
///
/// [`StableDiffusion::txt2img_timed`]: crate::pipelines::StableDiffusion::txt2img_timed
fn generate(device: &Device, topology: Topology, steps: usize) -> crate::Result<Repetition> {
    use crate::pipelines::{SamplingOptions, SchedulerChoice, StableDiffusion, Txt2ImgRequest};
    let [unet_file, te_file, vae_file] = topology.configs();
    let unet_cfg: UNetConfig = embedded_config(unet_file)?;
    let te_cfg: ClipTextConfig = embedded_config(te_file)?;
    let vae_cfg: VaeConfig = embedded_config(vae_file)?;
    let vb = frozen_weights(device, |vb| {
        UNet2DConditionModel::new(&unet_cfg, vb.pp("unet"))?;
        ClipTextModel::new(&te_cfg, vb.pp("text_encoder"))?;
        AutoencoderKL::new(&vae_cfg, vb.pp("vae"))?;
        Ok(())
    })?;
    let sd = StableDiffusion::from_parts(
        styleforge_models::tokenizer::ClipTokenizer::standard()?,
        ClipTextModel::new(&te_cfg, vb.pp("text_encoder"))?,
        UNet2DConditionModel::new(&unet_cfg, vb.pp("unet"))?,
        AutoencoderKL::new(&vae_cfg, vb.pp("vae"))?,
        styleforge_schedulers::SchedulerConfig::from_json_str(SD15_PIPELINE_SCHEDULER)?,
        std::path::PathBuf::from("bench"),
        device.clone(),
    );
    let side = topology.latent_side() * sd.vae_scale_factor();
    let request = Txt2ImgRequest {
        sampling: SamplingOptions {
            prompt: "a watercolor painting of a lighthouse at dawn".into(),
            steps,
            guidance_scale: 7.5,
            scheduler: SchedulerChoice {
                name: Some("ddim".into()),
                karras: false,
            },
            ..Default::default()
        },
        width: side,
        height: side,
        latents: None,
    };
    Ok(Box::new(move || {
        let mut noise = styleforge_schedulers::SeededNoise::new(0);
        let (_, times) =
            sd.txt2img_timed(&request, &mut noise, &mut crate::progress::NoProgress)?;
        Ok(times
            .named()
            .iter()
            .map(|&(name, d)| (name, d.as_secs_f64() * 1e3))
            .collect())
    }))
}

/// Runs `warmup` untimed and `repeats` timed repetitions of a workload. On a GPU each
/// repetition ends with the device synchronised, so that its queued kernels are timed.
pub fn run(w: &Workload, warmup: usize, repeats: usize, device: &Device) -> crate::Result<Timing> {
    let mut once = prepare(w, device)?;
    // The first warm-up (or one extra untimed run) counts the work.
    let (first, flop) = styleforge_models::nn::flops::measure(&mut once);
    first?;
    device.synchronize()?;
    for _ in 1..warmup {
        once()?;
        device.synchronize()?;
    }
    let mut samples = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let stages = once()?;
        device.synchronize()?;
        samples.push((start.elapsed().as_secs_f64() * 1e3, stages));
    }
    let passes = match w.kind {
        BenchKind::Forward => 1.0,
        BenchKind::TrainStep => 3.0,
    };
    Ok(Timing {
        gflop: flop as f64 * passes / 1e9,
        ..Timing::from_samples(samples)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_come_from_the_median_repetitions() {
        let rep = |ms: f64, a: f64, b: f64| (ms, vec![("a", a), ("b", b)]);
        let odd = Timing::from_samples(vec![
            rep(30.0, 9.0, 20.0),
            rep(10.0, 1.0, 8.0),
            rep(20.0, 5.0, 14.0),
        ]);
        assert_eq!((odd.median_ms, odd.min_ms, odd.max_ms), (20.0, 10.0, 30.0));
        let stage = |name: &str, median_ms| StageTiming {
            name: name.into(),
            median_ms,
        };
        assert_eq!(odd.stages, [stage("a", 5.0), stage("b", 14.0)]);
        let even = Timing::from_samples(vec![
            rep(40.0, 2.0, 37.0),
            rep(10.0, 1.0, 8.0),
            rep(20.0, 5.0, 14.0),
            rep(30.0, 9.0, 20.0),
        ]);
        assert_eq!(even.median_ms, 25.0);
        assert_eq!(even.stages, [stage("a", 7.0), stage("b", 17.0)]);
        let none = Timing::from_samples(vec![(3.0, Stages::new())]);
        assert!(none.stages.is_empty());
        let json = serde_json::to_value(&none).unwrap();
        assert!(json.get("stages").is_none(), "{json}");
    }

    #[test]
    fn tiny_generation_reports_its_stages() {
        let w = workload("tiny-generate").unwrap();
        assert!(!w.is_large());
        let t = run(&w, 1, 3, &Device::Cpu).unwrap();
        let names: Vec<&str> = t.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["text_encoding", "denoising", "vae_decode"]);
        assert!(t.stages.iter().all(|s| s.median_ms > 0.0), "{t:?}");
        let sum: f64 = t.stages.iter().map(|s| s.median_ms).sum();
        assert!(
            sum <= t.median_ms,
            "stages {sum} ms > total {} ms",
            t.median_ms
        );
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["stages"][1]["name"], "denoising");
    }

    #[test]
    fn the_full_size_workloads_are_large() {
        for name in [
            "sd15-generate-512",
            "vae-decode-sd15-512",
            "sd15-512-ddim30",
        ] {
            assert!(workload(name).unwrap().is_large(), "{name}");
        }
        for name in ["tiny-generate", "tiny-ddim30", "vae-decode-sd15-b1"] {
            assert!(!workload(name).unwrap().is_large(), "{name}");
        }
    }
}
