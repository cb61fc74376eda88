//! The CPU runtime setup the `styleforge` binary does first in `main`, for test binaries
//! that measure time or memory as the binary would run.

use styleforge::models::nn::kernels::CpuRuntime;

/// Sets the recommended thread-pool variables and malloc parameters
/// ([`CpuRuntime::recommended`]); call first in a test, before any tensor work.
pub fn configure_cpu_runtime() {
    let plan = CpuRuntime::recommended();
    for (name, value) in &plan.env {
        std::env::set_var(name, value);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let m = plan.malloc;
        // SAFETY: mallopt only adjusts allocator parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, m.mmap_threshold);
            libc::mallopt(libc::M_TRIM_THRESHOLD, m.trim_threshold);
            libc::mallopt(libc::M_TOP_PAD, m.top_pad);
        }
    }
}
