//! The Generate page: `styleforge generate` run as a child process from a run's model (or
//! adapter over its base) or any model path, each result kept in the gallery folder
//! `<runs>/gallery/` as `<id>.png` beside `<id>.json` with its parameters.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use styleforge::adapters::training::files as adapter_files;
use styleforge::training::config::Method;
use styleforge::RunDir;

use crate::error::{Result, StudioError};
use crate::runs::effective_config;

/// The gallery's folder name in the runs folder.
pub const GALLERY: &str = "gallery";

/// The samplers `styleforge generate --scheduler` takes.
pub const SAMPLERS: [&str; 7] = [
    "ddim",
    "pndm",
    "euler",
    "euler_a",
    "dpm++2m",
    "dpm++2m_sde",
    "ddpm",
];

/// What the Generate form sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateForm {
    /// `run:<name>` for a run's trained model, else a model path or Hub name.
    pub model: String,
    /// What to draw.
    pub prompt: String,
    /// What to avoid.
    #[serde(default)]
    pub negative: Option<String>,
    /// A sampler of [`SAMPLERS`] (default: the model's own).
    #[serde(default)]
    pub sampler: Option<String>,
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub guidance: f64,
    /// Guidance rescale φ, 0 to 1 (0: off).
    #[serde(default)]
    pub guidance_rescale: f64,
    /// Seed.
    pub seed: u64,
    /// Width in pixels (default: the model's).
    #[serde(default)]
    pub width: Option<u32>,
    /// Height in pixels (default: the model's).
    #[serde(default)]
    pub height: Option<u32>,
}

/// Where a gallery entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Being generated.
    Running,
    /// The image is there.
    Done,
    /// The generator failed (see the message).
    Failed,
}

/// One picture of the gallery with its parameters (`<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Its id (the file stem).
    pub id: String,
    /// The parameters it was made with.
    pub params: GenerateForm,
    /// Where it stands.
    pub state: EntryState,
    /// The generator's last lines, when it failed.
    #[serde(default)]
    pub message: Option<String>,
    /// The image's URL, once done.
    #[serde(default)]
    pub image: Option<String>,
}

/// The model arguments of `styleforge generate` for a model choice.
pub fn model_args(runs: &Path, model: &str) -> Result<Vec<OsString>> {
    let Some(name) = model.strip_prefix("run:") else {
        let m = model.trim();
        if m.is_empty() {
            return Err(StudioError::BadRequest("choose a model".into()));
        }
        return Ok(vec!["--model".into(), m.into()]);
    };
    crate::newrun::check_name(name)?;
    let run = RunDir::new(runs.join(name));
    let cfg = effective_config(&run)
        .ok_or_else(|| StudioError::NotFound(format!("no run {name} with a config")))?;
    let model = run.model();
    if !cfg.method.is_adapter() {
        let path = if model.is_dir() {
            model
        } else {
            run.model_single_file()
        };
        if !path.exists() {
            return Err(StudioError::Conflict(format!(
                "{name} has no trained model yet"
            )));
        }
        return Ok(vec!["--model".into(), path.into()]);
    }
    let base = if run.base_model().is_dir() {
        run.base_model()
    } else {
        cfg.base.clone()
    };
    let (flag, file) = match cfg.method {
        Method::Lora => ("--lora", adapter_files::LORA_PEFT),
        Method::TextualInversion => ("--embedding", adapter_files::TI_DIFFUSERS),
        _ => ("--custom-diffusion", adapter_files::CUSTOM_DIFFUSION),
    };
    let adapter = model.join(file);
    if !adapter.is_file() {
        return Err(StudioError::Conflict(format!(
            "{name} has no trained adapter yet"
        )));
    }
    Ok(vec![
        "--model".into(),
        base.into(),
        flag.into(),
        adapter.into(),
    ])
}

/// The gallery of the runs folder `runs`.
#[derive(Debug)]
pub struct Gallery {
    dir: PathBuf,
    seq: AtomicU64,
}

