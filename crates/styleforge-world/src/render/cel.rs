//! Cel: flat fills and thick dark outlines, like an animation cel.
//!
//! Parts are filled with their flat colour (no ground speckle), the sky in three flat
//! bands, colours a little more saturated. Every part edge gets a dark line on its near
//! side (one pixel at 32, two at 64); at 64 and above, object silhouettes get a further line
//! outside, so outlines stay thick relative to the shapes.

use super::{line_width, near_edges, saturate, Canvas, GROUND, SKY};
use crate::scene::Scene;

const INK: [f32; 3] = [0.07, 0.05, 0.10];

/// The cel picture.
pub(super) fn apply(canvas: &Canvas, scene: &Scene) -> Vec<[f32; 3]> {
    let n = canvas.size;
    let w = line_width(n);
    let edges = near_edges(canvas, w);
    let mut out = vec![INK; n * n];
    for y in 0..n {
        for x in 0..n {
            let i = y * n + x;
            let label = canvas.label[i];
            let fill = if label == SKY {
                let fy = (y as f32 + 0.5) / n as f32 / scene.horizon;
                let band = (fy * 3.0).floor().min(2.0);
                let sky = scene.sky.rgb_at((band + 0.5) / 3.0);
                // Stars stay.
                if canvas.rgb[i][0] > 0.9 && canvas.rgb[i][2] < 0.9 {
                    canvas.rgb[i]
                } else {
                    sky
                }
            } else {
                saturate(canvas.label_rgb[label as usize], 1.15)
            };
            let outer = w > 1 && label <= GROUND && touches_object(canvas, x, y, w / 2);
            out[i] = if edges[i] || outer { INK } else { fill };
        }
    }
    out
}

/// Whether a background pixel has an object pixel within `w` along its row or column.
fn touches_object(canvas: &Canvas, x: usize, y: usize, w: usize) -> bool {
    let n = canvas.size;
    (1..=w).any(|d| {
        [
            (x.checked_sub(d), Some(y)),
            (Some(x + d).filter(|&v| v < n), Some(y)),
            (Some(x), y.checked_sub(d)),
            (Some(x), Some(y + d).filter(|&v| v < n)),
        ]
        .into_iter()
        .any(|p| match p {
            (Some(nx), Some(ny)) => canvas.object[ny * n + nx] != 0,
            _ => false,
        })
    })
}
