//! What a fault campaign checks: the run folder a killed-and-resumed run ends with against
//! an uninterrupted run's, file by file, and the checkpoints left at every moment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use styleforge::models::candle::Device;
use styleforge::models::files::is_temporary;
use styleforge::training::checkpoint;
use styleforge::training::LogEntry;
use styleforge::RunDir;

/// One check's outcome: what it covered, and what failed.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// What it found, in a few words.
    pub summary: String,
    /// One line per problem (empty: passed).
    pub failures: Vec<String>,
}

impl Check {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Files (`Some(path)`) and folders (`None`) under `root`, by path relative to it; links
/// are listed as files and not followed.
fn walk(root: &Path) -> Result<BTreeMap<PathBuf, Option<PathBuf>>> {
    fn visit(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<PathBuf>>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            if entry.file_type()?.is_dir() {
                out.insert(relative, None);
                visit(root, &path, out)?;
            } else {
                out.insert(relative, Some(path));
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    visit(root, root, &mut out)?;
    Ok(out)
}

/// Every temporary of an interrupted write under `root` (files and folders).
pub fn temporaries(root: &Path) -> Result<Vec<PathBuf>> {
    Ok(walk(root)?
        .into_keys()
        .filter(|p| p.file_name().is_some_and(is_temporary))
        .collect())
}

/// Checks that every checkpoint folder of `run` is complete and loads; returns the
/// problems (one line each) and how many checkpoints were opened.
pub fn checkpoints_load(run: &RunDir) -> (Vec<String>, usize) {
    let dir = run.checkpoints();
    let mut problems = Vec::new();
    let listed = checkpoint::list(&dir);
    // A `step-N` folder that `list` skips (no state.json) is a half-written or half-removed
    // checkpoint left in sight.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("step-") && !listed.iter().any(|(_, p)| p == &e.path()) {
                problems.push(format!("{}: a checkpoint folder without state.json", name));
            }
        }
    }
    for (_, path) in &listed {
        if let Err(e) = checkpoint::load(path, &Device::Cpu) {
            problems.push(format!("{}: does not load: {e}", path.display()));
        }
    }
    (problems, listed.len())
}

/// The log's entries, or the lines that are not entries.
fn read_log_strict(path: &Path) -> Result<std::result::Result<Vec<LogEntry>, Vec<String>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<LogEntry>(line) {
            Ok(e) => entries.push(e),
            Err(e) => bad.push(format!("line {}: not a log entry ({e}): {line:.80}", i + 1)),
        }
    }
    Ok(if bad.is_empty() {
        Ok(entries)
    } else {
        Err(bad)
    })
}

/// The log of `faulted` holds steps 1..=`total` once each, in order, with the values of
/// the reference's (every field but the step's duration).
fn check_log(reference: &RunDir, faulted: &RunDir, total: usize) -> Result<Check> {
    let mut failures = Vec::new();
    let want = match read_log_strict(&reference.log())? {
        Ok(e) => e,
        Err(bad) => anyhow::bail!("the reference run's log is unreadable: {}", bad.join("; ")),
    };
    match read_log_strict(&faulted.log())? {
        Err(bad) => failures.extend(bad),
        Ok(got) => {
            let steps: Vec<usize> = got.iter().map(|e| e.step).collect();
            if steps != (1..=total).collect::<Vec<_>>() {
                failures.push(format!("steps are {steps:?}, not 1..={total} once each"));
            }
            for (g, w) in got.iter().zip(&want) {
                let same = g.step == w.step
                    && g.loss.to_bits() == w.loss.to_bits()
                    && g.loss_instance.to_bits() == w.loss_instance.to_bits()
                    && g.loss_prior.to_bits() == w.loss_prior.to_bits()
                    && g.grad_norm.to_bits() == w.grad_norm.to_bits()
                    && g.lr.to_bits() == w.lr.to_bits()
                    && g.val_loss.map(f64::to_bits) == w.val_loss.map(f64::to_bits);
                if !same {
                    failures.push(format!(
                        "step {}: loss {} / grad norm {} where the reference has {} / {}",
                        g.step, g.loss, g.grad_norm, w.loss, w.grad_norm
                    ));
                }
            }
        }
    }
    Ok(Check {
        name: "training log",
        summary: format!("steps 1..={total} once each, values equal to the reference's"),
        failures,
    })
}

