//! LoRA (Hu et al. 2021) on the UNet's attention projections (`to_q`, `to_k`, `to_v`,
//! `to_out.0`) and optionally the text encoder's (`q_proj`, `k_proj`, `v_proj`,
//! `out_proj`): `W' = W + (alpha/rank)·B·A` with `A` (`lora_down`) `[rank, in]` and `B`
//! (`lora_up`) `[out, rank]`, `B` starting at zero, the base weights frozen.
//!
//! Files are written and read in two layouts:
//! - diffusers / PEFT: `unet.<module>.lora_A.weight`, `unet.<module>.lora_B.weight`,
//!   `text_encoder.<module>.lora_{A,B}.weight`, no alpha (a scale of 1 is implied, so
//!   `B` is stored multiplied by `alpha/rank`);
//! - kohya (AUTOMATIC1111, ComfyUI): `lora_unet_<module with _>.lora_down.weight`,
//!   `.lora_up.weight`, `.alpha`, and `lora_te_<module>` for the text encoder.
//!
//! Reading also accepts PEFT's `base_model.model.` prefix, `lora_A.default.weight`,
//! diffusers' older `lora.down.weight` / `lora.up.weight` and per-layer `.alpha`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use styleforge_models::clip_text::ClipTextModel;
use styleforge_models::unet::UNet2DConditionModel;

use super::{BaseWeights, Component};
use crate::error::{Error, Result};

/// UNet projections LoRA adapts (peft `target_modules`).
pub const UNET_TARGETS: [&str; 4] = ["to_q", "to_k", "to_v", "to_out.0"];
/// Text-encoder projections LoRA adapts when the text encoder is trained.
pub const TEXT_ENCODER_TARGETS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "out_proj"];

/// What to adapt and how.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// The rank of `A` and `B` (diffusers' scripts default to 4).
    pub rank: usize,
    /// `alpha`; the update is scaled by `alpha / rank` (the scripts set it to the rank).
    pub alpha: f64,
    /// Also adapt the text encoder's attention.
    pub text_encoder: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 4,
            alpha: 4.0,
            text_encoder: false,
        }
    }
}

/// One adapted projection: `module` is its name without `.weight`.
#[derive(Debug, Clone)]
pub struct LoraLayer {
    /// The model it belongs to.
    pub component: Component,
    /// e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q` or
    /// `text_model.encoder.layers.0.self_attn.q_proj`.
    pub module: String,
    /// `A` `[rank, in]`.
    pub down: Var,
    /// `B` `[out, rank]`.
    pub up: Var,
}

/// Trainable LoRA adapters over a [`BaseWeights`].
#[derive(Debug, Clone)]
pub struct Lora {
    /// The configuration.
    pub config: LoraConfig,
    /// The adapted layers, sorted by component and name.
    pub layers: Vec<LoraLayer>,
}

fn prefix(c: Component) -> &'static str {
    match c {
        Component::Unet => "unet",
        Component::TextEncoder => "text_encoder",
    }
}

fn kohya_prefix(c: Component) -> &'static str {
    match c {
        Component::Unet => "lora_unet",
        Component::TextEncoder => "lora_te",
    }
}

