//! Embeds the demo's data (the tiny base model and the style images) into the library, so
//! `styleforge demo` runs from the binary alone: generates `demo_assets.rs` listing every
//! file under `assets/demo/{style,aux}` and the demo base model with `include_bytes!`.

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
    let mut list = Vec::new();
    for sub in ["style", "aux"] {
        let dir = root.join("assets/demo").join(sub);
        println!("cargo:rerun-if-changed={}", dir.display());
        files(&dir, sub, &mut list);
    }
    let model = root.join("fixtures/tiny-sd1");
    println!("cargo:rerun-if-changed={}", model.display());
    let mut model_files = Vec::new();
    files(&model, "", &mut model_files);
    model_files.retain(|(name, _)| !name.starts_with("reference."));
    for (name, path) in model_files {
        list.push((format!("base-model/{name}"), path));
    }
    let mut code = String::from(
        "/// Every embedded demo file: its path relative to the demo folder, and its bytes.\npub static DEMO_FILES: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &list {
        let abs = path.canonicalize().unwrap();
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            abs.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("demo_assets.rs");
    std::fs::write(out, code).unwrap();
}
