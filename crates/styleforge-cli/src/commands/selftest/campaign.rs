//! The fault campaign: a small training run killed with SIGKILL at seeded random moments
//! of every phase, resumed after each kill, made to fail on a full disk at a checkpoint
//! and at the final model, and at the end compared file by file with the same run done
//! without interruption.
//!
//! The run is real: `styleforge train` (this very binary) on the embedded toy base model,
//! with toy-world StyleRef pictures at 32 px, generated Aux images, cached latents,
//! checkpoints, validation grids and the final model. An uninterrupted reference run is
//! timed phase by phase; each planned kill picks a phase, one of its occurrences in the
//! reference (a given step's checkpoint, say) and a moment inside it, uniform over the
//! reference's duration of that occurrence. The kills are carried out in run order: a
//! sitting runs until its target occurrence begins, waits the chosen time and is killed;
//! the next sitting resumes from the newest checkpoint (or starts afresh before the first).
//! Where the run really was when it died is read from everything it wrote to stderr.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use styleforge::toy::data::{style_ref_samples, write_samples, CaptionText, Composition};
use styleforge::toy::unpack_base_model;
use styleforge::training::checkpoint;
use styleforge::world::Style;
use styleforge::RunDir;

use super::phases::{At, Part, Phase, Tracker};
use super::report::{DiskFull, Kill, Report};
use super::sitting::{Next, Sitting, CAN_FILL_DISK};
use super::verify::{checkpoints_load, compare_runs, temporaries};

/// What a campaign does.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `styleforge` binary to train with.
    pub exe: PathBuf,
    /// Where the data, both runs and the sittings' logs go.
    pub out: PathBuf,
    /// Kills, spread over `phases` in turn.
    pub kills: usize,
    /// Seed of the kill plan (which occurrence, what moment).
    pub seed: u64,
    /// Steps of the run.
    pub steps: usize,
    /// The phases to kill in.
    pub phases: Vec<Phase>,
    /// Also fail a checkpoint write and the final model write on a full disk.
    pub disk_full: bool,
}

/// Settings of the campaign's training run.
const CHECKPOINT_EVERY: usize = 4;
const VALIDATE_EVERY: usize = 6;
const STYLE_IMAGES: usize = 6;
const AUX_IMAGES: usize = 4;
const SAMPLING_STEPS: usize = 4;
/// A kill that lands outside its phase is made again this many times at most.
const RETRIES: u8 = 2;
/// Kills land in the first this-much of their occurrence's reference duration: a sitting
/// can run faster than the reference did, and a moment near the end would often land past.
const MOMENT: f64 = 0.6;

/// A fault to cause: a kill at an occurrence, or a full disk at the next large write.
#[derive(Debug, Clone)]
enum Fault {
    /// SIGKILL `delay` after the run enters `target` (Aux generation: scaled by the
    /// images left to make, of `aux_total` in the reference).
    Kill {
        phase: Phase,
        target: At,
        delay: Duration,
        retries: u8,
    },
    /// The disk fills up once the loop runs: the next checkpoint write fails.
    FullAtCheckpoint,
    /// The disk fills up after the last checkpoint: the final model write fails.
    FullAtModel,
}

/// The run's config file.
fn config_text(base: &Path, style: &Path, run: &Path, steps: usize) -> String {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    format!(
        "method = \"styleforge\"\nseed = 1337\n\n[model]\nbase = {base}\n\n\
         [[data.concepts]]\nstyle_dir = {style}\ntoken = \"ohwx\"\n\n\
         [data]\nresolution = 32\n\n\
         [training]\nnum_aux_images = {AUX_IMAGES}\naux_steps = {SAMPLING_STEPS}\n\n\
         [optim]\nsteps = {steps}\nlr = 1e-4\n\n\
         [output]\ndir = {run}\ncheckpoint_every = {CHECKPOINT_EVERY}\nkeep_checkpoints = 2\n\
         validate_every = {VALIDATE_EVERY}\nvalidation_steps = {SAMPLING_STEPS}\n\
         validation_prompts = [\"a red person on grass by day, {{token}} style\"]\n",
        base = q(base),
        style = q(style),
        run = q(run),
    )
}

