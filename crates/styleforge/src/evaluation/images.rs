//! The image sets an evaluation compares: folders, explicit file lists or images already in
//! memory, listed in a stable order and loaded with errors that name the file.

use std::path::{Path, PathBuf};

use image::RgbImage;
use styleforge_models::files;

use crate::data::hash::fnv128;
use crate::error::{Error, Result};
use crate::image_io::{is_image_file, load_rgb, read_png_parameters, IMAGE_EXTENSIONS};
use crate::pipelines::GenerationParameters;

/// An image held in memory, with the name it is reported under.
#[derive(Debug, Clone)]
pub struct NamedImage {
    /// Name shown in the report and `metrics.json` (e.g. a file name).
    pub name: String,
    /// The pixels.
    pub image: RgbImage,
    /// The prompt it was generated from, if known (used for CLIP-T).
    pub prompt: Option<String>,
}

/// One set of images to evaluate.
#[derive(Debug, Clone)]
pub enum ImageSet {
    /// Every PNG, JPEG and WebP file directly inside the folder (not recursive), sorted by
    /// file name.
    Folder(PathBuf),
    /// These files, in this order.
    Files(Vec<PathBuf>),
    /// Images already decoded (e.g. just generated), in this order.
    Memory(Vec<NamedImage>),
}

impl ImageSet {
    /// A short description for reports and errors: the folder, or "N files" / "N images".
    pub fn describe(&self) -> String {
        match self {
            ImageSet::Folder(dir) => dir.display().to_string(),
            ImageSet::Files(files) => format!("{} files", files.len()),
            ImageSet::Memory(images) => format!("{} images in memory", images.len()),
        }
    }

    /// The set's images, in evaluation order. A folder is listed ([`list_images`]); files
    /// must exist.
    pub fn items(&self) -> Result<Vec<EvalImage>> {
        match self {
            ImageSet::Folder(dir) => {
                Ok(list_images(dir)?.into_iter().map(EvalImage::File).collect())
            }
            ImageSet::Files(files) => files
                .iter()
                .map(|p| {
                    if p.is_file() {
                        Ok(EvalImage::File(p.clone()))
                    } else {
                        Err(Error::Data {
                            path: p.clone(),
                            message: "no such image file".into(),
                        })
                    }
                })
                .collect(),
            ImageSet::Memory(images) => Ok(images.iter().cloned().map(EvalImage::Memory).collect()),
        }
    }
}

/// One image of a set: a file on disk or an image in memory.
#[derive(Debug, Clone)]
pub enum EvalImage {
    /// An image file.
    File(PathBuf),
    /// A decoded image.
    Memory(NamedImage),
}

impl EvalImage {
    /// The name it is reported under: the file name, or the in-memory image's name.
    pub fn name(&self) -> String {
        match self {
            EvalImage::File(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            EvalImage::Memory(m) => m.name.clone(),
        }
    }

    /// The file, if it is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            EvalImage::File(p) => Some(p),
            EvalImage::Memory(_) => None,
        }
    }

    /// The content hash the feature cache keys on: FNV-1a 128 of the file's bytes, or of
    /// the width, height and RGB bytes of an in-memory image (so a PNG file and the same
    /// pixels in memory have different keys, which only costs a recomputation).
    pub fn content_hash(&self) -> Result<u128> {
        match self {
            EvalImage::File(p) => Ok(fnv128(&files::read(p)?)),
            EvalImage::Memory(m) => {
                let mut h = crate::data::hash::Fnv128::default();
                h.write(b"rgb8");
                h.write(&m.image.width().to_le_bytes());
                h.write(&m.image.height().to_le_bytes());
                h.write(m.image.as_raw());
                Ok(h.finish())
            }
        }
    }

    /// Decodes the image as RGB ([`crate::image_io::decode`]). An unreadable or corrupt file
    /// is an error naming it.
    pub fn load(&self) -> Result<RgbImage> {
        match self {
            EvalImage::File(p) => load_rgb(p),
            EvalImage::Memory(m) => Ok(m.image.clone()),
        }
    }

    /// The prompt stored with the image: an in-memory image's `prompt`, or the first line
    /// of a PNG's `parameters` chunk (what `styleforge generate` and AUTOMATIC1111 write).
    /// `None` for other formats and PNGs without the chunk.
    pub fn embedded_prompt(&self) -> Result<Option<String>> {
        match self {
            EvalImage::Memory(m) => Ok(m.prompt.clone()),
            EvalImage::File(p) => {
                let is_png = p
                    .extension()
                    .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("png"));
                if !is_png {
                    return Ok(None);
                }
                Ok(read_png_parameters(p)?.and_then(|text| prompt_of_parameters(&text)))
            }
        }
    }
}

/// The prompt of an A1111 `parameters` text (the lines before `Negative prompt:` and the
/// settings line, as [`GenerationParameters::prompts_from_a1111_text`] parses them).
/// `None` when it is empty.
pub fn prompt_of_parameters(text: &str) -> Option<String> {
    let (prompt, _) = GenerationParameters::prompts_from_a1111_text(text);
    let prompt = prompt.trim();
    (!prompt.is_empty()).then(|| prompt.to_string())
}

/// The images directly inside `dir` ([`is_image_file`]), sorted by
/// file name. Hidden files are skipped. Errors when the folder cannot be read or holds no
/// image.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if is_image_file(&path) && !hidden && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::Data {
            path: dir.to_path_buf(),
            message: format!(
                "no images in this folder (looked for {})",
                IMAGE_EXTENSIONS.join(", ")
            ),
        });
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_sorted_images_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.png", "a.JPG", "c.webp", "notes.txt", ".hidden.png"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<String> = list_images(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.JPG", "b.png", "c.webp"]);
    }

    #[test]
    fn empty_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = list_images(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }

    #[test]
    fn prompt_is_the_first_parameters_line() {
        let text = "a cat, ohwx style\nNegative prompt: blurry\nSteps: 20, Seed: 1";
        assert_eq!(
            prompt_of_parameters(text).as_deref(),
            Some("a cat, ohwx style")
        );
        assert_eq!(
            prompt_of_parameters("Negative prompt: x\nSteps: 2, Seed: 1"),
            None
        );
        assert_eq!(prompt_of_parameters(""), None);
    }
}
