//! `ProbeNet`: a small multi-head CNN that reads a 32×32 toy-world picture and says its
//! style, which objects and colours are in it, which (object, colour) pairs, the sky and
//! the ground; and [`Probes`], the network with its file format.
//!
//! The network is four 3×3 convolutions (the first at stride 1, the others at stride 2),
//! each followed by a group norm and SiLU, then a global average pool: the pooled vector
//! is the **probe feature** (128-d by default) that the Fréchet distance of
//! [`measures`](super::measures) is computed on, and every head is a linear layer on it.
//!
//! On disk a probe set is two files in one folder: [`WEIGHTS_FILE`] (safetensors, loaded
//! strictly: every tensor present with its shape, nothing left over) and [`CONFIG_FILE`]
//! (a [`ProbeFile`]: format tag, network config, label vocabulary, and the held-out
//! accuracy and the training run that made the weights).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use styleforge_models::init::PyTorchInit;
use styleforge_models::nn::{conv2d, linear, Conv2d, GroupNorm, Linear};
use styleforge_models::weights::{save_safetensors_atomic, varmap_tensors, WeightStore};
use styleforge_models::{files, ModelError};
use styleforge_world::{Colour, Ground, ObjectKind, Scene, Sky, Style};

use super::train::{ProbeAccuracy, ProbeTraining};
use crate::image_io::image_to_tensor;
use crate::{Error, Result};

/// The weights file of a probe folder.
pub const WEIGHTS_FILE: &str = "probes.safetensors";
/// The JSON file of a probe folder ([`ProbeFile`]).
pub const CONFIG_FILE: &str = "probes.json";
/// The `format` tag of [`CONFIG_FILE`].
pub const FORMAT: &str = "styleforge-toy-probes";
/// The version of the file format written.
pub const FORMAT_VERSION: u32 = 1;

/// Number of style classes (every [`Style`]).
pub const NUM_STYLES: usize = Style::ALL.len();
/// Number of object kinds ([`ObjectKind::ALL`]).
pub const NUM_OBJECTS: usize = ObjectKind::ALL.len();
/// Number of colour words ([`Colour::ALL`]).
pub const NUM_COLOURS: usize = Colour::ALL.len();
/// Number of (object, colour) pairs: pair `k · NUM_COLOURS + c` is kind `k` in colour `c`.
pub const NUM_PAIRS: usize = NUM_OBJECTS * NUM_COLOURS;
/// Number of skies ([`Sky::ALL`]).
pub const NUM_SKIES: usize = Sky::ALL.len();
/// Number of grounds ([`Ground::ALL`]).
pub const NUM_GROUNDS: usize = Ground::ALL.len();

/// Images per forward pass when classifying many pictures.
const CHUNK: usize = 256;

/// The network's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Side of the (square) input pictures in pixels.
    pub image_size: usize,
    /// Output channels of the convolutions: the first at stride 1, every further one at
    /// stride 2. The last is the feature dimension.
    pub channels: Vec<usize>,
    /// Groups of every group norm (must divide every channel count).
    pub norm_groups: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            image_size: 32,
            channels: vec![32, 64, 128, 128],
            norm_groups: 8,
        }
    }
}

impl ProbeConfig {
    /// Dimension of the probe features (the last channel count).
    pub fn feature_dim(&self) -> usize {
        self.channels.last().copied().unwrap_or(0)
    }

    /// Checks the config describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        if self.image_size == 0 {
            return Err(Error::InvalidRequest("probe image_size must be > 0".into()));
        }
        if self.channels.is_empty() || self.channels.contains(&0) {
            return Err(Error::InvalidRequest(format!(
                "probe channels must be non-empty and positive, got {:?}",
                self.channels
            )));
        }
        if self.norm_groups == 0 || self.channels.iter().any(|c| c % self.norm_groups != 0) {
            return Err(Error::InvalidRequest(format!(
                "probe norm_groups {} must divide every channel count {:?}",
                self.norm_groups, self.channels
            )));
        }
        Ok(())
    }
}