impl Gallery {
    /// The gallery in `runs/gallery`.
    pub fn new(runs: &Path) -> Self {
        Self {
            dir: runs.join(GALLERY),
            seq: AtomicU64::new(0),
        }
    }

    fn json(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn save(&self, entry: &Entry) -> Result<()> {
        let text = serde_json::to_string_pretty(entry)
            .map_err(|e| StudioError::BadRequest(e.to_string()))?;
        styleforge::models::files::write(&self.json(&entry.id), text)
            .map_err(|e| StudioError::BadRequest(e.to_string()))
    }

    /// Starts generating `form` with `exe generate`; returns the new entry.
    pub fn generate(&self, exe: &Path, runs: &Path, form: GenerateForm) -> Result<Entry> {
        styleforge::pipelines::check_prompt("the prompt", &form.prompt)
            .map_err(|e| StudioError::BadRequest(e.to_string()))?;
        if form.steps == 0 || form.steps > 1000 {
            return Err(StudioError::BadRequest("steps: 1 to 1000".into()));
        }
        styleforge::pipelines::check_guidance_rescale(form.guidance_rescale)
            .map_err(|e| StudioError::BadRequest(e.to_string()))?;
        if let Some(s) = &form.sampler {
            if !SAMPLERS.contains(&s.as_str()) {
                return Err(StudioError::BadRequest(format!("no sampler {s}")));
            }
        }
        let mut args: Vec<OsString> = vec!["generate".into(), "--quiet".into()];
        args.extend(model_args(runs, &form.model)?);
        std::fs::create_dir_all(&self.dir).map_err(StudioError::io(&self.dir))?;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let id = format!("{millis}-{}", self.seq.fetch_add(1, Ordering::Relaxed));
        let png = self.dir.join(format!("{id}.png"));
        args.extend(["--prompt".into(), form.prompt.clone().into()]);
        if let Some(n) = form.negative.as_ref().filter(|n| !n.trim().is_empty()) {
            args.extend(["--negative-prompt".into(), n.into()]);
        }
        if let Some(s) = &form.sampler {
            args.extend(["--scheduler".into(), s.into()]);
        }
        args.extend([
            "--steps".into(),
            form.steps.to_string().into(),
            "--guidance".into(),
            form.guidance.to_string().into(),
            "--seed".into(),
            form.seed.to_string().into(),
        ]);
        if form.guidance_rescale > 0.0 {
            args.extend([
                "--guidance-rescale".into(),
                form.guidance_rescale.to_string().into(),
            ]);
        }
        for (flag, v) in [("--width", form.width), ("--height", form.height)] {
            if let Some(v) = v {
                args.extend([flag.into(), v.to_string().into()]);
            }
        }
        args.extend(["--out".into(), png.into()]);
        let entry = Entry {
            id: id.clone(),
            params: form,
            state: EntryState::Running,
            message: None,
            image: None,
        };
        self.save(&entry)?;
        let (dir, done_entry) = (self.dir.clone(), entry.clone());
        crate::jobs::run_to_end(exe.to_path_buf(), args, move |ok, tail| {
            let gallery = Gallery {
                dir,
                seq: AtomicU64::new(0),
            };
            let mut e = done_entry;
            if ok {
                e.state = EntryState::Done;
                e.image = Some(format!("/files/{GALLERY}/{}.png", e.id));
            } else {
                e.state = EntryState::Failed;
                e.message = Some(tail);
            }
            if let Err(err) = gallery.save(&e) {
                tracing::warn!("gallery entry {}: {err}", e.id);
            }
        });
        Ok(entry)
    }

    /// Every entry, newest first.
    pub fn list(&self) -> Vec<Entry> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut entries: Vec<Entry> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok())
            .collect();
        entries.sort_by(|a: &Entry, b: &Entry| {
            let key = |e: &Entry| {
                let (ms, n) = e.id.split_once('-').unwrap_or((&e.id, "0"));
                (
                    ms.parse::<u128>().unwrap_or(0),
                    n.parse::<u64>().unwrap_or(0),
                )
            };
            key(b).cmp(&key(a))
        });
        entries
    }
}
