//! The one file layer: atomic writes of files and folders, copies, and I/O errors that
//! name their path.
//!
//! Every output the project writes (weights, checkpoints, reports, images, logs rewritten
//! on resume) goes through [`write_with`] or [`write_dir_with`]: the content is built under a
//! uniquely named temporary beside its destination (`.name.XXXXXX.tmp`, so two threads or
//! processes never share one) and renamed over it once complete, so a crash leaves either
//! the old file or the new one, never half of one. Temporaries are created with the mode a
//! plain `File::create` / `create_dir` would give (`0666` / `0777` less the umask), so the
//! renamed result keeps the user's normal permissions.

use std::io;
use std::path::{Path, PathBuf};

/// An I/O error and the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    /// The file or folder.
    pub path: PathBuf,
    /// What went wrong.
    #[source]
    pub source: io::Error,
}

impl FileError {
    /// An error on `path`.
    pub fn new(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self {
            path: path.into(),
            source,
        }
    }
}

/// A closure that wraps an [`io::Error`] with `path`, for `map_err`.
pub fn at(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::new(path, source)
}

#[cfg(unix)]
fn permissions(mode: u32) -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(mode)
}

fn builder_for(path: &Path, mode: u32) -> (tempfile::Builder<'static, 'static>, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_string());
    let mut b = tempfile::Builder::new();
    b.suffix(".tmp");
    #[cfg(unix)]
    b.permissions(permissions(mode));
    #[cfg(not(unix))]
    let _ = mode;
    (b, format!(".{name}."))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates `dir` and its parents.
pub fn create_dir_all(dir: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(dir).map_err(at(dir))
}

/// Writes `path` atomically: `fill` writes the whole content to the temporary path it is
/// given (by path, so that writers which open files themselves can be used), which is then
/// flushed to disk and renamed over `path`. On any error the temporary is removed and `path`
/// is left as it was. Parent folders are created.
pub fn write_with<E: From<FileError>>(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let dir = parent_of(path);
    create_dir_all(dir)?;
    let (mut builder, prefix) = builder_for(path, 0o666);
    builder.prefix(&prefix);
    let tmp = builder
        .tempfile_in(dir)
        .map_err(|e| FileError::new(dir, e))?
        .into_temp_path();
    let normal = std::fs::metadata(&tmp).map_err(at(&tmp))?.permissions();
    fill(&tmp)?;
    // Writers that themselves write aside and rename (safetensors' `serialize_to_file`,
    // behind candle's `safetensors::save`) replace the temporary with a private 0600 file:
    // give it back the normal mode.
    std::fs::set_permissions(&tmp, normal).map_err(at(&tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(at(path))?;
    tmp.persist(path)
        .map_err(|e| FileError::new(path, e.error))?;
    Ok(())
}

/// Writes `bytes` to `path` atomically ([`write_with`]).
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), FileError> {
    write_with(path, |tmp| {
        std::fs::write(tmp, bytes.as_ref()).map_err(at(tmp))
    })
}

/// Builds the folder `dir` atomically: `fill` populates a fresh temporary folder beside it,
/// which then replaces `dir` (an existing `dir` is removed just before the rename). On any
/// error the temporary folder is removed and `dir` is left as it was.
pub fn write_dir_with<E: From<FileError>>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let parent = parent_of(dir);
    create_dir_all(parent)?;
    let (mut builder, prefix) = builder_for(dir, 0o777);
    builder.prefix(&prefix);
    let tmp = builder
        .tempdir_in(parent)
        .map_err(|e| FileError::new(parent, e))?;
    fill(tmp.path())?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(at(dir))?;
    }
    std::fs::rename(tmp.path(), dir).map_err(at(dir))?;
    // Renamed away: nothing left for the guard to remove.
    let _ = tmp.keep();
    Ok(())
}

/// Copies the file `src` to `dst`, creating `dst`'s parent folders.
pub fn copy_file(src: &Path, dst: &Path) -> Result<(), FileError> {
    create_dir_all(parent_of(dst))?;
    std::fs::copy(src, dst).map_err(at(src))?;
    Ok(())
}

/// Copies the folder `src` into `dst` recursively (files and folders; links are followed).
pub fn copy_dir(src: &Path, dst: &Path) -> Result<(), FileError> {
    create_dir_all(dst)?;
    for entry in std::fs::read_dir(src).map_err(at(src))? {
        let path = entry.map_err(at(src))?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        if path.is_dir() {
            copy_dir(&path, &dst.join(name))?;
        } else {
            copy_file(&path, &dst.join(name))?;
        }
    }
    Ok(())
}

/// Reads a whole file, naming it on error.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(at(path))
}

/// Reads a whole UTF-8 file, naming it on error.
pub fn read_to_string(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(at(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.txt");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(entries(&dir.path().join("a")), ["b.txt"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        write(&path, b"old").unwrap();
        let r: Result<(), FileError> = write_with(&path, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(FileError::new(tmp, io::Error::other("disk full")))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["w.bin"]);
    }

    #[test]
    fn folders_are_built_aside_and_a_failure_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model");
        write_dir_with(&out, |tmp| write(&tmp.join("x"), b"1")).unwrap();
        write_dir_with(&out, |tmp| write(&tmp.join("y"), b"2")).unwrap();
        assert_eq!(entries(&out), ["y"]);
        let r = write_dir_with(&out, |tmp| {
            write(&tmp.join("z"), b"3")?;
            Err(FileError::new(tmp, io::Error::other("injected")))
        });
        assert!(r.is_err());
        assert_eq!(entries(&out), ["y"]);
        assert_eq!(entries(dir.path()), ["model"]);
    }

    #[cfg(unix)]
    #[test]
    fn outputs_get_the_normal_mode_not_the_temporary_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"x").unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&plain));
        let sub = dir.path().join("d");
        write_dir_with(&sub, |_| Ok::<_, FileError>(())).unwrap();
        let plain_dir = dir.path().join("plain_dir");
        std::fs::create_dir(&plain_dir).unwrap();
        assert_eq!(mode(&sub), mode(&plain_dir));
    }

    #[cfg(unix)]
    #[test]
    fn a_writer_that_replaces_the_temporary_still_gives_the_normal_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let t = candle_core::Tensor::new(&[1f32, 2.0], &candle_core::Device::Cpu).unwrap();
        write_with(&path, |tmp| {
            candle_core::safetensors::save(&std::collections::HashMap::from([("t", t)]), tmp)
                .map_err(|e| FileError::new(tmp, io::Error::other(e)))
        })
        .unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&plain));
        // A private temporary file (what the writer above makes) really is 0600, so the
        // check above is not vacuous unless the umask itself is 077.
        let private = tempfile::NamedTempFile::new_in(dir.path()).unwrap();
        assert_eq!(mode(private.path()), 0o600);
    }

    #[test]
    fn copies_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        write(&src.join("a/b"), b"1").unwrap();
        write(&src.join("c"), b"2").unwrap();
        let dst = dir.path().join("dst");
        copy_dir(&src, &dst).unwrap();
        assert_eq!(std::fs::read(dst.join("a/b")).unwrap(), b"1");
        assert_eq!(std::fs::read(dst.join("c")).unwrap(), b"2");
        let err = copy_dir(&dir.path().join("missing"), &dst).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
