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
    // The old folder is renamed aside before the new one takes its name: a crash in
    // between leaves no `dir` (and a temporary), never half of the old one.
    let old = if dir.exists() {
        Some(set_aside(dir)?)
    } else {
        None
    };
    std::fs::rename(tmp.path(), dir).map_err(at(dir))?;
    // Renamed away: nothing left for the guard to remove.
    let _ = tmp.keep();
    if let Some(old) = old {
        std::fs::remove_dir_all(&old).map_err(at(&old))?;
    }
    Ok(())
}

/// Renames the folder `dir` to a temporary beside it (`.name.remove.tmp`, see
/// [`is_temporary`]) and returns that path.
fn set_aside(dir: &Path) -> Result<PathBuf, FileError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_string());
    let aside = parent_of(dir).join(format!(".{name}.remove.tmp"));
    if aside.exists() {
        std::fs::remove_dir_all(&aside).map_err(at(&aside))?;
    }
    std::fs::rename(dir, &aside).map_err(at(dir))?;
    Ok(aside)
}

/// Removes the folder `dir` so that a crash midway leaves a temporary (which
/// [`remove_temporaries`] clears), not a partial `dir` that looks whole.
pub fn remove_dir(dir: &Path) -> Result<(), FileError> {
    let aside = set_aside(dir)?;
    std::fs::remove_dir_all(&aside).map_err(at(&aside))
}

/// Whether `name` is a temporary of an atomic write: ours (`.name.XXXXXX.tmp`, see
/// [`write_with`] and [`write_dir_with`]) or the one safetensors' own writer makes beside
/// its destination (tempfile's default `.tmpXXXXXX`). A process killed mid-write leaves
/// them behind; nothing else is named so.
pub fn is_temporary(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    if let Some(inner) = rest.strip_suffix(".tmp") {
        // `.name.XXXXXX.tmp`: a non-empty destination name, a dot, six random characters.
        return inner
            .rsplit_once('.')
            .is_some_and(|(dest, random)| !dest.is_empty() && is_random(random));
    }
    rest.strip_prefix("tmp").is_some_and(is_random)
}

/// tempfile's random part: six ASCII letters or digits.
fn is_random(s: &str) -> bool {
    s.len() == 6 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Removes the temporaries ([`is_temporary`]) in `dir` and, when `recursive`, in its
/// subfolders; returns what was removed. Only for a folder no live process writes into
/// (a run folder under its lock): a live write's temporary would be taken from under it.
/// A missing `dir` holds nothing.
pub fn remove_temporaries(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, FileError> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(FileError::new(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(at(dir))?;
        let path = entry.path();
        // Not followed: a link is the user's, whatever it points to.
        let kind = entry.file_type().map_err(at(&path))?;
        if is_temporary(&entry.file_name()) {
            if kind.is_dir() {
                std::fs::remove_dir_all(&path).map_err(at(&path))?;
            } else {
                std::fs::remove_file(&path).map_err(at(&path))?;
            }
            removed.push(path);
        } else if recursive && kind.is_dir() {
            removed.extend(remove_temporaries(&path, true)?);
        }
    }
    removed.sort();
    Ok(removed)
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

/// Appends `line` and a newline to `path` (created when missing), in one write.
pub fn append_line(path: &Path, line: &str) -> Result<(), FileError> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(at(path))?;
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(at(path))
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
    fn temporaries_are_told_from_outputs() {
        let tmp = |n: &str| is_temporary(std::ffi::OsStr::new(n));
        for name in [
            ".unet.safetensors.a1B2c3.tmp",
            ".step-0000012.Zz09aa.tmp",
            ".tmpQ1w2E3",
        ] {
            assert!(tmp(name), "{name}");
        }
        for name in [
            "unet.safetensors",
            ".hidden",
            "a.tmp",
            "..a1b2c3.tmp",
            ".x.a1b2c.tmp",
            ".x.a1b2c3d.tmp",
            ".tmp",
            ".tmpabc",
            ".tmp_a1b2c",
            "step-0000012",
        ] {
            assert!(!tmp(name), "{name}");
        }
    }

    #[test]
    fn what_a_killed_write_leaves_is_swept_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("keep.txt"), b"1").unwrap();
        write(&root.join("sub/keep.bin"), b"2").unwrap();
        // What write_with, write_dir_with and safetensors' writer leave when killed.
        std::fs::write(root.join(".keep.txt.AbC123.tmp"), b"half").unwrap();
        std::fs::create_dir_all(root.join("sub/.model.xYz789.tmp/unet")).unwrap();
        std::fs::write(root.join("sub/.model.xYz789.tmp/unet/w"), b"half").unwrap();
        std::fs::write(root.join("sub/.tmpK9l8M7"), b"half").unwrap();
        let shallow = remove_temporaries(root, false).unwrap();
        assert_eq!(shallow, [root.join(".keep.txt.AbC123.tmp")]);
        let deep = remove_temporaries(root, true).unwrap();
        assert_eq!(
            deep,
            [
                root.join("sub/.model.xYz789.tmp"),
                root.join("sub/.tmpK9l8M7")
            ]
        );
        assert_eq!(entries(root), ["keep.txt", "sub"]);
        assert_eq!(entries(&root.join("sub")), ["keep.bin"]);
        assert!(remove_temporaries(&root.join("absent"), true)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_folder_is_removed_whole_or_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("step-0000004");
        write(&out.join("a"), b"1").unwrap();
        write(&out.join("b"), b"2").unwrap();
        // A removal killed midway: the folder was renamed aside first, so what is left
        // is a temporary, not a `step-0000004` with some of its files.
        let aside = set_aside(&out).unwrap();
        std::fs::remove_file(aside.join("a")).unwrap();
        assert!(is_temporary(aside.file_name().unwrap()));
        assert_eq!(entries(dir.path()), [".step-0000004.remove.tmp"]);
        assert_eq!(remove_temporaries(dir.path(), false).unwrap(), [aside]);
        assert!(entries(dir.path()).is_empty());
        write(&out.join("c"), b"3").unwrap();
        remove_dir(&out).unwrap();
        assert!(entries(dir.path()).is_empty());
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
