//! A folder of training images with optional per-image captions.
//!
//! Images are the files with an image extension ([`crate::image_io::IMAGE_EXTENSIONS`],
//! any case) directly in the folder, in file-name order; hidden files (`.name`, e.g. macOS
//! `._x.png` forks), masks (`*.mask.png`) and subfolders are skipped. A caption for `cat.png`
//! is read from `cat.txt` beside it, or `cat<ext>` with [`ScanOptions::caption_extension`]
//! (trimmed; an empty file counts as no caption). With [`ScanOptions::masks`], every image
//! needs a loss mask `cat.mask.png` of its size (white = train, black = ignore). With
//! [`ScanOptions::buckets`], each image is assigned the aspect-ratio bucket it is trained at.
//! Scanning decodes every image once, so an unreadable file, one smaller than what it is
//! trained at, or a missing mask is reported up front, by name.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::{GrayImage, RgbImage};
use styleforge_models::files;

use super::buckets::Buckets;
use super::data_error;
use super::hash::fnv128;
use super::mask::to_grey;
use super::preprocess::Preprocess;
use crate::error::{Error, Result};
use crate::image_io::{decode_rgb, image_to_tensor, is_image_file, IMAGE_EXTENSIONS};

/// One image of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// The image file.
    pub path: PathBuf,
    /// The caption from `<stem>.txt` (or the configured extension), trimmed, when present
    /// and not empty.
    pub caption: Option<String>,
    /// Width after the EXIF orientation is applied.
    pub width: u32,
    /// Height after the EXIF orientation is applied.
    pub height: u32,
    /// FNV-1a-128 of the file's bytes (keys the latent cache).
    pub content_hash: u128,
    /// The loss mask, when masks were asked for.
    pub mask: Option<MaskFile>,
    /// The size `(width, height)` the image is trained at, when bucketing assigned one
    /// (else the training square).
    pub bucket: Option<(u32, u32)>,
}

/// The loss mask of an image: `<stem>.mask.png` beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskFile {
    /// The mask file.
    pub path: PathBuf,
    /// FNV-1a-128 of its bytes (keys the latent cache).
    pub content_hash: u128,
}

/// What [`ImageFolder::scan_with`] reads beside each image and how it sizes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanOptions {
    /// Extension of the caption files, with its dot (default `".txt"`).
    pub caption_extension: String,
    /// Require a loss mask `<stem>.mask.png` beside every image.
    pub masks: bool,
    /// Assign every image to the bucket closest to its aspect ratio.
    pub buckets: Option<Buckets>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            caption_extension: ".txt".to_string(),
            masks: false,
            buckets: None,
        }
    }
}

/// Whether `path` is a loss mask (`*.mask.png`, any case), never a training image.
pub fn is_mask_file(path: &Path) -> bool {
    path.file_name()
        .map(|n| {
            n.to_string_lossy()
                .to_ascii_lowercase()
                .ends_with(".mask.png")
        })
        .unwrap_or(false)
}

