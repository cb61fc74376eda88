//! Checkpoints: trained weights, optimizer state, step and every random generator's state,
//! written to a temporary folder and renamed, so a crash never leaves a broken one and a
//! resumed run continues exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::ema::Ema;
use crate::data::{RngState, SamplerState};
use crate::error::{Error, Result};
use crate::optim::{AdamW, StateSource};
use styleforge_models::files;
use styleforge_models::weights::{save_safetensors_atomic, varmap_tensors};

/// The non-tensor part of a checkpoint (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    /// The engine's generator (noise, timesteps, flips).
    pub rng: RngState,
    /// The StyleRef sampler (over pooled concept/image pairs).
    pub style_sampler: SamplerState,
    /// One Aux sampler per concept.
    pub aux_samplers: Vec<SamplerState>,
    /// The loss scaler's state (fp16 runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<super::precision::LossScaleState>,
}

/// The file of the weights' moving average in a checkpoint.
pub const EMA_FILE: &str = "ema.safetensors";

/// The prefix of the UNet's weights among a fine-tuning run's trained variables (and so in
/// [`EMA_FILE`]).
pub const UNET_PREFIX: &str = "unet.";

/// The prefix of the text encoder's weights among a fine-tuning run's trained variables.
pub const TEXT_ENCODER_PREFIX: &str = "text_encoder.";

/// The folder of the checkpoint at `step` inside `dir`.
pub fn checkpoint_dir(dir: &Path, step: usize) -> PathBuf {
    dir.join(format!("step-{step:07}"))
}

/// Writes a checkpoint into `dir/step-NNNNNNN` atomically and keeps the newest `keep`.
pub fn save(
    dir: &Path,
    state: &TrainState,
    unet: &VarMap,
    text_encoder: Option<&VarMap>,
    optimizer: &AdamW,
    ema: Option<&Ema>,
    keep: usize,
) -> Result<PathBuf> {
    let final_dir = checkpoint_dir(dir, state.step);
    files::write_dir_with(&final_dir, |tmp| -> Result<()> {
        save_safetensors_atomic(&varmap_tensors(unet), &tmp.join("unet.safetensors"))?;
        if let Some(te) = text_encoder {
            save_safetensors_atomic(&varmap_tensors(te), &tmp.join("text_encoder.safetensors"))?;
        }
        optimizer.save_state(&tmp.join("optimizer.safetensors"))?;
        if let Some(ema) = ema {
            save_safetensors_atomic(&ema.state()?, &tmp.join(EMA_FILE))?;
        }
        let json = serde_json::to_string_pretty(state).map_err(|e| Error::Json {
            what: "the checkpoint state".into(),
            source: e,
        })?;
        // state.json last: a folder without it is not a checkpoint (see `list`).
        Ok(files::write(&tmp.join("state.json"), json)?)
    })?;
    prune(dir, keep)?;
    Ok(final_dir)
}

/// The error of a checkpoint or model of the run in `run` that could not be written to
/// `path`: says which checkpoint a `--resume` continues from (the write left the ones
/// before it as they were).
pub fn write_failed(
    what: &'static str,
    path: &Path,
    run: &crate::run_dir::RunDir,
    source: Error,
) -> Error {
    let recovery = match list(&run.checkpoints()).last() {
        Some((step, _)) => format!(
            "the run stopped; its checkpoints are intact, the newest at step {step}: free disk \
             space, then continue with `styleforge train --resume` (same config)"
        ),
        None => "the run stopped before its first checkpoint: free disk space, then start \
                 it again"
            .to_string(),
    };
    Error::OutputWrite {
        what,
        path: path.to_path_buf(),
        recovery,
        source: Box::new(source),
    }
}

/// Complete checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path()
                .join("state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn prune(dir: &Path, keep: usize) -> Result<()> {
    let all = list(dir);
    let excess = all.len().saturating_sub(keep.max(1));
    for (_, path) in all.into_iter().take(excess) {
        // Renamed aside first: a run killed while pruning must not leave a listed
        // checkpoint with some of its files gone.
        files::remove_dir(&path)?;
    }
    Ok(())
}

/// A checkpoint's tensor file, memory-mapped and read one tensor at a time: restoring a
/// run holds one tensor copy beside the model and optimizer, not a second model and
/// optimizer state.
pub struct TensorFile {
    path: PathBuf,
    file: candle_core::safetensors::MmapedSafetensors,
    device: Device,
}

