//! Process-wide settings that make candle's CPU backend fast on a few cores.
//!
//! Call [`configure_cpu_runtime`] once at the start of `main`, before any tensor work and
//! before other threads exist (it sets environment variables).

/// Applies the process settings measured to matter on a 2-core machine:
///
/// - `CANDLE_NUM_THREADS=1` (unless set): candle runs large element-wise ops on its own
///   spinning "barrier pool", next to rayon's pool (used by matmul and by our kernels). On a
///   few cores the two pools' spinning threads starve each other: the tiny train step took
///   2.5× longer with the pool on. With it off, element-wise ops run on the calling thread
///   and rayon does all the parallel work. `RAYON_NUM_THREADS` still sets matmul threads.
/// - glibc `malloc`: tensors of more than 128 KiB are `mmap`ed and unmapped again on every
///   op, so each new tensor page-faults its memory in (a quarter of a train step's time in
///   the kernel). Raising the mmap and trim thresholds keeps freed tensor memory for reuse.
///
/// - `RAYON_NUM_THREADS` (unless set) to the CPUs this process may use: candle sizes its
///   matmul threads by the *physical* core count, which some virtual machines report as 1
///   (every matmul then ran on one thread of two: a 2-core VM's text encoder took 1.2×
///   longer), while rayon's pool, which our kernels use, takes every CPU.
///
/// Returns a short description of what it changed, for logs.
pub fn configure_cpu_runtime() -> String {
    let mut done = Vec::new();
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        if let Ok(n) = std::thread::available_parallelism() {
            std::env::set_var("RAYON_NUM_THREADS", n.get().to_string());
            done.push("RAYON_NUM_THREADS = available CPUs");
        }
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
        done.push("CANDLE_NUM_THREADS=1");
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only adjusts allocator parameters.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1
        };
        if ok {
            done.push("malloc keeps freed tensor memory");
        }
    }
    done.join(", ")
}
