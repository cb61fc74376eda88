//! Cubist: Voronoi facets, each filled with its mean colour and shaded, with dark edges.
//!
//! About 30 random sites cut the picture into cells; a facet is a cell intersected with
//! one region (sky, ground, or one object), so objects keep their own facets and colours.
//! Each facet takes the mean colour of its pixels, shifted a little towards ochre and
//! shaded by a random factor; a dark line runs along every facet boundary.

use rand::Rng;

use super::{line_width, Canvas, GROUND};
use crate::scene::mix;

const EDGE: [f32; 3] = [0.16, 0.12, 0.10];
const OCHRE: [f32; 3] = [0.62, 0.50, 0.32];

/// The cubist picture.
pub(super) fn apply<R: Rng + ?Sized>(canvas: &Canvas, rng: &mut R) -> Vec<[f32; 3]> {
    let n = canvas.size;
    let sites: Vec<[f32; 2]> = (0..rng.gen_range(26..34))
        .map(|_| [rng.gen::<f32>(), rng.gen::<f32>()])
        .collect();
    let regions = 2 + canvas.object.iter().copied().max().unwrap_or(0) as usize;
    let region = |i: usize| -> usize {
        match canvas.object[i] {
            0 => (canvas.label[i] == GROUND) as usize,
            k => 1 + k as usize,
        }
    };
    let mut facet = vec![0usize; n * n];
    for y in 0..n {
        for x in 0..n {
            let (fx, fy) = ((x as f32 + 0.5) / n as f32, (y as f32 + 0.5) / n as f32);
            let cell = sites
                .iter()
                .enumerate()
                .map(|(k, s)| (k, (s[0] - fx).powi(2) + (s[1] - fy).powi(2)))
                .fold((0, f32::MAX), |b, c| if c.1 < b.1 { c } else { b })
                .0;
            facet[y * n + x] = cell * regions + region(y * n + x);
        }
    }
    let facets = sites.len() * regions;
    let mut sum = vec![[0.0f32; 3]; facets];
    let mut count = vec![0.0f32; facets];
    for (i, &f) in facet.iter().enumerate() {
        for (s, v) in sum[f].iter_mut().zip(canvas.rgb[i]) {
            *s += v;
        }
        count[f] += 1.0;
    }
    let shade: Vec<f32> = (0..facets).map(|_| rng.gen_range(0.80..1.12)).collect();
    let fill: Vec<[f32; 3]> = (0..facets)
        .map(|f| {
            let mean = sum[f].map(|s| s / count[f].max(1.0));
            mix(mean, OCHRE, 0.15).map(|v| (v * shade[f]).clamp(0.0, 1.0))
        })
        .collect();
    let w = line_width(n);
    let mut out = vec![EDGE; n * n];
    for y in 0..n {
        for x in 0..n {
            let f = facet[y * n + x];
            let boundary = (1..=w).any(|d| {
                (x + d < n && facet[y * n + x + d] != f)
                    || (y + d < n && facet[(y + d) * n + x] != f)
            });
            if !boundary {
                out[y * n + x] = fill[f];
            }
        }
    }
    out
}
