//! Aspect-ratio buckets: training sizes of about the training square's area in many
//! aspect ratios, so that a wide or tall image is trained whole rather than cropped to a
//! square (kohya's `--enable_bucket`, NovelAI's bucketing).
//!
//! For each width `w` (a multiple of the step), the bucket is the tallest `h` (a multiple of
//! the step) with `w·h ≤ resolution²` and `h/w ≤ max_aspect`, kept when `w/h ≤ max_aspect`
//! too; its transpose is a bucket as well, and of buckets with the same aspect ratio only
//! the largest is kept. So every bucket respects the pixel budget and the aspect limit and
//! is the largest of its width or of its height within them (sizes such as 320×256 at
//! 512 px, which could grow both ways and would train images far below the budget, are not
//! buckets).
//!
//! An image goes to the bucket whose aspect ratio is closest to its own in log ratio
//! (`|ln(w/h) − ln(bw/bh)|`, so a 2:1 and a 1:2 image are treated alike); ties go to the
//! larger bucket, then the wider one.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How buckets are made.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BucketSpec {
    /// Side of the training square: buckets hold at most `resolution²` pixels.
    pub resolution: u32,
    /// Bucket sides are multiples of this (SD: 64 px, 8 latent pixels).
    pub step: u32,
    /// Largest long-side / short-side ratio.
    pub max_aspect: f64,
}

/// The buckets of a [`BucketSpec`], sorted by width.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    sizes: Vec<(u32, u32)>,
}

