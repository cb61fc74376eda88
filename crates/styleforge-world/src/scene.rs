//! The scene vocabulary (objects, colours, skies, grounds) and a seeded scene sampler.
//!
//! A [`Scene`] is the ground truth of one picture: everything a renderer draws is decided
//! here (positions are fractions of the canvas, so one scene renders at any size), and
//! its labels are what captions and probes are checked against.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The kinds of object a scene can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A standing person; the colour word is their shirt.
    Person,
    /// A house; the colour word is its walls (the roof is always brown).
    House,
    /// A tree; the colour word is its crown.
    Tree,
    /// The sun, only ever in the sky (never at night, never alone).
    Sun,
    /// A cat seen from the side.
    Cat,
    /// A car seen from the side; the colour word is its body.
    Car,
}

impl ObjectKind {
    /// Every object kind.
    pub const ALL: [ObjectKind; 6] = [
        ObjectKind::Person,
        ObjectKind::House,
        ObjectKind::Tree,
        ObjectKind::Sun,
        ObjectKind::Cat,
        ObjectKind::Car,
    ];

    /// The kinds that stand on the ground (all but the sun).
    pub const ON_GROUND: [ObjectKind; 5] = [
        ObjectKind::Person,
        ObjectKind::House,
        ObjectKind::Tree,
        ObjectKind::Cat,
        ObjectKind::Car,
    ];

    /// The caption word (`"house"`).
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Person => "person",
            ObjectKind::House => "house",
            ObjectKind::Tree => "tree",
            ObjectKind::Sun => "sun",
            ObjectKind::Cat => "cat",
            ObjectKind::Car => "car",
        }
    }
}

/// The colour words. Six saturated hues far apart at 32×32; white and black are left out
/// because they vanish against snow and the night sky, and pink/brown read as red/orange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Colour {
    /// Red.
    Red,
    /// Orange.
    Orange,
    /// Yellow.
    Yellow,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Purple.
    Purple,
}

impl Colour {
    /// Every colour word.
    pub const ALL: [Colour; 6] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Blue,
        Colour::Purple,
    ];

    /// The caption word (`"red"`).
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Orange => "orange",
            Colour::Yellow => "yellow",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Purple => "purple",
        }
    }

    /// The sRGB value the plain renderer paints, each channel in `[0, 1]`.
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Colour::Red => [0.88, 0.12, 0.12],
            Colour::Orange => [1.0, 0.55, 0.05],
            Colour::Yellow => [1.0, 0.90, 0.15],
            Colour::Green => [0.10, 0.75, 0.20],
            Colour::Blue => [0.15, 0.30, 0.95],
            Colour::Purple => [0.60, 0.20, 0.80],
        }
    }
}

/// The sky: time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sky {
    /// A blue day sky.
    Day,
    /// A violet-to-orange sunset gradient.
    Sunset,
    /// A dark blue night sky with a few stars.
    Night,
}

impl Sky {
    /// Every sky.
    pub const ALL: [Sky; 3] = [Sky::Day, Sky::Sunset, Sky::Night];

    /// The label word (`"sunset"`).
    pub fn name(self) -> &'static str {
        match self {
            Sky::Day => "day",
            Sky::Sunset => "sunset",
            Sky::Night => "night",
        }
    }

    /// The caption phrase (`"at sunset"`).
    pub fn phrase(self) -> &'static str {
        match self {
            Sky::Day => "by day",
            Sky::Sunset => "at sunset",
            Sky::Night => "at night",
        }
    }

    /// The sky colour at height `t` (0 at the top of the picture, 1 at the horizon).
    pub fn rgb_at(self, t: f32) -> [f32; 3] {
        let (top, bottom) = match self {
            Sky::Day => ([0.30, 0.58, 0.95], [0.72, 0.86, 1.0]),
            Sky::Sunset => ([0.38, 0.24, 0.55], [1.0, 0.62, 0.35]),
            Sky::Night => ([0.02, 0.03, 0.12], [0.08, 0.11, 0.32]),
        };
        mix(top, bottom, t.clamp(0.0, 1.0))
    }
}