/// Where each place of the reference run began and how long it lasted, in run order.
type Timeline = Vec<(At, Duration)>;

/// The uninterrupted run, timed place by place.
fn reference_run(exe: &Path, config: &Path, steps: usize, log: &Path) -> Result<Timeline> {
    let mut sitting = Sitting::spawn(exe, config, false)?;
    let mut tracker = Tracker::new(steps);
    let mut timeline: Timeline = Vec::new();
    let mut since = Instant::now();
    while let Next::Line(t, line) = sitting.next(None) {
        let before = tracker.at();
        if tracker.feed(&line).is_some() {
            timeline.push((before, t - since));
            since = t;
        }
    }
    let (status, _) = sitting.finish()?;
    timeline.push((tracker.at(), since.elapsed()));
    std::fs::write(log, sitting.transcript().join("\n"))
        .with_context(|| format!("writing {}", log.display()))?;
    if !status.success() {
        bail!(
            "the reference run failed ({status}):\n{}",
            tail(sitting.transcript())
        );
    }
    Ok(timeline)
}

/// Whether a place is where a kill of `phase` is aimed (a step's computation, not the
/// bookkeeping after it).
fn aim(at: At) -> Option<Phase> {
    match at {
        At::Loop(_, Part::Compute) => Some(Phase::Step),
        At::Loop(_, Part::AfterCompute | Part::AfterValidation | Part::AfterCheckpoint) => None,
        other => other.phase(),
    }
}

/// The faults in run order: `kills` kills over the phases in turn, each at a seeded random
/// occurrence and moment; the full disks, when asked, at a random checkpoint and at the
/// model.
fn plan(timeline: &Timeline, opts: &Options) -> Result<Vec<(usize, Fault)>> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut planned = Vec::new();
    for i in 0..opts.kills {
        let phase = opts.phases[i % opts.phases.len()];
        let candidates: Vec<usize> = (0..timeline.len())
            .filter(|&j| aim(timeline[j].0) == Some(phase))
            .collect();
        if candidates.is_empty() {
            bail!(
                "the reference run never entered {} (its log lines changed?)",
                phase.label()
            );
        }
        let j = candidates[rng.gen_range(0..candidates.len())];
        let (target, duration) = timeline[j];
        let delay = duration.mul_f64(rng.gen_range(0.0..MOMENT));
        planned.push((
            j,
            Fault::Kill {
                phase,
                target,
                delay,
                retries: RETRIES,
            },
        ));
    }
    if opts.disk_full && CAN_FILL_DISK {
        let checkpoints: Vec<usize> = (0..timeline.len())
            .filter(|&j| matches!(timeline[j].0, At::Loop(_, Part::Checkpoint)))
            .collect();
        let model = timeline.iter().position(|(at, _)| *at == At::Model);
        if let (false, Some(model)) = (checkpoints.is_empty(), model) {
            let j = checkpoints[rng.gen_range(0..checkpoints.len())];
            planned.push((j, Fault::FullAtCheckpoint));
            planned.push((model, Fault::FullAtModel));
        }
    }
    // Stable: faults at one occurrence keep their order.
    planned.sort_by_key(|(j, _)| *j);
    Ok(planned)
}

/// Where a kill that landed past `target` is made again: the same occurrence when the
/// next sitting, resuming after `resume_step`, meets it again, else the next occurrence of
/// its phase that it meets; with its reference duration.
fn retry_target(
    timeline: &Timeline,
    target: At,
    resume_step: usize,
) -> Option<(usize, At, Duration)> {
    let ahead = |at: At| match at {
        At::Loop(k, _) => k > resume_step,
        _ => true,
    };
    let phase = aim(target)?;
    let found = if ahead(target) {
        timeline
            .iter()
            .enumerate()
            .find(|(_, (at, _))| *at == target)
    } else {
        timeline
            .iter()
            .enumerate()
            .find(|(_, (at, _))| aim(*at) == Some(phase) && ahead(*at))
    };
    found.map(|(j, (at, d))| (j, *at, *d))
}

