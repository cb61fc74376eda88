//! Measures of generated toy-world pictures through the probes: the toy analogues of the
//! real evaluation's metrics.
//!
//! | real metric | toy analogue |
//! |---|---|
//! | style classifier / CLIP-I to the style | [`style_accuracy`]: share the probes call the target style |
//! | CLIP-T (does the picture show the prompt?) | [`content_scores`]: objects, colours, (object, colour) pairs, sky and ground asked by the caption and seen by the probes |
//! | FID / KID | [`probe_frechet_distance`] / [`probe_kernel_distance`]: `styleforge_eval`'s FID and KID maths on [`probe_features`] against renders of the target style |
//!
//! The `*_of` functions are pure functions of probe predictions, for callers that
//! classify once and measure several ways.

use candle_core::Tensor;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use styleforge_eval::{FeatureMatrix, KidConfig, KidResult};
use styleforge_world::{Colour, ObjectKind, Scene, Style};

use super::probes::{colour_index, object_index, ProbeLabels, Probes, NUM_COLOURS};
use crate::{Error, Result};

/// How well pictures show the content their captions asked for (each a fraction in
/// `[0, 1]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentScores {
    /// Pictures measured.
    pub images: usize,
    /// Asked object kinds the probes see, over all asked kinds.
    pub object_recall: f64,
    /// Object kinds the probes see that were asked, over all kinds seen (1 when none
    /// are seen).
    pub object_precision: f64,
    /// Pictures whose seen object set is exactly the asked one.
    pub objects_exact: f64,
    /// Asked colour words the probes see, over all asked colours.
    pub colour_accuracy: f64,
    /// Asked (object, colour) pairs the probes see, over all asked pairs ("a red house"
    /// needs a red house, not a red sun and some house).
    pub pair_accuracy: f64,
    /// Pictures whose sky is the asked one.
    pub sky_accuracy: f64,
    /// Pictures whose ground is the asked one.
    pub ground_accuracy: f64,
}

/// One picture's labels in caption words: what its caption asked for, or what the probes
/// see in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelWords {
    /// The style id (`None` where the caption names no style the probes know).
    pub style: Option<String>,
    /// Object kinds (`"house"`).
    pub objects: Vec<String>,
    /// Colour words.
    pub colours: Vec<String>,
    /// Objects with their colour (`"red house"`).
    pub pairs: Vec<String>,
    /// The sky (`"sunset"`).
    pub sky: String,
    /// The ground (`"sand"`).
    pub ground: String,
}

impl LabelWords {
    /// `labels` in words; `style` false leaves the style out.
    pub fn of(labels: &ProbeLabels, style: bool) -> Self {
        let on = |flags: &[bool]| -> Vec<usize> {
            flags
                .iter()
                .enumerate()
                .filter_map(|(i, &f)| f.then_some(i))
                .collect()
        };
        Self {
            style: style.then(|| labels.style.id().to_string()),
            objects: labels
                .object_kinds()
                .into_iter()
                .map(|k| k.name().to_string())
                .collect(),
            colours: on(&labels.colours)
                .into_iter()
                .map(|c| Colour::ALL[c].name().to_string())
                .collect(),
            pairs: on(&labels.pairs)
                .into_iter()
                .map(|i| {
                    let (k, c) = (i / NUM_COLOURS, i % NUM_COLOURS);
                    format!("{} {}", Colour::ALL[c].name(), ObjectKind::ALL[k].name())
                })
                .collect(),
            sky: labels.sky.name().to_string(),
            ground: labels.ground.name().to_string(),
        }
    }
}

/// What the probes see in one picture beside what its caption asked for: the per-picture
/// record behind the accuracies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PictureVerdict {
    /// The picture's file name.
    pub file: String,
    /// Its prompt.
    pub prompt: String,
    /// What the prompt asked for.
    pub asked: LabelWords,
    /// What the probes see.
    pub seen: LabelWords,
}

impl PictureVerdict {
    /// The verdict on a picture of `scene` asked in `style` (`None`: a style the probes
    /// do not know, such as an untrained token), as the probes labelled it.
    pub fn new(
        file: String,
        prompt: String,
        scene: &Scene,
        style: Option<Style>,
        seen: &ProbeLabels,
    ) -> Self {
        let asked = ProbeLabels::of_scene(scene, style.unwrap_or(seen.style));
        Self {
            file,
            prompt,
            asked: LabelWords::of(&asked, style.is_some()),
            seen: LabelWords::of(seen, true),
        }
    }
}

