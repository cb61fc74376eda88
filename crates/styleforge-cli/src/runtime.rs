//! The process setup the library recommends ([`CpuRuntime::recommended`]), applied by the
//! binary: environment variables for candle's and rayon's thread pools and glibc malloc
//! tuning. Process-wide, so it happens here, first thing in `main`.

use styleforge::models::nn::kernels::CpuRuntime;

/// Applies the recommended CPU runtime settings; call before any thread exists. Returns a
/// short description of what changed, for logs.
pub fn configure() -> String {
    let plan = CpuRuntime::recommended();
    let mut done: Vec<String> = plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for (name, value) in &plan.env {
        std::env::set_var(name, value);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let m = plan.malloc;
        // SAFETY: mallopt only adjusts allocator parameters; no thread allocates yet.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, m.mmap_threshold) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, m.trim_threshold) == 1
                && libc::mallopt(libc::M_TOP_PAD, m.top_pad) == 1
        };
        if ok {
            done.push("malloc keeps freed tensor memory".to_string());
        }
    }
    done.join(", ")
}