/// A convolution followed by group norm and SiLU.
#[derive(Debug, Clone)]
struct ConvBlock {
    conv: Conv2d,
    norm: GroupNorm,
}

impl ConvBlock {
    fn new(
        cin: usize,
        cout: usize,
        stride: usize,
        groups: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            conv: conv2d(cin, cout, 3, stride, 1, vb.pp("conv"))?,
            norm: GroupNorm::new(groups, cout, 1e-5, vb.pp("norm"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.norm.forward_silu(&self.conv.forward(x)?)
    }
}

/// The linear heads on the pooled feature.
#[derive(Debug, Clone)]
struct Heads {
    style: Linear,
    objects: Linear,
    colours: Linear,
    pairs: Linear,
    sky: Linear,
    ground: Linear,
}

/// The probe CNN (weights named `blocks.{i}.conv`, `blocks.{i}.norm`, `heads.{name}`).
#[derive(Debug, Clone)]
pub struct ProbeNet {
    blocks: Vec<ConvBlock>,
    heads: Heads,
}

/// What [`ProbeNet::forward`] returns for a batch of `n` pictures: the pooled features and
/// one logit tensor per head.
#[derive(Debug, Clone)]
pub struct ProbeOutput {
    /// Pooled features `[n, feature_dim]`.
    pub features: Tensor,
    /// Style logits `[n, NUM_STYLES]` (softmax).
    pub style: Tensor,
    /// Object-present logits `[n, NUM_OBJECTS]` (sigmoid each).
    pub objects: Tensor,
    /// Colour-present logits `[n, NUM_COLOURS]` (sigmoid each).
    pub colours: Tensor,
    /// (Object, colour)-present logits `[n, NUM_PAIRS]` (sigmoid each).
    pub pairs: Tensor,
    /// Sky logits `[n, NUM_SKIES]` (softmax).
    pub sky: Tensor,
    /// Ground logits `[n, NUM_GROUNDS]` (softmax).
    pub ground: Tensor,
}

impl ProbeNet {
    /// Builds the network, taking its tensors from `vb`.
    pub fn new(vb: VarBuilder, cfg: &ProbeConfig) -> candle_core::Result<Self> {
        let mut blocks = Vec::with_capacity(cfg.channels.len());
        let mut cin = 3;
        for (i, &cout) in cfg.channels.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            blocks.push(ConvBlock::new(
                cin,
                cout,
                stride,
                cfg.norm_groups,
                vb.pp("blocks").pp(i),
            )?);
            cin = cout;
        }
        let d = cfg.feature_dim();
        let vh = vb.pp("heads");
        let heads = Heads {
            style: linear(d, NUM_STYLES, vh.pp("style"))?,
            objects: linear(d, NUM_OBJECTS, vh.pp("objects"))?,
            colours: linear(d, NUM_COLOURS, vh.pp("colours"))?,
            pairs: linear(d, NUM_PAIRS, vh.pp("pairs"))?,
            sky: linear(d, NUM_SKIES, vh.pp("sky"))?,
            ground: linear(d, NUM_GROUNDS, vh.pp("ground"))?,
        };
        Ok(Self { blocks, heads })
    }

    /// Runs pictures `[n, 3, s, s]` with values in `[-1, 1]` (see [`images_to_tensor`]).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<ProbeOutput> {
        let mut h = x.clone();
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        let features = h.flatten_from(2)?.mean(D::Minus1)?;
        let hd = &self.heads;
        Ok(ProbeOutput {
            style: hd.style.forward(&features)?,
            objects: hd.objects.forward(&features)?,
            colours: hd.colours.forward(&features)?,
            pairs: hd.pairs.forward(&features)?,
            sky: hd.sky.forward(&features)?,
            ground: hd.ground.forward(&features)?,
            features,
        })
    }
}

