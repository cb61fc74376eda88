//! Rendering: the plain scene into a [`Canvas`], then one style on top (one file each).
//!
//! [`render`] is deterministic: the randomness inside a style (dots, facets, grain, pencil
//! gaps) comes from a ChaCha8 generator seeded with `seed`. Sizes are free; 32 is the
//! world's default and 64 also looks right (line widths and dot sizes scale with `size / 32`).

mod canvas;
mod cel;
mod cubist;
mod pixel_art;
mod plain;
mod pointillist;
mod sketch;
mod watercolor;

pub use canvas::{Canvas, GROUND, SKY};
pub use pixel_art::{PALETTE, PIXEL_BLOCK};

use image::{Rgb, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::scene::Scene;
use crate::style::Style;

/// The world's default picture size in pixels.
pub const DEFAULT_SIZE: u32 = 32;

/// Paper white, the ground of the sketch, watercolor and pointillist styles.
pub const PAPER: [f32; 3] = [0.97, 0.96, 0.92];

/// Renders `scene` in `style` as a `size`×`size` RGB picture; the same arguments give the
/// same pixels.
pub fn render(scene: &Scene, style: Style, size: u32, seed: u64) -> RgbImage {
    to_image(&render_rgb(scene, style, size as usize, seed), size)
}

/// [`render`] as row-major sRGB floats in `[0, 1]`.
pub fn render_rgb(scene: &Scene, style: Style, size: usize, seed: u64) -> Vec<[f32; 3]> {
    let canvas = Canvas::draw(scene, size);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match style {
        Style::Plain => plain::apply(&canvas),
        Style::PixelArt => pixel_art::apply(&canvas),
        Style::Sketch => sketch::apply(&canvas, &mut rng),
        Style::Cel => cel::apply(&canvas, scene),
        Style::Watercolor => watercolor::apply(&canvas, &mut rng),
        Style::Cubist => cubist::apply(&canvas, &mut rng),
        Style::Pointillist => pointillist::apply(&canvas, &mut rng),
    }
}

/// Floats in `[0, 1]` to an 8-bit image (rounded, clamped).
fn to_image(rgb: &[[f32; 3]], size: u32) -> RgbImage {
    let mut img = RgbImage::new(size, size);
    for (p, c) in img.pixels_mut().zip(rgb) {
        *p = Rgb(c.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8));
    }
    img
}

/// Line width in pixels for a picture of `size`: 1 at 32, 2 at 64.
fn line_width(size: usize) -> usize {
    (size / 32).max(1)
}

/// Pixels with a 4-neighbour (up to `radius` away along a row or column) whose label is
/// smaller: the near side of every edge, `radius` pixels thick.
fn near_edges(canvas: &Canvas, radius: usize) -> Vec<bool> {
    let n = canvas.size;
    let mut out = vec![false; n * n];
    for y in 0..n {
        for x in 0..n {
            let own = canvas.label[y * n + x];
            'search: for d in 1..=radius {
                let neighbours = [
                    (x.checked_sub(d), Some(y)),
                    (Some(x + d).filter(|&v| v < n), Some(y)),
                    (Some(x), y.checked_sub(d)),
                    (Some(x), Some(y + d).filter(|&v| v < n)),
                ];
                for (nx, ny) in neighbours {
                    if let (Some(nx), Some(ny)) = (nx, ny) {
                        if canvas.label[ny * n + nx] < own {
                            out[y * n + x] = true;
                            break 'search;
                        }
                    }
                }
            }
        }
    }
    out
}

/// Separable Gaussian blur of a square image, edges clamped.
fn gaussian_blur(rgb: &[[f32; 3]], size: usize, sigma: f32) -> Vec<[f32; 3]> {
    let r = (sigma * 3.0).ceil() as isize;
    let kernel: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let pass = |src: &[[f32; 3]], horizontal: bool| -> Vec<[f32; 3]> {
        let mut dst = vec![[0.0f32; 3]; src.len()];
        for y in 0..size {
            for x in 0..size {
                let mut acc = [0.0f32; 3];
                for (k, w) in kernel.iter().enumerate() {
                    let o = k as isize - r;
                    let (sx, sy) = if horizontal {
                        ((x as isize + o).clamp(0, size as isize - 1) as usize, y)
                    } else {
                        (x, (y as isize + o).clamp(0, size as isize - 1) as usize)
                    };
                    let c = src[sy * size + sx];
                    for ch in 0..3 {
                        acc[ch] += w * c[ch];
                    }
                }
                dst[y * size + x] = acc;
            }
        }
        dst
    };
    pass(&pass(rgb, true), false)
}

/// Rec. 601 luma of an sRGB colour.
pub fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// HSV saturation of an sRGB colour (0 for greys).
pub fn saturation(c: [f32; 3]) -> f32 {
    let max = c[0].max(c[1]).max(c[2]);
    let min = c[0].min(c[1]).min(c[2]);
    if max <= 1e-6 {
        0.0
    } else {
        (max - min) / max
    }
}

/// `c` with its saturation scaled by `k` around its luma, clamped to `[0, 1]`.
fn saturate(c: [f32; 3], k: f32) -> [f32; 3] {
    let l = luma(c);
    c.map(|v| (l + (v - l) * k).clamp(0.0, 1.0))
}

/// A well-mixed seed derived from three integers (world seed, sample index, stream).
pub(crate) fn hash_seed(a: u64, b: u64, c: u64) -> u64 {
    canvas::hash3(a, b, c)
}
