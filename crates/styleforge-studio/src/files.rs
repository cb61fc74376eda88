//! Which files the studio serves: those under the runs folder, and the images of the
//! input folders the user chose on the New style page. Every path is canonicalized (links
//! and `..` resolved) before it is compared, so nothing outside can be reached.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Result, StudioError};

/// The folders the studio may read from.
#[derive(Debug)]
pub struct Roots {
    runs: PathBuf,
    inputs: Mutex<BTreeSet<PathBuf>>,
}

impl Roots {
    /// The runs folder `runs` (canonicalized), with no input folder yet.
    pub fn new(runs: &Path) -> Result<Self> {
        let runs = runs.canonicalize().map_err(StudioError::io(runs))?;
        Ok(Self {
            runs,
            inputs: Mutex::new(BTreeSet::new()),
        })
    }

    /// The runs folder, canonical.
    pub fn runs(&self) -> &Path {
        &self.runs
    }

    /// Lets the files directly in `dir` (a canonical folder the user chose) be served.
    pub fn allow_input(&self, dir: PathBuf) {
        self.inputs.lock().expect("not poisoned").insert(dir);
    }

    /// Whether `dir` is a chosen input folder.
    pub fn is_input(&self, dir: &Path) -> bool {
        self.inputs.lock().expect("not poisoned").contains(dir)
    }

    /// `rel` (a URL path below the runs folder) as a file path that is inside it.
    pub fn in_runs(&self, rel: &str) -> Result<PathBuf> {
        let rel_path = Path::new(rel);
        // Refused before touching the disk; the canonical check below is the real guard.
        if rel_path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(StudioError::Outside(rel_path.to_path_buf()));
        }
        let path = self.runs.join(rel_path);
        let canonical = path
            .canonicalize()
            .map_err(|_| StudioError::NotFound(format!("no file {rel}")))?;
        if !canonical.starts_with(&self.runs) {
            return Err(StudioError::Outside(path));
        }
        Ok(canonical)
    }

    /// `path` (absolute), when it is an image directly in a chosen input folder.
    pub fn input_image(&self, path: &Path) -> Result<PathBuf> {
        let canonical = path
            .canonicalize()
            .map_err(|_| StudioError::NotFound(format!("no file {}", path.display())))?;
        let inside = canonical.parent().is_some_and(|d| self.is_input(d));
        if !inside || !styleforge::image_io::is_image_file(&canonical) {
            return Err(StudioError::Outside(path.to_path_buf()));
        }
        Ok(canonical)
    }
}

/// The `Content-Type` of a served file, from its extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "json" | "jsonl" => "application/json",
        "html" => "text/html; charset=utf-8",
        "svg" => "image/svg+xml",
        "toml" | "txt" | "log" | "md" | "csv" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_links_out_of_the_runs_folder_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = tmp.path().join("runs");
        std::fs::create_dir_all(runs.join("a")).unwrap();
        std::fs::write(runs.join("a/loss.png"), b"x").unwrap();
        std::fs::write(tmp.path().join("secret.txt"), b"s").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(tmp.path().join("secret.txt"), runs.join("a/link")).unwrap();
        let roots = Roots::new(&runs).unwrap();
        assert!(roots.in_runs("a/loss.png").is_ok());
        for bad in ["../secret.txt", "a/../../secret.txt", "/etc/passwd"] {
            assert!(
                matches!(roots.in_runs(bad), Err(StudioError::Outside(_))),
                "{bad}"
            );
        }
        #[cfg(unix)]
        assert!(matches!(
            roots.in_runs("a/link"),
            Err(StudioError::Outside(_))
        ));
    }

    #[test]
    fn input_images_only_from_chosen_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let style = tmp.path().join("style");
        std::fs::create_dir_all(&style).unwrap();
        std::fs::write(style.join("a.png"), b"x").unwrap();
        std::fs::write(style.join("a.txt"), b"x").unwrap();
        let roots = Roots::new(tmp.path()).unwrap();
        assert!(roots.input_image(&style.join("a.png")).is_err());
        roots.allow_input(style.canonicalize().unwrap());
        assert!(roots.input_image(&style.join("a.png")).is_ok());
        assert!(roots.input_image(&style.join("a.txt")).is_err());
        assert!(roots.input_image(&style.join("../style/a.png")).is_ok());
    }
}
