//! [`ImageGrid`]: rows × columns of images with a title, row labels on the left, column
//! labels on top and optional captions under each image.
//!
//! Small images are enlarged by an integer factor with nearest neighbour (automatically to
//! about 96 pixels, or as set with [`ImageGrid::cell_scale`]) so that a 32×32 sample stays
//! visible. Images of unequal sizes are centred in cells as large as the largest. Labels
//! are wrapped at spaces to the room they have and cut with `...` when still too long.

use std::path::Path;

use image::{Rgb, RgbImage};

use super::draw::{blit_scaled, fill_rect, stroke_rect, Rect};
use super::text::{draw_text, line_height, text_width, wrap_to_width};
use crate::error::Result;

/// Side in pixels that automatic enlargement aims for.
const AUTO_CELL_SIDE: u32 = 96;
/// Largest automatic enlargement.
const MAX_AUTO_SCALE: u32 = 8;
/// Most lines a column label or caption wraps to.
const MAX_LABEL_LINES: usize = 4;

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const TITLE: Rgb<u8> = Rgb([20, 20, 20]);
const LABEL: Rgb<u8> = Rgb([45, 45, 45]);
const CAPTION: Rgb<u8> = Rgb([95, 95, 95]);
const FRAME: Rgb<u8> = Rgb([190, 190, 190]);
const EMPTY_CELL: Rgb<u8> = Rgb([236, 236, 236]);

/// One row: its label and its cells, each an image and an optional caption.
#[derive(Debug, Clone)]
struct Row {
    label: String,
    cells: Vec<(RgbImage, Option<String>)>,
}

/// A labelled grid of images, built row by row and rendered to one picture.
///
/// ```
/// use image::{Rgb, RgbImage};
/// use styleforge::report::ImageGrid;
///
/// let red = RgbImage::from_pixel(32, 32, Rgb([220, 30, 30]));
/// let blue = RgbImage::from_pixel(32, 32, Rgb([30, 30, 220]));
/// let picture = ImageGrid::new("two seeds")
///     .columns(["seed 1", "seed 2"])
///     .row("before", vec![red.clone(), blue.clone()])
///     .row("after", vec![blue, red])
///     .render();
/// assert!(picture.width() > 2 * 96 && picture.height() > 2 * 96);
/// ```
#[derive(Debug, Clone)]
pub struct ImageGrid {
    title: String,
    columns: Vec<String>,
    rows: Vec<Row>,
    cell_scale: u32,
    text_scale: u32,
}

