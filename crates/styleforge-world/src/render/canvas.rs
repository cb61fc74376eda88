//! The plain scene drawn into an f32 RGB canvas with a label map.
//!
//! Every filled shape gets a new label in drawing order (0 the sky, 1 the ground, then one
//! per object part), so "a neighbour has a smaller label" marks the near side of every
//! edge: outline styles draw their lines there. Shapes are tested at pixel centres in
//! canvas fractions, so one scene draws at any size.

use crate::scene::{ObjectKind, Scene, SceneObject};

/// Label of sky pixels.
pub const SKY: u16 = 0;
/// Label of ground pixels.
pub const GROUND: u16 = 1;

/// A scene drawn flat, with what each pixel belongs to.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Width and height in pixels.
    pub size: usize,
    /// Colours, row-major, sRGB in `[0, 1]`: sky gradient, speckled ground, stars, objects.
    pub rgb: Vec<[f32; 3]>,
    /// Part labels in drawing order ([`SKY`], [`GROUND`], then object parts).
    pub label: Vec<u16>,
    /// Object of each pixel: 0 for the background, `k + 1` for `scene.objects[k]`.
    pub object: Vec<u8>,
    /// The flat (untextured) fill colour of each label; the sky's is its mid colour.
    pub label_rgb: Vec<[f32; 3]>,
}

/// Shapes in canvas fractions (x right, y down).
#[derive(Debug, Clone, Copy)]
enum Shape {
    Rect([f32; 4]),
    Ellipse {
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
    },
    Triangle([[f32; 2]; 3]),
    /// `n` spokes between radii `r0` and `r1` around a centre (sun rays).
    Rays {
        cx: f32,
        cy: f32,
        r0: f32,
        r1: f32,
        n: f32,
    },
}

impl Shape {
    fn circle(cx: f32, cy: f32, r: f32) -> Shape {
        Shape::Ellipse {
            cx,
            cy,
            rx: r,
            ry: r,
        }
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        match *self {
            Shape::Rect([x0, y0, x1, y1]) => x >= x0 && x < x1 && y >= y0 && y < y1,
            Shape::Ellipse { cx, cy, rx, ry } => {
                ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) <= 1.0
            }
            Shape::Triangle([a, b, c]) => {
                let side = |p: [f32; 2], q: [f32; 2]| {
                    (q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0])
                };
                let (d0, d1, d2) = (side(a, b), side(b, c), side(c, a));
                (d0 >= 0.0 && d1 >= 0.0 && d2 >= 0.0) || (d0 <= 0.0 && d1 <= 0.0 && d2 <= 0.0)
            }
            Shape::Rays { cx, cy, r0, r1, n } => {
                let r = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
                let angle = (y - cy).atan2(x - cx);
                r >= r0 && r <= r1 && (angle * n * 0.5).sin().abs() < 0.4
            }
        }
    }

    fn bounds(&self) -> [f32; 4] {
        match *self {
            Shape::Rect(r) => r,
            Shape::Ellipse { cx, cy, rx, ry } => [cx - rx, cy - ry, cx + rx, cy + ry],
            Shape::Triangle(p) => {
                let xs = [p[0][0], p[1][0], p[2][0]];
                let ys = [p[0][1], p[1][1], p[2][1]];
                [
                    xs.iter().copied().fold(f32::MAX, f32::min),
                    ys.iter().copied().fold(f32::MAX, f32::min),
                    xs.iter().copied().fold(f32::MIN, f32::max),
                    ys.iter().copied().fold(f32::MIN, f32::max),
                ]
            }
            Shape::Rays { cx, cy, r1, .. } => [cx - r1, cy - r1, cx + r1, cy + r1],
        }
    }
}

const SKIN: [f32; 3] = [0.96, 0.76, 0.58];
const TROUSERS: [f32; 3] = [0.22, 0.22, 0.30];
const BROWN: [f32; 3] = [0.46, 0.26, 0.13];
const DARK_BROWN: [f32; 3] = [0.30, 0.16, 0.08];
const WINDOW: [f32; 3] = [1.0, 0.93, 0.55];
const GLASS: [f32; 3] = [0.70, 0.85, 0.95];
const TYRE: [f32; 3] = [0.10, 0.10, 0.12];
const STAR: [f32; 3] = [1.0, 1.0, 0.85];