/// Puts `fault`, at place `position` of the reference timeline, into the queue in run
/// order (after the faults at the same place).
fn requeue(faults: &mut VecDeque<(usize, Fault)>, position: usize, fault: Fault) {
    let at = faults
        .iter()
        .position(|(p, _)| *p > position)
        .unwrap_or(faults.len());
    faults.insert(at, (position, fault));
}

fn tail(lines: &[String]) -> String {
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Runs the campaign; the report says whether it passed.
pub fn run(opts: &Options) -> Result<Report> {
    if opts.phases.is_empty() {
        bail!("no phase to kill in");
    }
    let data = opts.out.join("data");
    let base = unpack_base_model(&data)?;
    let style = data.join("style");
    let samples = style_ref_samples(
        Style::Cel,
        Composition::Mixed,
        STYLE_IMAGES,
        styleforge::toy::data::STYLE_REF_SEED,
    );
    write_samples(&style, &samples, CaptionText::Content)?;
    let reference = RunDir::new(opts.out.join("reference"));
    let faulted = RunDir::new(opts.out.join("faulted"));
    for run in [&reference, &faulted] {
        if run.root().exists() {
            std::fs::remove_dir_all(run.root())
                .with_context(|| format!("clearing {}", run.root().display()))?;
        }
    }
    let write_config = |run: &RunDir, name: &str| -> Result<PathBuf> {
        let path = opts.out.join(name);
        let text = config_text(&base, &style, run.root(), opts.steps);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let reference_config = write_config(&reference, "reference.toml")?;
    let faulted_config = write_config(&faulted, "faulted.toml")?;

    eprintln!("reference run ({} steps, uninterrupted)…", opts.steps);
    let start = Instant::now();
    let timeline = reference_run(
        &opts.exe,
        &reference_config,
        opts.steps,
        &opts.out.join("reference.log"),
    )?;
    let reference_s = start.elapsed().as_secs_f64();
    let aux_total = timeline.iter().find_map(|(at, _)| match at {
        At::Aux(n) => Some(*n),
        _ => None,
    });
    let plan = plan(&timeline, opts)?;
    // Half the smallest checkpoint file: every checkpoint and the model hold a larger one,
    // while the log, grids and small files of a sitting stay far below.
    let file_limit = smallest_checkpoint_file(&reference)? / 2;

    eprintln!(
        "faulted run: {} faults planned (seed {})…",
        plan.len(),
        opts.seed
    );
    let start = Instant::now();
    // Each fault with the place of its occurrence in the reference's timeline.
    let mut faults: VecDeque<(usize, Fault)> = plan.into_iter().collect();
    let mut retry_rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x0072_6574_7279);
    let mut kills = Vec::new();
    let mut skipped = Vec::new();
    let mut disk_full = Vec::new();
    let mut sittings = 0;
    let mut checkpoint_loads = 0;
    let last_checkpoint = (opts.steps - 1) / CHECKPOINT_EVERY * CHECKPOINT_EVERY;
    loop {
        let resume = !checkpoint::list(&faulted.checkpoints()).is_empty();
        sittings += 1;
        let mut sitting = Sitting::spawn(&opts.exe, &faulted_config, resume)?;
        let mut tracker = Tracker::new(opts.steps);
        let mut kill_at: Option<Instant> = None;
        // The checkpoints when the disk filled up.
        let mut limited: Option<Vec<(usize, PathBuf)>> = None;
        let ended = loop {
            // A kill whose occurrence this sitting has left behind for good (an earlier kill
            // landed just after that checkpoint was written, say) moves to the next
            // occurrence of its phase the run will meet; with none left, it is dropped (a
            // planned kill then counts as not made).
            while let Some((
                _,
                Fault::Kill {
                    phase,
                    target,
                    retries,
                    ..
                },
            )) = faults.front()
            {
                let (phase, target, retries) = (*phase, *target, *retries);
                if kill_at.is_some() || !tracker.at().is_past(target) {
                    break;
                }
                faults.pop_front();
                let next = timeline
                    .iter()
                    .enumerate()
                    .find(|(_, (at, _))| aim(*at) == Some(phase) && !tracker.at().is_past(*at));
                match next {
                    Some((j, (at, duration))) => requeue(
                        &mut faults,
                        j,
                        Fault::Kill {
                            phase,
                            target: *at,
                            delay: duration.mul_f64(retry_rng.gen_range(0.0..MOMENT)),
                            retries,
                        },
                    ),
                    None if retries == RETRIES => skipped.push((phase, target)),
                    None => {}
                }
            }
            match sitting.next(kill_at) {
                Next::Line(t, line) => {
                    let Some(now) = tracker.feed(&line) else {
                        continue;
                    };
                    match faults.front().map(|(_, f)| f) {
                        Some(Fault::Kill { target, delay, .. })
                            if kill_at.is_none() && now.matches(*target) =>
                        {
                            let delay = match (now, aux_total) {
                                (At::Aux(left), Some(all)) if all > 0 => {
                                    delay.mul_f64(left as f64 / all as f64)
                                }
                                _ => *delay,
                            };
                            kill_at = Some(t + delay);
                        }
                        Some(Fault::FullAtCheckpoint)
                            if limited.is_none() && matches!(now, At::Loop(..)) =>
                        {
                            sitting.limit_file_size(file_limit)?;
                            limited = Some(checkpoint::list(&faulted.checkpoints()));
                        }
                        Some(Fault::FullAtModel)
                            if limited.is_none()
                                && now.is_past(At::Loop(last_checkpoint, Part::Checkpoint)) =>
                        {
                            sitting.limit_file_size(file_limit)?;
                            limited = Some(checkpoint::list(&faulted.checkpoints()));
                        }
                        _ => {}
                    }
                }
                Next::Timeout => {
                    sitting.kill()?;
                    break false;
                }
                Next::Closed => break true,
            }
        };
        let (status, rest) = sitting.finish()?;
        for line in &rest {
            tracker.feed(line);
        }
        std::fs::write(
            opts.out.join(format!("sitting-{sittings:02}.log")),
            sitting.transcript().join("\n"),
        )?;
        if !ended {
            let Some((
                _,
                Fault::Kill {
                    phase,
                    target,
                    retries,
                    ..
                },
            )) = faults.pop_front()
            else {
                unreachable!("a sitting is killed only for a planned kill");
            };
            let died_at = tracker.at();
            let missed = died_at.phase() != Some(phase);
            kills.push(Kill {
                phase,
                target,
                died_at,
                retry: retries < RETRIES,
            });
            // A kill that landed past its phase (a phase faster than in the reference) is
            // made again, earlier in the phase.
            let resume_step = checkpoint::list(&faulted.checkpoints())
                .last()
                .map_or(0, |(s, _)| *s);
            let retry = (missed && retries > 0)
                .then(|| retry_target(&timeline, target, resume_step))
                .flatten();
            if let Some((j, target, duration)) = retry {
                requeue(
                    &mut faults,
                    j,
                    Fault::Kill {
                        phase,
                        target,
                        delay: duration.mul_f64(retry_rng.gen_range(0.0..MOMENT / 2.0)),
                        retries: retries - 1,
                    },
                );
            }
        } else if let Some(before) = &limited {
            let what = match faults.pop_front() {
                Some((_, Fault::FullAtModel)) => "final model write",
                _ => "checkpoint write",
            };
            disk_full.push(check_disk_full(
                what,
                status.success(),
                &sitting,
                &faulted,
                before,
            )?);
        } else if !status.success() {
            bail!(
                "sitting {sittings} of the faulted run failed ({status}), not by a planned \
                 fault:\n{}",
                tail(sitting.transcript())
            );
        } else {
            // The run finished before the fault in front was made. A kill already armed
            // (its phase ended sooner than the reference's) is made again in a sitting
            // that resumes the finished run, earlier in the phase; one whose occurrence no
            // sitting meets again is dropped.
            match faults.front_mut() {
                None => break,
                Some((_, Fault::Kill { delay, retries, .. }))
                    if kill_at.is_some() && *retries > 0 =>
                {
                    *retries -= 1;
                    *delay = delay.mul_f64(retry_rng.gen_range(0.0..1.0));
                }
                Some(_) => {
                    if let Some((
                        _,
                        Fault::Kill {
                            phase,
                            target,
                            retries: RETRIES,
                            ..
                        },
                    )) = faults.pop_front()
                    {
                        skipped.push((phase, target));
                    }
                }
            }
        }
        let (problems, opened) = checkpoints_load(&faulted);
        checkpoint_loads += opened;
        if !problems.is_empty() {
            bail!(
                "after sitting {sittings} ({}): {}",
                kills
                    .last()
                    .map_or("a full disk".to_string(), |k: &Kill| format!(
                        "killed at {}",
                        k.died_at
                    )),
                problems.join("; ")
            );
        }
    }
    let checks = compare_runs(&reference, &faulted, opts.steps)?;
    let faulted_s = start.elapsed().as_secs_f64();
    let reference_phases = Phase::ALL
        .into_iter()
        .map(|phase| {
            let times: Vec<f64> = timeline
                .iter()
                .filter(|(at, _)| aim(*at) == Some(phase))
                .map(|(_, d)| d.as_secs_f64())
                .collect();
            (phase, times.len(), times.iter().sum())
        })
        .collect();
    Ok(Report {
        kills,
        skipped,
        disk_full,
        checks,
        sittings,
        checkpoint_loads,
        reference_phases,
        reference_s,
        faulted_s,
        kills_asked: opts.kills,
    })
}

/// The smallest file of the reference run's checkpoints.
fn smallest_checkpoint_file(run: &RunDir) -> Result<u64> {
    let mut smallest = BTreeMap::new();
    for (_, dir) in checkpoint::list(&run.checkpoints()) {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.path().extension().is_some_and(|e| e == "safetensors") {
                smallest.insert(entry.metadata()?.len(), entry.path());
            }
        }
    }
    smallest
        .into_keys()
        .next()
        .context("the reference run left no checkpoint to size a full disk by")
}

