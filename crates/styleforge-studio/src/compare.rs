//! The Compare page: several runs side by side — their settings, loss curves, last
//! validation grids, and the evaluation reports found in their folders (`metrics.json`
//! and `report.html` of `styleforge eval` or `styleforge protocol`, written with `--out`
//! inside the run).

use std::path::Path;

use serde::Serialize;

use crate::runs::{effective_config, view, RunView};

/// One evaluation report found in a run folder.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The folder holding it, relative to the run.
    pub dir: String,
    /// The numbers of its `metrics.json`, as `key` or `key.sub` → value.
    pub metrics: Vec<(String, f64)>,
    /// The URL of its `report.html`, when there is one.
    pub html: Option<String>,
}

/// One column of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    /// The run as the Runs page shows it.
    pub run: RunView,
    /// The settings that tell runs apart.
    pub settings: Vec<(String, String)>,
    /// Its reports.
    pub reports: Vec<Report>,
}

/// The columns for runs `names` of `runs`.
pub fn compare(runs: &Path, names: &[String]) -> Vec<Column> {
    names
        .iter()
        .filter(|n| crate::newrun::check_name(n).is_ok() && crate::runs::is_run(&runs.join(n)))
        .map(|name| {
            let root = runs.join(name);
            let settings = effective_config(&styleforge::RunDir::new(&root))
                .map(|c| {
                    vec![
                        ("method".into(), c.method.name().to_string()),
                        ("base".into(), c.base.display().to_string()),
                        ("steps".into(), c.steps.to_string()),
                        ("learning rate".into(), format!("{:e}", c.adamw.lr)),
                        ("resolution".into(), c.resolution.to_string()),
                        ("seed".into(), c.seed.to_string()),
                        (
                            "tokens".into(),
                            c.concepts
                                .iter()
                                .map(|k| k.token.clone())
                                .collect::<Vec<_>>()
                                .join(", "),
                        ),
                    ]
                })
                .unwrap_or_default();
            Column {
                run: view(runs, name, false, 0),
                settings,
                reports: reports(runs, name),
            }
        })
        .collect()
}

/// The reports under run `name` (three folder levels deep at most).
fn reports(runs: &Path, name: &str) -> Vec<Report> {
    let root = runs.join(name);
    let mut found = Vec::new();
    let mut stack = vec![(root.clone(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let metrics = dir.join("metrics.json");
        let html = dir.join("report.html");
        if metrics.is_file() || html.is_file() {
            let rel = dir
                .strip_prefix(&root)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut numbers = Vec::new();
            if let Some(v) = std::fs::read_to_string(&metrics)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            {
                flatten("", &v, 0, &mut numbers);
                numbers.sort_by(|a, b| a.0.cmp(&b.0));
            }
            let prefix = if rel.is_empty() {
                String::new()
            } else {
                format!("{rel}/")
            };
            found.push(Report {
                html: html
                    .is_file()
                    .then(|| format!("/files/{name}/{prefix}report.html")),
                dir: rel,
                metrics: numbers,
            });
        }
        if depth < 3 {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.filter_map(|e| e.ok()) {
                    let p = e.path();
                    let skip = ["checkpoints", "cache", "aux", "model", "base-model"]
                        .iter()
                        .any(|s| depth == 0 && e.file_name() == *s);
                    if p.is_dir() && !skip {
                        stack.push((p, depth + 1));
                    }
                }
            }
        }
    }
    found.sort_by(|a, b| a.dir.cmp(&b.dir));
    found
}

fn flatten(prefix: &str, v: &serde_json::Value, depth: usize, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x));
            }
        }
        serde_json::Value::Object(map) if depth < 2 => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, depth + 1, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_in_a_run_folder_are_found_with_their_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        let eval = tmp.path().join("a/eval");
        std::fs::create_dir_all(&eval).unwrap();
        std::fs::create_dir_all(tmp.path().join("a/studio")).unwrap();
        std::fs::write(
            eval.join("metrics.json"),
            r#"{"fid": 12.5, "clip": {"t": 0.3, "name": "x"}, "list": [1]}"#,
        )
        .unwrap();
        std::fs::write(eval.join("report.html"), "<html>").unwrap();
        let cols = compare(tmp.path(), &["a".to_string(), "../x".to_string()]);
        assert_eq!(cols.len(), 1);
        let r = &cols[0].reports[0];
        assert_eq!(r.dir, "eval");
        assert_eq!(r.html.as_deref(), Some("/files/a/eval/report.html"));
        assert_eq!(
            r.metrics,
            vec![("clip.t".to_string(), 0.3), ("fid".to_string(), 12.5)]
        );
    }
}