/// The labels of one picture, as the renderer knows them or as the probes predict them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeLabels {
    /// The style.
    pub style: Style,
    /// Which object kinds are present, in [`ObjectKind::ALL`] order.
    pub objects: [bool; NUM_OBJECTS],
    /// Which colour words are present, in [`Colour::ALL`] order.
    pub colours: [bool; NUM_COLOURS],
    /// Which (kind, colour) pairs are present, index `kind · NUM_COLOURS + colour`.
    pub pairs: [bool; NUM_PAIRS],
    /// The sky.
    pub sky: Sky,
    /// The ground.
    pub ground: Ground,
}

impl ProbeLabels {
    /// The true labels of `scene` rendered in `style`.
    pub fn of_scene(scene: &Scene, style: Style) -> Self {
        let mut objects = [false; NUM_OBJECTS];
        let mut colours = [false; NUM_COLOURS];
        let mut pairs = [false; NUM_PAIRS];
        for o in &scene.objects {
            let k = object_index(o.kind);
            let c = colour_index(o.colour);
            objects[k] = true;
            colours[c] = true;
            pairs[k * NUM_COLOURS + c] = true;
        }
        Self {
            style,
            objects,
            colours,
            pairs,
            sky: scene.sky,
            ground: scene.ground,
        }
    }

    /// The object kinds present.
    pub fn object_kinds(&self) -> Vec<ObjectKind> {
        ObjectKind::ALL
            .into_iter()
            .zip(self.objects)
            .filter_map(|(k, on)| on.then_some(k))
            .collect()
    }
}

/// Position of `style` in [`Style::ALL`].
pub fn style_index(style: Style) -> usize {
    Style::ALL.iter().position(|&s| s == style).unwrap_or(0)
}

/// Position of `kind` in [`ObjectKind::ALL`].
pub fn object_index(kind: ObjectKind) -> usize {
    ObjectKind::ALL.iter().position(|&k| k == kind).unwrap_or(0)
}

/// Position of `colour` in [`Colour::ALL`].
pub fn colour_index(colour: Colour) -> usize {
    Colour::ALL.iter().position(|&c| c == colour).unwrap_or(0)
}

/// Position of `sky` in [`Sky::ALL`].
pub fn sky_index(sky: Sky) -> usize {
    Sky::ALL.iter().position(|&s| s == sky).unwrap_or(0)
}

/// Position of `ground` in [`Ground::ALL`].
pub fn ground_index(ground: Ground) -> usize {
    Ground::ALL.iter().position(|&g| g == ground).unwrap_or(0)
}

/// The label names the heads were trained on, in output order; checked on load so that
/// probes never silently read a reordered vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelVocabulary {
    /// Style ids ([`Style::id`]).
    pub styles: Vec<String>,
    /// Object kind names.
    pub objects: Vec<String>,
    /// Colour names.
    pub colours: Vec<String>,
    /// Sky names.
    pub skies: Vec<String>,
    /// Ground names.
    pub grounds: Vec<String>,
}

impl LabelVocabulary {
    /// The toy world's vocabulary as this build knows it.
    pub fn current() -> Self {
        Self {
            styles: Style::ALL.iter().map(|s| s.id().to_string()).collect(),
            objects: ObjectKind::ALL
                .iter()
                .map(|k| k.name().to_string())
                .collect(),
            colours: Colour::ALL.iter().map(|c| c.name().to_string()).collect(),
            skies: Sky::ALL.iter().map(|s| s.name().to_string()).collect(),
            grounds: Ground::ALL.iter().map(|g| g.name().to_string()).collect(),
        }
    }
}

impl LabelVocabulary {
    /// The first list that differs from `other`'s, said in words (`None` when equal).
    pub fn difference(&self, other: &Self) -> Option<String> {
        [
            ("style", &self.styles, &other.styles),
            ("object", &self.objects, &other.objects),
            ("colour", &self.colours, &other.colours),
            ("sky", &self.skies, &other.skies),
            ("ground", &self.grounds, &other.grounds),
        ]
        .into_iter()
        .find(|(_, a, b)| a != b)
        .map(|(what, a, b)| format!("{what} labels {a:?} in the file, {b:?} in this build"))
    }
}