impl Canvas {
    /// Draws `scene` at `size`×`size` pixels.
    pub fn draw(scene: &Scene, size: usize) -> Canvas {
        let n = size * size;
        let mut canvas = Canvas {
            size,
            rgb: vec![[0.0; 3]; n],
            label: vec![SKY; n],
            object: vec![0; n],
            label_rgb: vec![scene.sky.rgb_at(0.5), scene.ground.rgb()],
        };
        let ground = scene.ground.rgb();
        for y in 0..size {
            let fy = (y as f32 + 0.5) / size as f32;
            for x in 0..size {
                let i = y * size + x;
                if fy < scene.horizon {
                    canvas.rgb[i] = scene.sky.rgb_at(fy / scene.horizon);
                } else {
                    canvas.label[i] = GROUND;
                    let h = hash3(scene.texture_seed, x as u64, y as u64);
                    let speckle = (h % 1000) as f32 / 1000.0;
                    let shade = if speckle < 0.10 {
                        0.86
                    } else if speckle < 0.16 {
                        1.08
                    } else {
                        1.0
                    };
                    canvas.rgb[i] = scale(ground, shade);
                }
            }
        }
        for star in &scene.stars {
            let x = ((star[0] * size as f32) as usize).min(size.saturating_sub(1));
            let y = ((star[1] * size as f32) as usize).min(size.saturating_sub(1));
            if size > 0 && canvas.label[y * size + x] == SKY {
                canvas.rgb[y * size + x] = STAR;
            }
        }
        // The sun first: it is behind everything on the ground.
        let mut order: Vec<usize> = (0..scene.objects.len()).collect();
        order.sort_by_key(|&k| scene.objects[k].kind != ObjectKind::Sun);
        for k in order {
            canvas.draw_object(&scene.objects[k], (k + 1) as u8);
        }
        canvas
    }

    fn fill(&mut self, shape: Shape, rgb: [f32; 3], object: u8) {
        let label = self.label_rgb.len() as u16;
        self.label_rgb.push(rgb);
        let s = self.size as f32;
        let [x0, y0, x1, y1] = shape.bounds();
        let px = |v: f32| ((v * s).floor().max(0.0) as usize).min(self.size);
        for y in px(y0)..(px(y1) + 1).min(self.size) {
            for x in px(x0)..(px(x1) + 1).min(self.size) {
                if shape.contains((x as f32 + 0.5) / s, (y as f32 + 0.5) / s) {
                    let i = y * self.size + x;
                    self.rgb[i] = rgb;
                    self.label[i] = label;
                    self.object[i] = object;
                }
            }
        }
    }

