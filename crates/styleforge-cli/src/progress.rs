//! Progress bars for the library's [`Progress`] reports.

use indicatif::{ProgressBar, ProgressStyle};
use styleforge::progress::Progress;

/// Draws an indicatif bar per phase on stderr; silent when `quiet`.
pub struct Bar {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Bar {
    /// A reporter that draws bars unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self { bar: None, quiet }
    }
}

impl Progress for Bar {
    fn begin(&mut self, label: &str, total: usize) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        self.bar = Some(bar);
    }

    fn advance(&mut self, n: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
