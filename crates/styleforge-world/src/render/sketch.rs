//! Sketch: grey pencil outlines and diagonal hatching on paper white.
//!
//! Outlines sit on the near side of every part edge (the horizon included). Tone is hatch
//! density: the darker the plain pixel, the closer the diagonal strokes. Objects are
//! hatched one way with a grey lightly tinted by their colour, the sky the other way in a
//! paler tint, and the ground gets short horizontal strokes. A few stroke pixels are left
//! out at random, like a pencil skipping on paper.

use rand::Rng;

use super::{line_width, luma, near_edges, Canvas, GROUND, PAPER, SKY};
use crate::scene::mix;

const GRAPHITE: [f32; 3] = [0.28, 0.28, 0.31];

/// The sketch picture.
pub(super) fn apply<R: Rng + ?Sized>(canvas: &Canvas, rng: &mut R) -> Vec<[f32; 3]> {
    let n = canvas.size;
    let w = line_width(n);
    let edges = near_edges(canvas, w);
    let mut out = vec![PAPER; n * n];
    for y in 0..n {
        for x in 0..n {
            let i = y * n + x;
            let c = canvas.rgb[i];
            let label = canvas.label[i];
            if edges[i] {
                out[i] = GRAPHITE;
                continue;
            }
            // Stroke coordinates in 32-pixel units, so the pattern scales with the size.
            let (sx, sy) = (x / w, y / w);
            // Objects are shaded a step darker than the background so they stand out.
            let darkness = 1.0 - luma(c)
                + if Canvas::is_object_label(label) {
                    0.2
                } else {
                    0.0
                };
            let period = if darkness > 0.8 {
                2
            } else if darkness > 0.55 {
                3
            } else if darkness > 0.3 {
                4
            } else if darkness > 0.12 {
                6
            } else {
                0
            };
            let stroke = match label {
                SKY => period > 0 && (sx + n - sy).is_multiple_of(period + 1),
                GROUND => period > 0 && sy.is_multiple_of(3) && (sx + 2 * (sy / 3)) % 5 < 3,
                _ => period > 0 && (sx + sy).is_multiple_of(period),
            };
            if stroke && rng.gen::<f32>() > 0.1 {
                let tint = match label {
                    SKY => 0.5,
                    GROUND => 0.25,
                    _ => 0.45,
                };
                let ink = mix(GRAPHITE, c, tint);
                out[i] = if label == SKY {
                    mix(ink, PAPER, 0.3)
                } else {
                    ink
                };
            }
        }
    }
    out
}
