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
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