/// Share of `predicted` labels whose style is `target` (0 for an empty slice).
pub fn style_accuracy_of(predicted: &[ProbeLabels], target: Style) -> f64 {
    if predicted.is_empty() {
        return 0.0;
    }
    predicted.iter().filter(|p| p.style == target).count() as f64 / predicted.len() as f64
}

/// Share of `images` the probes take for `target` style.
pub fn style_accuracy(probes: &Probes, images: &[RgbImage], target: Style) -> Result<f64> {
    Ok(style_accuracy_of(&probes.predict(images)?, target))
}

/// Content scores of `predicted` labels against the `scenes` the captions described,
/// picture by picture.
pub fn content_scores_of(predicted: &[ProbeLabels], scenes: &[Scene]) -> Result<ContentScores> {
    if predicted.len() != scenes.len() {
        return Err(Error::InvalidRequest(format!(
            "{} pictures but {} scenes",
            predicted.len(),
            scenes.len()
        )));
    }
    let (mut asked_k, mut hit_k, mut seen_k) = (0usize, 0, 0);
    let (mut asked_c, mut hit_c, mut asked_p, mut hit_p) = (0usize, 0, 0, 0);
    let (mut exact, mut sky, mut ground) = (0usize, 0, 0);
    for (p, scene) in predicted.iter().zip(scenes) {
        let truth = ProbeLabels::of_scene(scene, p.style);
        for k in 0..truth.objects.len() {
            asked_k += truth.objects[k] as usize;
            seen_k += p.objects[k] as usize;
            hit_k += (truth.objects[k] && p.objects[k]) as usize;
        }
        for c in 0..NUM_COLOURS {
            asked_c += truth.colours[c] as usize;
            hit_c += (truth.colours[c] && p.colours[c]) as usize;
        }
        for o in &scene.objects {
            asked_p += 1;
            hit_p += p.pairs[object_index(o.kind) * NUM_COLOURS + colour_index(o.colour)] as usize;
        }
        exact += (p.objects == truth.objects) as usize;
        sky += (p.sky == scene.sky) as usize;
        ground += (p.ground == scene.ground) as usize;
    }
    let frac = |a: usize, b: usize, empty: f64| if b == 0 { empty } else { a as f64 / b as f64 };
    let n = predicted.len();
    Ok(ContentScores {
        images: n,
        object_recall: frac(hit_k, asked_k, 0.0),
        object_precision: frac(hit_k, seen_k, 1.0),
        objects_exact: frac(exact, n, 0.0),
        colour_accuracy: frac(hit_c, asked_c, 0.0),
        pair_accuracy: frac(hit_p, asked_p, 0.0),
        sky_accuracy: frac(sky, n, 0.0),
        ground_accuracy: frac(ground, n, 0.0),
    })
}

/// How well `images` show `scenes` (the scenes their captions were made from), as the
/// probes see it.
pub fn content_scores(
    probes: &Probes,
    images: &[RgbImage],
    scenes: &[Scene],
) -> Result<ContentScores> {
    if images.len() != scenes.len() {
        return Err(Error::InvalidRequest(format!(
            "{} pictures but {} scenes",
            images.len(),
            scenes.len()
        )));
    }
    content_scores_of(&probes.predict(images)?, scenes)
}

/// Probe features `[n, feature_dim]` of `images` (the pooled last convolution).
pub fn probe_features(probes: &Probes, images: &[RgbImage]) -> Result<Tensor> {
    probes.features(images)
}

/// Row-major features and their dimension.
fn feature_rows(probes: &Probes, images: &[RgbImage]) -> Result<(Vec<f32>, usize)> {
    let f = probe_features(probes, images)?;
    let dim = f.dim(1)?;
    Ok((f.flatten_all()?.to_vec1::<f32>()?, dim))
}

fn eval_error(what: &str, e: styleforge_eval::EvalError) -> Error {
    crate::evaluation::eval_error(what)(e)
}

/// Fréchet distance between the probe features of `generated` and `reference` pictures
/// (FID's formula in probe-feature space; at least two pictures each).
pub fn probe_frechet_distance(
    probes: &Probes,
    generated: &[RgbImage],
    reference: &[RgbImage],
) -> Result<f64> {
    let (g, dim) = feature_rows(probes, generated)?;
    let (r, _) = feature_rows(probes, reference)?;
    let what = "probe Fréchet distance";
    let gm = FeatureMatrix::new(&g, dim).map_err(|e| eval_error(what, e))?;
    let rm = FeatureMatrix::new(&r, dim).map_err(|e| eval_error(what, e))?;
    styleforge_eval::fid(&gm, &rm).map_err(|e| eval_error(what, e))
}

