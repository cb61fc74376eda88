//! Pixel art: the scene at a quarter of the resolution in a small palette, blown back up
//! with nearest neighbour.
//!
//! Each 4×4 block takes one part: the part covering most of it, objects counting triple so
//! that a thin person or a cat's ear survives; the block's colour is that part's mean
//! colour snapped to [`PALETTE`]. The snapping is what bands the sky.

use super::Canvas;
use crate::scene::distance;

/// Side of the blocks in pixels, at every picture size.
pub const PIXEL_BLOCK: usize = 4;

/// The pixel-art palette (sRGB): the six object colours, then sky, ground and detail tones.
pub const PALETTE: [[f32; 3]; 20] = [
    [0.88, 0.12, 0.12], // red
    [1.0, 0.55, 0.05],  // orange
    [1.0, 0.90, 0.15],  // yellow
    [0.10, 0.75, 0.20], // green
    [0.15, 0.30, 0.95], // blue
    [0.60, 0.20, 0.80], // purple
    [0.05, 0.05, 0.10], // ink
    [0.05, 0.08, 0.30], // night blue
    [0.35, 0.35, 0.40], // dark grey
    [0.98, 0.97, 0.92], // white
    [0.75, 0.85, 0.98], // pale sky
    [0.30, 0.60, 0.98], // sky blue
    [0.40, 0.25, 0.55], // dusk violet
    [0.85, 0.45, 0.50], // sunset pink
    [0.20, 0.50, 0.20], // grass green
    [0.90, 0.78, 0.50], // sand
    [0.45, 0.25, 0.12], // brown
    [0.98, 0.76, 0.58], // skin
    [1.0, 0.95, 0.60],  // lamp yellow
    [0.98, 0.68, 0.38], // sunset orange
];

/// The pixel-art picture.
pub(super) fn apply(canvas: &Canvas) -> Vec<[f32; 3]> {
    let n = canvas.size;
    let mut out = vec![[0.0; 3]; n * n];
    for by in (0..n).step_by(PIXEL_BLOCK) {
        for bx in (0..n).step_by(PIXEL_BLOCK) {
            let pixels: Vec<usize> = (by..(by + PIXEL_BLOCK).min(n))
                .flat_map(|y| (bx..(bx + PIXEL_BLOCK).min(n)).map(move |x| y * n + x))
                .collect();
            // Votes per label; objects count double.
            let mut votes: Vec<(u16, f32)> = Vec::new();
            for &i in &pixels {
                let label = canvas.label[i];
                let w = if Canvas::is_object_label(label) {
                    2.0
                } else {
                    1.0
                };
                match votes.iter_mut().find(|(l, _)| *l == label) {
                    Some((_, v)) => *v += w,
                    None => votes.push((label, w)),
                }
            }
            let winner = votes
                .iter()
                .fold(
                    (0u16, f32::MIN),
                    |best, &(l, v)| if v > best.1 { (l, v) } else { best },
                )
                .0;
            let mut mean = [0.0f32; 3];
            let mut count = 0.0f32;
            for &i in pixels.iter().filter(|&&i| canvas.label[i] == winner) {
                for (m, v) in mean.iter_mut().zip(canvas.rgb[i]) {
                    *m += v;
                }
                count += 1.0;
            }
            let mean = mean.map(|m| m / count.max(1.0));
            let colour = nearest(mean);
            for &i in &pixels {
                out[i] = colour;
            }
        }
    }
    out
}

/// The palette colour nearest to `c`.
fn nearest(c: [f32; 3]) -> [f32; 3] {
    PALETTE
        .into_iter()
        .min_by(|a, b| distance(*a, c).total_cmp(&distance(*b, c)))
        .unwrap_or(c)
}
