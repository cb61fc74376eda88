//! Draws the style data that ships with `styleforge demo`: 20 StyleRef images in one bold
//! graphic style (black outlines, flat fills from a 4-colour palette, diagonal hatching) and
//! 20 Aux images of people in a plain style (soft gradient shading, no outlines), all 32×32
//! RGB PNG with a caption file beside each, plus a labelled preview sheet.
//!
//! ```text
//! cargo run -p styleforge --example make_demo_assets --release -- assets/demo
//! ```
//!
//! writes `<out>/style/NN_name.{png,txt}`, `<out>/aux/NN_name.{png,txt}` and
//! `<out>/preview.png`. The output is fully deterministic: the pictures are built from
//! geometric shapes with a fixed-seed generator, so running it again reproduces the files.

use std::error::Error;
use std::path::Path;

use image::{Rgb, RgbImage};
use styleforge::report::ImageGrid;

/// Side of every image, in pixels.
const SIZE: u32 = 32;

// ---------------------------------------------------------------------------------------
// Deterministic randomness.

/// SplitMix64: a tiny, well-mixed generator, so the assets never depend on a library's
/// choice of algorithm.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo .. hi`.
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// Uniform in `0 .. n`.
    fn pick(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------
// Scenes: shapes in 32-pixel units, each with a material that each style renders its way.

#[derive(Debug, Clone)]
enum Shape {
    Circle {
        cx: f32,
        cy: f32,
        r: f32,
    },
    Ellipse {
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
    },
    Rect {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
    },
    Poly(Vec<(f32, f32)>),
    /// All points within `r` of the segment a-b.
    Capsule {
        a: (f32, f32),
        b: (f32, f32),
        r: f32,
    },
    /// Everything below `y = y0 + amp * sin(x * freq + phase)`.
    Below {
        y0: f32,
        amp: f32,
        freq: f32,
        phase: f32,
    },
    /// A disc with a shifted disc taken out of it.
    Crescent {
        cx: f32,
        cy: f32,
        r: f32,
        dx: f32,
    },
    /// The whole canvas.
    All,
}

impl Shape {
    fn contains(&self, x: f32, y: f32) -> bool {
        match *self {
            Shape::Circle { cx, cy, r } => (x - cx).powi(2) + (y - cy).powi(2) <= r * r,
            Shape::Ellipse { cx, cy, rx, ry } => {
                ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) <= 1.0
            }
            Shape::Rect { x0, y0, x1, y1 } => x >= x0 && x < x1 && y >= y0 && y < y1,
            Shape::Poly(ref pts) => {
                let mut inside = false;
                let mut j = pts.len() - 1;
                for i in 0..pts.len() {
                    let (xi, yi) = pts[i];
                    let (xj, yj) = pts[j];
                    if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                        inside = !inside;
                    }
                    j = i;
                }
                inside
            }
            Shape::Capsule { a, b, r } => {
                let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                let len2 = dx * dx + dy * dy;
                let t = if len2 > 0.0 {
                    (((x - a.0) * dx + (y - a.1) * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (px, py) = (a.0 + t * dx, a.1 + t * dy);
                (x - px).powi(2) + (y - py).powi(2) <= r * r
            }
            Shape::Below {
                y0,
                amp,
                freq,
                phase,
            } => y >= y0 + amp * (x * freq + phase).sin(),
            Shape::Crescent { cx, cy, r, dx } => {
                (x - cx).powi(2) + (y - cy).powi(2) <= r * r
                    && (x - cx - dx).powi(2) + (y - cy + dx * 0.4).powi(2) > r * r
            }
            Shape::All => true,
        }
    }

    /// Bounding box (x0, y0, x1, y1), for shading.
    fn bounds(&self) -> (f32, f32, f32, f32) {
        match *self {
            Shape::Circle { cx, cy, r } | Shape::Crescent { cx, cy, r, .. } => {
                (cx - r, cy - r, cx + r, cy + r)
            }
            Shape::Ellipse { cx, cy, rx, ry } => (cx - rx, cy - ry, cx + rx, cy + ry),
            Shape::Rect { x0, y0, x1, y1 } => (x0, y0, x1, y1),
            Shape::Poly(ref pts) => pts.iter().fold(
                (f32::MAX, f32::MAX, f32::MIN, f32::MIN),
                |(a, b, c, d), &(x, y)| (a.min(x), b.min(y), c.max(x), d.max(y)),
            ),
            Shape::Capsule { a, b, r } => (
                a.0.min(b.0) - r,
                a.1.min(b.1) - r,
                a.0.max(b.0) + r,
                a.1.max(b.1) + r,
            ),
            Shape::Below { y0, amp, .. } => (0.0, y0 - amp, SIZE as f32, SIZE as f32),
            Shape::All => (0.0, 0.0, SIZE as f32, SIZE as f32),
        }
    }
}

/// What a shape is made of; each style picks its colour and texture.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Material {
    Sky,
    /// An indoor back wall.
    Wall,
    Ground,
    Hill,
    Water,
    Sun,
    Moon,
    Cloud,
    Mountain,
    Snow,
    HouseWall,
    Roof,
    Door,
    Window,
    Trunk,
    Leaves,
    /// Skin tone variant.
    Skin(usize),
    /// Hair colour variant.
    Hair(usize),
    /// Shirt colour variant.
    Shirt(usize),
    /// Trousers colour variant.
    Trousers(usize),
    /// An eye: a black pixel in the graphic style, a soft dark dot in the plain one.
    Eye,
    /// Pure line work (sun rays, a mouth): black in the graphic style, absent in the plain one.
    Ink,
}

#[derive(Debug, Clone, Default)]
struct Scene {
    items: Vec<(Shape, Material)>,
}

impl Scene {
    fn add(&mut self, shape: Shape, material: Material) -> &mut Self {
        self.items.push((shape, material));
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pose {
    Standing,
    Waving,
    ArmsUp,
    Walking,
}

/// The look of one person.
#[derive(Debug, Clone, Copy)]
struct Look {
    skin: usize,
    hair: usize,
    shirt: usize,
    trousers: usize,
}

impl Look {
    fn random(rng: &mut Rng) -> Self {
        Self {
            skin: rng.pick(SKIN.len()),
            hair: rng.pick(HAIR.len()),
            shirt: rng.pick(SHIRT.len()),
            trousers: rng.pick(TROUSERS.len()),
        }
    }
}

/// A person with feet at (`x`, `feet`), about 22·`s` pixels tall.
fn person(sc: &mut Scene, x: f32, feet: f32, s: f32, pose: Pose, look: Look) {
    let hip = feet - 6.5 * s;
    let neck = feet - 15.0 * s;
    let head_r = 3.4 * s;
    let head_cy = neck - head_r + 0.7 * s;
    let trousers = Material::Trousers(look.trousers);
    let shirt = Material::Shirt(look.shirt);
    let (fl, fr) = if pose == Pose::Walking {
        ((x - 3.6 * s, feet - 0.6), (x + 3.4 * s, feet - 0.6))
    } else {
        ((x - 2.0 * s, feet - 0.6), (x + 2.0 * s, feet - 0.6))
    };
    sc.add(
        Shape::Capsule {
            a: (x - 1.5 * s, hip),
            b: fl,
            r: 1.1 * s,
        },
        trousers,
    );
    sc.add(
        Shape::Capsule {
            a: (x + 1.5 * s, hip),
            b: fr,
            r: 1.1 * s,
        },
        trousers,
    );
    let shoulder_y = neck + 1.4 * s;
    let down_l = (x - 5.2 * s, hip - 0.5 * s);
    let down_r = (x + 5.2 * s, hip - 0.5 * s);
    let up_l = (x - 6.0 * s, neck - 5.5 * s);
    let up_r = (x + 6.0 * s, neck - 5.5 * s);
    let (hand_l, hand_r) = match pose {
        Pose::Standing => (down_l, down_r),
        Pose::Walking => ((x - 4.0 * s, hip - 1.0 * s), (x + 5.5 * s, hip - 2.5 * s)),
        Pose::Waving => (down_l, up_r),
        Pose::ArmsUp => (up_l, up_r),
    };
    sc.add(
        Shape::Capsule {
            a: (x - 2.8 * s, shoulder_y),
            b: hand_l,
            r: 1.0 * s,
        },
        shirt,
    );
    sc.add(
        Shape::Capsule {
            a: (x + 2.8 * s, shoulder_y),
            b: hand_r,
            r: 1.0 * s,
        },
        shirt,
    );
    sc.add(
        Shape::Poly(vec![
            (x - 3.4 * s, neck),
            (x + 3.4 * s, neck),
            (x + 4.2 * s, hip + 0.8 * s),
            (x - 4.2 * s, hip + 0.8 * s),
        ]),
        shirt,
    );
    // Hair behind the face, showing above it.
    sc.add(
        Shape::Circle {
            cx: x,
            cy: head_cy - 0.6 * s,
            r: head_r + 0.3 * s,
        },
        Material::Hair(look.hair),
    );
    sc.add(
        Shape::Circle {
            cx: x,
            cy: head_cy + 0.5 * s,
            r: head_r,
        },
        Material::Skin(look.skin),
    );
    for side in [-1.0, 1.0] {
        let eye = Shape::Circle {
            cx: x + side * 1.3 * s,
            cy: head_cy + 0.4 * s,
            r: 0.35 * s + 0.2,
        };
        sc.add(eye, Material::Eye);
    }
}

/// A head-and-shoulders portrait.
fn portrait(sc: &mut Scene, x: f32, look: Look) {
    person(sc, x, 52.0, 2.2, Pose::Standing, look);
}

fn ground(sc: &mut Scene, rng: &mut Rng, horizon: f32) {
    let amp = rng.range(0.0, 1.2);
    let phase = rng.range(0.0, std::f32::consts::TAU);
    sc.add(
        Shape::Below {
            y0: horizon,
            amp,
            freq: 0.25,
            phase,
        },
        Material::Ground,
    );
}

fn sun(sc: &mut Scene, cx: f32, cy: f32, r: f32) {
    for k in 0..8 {
        let a = k as f32 * std::f32::consts::FRAC_PI_4 + 0.2;
        let (c, s) = (a.cos(), a.sin());
        let a0 = (cx + c * (r + 1.2), cy + s * (r + 1.2));
        let a1 = (cx + c * (r + 3.2), cy + s * (r + 3.2));
        sc.add(
            Shape::Capsule {
                a: a0,
                b: a1,
                r: 0.55,
            },
            Material::Ink,
        );
    }
    sc.add(Shape::Circle { cx, cy, r }, Material::Sun);
}

fn cloud(sc: &mut Scene, cx: f32, cy: f32, s: f32) {
    sc.add(
        Shape::Ellipse {
            cx,
            cy: cy + 0.8 * s,
            rx: 5.0 * s,
            ry: 2.0 * s,
        },
        Material::Cloud,
    );
    sc.add(
        Shape::Circle {
            cx: cx - 1.5 * s,
            cy,
            r: 2.2 * s,
        },
        Material::Cloud,
    );
    sc.add(
        Shape::Circle {
            cx: cx + 1.6 * s,
            cy: cy - 0.6 * s,
            r: 2.6 * s,
        },
        Material::Cloud,
    );
}

fn house(sc: &mut Scene, x: f32, base: f32, w: f32, h: f32) {
    sc.add(
        Shape::Rect {
            x0: x,
            y0: base - h,
            x1: x + w,
            y1: base,
        },
        Material::HouseWall,
    );
    sc.add(
        Shape::Poly(vec![
            (x - 1.5, base - h + 0.5),
            (x + w / 2.0, base - h - w * 0.55),
            (x + w + 1.5, base - h + 0.5),
        ]),
        Material::Roof,
    );
    let door_w = (w * 0.28).max(3.0);
    sc.add(
        Shape::Rect {
            x0: x + w * 0.58,
            y0: base - h * 0.55,
            x1: x + w * 0.58 + door_w,
            y1: base,
        },
        Material::Door,
    );
    sc.add(
        Shape::Rect {
            x0: x + w * 0.14,
            y0: base - h * 0.75,
            x1: x + w * 0.14 + 3.5,
            y1: base - h * 0.75 + 3.5,
        },
        Material::Window,
    );
}

fn tree(sc: &mut Scene, x: f32, base: f32, h: f32) {
    sc.add(
        Shape::Rect {
            x0: x - 1.5,
            y0: base - h * 0.55,
            x1: x + 1.5,
            y1: base,
        },
        Material::Trunk,
    );
    sc.add(
        Shape::Circle {
            cx: x,
            cy: base - h * 0.68,
            r: h * 0.36,
        },
        Material::Leaves,
    );
}

fn mountains(sc: &mut Scene, rng: &mut Rng, base: f32) {
    let mut x = rng.range(-8.0, -2.0);
    while x < 32.0 {
        let w = rng.range(12.0, 18.0);
        let h = rng.range(10.0, 16.0);
        let peak = (x + w / 2.0, base - h);
        sc.add(
            Shape::Poly(vec![(x, base + 1.0), peak, (x + w, base + 1.0)]),
            Material::Mountain,
        );
        let snow = 0.3;
        sc.add(
            Shape::Poly(vec![
                (peak.0 - w / 2.0 * snow, peak.1 + h * snow),
                peak,
                (peak.0 + w / 2.0 * snow, peak.1 + h * snow),
            ]),
            Material::Snow,
        );
        x += w * rng.range(0.55, 0.8);
    }
}

/// The graphic-style scenes: ten with people, ten backgrounds.
fn style_scene(i: usize) -> (String, Scene, &'static str) {
    let mut rng = Rng::new(1000 + i as u64);
    let mut sc = Scene::default();
    sc.add(Shape::All, Material::Sky);
    let j = |rng: &mut Rng, v: f32| v + rng.range(-2.0, 2.0);
    let look = Look::random(&mut rng);
    let (name, caption) = match i {
        0 => {
            ground(&mut sc, &mut rng, 22.0);
            person(&mut sc, j(&mut rng, 16.0), 29.0, 1.0, Pose::Standing, look);
            ("person_field", "a person standing in a field")
        }
        1 => {
            sun(&mut sc, 25.0, 7.0, 3.5);
            ground(&mut sc, &mut rng, 23.0);
            person(&mut sc, j(&mut rng, 12.0), 29.5, 1.0, Pose::Waving, look);
            ("person_waving_sun", "a person waving under the sun")
        }
        2 => {
            ground(&mut sc, &mut rng, 24.0);
            house(&mut sc, 2.0, 26.0, 13.0, 10.0);
            person(&mut sc, j(&mut rng, 23.0), 30.0, 1.0, Pose::Standing, look);
            ("person_house", "a person standing next to a house")
        }
        3 => {
            ground(&mut sc, &mut rng, 23.0);
            tree(&mut sc, 8.0, 27.0, 24.0);
            person(&mut sc, j(&mut rng, 21.0), 30.0, 1.0, Pose::Standing, look);
            ("person_tree", "a person standing under a tree")
        }
        4 => {
            ground(&mut sc, &mut rng, 21.0);
            let other = Look::random(&mut rng);
            person(&mut sc, 9.5, 29.0, 0.9, Pose::Standing, look);
            person(&mut sc, 22.5, 29.5, 0.95, Pose::Waving, other);
            ("two_people_field", "two people standing in a field")
        }
        5 => {
            sc.add(
                Shape::Ellipse {
                    cx: 16.0,
                    cy: 38.0,
                    rx: 26.0,
                    ry: 18.0,
                },
                Material::Hill,
            );
            person(&mut sc, j(&mut rng, 15.0), 25.0, 0.95, Pose::Walking, look);
            ("person_walking_hill", "a person walking on a hill")
        }
        6 => {
            portrait(&mut sc, j(&mut rng, 16.0), look);
            ("portrait", "a portrait of a person")
        }
        7 => {
            mountains(&mut sc, &mut rng, 22.0);
            ground(&mut sc, &mut rng, 23.0);
            person(&mut sc, j(&mut rng, 16.0), 30.0, 1.0, Pose::Standing, look);
            (
                "person_mountains",
                "a person standing in front of mountains",
            )
        }
        8 => {
            sc.add(
                Shape::Crescent {
                    cx: 24.0,
                    cy: 7.0,
                    r: 4.5,
                    dx: -2.8,
                },
                Material::Moon,
            );
            ground(&mut sc, &mut rng, 24.0);
            person(&mut sc, j(&mut rng, 13.0), 30.5, 0.95, Pose::ArmsUp, look);
            (
                "person_arms_up_moon",
                "a person with both arms raised under the moon",
            )
        }
        9 => {
            ground(&mut sc, &mut rng, 20.0);
            person(&mut sc, j(&mut rng, 16.0), 40.0, 1.6, Pose::Standing, look);
            ("person_waist_up", "a person seen from the waist up")
        }
        10 => {
            sun(&mut sc, j(&mut rng, 6.0), 6.0, 3.0);
            ground(&mut sc, &mut rng, 23.0);
            house(&mut sc, j(&mut rng, 12.0), 27.0, 14.0, 10.0);
            ("house_field", "a house in a field")
        }
        11 => {
            sc.add(
                Shape::Ellipse {
                    cx: 14.0,
                    cy: 36.0,
                    rx: 24.0,
                    ry: 15.0,
                },
                Material::Hill,
            );
            tree(&mut sc, j(&mut rng, 15.0), 22.5, 19.0);
            ("tree_hill", "a tree on a hill")
        }
        12 => {
            cloud(&mut sc, j(&mut rng, 16.0), 5.0, 0.9);
            ground(&mut sc, &mut rng, 23.0);
            tree(&mut sc, 8.0, 27.0, 18.0);
            tree(&mut sc, 23.0, 29.0, 21.0);
            ("two_trees", "two trees in a field")
        }
        13 => {
            sun(&mut sc, j(&mut rng, 22.0), 7.0, 3.5);
            mountains(&mut sc, &mut rng, 26.0);
            ground(&mut sc, &mut rng, 27.0);
            ("mountains_sun", "mountains under the sun")
        }
        14 => {
            ground(&mut sc, &mut rng, 22.0);
            house(&mut sc, 3.0, 27.0, 13.0, 10.0);
            tree(&mut sc, j(&mut rng, 24.0), 28.0, 20.0);
            ("house_tree", "a house and a tree")
        }
        15 => {
            cloud(&mut sc, 9.0, 6.0, 1.0);
            cloud(&mut sc, 25.0, 11.0, 0.8);
            sc.add(
                Shape::Ellipse {
                    cx: 6.0,
                    cy: 34.0,
                    rx: 18.0,
                    ry: 14.0,
                },
                Material::Hill,
            );
            sc.add(
                Shape::Ellipse {
                    cx: 28.0,
                    cy: 36.0,
                    rx: 17.0,
                    ry: 13.0,
                },
                Material::Ground,
            );
            ("hills_clouds", "hills under a cloudy sky")
        }
        16 => {
            ground(&mut sc, &mut rng, 24.0);
            house(&mut sc, 1.5, 28.0, 12.0, 9.0);
            house(&mut sc, 18.0, 28.0, 12.0, 12.0);
            ("two_houses", "two houses side by side")
        }
        17 => {
            sun(&mut sc, j(&mut rng, 16.0), 13.0, 5.0);
            sc.add(
                Shape::Below {
                    y0: 19.0,
                    amp: 0.0,
                    freq: 0.0,
                    phase: 0.0,
                },
                Material::Water,
            );
            ("sun_sea", "the sun over the sea")
        }
        18 => {
            sc.add(
                Shape::Crescent {
                    cx: 7.0,
                    cy: 7.0,
                    r: 4.0,
                    dx: 2.5,
                },
                Material::Moon,
            );
            ground(&mut sc, &mut rng, 25.0);
            tree(&mut sc, j(&mut rng, 19.0), 29.0, 24.0);
            ("tree_moon", "a tree under the moon")
        }
        _ => {
            cloud(&mut sc, j(&mut rng, 9.0), 7.0, 1.1);
            cloud(&mut sc, j(&mut rng, 24.0), 13.0, 0.8);
            ground(&mut sc, &mut rng, 20.0);
            ("empty_field", "an empty field under a cloudy sky")
        }
    };
    (format!("{:02}_{name}", i + 1), sc, caption)
}

/// The plain-style scenes: people only, outdoors or in a room.
fn aux_scene(i: usize) -> (String, Scene, String) {
    let mut rng = Rng::new(2000 + i as u64);
    let mut sc = Scene::default();
    let indoor = matches!(i, 4 | 8 | 13 | 17 | 12);
    if indoor {
        sc.add(Shape::All, Material::Wall);
        sc.add(
            Shape::Below {
                y0: 23.0,
                amp: 0.0,
                freq: 0.0,
                phase: 0.0,
            },
            Material::Ground,
        );
    } else {
        sc.add(Shape::All, Material::Sky);
        let horizon = rng.range(19.0, 24.0);
        ground(&mut sc, &mut rng, horizon);
    }
    let mut look = Look::random(&mut rng);
    let x = 16.0 + rng.range(-3.0, 3.0);
    let place = if indoor { "in a room" } else { "outdoors" };
    let (name, caption): (&str, String) = match i % 10 {
        0 | 9 => {
            person(&mut sc, x, 29.5, 1.0, Pose::Standing, look);
            (
                "person_standing",
                format!(
                    "a person in a {} shirt standing {place}",
                    SHIRT_NAMES[look.shirt]
                ),
            )
        }
        1 | 5 | 8 => {
            portrait(&mut sc, x, look);
            (
                "portrait",
                format!("a portrait of a person with {} hair", HAIR_NAMES[look.hair]),
            )
        }
        2 => {
            person(&mut sc, x, 29.5, 1.0, Pose::Waving, look);
            ("person_waving", format!("a person waving {place}"))
        }
        3 => {
            let other = Look::random(&mut rng);
            person(&mut sc, 9.5, 29.0, 0.9, Pose::Standing, look);
            person(&mut sc, 22.5, 29.5, 0.95, Pose::Standing, other);
            ("two_people", "two people standing together".to_string())
        }
        4 => {
            look.shirt = (i / 10 + 1) % SHIRT.len();
            person(&mut sc, x, 31.0, 1.3, Pose::Standing, look);
            (
                "person_close",
                format!("a person in a {} shirt {place}", SHIRT_NAMES[look.shirt]),
            )
        }
        6 => {
            person(&mut sc, x, 29.5, 1.0, Pose::Walking, look);
            ("person_walking", format!("a person walking {place}"))
        }
        _ => {
            person(&mut sc, x, 30.0, 1.0, Pose::ArmsUp, look);
            (
                "person_arms_up",
                "a person with both arms raised".to_string(),
            )
        }
    };
    (format!("{:02}_{name}", i + 1), sc, caption)
}

// ---------------------------------------------------------------------------------------
// The graphic style: flat fills from four colours, black outlines, diagonal hatching.

const CYAN: [u8; 3] = [0, 174, 239];
const MAGENTA: [u8; 3] = [236, 0, 140];
const YELLOW: [u8; 3] = [255, 221, 0];
const ORANGE: [u8; 3] = [255, 96, 0];
const BLACK: [u8; 3] = [0, 0, 0];

/// Colour schemes: (sky, ground, first accent, second accent), all four palette colours.
const SCHEMES: [[[u8; 3]; 4]; 4] = [
    [CYAN, MAGENTA, YELLOW, ORANGE],
    [YELLOW, CYAN, ORANGE, MAGENTA],
    [MAGENTA, ORANGE, YELLOW, CYAN],
    [CYAN, ORANGE, YELLOW, MAGENTA],
];

/// (fill, hatched, outlined) of a material in scheme `s`.
fn graphic_look(m: Material, s: &[[u8; 3]; 4]) -> ([u8; 3], bool, bool) {
    let [sky, ground, a, b] = *s;
    match m {
        Material::Sky | Material::Wall => (sky, false, false),
        Material::Ground | Material::Water => (ground, true, true),
        Material::Hill | Material::Mountain => (b, true, true),
        Material::Roof => (ground, true, true),
        Material::Sun | Material::Moon | Material::Snow | Material::Skin(_) => (a, false, true),
        Material::Cloud => (b, false, true),
        Material::HouseWall | Material::Leaves => (a, false, true),
        Material::Door
        | Material::Hair(_)
        | Material::Ink
        | Material::Eye
        | Material::Trousers(_) => (BLACK, false, true),
        Material::Window => (sky, false, true),
        Material::Trunk => (b, false, true),
        Material::Shirt(k) => (if k % 2 == 0 { b } else { ground }, false, true),
    }
}

fn render_graphic(scene: &Scene, scheme: &[[u8; 3]; 4]) -> RgbImage {
    let n = SIZE as i32;
    let mut img = RgbImage::new(SIZE, SIZE);
    for (shape, material) in &scene.items {
        let mut mask: Vec<bool> = (0..n * n)
            .map(|k| shape.contains((k % n) as f32 + 0.5, (k / n) as f32 + 0.5))
            .collect();
        // An eye too small to cover a pixel centre still gets the pixel under its centre.
        if let (Material::Eye, Shape::Circle { cx, cy, .. }) = (material, shape) {
            let (x, y) = (cx.floor() as i32, cy.floor() as i32);
            if !mask.contains(&true) && (0..n).contains(&x) && (0..n).contains(&y) {
                mask[(y * n + x) as usize] = true;
            }
        }
        let at = |x: i32, y: i32| x < 0 || y < 0 || x >= n || y >= n || mask[(y * n + x) as usize];
        let (fill, hatched, outlined) = graphic_look(*material, scheme);
        for y in 0..n {
            for x in 0..n {
                if !mask[(y * n + x) as usize] {
                    continue;
                }
                let edge = !(at(x - 1, y) && at(x + 1, y) && at(x, y - 1) && at(x, y + 1));
                let color = if (outlined && edge) || (hatched && (x + y) % 4 == 0) {
                    BLACK
                } else {
                    fill
                };
                img.put_pixel(x as u32, y as u32, Rgb(color));
            }
        }
    }
    img
}

// ---------------------------------------------------------------------------------------
// The plain style: natural colours, soft gradient shading, no outlines, smooth edges.

const SKIN: [[u8; 3]; 4] = [
    [238, 203, 173],
    [205, 152, 116],
    [150, 104, 74],
    [246, 218, 196],
];
const HAIR: [[u8; 3]; 4] = [[92, 62, 40], [35, 28, 24], [196, 160, 104], [120, 70, 40]];
const HAIR_NAMES: [&str; 4] = ["brown", "black", "blond", "auburn"];
const SHIRT: [[u8; 3]; 6] = [
    [78, 108, 158],
    [160, 72, 70],
    [92, 130, 96],
    [214, 206, 190],
    [126, 96, 148],
    [206, 160, 90],
];
const SHIRT_NAMES: [&str; 6] = ["blue", "red", "green", "white", "purple", "mustard"];
const TROUSERS: [[u8; 3]; 3] = [[52, 58, 74], [96, 86, 74], [70, 84, 118]];

fn f3(c: [u8; 3]) -> [f32; 3] {
    c.map(f32::from)
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn shade(c: [f32; 3], light: f32) -> [f32; 3] {
    c.map(|v| v * light)
}

/// Colour of `material` at (`x`, `y`) inside a shape with bounds `b`.
fn plain_color(material: Material, shape: &Shape, x: f32, y: f32) -> Option<[f32; 3]> {
    let (x0, y0, x1, y1) = shape.bounds();
    let tx = ((x - x0) / (x1 - x0).max(1e-3)).clamp(0.0, 1.0);
    let ty = ((y - y0) / (y1 - y0).max(1e-3)).clamp(0.0, 1.0);
    // Light from the upper left: lighter there, darker to the lower right.
    let body_light = 1.12 - 0.32 * (0.65 * tx + 0.35 * ty);
    let round_light = {
        let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
        let r = ((x1 - x0) / 2.0).max(1e-3);
        let d = ((x - (cx - 0.35 * r)).powi(2) + (y - (cy - 0.4 * r)).powi(2)).sqrt() / (1.4 * r);
        1.12 - 0.35 * d
    };
    let c = match material {
        Material::Sky => mix(f3([128, 170, 218]), f3([214, 228, 240]), y / 22.0),
        Material::Wall => mix(
            f3([206, 196, 182]),
            f3([168, 156, 144]),
            y / 24.0 + 0.2 * tx,
        ),
        Material::Ground => mix(f3([140, 170, 108]), f3([88, 120, 70]), ty),
        Material::Skin(k) => shade(f3(SKIN[k]), round_light),
        Material::Hair(k) => shade(f3(HAIR[k]), round_light),
        Material::Shirt(k) => shade(f3(SHIRT[k]), body_light),
        Material::Trousers(k) => shade(f3(TROUSERS[k]), body_light),
        Material::Eye => f3([52, 40, 34]),
        Material::Ink => return None,
        _ => shade(f3([150, 150, 150]), body_light),
    };
    Some(c)
}

fn render_plain(scene: &Scene) -> RgbImage {
    const SS: u32 = 4;
    let n = (SIZE * SS) as usize;
    let mut buf = vec![[0f32; 3]; n * n];
    for (shape, material) in &scene.items {
        for (k, px) in buf.iter_mut().enumerate() {
            let x = ((k % n) as f32 + 0.5) / SS as f32;
            let y = ((k / n) as f32 + 0.5) / SS as f32;
            if shape.contains(x, y) {
                if let Some(c) = plain_color(*material, shape, x, y) {
                    *px = c;
                }
            }
        }
    }
    RgbImage::from_fn(SIZE, SIZE, |x, y| {
        let mut sum = [0f32; 3];
        for dy in 0..SS {
            for dx in 0..SS {
                let p = buf[((y * SS + dy) as usize) * n + (x * SS + dx) as usize];
                for c in 0..3 {
                    sum[c] += p[c];
                }
            }
        }
        Rgb(sum.map(|v| (v / (SS * SS) as f32).round().clamp(0.0, 255.0) as u8))
    })
}

// ---------------------------------------------------------------------------------------

fn write(dir: &Path, stem: &str, img: &RgbImage, caption: &str) -> Result<(), Box<dyn Error>> {
    img.save(dir.join(format!("{stem}.png")))?;
    std::fs::write(dir.join(format!("{stem}.txt")), format!("{caption}\n"))?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "assets/demo".to_string());
    let out = Path::new(&out);
    let (style_dir, aux_dir) = (out.join("style"), out.join("aux"));
    std::fs::create_dir_all(&style_dir)?;
    std::fs::create_dir_all(&aux_dir)?;

    let mut style = Vec::new();
    for i in 0..20 {
        let (stem, scene, caption) = style_scene(i);
        let img = render_graphic(&scene, &SCHEMES[i % SCHEMES.len()]);
        write(&style_dir, &stem, &img, caption)?;
        style.push((img, caption.to_string()));
    }
    let mut aux = Vec::new();
    for i in 0..20 {
        let (stem, scene, caption) = aux_scene(i);
        let img = render_plain(&scene);
        write(&aux_dir, &stem, &img, &caption)?;
        aux.push((img, caption));
    }

    let mut rows = vec![style, aux].into_iter().flat_map(|set| {
        let mut set = set.into_iter();
        let first: Vec<_> = set.by_ref().take(10).collect();
        let second: Vec<_> = set.collect();
        [first, second]
    });
    let grid = ImageGrid::new("StyleForge demo data: 20 style (StyleRef) + 20 aux images, 32x32")
        .cell_scale(3)
        .captioned_row("style 1-10", rows.next().unwrap_or_default())
        .captioned_row("style 11-20", rows.next().unwrap_or_default())
        .captioned_row("aux 1-10", rows.next().unwrap_or_default())
        .captioned_row("aux 11-20", rows.next().unwrap_or_default());
    grid.save(&out.join("preview.png"))?;
    println!(
        "wrote 20 style and 20 aux images with captions, and preview.png, to {}",
        out.display()
    );
    Ok(())
}
