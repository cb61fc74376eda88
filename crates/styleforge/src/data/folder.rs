//! A folder of training images with optional per-image captions.
//!
//! Images are the files with an image extension ([`crate::image_io::IMAGE_EXTENSIONS`],
//! any case) directly in the folder, in file-name order; hidden files (`.name`, e.g. macOS
//! `._x.png` forks) and subfolders are skipped. A caption for `cat.png` is read from `cat.txt` beside it
//! (trimmed; an empty file counts as no caption). Scanning decodes every image once, so an
//! unreadable file or one smaller than the training resolution is reported up front, by name.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use styleforge_models::files;

use super::data_error;
use super::hash::fnv128;
use super::preprocess::Preprocess;
use crate::error::{Error, Result};
use crate::image_io::{decode_rgb, image_to_tensor, is_image_file, IMAGE_EXTENSIONS};

/// One image of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// The image file.
    pub path: PathBuf,
    /// The caption from `<stem>.txt`, trimmed, when present and not empty.
    pub caption: Option<String>,
    /// Width after the EXIF orientation is applied.
    pub width: u32,
    /// Height after the EXIF orientation is applied.
    pub height: u32,
    /// FNV-1a-128 of the file's bytes (keys the latent cache).
    pub content_hash: u128,
}

impl ImageEntry {
    /// The training prompt: `default_prompt` for an uncaptioned image; for a captioned one,
    /// the caption followed by `", " + token_phrase` (e.g. `"a woman reading, zwx style"`),
    /// unless the caption already contains `token_phrase`.
    pub fn prompt(&self, default_prompt: &str, token_phrase: &str) -> String {
        match &self.caption {
            None => default_prompt.to_string(),
            Some(c) if token_phrase.is_empty() || c.contains(token_phrase) => c.clone(),
            Some(c) => format!("{c}, {token_phrase}"),
        }
    }
}

/// The usable images of a folder, in file-name order.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    entries: Vec<ImageEntry>,
}

impl ImageFolder {
    /// Lists and checks the images of `root`: each must decode and (unless
    /// `prep.allow_upscale`) have a short side of at least `prep.resolution`; there must be
    /// at least `min_images` of them. Every error names the file or folder at fault.
    pub fn scan(root: &Path, prep: &Preprocess, min_images: usize) -> Result<Self> {
        let listing = std::fs::read_dir(root)
            .map_err(|e| data_error(root, format!("cannot read the image folder ({e})")))?;
        let mut paths = Vec::new();
        for item in listing {
            let item = item.map_err(|source| Error::Io {
                path: root.to_path_buf(),
                source,
            })?;
            let path = item.path();
            let hidden = item.file_name().to_string_lossy().starts_with('.');
            if hidden || !is_image_file(&path) || path.is_dir() {
                continue;
            }
            paths.push(path);
        }
        paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));

        let mut entries = Vec::with_capacity(paths.len());
        for path in paths {
            let bytes = read(&path)?;
            let img = decode_rgb(&path, &bytes)?;
            let (width, height) = img.dimensions();
            prep.check_size(&path, width, height)?;
            let caption = read_caption(&path)?;
            entries.push(ImageEntry {
                content_hash: fnv128(&bytes),
                path,
                caption,
                width,
                height,
            });
        }
        if entries.len() < min_images {
            let found = match entries.len() {
                0 => "no images".to_string(),
                1 => "only 1 image".to_string(),
                n => format!("only {n} images"),
            };
            return Err(data_error(
                root,
                format!(
                    "found {found} ({}), at least {min_images} needed",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        tracing::debug!(folder = %root.display(), images = entries.len(), "scanned image folder");
        Ok(Self {
            root: root.to_path_buf(),
            entries,
        })
    }

    /// The folder scanned.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The images, in file-name order.
    pub fn entries(&self) -> &[ImageEntry] {
        &self.entries
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the folder has no images (only possible with `min_images` 0).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Image `index`, decoded again as RGB; an error if the file changed since the scan.
    pub fn load_rgb(&self, index: usize) -> Result<RgbImage> {
        let entry = self.entry(index)?;
        let bytes = read(&entry.path)?;
        if fnv128(&bytes) != entry.content_hash {
            return Err(data_error(
                &entry.path,
                "the image changed on disk while training data was being prepared",
            ));
        }
        decode_rgb(&entry.path, &bytes)
    }

    /// Image `index` as its training square (see [`Preprocess::apply`]).
    pub fn preprocessed(&self, index: usize, prep: &Preprocess, flip: bool) -> Result<RgbImage> {
        let img = self.load_rgb(index)?;
        let (w, h) = img.dimensions();
        prep.check_size(&self.entries[index].path, w, h)?;
        Ok(prep.apply(&img, index, flip))
    }

    /// Image `index` as a `[3, resolution, resolution]` f32 tensor in [-1, 1].
    pub fn tensor(
        &self,
        index: usize,
        prep: &Preprocess,
        flip: bool,
        device: &Device,
    ) -> Result<Tensor> {
        image_to_tensor(&self.preprocessed(index, prep, flip)?, device)
    }

    fn entry(&self, index: usize) -> Result<&ImageEntry> {
        self.entries.get(index).ok_or_else(|| {
            data_error(
                &self.root,
                format!("image index {index} out of range ({} images)", self.len()),
            )
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    Ok(files::read(path)?)
}

/// The trimmed content of `<stem>.txt` beside `image`, if that file exists and is not blank.
fn read_caption(image: &Path) -> Result<Option<String>> {
    let path = image.with_extension("txt");
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = read(&path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| data_error(&path, "the caption file is not valid UTF-8 text"))?;
    let text = text.trim_start_matches('\u{feff}').trim();
    Ok((!text.is_empty()).then(|| text.to_string()))
}