/// The contents of [`CONFIG_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The network's shape.
    pub config: ProbeConfig,
    /// The heads' label order.
    pub labels: LabelVocabulary,
    /// Accuracy on held-out renders, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<ProbeAccuracy>,
    /// How the weights were trained, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<ProbeTraining>,
}

impl ProbeFile {
    /// A file for `config` with the current vocabulary and nothing measured yet.
    pub fn new(config: ProbeConfig) -> Self {
        Self {
            format: FORMAT.to_string(),
            version: FORMAT_VERSION,
            config,
            labels: LabelVocabulary::current(),
            accuracy: None,
            training: None,
        }
    }
}

/// A probe network with its file contents, ready to classify pictures.
pub struct Probes {
    file: ProbeFile,
    net: ProbeNet,
    varmap: VarMap,
    device: Device,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("file", &self.file)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Probes {
    /// Fresh probes with PyTorch-style random weights drawn from `seed` (for training).
    pub fn fresh(config: ProbeConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let varmap = VarMap::new();
        let vb = PyTorchInit::var_builder(&varmap, seed, DType::F32, device);
        let net = ProbeNet::new(vb, &config)?;
        Ok(Self {
            file: ProbeFile::new(config),
            net,
            varmap,
            device: device.clone(),
        })
    }

    /// Loads `dir/probes.json` and `dir/probes.safetensors` (see [`Probes::load_files`]).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_files(&dir.join(CONFIG_FILE), &dir.join(WEIGHTS_FILE), device)
    }

    /// Loads probes strictly: the JSON must be a [`ProbeFile`] of this format and
    /// vocabulary, and the weights must hold exactly the tensors its config asks for, each
    /// with its shape.
    pub fn load_files(json: &Path, weights: &Path, device: &Device) -> Result<Self> {
        let config_error = |message: String| Error::Config {
            path: json.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(json).map_err(|source| Error::Io {
            path: json.to_path_buf(),
            source,
        })?;
        let file: ProbeFile = serde_json::from_str(&text)
            .map_err(|e| config_error(format!("not a probe config: {e}")))?;
        if file.format != FORMAT {
            return Err(config_error(format!(
                "format is {:?}, expected {FORMAT:?}",
                file.format
            )));
        }
        if file.version != FORMAT_VERSION {
            return Err(config_error(format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION})",
                file.version
            )));
        }
        if let Some(diff) = file.labels.difference(&LabelVocabulary::current()) {
            return Err(config_error(format!(
                "the probes were trained on another label vocabulary: {diff}"
            )));
        }
        file.config
            .validate()
            .map_err(|e| config_error(e.to_string()))?;
        let weights_error = |message: String| Error::Config {
            path: weights.to_path_buf(),
            message,
        };
        let varmap = VarMap::new();
        let store = Arc::new(WeightStore::trainable(&[weights], &varmap)?);
        let vb = store.var_builder(DType::F32, device);
        let net = ProbeNet::new(vb, &file.config).map_err(|e| {
            weights_error(format!(
                "the weights do not fit the network {} describes: {}",
                json.display(),
                ModelError::from(e)
            ))
        })?;
        let unused = store.unused();
        if !unused.is_empty() {
            return Err(weights_error(format!(
                "unexpected tensors not used by the probe network: {}",
                unused.join(", ")
            )));
        }
        Ok(Self {
            file,
            net,
            varmap,
            device: device.clone(),
        })
    }

    /// Writes [`WEIGHTS_FILE`] and [`CONFIG_FILE`] into `dir` (created if missing), each
    /// atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        files::create_dir_all(dir)?;
        save_safetensors_atomic(&varmap_tensors(&self.varmap), &dir.join(WEIGHTS_FILE))?;
        let json = serde_json::to_string_pretty(&self.file).map_err(|source| Error::Json {
            what: "the probe config".into(),
            source,
        })?;
        Ok(files::write(&dir.join(CONFIG_FILE), format!("{json}\n"))?)
    }

    /// The file contents (config, vocabulary, accuracy, training).
    pub fn file(&self) -> &ProbeFile {
        &self.file
    }

    /// Mutable file contents, to record accuracy and training before saving.
    pub fn file_mut(&mut self) -> &mut ProbeFile {
        &mut self.file
    }

    /// The network's shape.
    pub fn config(&self) -> &ProbeConfig {
        &self.file.config
    }

    /// The network.
    pub fn net(&self) -> &ProbeNet {
        &self.net
    }

    /// The trainable variables (for the optimizer).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the network on `images` in chunks and concatenates the outputs.
    pub fn forward_images(&self, images: &[RgbImage]) -> Result<ProbeOutput> {
        if images.is_empty() {
            return Err(Error::InvalidRequest("no images to probe".into()));
        }
        let mut parts = Vec::new();
        for chunk in images.chunks(CHUNK) {
            let x = images_to_tensor(chunk, self.config().image_size, &self.device)?;
            parts.push(self.net.forward(&x)?);
        }
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        let cat = |f: fn(&ProbeOutput) -> &Tensor| -> candle_core::Result<Tensor> {
            let ts: Vec<&Tensor> = parts.iter().map(f).collect();
            Tensor::cat(&ts, 0)
        };
        Ok(ProbeOutput {
            features: cat(|o| &o.features)?,
            style: cat(|o| &o.style)?,
            objects: cat(|o| &o.objects)?,
            colours: cat(|o| &o.colours)?,
            pairs: cat(|o| &o.pairs)?,
            sky: cat(|o| &o.sky)?,
            ground: cat(|o| &o.ground)?,
        })
    }

    /// What the probes see in each picture.
    pub fn predict(&self, images: &[RgbImage]) -> Result<Vec<ProbeLabels>> {
        decode(&self.forward_images(images)?)
    }

    /// Probe features `[n, feature_dim]` of `images`.
    pub fn features(&self, images: &[RgbImage]) -> Result<Tensor> {
        Ok(self.forward_images(images)?.features)
    }
}

