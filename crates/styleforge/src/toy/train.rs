//! Training the probes on toy-world renders, and measuring them on held-out renders.
//!
//! The loop (one screen, nanoGPT-style): render `train_samples` pictures of a seeded
//! [`World`] over all seven styles once, then for every step draw a batch of indices (and
//! a horizontal flip per picture, which keeps every label) from one ChaCha generator, run
//! the network and take the sum of the heads' losses (softmax cross-entropy for style,
//! sky and ground; sigmoid cross-entropy summed over labels for objects, colours and
//! (object, colour) pairs), and update with the project's in-place AdamW under a linear
//! warm-up and cosine decay. The same generator first draws the initialisation seed, so a
//! run is a pure function of its options. Accuracy is then measured on renders of a world
//! with another seed ([`held_out_seed`]).

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use styleforge_world::{Colour, ObjectKind, Style, World};

use super::probes::{
    ground_index, images_to_tensor, sky_index, style_index, ProbeConfig, ProbeLabels, ProbeOutput,
    Probes, NUM_COLOURS, NUM_GROUNDS, NUM_OBJECTS, NUM_PAIRS, NUM_SKIES, NUM_STYLES,
};
use crate::optim::{AdamW, AdamWConfig};
use crate::progress::Progress;
use crate::training::lr::{LrPlan, LrSchedule};
use crate::{Error, Result};

/// How to train probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeTrainOptions {
    /// Seed of everything: the training world, initialisation and batch order.
    pub seed: u64,
    /// Optimizer steps.
    pub steps: usize,
    /// Pictures per step.
    pub batch_size: usize,
    /// Distinct training pictures (samples `0..train_samples` of `World::new(seed)`),
    /// cycled through by random batches.
    pub train_samples: usize,
    /// Held-out pictures the accuracy is measured on (from [`held_out_seed`]`(seed)`).
    pub held_out_samples: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up before the cosine decay.
    pub warmup_steps: usize,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// The network's shape.
    pub config: ProbeConfig,
    /// The command line that asked for the run, recorded in the probe file.
    pub command: Option<String>,
}

impl Default for ProbeTrainOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 4000,
            batch_size: 64,
            train_samples: 40_000,
            held_out_samples: 2100,
            lr: 2e-3,
            warmup_steps: 100,
            weight_decay: 1e-2,
            config: ProbeConfig::default(),
            command: None,
        }
    }
}

/// The seed of the held-out world for a training seed: a different stream of scenes and
/// render noise from the training world's.
pub fn held_out_seed(seed: u64) -> u64 {
    seed ^ 0xA5A5_5EED_0000_0001
}

/// How a probe set was trained (recorded in its JSON file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeTraining {
    /// The options' seed (training world, init, batches).
    pub seed: u64,
    /// Optimizer steps.
    pub steps: usize,
    /// Pictures per step.
    pub batch_size: usize,
    /// Distinct training pictures.
    pub train_samples: usize,
    /// Seed of the held-out world.
    pub held_out_seed: u64,
    /// Held-out pictures measured.
    pub held_out_samples: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Mean loss over the last 100 steps.
    pub final_loss: f64,
    /// Wall-clock seconds rendering the training set.
    pub render_seconds: f64,
    /// Wall-clock seconds of the optimizer steps.
    pub train_seconds: f64,
    /// The command line that made the probes, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// Accuracy of probes on a labelled set of pictures. Per-label maps are keyed by the