/// A sitting stopped by a full disk: it failed with a message naming what it could not
/// write, without a panic, left no temporary, and every checkpoint still loads.
fn check_disk_full(
    what: &'static str,
    succeeded: bool,
    sitting: &Sitting,
    run: &RunDir,
    before: &[(usize, PathBuf)],
) -> Result<DiskFull> {
    let mut failures = Vec::new();
    let lines = sitting.transcript();
    let expected = if what == "final model write" {
        "error: cannot write the model"
    } else {
        "error: cannot write the checkpoint"
    };
    let message = lines
        .iter()
        .position(|l| l.starts_with("error: "))
        .map(|i| lines[i..].join(" / "))
        .unwrap_or_default();
    if succeeded {
        failures.push("the run succeeded although its write could not".into());
    }
    if !message.starts_with(expected) {
        failures.push(format!("expected a message starting `{expected}`"));
    }
    if lines.iter().any(|l| l.contains("panicked")) {
        failures.push("the process panicked".into());
    }
    let left = temporaries(run.root())?;
    if !left.is_empty() {
        failures.push(format!(
            "temporaries left: {}",
            left.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let (problems, _) = checkpoints_load(run);
    failures.extend(problems);
    let after = checkpoint::list(&run.checkpoints());
    if after != before {
        failures.push(format!(
            "the checkpoints changed from steps {:?} to {:?}",
            before.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            after.iter().map(|(s, _)| s).collect::<Vec<_>>()
        ));
    }
    Ok(DiskFull {
        what,
        message,
        failures,
    })
}
