//! The layout of a run folder, in one place.
//!
//! A training run (`styleforge train`), a pretraining run (`styleforge pretrain`) and the
//! runs a protocol or the demo trains all write the same layout; every reader and writer of
//! a run folder asks [`RunDir`] for its paths instead of spelling file names.
//!
//! ```text
//! <run>/config.toml                 the effective config
//! <run>/base.json                   a fingerprint of the base model (checked by --resume)
//! <run>/run.lock                    held by the process training into the folder
//! <run>/train_log.jsonl             one JSON line per optimizer step
//! <run>/stopped.json                where the last sitting stopped early (removed on resume)
//! <run>/checkpoints/step-NNNNNNN/   weights, optimizer, RNG and sampler state
//! <run>/validation/step-NNNNNNN.png validation grids
//! <run>/samples/step-NNNNNNN.png    pretraining sample grids
//! <run>/loss.png                    the loss curve
//! <run>/aux/                        generated Aux images (reused by later runs)
//! <run>/cache/                      cached latents
//! <run>/base-model/                 a single-file base converted to a folder
//! <run>/model/                      the trained model (diffusers folder or adapter files)
//! <run>/model-raw/                  with an EMA as the model: the raw trained weights
//! <run>/model.safetensors           the trained model as a single file
//! <run>/vae/, <run>/vae_log.jsonl   pretraining's first stage
//! ```

use std::path::{Path, PathBuf};

/// A run folder held by this process ([`RunDir::lock`]); dropping it lets another run in.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// A run folder and the paths of everything in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run folder at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `run.lock`: locked by the live process that trains into the folder.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("run.lock")
    }

    /// Takes the folder (creating it) for this process until the returned guard drops, and
    /// clears what a run killed mid-write left there ([`Self::sweep_temporaries`]). A
    /// second run into a folder that a live run holds is refused; a dead run's leftover
    /// lock file does not block, since the operating system releases the lock with the
    /// process that held it.
    pub fn lock(&self) -> crate::error::Result<RunLock> {
        let lock = self.take_lock()?;
        let removed = self.sweep_temporaries(&lock)?;
        if !removed.is_empty() {
            tracing::info!(
                "removed {} unfinished file(s) an interrupted run left in {}",
                removed.len(),
                self.root.display()
            );
        }
        Ok(lock)
    }

    /// Removes the temporaries of interrupted atomic writes
    /// ([`styleforge_models::files::is_temporary`]: half-written weights, checkpoints,
    /// pictures, logs) from the run folder's own files and subfolders, and returns them.
    /// Needs the folder's lock: no live process writes there then.
    pub fn sweep_temporaries(&self, _held: &RunLock) -> crate::error::Result<Vec<PathBuf>> {
        use styleforge_models::files::remove_temporaries;
        let mut removed = remove_temporaries(&self.root, false)?;
        for dir in [
            self.checkpoints(),
            self.validation(),
            self.samples(),
            self.aux(),
            self.cache(),
            self.base_model(),
            self.model(),
            self.model_raw(),
            self.vae(),
        ] {
            removed.extend(remove_temporaries(&dir, true)?);
        }
        Ok(removed)
    }

    fn take_lock(&self) -> crate::error::Result<RunLock> {
        use crate::error::Error;
        styleforge_models::files::create_dir_all(&self.root).map_err(|e| Error::RunFolder {
            path: self.root.clone(),
            message: format!(
                "cannot create the run folder ({e}); choose an output folder you can write to"
            ),
        })?;
        let path = self.lock_file();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(styleforge_models::files::at(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::RunFolder {
                path: self.root.clone(),
                message: "another styleforge process is training into this folder; wait for \
                          it to finish (then --resume), or choose another output folder"
                    .into(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::RunFolder {
                path,
                message: format!("cannot lock the run folder: {e}"),
            }),
        }
    }

    /// `config.toml`: the effective configuration of the run.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// `base.json`: a fingerprint of the base model the run started from, which `--resume`
    /// compares with the base it is given.
    pub fn base_fingerprint(&self) -> PathBuf {
        self.root.join("base.json")
    }

    /// `train_log.jsonl`: one JSON line per optimizer step.
    pub fn log(&self) -> PathBuf {
        self.root.join("train_log.jsonl")
    }

    /// `stopped.json`: the step a sitting stopped at before the run's end, and why
    /// ([`crate::training::stop::StopRecord`]).
    pub fn stop_record(&self) -> PathBuf {
        self.root.join("stopped.json")
    }

    /// `checkpoints/`: one `step-NNNNNNN/` folder per checkpoint.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// `validation/`: validation grids.
    pub fn validation(&self) -> PathBuf {
        self.root.join("validation")
    }

    /// The validation grid of `step`.
    pub fn validation_grid(&self, step: usize) -> PathBuf {
        self.validation().join(step_png(step))
    }

    /// `samples/`: pretraining's sample grids.
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples")
    }

    /// The pretraining sample grid of `step`.
    pub fn sample_grid(&self, step: usize) -> PathBuf {
        self.samples().join(step_png(step))
    }

    /// `loss.png`: the loss curve.
    pub fn loss_curve(&self) -> PathBuf {
        self.root.join("loss.png")
    }

    /// `aux/`: generated Aux images.
    pub fn aux(&self) -> PathBuf {
        self.root.join("aux")
    }

    /// `cache/`: cached latents.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// `base-model/`: a single-file base converted into a diffusers folder.
    pub fn base_model(&self) -> PathBuf {
        self.root.join("base-model")
    }

    /// `model/`: the trained model (a diffusers folder, or an adapter's files).
    pub fn model(&self) -> PathBuf {
        self.root.join("model")
    }

    /// `model-raw/`: with an EMA written as the model, the raw trained weights.
    pub fn model_raw(&self) -> PathBuf {
        self.root.join("model-raw")
    }

    /// `model.safetensors`: the trained model in the single-file layout.
    pub fn model_single_file(&self) -> PathBuf {
        self.root.join("model.safetensors")
    }

    /// `vae/`: the VAE trained by pretraining's first stage.
    pub fn vae(&self) -> PathBuf {
        self.root.join("vae")
    }

    /// `vae_log.jsonl`: the log of pretraining's first stage.
    pub fn vae_log(&self) -> PathBuf {
        self.root.join("vae_log.jsonl")
    }
}