/// label's name ([`Style::id`], object and colour words).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeAccuracy {
    /// Pictures measured.
    pub images: usize,
    /// Fraction whose style is right.
    pub style: f64,
    /// Style accuracy per true style.
    pub style_by_style: BTreeMap<String, f64>,
    /// Fraction whose set of object kinds is exactly right.
    pub objects_exact: f64,
    /// Exact object-set accuracy per style.
    pub objects_exact_by_style: BTreeMap<String, f64>,
    /// F1 of each object kind's present/absent call.
    pub objects_f1: BTreeMap<String, f64>,
    /// Mean of `objects_f1`.
    pub objects_macro_f1: f64,
    /// Fraction whose set of colours is exactly right.
    pub colours_exact: f64,
    /// Exact colour-set accuracy per style.
    pub colours_exact_by_style: BTreeMap<String, f64>,
    /// F1 of each colour's present/absent call.
    pub colours_f1: BTreeMap<String, f64>,
    /// Mean of `colours_f1`.
    pub colours_macro_f1: f64,
    /// Fraction whose set of (object, colour) pairs is exactly right.
    pub pairs_exact: f64,
    /// Micro-averaged F1 of the (object, colour) pair calls.
    pub pairs_micro_f1: f64,
    /// Fraction whose sky is right.
    pub sky: f64,
    /// Fraction whose ground is right.
    pub ground: f64,
}

/// Renders samples `range` of `world` with their true labels (in parallel; the result
/// depends only on the world and the range).
pub fn render_set(world: &World, range: std::ops::Range<u64>) -> (Vec<RgbImage>, Vec<ProbeLabels>) {
    range
        .into_par_iter()
        .map(|i| {
            let s = world.sample(i);
            let labels = ProbeLabels::of_scene(&s.scene, s.style);
            (s.image, labels)
        })
        .unzip()
}

/// Renders `n` samples of `world` in chunks, reporting progress under `label`.
fn render_with_progress(
    world: &World,
    n: usize,
    label: &str,
    progress: &mut dyn Progress,
) -> (Vec<RgbImage>, Vec<ProbeLabels>) {
    const STEP: usize = 2000;
    progress.begin(label, n);
    let mut images = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let end = (start + STEP).min(n);
        let (im, la) = render_set(world, start as u64..end as u64);
        images.extend(im);
        labels.extend(la);
        progress.advance(end - start);
        start = end;
    }
    progress.finish();
    (images, labels)
}

