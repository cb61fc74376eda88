//! The models a fine-tuning run trains: the base model loaded with the trained parts as
//! variables (full fine-tuning), or frozen with an adapter whose variables are trained and
//! from which the UNet and text encoder are rebuilt after every update.
//!
//! In mixed precision ([`super::precision`]) the UNet and text encoder compute in bf16 or
//! f16: trained weights are f32 variables with cast copies refreshed after every update,
//! frozen ones are loaded in the compute dtype. The VAE only encodes the training images
//! (cached latents) and stays f32.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use styleforge_models::clip_text::ClipTextModel;
use styleforge_models::folder::{LoadOptions, ModelFolder};
use styleforge_models::tokenizer::ClipTokenizer;
use styleforge_models::unet::UNet2DConditionModel;
use styleforge_models::vae::AutoencoderKL;
use styleforge_models::weights::{check_finite, component_weight_files, CastCopies};
use styleforge_schedulers::SchedulerConfig;

use super::config::ResolvedConfig;
use crate::adapters::training::AdapterState;
use crate::adapters::BaseWeights;
use crate::error::Result;
use crate::pipelines::StableDiffusion;

/// The loaded, trainable model.
pub(crate) struct Models {
    pub(crate) tokenizer: ClipTokenizer,
    pub(crate) text_encoder: ClipTextModel,
    pub(crate) unet: UNet2DConditionModel,
    pub(crate) vae: AutoencoderKL,
    pub(crate) scheduler_config: SchedulerConfig,
    pub(crate) unet_vars: VarMap,
    pub(crate) te_vars: Option<VarMap>,
    /// Mixed precision: the compute-dtype copies of the trained variables (empty in fp32
    /// and for adapter methods, whose models are rebuilt instead).
    pub(crate) casts: CastCopies,
    /// Adapter methods: the frozen base and the adapter; the UNet and text encoder above
    /// are rebuilt from them after every update, `unet_vars` holds the adapter's variables.
    pub(crate) adapter: Option<(BaseWeights, AdapterState)>,
}

/// The models of a run, with gradient checkpointing as the config asks (the text encoder
/// only when it is trained).
pub(crate) fn load_models(cfg: &ResolvedConfig, device: &Device) -> Result<Models> {
    let mut models = load_parts(cfg, device)?;
    let ckpt = cfg.gradient_checkpointing;
    models.set_gradient_checkpointing(ckpt, ckpt && models.trains_text_encoder(cfg));
    Ok(models)
}

fn load_parts(cfg: &ResolvedConfig, device: &Device) -> Result<Models> {
    let folder = ModelFolder::open(&cfg.base)?;
    // NaN or infinite weights would only show as a NaN loss at the first step.
    for part in ["unet", "text_encoder", "vae"] {
        let dir = cfg.base.join(part);
        if dir.is_dir() {
            check_finite(&component_weight_files(&dir, cfg.variant.as_deref())?)?;
        }
    }
    let casts = CastCopies::new();
    let base = LoadOptions {
        dtype: cfg.precision.dtype(),
        device: device.clone(),
        variant: cfg.variant.clone(),
        trainable: None,
        casts: cfg.precision.is_mixed().then(|| casts.clone()),
    };
    let vae_opts = LoadOptions {
        dtype: DType::F32,
        ..base.clone()
    };
    let unet_vars = VarMap::new();
    if cfg.method.is_adapter() {
        let weights = BaseWeights::load(&cfg.base, cfg.precision.dtype(), device)?;
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
            vae: folder.vae(&vae_opts)?.model,
            scheduler_config: SchedulerConfig::from_model_dir(&cfg.base)?,
            unet_vars,
            te_vars: None,
            casts,
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
    let vae = folder.vae(&vae_opts)?.model;
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
        casts,
        adapter: None,
    })
}

impl Models {
    /// After the variables changed: adapter methods rebuild the UNet and text encoder from
    /// them; mixed-precision fine-tuning re-casts the compute copies.
    pub(crate) fn refresh(&mut self) -> Result<()> {
        self.casts.refresh()?;
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
    pub(crate) fn set_gradient_checkpointing(&mut self, unet: bool, text_encoder: bool) {
        self.unet.set_gradient_checkpointing(unet);
        self.text_encoder.set_gradient_checkpointing(text_encoder);
    }

    /// Whether gradients flow through the text encoder.
    pub(crate) fn trains_text_encoder(&self, cfg: &ResolvedConfig) -> bool {
        match &self.adapter {
            Some((_, a)) => a.trains_text_encoder(),
            None => cfg.train_text_encoder,
        }
    }

    /// A sampling pipeline sharing the (possibly partly trained) weights.
    pub(crate) fn pipeline(&self, source: &Path, device: &Device) -> StableDiffusion {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::config::{ConceptConfig, TrainConfig};
    use std::path::Path;

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