impl ImageGrid {
    /// An empty grid with a title (may be empty).
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            columns: Vec::new(),
            rows: Vec::new(),
            cell_scale: 0,
            text_scale: 1,
        }
    }

    /// Sets the column labels, drawn above the columns, left to right.
    pub fn columns<I, S>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.columns = labels.into_iter().map(Into::into).collect();
        self
    }

    /// Appends a row of images with a label drawn on its left (may be empty).
    pub fn row(
        mut self,
        label: impl Into<String>,
        images: impl IntoIterator<Item = RgbImage>,
    ) -> Self {
        self.rows.push(Row {
            label: label.into(),
            cells: images.into_iter().map(|img| (img, None)).collect(),
        });
        self
    }

    /// Appends a row of images, each with a caption drawn under it (e.g. its prompt).
    pub fn captioned_row<S: Into<String>>(
        mut self,
        label: impl Into<String>,
        cells: impl IntoIterator<Item = (RgbImage, S)>,
    ) -> Self {
        self.rows.push(Row {
            label: label.into(),
            cells: cells
                .into_iter()
                .map(|(img, c)| (img, Some(c.into())))
                .collect(),
        });
        self
    }

    /// Enlarges every image by `scale` (nearest neighbour). 0, the default, picks the
    /// factor that brings the largest image side near 96 pixels (never shrinking).
    pub fn cell_scale(mut self, scale: u32) -> Self {
        self.cell_scale = scale;
        self
    }

    /// Draws all text `scale` times larger (default 1; the title is twice the labels).
    pub fn text_scale(mut self, scale: u32) -> Self {
        self.text_scale = scale.max(1);
        self
    }

    /// Number of rows added.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row has been added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The enlargement used for the images: the one set, or the automatic one.
    pub fn effective_cell_scale(&self) -> u32 {
        if self.cell_scale > 0 {
            return self.cell_scale;
        }
        let side = self
            .rows
            .iter()
            .flat_map(|r| r.cells.iter())
            .map(|(img, _)| img.width().max(img.height()))
            .max()
            .unwrap_or(0);
        if side == 0 {
            1
        } else {
            AUTO_CELL_SIDE.div_ceil(side).clamp(1, MAX_AUTO_SCALE)
        }
    }

    /// Draws the grid.
    pub fn render(&self) -> RgbImage {
        let ts = self.text_scale;
        let lh = line_height(ts);
        let pad = 10 * ts;
        let gap = 6 * ts;
        let scale = self.effective_cell_scale();

        let cells = self.rows.iter().flat_map(|r| r.cells.iter());
        let cell_w = cells.clone().map(|(i, _)| i.width()).max().unwrap_or(0) * scale;
        let cell_h = cells.map(|(i, _)| i.height()).max().unwrap_or(0) * scale;
        let n_cols = self
            .rows
            .iter()
            .map(|r| r.cells.len())
            .max()
            .unwrap_or(0)
            .max(if self.rows.is_empty() {
                0
            } else {
                self.columns.len()
            }) as u32;

        // Column labels and captions wrap to the cell width; rows keep their own caption room.
        let label_w = cell_w.max(text_width("MMMMMM", ts));
        let col_x_step = label_w + gap;
        let column_lines: Vec<Vec<String>> = (0..n_cols as usize)
            .map(|i| {
                let label = self.columns.get(i).map(String::as_str).unwrap_or("");
                wrap_to_width(label, label_w, ts, MAX_LABEL_LINES)
            })
            .collect();
        let header_lines = column_lines.iter().map(Vec::len).max().unwrap_or(0) as u32;
        let header_h = if header_lines > 0 {
            header_lines * lh + ts * 2
        } else {
            0
        };
        let caption_lines: Vec<Vec<Vec<String>>> = self
            .rows
            .iter()
            .map(|r| {
                r.cells
                    .iter()
                    .map(|(_, c)| match c {
                        Some(c) => wrap_to_width(c, label_w, ts, MAX_LABEL_LINES),
                        None => Vec::new(),
                    })
                    .collect()
            })
            .collect();
        let row_heights: Vec<u32> = caption_lines
            .iter()
            .map(|cells| {
                let lines = cells.iter().map(Vec::len).max().unwrap_or(0) as u32;
                cell_h + if lines > 0 { 3 * ts + lines * lh } else { 0 }
            })
            .collect();

        // Row labels get up to max(cell width, 100) pixels on the left.
        let widest_row_label = self
            .rows
            .iter()
            .map(|r| text_width(&r.label, ts))
            .max()
            .unwrap_or(0);
        let row_label_w = widest_row_label.min(label_w.max(100 * ts));
        let grid_x = pad
            + if row_label_w > 0 {
                row_label_w + gap
            } else {
                0
            };
        let grid_w = if n_cols > 0 {
            n_cols * col_x_step - gap
        } else {
            0
        };
        let title_scale = 2 * ts;
        // The title may widen a narrow grid, up to 720 pixels.
        let title_w = text_width(&self.title, title_scale).min(720 * ts);
        let width = (grid_x + grid_w).max(title_w).max(220 * ts) + 2 * pad;

        let title_lines = wrap_to_width(&self.title, width - 2 * pad, title_scale, 3);
        let title_h = title_lines.len() as u32 * line_height(title_scale);
        let grid_y = pad + title_h + if title_h > 0 { gap } else { 0 } + header_h;
        let body_h = if self.rows.is_empty() {
            lh
        } else {
            row_heights.iter().sum::<u32>() + gap * (self.rows.len() as u32 - 1)
        };
        let height = grid_y + body_h + pad;

        let mut img = RgbImage::from_pixel(width, height, BACKGROUND);
        for (i, line) in title_lines.iter().enumerate() {
            let y = pad + i as u32 * line_height(title_scale);
            draw_text(&mut img, pad as i32, y as i32, line, TITLE, title_scale);
        }
        if self.rows.is_empty() {
            draw_text(
                &mut img,
                pad as i32,
                grid_y as i32,
                "(no images)",
                CAPTION,
                ts,
            );
            return img;
        }

        // Column labels: centred over their column, bottom lines aligned to the images.
        for (c, lines) in column_lines.iter().enumerate() {
            let x0 = grid_x + c as u32 * col_x_step;
            let top = grid_y - header_h + (header_lines - lines.len() as u32) * lh;
            for (i, line) in lines.iter().enumerate() {
                let x = x0 + (label_w - text_width(line, ts)) / 2;
                draw_text(
                    &mut img,
                    x as i32,
                    (top + i as u32 * lh) as i32,
                    line,
                    LABEL,
                    ts,
                );
            }
        }

        let mut y = grid_y;
        for ((row, row_h), captions) in self.rows.iter().zip(&row_heights).zip(&caption_lines) {
            // Row label: wrapped to its column, as many lines as the row has room for,
            // centred on the image.
            if row_label_w > 0 {
                let max_lines = (row_h / lh).max(1) as usize;
                let lines = wrap_to_width(&row.label, row_label_w, ts, max_lines);
                let block = lines.len() as u32 * lh;
                let top = y + cell_h.saturating_sub(block) / 2;
                for (i, line) in lines.iter().enumerate() {
                    let x = pad + row_label_w - text_width(line, ts);
                    draw_text(
                        &mut img,
                        x as i32,
                        (top + i as u32 * lh) as i32,
                        line,
                        LABEL,
                        ts,
                    );
                }
            }
            for c in 0..n_cols as usize {
                let x0 = grid_x + c as u32 * col_x_step + (label_w - cell_w) / 2;
                let cell = Rect::new(x0 as i32, y as i32, cell_w, cell_h);
                match row.cells.get(c) {
                    Some((image, _)) => {
                        let (w, h) = (image.width() * scale, image.height() * scale);
                        let ix = x0 + (cell_w - w) / 2;
                        let iy = y + (cell_h - h) / 2;
                        let frame = Rect::new(ix as i32 - 1, iy as i32 - 1, w + 2, h + 2);
                        stroke_rect(&mut img, frame, FRAME);
                        blit_scaled(&mut img, image, ix as i32, iy as i32, scale);
                    }
                    None => fill_rect(&mut img, cell, EMPTY_CELL),
                }
                if let Some(lines) = captions.get(c) {
                    let x_col = grid_x + c as u32 * col_x_step;
                    for (i, line) in lines.iter().enumerate() {
                        let x = x_col + (label_w - text_width(line, ts)) / 2;
                        let ly = y + cell_h + 3 * ts + i as u32 * lh;
                        draw_text(&mut img, x as i32, ly as i32, line, CAPTION, ts);
                    }
                }
            }
            y += row_h + gap;
        }
        img
    }

    /// Draws the grid and writes it as a PNG (atomically; see [`crate::image_io::save_png`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::image_io::save_png(&self.render(), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(color: Rgb<u8>) -> RgbImage {
        RgbImage::from_fn(32, 32, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                color
            } else {
                Rgb([255, 255, 255])
            }
        })
    }

    fn dark(p: &Rgb<u8>) -> bool {
        p.0.iter().all(|&v| v < 80)
    }

    #[test]
    fn grid_saves_decodes_and_shows_images_and_labels() {
        let red = Rgb([230, 20, 20]);
        let green = Rgb([20, 200, 40]);
        let grid = ImageGrid::new("Samples after 500 steps")
            .columns([
                "seed 1",
                "seed 2",
                "a very long column label that must wrap somewhere",
            ])
            .row("base model", vec![checker(red), checker(red), checker(red)])
            .row("zwx style, lr 1e-4", vec![checker(green), checker(green)]);
        assert_eq!(grid.effective_cell_scale(), 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        grid.save(&path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img, grid.render());
        assert!(
            img.width() >= 3 * 96 && img.height() >= 2 * 96,
            "{:?}",
            img.dimensions()
        );

        // Enlarged images: whole 3x3 blocks of each colour.
        let reds = img.pixels().filter(|p| **p == red).count();
        let greens = img.pixels().filter(|p| **p == green).count();
        assert_eq!(reds, 3 * 32 * 32 / 2 * 9);
        assert_eq!(greens, 2 * 32 * 32 / 2 * 9);
        // Red is in the upper rows, green below it.
        let first_y = |c: Rgb<u8>| img.enumerate_pixels().find(|(_, _, p)| **p == c).unwrap().1;
        assert!(first_y(red) < first_y(green));
        // The title band has dark text; the row label column has text left of the images.
        let title_dark = (0..30).flat_map(|y| (0..img.width()).map(move |x| (x, y)));
        assert!(
            title_dark
                .filter(|&(x, y)| dark(img.get_pixel(x, y)))
                .count()
                > 50
        );
        let first_red_x = img
            .enumerate_pixels()
            .find(|(_, _, p)| **p == red)
            .unwrap()
            .0;
        let left_dark = img
            .enumerate_pixels()
            .filter(|(x, _, p)| *x + 10 < first_red_x && dark(p))
            .count();
        assert!(left_dark > 50, "no row label pixels");
    }

    #[test]
    fn captions_and_odd_sizes_and_empty_grids_render() {
        let small = RgbImage::from_pixel(8, 16, Rgb([0, 0, 255]));
        let big = RgbImage::from_pixel(32, 32, Rgb([0, 255, 0]));
        let grid = ImageGrid::new("").captioned_row(
            "",
            vec![(small, "a tall blue thing"), (big, "a green square")],
        );
        let img = grid.render();
        let blues = img.pixels().filter(|p| **p == Rgb([0, 0, 255])).count();
        assert_eq!(blues, 8 * 16 * 9);
        // Anti-aliased caption ink: grey, between the caption colour and the frame's.
        let caption_ink = |p: &Rgb<u8>| {
            p.0[0] == p.0[1] && p.0[1] == p.0[2] && (CAPTION.0[0]..170).contains(&p.0[0])
        };
        let caption_rows = img
            .enumerate_pixels()
            .filter(|(_, y, p)| *y > 96 && caption_ink(p))
            .count();
        assert!(caption_rows > 20, "no caption pixels below the images");

        let empty = ImageGrid::new("nothing here").render();
        assert!(empty.width() >= 240 && empty.height() > 20);
        assert!(ImageGrid::new("").columns(["a", "b"]).render().width() >= 240);
        let one = ImageGrid::new("x")
            .cell_scale(1)
            .row("r", vec![RgbImage::new(1, 1)]);
        assert_eq!(one.effective_cell_scale(), 1);
        one.render();
    }

    #[test]
    fn unicode_titles_and_labels_are_drawn_whole_inside_the_margins() {
        let white = |p: &Rgb<u8>| p.0 == BACKGROUND.0;
        let long = "café, naïve, 東京, Ωmega: a title long enough to wrap onto a second line \
                    of the picture, so that wrapping is checked too";
        for title in ["café, naïve, 東京, Ωmega", long] {
            let grid = ImageGrid::new(title)
                .columns(["東京", "naïve"])
                .captioned_row("Ωmega", vec![(checker(Rgb([200, 0, 0])), "café 東")]);
            let img = grid.render();
            let (w, h) = img.dimensions();
            let pad = 10;
            // Every title line fits the picture less its margins, nothing is cut.
            let lines = wrap_to_width(title, w - 2 * pad, 2, 3);
            assert_eq!(lines.join(" "), title, "the title was cut: {lines:?}");
            assert!(lines.iter().all(|l| text_width(l, 2) <= w - 2 * pad));
            // No ink in the margins: the title (and all else) stays inside.
            let mut margin_pixels = 0;
            for (x, y, p) in img.enumerate_pixels() {
                if x < pad - 1 || x > w - pad || y < pad - 1 || y > h - pad {
                    margin_pixels += 1;
                    assert!(white(p), "{title:?}: ink at ({x}, {y}) in the margin");
                }
            }
            assert!(margin_pixels > 4 * pad as usize * (w.min(h) as usize - pad as usize));
            // The title band holds ink right up to its measured end on the first line.
            let first = text_width(&lines[0], 2);
            let band = pad..pad + line_height(2);
            let rightmost = img
                .enumerate_pixels()
                .filter(|(_, y, p)| band.contains(y) && !white(p))
                .map(|(x, _, _)| x)
                .max()
                .unwrap();
            assert!(
                rightmost + 6 >= pad + first && rightmost < pad + first,
                "{rightmost}"
            );
        }
    }
}