/// Trains probes as `opts` say, then measures them on held-out renders; the accuracy is
/// also recorded in the returned probes' file, with the training run.
pub fn train_probes(
    opts: &ProbeTrainOptions,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<(Probes, ProbeAccuracy)> {
    if opts.steps == 0 || opts.batch_size == 0 || opts.train_samples == 0 {
        return Err(Error::InvalidRequest(
            "probe training needs steps, batch_size and train_samples > 0".into(),
        ));
    }
    if opts.held_out_samples == 0 {
        return Err(Error::InvalidRequest("held_out_samples must be > 0".into()));
    }
    let device = device.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut probes = Probes::fresh(opts.config.clone(), rng.gen(), &device)?;

    let world = World::new(opts.seed).with_size(opts.config.image_size as u32);
    let t0 = Instant::now();
    let (images, labels) = render_with_progress(&world, opts.train_samples, "render", progress);
    let render_seconds = t0.elapsed().as_secs_f64();

    let mut vars: Vec<(String, candle_core::Var)> = probes
        .varmap()
        .data()
        .lock()
        .map_err(|_| Error::msg("varmap lock poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = AdamW::new(
        vars,
        AdamWConfig {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..AdamWConfig::default()
        },
    )?;

    let t1 = Instant::now();
    let mut recent = std::collections::VecDeque::with_capacity(100);
    // Linear warm-up, then cosine decay to 1% of the peak.
    let lr_plan = LrPlan {
        floor: 0.01,
        ..LrPlan::new(opts.lr, opts.warmup_steps, opts.steps, LrSchedule::Cosine)
    };
    progress.begin("train", opts.steps);
    for step in 0..opts.steps {
        opt.set_lr(lr_plan.at(step + 1));
        let mut batch = Vec::with_capacity(opts.batch_size);
        let mut batch_labels = Vec::with_capacity(opts.batch_size);
        for _ in 0..opts.batch_size {
            let i = rng.gen_range(0..images.len());
            let img = if rng.gen_bool(0.5) {
                image::imageops::flip_horizontal(&images[i])
            } else {
                images[i].clone()
            };
            batch.push(img);
            batch_labels.push(&labels[i]);
        }
        let x = images_to_tensor(&batch, opts.config.image_size, &device)?;
        let out = probes.net().forward(&x)?;
        let loss = probe_loss(&out, &batch_labels, &device)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(Error::NonFiniteLoss { step, value });
        }
        if recent.len() == 100 {
            recent.pop_front();
        }
        recent.push_back(value);
        let grads = loss.backward()?;
        opt.step(&grads)?;
        progress.advance(1);
    }
    progress.finish();
    let train_seconds = t1.elapsed().as_secs_f64();
    drop(images);

    let held_seed = held_out_seed(opts.seed);
    let held_world = World::new(held_seed).with_size(opts.config.image_size as u32);
    let (held_images, held_labels) =
        render_with_progress(&held_world, opts.held_out_samples, "held-out", progress);
    let accuracy = evaluate_probes(&probes, &held_images, &held_labels)?;

    let file = probes.file_mut();
    file.accuracy = Some(accuracy.clone());
    file.training = Some(ProbeTraining {
        seed: opts.seed,
        steps: opts.steps,
        batch_size: opts.batch_size,
        train_samples: opts.train_samples,
        held_out_seed: held_seed,
        held_out_samples: opts.held_out_samples,
        lr: opts.lr,
        final_loss: recent.iter().sum::<f64>() / recent.len().max(1) as f64,
        render_seconds,
        train_seconds,
        command: opts.command.clone(),
    });
    Ok((probes, accuracy))
}

/// The training loss of a batch: softmax cross-entropy for style, sky and ground plus
/// sigmoid cross-entropy summed over the object, colour and pair labels, averaged over the
/// batch.
fn probe_loss(out: &ProbeOutput, labels: &[&ProbeLabels], device: &Device) -> Result<Tensor> {
    let n = labels.len();
    let one_hot = |k: usize, idx: &dyn Fn(&ProbeLabels) -> usize| -> candle_core::Result<Tensor> {
        let mut v = vec![0f32; n * k];
        for (i, l) in labels.iter().enumerate() {
            v[i * k + idx(l)] = 1.0;
        }
        Tensor::from_vec(v, (n, k), device)
    };
    let multi =
        |k: usize, bits: &dyn Fn(&ProbeLabels) -> Vec<bool>| -> candle_core::Result<Tensor> {
            let v: Vec<f32> = labels
                .iter()
                .flat_map(|l| bits(l).into_iter().map(|b| b as u8 as f32))
                .collect();
            Tensor::from_vec(v, (n, k), device)
        };
    let style = one_hot(NUM_STYLES, &|l| style_index(l.style))?;
    let sky = one_hot(NUM_SKIES, &|l| sky_index(l.sky))?;
    let ground = one_hot(NUM_GROUNDS, &|l| ground_index(l.ground))?;
    let objects = multi(NUM_OBJECTS, &|l| l.objects.to_vec())?;
    let colours = multi(NUM_COLOURS, &|l| l.colours.to_vec())?;
    let pairs = multi(NUM_PAIRS, &|l| l.pairs.to_vec())?;
    let loss = ((((softmax_ce(&out.style, &style)? + softmax_ce(&out.sky, &sky)?)?
        + softmax_ce(&out.ground, &ground)?)?
        + sigmoid_ce(&out.objects, &objects)?)?
        + sigmoid_ce(&out.colours, &colours)?)?;
    Ok((loss + sigmoid_ce(&out.pairs, &pairs)?)?)
}

/// Mean over the batch of `-Σ target · log_softmax(logits)` (`[n, k]` each), from ops that
/// all carry a backward pass.
fn softmax_ce(logits: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(1)?.detach();
    let z = logits.broadcast_sub(&max)?;
    let lse = z.exp()?.sum_keepdim(1)?.log()?;
    let log_p = z.broadcast_sub(&lse)?;
    (log_p * target)?.sum(1)?.mean(0)?.neg()
}

/// Mean over the batch of the summed, numerically stable sigmoid cross-entropy
/// `max(x, 0) − x·y + log(1 + e^{−|x|})`.
fn sigmoid_ce(logits: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
    let soft = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    let per = ((logits.relu()? - (logits * target)?)? + soft)?;
    per.sum(1)?.mean(0)
}

/// Classifies `images` and compares with their true `labels`.
pub fn evaluate_probes(
    probes: &Probes,
    images: &[RgbImage],
    labels: &[ProbeLabels],
) -> Result<ProbeAccuracy> {
    if images.len() != labels.len() {
        return Err(Error::InvalidRequest(format!(
            "{} images but {} label sets",
            images.len(),
            labels.len()
        )));
    }
    Ok(accuracy_of(&probes.predict(images)?, labels))
}

/// Accuracy of `predicted` labels against the `truth`, picture by picture.
pub fn accuracy_of(predicted: &[ProbeLabels], truth: &[ProbeLabels]) -> ProbeAccuracy {
    let n = predicted.len().min(truth.len());
    let pairs: Vec<(&ProbeLabels, &ProbeLabels)> = predicted.iter().zip(truth).take(n).collect();
    let frac = |hits: usize, total: usize| {
        if total == 0 {
            0.0
        } else {
            hits as f64 / total as f64
        }
    };
    let share = |f: &dyn Fn(&ProbeLabels, &ProbeLabels) -> bool| {
        frac(pairs.iter().filter(|(p, t)| f(p, t)).count(), n)
    };
    let by_style = |f: &dyn Fn(&ProbeLabels, &ProbeLabels) -> bool| -> BTreeMap<String, f64> {
        Style::ALL
            .iter()
            .filter_map(|&s| {
                let of: Vec<_> = pairs.iter().filter(|(_, t)| t.style == s).collect();
                (!of.is_empty()).then(|| {
                    let hits = of.iter().filter(|(p, t)| f(p, t)).count();
                    (s.id().to_string(), frac(hits, of.len()))
                })
            })
            .collect()
    };
    let f1 = |bit: &dyn Fn(&ProbeLabels) -> bool| {
        let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
        for (p, t) in &pairs {
            match (bit(p), bit(t)) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fneg += 1,
                _ => {}
            }
        }
        frac(2 * tp, 2 * tp + fp + fneg)
    };
    let objects_f1: BTreeMap<String, f64> = ObjectKind::ALL
        .iter()
        .enumerate()
        .map(|(k, kind)| (kind.name().to_string(), f1(&|l| l.objects[k])))
        .collect();
    let colours_f1: BTreeMap<String, f64> = Colour::ALL
        .iter()
        .enumerate()
        .map(|(c, colour)| (colour.name().to_string(), f1(&|l| l.colours[c])))
        .collect();
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    for (p, t) in &pairs {
        for k in 0..NUM_PAIRS {
            match (p.pairs[k], t.pairs[k]) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fneg += 1,
                _ => {}
            }
        }
    }
    let mean = |m: &BTreeMap<String, f64>| m.values().sum::<f64>() / m.len().max(1) as f64;
    ProbeAccuracy {
        images: n,
        style: share(&|p, t| p.style == t.style),
        style_by_style: by_style(&|p, t| p.style == t.style),
        objects_exact: share(&|p, t| p.objects == t.objects),
        objects_exact_by_style: by_style(&|p, t| p.objects == t.objects),
        objects_macro_f1: mean(&objects_f1),
        objects_f1,
        colours_exact: share(&|p, t| p.colours == t.colours),
        colours_exact_by_style: by_style(&|p, t| p.colours == t.colours),
        colours_macro_f1: mean(&colours_f1),
        colours_f1,
        pairs_exact: share(&|p, t| p.pairs == t.pairs),
        pairs_micro_f1: frac(2 * tp, 2 * tp + fp + fneg),
        sky: share(&|p, t| p.sky == t.sky),
        ground: share(&|p, t| p.ground == t.ground),
    }
}
