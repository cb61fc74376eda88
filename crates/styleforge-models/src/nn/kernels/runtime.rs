//! The process settings that make candle's CPU backend fast on a few cores.
//!
//! They are process-wide (environment variables read by candle and rayon when their thread
//! pools start, and glibc allocator parameters), so the library only describes them:
//! [`CpuRuntime::recommended`] says what to set, and the program's `main` applies it once,
//! before any tensor work and before other threads exist.

/// glibc `malloc` parameters (`mallopt`) that keep freed tensor memory for reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MallocTuning {
    /// `M_MMAP_THRESHOLD`: allocations above it are `mmap`ed (and unmapped when freed).
    pub mmap_threshold: i32,
    /// `M_TRIM_THRESHOLD`: free memory at the heap's top above it is returned to the OS.
    pub trim_threshold: i32,
    /// `M_TOP_PAD`: extra memory asked for whenever the heap grows.
    pub top_pad: i32,
}

/// The settings measured to matter on a 2-core machine:
///
/// - `CANDLE_NUM_THREADS=1` (unless set): candle runs large element-wise ops on its own
///   spinning "barrier pool", next to rayon's pool (used by matmul and by our kernels). On a
///   few cores the two pools' spinning threads starve each other: the tiny train step took
///   2.5× longer with the pool on. With it off, element-wise ops run on the calling thread
///   and rayon does all the parallel work. `RAYON_NUM_THREADS` still sets matmul threads.
/// - `RAYON_NUM_THREADS` (unless set) to the CPUs this process may use: candle sizes its
///   matmul threads by the *physical* core count, which some virtual machines report as 1
///   (every matmul then ran on one thread of two: a 2-core VM's text encoder took 1.2×
///   longer), while rayon's pool, which our kernels use, takes every CPU.
/// - glibc `malloc`: tensors of more than 128 KiB are `mmap`ed and unmapped again on every
///   op, so each new tensor page-faults its memory in (a quarter of a train step's time in
///   the kernel). Raising the mmap and trim thresholds keeps freed tensor memory for reuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuRuntime {
    /// Environment variables to set, with their values (only those not already set).
    pub env: Vec<(&'static str, String)>,
    /// The allocator parameters to apply (glibc only).
    pub malloc: MallocTuning,
}

impl CpuRuntime {
    /// The settings for this process: the environment variables above that are not set
    /// yet, and the allocator parameters. Reads the environment; changes nothing.
    pub fn recommended() -> Self {
        let mut env = Vec::new();
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            if let Some(n) = cpu_threads() {
                env.push(("RAYON_NUM_THREADS", n.to_string()));
            }
        }
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            env.push(("CANDLE_NUM_THREADS", "1".to_string()));
        }
        Self {
            env,
            malloc: MallocTuning {
                mmap_threshold: 1 << 30,
                trim_threshold: i32::MAX,
                top_pad: 64 << 20,
            },
        }
    }
}

/// The CPUs this process may use (`None` when the OS does not say).
pub fn cpu_threads() -> Option<usize> {
    std::thread::available_parallelism().ok().map(|n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommends_only_unset_variables() {
        let plan = CpuRuntime::recommended();
        let unset = |name: &str| std::env::var_os(name).is_none();
        let expected = usize::from(unset("RAYON_NUM_THREADS") && cpu_threads().is_some())
            + usize::from(unset("CANDLE_NUM_THREADS"));
        assert_eq!(plan.env.len(), expected, "{:?}", plan.env);
        for (name, value) in &plan.env {
            assert!(unset(name), "{name} is already set");
            assert!(
                value.parse::<usize>().is_ok_and(|n| n >= 1),
                "{name}={value}"
            );
        }
        assert!(plan.malloc.mmap_threshold > 128 << 10);
    }
}
