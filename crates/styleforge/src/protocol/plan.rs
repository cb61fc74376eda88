//! Running a protocol on a cluster: the job list, its deterministic slicing into shards,
//! the record each finished job leaves, and ready-made Slurm and Ray submission files.
//!
//! Everything lives under `<out>/plan/`:
//!
//! ```text
//! plan/jobs.json        the protocol's jobs, which shard runs which, the commands
//! plan/shards.sbatch    a Slurm job array: task i runs `… --shard i/N`
//! plan/merge.sbatch     the Slurm job that builds the tables once every shard is done
//! plan/submit-slurm.sh  submits both, the merge after the array (afterok)
//! plan/ray_submit.py    the same through Ray's job-submission API
//! plan/done/<job>.json  a finished job's record (pictures made)
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use styleforge_models::files;

use crate::error::{Error, Result};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Trains a model (then makes its pictures).
    Train,
    /// Makes pictures.
    Generate,
}

/// One unit of a protocol's work, run by exactly one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job<W> {
    /// A stable name, also the path of its record (`generate/cubism/lora/p0000`).
    pub id: String,
    /// What it does.
    pub kind: JobKind,
    /// The same in words.
    pub what: String,
    /// The protocol's own description of the work.
    pub work: W,
}

/// Slice `index` of `count` (0-based, as `$SLURM_ARRAY_TASK_ID` counts): written `i/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which slice, from 0.
    pub index: usize,
    /// How many slices.
    pub count: usize,
}

impl Shard {
    /// The jobs of this shard among `n`: contiguous, balanced blocks (the first `n mod
    /// count` shards' blocks are not larger, the blocks differ by at most one), so
    /// consecutive jobs of one model mostly stay together.
    pub fn range(&self, n: usize) -> Range<usize> {
        self.index * n / self.count..(self.index + 1) * n / self.count
    }

    /// The shard that runs job `i` of `n`.
    pub fn of(i: usize, n: usize, count: usize) -> Shard {
        let index = (0..count)
            .find(|&s| Shard { index: s, count }.range(n).contains(&i))
            .unwrap_or(0);
        Shard { index, count }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidRequest(format!(
                "`{s}` is not a shard: write i/N with 0 ≤ i < N (e.g. 0/4, as Slurm's \
                 $SLURM_ARRAY_TASK_ID counts)"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// How the shards and the merge are started: the protocol's command line (program first,
/// without `--shard`), the merge's, and the folder they run in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// The protocol command; a shard appends `--shard i/N`.
    pub command: Vec<String>,
    /// The merge command.
    pub merge_command: Vec<String>,
    /// The working folder of both.
    pub cwd: PathBuf,
    /// How many shards.
    pub shards: usize,
}

/// `plan/jobs.json`; `J` is the protocol's [`Job`] type (or a JSON value when read back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile<J> {
    /// The protocol (`protocol`, `toy-protocol`: its tables' file stem).
    pub protocol: String,
    /// How it is launched.
    pub launch: Launch,
    /// The jobs, in slicing order.
    pub jobs: Vec<J>,
    /// The job ids of each shard.
    pub shards: Vec<Vec<String>>,
    /// What the merge does after them (scores, in table order).
    pub merge: Vec<String>,
}

/// The folder of the plan files.
pub fn plan_dir(out: &Path) -> PathBuf {
    out.join("plan")
}

/// `plan/jobs.json`.
pub fn plan_file(out: &Path) -> PathBuf {
    plan_dir(out).join("jobs.json")
}

/// Reads `plan/jobs.json` of `out`, whatever its jobs' details.
pub fn read_plan(out: &Path) -> Result<PlanFile<serde_json::Value>> {
    let path = plan_file(out);
    if !path.is_file() {
        return Err(Error::Protocol {
            path: out.to_path_buf(),
            message: "no plan/jobs.json here: run `styleforge protocol plan …` or the shards \
                      (`styleforge protocol … --shard i/N`) with this --out first"
                .into(),
        });
    }
    let text = files::read_to_string(&path)?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        what: path.display().to_string(),
        source,
    })
}

/// A finished job's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Pictures it made (the rest were on disk already).
    pub made: usize,
}

fn record_path(out: &Path, id: &str) -> PathBuf {
    plan_dir(out).join("done").join(format!("{id}.json"))
}

/// Writes the record of job `id`.
pub fn write_record(out: &Path, id: &str, record: JobRecord) -> Result<()> {
    let text = serde_json::to_string(&record).map_err(|source| Error::Json {
        what: format!("the record of job {id}"),
        source,
    })?;
    Ok(files::write(&record_path(out, id), text)?)
}