    fn draw_object(&mut self, o: &SceneObject, id: u8) {
        let c = o.colour.rgb();
        // Scene scales are around 1; the factors make each kind read well at 32×32.
        let s = o.scale
            * match o.kind {
                ObjectKind::Sun => 1.1,
                ObjectKind::Cat => 1.5,
                _ => 1.3,
            };
        let (x, b) = (o.x, o.y);
        // Horizontal offsets mirror for objects facing left.
        let dx = |v: f32| if o.facing_left { x - v * s } else { x + v * s };
        let span = |a: f32, b: f32| {
            let (p, q) = (dx(a), dx(b));
            (p.min(q), p.max(q))
        };
        let rect = |a: f32, top: f32, bb: f32, bottom: f32| {
            let (l, r) = span(a, bb);
            Shape::Rect([l, b - top * s, r, b - bottom * s])
        };
        match o.kind {
            ObjectKind::Person => {
                self.fill(rect(-0.055, 0.13, -0.01, 0.0), TROUSERS, id);
                self.fill(rect(0.01, 0.13, 0.055, 0.0), TROUSERS, id);
                self.fill(rect(-0.10, 0.27, 0.10, 0.20), c, id);
                self.fill(rect(-0.07, 0.29, 0.07, 0.12), c, id);
                self.fill(Shape::circle(x, b - 0.35 * s, 0.065 * s), SKIN, id);
            }
            ObjectKind::House => {
                self.fill(rect(-0.16, 0.22, 0.16, 0.0), c, id);
                self.fill(
                    Shape::Triangle([
                        [x - 0.21 * s, b - 0.21 * s],
                        [x + 0.21 * s, b - 0.21 * s],
                        [x, b - 0.40 * s],
                    ]),
                    BROWN,
                    id,
                );
                self.fill(rect(-0.10, 0.13, -0.02, 0.0), DARK_BROWN, id);
                self.fill(rect(0.04, 0.16, 0.11, 0.09), WINDOW, id);
            }
            ObjectKind::Tree => {
                self.fill(rect(-0.035, 0.22, 0.035, 0.0), BROWN, id);
                self.fill(Shape::circle(x, b - 0.31 * s, 0.15 * s), c, id);
            }
            ObjectKind::Sun => {
                self.fill(
                    Shape::Rays {
                        cx: x,
                        cy: b,
                        r0: 0.115 * s,
                        r1: 0.16 * s,
                        n: 8.0,
                    },
                    c,
                    id,
                );
                self.fill(Shape::circle(x, b, 0.085 * s), c, id);
            }
            ObjectKind::Cat => {
                self.fill(rect(-0.08, 0.05, -0.05, 0.0), c, id);
                self.fill(rect(0.04, 0.05, 0.07, 0.0), c, id);
                self.fill(
                    Shape::Ellipse {
                        cx: dx(-0.125),
                        cy: b - 0.12 * s,
                        rx: 0.022 * s,
                        ry: 0.07 * s,
                    },
                    c,
                    id,
                );
                self.fill(
                    Shape::Ellipse {
                        cx: x,
                        cy: b - 0.075 * s,
                        rx: 0.11 * s,
                        ry: 0.05 * s,
                    },
                    c,
                    id,
                );
                self.fill(Shape::circle(dx(0.10), b - 0.15 * s, 0.055 * s), c, id);
                for (e0, e1) in [(0.055, 0.095), (0.105, 0.145)] {
                    self.fill(
                        Shape::Triangle([
                            [dx(e0), b - 0.175 * s],
                            [dx(e1), b - 0.175 * s],
                            [dx((e0 + e1) / 2.0), b - 0.245 * s],
                        ]),
                        c,
                        id,
                    );
                }
            }
            ObjectKind::Car => {
                self.fill(rect(-0.18, 0.13, 0.18, 0.04), c, id);
                self.fill(rect(-0.10, 0.21, 0.08, 0.12), c, id);
                self.fill(rect(-0.01, 0.19, 0.06, 0.13), GLASS, id);
                self.fill(Shape::circle(dx(-0.10), b - 0.045 * s, 0.045 * s), TYRE, id);
                self.fill(Shape::circle(dx(0.10), b - 0.045 * s, 0.045 * s), TYRE, id);
            }
        }
    }

    /// Whether a label belongs to an object (not the sky or the ground).
    pub fn is_object_label(label: u16) -> bool {
        label > GROUND
    }
}

/// `c` times `k`, clamped to `[0, 1]`.
pub(crate) fn scale(c: [f32; 3], k: f32) -> [f32; 3] {
    [
        (c[0] * k).clamp(0.0, 1.0),
        (c[1] * k).clamp(0.0, 1.0),
        (c[2] * k).clamp(0.0, 1.0),
    ]
}

/// A well-mixed 64-bit hash of three integers (splitmix64 steps).
pub(crate) fn hash3(a: u64, b: u64, c: u64) -> u64 {
    let mut h = splitmix(a ^ 0x9E37_79B9_7F4A_7C15);
    h = splitmix(h ^ b);
    splitmix(h ^ c.wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// One splitmix64 step.
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
