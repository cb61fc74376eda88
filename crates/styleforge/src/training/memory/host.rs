//! What the operating system says about this process's memory and the machine's.

use std::path::{Path, PathBuf};

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_kb("VmHWM:").map(|kb| kb * 1024)
}

/// Resident memory of this process now (Linux `VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_kb("VmRSS:").map(|kb| kb * 1024)
}

fn status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Environment variable that replaces the measured available memory (bytes).
pub const MEMORY_LIMIT_ENV: &str = "STYLEFORGE_MEMORY_LIMIT";

/// Memory available to this process, in bytes: `STYLEFORGE_MEMORY_LIMIT` when set, else
/// (Linux) the smaller of `/proc/meminfo`'s `MemAvailable` and the cgroup limit (v2
/// `memory.max`, v1 `memory.limit_in_bytes`). `None` where it cannot be told.
pub fn available_memory() -> Option<u64> {
    if let Ok(v) = std::env::var(MEMORY_LIMIT_ENV) {
        if let Ok(n) = v.trim().parse::<u64>() {
            return Some(n);
        }
        tracing::warn!("{MEMORY_LIMIT_ENV}={v:?} is not a number of bytes; ignored");
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    });
    match (available, cgroup_limit()) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// The memory limit of this process's cgroup, if one is set.
fn cgroup_limit() -> Option<u64> {
    let parse = |path: PathBuf| -> Option<u64> {
        let text = std::fs::read_to_string(path).ok()?;
        let v: u64 = text.trim().parse().ok()?; // "max" (no limit) does not parse
                                                // cgroup v1 writes a huge number for "no limit".
        (v < (1 << 60)).then_some(v)
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            if let Some(v) = parse(Path::new("/sys/fs/cgroup").join(rel).join("memory.max")) {
                return Some(v);
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            let root = Path::new("/sys/fs/cgroup/memory");
            if let Some(v) = parse(root.join(rel).join("memory.limit_in_bytes")) {
                return Some(v);
            }
        }
    }
    parse(PathBuf::from("/sys/fs/cgroup/memory.max"))
        .or_else(|| parse(PathBuf::from("/sys/fs/cgroup/memory/memory.limit_in_bytes")))
}
