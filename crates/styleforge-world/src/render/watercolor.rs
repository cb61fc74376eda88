//! Watercolor: washed colours, a soft blur, pigment blotches and paper grain.
//!
//! The plain picture is mixed towards paper white and slightly desaturated, blurred
//! (σ = 1.15 px at 32, scaled with the size), modulated by a smooth random pigment field
//! (bilinear over a coarse grid) and finally by a faint per-pixel grain.

use rand::Rng;

use super::{gaussian_blur, saturate, Canvas, PAPER};
use crate::scene::mix;

/// The watercolor picture.
pub(super) fn apply<R: Rng + ?Sized>(canvas: &Canvas, rng: &mut R) -> Vec<[f32; 3]> {
    let n = canvas.size;
    let unit = n as f32 / 32.0;
    let washed: Vec<[f32; 3]> = canvas
        .rgb
        .iter()
        .map(|&c| mix(saturate(c, 0.85), PAPER, 0.28))
        .collect();
    let mut out = gaussian_blur(&washed, n, 1.15 * unit.max(0.5));
    // Pigment field: random values on a 5×5 grid, interpolated bilinearly.
    let g = 5usize;
    let field: Vec<f32> = (0..g * g).map(|_| rng.gen_range(-0.06..0.06)).collect();
    for y in 0..n {
        for x in 0..n {
            let fx = x as f32 / n.max(2) as f32 * (g - 1) as f32;
            let fy = y as f32 / n.max(2) as f32 * (g - 1) as f32;
            let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(g - 1), (y0 + 1).min(g - 1));
            let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
            let top = field[y0 * g + x0] * (1.0 - tx) + field[y0 * g + x1] * tx;
            let bottom = field[y1 * g + x0] * (1.0 - tx) + field[y1 * g + x1] * tx;
            let pigment = top * (1.0 - ty) + bottom * ty;
            let grain = rng.gen_range(-0.008..0.008);
            let c = &mut out[y * n + x];
            *c = c.map(|v| (v * (1.0 + pigment) + grain).clamp(0.0, 1.0));
        }
    }
    out
}