/// The module names (without `.weight`) of the 2-D weights in `tensors` ending in one of
/// `targets`, sorted.
fn target_modules(tensors: &HashMap<String, Tensor>, targets: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = tensors
        .iter()
        .filter(|(_, t)| t.rank() == 2)
        .filter_map(|(k, _)| k.strip_suffix(".weight"))
        .filter(|m| targets.iter().any(|t| m.ends_with(&format!(".{t}"))))
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

/// Standard normal draws (Box–Muller) from a seeded ChaCha stream.
fn gaussian(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    use rand::Rng;
    (0..n)
        .map(|_| {
            let u1: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.gen::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

impl Lora {
    /// Adapters for every target projection of `base`: `A` drawn from N(0, 1/rank²) (peft's
    /// `init_lora_weights="gaussian"`, what diffusers' LoRA scripts use) with `seed`, `B` zero.
    pub fn new(base: &BaseWeights, config: LoraConfig, seed: u64) -> Result<Self> {
        if config.rank == 0 {
            return Err(Error::InvalidRequest("LoRA rank must be at least 1".into()));
        }
        if !(config.alpha.is_finite() && config.alpha > 0.0) {
            return Err(Error::InvalidRequest(format!(
                "LoRA alpha must be positive, got {}",
                config.alpha
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut components = vec![(Component::Unet, &UNET_TARGETS)];
        if config.text_encoder {
            components.push((Component::TextEncoder, &TEXT_ENCODER_TARGETS));
        }
        let r = config.rank;
        let mut layers = Vec::new();
        for (component, targets) in components {
            let tensors = base.tensors(component);
            for module in target_modules(tensors, targets.as_slice()) {
                let (out, inp) = tensors[&format!("{module}.weight")].dims2()?;
                let a: Vec<f32> = gaussian(&mut rng, r * inp)
                    .into_iter()
                    .map(|x| x / r as f32)
                    .collect();
                // f32 whatever the base's dtype: adapter weights are master weights too.
                let down = Tensor::from_vec(a, (r, inp), base.device())?;
                let up = Tensor::zeros((out, r), DType::F32, base.device())?;
                layers.push(LoraLayer {
                    component,
                    module,
                    down: Var::from_tensor(&down)?,
                    up: Var::from_tensor(&up)?,
                });
            }
        }
        if layers.is_empty() {
            return Err(Error::Adapter(
                "the model has no attention projection to adapt".into(),
            ));
        }
        Ok(Self { config, layers })
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.config.alpha / self.config.rank as f64
    }

    /// The layer adapting `module` of `component`.
    pub fn layer(&self, component: Component, module: &str) -> Option<&LoraLayer> {
        self.layers
            .iter()
            .find(|l| l.component == component && l.module == module)
    }

    /// Every trainable variable, named as in the diffusers / PEFT layout.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.layers
            .iter()
            .flat_map(|l| {
                let p = format!("{}.{}", prefix(l.component), l.module);
                [
                    (format!("{p}.lora_A.weight"), l.down.clone()),
                    (format!("{p}.lora_B.weight"), l.up.clone()),
                ]
            })
            .collect()
    }

    /// Whether the text encoder is adapted.
    pub fn trains_text_encoder(&self) -> bool {
        self.layers
            .iter()
            .any(|l| l.component == Component::TextEncoder)
    }

    /// The merged weights `W + scale·B·A` of one component, differentiable in `A` and `B`.
    pub fn overrides(
        &self,
        base: &BaseWeights,
        component: Component,
    ) -> Result<HashMap<String, Tensor>> {
        let tensors = base.tensors(component);
        let mut out = HashMap::new();
        for l in self.layers.iter().filter(|l| l.component == component) {
            let name = format!("{}.weight", l.module);
            let w = &tensors[&name];
            let delta = (l.up.as_tensor().matmul(l.down.as_tensor())? * self.scale())?;
            out.insert(name, (w + delta.to_dtype(w.dtype())?)?);
        }
        Ok(out)
    }

    /// The UNet and text encoder with the adapters merged in (rebuild after every update).
    pub fn build(&self, base: &BaseWeights) -> Result<(UNet2DConditionModel, ClipTextModel)> {
        let unet = base.build_unet(&self.overrides(base, Component::Unet)?)?;
        let te = base.build_text_encoder(&self.overrides(base, Component::TextEncoder)?)?;
        Ok((unet, te))
    }

    /// The adapters in the diffusers / PEFT layout (`B` pre-multiplied by `alpha/rank`).
    pub fn peft_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for l in &self.layers {
            let p = format!("{}.{}", prefix(l.component), l.module);
            out.insert(format!("{p}.lora_A.weight"), l.down.as_tensor().copy()?);
            out.insert(
                format!("{p}.lora_B.weight"),
                (l.up.as_tensor() * self.scale())?,
            );
        }
        Ok(out)
    }

    /// The adapters in the kohya layout (`lora_down`, `lora_up`, `alpha`).
    pub fn kohya_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for l in &self.layers {
            let p = kohya_name(l.component, &l.module);
            let dev = l.down.device();
            out.insert(format!("{p}.lora_down.weight"), l.down.as_tensor().copy()?);
            out.insert(format!("{p}.lora_up.weight"), l.up.as_tensor().copy()?);
            out.insert(
                format!("{p}.alpha"),
                Tensor::new(self.config.alpha as f32, dev)?,
            );
        }
        Ok(out)
    }

    /// Writes the adapters to a safetensors file in `format`.
    pub fn save(&self, path: &Path, format: LoraFormat) -> Result<()> {
        let tensors = match format {
            LoraFormat::Peft => self.peft_tensors()?,
            LoraFormat::Kohya => self.kohya_tensors()?,
        };
        let tensors: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        styleforge_models::weights::save_safetensors_atomic(&tensors, path)?;
        Ok(())
    }
}

/// The kohya name of a module: `lora_unet_` / `lora_te_` and the module path with `_`.
pub fn kohya_name(component: Component, module: &str) -> String {
    format!("{}_{}", kohya_prefix(component), module.replace('.', "_"))
}

/// A LoRA file's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraFormat {
    /// diffusers / PEFT (`lora_A` / `lora_B`).
    Peft,
    /// kohya (`lora_down` / `lora_up` / `alpha`), as AUTOMATIC1111 and ComfyUI load.
    Kohya,
}

/// One layer of a LoRA file, before it is matched to a model.
#[derive(Debug, Clone)]
pub struct LoraFileLayer {
    /// The key stem as written in the file (used in error messages).
    pub key: String,
    /// `A` / `lora_down`.
    pub down: Tensor,
    /// `B` / `lora_up`.
    pub up: Tensor,
    /// The layer's alpha, when stored (else the rank: scale 1).
    pub alpha: Option<f64>,
}

/// A LoRA file in either layout.
#[derive(Debug, Clone)]
pub struct LoraFile {
    /// The layout it was written in.
    pub format: LoraFormat,
    /// Its layers, keyed by stem.
    pub layers: BTreeMap<String, LoraFileLayer>,
}

#[derive(Default)]
struct Parts {
    down: Option<Tensor>,
    up: Option<Tensor>,
    alpha: Option<f64>,
}

const PEFT_SUFFIXES: [(&str, u8); 8] = [
    (".lora_A.weight", 0),
    (".lora_B.weight", 1),
    (".lora_A.default.weight", 0),
    (".lora_B.default.weight", 1),
    (".lora.down.weight", 0),
    (".lora.up.weight", 1),
    (".lora_down.weight", 0),
    (".lora_up.weight", 1),
];

impl LoraFile {
    /// Reads a LoRA safetensors file (either layout).
    pub fn load(path: &Path) -> Result<Self> {
        let tensors =
            candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|e| {
                Error::Config {
                    path: path.to_path_buf(),
                    message: format!("not a readable LoRA safetensors file: {e}"),
                }
            })?;
        Self::from_tensors(tensors).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Groups a file's tensors into layers; a key that is no LoRA key is an error.
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Result<Self> {
        let kohya = tensors
            .keys()
            .any(|k| k.starts_with("lora_unet_") || k.starts_with("lora_te_"));
        let format = if kohya {
            LoraFormat::Kohya
        } else {
            LoraFormat::Peft
        };
        let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
        for (key, t) in tensors {
            let k = key.strip_prefix("base_model.model.").unwrap_or(&key);
            if let Some(stem) = k.strip_suffix(".alpha") {
                let a = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                let [a] = a[..] else {
                    return Err(Error::Adapter(format!(
                        "LoRA key `{key}`: alpha is not a scalar"
                    )));
                };
                parts.entry(stem.to_string()).or_default().alpha = Some(a);
                continue;
            }
            let Some((stem, which)) = PEFT_SUFFIXES
                .iter()
                .find_map(|(s, w)| k.strip_suffix(s).map(|stem| (stem, *w)))
            else {
                return Err(Error::Adapter(format!(
                    "LoRA key `{key}` is not a lora_A/lora_B, lora_down/lora_up or alpha tensor"
                )));
            };
            let entry = parts.entry(stem.to_string()).or_default();
            let t = t.to_dtype(DType::F32)?;
            if which == 0 {
                entry.down = Some(t);
            } else {
                entry.up = Some(t);
            }
        }
        let mut layers = BTreeMap::new();
        for (stem, p) in parts {
            let (Some(down), Some(up)) = (p.down, p.up) else {
                return Err(Error::Adapter(format!(
                    "LoRA layer `{stem}` lacks its down (A) or up (B) matrix"
                )));
            };
            layers.insert(
                stem.clone(),
                LoraFileLayer {
                    key: stem,
                    down,
                    up,
                    alpha: p.alpha,
                },
            );
        }
        if layers.is_empty() {
            return Err(Error::Adapter("the LoRA file holds no layers".into()));
        }
        Ok(Self { format, layers })
    }

    /// The trained adapters of a [`Lora`] as a file would hold them (diffusers layout).
    pub fn from_lora(lora: &Lora) -> Result<Self> {
        Self::from_tensors(lora.peft_tensors()?)
    }
}

/// Finds the model weight a file layer adapts: `(component, weight name)`.
fn resolve(
    base: &BaseWeights,
    kohya: &HashMap<String, (Component, String)>,
    stem: &str,
) -> Option<(Component, String)> {
    if stem.starts_with("lora_unet_") || stem.starts_with("lora_te_") {
        return kohya.get(stem).cloned();
    }
    let (component, module) = if let Some(m) = stem.strip_prefix("unet.") {
        (Component::Unet, m.to_string())
    } else if let Some(m) = stem.strip_prefix("text_encoder.") {
        let m = if m.starts_with("text_model.") {
            m.to_string()
        } else {
            format!("text_model.{m}")
        };
        (Component::TextEncoder, m)
    } else {
        (Component::Unet, stem.to_string())
    };
    let name = format!("{module}.weight");
    base.tensors(component)
        .contains_key(&name)
        .then_some((component, name))
}

/// Merges LoRA files, each at its multiplier, into replacement weights for the UNet and
/// the text encoder: `W + Σ multiplier·(alpha/rank)·up·down`. Fails, naming the key, on
/// a layer that matches no weight of the model or whose shapes do not fit it.
pub fn merge_lora_files(
    base: &BaseWeights,
    files: &[(LoraFile, f64)],
) -> Result<[HashMap<String, Tensor>; 2]> {
    let mut kohya = HashMap::new();
    for component in [Component::Unet, Component::TextEncoder] {
        for name in base.tensors(component).keys() {
            if let Some(m) = name.strip_suffix(".weight") {
                kohya.insert(kohya_name(component, m), (component, name.clone()));
            }
        }
    }
    let mut out = [HashMap::new(), HashMap::new()];
    for (file, multiplier) in files {
        for layer in file.layers.values() {
            let key = &layer.key;
            let Some((component, name)) = resolve(base, &kohya, key) else {
                return Err(Error::Adapter(format!(
                    "LoRA key `{key}` matches no layer of the UNet or text encoder"
                )));
            };
            let idx = match component {
                Component::Unet => 0,
                Component::TextEncoder => 1,
            };
            let w = out[idx]
                .get(&name)
                .cloned()
                .unwrap_or_else(|| base.tensors(component)[&name].clone());
            let down = layer.down.flatten_from(1)?;
            let up = layer.up.flatten_from(1)?;
            let (r, fan_in) = down.dims2()?;
            let (fan_out, r_up) = up.dims2()?;
            if r != r_up {
                return Err(Error::Adapter(format!(
                    "LoRA layer `{key}`: rank mismatch, down has rank {r} but up has rank {r_up}"
                )));
            }
            let wd = w.dims().to_vec();
            if wd[0] != fan_out || w.elem_count() != fan_out * fan_in {
                return Err(Error::Adapter(format!(
                    "LoRA layer `{key}`: up·down is [{fan_out}, {fan_in}] but `{name}` is {wd:?}"
                )));
            }
            let scale = multiplier * layer.alpha.unwrap_or(r as f64) / r as f64;
            // Merged in f32 and cast once, so a half-precision model loses no more digits
            // than its own weights carry.
            let (up, down) = (up.to_dtype(DType::F32)?, down.to_dtype(DType::F32)?);
            let delta = (up.matmul(&down)? * scale)?
                .reshape(w.shape())?
                .to_device(w.device())?;
            let merged = (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?;
            out[idx].insert(name, merged);
        }
    }
    Ok(out)
}

/// Parses a `FILE[:SCALE]` argument (`--lora`); the scale defaults to 1. A colon followed
/// by something that is not a number is part of the path (e.g. `C:\...`).
pub fn parse_lora_arg(arg: &str) -> Result<(std::path::PathBuf, f64)> {
    if let Some((path, scale)) = arg.rsplit_once(':') {
        if let Ok(s) = scale.parse::<f64>() {
            if !s.is_finite() {
                return Err(Error::InvalidRequest(format!(
                    "LoRA scale in `{arg}` is not finite"
                )));
            }
            return Ok((path.into(), s));
        }
    }
    Ok((arg.into(), 1.0))
}
