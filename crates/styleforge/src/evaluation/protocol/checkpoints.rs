//! A full fine-tuning run's checkpoints as models: the folder the protocol's checkpoint
//! sweep samples from ([`checkpoint_model`]), the step a sweep named best
//! ([`best_checkpoint_step`]), and a checkpoint written out as a standalone diffusers
//! folder ([`export_checkpoint`]).
//!
//! A checkpoint's model is the model the run would have written had it ended there: with
//! an EMA written as the model (`training.ema_decay` with `output.save_ema`, its default),
//! the averaged weights of the checkpoint's `ema.safetensors`, cast to the trained weights'
//! dtypes as the final model is; otherwise the trained weights themselves.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use styleforge_models::files;
use styleforge_models::weights::save_safetensors_atomic;

use super::{base_folder, method_label, read_run_config, CheckpointPlateau};
use crate::error::{Error, Result};
use crate::training::checkpoint::{self as ckpt_files, EMA_FILE, TEXT_ENCODER_PREFIX, UNET_PREFIX};
use crate::training::ResolvedConfig;
use crate::RunDir;

/// A checkpoint as a diffusers folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointModel {
    /// The folder: `<checkpoint>/model/` (trained weights) or `<checkpoint>/model-ema/`
    /// (averaged weights), made once.
    pub dir: PathBuf,
    /// Whether its UNet (and trained text encoder) hold the EMA weights.
    pub ema: bool,
}

/// The steps of a run's complete checkpoints, oldest first.
pub fn run_checkpoint_steps(run: &Path) -> Vec<usize> {
    ckpt_files::list(&RunDir::new(run).checkpoints())
        .into_iter()
        .map(|(step, _)| step)
        .collect()
}

/// Refuses an adapter run: its checkpoints hold adapter weights, not a model.
fn full_fine_tuning(cfg: &ResolvedConfig, run: &Path, what: &str) -> Result<()> {
    if cfg.method.is_adapter() {
        return Err(Error::InvalidRequest(format!(
            "{}: {what} needs a full fine-tuning run (StyleForge, DreamBooth); {} \
             checkpoints hold adapter weights",
            run.display(),
            method_label(cfg.method)
        )));
    }
    Ok(())
}

/// A full fine-tuning run's checkpoint of `step` as a diffusers folder inside the
/// checkpoint (made once): links to the base model's parts and the checkpoint's UNet (and
/// text encoder) weights, or, when the run writes its EMA as the model and the checkpoint
/// holds one, the averaged weights written out (see the module documentation).
pub fn checkpoint_model(cfg: &ResolvedConfig, run: &Path, step: usize) -> Result<CheckpointModel> {
    full_fine_tuning(cfg, run, "scoring or exporting checkpoints")?;
    let checkpoints = RunDir::new(run).checkpoints();
    let ckpt = ckpt_files::checkpoint_dir(&checkpoints, step);
    if !ckpt.join("state.json").is_file() || !ckpt.join("unet.safetensors").is_file() {
        let kept = run_checkpoint_steps(run);
        return Err(Error::Data {
            path: ckpt,
            message: format!(
                "no complete checkpoint of step {step} (the run keeps {kept:?}; \
                 output.keep_checkpoints limits how many are kept)"
            ),
        });
    }
    let ema = cfg.save_ema && ckpt.join(EMA_FILE).is_file();
    // Two folder names: a folder made before the run's EMA was taken into account never
    // passes for the averaged model.
    let out = ckpt.join(if ema { "model-ema" } else { "model" });
    if out.join("model_index.json").is_file() {
        return Ok(CheckpointModel { dir: out, ema });
    }
    let abs = |p: &Path| {
        p.canonicalize().map_err(|e| Error::Data {
            path: p.to_path_buf(),
            message: e.to_string(),
        })
    };
    let base = abs(&base_folder(cfg, run)?)?;
    let ckpt = abs(&ckpt)?;
    let trained_te = ckpt.join("text_encoder.safetensors").is_file();
    files::write_dir_with(&out, |tmp| -> Result<()> {
        link(
            &base.join("model_index.json"),
            &tmp.join("model_index.json"),
        )?;
        for part in ["scheduler", "tokenizer", "vae"] {
            if base.join(part).is_dir() {
                link(&base.join(part), &tmp.join(part))?;
            }
        }
        let mut parts = vec![(
            "unet",
            "unet.safetensors",
            "diffusion_pytorch_model.safetensors",
            UNET_PREFIX,
        )];
        if trained_te {
            parts.push((
                "text_encoder",
                "text_encoder.safetensors",
                "model.safetensors",
                TEXT_ENCODER_PREFIX,
            ));
        } else {
            link(&base.join("text_encoder"), &tmp.join("text_encoder"))?;
        }
        for (part, raw, file, prefix) in parts {
            files::create_dir_all(&tmp.join(part))?;
            let config = format!("{part}/config.json");
            link(&base.join(&config), &tmp.join(&config))?;
            let weights = tmp.join(part).join(file);
            if ema {
                let averaged = ckpt_files::ema_weights(&ckpt, raw, prefix)?;
                save_safetensors_atomic(&averaged, &weights)?;
            } else {
                link(&ckpt.join(raw), &weights)?;
            }
        }
        Ok(())
    })?;
    Ok(CheckpointModel { dir: out, ema })
}

