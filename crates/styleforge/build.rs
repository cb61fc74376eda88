//! Embeds the toy world's shipped files into the library, so `styleforge demo` and
//! `styleforge protocol --toy` run from the binary alone: generates `toy_assets.rs` listing
//! the toy base model (`assets/toy/base-model/`) and the probes (`assets/toy/probes.*`)
//! with `include_bytes!`.

use std::path::{Path, PathBuf};

fn files(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let rel_name = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if path.is_dir() {
            files(&path, &rel_name, out);
        } else {
            out.push((rel_name, path));
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    let toy = root.join("assets/toy");
    let mut list = Vec::new();
    let model = toy.join("base-model");
    println!("cargo:rerun-if-changed={}", model.display());
    files(&model, "base-model", &mut list);
    for name in ["probes.json", "probes.safetensors"] {
        let path = toy.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_file() {
            list.push((format!("probes/{name}"), path));
        }
    }
    list.retain(|(name, _)| !name.ends_with(".md"));
    let mut code = String::from(
        "/// Every embedded toy file: its path relative to the unpacked folder, and its bytes.\npub static TOY_FILES: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &list {
        let abs = path.canonicalize().unwrap();
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            abs.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("toy_assets.rs");
    std::fs::write(out, code).unwrap();
}