/// Turns network outputs into labels: argmax for style, sky and ground, probability > ½
/// (logit > 0) for the multi-label heads.
pub fn decode(out: &ProbeOutput) -> Result<Vec<ProbeLabels>> {
    let style = out.style.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let sky = out.sky.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let ground = out.ground.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let objects = out.objects.to_vec2::<f32>()?;
    let colours = out.colours.to_vec2::<f32>()?;
    let pairs = out.pairs.to_vec2::<f32>()?;
    let on = |v: &[f32], i: usize| v.get(i).is_some_and(|&x| x > 0.0);
    Ok((0..style.len())
        .map(|i| ProbeLabels {
            style: Style::ALL[style[i] as usize % NUM_STYLES],
            objects: std::array::from_fn(|k| on(&objects[i], k)),
            colours: std::array::from_fn(|c| on(&colours[i], c)),
            pairs: std::array::from_fn(|p| on(&pairs[i], p)),
            sky: Sky::ALL[sky[i] as usize % NUM_SKIES],
            ground: Ground::ALL[ground[i] as usize % NUM_GROUNDS],
        })
        .collect())
}

/// Pictures as a `[n, 3, size, size]` `f32` tensor with values in `[-1, 1]`
/// ([`crate::image_io::image_to_tensor`] per picture); every picture must be
/// `size`×`size`.
pub fn images_to_tensor(images: &[RgbImage], size: usize, device: &Device) -> Result<Tensor> {
    if images.is_empty() {
        return Ok(Tensor::zeros((0, 3, size, size), DType::F32, device)?);
    }
    let planes = images
        .iter()
        .enumerate()
        .map(|(i, img)| {
            if img.width() as usize != size || img.height() as usize != size {
                return Err(Error::InvalidRequest(format!(
                    "the probes read {size}×{size} pictures; picture {i} is {}×{}",
                    img.width(),
                    img.height()
                )));
            }
            image_to_tensor(img, &Device::Cpu)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&planes, 0)?.to_device(device)?)
}