/// Compares the run folder `faulted` with `reference`: the model, the checkpoints left,
/// the other outputs (grids, Aux images, cached latents, loss curve), the log, and what
/// the faulted folder holds that the reference does not (temporaries, stray files).
pub fn compare_runs(reference: &RunDir, faulted: &RunDir, total: usize) -> Result<Vec<Check>> {
    let want = walk(reference.root())?;
    let got = walk(faulted.root())?;
    // Differ by design: the config names its own folder; the log's step times vary (its
    // values are compared below); the lock is the process's.
    let own = |p: &Path| {
        [
            Path::new("config.toml"),
            Path::new("train_log.jsonl"),
            Path::new("run.lock"),
        ]
        .contains(&p)
    };
    let mut model = (0, Vec::new());
    let mut checkpoints = (0, Vec::new());
    let mut other = (0, Vec::new());
    for (relative, file) in &want {
        let Some(want_path) = file else { continue };
        if own(relative) {
            continue;
        }
        let group = if relative.starts_with("model") {
            &mut model
        } else if relative.starts_with("checkpoints") {
            &mut checkpoints
        } else {
            &mut other
        };
        group.0 += 1;
        match got.get(relative) {
            Some(Some(got_path)) => {
                let (a, b) = (std::fs::read(want_path)?, std::fs::read(got_path)?);
                if a != b {
                    group.1.push(format!(
                        "{} differs from the reference ({} vs {} bytes)",
                        relative.display(),
                        b.len(),
                        a.len()
                    ));
                }
            }
            _ => group.1.push(format!("{} is missing", relative.display())),
        }
    }
    let stray: Vec<String> = got
        .keys()
        .filter(|p| !want.contains_key(*p))
        .map(|p| {
            let kind = if p.file_name().is_some_and(is_temporary) {
                "a temporary of an interrupted write"
            } else {
                "not in the reference run"
            };
            format!("{}: {kind}", p.display())
        })
        .collect();
    let (load_problems, loaded) = checkpoints_load(faulted);
    checkpoints.1.extend(load_problems);
    Ok(vec![
        Check {
            name: "final model",
            summary: format!("{} files bit-identical to the reference's", model.0),
            failures: model.1,
        },
        check_log(reference, faulted, total)?,
        Check {
            name: "checkpoints left",
            summary: format!("{loaded} load; {} files identical", checkpoints.0),
            failures: checkpoints.1,
        },
        Check {
            name: "other outputs",
            summary: format!(
                "{} files (grids, Aux images, latents, loss curve) identical",
                other.0
            ),
            failures: other.1,
        },
        Check {
            name: "nothing left over",
            summary: "no temporary or stray file in the run folder".into(),
            failures: stray,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stray_temporary_and_a_changed_file_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for root in [&a, &b] {
            std::fs::create_dir_all(root.join("model/unet")).unwrap();
            std::fs::write(root.join("model/unet/w.safetensors"), b"weights").unwrap();
            std::fs::write(root.join("loss.png"), b"png").unwrap();
            std::fs::write(
                root.join("train_log.jsonl"),
                "{\"step\":1,\"loss\":0.5,\"loss_instance\":0.25,\"loss_prior\":0.25,\
                 \"grad_norm\":1.0,\"lr\":0.0001,\"step_time_s\":0.1}\n",
            )
            .unwrap();
        }
        let (reference, faulted) = (RunDir::new(&a), RunDir::new(&b));
        let clean = compare_runs(&reference, &faulted, 1).unwrap();
        assert!(clean.iter().all(Check::passed), "{clean:?}");

        std::fs::write(b.join("loss.png"), b"PNG").unwrap();
        std::fs::create_dir_all(b.join("checkpoints/.step-0000002.Ab12Cd.tmp")).unwrap();
        std::fs::write(b.join("train_log.jsonl"), "{\"step\":1,\"lo").unwrap();
        let found = compare_runs(&reference, &faulted, 1).unwrap();
        let failing: Vec<&str> = found
            .iter()
            .filter(|c| !c.passed())
            .map(|c| c.name)
            .collect();
        assert_eq!(
            failing,
            ["training log", "other outputs", "nothing left over"],
            "{found:?}"
        );
        assert_eq!(
            temporaries(&b).unwrap(),
            [PathBuf::from("checkpoints/.step-0000002.Ab12Cd.tmp")]
        );
    }
}
