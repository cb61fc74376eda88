//! Pictures for people: labelled image grids and line charts, drawn without a plotting
//! library.
//!
//! - [`text`]: anti-aliased text in any script, in the embedded DejaVu Sans
//!   ([`draw_text`], [`text_width`]).
//! - [`draw`]: rectangles, thick lines and nearest-neighbour pasting.
//! - [`grid`]: [`ImageGrid`], rows × columns of images with row, column and cell labels.
//! - [`chart`]: [`LineChart`], named series with ticks, a legend, log scale and a second
//!   y axis; [`loss_curve`] draws a training loss with its moving average.
//!
//! Everything renders to an [`image::RgbImage`]; [`crate::image_io::save_png`] writes one
//! atomically.
//!
//! ```no_run
//! use styleforge::report::{ImageGrid, LineChart, PALETTE};
//! # fn main() -> styleforge::Result<()> {
//! # let (a, b) = (image::RgbImage::new(32, 32), image::RgbImage::new(32, 32));
//! ImageGrid::new("samples")
//!     .columns(["seed 1", "seed 2"])
//!     .row("zwx style", vec![a, b])
//!     .save(std::path::Path::new("grid.png"))?;
//! LineChart::new("training loss", "step", "loss")
//!     .series("loss", &[(1.0, 0.9), (2.0, 0.5), (3.0, 0.4)], PALETTE[0])
//!     .log_y(true)
//!     .save(std::path::Path::new("loss.png"), 800, 480)?;
//! # Ok(())
//! # }
//! ```

pub mod chart;
pub mod draw;
pub mod grid;
pub mod text;

pub use chart::{loss_curve, moving_average, LineChart, PALETTE};
pub use grid::ImageGrid;
pub use text::{draw_text, text_width};
