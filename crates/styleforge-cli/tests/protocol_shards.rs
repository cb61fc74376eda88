//! `styleforge protocol plan`, `--shard i/N` and `protocol merge` as a cluster runs them:
//! three shards of a tiny toy protocol as separate processes, then the merge, whose tables
//! (Markdown and JSON) must equal a single-process run's byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_styleforge"));
    c.env("RAYON_NUM_THREADS", "1");
    c
}

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/toy")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The smallest toy protocol with three jobs: the base model's pictures and two 1-step
/// runs, one token-prompt pair, one sampling step.
fn toy_args(out: &Path) -> Vec<String> {
    let a = assets();
    [
        "--toy",
        "--held-out",
        "pointillist",
        "--methods",
        "styleforge,textual-inversion",
        "--no-ablations",
        "--train-steps",
        "1",
        "--eval-prompts",
        "2",
        "--steps",
        "1",
    ]
    .map(String::from)
    .into_iter()
    .chain([
        "--base".into(),
        a.join("base-model").display().to_string(),
        "--probes".into(),
        a.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ])
    .collect()
}

fn protocol(args: &[String]) -> Output {
    bin()
        .arg("-q")
        .arg("protocol")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn spawn_shard(args: &[String], shard: &str) -> Child {
    bin()
        .arg("-q")
        .arg("protocol")
        .args(args)
        .args(["--shard", shard])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

fn merge(out: &Path) -> Output {
    bin()
        .args(["-q", "protocol", "merge", "--out"])
        .arg(out)
        .output()
        .expect("the binary runs")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn three_shards_merge_into_the_single_process_tables() {
    let tmp = tempfile::tempdir().unwrap();
    // Both runs use the same output path (the first is moved away), so that the paths the
    // JSON records are the same too.
    let out = tmp.path().join("protocol");
    let args = toy_args(&out);

    let o = protocol(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let single_md = read(&out.join("toy-protocol.md"));
    let single_json = read(&out.join("toy-protocol.json"));
    assert!(single_md.contains("| Textual Inversion |"), "{single_md}");
    std::fs::rename(&out, tmp.path().join("single")).unwrap();

    let mut plan_args = vec!["plan".to_string()];
    plan_args.extend(args.iter().cloned());
    plan_args.extend(["--shards".into(), "3".into()]);
    let o = protocol(&plan_args);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_str(&read(&out.join("plan/jobs.json"))).unwrap();
    let ids: Vec<&str> = plan["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "generate/base",
            "train/pointillist/styleforge",
            "train/pointillist/textual-inversion"
        ]
    );
    let per_shard: Vec<usize> = plan["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_array().unwrap().len())
        .collect();
    assert_eq!(per_shard, [1, 1, 1]);
    let sbatch = read(&out.join("plan/shards.sbatch"));
    assert!(sbatch.contains("#SBATCH --array=0-2"), "{sbatch}");
    assert!(
        sbatch.contains("--shard \"${SLURM_ARRAY_TASK_ID}/3\""),
        "{sbatch}"
    );
    assert!(
        !sbatch.contains(" plan ") && !sbatch.contains("--shards"),
        "{sbatch}"
    );
    assert!(read(&out.join("plan/merge.sbatch")).contains("protocol merge --out"));
    let ray = read(&out.join("plan/ray_submit.py"));
    assert!(
        ray.contains("JobSubmissionClient") && ray.contains("--shard 2/3"),
        "{ray}"
    );
    assert!(
        !out.join("toy-protocol.md").exists(),
        "a plan makes no table"
    );

    // Two shards at once, then a merge that must refuse: the third has not run.
    let running: Vec<Child> = ["0/3", "1/3"]
        .iter()
        .map(|s| spawn_shard(&args, s))
        .collect();
    for child in running {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = merge(&out);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("train/pointillist/textual-inversion (shard 2/3)"),
        "{err}"
    );
    assert!(!out.join("toy-protocol.md").exists());

    let o = spawn_shard(&args, "2/3").wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for id in &ids {
        assert!(
            out.join(format!("plan/done/{id}.json")).is_file(),
            "no record of {id}"
        );
    }
    let o = merge(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out.join("toy-protocol.md")), single_md);
    assert_eq!(read(&out.join("toy-protocol.json")), single_json);
    assert!(out.join("samples-pointillist.png").is_file());

    // A shard of another protocol (one method fewer) is refused in this folder.
    let other: Vec<String> = args
        .iter()
        .map(|a| {
            if a == "styleforge,textual-inversion" {
                "styleforge".to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let o = spawn_shard(&other, "0/3").wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("another protocol"), "{}", stderr(&o));
}

#[test]
fn bad_shards_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    for bad in ["3/3", "1", "0/0"] {
        let mut args = toy_args(&out);
        args.extend(["--shard".into(), bad.into()]);
        let o = protocol(&args);
        assert!(!o.status.success(), "--shard {bad}");
        assert!(stderr(&o).contains("i/N"), "{}", stderr(&o));
    }
    assert!(!out.exists());
    let o = merge(&out);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("plan/jobs.json"), "{}", stderr(&o));
}
