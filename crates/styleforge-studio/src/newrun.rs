//! The New style page: the style folder checked image by image with the trainer's own
//! decoder and size rule, captions edited beside the images, the memory estimate, and the
//! run config written as the same TOML a command-line user writes for `styleforge train`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use styleforge::data::folder::{caption_path, is_mask_file};
use styleforge::data::Preprocess;
use styleforge::image_io::{decode_rgb, is_image_file};
use styleforge::optim::OptimizerKind;
use styleforge::training::config::{
    ConceptConfig, DataSection, Method, ModelSection, OptimSection, OutputSection, TrainingSection,
};
use styleforge::training::memory::{available_memory, estimate, gb};
use styleforge::training::memory::{MemorySettings, ModelConfigs};
use styleforge::training::{ResolvedConfig, TrainConfig};

use crate::error::{Result, StudioError};

/// What the New style form sends.
#[derive(Debug, Clone, Deserialize)]
pub struct NewRunForm {
    /// The run's folder name in the runs folder.
    pub name: String,
    /// A diffusers folder, a single-file checkpoint or a Hub name `owner/name`.
    pub base: String,
    /// The method.
    pub method: Method,
    /// The style images (people, for Multi-StyleForge).
    pub style_dir: String,
    /// The second concept's images (backgrounds, Multi-StyleForge).
    #[serde(default)]
    pub style_dir2: Option<String>,
    /// The unique token (default: the method's).
    #[serde(default)]
    pub token: Option<String>,
    /// Optimizer steps.
    pub steps: usize,
    /// Learning rate (default: the method's).
    #[serde(default)]
    pub lr: Option<f64>,
    /// Image pairs per forward pass (default 1).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Training resolution in pixels.
    pub resolution: u32,
    /// Seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Steps between validation grids.
    #[serde(default)]
    pub validate_every: Option<usize>,
    /// Steps between checkpoints (a stopped run resumes from the newest).
    #[serde(default)]
    pub checkpoint_every: Option<usize>,
    /// Aux images generated from the base model.
    #[serde(default)]
    pub num_aux_images: Option<usize>,
    /// Denoising steps of the Aux images and validation grids.
    #[serde(default)]
    pub sampling_steps: Option<usize>,
    /// Gradient checkpointing.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// 8-bit AdamW.
    #[serde(default)]
    pub adamw8bit: bool,
}

/// Whether `name` may name a run folder: letters, digits, `-`, `_`, `.`, not starting
/// with a dot, and not the gallery's folder.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name != crate::gallery::GALLERY
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StudioError::BadRequest(format!(
            "`{name}` cannot name a run: use letters, digits, '-', '_' or '.'"
        )))
    }
}

fn path_of(text: &str) -> PathBuf {
    PathBuf::from(text.trim())
}

impl NewRunForm {
    /// The config a command-line user would write for this run, its output in `runs`.
    pub fn train_config(&self, runs: &Path) -> Result<TrainConfig> {
        check_name(&self.name)?;
        let mut concepts = vec![ConceptConfig {
            style_dir: path_of(&self.style_dir),
            aux_dir: None,
            token: self.token.clone().filter(|t| !t.trim().is_empty()),
        }];
        if self.method == Method::MultiStyleforge {
            let second = self.style_dir2.as_deref().unwrap_or("").trim();
            if second.is_empty() {
                return Err(StudioError::BadRequest(
                    "Multi-StyleForge needs a second folder (backgrounds)".into(),
                ));
            }
            concepts.push(ConceptConfig {
                style_dir: path_of(second),
                aux_dir: None,
                token: None,
            });
        }
        let sampling = self.sampling_steps;
        Ok(TrainConfig {
            method: self.method,
            seed: self.seed,
            device: None,
            model: ModelSection {
                base: path_of(&self.base),
                variant: None,
                config: None,
            },
            data: DataSection {
                concepts,
                resolution: Some(self.resolution),
                ..Default::default()
            },
            training: TrainingSection {
                num_aux_images: self.num_aux_images,
                aux_steps: sampling,
                gradient_checkpointing: self.gradient_checkpointing.then_some(true),
                ..Default::default()
            },
            optim: OptimSection {
                steps: Some(self.steps),
                lr: self.lr,
                batch_size: self.batch_size,
                optimizer: self.adamw8bit.then_some(OptimizerKind::AdamW8bit),
                ..Default::default()
            },
            output: OutputSection {
                dir: Some(runs.join(&self.name)),
                checkpoint_every: self.checkpoint_every,
                validate_every: self.validate_every,
                validation_steps: sampling,
                ..Default::default()
            },
        })
    }

    /// The config, resolved and checked as `styleforge train` will.
    pub fn resolved(&self, runs: &Path) -> Result<(TrainConfig, ResolvedConfig)> {
        let cfg = self.train_config(runs)?;
        let resolved = cfg
            .resolve()
            .map_err(|e| StudioError::BadRequest(e.to_string()))?;
        Ok((cfg, resolved))
    }
}

/// The config as TOML.
pub fn to_toml(cfg: &TrainConfig) -> Result<String> {
    toml::to_string_pretty(cfg)
        .map_err(|e| StudioError::BadRequest(format!("cannot write the run config: {e}")))
}

/// The memory estimate shown on the form.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// The estimated peak, GB; `None` when the base is not a local diffusers folder.
    pub peak_gb: Option<f64>,
    /// The memory available here, GB.
    pub available_gb: Option<f64>,
    /// The estimate's parts, as `styleforge train` prints them.
    pub detail: String,
}