/// Kernel distance (KID's unbiased MMD² with the cubic kernel) between the probe features
/// of `generated` and `reference` pictures.
pub fn probe_kernel_distance(
    probes: &Probes,
    generated: &[RgbImage],
    reference: &[RgbImage],
    config: &KidConfig,
) -> Result<KidResult> {
    let (g, dim) = feature_rows(probes, generated)?;
    let (r, _) = feature_rows(probes, reference)?;
    let what = "probe kernel distance";
    let gm = FeatureMatrix::new(&g, dim).map_err(|e| eval_error(what, e))?;
    let rm = FeatureMatrix::new(&r, dim).map_err(|e| eval_error(what, e))?;
    styleforge_eval::kid(&gm, &rm, config).map_err(|e| eval_error(what, e))
}

/// How well a base model draws what its captions ask, by the probes: the figures the
/// shipped toy base model is held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseScores {
    /// Pictures measured (prompts × seeds).
    pub images: usize,
    /// Share of pictures in the style their caption names.
    pub style_accuracy: f64,
    /// What the probes see of the captions' content.
    pub content: ContentScores,
}

/// How the base model is scored: which captions, how many seeds, how it samples.
#[derive(Debug, Clone)]
pub struct BaseScoring {
    /// World the captions come from (`World::new(world_seed)`, samples `0..prompts`).
    pub world_seed: u64,
    /// Captions; caption `i` names the base style `styles[i % styles.len()]`.
    pub prompts: usize,
    /// Seeds per caption (`0..seeds` for the first caption's pictures, then onwards).
    pub seeds: usize,
    /// Styles the captions name.
    pub styles: Vec<Style>,
    /// Sampler, steps and guidance.
    pub sampling: crate::pipelines::SamplingOptions,
}

impl Default for BaseScoring {
    /// 16 captions of `World::new(4242)` cycling the four base styles, 2 seeds each, 25
    /// steps of the model's default sampler at guidance 4.
    fn default() -> Self {
        Self {
            world_seed: 4242,
            prompts: 16,
            seeds: 2,
            styles: Style::BASE.to_vec(),
            sampling: crate::pipelines::SamplingOptions {
                steps: 25,
                guidance_scale: 4.0,
                ..Default::default()
            },
        }
    }
}

/// Samples `scoring.prompts × scoring.seeds` pictures from `sd` (caption `i`, seed
/// `i * seeds + j`) and measures them with `probes`.
pub fn base_model_scores(
    sd: &crate::pipelines::StableDiffusion,
    probes: &Probes,
    scoring: &BaseScoring,
) -> Result<BaseScores> {
    if scoring.prompts == 0 || scoring.seeds == 0 || scoring.styles.is_empty() {
        return Err(Error::InvalidRequest(
            "base scoring needs at least one caption, one seed and one style".into(),
        ));
    }
    let world = styleforge_world::World::new(scoring.world_seed);
    let size = sd.native_size();
    let (mut prompts, mut seeds, mut targets, mut scenes) = (vec![], vec![], vec![], vec![]);
    for i in 0..scoring.prompts {
        let style = scoring.styles[i % scoring.styles.len()];
        let sample = world.sample_in_style(i as u64, style);
        for j in 0..scoring.seeds {
            prompts.push(sample.caption.clone());
            seeds.push((i * scoring.seeds + j) as u64);
            targets.push(style);
            scenes.push(sample.scene.clone());
        }
    }
    let images = sd.txt2img_prompts(
        &prompts,
        &seeds,
        &scoring.sampling,
        size,
        size,
        &mut crate::progress::NoProgress,
    )?;
    let images = (0..prompts.len())
        .map(|j| crate::image_io::tensor_to_image(&images.get(j)?))
        .collect::<Result<Vec<_>>>()?;
    let labels = probes.predict(&images)?;
    let hits = labels
        .iter()
        .zip(&targets)
        .filter(|(l, t)| l.style == **t)
        .count();
    Ok(BaseScores {
        images: labels.len(),
        style_accuracy: hits as f64 / labels.len() as f64,
        content: content_scores_of(&labels, &scenes)?,
    })
}
