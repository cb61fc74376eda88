//! Pointillist: small dots of saturated colour on white paper.
//!
//! Dots (radius 0.6–1.1 px at 32, scaled with the size) are dropped at random, each in the
//! colour of the plain picture under its centre, more saturated and jittered in brightness.
//! Dots on objects are kept always, dots on the background two times in three, so objects
//! read denser; about half the paper stays white.

use rand::Rng;

use super::{saturate, Canvas, PAPER};

/// Dots per pixel drawn (before the background thinning).
const DOTS_PER_PIXEL: f32 = 0.36;

/// The pointillist picture.
pub(super) fn apply<R: Rng + ?Sized>(canvas: &Canvas, rng: &mut R) -> Vec<[f32; 3]> {
    let n = canvas.size;
    let unit = n as f32 / 32.0;
    let mut out = vec![PAPER; n * n];
    if n == 0 {
        return out;
    }
    let dots = (DOTS_PER_PIXEL * (n * n) as f32) as usize;
    for _ in 0..dots {
        let cx = rng.gen::<f32>() * n as f32;
        let cy = rng.gen::<f32>() * n as f32;
        let r = rng.gen_range(0.6..1.1) * unit;
        let jitter = rng.gen_range(0.88..1.12);
        let keep = rng.gen::<f32>();
        let centre = (cy as usize).min(n - 1) * n + (cx as usize).min(n - 1);
        if canvas.object[centre] == 0 && keep > 0.67 {
            continue;
        }
        let colour = saturate(canvas.rgb[centre], 1.3).map(|v| (v * jitter).clamp(0.0, 1.0));
        let (x0, x1) = (
            (cx - r).floor().max(0.0) as usize,
            ((cx + r).ceil() as usize).min(n),
        );
        let (y0, y1) = (
            (cy - r).floor().max(0.0) as usize,
            ((cy + r).ceil() as usize).min(n),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                if (px - cx).powi(2) + (py - cy).powi(2) <= r * r {
                    out[y * n + x] = colour;
                }
            }
        }
    }
    out
}