/// Estimates the peak memory of the run (on the CPU) with the library's estimate.
pub fn memory_estimate(cfg: &ResolvedConfig) -> Estimate {
    let available_gb = available_memory().map(gb);
    let models = match ModelConfigs::read(&cfg.base) {
        Ok(m) => m,
        Err(_) => {
            return Estimate {
                peak_gb: None,
                available_gb,
                detail: "estimated when the run starts: the base is not a local diffusers folder"
                    .into(),
            }
        }
    };
    let settings = MemorySettings::from_config(cfg, &styleforge::models::candle::Device::Cpu);
    match estimate(&models, &settings) {
        Ok(e) => Estimate {
            peak_gb: Some(gb(e.total)),
            available_gb,
            detail: e.to_string(),
        },
        Err(e) => Estimate {
            peak_gb: None,
            available_gb,
            detail: e.to_string(),
        },
    }
}

/// One image of a style folder.
#[derive(Debug, Clone, Serialize)]
pub struct InspectedImage {
    /// The file's name.
    pub file: String,
    /// Its absolute path (the caption endpoint takes it).
    pub path: PathBuf,
    /// Width × height after the EXIF orientation, when it decoded.
    pub size: Option<(u32, u32)>,
    /// The caption from `<stem>.txt`.
    pub caption: Option<String>,
    /// Why the trainer would refuse it.
    pub problem: Option<String>,
}

/// A style folder as the trainer would see it.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The folder, canonical.
    pub dir: PathBuf,
    /// Its images, in the trainer's order.
    pub images: Vec<InspectedImage>,
    /// Images the trainer would use.
    pub usable: usize,
    /// Problems of the folder as a whole (too few images).
    pub problems: Vec<String>,
}

/// Checks every image of `dir` as the trainer's folder scan does (the same listing, the
/// same decoder, the same size rule at `resolution`), reporting each problem instead of
/// stopping at the first; `min_images` as the trainer's `data.min_images`.
pub fn inspect(dir: &Path, resolution: u32, min_images: usize) -> Result<Inspection> {
    let dir = dir
        .canonicalize()
        .map_err(|e| StudioError::BadRequest(format!("{}: {e}", dir.display())))?;
    let listing = std::fs::read_dir(&dir).map_err(StudioError::io(&dir))?;
    let mut paths: Vec<PathBuf> = listing
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| is_image_file(p) && !is_mask_file(p) && !p.is_dir())
        .collect();
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let prep = Preprocess::new(resolution);
    let mut images = Vec::new();
    for path in paths {
        let decoded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| decode_rgb(&path, &bytes).map_err(|e| e.to_string()));
        let (size, problem) = match decoded {
            Ok(img) => {
                let (w, h) = img.dimensions();
                let problem = prep.check_size(&path, w, h).err().map(|e| e.to_string());
                (Some((w, h)), problem)
            }
            Err(e) => (None, Some(e)),
        };
        let caption = std::fs::read_to_string(caption_path(&path, ".txt"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        images.push(InspectedImage {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path,
            size,
            caption,
            problem,
        });
    }
    let usable = images.iter().filter(|i| i.problem.is_none()).count();
    let mut problems = Vec::new();
    if usable < min_images {
        problems.push(format!(
            "{usable} usable image(s): the trainer needs at least {min_images}"
        ));
    }
    Ok(Inspection {
        dir,
        images,
        usable,
        problems,
    })
}

/// Writes the caption of `image` to `<stem>.txt` beside it (an empty caption removes it).
pub fn write_caption(image: &Path, caption: &str) -> Result<()> {
    let path = caption_path(image, ".txt");
    let caption = caption.trim();
    if caption.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StudioError::io(&path)(e)),
            _ => Ok(()),
        };
    }
    styleforge::models::files::write(&path, format!("{caption}\n"))
        .map_err(|e| StudioError::BadRequest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_cannot_leave_the_runs_folder() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "gallery", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        check_name("cel-style_2.v1").unwrap();
    }

    #[test]
    fn inspection_flags_what_the_trainer_refuses() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        image::RgbImage::new(64, 64)
            .save(d.join("big.png"))
            .unwrap();
        image::RgbImage::new(16, 64)
            .save(d.join("small.png"))
            .unwrap();
        std::fs::write(d.join("broken.png"), b"not a png").unwrap();
        std::fs::write(d.join("big.txt"), "a house\n").unwrap();
        image::RgbImage::new(64, 64)
            .save(d.join("big.mask.png"))
            .unwrap();
        let r = inspect(d, 32, 2).unwrap();
        let files: Vec<&str> = r.images.iter().map(|i| i.file.as_str()).collect();
        assert_eq!(files, ["big.png", "broken.png", "small.png"]);
        assert_eq!(r.usable, 1);
        assert_eq!(r.images[0].caption.as_deref(), Some("a house"));
        assert!(r.images[1].problem.is_some());
        assert!(r.images[2].problem.as_deref().unwrap().contains("16x64"));
        assert_eq!(r.problems.len(), 1);
        write_caption(&d.join("small.png"), " a tree ").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("small.txt")).unwrap(),
            "a tree\n"
        );
        write_caption(&d.join("small.png"), "").unwrap();
        assert!(!d.join("small.txt").exists());
    }
}
