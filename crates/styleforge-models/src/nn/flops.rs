//! A process-wide counter of the multiply-add work the models' forward passes do, so a
//! benchmark can report achieved GFLOP/s.
//!
//! Convolutions, linear layers and attention's two matrix products add `2·m·n·k` each
//! (one multiply and one add per term), counted where the layer runs, whichever kernel
//! computes it. Element-wise work (norms, activations, softmax) is not counted: these are
//! the FLOPs that matter for comparing against a gemm peak. Counting is off unless a
//! [`measure`] call is running, and then costs one atomic add per layer call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicU64 = AtomicU64::new(0);

/// Adds `flops` to the counter when counting is on.
#[inline]
pub fn add(flops: u64) {
    if ENABLED.load(Ordering::Relaxed) {
        COUNT.fetch_add(flops, Ordering::Relaxed);
    }
}

/// Adds the FLOPs of a `[m, k] × [k, n]` product (`2·m·k·n`).
#[inline]
pub fn add_matmul(m: usize, k: usize, n: usize) {
    add(2 * (m as u64) * (k as u64) * (n as u64));
}

/// Runs `f` with counting on and returns its result with the FLOPs it did. Calls must not
/// overlap (the counter is process-wide); benchmarks run one workload at a time.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.store(0, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    let out = f();
    ENABLED.store(false, Ordering::Relaxed);
    (out, COUNT.swap(0, Ordering::Relaxed))
}