/// A symbolic link at `dst` to `src` (a copy where links are not available).
fn link(src: &Path, dst: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(src, dst).map_err(|e| Error::Data {
            path: dst.to_path_buf(),
            message: format!("cannot link to {}: {e}", src.display()),
        })
    }
    #[cfg(not(unix))]
    {
        if src.is_dir() {
            Ok(files::copy_dir(src, dst)?)
        } else {
            Ok(files::copy_file(src, dst)?)
        }
    }
}

/// A model [`export_checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedModel {
    /// The new folder.
    pub dir: PathBuf,
    /// The training step of its weights.
    pub step: usize,
    /// Whether they are the EMA weights.
    pub ema: bool,
    /// Whether it is the run's final model (`<run>/model/`) rather than a checkpoint.
    pub final_model: bool,
}

/// Writes a full fine-tuning run's model of training step `step` as a standalone diffusers
/// folder `out`: every file copied (no link into the run or the base), built in a
/// temporary folder beside `out` and renamed. The weights are [`checkpoint_model`]'s (the
/// EMA when the run ships it); the run's last step, which has no checkpoint, is its final
/// `model/`. `out` must not exist or be an empty folder, and may not lie inside the base
/// model; the run and the base are only read (the checkpoint's linked folder is made
/// inside the checkpoint once, as for the protocol).
pub fn export_checkpoint(run: &Path, step: usize, out: &Path) -> Result<ExportedModel> {
    let cfg = read_run_config(run)?;
    full_fine_tuning(&cfg, run, "exporting a checkpoint")?;
    check_new_folder(out)?;
    let base = base_folder(&cfg, run)?;
    let (abs_out, abs_base) = (absolute(out)?, absolute(&base)?);
    if abs_out.starts_with(&abs_base) {
        return Err(Error::InvalidRequest(format!(
            "{} lies inside the base model {}, which is never written to; choose a folder \
             outside it",
            out.display(),
            base.display()
        )));
    }
    let complete = ckpt_files::checkpoint_dir(&RunDir::new(run).checkpoints(), step)
        .join("state.json")
        .is_file();
    let final_dir = RunDir::new(run).model();
    let (src, ema, final_model) =
        if !complete && step == cfg.steps && final_dir.join("model_index.json").is_file() {
            (final_dir, cfg.save_ema, true)
        } else {
            let m = checkpoint_model(&cfg, run, step).map_err(|e| match e {
                Error::Data { path, message } if !complete => Error::Data {
                    path,
                    message: format!(
                        "{message}; the run's last step ({}) is its final model",
                        cfg.steps
                    ),
                },
                other => other,
            })?;
            (m.dir, m.ema, false)
        };
    if abs_out.starts_with(absolute(&src)?) {
        return Err(Error::InvalidRequest(format!(
            "{} lies inside the folder it would be copied from ({}); choose a folder outside it",
            out.display(),
            src.display()
        )));
    }
    files::write_dir_with(out, |tmp| files::copy_dir(&src, tmp))?;
    Ok(ExportedModel {
        dir: out.to_path_buf(),
        step,
        ema,
        final_model,
    })
}