/// The mask file of `image`: `<stem>.mask.png` beside it.
pub fn mask_path(image: &Path) -> PathBuf {
    image.with_extension("mask.png")
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
    /// Captions come from `<stem>.txt`; no masks, no buckets.
    pub fn scan(root: &Path, prep: &Preprocess, min_images: usize) -> Result<Self> {
        Self::scan_with(root, prep, min_images, &ScanOptions::default())
    }

    /// [`Self::scan`] with captions from `opts.caption_extension`, a mask required beside
    /// every image with `opts.masks` (same size as the image, not all black), and with
    /// `opts.buckets` each image assigned its bucket, which it must cover without upscaling
    /// (unless `prep.allow_upscale`).
    pub fn scan_with(
        root: &Path,
        prep: &Preprocess,
        min_images: usize,
        opts: &ScanOptions,
    ) -> Result<Self> {
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
            if hidden || !is_image_file(&path) || is_mask_file(&path) || path.is_dir() {
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
            let bucket = opts.buckets.as_ref().map(|b| b.assign(width, height));
            match bucket {
                Some(target) => prep.check_target(&path, width, height, target)?,
                None => prep.check_size(&path, width, height)?,
            }
            let caption = read_caption(&path, &opts.caption_extension)?;
            let mask = if opts.masks {
                Some(check_mask(&path, width, height)?)
            } else {
                None
            };
            entries.push(ImageEntry {
                content_hash: fnv128(&bytes),
                path,
                caption,
                width,
                height,
                mask,
                bucket,
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

    /// The folder with only the images for which `keep` is true (file order kept).
    pub fn filtered(&self, keep: impl Fn(&ImageEntry) -> bool) -> Self {
        Self {
            root: self.root.clone(),
            entries: self.entries.iter().filter(|e| keep(e)).cloned().collect(),
        }
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

    /// The size `(width, height)` image `index` is trained at: its bucket, or the training
    /// square of `prep`.
    pub fn target(&self, index: usize, prep: &Preprocess) -> Result<(u32, u32)> {
        let r = prep.resolution;
        Ok(self.entry(index)?.bucket.unwrap_or((r, r)))
    }

    /// Image `index` as its training square, or its bucket (see [`Preprocess::apply_to`]).
    pub fn preprocessed(&self, index: usize, prep: &Preprocess, flip: bool) -> Result<RgbImage> {
        let img = self.load_rgb(index)?;
        let (w, h) = img.dimensions();
        let target = self.target(index, prep)?;
        prep.check_target(&self.entries[index].path, w, h, target)?;
        Ok(prep.apply_to(&img, index, flip, target))
    }

    /// The mask of image `index` in grey (`None` when the folder was scanned without
    /// masks); an error if the file changed since the scan.
    pub fn load_mask(&self, index: usize) -> Result<Option<GrayImage>> {
        let Some(mask) = &self.entry(index)?.mask else {
            return Ok(None);
        };
        let bytes = read(&mask.path)?;
        if fnv128(&bytes) != mask.content_hash {
            return Err(data_error(
                &mask.path,
                "the mask changed on disk while training data was being prepared",
            ));
        }
        Ok(Some(to_grey(&decode_rgb(&mask.path, &bytes)?)))
    }

    /// The mask of image `index` resized, cropped and mirrored exactly as the image is by
    /// [`Self::preprocessed`] (`None` without masks).
    pub fn preprocessed_mask(
        &self,
        index: usize,
        prep: &Preprocess,
        flip: bool,
    ) -> Result<Option<GrayImage>> {
        let target = self.target(index, prep)?;
        Ok(self
            .load_mask(index)?
            .map(|m| prep.apply_to(&m, index, flip, target)))
    }

    /// Image `index` as a `[3, height, width]` f32 tensor in [-1, 1] (the training square,
    /// or its bucket).
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

/// The trimmed content of `<stem><extension>` beside `image`, if that file exists and is
/// not blank.
fn read_caption(image: &Path, extension: &str) -> Result<Option<String>> {
    let path = caption_path(image, extension);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = read(&path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| data_error(&path, "the caption file is not valid UTF-8 text"))?;
    let text = text.trim_start_matches('\u{feff}').trim();
    Ok((!text.is_empty()).then(|| text.to_string()))
}

/// The caption file of `image`: `<stem><extension>` beside it (`extension` with its dot).
pub fn caption_path(image: &Path, extension: &str) -> PathBuf {
    image.with_extension(extension.trim_start_matches('.'))
}

/// Checks the mask of `image` (`width`×`height`): present, decodable, of the image's size
/// and not entirely black.
fn check_mask(image: &Path, width: u32, height: u32) -> Result<MaskFile> {
    let path = mask_path(image);
    if !path.is_file() {
        return Err(data_error(
            image,
            format!(
                "masked loss is on but the image has no mask {} (a picture of its size: white \
                 = train, black = ignore); add one or turn data.masked_loss off",
                path.display()
            ),
        ));
    }
    let bytes = read(&path)?;
    let grey = to_grey(&decode_rgb(&path, &bytes)?);
    if grey.dimensions() != (width, height) {
        let (mw, mh) = grey.dimensions();
        return Err(data_error(
            &path,
            format!(
                "the mask is {mw}x{mh} but its image is {width}x{height}; make it the image's size"
            ),
        ));
    }
    if grey.as_raw().iter().all(|&v| v == 0) {
        return Err(data_error(
            &path,
            "the mask is entirely black, so nothing of its image would be trained; paint what \
             to train white, or remove the image",
        ));
    }
    Ok(MaskFile {
        content_hash: fnv128(&bytes),
        path,
    })
}
