//! Progress reporting through a small trait, so the library stays quiet and the CLI draws
//! the bars.

/// Receives progress of long work (denoising steps, training steps, feature extraction).
pub trait Progress {
    /// A phase named `label` with `total` units of work begins.
    fn begin(&mut self, label: &str, total: usize) {
        let _ = (label, total);
    }
    /// `n` more units are done.
    fn advance(&mut self, n: usize) {
        let _ = n;
    }
    /// The phase is over.
    fn finish(&mut self) {}
    /// A training step is done (called after its `advance`): what a log line shows.
    fn step(&mut self, report: &StepReport) {
        let _ = report;
    }
}

/// What one finished training step reports to [`Progress::step`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Optimizer steps done in the run (1-based, counting steps before a resume).
    pub step: usize,
    /// The step the run ends at.
    pub total: usize,
    /// Loss of the step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Seconds the step took.
    pub step_time_s: f64,
    /// Peak resident memory of the process so far in bytes (Linux `VmHWM`), if known.
    pub peak_memory_bytes: Option<u64>,
    /// The loss scale of the step (fp16 training).
    pub loss_scale: Option<f64>,
    /// Whether the step was skipped because its gradients overflowed (fp16 training).
    pub skipped: bool,
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