/// The record of job `id`, if it finished.
pub fn read_record(out: &Path, id: &str) -> Option<JobRecord> {
    let text = std::fs::read_to_string(record_path(out, id)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Quotes a word for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Words as one POSIX shell line, each quoted where needed.
pub fn shell_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Slurm job array: task `i` runs shard `i/N`.
pub fn slurm_array(launch: &Launch, out: &Path) -> String {
    let n = launch.shards;
    let logs = plan_dir(out).join("logs");
    format!(
        "#!/bin/bash\n\
         # The protocol's shards as a Slurm job array; submit with submit-slurm.sh (which\n\
         # starts the merge after them) or `sbatch shards.sbatch`. Add your cluster's\n\
         # #SBATCH lines (partition, --gres=gpu:1, --time, --mem) below.\n\
         #SBATCH --job-name=styleforge-protocol\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --output={log}\n\
         set -euo pipefail\n\
         cd {cwd}\n\
         {cmd} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\"\n",
        last = n.saturating_sub(1),
        log = shell_quote(&logs.join("shard-%a.log").display().to_string()),
        cwd = shell_quote(&launch.cwd.display().to_string()),
        cmd = shell_line(&launch.command),
    )
}

/// The Slurm job that merges the shards' work into the tables.
pub fn slurm_merge(launch: &Launch, out: &Path) -> String {
    let logs = plan_dir(out).join("logs");
    format!(
        "#!/bin/bash\n\
         # Builds the protocol's tables once every shard has finished (submit-slurm.sh\n\
         # submits it with --dependency=afterok on the array).\n\
         #SBATCH --job-name=styleforge-protocol-merge\n\
         #SBATCH --output={log}\n\
         set -euo pipefail\n\
         cd {cwd}\n\
         {cmd}\n",
        log = shell_quote(&logs.join("merge.log").display().to_string()),
        cwd = shell_quote(&launch.cwd.display().to_string()),
        cmd = shell_line(&launch.merge_command),
    )
}

/// Submits the array, then the merge after it.
pub fn slurm_submit() -> String {
    "#!/bin/bash\n\
     # Submits the shards (a job array) and the merge, which starts when all of them\n\
     # succeeded.\n\
     set -euo pipefail\n\
     here=\"$(cd \"$(dirname \"$0\")\" && pwd)\"\n\
     array=$(sbatch --parsable \"$here/shards.sbatch\")\n\
     sbatch --dependency=afterok:\"${array%%;*}\" \"$here/merge.sbatch\"\n"
        .to_string()
}

fn py_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A Python script that submits every shard through Ray's job-submission API, waits for
/// them, then submits the merge.
pub fn ray_submit(launch: &Launch) -> String {
    let cwd = shell_quote(&launch.cwd.display().to_string());
    let shards: Vec<String> = (0..launch.shards)
        .map(|i| {
            let line = format!(
                "cd {cwd} && {} --shard {i}/{}",
                shell_line(&launch.command),
                launch.shards
            );
            format!("    {},\n", py_str(&line))
        })
        .collect();
    let merge = format!("cd {cwd} && {}", shell_line(&launch.merge_command));
    format!(
        "\"\"\"Submits the protocol's shards as Ray jobs, waits for them, then the merge.\n\
         \n\
         Run with RAY_ADDRESS set to the cluster's dashboard (http://head:8265); every node\n\
         needs the styleforge binary and the output folder on a shared file system.\n\
         Ask for an accelerator per shard with entrypoint_num_gpus below.\n\
         \"\"\"\n\
         import time\n\
         \n\
         from ray.job_submission import JobStatus, JobSubmissionClient\n\
         \n\
         SHARDS = [\n{shards}]\n\
         MERGE = {merge}\n\
         \n\
         \n\
         def wait(client, ids):\n\
         \x20   done = {{JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}}\n\
         \x20   while True:\n\
         \x20       status = {{i: client.get_job_status(i) for i in ids}}\n\
         \x20       if all(s in done for s in status.values()):\n\
         \x20           return status\n\
         \x20       time.sleep(10)\n\
         \n\
         \n\
         def main():\n\
         \x20   client = JobSubmissionClient()\n\
         \x20   ids = [client.submit_job(entrypoint=e, entrypoint_num_gpus=0) for e in SHARDS]\n\
         \x20   failed = [i for i, s in wait(client, ids).items() if s != JobStatus.SUCCEEDED]\n\
         \x20   if failed:\n\
         \x20       raise SystemExit(f\"shards failed: {{failed}}; rerun them, then the merge\")\n\
         \x20   merge = client.submit_job(entrypoint=MERGE)\n\
         \x20   print(merge, wait(client, [merge])[merge])\n\
         \n\
         \n\
         if __name__ == \"__main__\":\n\
         \x20   main()\n",
        shards = shards.concat(),
        merge = py_str(&merge),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_job_once_in_order() {
        for n in [0usize, 1, 2, 5, 7, 16] {
            for count in 1..=5 {
                let mut seen = Vec::new();
                for index in 0..count {
                    seen.extend(Shard { index, count }.range(n));
                }
                assert_eq!(seen, (0..n).collect::<Vec<_>>(), "{n} jobs, {count} shards");
                for i in 0..n {
                    assert!(Shard::of(i, n, count).range(n).contains(&i));
                }
            }
        }
    }

    #[test]
    fn shards_parse_as_slurm_counts_them() {
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn scripts_quote_their_words() {
        let launch = Launch {
            command: vec![
                "styleforge".into(),
                "protocol".into(),
                "--out".into(),
                "a b".into(),
            ],
            merge_command: vec!["styleforge".into(), "protocol".into(), "merge".into()],
            cwd: PathBuf::from("/w"),
            shards: 3,
        };
        let s = slurm_array(&launch, Path::new("/o"));
        assert!(s.contains("#SBATCH --array=0-2\n"), "{s}");
        assert!(
            s.contains("styleforge protocol --out 'a b' --shard \"${SLURM_ARRAY_TASK_ID}/3\""),
            "{s}"
        );
        let r = ray_submit(&launch);
        assert!(r.contains("--shard 2/3\""), "{r}");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
