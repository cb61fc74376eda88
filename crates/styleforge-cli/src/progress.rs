//! Progress for the library's [`Progress`] reports: indicatif bars on a terminal, plain
//! lines a log file can read otherwise (`nohup`, schedulers, `2> run.log`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use styleforge::progress::{Progress, StepReport};

/// The training loop's phase, whose lines come from [`Progress::step`] (with the loss,
/// learning rate and memory) instead of `advance`.
const TRAINING_PHASE: &str = "training";

/// A plain line is printed at least this often while a phase runs.
const LINE_INTERVAL: Duration = Duration::from_secs(30);

enum Mode {
    Quiet,
    Bars(Option<ProgressBar>),
    Lines(Lines<std::io::Stderr>),
}

/// Draws an indicatif bar per phase when stderr is a terminal, else writes plain lines to
/// it ([`Lines`]); silent when `quiet`.
pub struct Bar {
    mode: Mode,
}

impl Bar {
    /// A reporter for stderr: bars on a terminal, lines otherwise, nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(None)
        } else {
            Mode::Lines(Lines::new(std::io::stderr()))
        };
        Self { mode }
    }
}

impl Progress for Bar {
    fn begin(&mut self, label: &str, total: usize) {
        match &mut self.mode {
            Mode::Quiet => {}
            Mode::Bars(slot) => {
                let bar = ProgressBar::new(total as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_message(label.to_string());
                *slot = Some(bar);
            }
            Mode::Lines(lines) => lines.begin(label, total),
        }
    }

    fn advance(&mut self, n: usize) {
        match &mut self.mode {
            Mode::Quiet => {}
            Mode::Bars(slot) => {
                if let Some(bar) = slot {
                    bar.inc(n as u64);
                }
            }
            Mode::Lines(lines) => lines.advance(n),
        }
    }

    fn finish(&mut self) {
        match &mut self.mode {
            Mode::Quiet => {}
            Mode::Bars(slot) => {
                if let Some(bar) = slot.take() {
                    bar.finish_and_clear();
                }
            }
            Mode::Lines(lines) => lines.finish(),
        }
    }

    fn step(&mut self, report: &StepReport) {
        if let Mode::Lines(lines) = &mut self.mode {
            lines.step(report);
        }
    }
}

/// The phase being reported.
struct Phase {
    label: String,
    total: usize,
    done: usize,
    start: Instant,
    last_line: Instant,
}

/// Plain progress lines: for each unit of the first 10, then every 10th, the last one,
/// and whenever 30 s have passed since the previous line. Training steps print
/// `step 12/1000 | loss 0.1234 | lr 1.00e-6 | 4.52 s/step | eta 1h14m | peak 14.21 GB`,
/// other phases `encoding training images 12/40 | 5s | eta 12s`.
pub struct Lines<W: Write> {
    out: W,
    phase: Option<Phase>,
}

impl<W: Write> Lines<W> {
    /// Lines written to `out`.
    pub fn new(out: W) -> Self {
        Self { out, phase: None }
    }

    fn emit(&mut self, line: &str) {
        // A closed stderr must not stop the run.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    fn begin(&mut self, label: &str, total: usize) {
        let now = Instant::now();
        if label != TRAINING_PHASE {
            self.emit(&format!("{label} 0/{total}"));
        }
        self.phase = Some(Phase {
            label: label.to_string(),
            total,
            done: 0,
            start: now,
            last_line: now,
        });
    }

    fn advance(&mut self, n: usize) {
        let Some(p) = &mut self.phase else {
            return;
        };
        p.done += n;
        if p.label == TRAINING_PHASE || !due(p.done, p.total, p.last_line.elapsed()) {
            return;
        }
        p.last_line = Instant::now();
        let elapsed = p.start.elapsed().as_secs_f64();
        let line = phase_line(&p.label, p.done, p.total, elapsed);
        self.emit(&line);
    }

    fn step(&mut self, report: &StepReport) {
        let Some(p) = &mut self.phase else {
            return;
        };
        // Steps of this phase (a resumed run starts past 0).
        let done = p.done.max(1);
        let remaining = p.total.saturating_sub(p.done);
        // A step skipped for a loss-scale overflow is always reported.
        if !report.skipped && !due(report.step, report.total, p.last_line.elapsed()) {
            return;
        }
        p.last_line = Instant::now();
        let per_step = p.start.elapsed().as_secs_f64() / done as f64;
        let line = step_line(report, per_step * remaining as f64);
        self.emit(&line);
    }