fn step_png(step: usize) -> String {
    format!("step-{step:07}.png")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_documented_layout() {
        let run = RunDir::new("/r");
        assert_eq!(run.config(), Path::new("/r/config.toml"));
        assert_eq!(run.log(), Path::new("/r/train_log.jsonl"));
        assert_eq!(
            run.validation_grid(12),
            Path::new("/r/validation/step-0000012.png")
        );
        assert_eq!(run.sample_grid(3), Path::new("/r/samples/step-0000003.png"));
        assert_eq!(run.model_single_file(), Path::new("/r/model.safetensors"));
    }

    #[test]
    fn taking_the_lock_sweeps_what_a_killed_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let half_checkpoint = run.checkpoints().join(".step-0000010.Ab12Cd.tmp");
        std::fs::create_dir_all(&half_checkpoint).unwrap();
        std::fs::write(half_checkpoint.join("unet.safetensors"), b"half").unwrap();
        let whole = run.checkpoints().join("step-0000005");
        std::fs::create_dir_all(&whole).unwrap();
        std::fs::write(whole.join("state.json"), b"{}").unwrap();
        let half_log = run.root().join(".train_log.jsonl.q1W2e3.tmp");
        std::fs::write(&half_log, b"{").unwrap();
        let half_latents = run.cache().join(".tmpZ9y8X7");
        std::fs::create_dir_all(run.cache()).unwrap();
        std::fs::write(&half_latents, b"").unwrap();
        let half_aux = run.aux().join("concept-0/.generated-00003.png.a1b2c3.tmp");
        std::fs::create_dir_all(half_aux.parent().unwrap()).unwrap();
        std::fs::write(&half_aux, b"").unwrap();
        // Not the run's: files elsewhere (the user's data beside a run) are left alone.
        let elsewhere = run.root().join("data/.x.a1b2c3.tmp");
        std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
        std::fs::write(&elsewhere, b"").unwrap();

        let lock = run.lock().unwrap();
        for gone in [&half_checkpoint, &half_log, &half_latents, &half_aux] {
            assert!(!gone.exists(), "{} left", gone.display());
        }
        assert!(whole.join("state.json").is_file());
        assert!(elsewhere.is_file());
        assert!(run.sweep_temporaries(&lock).unwrap().is_empty());
    }
}