/// Refuses `out` when it is a file or a folder with anything in it.
fn check_new_folder(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let empty = out.is_dir()
        && std::fs::read_dir(out)
            .map_err(|e| Error::Io {
                path: out.to_path_buf(),
                source: e,
            })?
            .next()
            .is_none();
    if empty {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{} already exists and is not an empty folder; nothing was written (export \
             into a new folder)",
            out.display()
        )))
    }
}

/// `p` made absolute with its existing part's links resolved (`p` itself need not exist).
fn absolute(p: &Path) -> Result<PathBuf> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::Io {
                path: p.to_path_buf(),
                source: e,
            })?
            .join(p)
    };
    let mut rest = Vec::new();
    let mut head = p.as_path();
    loop {
        if let Ok(real) = head.canonicalize() {
            return Ok(rest.iter().rev().fold(real, |acc, name| acc.join(name)));
        }
        match (head.parent(), head.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                head = parent;
            }
            _ => return Ok(p),
        }
    }
}

/// What [`best_checkpoint_step`] reads of `protocol.json`.
#[derive(Deserialize)]
struct SweepFile {
    #[serde(default)]
    checkpoint_sweeps: Vec<CheckpointPlateau>,
}

/// The step a checkpoint sweep (`styleforge protocol --checkpoints`) named for `run`: the
/// plateau recorded in its `protocol.json` (`sweep` is that file or the protocol's output
/// folder). With several styles swept for the run, `style` picks one.
pub fn best_checkpoint_step(sweep: &Path, run: &Path, style: Option<&str>) -> Result<usize> {
    let file = if sweep.is_dir() {
        sweep.join("protocol.json")
    } else {
        sweep.to_path_buf()
    };
    let text = files::read_to_string(&file)?;
    let parsed: SweepFile = serde_json::from_str(&text).map_err(|source| Error::Json {
        what: format!("the protocol result {}", file.display()),
        source,
    })?;
    let run_abs = absolute(run)?;
    let of_run: Vec<&CheckpointPlateau> = parsed
        .checkpoint_sweeps
        .iter()
        .filter(|p| {
            p.run
                .as_deref()
                .is_some_and(|r| absolute(r).is_ok_and(|r| r == run_abs))
        })
        .collect();
    if of_run.is_empty() {
        let swept: Vec<String> = parsed
            .checkpoint_sweeps
            .iter()
            .filter_map(|p| p.run.as_ref().map(|r| r.display().to_string()))
            .collect();
        return Err(Error::InvalidRequest(format!(
            "{} holds no checkpoint sweep of {} (runs swept: {}); run `styleforge protocol \
             --checkpoints --run {}` with --csd first, or give the step",
            file.display(),
            run.display(),
            if swept.is_empty() {
                "none".to_string()
            } else {
                swept.join(", ")
            },
            run.display()
        )));
    }
    let chosen: Vec<&&CheckpointPlateau> = of_run
        .iter()
        .filter(|p| style.is_none_or(|s| p.style == s))
        .collect();
    let styles = || {
        of_run
            .iter()
            .map(|p| p.style.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let p = match (chosen.as_slice(), style) {
        ([one], _) => one,
        ([], Some(s)) => {
            return Err(Error::InvalidRequest(format!(
                "the sweep of {} has no style `{s}` (it has {})",
                run.display(),
                styles()
            )))
        }
        _ => {
            return Err(Error::InvalidRequest(format!(
                "the sweep of {} scored several styles ({}); name one",
                run.display(),
                styles()
            )))
        }
    };
    p.plateau.ok_or_else(|| {
        Error::InvalidRequest(format!(
            "the sweep of {} ({}) has no CSD scores, so it names no best step; rerun it with \
             --csd, or give the step",
            run.display(),
            p.style
        ))
    })
}
