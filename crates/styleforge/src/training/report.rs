//! The pictures a run leaves behind: validation grids and the loss curve.

use std::path::Path;

use image::RgbImage;

use super::log::LogEntry;
use crate::error::Result;
use crate::report::ImageGrid;

/// A grid with one row per validation prompt and two columns: with the token, without.
pub fn validation_grid(rows: &[(String, Vec<RgbImage>)], step: usize, path: &Path) -> Result<()> {
    let mut grid = ImageGrid::new(format!("validation at step {step}"))
        .columns(["with the token", "without the token"]);
    for (prompt, images) in rows {
        grid = grid.row(prompt.clone(), images.iter().cloned());
    }
    grid.save(path)
}

/// The loss per step with its moving average (window 20) and the learning rate, as a PNG.
pub fn loss_curve(log: &[LogEntry], path: &Path) -> Result<()> {
    let losses: Vec<(f64, f64)> = log.iter().map(|e| (e.step as f64, e.loss)).collect();
    let lrs: Vec<(f64, f64)> = log.iter().map(|e| (e.step as f64, e.lr)).collect();
    let validation: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|e| Some((e.step as f64, e.val_loss?)))
        .collect();
    let mut chart = crate::report::chart::loss_curve(&losses, 20, Some(&lrs));
    if !validation.is_empty() {
        chart = chart.series("validation loss", &validation, image::Rgb([214, 39, 40]));
    }
    chart.save(path, 800, 450)
}