impl Buckets {
    /// The buckets of `spec`; an error when there is none (step larger than the resolution)
    /// or the values are out of range.
    pub fn new(spec: &BucketSpec) -> Result<Self> {
        let BucketSpec {
            resolution,
            step,
            max_aspect,
        } = *spec;
        if step == 0 || !(max_aspect >= 1.0 && max_aspect.is_finite()) {
            return Err(Error::InvalidConfig(format!(
                "data.bucket_step must be positive and data.max_aspect at least 1 (got {step} \
                 and {max_aspect})"
            )));
        }
        let budget = resolution as u64 * resolution as u64;
        let (s, a) = (step as u64, max_aspect);
        let mut found: Vec<(u32, u32)> = Vec::new();
        let mut w = s;
        while w * s <= budget {
            let by_budget = budget / w / s * s;
            let by_aspect = ((w as f64 * a) as u64) / s * s;
            let h = by_budget.min(by_aspect);
            if h >= s && (w as f64) <= h as f64 * a {
                found.push((w as u32, h as u32));
                found.push((h as u32, w as u32));
            }
            w += s;
        }
        // one bucket per aspect ratio (w/h reduced), the largest
        let mut best: std::collections::BTreeMap<(u32, u32), (u32, u32)> = Default::default();
        for (w, h) in found {
            let g = gcd(w, h);
            let e = best.entry((w / g, h / g)).or_insert((w, h));
            if w as u64 * h as u64 > e.0 as u64 * e.1 as u64 {
                *e = (w, h);
            }
        }
        let mut sizes: Vec<(u32, u32)> = best.into_values().collect();
        sizes.sort();
        if sizes.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "no aspect-ratio bucket fits: data.bucket_step {step} is larger than the \
                 resolution {resolution}; lower the step or raise the resolution"
            )));
        }
        Ok(Self { sizes })
    }

    /// The bucket sizes `(width, height)`, sorted.
    pub fn sizes(&self) -> &[(u32, u32)] {
        &self.sizes
    }

    /// The bucket of an image of `width`×`height`: the closest aspect ratio (log distance),
    /// ties to the larger bucket, then the wider.
    pub fn assign(&self, width: u32, height: u32) -> (u32, u32) {
        let own = (width.max(1) as f64 / height.max(1) as f64).ln();
        let mut best = self.sizes[0];
        let mut best_d = f64::INFINITY;
        for &(w, h) in &self.sizes {
            let d = ((w as f64 / h as f64).ln() - own).abs();
            let area = w as u64 * h as u64;
            let best_area = best.0 as u64 * best.1 as u64;
            let better = d < best_d
                || (d == best_d && (area > best_area || (area == best_area && w > best.0)));
            if better {
                best = (w, h);
                best_d = d;
            }
        }
        best
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resolution: u32, step: u32, max_aspect: f64) -> BucketSpec {
        BucketSpec {
            resolution,
            step,
            max_aspect,
        }
    }

    #[test]
    fn sd_buckets_respect_the_budget_the_step_and_the_aspect_limit() {
        let s = spec(512, 64, 2.0);
        let b = Buckets::new(&s).unwrap();
        assert_eq!(
            b.sizes(),
            [
                (320, 640),
                (384, 640),
                (448, 576),
                (512, 512),
                (576, 448),
                (640, 320),
                (640, 384)
            ]
        );
        for &(w, h) in b.sizes() {
            assert!(w % 64 == 0 && h % 64 == 0, "{w}x{h}");
            assert!(w as u64 * h as u64 <= 512 * 512, "{w}x{h}");
            let aspect = w.max(h) as f64 / w.min(h) as f64;
            assert!(aspect <= 2.0, "{w}x{h}");
            // no bucket could be a step taller and also a step wider within the budget and
            // the limit
            let fits = |w: u32, h: u32| {
                w as u64 * h as u64 <= 512 * 512 && w.max(h) as f64 <= 2.0 * w.min(h) as f64
            };
            assert!(!(fits(w, h + 64) && fits(w + 64, h)), "{w}x{h} could grow");
        }
        // aspect ratios are unique
        let mut ratios: Vec<_> = b
            .sizes()
            .iter()
            .map(|&(w, h)| (w / gcd(w, h), h / gcd(w, h)))
            .collect();
        ratios.dedup();
        assert_eq!(ratios.len(), b.sizes().len());
        // the same spec gives the same buckets
        assert_eq!(Buckets::new(&s).unwrap(), b);
        // a wider limit adds wider buckets
        let wide = Buckets::new(&spec(512, 64, 4.0)).unwrap();
        assert!(wide.sizes().contains(&(1024, 256)) && wide.sizes().contains(&(256, 1024)));
        assert!(Buckets::new(&spec(32, 64, 2.0)).is_err());
        assert!(Buckets::new(&spec(512, 64, 0.5)).is_err());
    }

    #[test]
    fn every_image_goes_to_exactly_one_closest_bucket() {
        let b = Buckets::new(&spec(512, 64, 2.0)).unwrap();
        assert_eq!(b.assign(1000, 1000), (512, 512));
        assert_eq!(b.assign(2000, 1000), (640, 320));
        assert_eq!(b.assign(1000, 2000), (320, 640));
        assert_eq!(b.assign(3000, 1000), (640, 320)); // beyond the limit: the widest
        assert_eq!(b.assign(1600, 1000), (640, 384)); // 1.6 vs 5:3
        assert_eq!(b.assign(1290, 1000), (576, 448)); // 1.29 vs 9:7
        for w in (100..3000).step_by(37) {
            for h in (100..3000).step_by(53) {
                let got = b.assign(w, h);
                let own = (w as f64 / h as f64).ln();
                let d = |&(bw, bh): &(u32, u32)| ((bw as f64 / bh as f64).ln() - own).abs();
                let matches: Vec<_> = b.sizes().iter().filter(|s| d(s) <= d(&got)).collect();
                assert!(b.sizes().contains(&got));
                assert!(matches.iter().all(|s| d(s) == d(&got)), "{w}x{h} → {got:?}");
                assert_eq!(got, b.assign(w, h));
            }
        }
        // a tie between transposes (no square bucket at 544 px with step 64) is broken by
        // size, then width, the same way every time
        let t = Buckets::new(&spec(544, 64, 2.0)).unwrap();
        assert!(!t.sizes().iter().any(|&(w, h)| w == h));
        assert!(t.sizes().contains(&(512, 576)) && t.sizes().contains(&(576, 512)));
        assert_eq!(t.assign(700, 700), (576, 512));
    }
}