/// The ground.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ground {
    /// Green grass.
    Grass,
    /// Pale sand.
    Sand,
    /// White snow.
    Snow,
}

impl Ground {
    /// Every ground.
    pub const ALL: [Ground; 3] = [Ground::Grass, Ground::Sand, Ground::Snow];

    /// The label and caption word (`"grass"`).
    pub fn name(self) -> &'static str {
        match self {
            Ground::Grass => "grass",
            Ground::Sand => "sand",
            Ground::Snow => "snow",
        }
    }

    /// The base sRGB colour of the ground.
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Ground::Grass => [0.30, 0.60, 0.22],
            Ground::Sand => [0.88, 0.78, 0.52],
            Ground::Snow => [0.93, 0.95, 0.98],
        }
    }
}

/// Where an object stands, left to right; captions list objects in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// The left third (two-object scenes).
    Left,
    /// The middle (one-object scenes).
    Centre,
    /// The right third (two-object scenes).
    Right,
}

impl Slot {
    /// The slot's nominal horizontal centre, as a fraction of the width.
    pub fn x(self) -> f32 {
        match self {
            Slot::Left => 0.28,
            Slot::Centre => 0.5,
            Slot::Right => 0.72,
        }
    }

    /// The label word (`"left"`).
    pub fn name(self) -> &'static str {
        match self {
            Slot::Left => "left",
            Slot::Centre => "centre",
            Slot::Right => "right",
        }
    }
}

/// One object of a scene, in canvas fractions (0..1 both ways, y down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SceneObject {
    /// What it is.
    pub kind: ObjectKind,
    /// Its colour word.
    pub colour: Colour,
    /// Its slot.
    pub slot: Slot,
    /// Horizontal centre.
    pub x: f32,
    /// Where it touches the ground (for the sun: the centre of its disc).
    pub y: f32,
    /// Size factor around 1.
    pub scale: f32,
    /// Whether it faces left (cats and cars).
    pub facing_left: bool,
}

/// One scene: the ground-truth labels and every choice a renderer needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// The sky.
    pub sky: Sky,
    /// The ground.
    pub ground: Ground,
    /// Height of the horizon, as a fraction of the height from the top.
    pub horizon: f32,
    /// One or two objects, sorted by slot (left to right).
    pub objects: Vec<SceneObject>,
    /// Star positions (night only), canvas fractions `[x, y]`.
    pub stars: Vec<[f32; 2]>,
    /// Seed of the ground's speckle texture.
    pub texture_seed: u64,
}

impl Scene {
    /// Whether the scene holds an object of `kind`.
    pub fn contains(&self, kind: ObjectKind) -> bool {
        self.objects.iter().any(|o| o.kind == kind)
    }
}

/// Probability that a scene holds one object rather than two.
pub const ONE_OBJECT_PROBABILITY: f64 = 0.5;

/// Smallest sRGB distance between an object's colour and the backdrop behind it; colours
/// closer than this (a green cat on grass, a yellow sun in a pale sky) are redrawn.
pub const MIN_CONTRAST: f32 = 0.35;

/// A deterministic stream of random scenes.
#[derive(Debug, Clone)]
pub struct SceneSampler {
    rng: ChaCha8Rng,
}

impl SceneSampler {
    /// A sampler whose scenes are a pure function of `seed` and their position in the stream.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The next scene.
    pub fn sample(&mut self) -> Scene {
        sample_scene(&mut self.rng)
    }
}

impl Iterator for SceneSampler {
    type Item = Scene;

    fn next(&mut self) -> Option<Scene> {
        Some(self.sample())
    }
}

