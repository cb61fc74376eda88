//! The protocol engine behind `styleforge protocol` and `styleforge protocol --toy`.
//!
//! A protocol is a list of jobs (train a model, make pictures) followed by scoring: what
//! varies between the real-image protocol ([`crate::evaluation::protocol`]: Inception and
//! CLIP on trained Stable Diffusion models) and the toy world's
//! ([`crate::toy::protocol`]: every method trained on the toy base model, measured by the
//! probes) is a [`Protocol`] implementation. The engine around it is shared:
//!
//! - [`generate`]: one resumable generator (pictures on disk are not made again; every file
//!   is written atomically);
//! - [`table`]: one table model, rendered to Markdown, HTML and JSON;
//! - [`plan`](mod@plan): the job list as JSON, deterministic shards (`--shard i/N`), the records a
//!   finished job leaves and Slurm / Ray submission files;
//! - [`run`], [`run_shard`] and [`merge`]: a single process runs every job then merges;
//!   on a cluster each shard runs its slice and one merge builds the same tables from what
//!   the shards wrote.
//!
//! Scoring goes through [`Scorer`]: one model's pictures for one style in, metric columns
//! out. Inception/CLIP and the toy probes are its two implementations; style descriptors
//! (CSD, DINO) fit as a third over the real-image protocol's cells.

pub mod generate;
pub mod plan;
pub mod table;

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::progress::Progress;
pub use plan::{Job, JobKind, JobRecord, Launch, PlanFile, Shard};
pub use table::{Column, Note, Report, ReportFiles, Row, Table};

/// Scores one cell of a protocol (one model's pictures for one style).
pub trait Scorer {
    /// What a cell hands over: picture files and their references, or pictures in memory.
    type Cell;
    /// The scores of one cell.
    type Scores;
    /// The table columns the scores fill, in order.
    fn columns(&self) -> Vec<Column>;
    /// Scores one cell.
    fn score(&mut self, cell: &Self::Cell, progress: &mut dyn Progress) -> Result<Self::Scores>;
    /// One value per [`Self::columns`] entry (`None`: not measured).
    fn values(&self, scores: &Self::Scores) -> Vec<Option<f64>>;
}

/// What varies between protocols: the job list, how one job is done, and the scoring that
/// turns the finished jobs into a report.
pub trait Protocol {
    /// The protocol's description of one job (written into `plan/jobs.json`).
    type Work: Serialize;
    /// What scoring returns besides the report.
    type Output;
    /// The tables' file stem (`protocol`, `toy-protocol`).
    fn stem(&self) -> &'static str;
    /// The output folder.
    fn out(&self) -> &Path;
    /// Checks the inputs before anything is written.
    fn check(&self) -> Result<()>;
    /// Every job, in a fixed order (the order shards slice).
    fn jobs(&self) -> Result<Vec<Job<Self::Work>>>;
    /// What the merge scores, one line per cell, in table order.
    fn scoring(&self) -> Vec<String>;
    /// Does one job, reusing what is on disk; returns the pictures made now.
    fn run_job(&mut self, job: &Job<Self::Work>, progress: &mut dyn Progress) -> Result<usize>;
    /// Whether everything `job` makes is on disk.
    fn is_done(&self, job: &Job<Self::Work>) -> bool;
    /// Scores the finished jobs (`made[i]`: pictures job `i` made when it last ran) into
    /// the report, without making anything.
    fn score(
        &mut self,
        jobs: &[Job<Self::Work>],
        made: &[usize],
        progress: &mut dyn Progress,
    ) -> Result<(Report, Self::Output)>;
}

/// Runs every job in this process, then [`merge`]s.
pub fn run<P: Protocol>(
    p: &mut P,
    progress: &mut dyn Progress,
) -> Result<(ReportFiles, P::Output)> {
    p.check()?;
    let jobs = p.jobs()?;
    run_jobs(p, &jobs, progress)?;
    merge_jobs(p, &jobs, progress)
}

/// Runs slice `shard` of the jobs. With `launch`, first writes `plan/jobs.json` (the same
/// file from every shard), so that `merge` can find the protocol again.
pub fn run_shard<P: Protocol>(
    p: &mut P,
    shard: Shard,
    launch: Option<&Launch>,
    progress: &mut dyn Progress,
) -> Result<Vec<String>> {
    p.check()?;
    let jobs = p.jobs()?;
    if let Some(launch) = launch {
        check_same_plan(p, &jobs, shard)?;
        write_plan_file(p, &jobs, launch)?;
    }
    let mine = &jobs[shard.range(jobs.len())];
    tracing::info!("shard {shard}: {} of {} jobs", mine.len(), jobs.len());
    run_jobs(p, mine, progress)?;
    Ok(mine.iter().map(|j| j.id.clone()).collect())
}

/// Builds the tables from what the jobs left on disk (after every shard finished): the
/// same files a single-process [`run`] writes.
pub fn merge<P: Protocol>(
    p: &mut P,
    progress: &mut dyn Progress,
) -> Result<(ReportFiles, P::Output)> {
    p.check()?;
    let jobs = p.jobs()?;
    merge_jobs(p, &jobs, progress)
}

/// The files [`plan()`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanFiles {
    /// `plan/jobs.json`.
    pub jobs: std::path::PathBuf,
    /// `plan/shards.sbatch`.
    pub slurm_array: std::path::PathBuf,
    /// `plan/merge.sbatch`.
    pub slurm_merge: std::path::PathBuf,
    /// `plan/submit-slurm.sh`.
    pub slurm_submit: std::path::PathBuf,
    /// `plan/ray_submit.py`.
    pub ray: std::path::PathBuf,
    /// How many jobs.
    pub job_count: usize,
}

