//! What the workspace's test suites share about where they run: the device
//! (`STYLEFORGE_TEST_DEVICE`) and the fixtures folder (`STYLEFORGE_FIXTURES`).
//!
//! By default tests compute on the CPU and read `fixtures/` of this checkout. The GPU check
//! (`tools/gpu/check.sh`) runs the parity tests with `STYLEFORGE_TEST_DEVICE=cuda` and, since
//! it runs test executables built elsewhere, points `STYLEFORGE_FIXTURES` at its checkout.

use std::path::PathBuf;

use candle_core::Device;

/// The device tests compute on: `STYLEFORGE_TEST_DEVICE` = `cpu` (default), `cuda` or
/// `cuda:N`. Panics on any other value or a GPU that cannot be opened: a test asked to run
/// on a GPU must not pass on the CPU.
pub fn device() -> Device {
    let choice = std::env::var("STYLEFORGE_TEST_DEVICE").unwrap_or_default();
    let choice = choice.trim().to_ascii_lowercase();
    let gpu = match choice.as_str() {
        "" | "cpu" => return Device::Cpu,
        "cuda" => Some(0),
        other => other.strip_prefix("cuda:").and_then(|n| n.parse().ok()),
    };
    let n =
        gpu.unwrap_or_else(|| panic!("STYLEFORGE_TEST_DEVICE={choice}: use cpu, cuda or cuda:N"));
    Device::new_cuda(n)
        .unwrap_or_else(|e| panic!("STYLEFORGE_TEST_DEVICE={choice}: cannot open the GPU: {e}"))
}

/// The fixtures folder: `STYLEFORGE_FIXTURES`, else `fixtures/` at the workspace root this
/// crate was built from.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("STYLEFORGE_FIXTURES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
    }
}
