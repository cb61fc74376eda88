//! The machine's measured f32 matrix-multiply peak: the yardstick for the GFLOP/s the
//! models achieve.

use std::time::Instant;

/// GFLOP/s of the best of `repeats` square `size³` f32 products through the same gemm the
/// CPU kernels (and candle) call, on all of rayon's threads (`RAYON_NUM_THREADS`).
pub fn gemm_peak_gflops(size: usize, repeats: usize) -> f64 {
    let n = size.max(1);
    let a: Vec<f32> = (0..n * n)
        .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|i| ((i % 89) as f32 - 44.0) / 89.0)
        .collect();
    let mut c = vec![0f32; n * n];
    let row = super::Mat {
        ptr: a.as_ptr(),
        rs: n as isize,
        cs: 1,
    };
    let rhs = super::Mat {
        ptr: b.as_ptr(),
        rs: n as isize,
        cs: 1,
    };
    let mut best = f64::INFINITY;
    // one untimed product first (thread start-up, page faults)
    for i in 0..repeats.max(1) + 1 {
        let start = Instant::now();
        // SAFETY: a, b and c each hold n·n values with the strides given; c aliases neither.
        unsafe {
            super::matmul(
                n,
                n,
                n,
                c.as_mut_ptr(),
                n as isize,
                1,
                row,
                rhs,
                false,
                true,
            );
        }
        if i > 0 {
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    std::hint::black_box(&c);
    2.0 * (n as f64).powi(3) / best / 1e9
}
