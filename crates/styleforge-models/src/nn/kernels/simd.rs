//! Building blocks for loops the compiler vectorises: reductions in 16 independent lanes,
//! a branch-free `exp`, and [`multiversion!`](crate::multiversion), which compiles a
//! function for AVX-512 and AVX2 as well and picks the best one the CPU has at run time
//! (the crate is built for baseline x86-64, i.e. SSE2 only).

/// Lanes of the accumulators below (one AVX-512 register of `f32`).
pub const LANES: usize = 16;

/// Whether the AVX-512 kernels run: the CPU has the subset the `v4` versions are compiled
/// for, and the build has the `avx512` feature (on by default; a build without it takes the
/// AVX2 paths here and in gemm, to check them on an AVX-512 machine).
#[cfg(target_arch = "x86_64")]
pub fn has_avx512() -> bool {
    cfg!(feature = "avx512")
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && has_avx2()
}

/// Whether the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
pub fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// The widest instruction set the CPU kernels (ours and gemm's) use on this CPU in this
/// build: `"avx512"`, `"avx2"` or `"baseline"`.
pub fn kernel_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            return "avx512";
        }
        if has_avx2() {
            return "avx2";
        }
    }
    "baseline"
}

/// Defines a function compiled three times (AVX-512, AVX2+FMA, baseline) and dispatched on
/// the running CPU. Its body should call only `#[inline(always)]` helpers (or ones generic
/// enough to be inlined) so they are vectorised with the wider instructions too.
#[macro_export]
#[doc(hidden)]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                if $crate::nn::kernels::simd::has_avx512() {
                    // SAFETY: the CPU has the features `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if $crate::nn::kernels::simd::has_avx2() {
                    // SAFETY: the CPU has the features `v3` is compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

/// `Σ x`, in [`LANES`] lanes.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    let tail: f32 = it.remainder().iter().sum();
    hsum(acc) + tail
}

/// Sum of the lanes, as a tree (vector shuffles rather than a serial chain).
#[inline(always)]
pub fn hsum(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            acc[i] += acc[i + w];
        }
        w /= 2;
    }
    acc[0]
}

/// `softmax(scale·row)` for each `m`-wide row of `s`, in place. The exponentials run over
/// the whole block at once so short rows still use full vectors.
#[inline(always)]
pub fn softmax_rows_inplace(s: &mut [f32], m: usize, scale: f32) {
    if m == 0 {
        return;
    }
    if m < 4 * LANES {
        for row in s.chunks_mut(m) {
            let mx = max(row);
            let shift = if mx.is_finite() { mx * scale } else { 0.0 };
            row.iter_mut().for_each(|v| *v = *v * scale - shift);
        }
        s.iter_mut().for_each(|v| *v = exp(*v));
        for row in s.chunks_mut(m) {
            let inv = 1.0 / sum(row);
            row.iter_mut().for_each(|v| *v *= inv);
        }
        return;
    }
    // Long rows: three passes (max; exponentials and their sum together; scale) instead
    // of five.
    for row in s.chunks_mut(m) {
        let mx = max(row);
        let shift = if mx.is_finite() { mx * scale } else { 0.0 };
        let mut acc = [0f32; LANES];
        let mut it = row.chunks_exact_mut(LANES);
        for c in &mut it {
            for i in 0..LANES {
                let e = exp(c[i] * scale - shift);
                c[i] = e;
                acc[i] += e;
            }
        }
        let mut total = 0f32;
        for v in it.into_remainder() {
            *v = exp(*v * scale - shift);
            total += *v;
        }
        let inv = 1.0 / (hsum(acc) + total);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// `Σ a·b`, in [`LANES`] lanes.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut ia = a.chunks_exact(LANES);
    let mut ib = b.chunks_exact(LANES);
    for (ca, cb) in (&mut ia).zip(&mut ib) {
        for i in 0..LANES {
            acc[i] += ca[i] * cb[i];
        }
    }
    let tail: f32 = ia
        .remainder()
        .iter()
        .zip(ib.remainder())
        .map(|(x, y)| x * y)
        .sum();
    hsum(acc) + tail
}

/// `max x` (`-inf` for an empty slice; NaN-ignoring like `f32::max`).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let m = it
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    acc.iter().fold(m, |m, &v| m.max(v))
}

/// `eˣ` without branches or calls (so it vectorises), relative error below 2e-7 over
/// `[-87, 88]`; 0 below that range, `+inf` above it, NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    // The integer n sits in t's low mantissa bits; reading it from the bits (not with
    // `n as i32`, whose saturating NaN-safe conversion compiles to scalar code) keeps the
    // whole function in vector registers.
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    let y = p * scale;
    if x < -87.0 {
        0.0
    } else if x > 88.0 {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// `1 / (1 + e⁻ˣ)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `1 + erf(x/√2)` (i.e. `2·Φ(x)`) and `e^(−x²/2)`, branch-free so it vectorises.
///
/// `erfc` from Numerical Recipes' Chebyshev fit (fractional error below 1.2e-7), using
/// `1 + erf(u) = erfc(−u)`: no cancellation for negative `x`, absolute error ~2e-7 for
/// positive `x`.
#[inline(always)]
pub fn one_plus_erf_and_gauss(x: f32) -> (f32, f32) {
    let u = x * std::f32::consts::FRAC_1_SQRT_2;
    let z = u.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77_f32;
    p = p * t - 0.822_152_23;
    p = p * t + 1.488_515_9;
    p = p * t - 1.135_204;
    p = p * t + 0.278_868_07;
    p = p * t - 0.186_288_06;
    p = p * t + 0.096_784_18;
    p = p * t + 0.374_091_96;
    p = p * t + 1.000_023_7;
    p = p * t - 1.265_512_2;
    let gauss = exp(-z * z);
    let erfc = t * gauss * exp(p);
    let one_plus = if u >= 0.0 { 2.0 - erfc } else { erfc };
    (one_plus, gauss)
}

/// `1/√(2π)`.
pub const INV_SQRT_2PI: f32 = 0.398_942_3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_accurate() {
        let mut worst = 0f64;
        let mut x = -12.0f32;
        while x < 12.0 {
            let (one_plus, _) = one_plus_erf_and_gauss(x);
            let gelu = 0.5 * x * one_plus;
            let u = x as f64 / std::f64::consts::SQRT_2;
            let want = 0.5 * x as f64 * (1.0 + candle_core::cpu::erf::erf_f64(u));
            worst = worst.max((gelu as f64 - want).abs() / (x.abs() as f64).max(1.0));
            x += 0.00137;
        }
        assert!(worst < 5e-7, "worst error {worst}");
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::INFINITY).is_infinite());
        assert!(exp(f32::NAN).is_nan());
    }

    crate::multiversion! {
        fn sums(x: &[f32], y: &[f32]) -> (f32, f32, f32) {
            (sum(x), dot(x, y), max(x))
        }
    }

    #[test]
    fn reductions_match_scalar() {
        for n in [0usize, 1, 15, 16, 17, 100, 1000] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let y: Vec<f32> = (0..n)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 3.0)
                .collect();
            let (s, d, m) = sums(&x, &y);
            let s0: f64 = x.iter().map(|&v| v as f64).sum();
            let d0: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
            let m0 = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            assert!((s as f64 - s0).abs() < 1e-3, "{n}: sum {s} vs {s0}");
            assert!((d as f64 - d0).abs() < 1e-2, "{n}: dot {d} vs {d0}");
            assert_eq!(m, m0);
        }
    }
}