    fn finish(&mut self) {
        if let Some(p) = self.phase.take() {
            let what = if p.label == TRAINING_PHASE {
                format!("{} step{}", p.done, if p.done == 1 { "" } else { "s" })
            } else {
                p.done.to_string()
            };
            let line = format!(
                "{} done: {what} in {}",
                p.label,
                duration(p.start.elapsed().as_secs_f64())
            );
            self.emit(&line);
        }
    }
}

/// Whether unit `done` of `total` gets a line: each of the first 10, then every 10th, the
/// last, and any after 30 s without one.
fn due(done: usize, total: usize, since_last: Duration) -> bool {
    done <= 10 || done.is_multiple_of(10) || done == total || since_last >= LINE_INTERVAL
}

/// `label done/total | elapsed | eta`.
fn phase_line(label: &str, done: usize, total: usize, elapsed_s: f64) -> String {
    let mut line = format!("{label} {done}/{total} | {}", duration(elapsed_s));
    if done > 0 && done < total {
        let eta = elapsed_s / done as f64 * (total - done) as f64;
        line.push_str(&format!(" | eta {}", duration(eta)));
    }
    line
}

/// One training step's line.
fn step_line(r: &StepReport, eta_s: f64) -> String {
    let mut line = format!(
        "step {}/{} | loss {:.4} | lr {:.2e} | {:.2} s/step | eta {}",
        r.step,
        r.total,
        r.loss,
        r.lr,
        r.step_time_s,
        duration(eta_s)
    );
    if let Some(peak) = r.peak_memory_bytes {
        line.push_str(&format!(" | peak {:.2} GB", peak as f64 / 1e9));
    }
    if let Some(scale) = r.loss_scale {
        line.push_str(&format!(" | loss scale {scale}"));
    }
    if r.skipped {
        line.push_str(" | skipped: gradients overflowed");
    }
    line
}

/// `42s`, `12m05s`, `1h14m`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(step: usize) -> StepReport {
        StepReport {
            step,
            total: 1000,
            loss: 0.123456,
            lr: 1e-6,
            step_time_s: 4.518,
            peak_memory_bytes: Some(14_210_000_000),
            loss_scale: None,
            skipped: false,
        }
    }

    #[test]
    fn step_line_format() {
        assert_eq!(
            step_line(&report(12), 4454.0),
            "step 12/1000 | loss 0.1235 | lr 1.00e-6 | 4.52 s/step | eta 1h14m | peak 14.21 GB"
        );
        let no_peak = StepReport {
            peak_memory_bytes: None,
            ..report(3)
        };
        assert_eq!(
            step_line(&no_peak, 42.4),
            "step 3/1000 | loss 0.1235 | lr 1.00e-6 | 4.52 s/step | eta 42s"
        );
        let skipped = StepReport {
            peak_memory_bytes: None,
            loss_scale: Some(32768.0),
            skipped: true,
            ..report(3)
        };
        assert_eq!(
            step_line(&skipped, 42.4),
            "step 3/1000 | loss 0.1235 | lr 1.00e-6 | 4.52 s/step | eta 42s | loss scale 32768 | skipped: gradients overflowed"
        );
        assert_eq!(
            phase_line("encoding training images", 12, 40, 6.0),
            "encoding training images 12/40 | 6s | eta 14s"
        );
        assert_eq!(duration(725.0), "12m05s");
    }

    #[test]
    fn lines_every_step_then_every_tenth() {
        let quick = Duration::from_secs(1);
        let printed: Vec<usize> = (1..=45).filter(|&d| due(d, 45, quick)).collect();
        assert_eq!(printed, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30, 40, 45]);
        assert!(due(13, 45, Duration::from_secs(31)));
    }

    #[test]
    fn lines_written_for_phases_and_steps() {
        let mut lines = Lines::new(Vec::new());
        lines.begin("encoding training images", 3);
        for _ in 0..3 {
            lines.advance(1);
        }
        lines.finish();
        lines.begin(TRAINING_PHASE, 12);
        for step in 1..=12 {
            lines.advance(1);
            lines.step(&StepReport {
                total: 12,
                ..report(step)
            });
        }
        lines.finish();
        let text = String::from_utf8(lines.out).unwrap();
        let all: Vec<&str> = text.lines().collect();
        assert_eq!(all[0], "encoding training images 0/3");
        assert!(all[1].starts_with("encoding training images 1/3 | 0s | eta "));
        assert!(all[3].starts_with("encoding training images 3/3 | 0s"));
        assert!(all[4].starts_with("encoding training images done: 3 in "));
        let steps: Vec<&&str> = all.iter().filter(|l| l.starts_with("step ")).collect();
        // Steps 1-10 and the last (11 is neither).
        assert_eq!(steps.len(), 11, "{text}");
        assert!(steps[10].starts_with("step 12/12 | loss 0.1235"), "{text}");
        assert!(all
            .last()
            .unwrap()
            .starts_with("training done: 12 steps in "));
    }
}