/// Writes the job list and the Slurm and Ray files that run it in `launch.shards` shards.
pub fn plan<P: Protocol>(p: &P, launch: &Launch) -> Result<PlanFiles> {
    p.check()?;
    if launch.shards == 0 {
        return Err(Error::InvalidRequest(
            "a plan needs at least one shard".into(),
        ));
    }
    let jobs = p.jobs()?;
    let out = p.out();
    let dir = plan::plan_dir(out);
    let files = PlanFiles {
        jobs: write_plan_file(p, &jobs, launch)?,
        slurm_array: dir.join("shards.sbatch"),
        slurm_merge: dir.join("merge.sbatch"),
        slurm_submit: dir.join("submit-slurm.sh"),
        ray: dir.join("ray_submit.py"),
        job_count: jobs.len(),
    };
    styleforge_models::files::write(&files.slurm_array, plan::slurm_array(launch, out))?;
    styleforge_models::files::write(&files.slurm_merge, plan::slurm_merge(launch, out))?;
    styleforge_models::files::write(&files.slurm_submit, plan::slurm_submit())?;
    styleforge_models::files::write(&files.ray, plan::ray_submit(launch))?;
    make_executable(&files.slurm_submit)?;
    Ok(files)
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = std::fs::metadata(path)
        .map_err(styleforge_models::files::at(path))?
        .permissions();
    perm.set_mode(perm.mode() | 0o111);
    std::fs::set_permissions(path, perm).map_err(styleforge_models::files::at(path))?;
    Ok(())
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> Result<()> {
    Ok(())
}

/// Refuses a shard whose jobs are not those of the plan already in the output folder: two
/// protocols writing into one folder would mix their pictures and tables.
fn check_same_plan<P: Protocol>(p: &P, jobs: &[Job<P::Work>], shard: Shard) -> Result<()> {
    if !plan::plan_file(p.out()).is_file() {
        return Ok(());
    }
    let existing = plan::read_plan(p.out())?;
    let ids: Vec<&str> = existing
        .jobs
        .iter()
        .filter_map(|j| j.get("id").and_then(|id| id.as_str()))
        .collect();
    let ours: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    if existing.protocol != p.stem() || ids != ours || existing.launch.shards != shard.count {
        return Err(Error::Protocol {
            path: plan::plan_file(p.out()),
            message: format!(
                "this output folder was planned for another protocol ({} jobs in {} shards; \
                 this one has {} jobs in {} shards): use another --out, or run \
                 `styleforge protocol plan` with these inputs first",
                ids.len(),
                existing.launch.shards,
                ours.len(),
                shard.count
            ),
        });
    }
    Ok(())
}

fn write_plan_file<P: Protocol>(
    p: &P,
    jobs: &[Job<P::Work>],
    launch: &Launch,
) -> Result<std::path::PathBuf> {
    let shards = (0..launch.shards)
        .map(|index| {
            let s = Shard {
                index,
                count: launch.shards,
            };
            jobs[s.range(jobs.len())]
                .iter()
                .map(|j| j.id.clone())
                .collect()
        })
        .collect();
    let file = PlanFile {
        protocol: p.stem().to_string(),
        launch: launch.clone(),
        jobs: jobs.iter().collect::<Vec<_>>(),
        shards,
        merge: p.scoring(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|source| Error::Json {
        what: "the protocol's plan".into(),
        source,
    })?;
    let path = plan::plan_file(p.out());
    styleforge_models::files::write(&path, text)?;
    Ok(path)
}

fn run_jobs<P: Protocol>(
    p: &mut P,
    jobs: &[Job<P::Work>],
    progress: &mut dyn Progress,
) -> Result<()> {
    styleforge_models::files::create_dir_all(p.out())?;
    for job in jobs {
        tracing::info!("{}", job.what);
        let made = p.run_job(job, progress)?;
        plan::write_record(p.out(), &job.id, JobRecord { made })?;
    }
    Ok(())
}

fn merge_jobs<P: Protocol>(
    p: &mut P,
    jobs: &[Job<P::Work>],
    progress: &mut dyn Progress,
) -> Result<(ReportFiles, P::Output)> {
    let unfinished: Vec<&Job<P::Work>> = jobs.iter().filter(|j| !p.is_done(j)).collect();
    if !unfinished.is_empty() {
        let count = plan::read_plan(p.out())
            .map(|f| f.launch.shards)
            .unwrap_or(1)
            .max(1);
        let list: Vec<String> = unfinished
            .iter()
            .take(8)
            .map(|j| {
                let i = jobs.iter().position(|x| x.id == j.id).unwrap_or(0);
                format!("{} (shard {})", j.id, Shard::of(i, jobs.len(), count))
            })
            .collect();
        return Err(Error::Protocol {
            path: p.out().to_path_buf(),
            message: format!(
                "{} of {} jobs have not finished: {}{}; run their shards (or the protocol \
                 without --shard) to the end, then merge",
                unfinished.len(),
                jobs.len(),
                list.join(", "),
                if unfinished.len() > list.len() {
                    ", …"
                } else {
                    ""
                }
            ),
        });
    }
    let made: Vec<usize> = jobs
        .iter()
        .map(|j| plan::read_record(p.out(), &j.id).map_or(0, |r| r.made))
        .collect();
    let (report, output) = p.score(jobs, &made, progress)?;
    let files = table::write_report(p.out(), p.stem(), &report)?;
    Ok((files, output))
}

/// File-name safe version of a label (`Single-StyleForge` → `single-styleforge`).
pub fn slug(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "model".into()
    } else {
        out
    }
}
