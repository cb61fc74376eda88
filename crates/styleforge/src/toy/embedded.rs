//! The toy files built into the library: the toy base model (`assets/toy/base-model/`) and
//! the probes (`assets/toy/probes.*`), unpacked on demand so that `styleforge demo` and
//! `styleforge protocol --toy` need nothing but the binary.

use std::path::{Path, PathBuf};

use styleforge_models::files;

use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/toy_assets.rs"));

/// Writes the embedded files whose path starts with `prefix` under `dir`, skipping files
/// already there with the same bytes; returns `dir/prefix`.
fn unpack(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut any = false;
    for (name, bytes) in TOY_FILES.iter().filter(|(n, _)| n.starts_with(prefix)) {
        any = true;
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|b| b == *bytes) {
            continue;
        }
        // Atomic, with a temporary of its own: protocol shards unpack into the same
        // folder at the same time.
        files::write(&path, bytes)?;
    }
    if !any {
        return Err(Error::msg(format!(
            "this build has no embedded `{prefix}` (assets/toy/{prefix} was missing when it \
             was compiled); pass the folder explicitly"
        )));
    }
    Ok(dir.join(prefix))
}

/// Unpacks the toy base model (a diffusers folder) into `dir/base-model` and returns it.
pub fn unpack_base_model(dir: &Path) -> Result<PathBuf> {
    unpack(dir, "base-model")
}

/// Unpacks the probes into `dir/probes` and returns that folder.
pub fn unpack_probes(dir: &Path) -> Result<PathBuf> {
    unpack(dir, "probes")
}