impl TensorFile {
    /// Opens `path` (a safetensors file) for tensors on `device`.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        // SAFETY: the file is mapped read-only for the time of a restore; checkpoint folders
        // are written once (temporary folder, then rename) and never modified in place.
        let file =
            unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(|e| {
                Error::Config {
                    path: path.to_path_buf(),
                    message: format!("unreadable checkpoint tensors: {e}"),
                }
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            device: device.clone(),
        })
    }
}

impl StateSource for TensorFile {
    fn tensor(&self, name: &str) -> candle_core::Result<Option<Tensor>> {
        if !self.contains(name) {
            return Ok(None);
        }
        self.file.load(name, &self.device).map(Some).map_err(|e| {
            candle_core::Error::msg(format!(
                "unreadable tensor `{name}` in {}: {e}",
                self.path.display()
            ))
        })
    }

    fn contains(&self, name: &str) -> bool {
        self.file.get(name).is_ok()
    }
}

/// A checkpoint opened for restoring.
pub struct Loaded {
    /// The saved state.
    pub state: TrainState,
    /// UNet weights.
    pub unet: TensorFile,
    /// Text-encoder weights, when it was trained.
    pub text_encoder: Option<TensorFile>,
    /// Optimizer state.
    pub optimizer: TensorFile,
    /// The moving average of the weights, when the run keeps one.
    pub ema: Option<TensorFile>,
}

/// Opens the checkpoint folder `path`.
pub fn load(path: &Path, device: &Device) -> Result<Loaded> {
    let state_path = path.join("state.json");
    let text = files::read_to_string(&state_path)?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| Error::Config {
        path: state_path.clone(),
        message: e.to_string(),
    })?;
    let te_path = path.join("text_encoder.safetensors");
    let ema_path = path.join(EMA_FILE);
    Ok(Loaded {
        unet: TensorFile::open(&path.join("unet.safetensors"), device)?,
        text_encoder: te_path
            .is_file()
            .then(|| TensorFile::open(&te_path, device))
            .transpose()?,
        optimizer: TensorFile::open(&path.join("optimizer.safetensors"), device)?,
        ema: ema_path
            .is_file()
            .then(|| TensorFile::open(&ema_path, device))
            .transpose()?,
        state,
    })
}

/// The moving average of the weights in the checkpoint file `raw` (`unet.safetensors` or
/// `text_encoder.safetensors` of the checkpoint folder `dir`), read from the checkpoint's
/// [`EMA_FILE`] under `prefix` ([`UNET_PREFIX`], [`TEXT_ENCODER_PREFIX`]) and cast to each raw
/// weight's dtype: the tensors the run's model is written with when it ships the average.
/// Every raw weight must have its average, with its shape.
pub fn ema_weights(dir: &Path, raw: &str, prefix: &str) -> Result<HashMap<String, Tensor>> {
    let device = Device::Cpu;
    let raw = TensorFile::open(&dir.join(raw), &device)?;
    let ema = TensorFile::open(&dir.join(EMA_FILE), &device)?;
    let mut out = HashMap::new();
    for (name, _) in raw.file.tensors() {
        let Some(w) = raw.tensor(&name)? else {
            continue;
        };
        let key = format!("{prefix}{name}");
        let avg = ema.tensor(&key)?.ok_or_else(|| Error::Checkpoint {
            path: ema.path.clone(),
            message: format!(
                "the EMA weights lack `{key}`, which {} holds",
                raw.path.display()
            ),
        })?;
        if avg.dims() != w.dims() {
            return Err(Error::Checkpoint {
                path: ema.path.clone(),
                message: format!(
                    "EMA weight `{key}` has shape {:?}, {} {:?}",
                    avg.dims(),
                    raw.path.display(),
                    w.dims()
                ),
            });
        }
        out.insert(name, avg.to_dtype(w.dtype())?);
    }
    Ok(out)
}

/// Copies checkpoint weights into the variables of `varmap`; every variable must be there
/// with its shape.
pub fn restore_vars(varmap: &VarMap, tensors: &TensorFile, what: &str) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    for (name, var) in data.iter() {
        let t = tensors.tensor(name)?.ok_or_else(|| Error::Checkpoint {
            path: tensors.path.clone(),
            message: format!("the {what} weights lack `{name}`; was it made by another config?"),
        })?;
        if t.dims() != var.dims() {
            return Err(Error::Checkpoint {
                path: tensors.path.clone(),
                message: format!(
                    "{what} weight `{name}` has shape {:?}, the model {:?}",
                    t.dims(),
                    var.dims()
                ),
            });
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}