/// Draws one scene from `rng`.
///
/// Rules: one or two objects; the sun only in the sky, at most one, never at night and
/// never alone; one object stands in the centre, two take the left and right slots; each
/// object's colour contrasts with what is behind it ([`MIN_CONTRAST`]).
pub fn sample_scene<R: Rng + ?Sized>(rng: &mut R) -> Scene {
    let sky = *Sky::ALL.choose(rng).unwrap_or(&Sky::Day);
    let ground = *Ground::ALL.choose(rng).unwrap_or(&Ground::Grass);
    let horizon: f32 = rng.gen_range(0.58..0.64);

    let mut kinds = Vec::with_capacity(2);
    if rng.gen_bool(ONE_OBJECT_PROBABILITY) {
        kinds.push(pick(rng, &ObjectKind::ON_GROUND));
    } else {
        let first = if sky == Sky::Night {
            pick(rng, &ObjectKind::ON_GROUND)
        } else {
            pick(rng, &ObjectKind::ALL)
        };
        let second = if first == ObjectKind::Sun || sky == Sky::Night {
            pick(rng, &ObjectKind::ON_GROUND)
        } else {
            pick(rng, &ObjectKind::ALL)
        };
        kinds.push(first);
        kinds.push(second);
    }
    let slots: Vec<Slot> = if kinds.len() == 1 {
        vec![Slot::Centre]
    } else if rng.gen_bool(0.5) {
        vec![Slot::Left, Slot::Right]
    } else {
        vec![Slot::Right, Slot::Left]
    };

    let mut objects: Vec<SceneObject> = kinds
        .iter()
        .zip(&slots)
        .map(|(&kind, &slot)| {
            let x = slot.x() + rng.gen_range(-0.04..0.04);
            let y: f32 = if kind == ObjectKind::Sun {
                rng.gen_range(0.17..0.23)
            } else {
                rng.gen_range(horizon + 0.22..horizon + 0.28).min(0.92)
            };
            let scale: f32 = rng.gen_range(0.9..1.1);
            let facing_left = rng.gen_bool(0.5);
            let colour = pick_colour(rng, kind, sky, ground, horizon, y);
            SceneObject {
                kind,
                colour,
                slot,
                x,
                y,
                scale,
                facing_left,
            }
        })
        .collect();
    objects.sort_by_key(|o| o.slot);

    let stars = if sky == Sky::Night {
        let n = rng.gen_range(3..=6);
        (0..n)
            .map(|_| {
                [
                    rng.gen_range(0.04..0.96),
                    rng.gen_range(0.04..horizon - 0.12),
                ]
            })
            .collect()
    } else {
        Vec::new()
    };

    Scene {
        sky,
        ground,
        horizon,
        objects,
        stars,
        texture_seed: rng.gen(),
    }
}

fn pick<R: Rng + ?Sized>(rng: &mut R, kinds: &[ObjectKind]) -> ObjectKind {
    *kinds.choose(rng).unwrap_or(&ObjectKind::House)
}

/// A colour that stands out from the object's backdrop; after a few failed draws, the
/// most contrasting colour.
fn pick_colour<R: Rng + ?Sized>(
    rng: &mut R,
    kind: ObjectKind,
    sky: Sky,
    ground: Ground,
    horizon: f32,
    y: f32,
) -> Colour {
    let contrast = |c: Colour| -> f32 {
        match kind {
            ObjectKind::Sun => distance(c.rgb(), sky.rgb_at(y / horizon)),
            // A tree's crown sits across the horizon.
            ObjectKind::Tree => distance(c.rgb(), ground.rgb())
                .min(distance(c.rgb(), sky.rgb_at(0.85)))
                .min(distance(c.rgb(), sky.rgb_at(0.6))),
            _ => distance(c.rgb(), ground.rgb()),
        }
    };
    for _ in 0..16 {
        let c = *Colour::ALL.choose(rng).unwrap_or(&Colour::Red);
        if contrast(c) >= MIN_CONTRAST {
            return c;
        }
    }
    Colour::ALL
        .into_iter()
        .max_by(|a, b| contrast(*a).total_cmp(&contrast(*b)))
        .unwrap_or(Colour::Red)
}

/// Linear interpolation between two colours.
pub(crate) fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// Euclidean distance between two sRGB colours.
pub(crate) fn distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}
