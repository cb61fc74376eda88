//! [`LineChart`]: one or more named series of (x, y) points drawn as lines (or, added with
//! [`LineChart::scatter`], as unconnected markers: a scatter plot), with round
//! ticks, grid lines, a legend, an optional log-scale y axis and an optional second y axis
//! on the right (e.g. the learning rate beside the loss).
//!
//! Points whose x or y is NaN or infinite (or, on a log axis, not positive) are skipped and
//! break the line there; a point with no neighbour is drawn as a small square. A chart with
//! no usable point at all still renders, with its frame and the words "no data".

use std::path::Path;

use image::{Rgb, RgbImage};

use super::draw::{draw_line, fill_rect, stroke_rect, Rect};
use super::text::{draw_text, draw_text_vertical, line_height, text_width, truncate_to_width};
use crate::error::Result;

/// Eight colours that tell apart well on white (Tableau 10), for series.
pub const PALETTE: [Rgb<u8>; 8] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([127, 127, 127]),
];

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([25, 25, 25]);
const AXIS: Rgb<u8> = Rgb([70, 70, 70]);
const TICK_LABEL: Rgb<u8> = Rgb([60, 60, 60]);
const GRID: Rgb<u8> = Rgb([226, 226, 226]);
const MINOR_GRID: Rgb<u8> = Rgb([242, 242, 242]);
const LEGEND_FRAME: Rgb<u8> = Rgb([200, 200, 200]);
const TICK_LEN: u32 = 5;

/// One named series.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    color: Rgb<u8>,
    secondary: bool,
    /// Whether consecutive points are joined (false: markers only).
    lines: bool,
}

/// A line chart, built series by series and rendered at any size.
///
/// ```
/// use styleforge::report::{LineChart, PALETTE};
///
/// let loss: Vec<(f64, f64)> = (1..=100).map(|s| (s as f64, 1.0 / s as f64)).collect();
/// let picture = LineChart::new("training", "step", "loss")
///     .series("loss", &loss, PALETTE[0])
///     .log_y(true)
///     .render(640, 400);
/// assert_eq!(picture.dimensions(), (640, 400));
/// ```
#[derive(Debug, Clone)]
pub struct LineChart {
    title: String,
    x_label: String,
    y_label: String,
    y2_label: String,
    log_y: bool,
    series: Vec<Series>,
}

impl LineChart {
    /// An empty chart with a title and axis labels (any may be empty).
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            y2_label: String::new(),
            log_y: false,
            series: Vec::new(),
        }
    }

    /// Adds a series on the left y axis. Its name goes in the legend (an empty name keeps
    /// it out).
    pub fn series(
        mut self,
        name: impl Into<String>,
        points: &[(f64, f64)],
        color: Rgb<u8>,
    ) -> Self {
        self.series.push(Series {
            name: name.into(),
            points: points.to_vec(),
            color,
            secondary: false,
            lines: true,
        });
        self
    }

    /// Adds a series on the left y axis drawn as unconnected square markers (a scatter
    /// plot), named in the legend like a line series.
    pub fn scatter(
        mut self,
        name: impl Into<String>,
        points: &[(f64, f64)],
        color: Rgb<u8>,
    ) -> Self {
        self.series.push(Series {
            name: name.into(),
            points: points.to_vec(),
            color,
            secondary: false,
            lines: false,
        });
        self
    }

    /// Adds a series on a second, linear y axis drawn on the right, labelled `axis_label`
    /// (the label of the first such series is used).
    pub fn secondary_series(
        mut self,
        name: impl Into<String>,
        axis_label: impl Into<String>,
        points: &[(f64, f64)],
        color: Rgb<u8>,
    ) -> Self {
        if self.y2_label.is_empty() {
            self.y2_label = axis_label.into();
        }
        self.series.push(Series {
            name: name.into(),
            points: points.to_vec(),
            color,
            secondary: true,
            lines: true,
        });
        self
    }

    /// Uses a logarithmic left y axis (non-positive values are then skipped).
    pub fn log_y(mut self, log: bool) -> Self {
        self.log_y = log;
        self
    }

    /// Draws the chart at `width` × `height` pixels (at least 120 × 90 are used).
    pub fn render(&self, width: u32, height: u32) -> RgbImage {
        let (width, height) = (width.max(120), height.max(90));
        let ts = 1;
        let title_scale = if width >= 400 { 2 } else { 1 };
        let lh = line_height(ts);
        let mut img = RgbImage::from_pixel(width, height, BACKGROUND);

        let usable = |s: &Series, (x, y): (f64, f64)| {
            x.is_finite() && y.is_finite() && (s.secondary || !self.log_y || y > 0.0)
        };
        let (mut xs, mut ys, mut y2s) = (Vec::new(), Vec::new(), Vec::new());
        for s in &self.series {
            for &p in s.points.iter().filter(|&&p| usable(s, p)) {
                xs.push(p.0);
                if s.secondary {
                    y2s.push(p.1)
                } else {
                    ys.push(p.1)
                }
            }
        }
        // Markers are squares around their point: keep those at the extremes inside the frame.
        if self.series.iter().any(|s| !s.lines) {
            let widen = |v: &mut Vec<f64>| {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if hi > lo {
                    v.extend([lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)]);
                }
            };
            widen(&mut xs);
            if !self.log_y {
                widen(&mut ys);
            }
        }
        let has_data = !xs.is_empty();
        let has_y2 = self.series.iter().any(|s| s.secondary);

        // Layout, outside in.
        let pad = 10;
        let mut top = pad;
        if !self.title.is_empty() {
            let title = truncate_to_width(&self.title, width - 2 * pad, title_scale);
            let x = (width - text_width(&title, title_scale)) / 2;
            draw_text(&mut img, x as i32, top as i32, &title, INK, title_scale);
            top += line_height(title_scale) + 6;
        } else {
            top += lh / 2;
        }
        let bottom_text = lh + TICK_LEN + 4 + if self.x_label.is_empty() { 0 } else { lh + 4 };
        let plot_h_guess = height.saturating_sub(top + bottom_text + pad).max(20);
        let y_axis = Axis::fit(&ys, self.log_y, target_ticks(plot_h_guess, 45));
        let y2_axis = has_y2.then(|| Axis::fit(&y2s, false, target_ticks(plot_h_guess, 45)));
        let label_of = |a: &Axis, t: &Tick| {
            if t.major {
                a.format(t.value)
            } else {
                String::new()
            }
        };
        let y_labels: Vec<String> = y_axis.ticks.iter().map(|t| label_of(&y_axis, t)).collect();
        let y2_labels: Vec<String> = y2_axis
            .as_ref()
            .map(|a| a.ticks.iter().map(|t| label_of(a, t)).collect())
            .unwrap_or_default();
        let widest =
            |labels: &[String]| labels.iter().map(|l| text_width(l, ts)).max().unwrap_or(0);
        let left = pad
            + if self.y_label.is_empty() { 0 } else { lh + 4 }
            + widest(&y_labels)
            + TICK_LEN
            + 4;
        let right = pad
            + if has_y2 {
                widest(&y2_labels)
                    + TICK_LEN
                    + 4
                    + if self.y2_label.is_empty() { 0 } else { lh + 4 }
            } else {
                text_width("0000", ts) / 2
            };
        let bottom = bottom_text + pad;
        let plot = Rect::new(
            left as i32,
            top as i32,
            width.saturating_sub(left + right).max(10),
            height.saturating_sub(top + bottom).max(10),
        );
        let x_axis = Axis::fit(&xs, false, target_ticks(plot.width, 90));

        // Grid lines, frame, ticks and their labels.
        let px = |x: f64| plot.x + (x_axis.frac(x) * (plot.width - 1) as f64).round() as i32;
        let py = |a: &Axis, y: f64| {
            plot.bottom() - 1 - (a.frac(y) * (plot.height - 1) as f64).round() as i32
        };
        for t in &y_axis.ticks {
            let y = py(&y_axis, t.value);
            let color = if t.major { GRID } else { MINOR_GRID };
            draw_line(&mut img, (plot.x, y), (plot.right() - 1, y), color, 1, plot);
        }
        for t in &x_axis.ticks {
            let x = px(t.value);
            draw_line(&mut img, (x, plot.y), (x, plot.bottom() - 1), GRID, 1, plot);
        }
        stroke_rect(
            &mut img,
            Rect::new(plot.x - 1, plot.y - 1, plot.width + 2, plot.height + 2),
            AXIS,
        );
        let canvas = Rect::of(&img);
        let every_y = thinning(&y_axis.ticks, |v| py(&y_axis, v), lh);
        let mut major_index = 0;
        for (t, label) in y_axis.ticks.iter().zip(&y_labels) {
            let y = py(&y_axis, t.value);
            let len = if t.major { TICK_LEN } else { TICK_LEN / 2 + 1 } as i32;
            draw_line(
                &mut img,
                (plot.x - 1 - len, y),
                (plot.x - 2, y),
                AXIS,
                1,
                canvas,
            );
            if t.major {
                major_index += 1;
            }
            if t.major && (major_index - 1) % every_y == 0 {
                let x = plot.x - 1 - TICK_LEN as i32 - 3 - text_width(label, ts) as i32;
                draw_text(&mut img, x, y - (lh as i32 - 4) / 2, label, TICK_LABEL, ts);
            }
        }
        if let Some(a2) = &y2_axis {
            let every = thinning(&a2.ticks, |v| py(a2, v), lh);
            for (i, (t, label)) in a2.ticks.iter().zip(&y2_labels).enumerate() {
                let y = py(a2, t.value);
                draw_line(
                    &mut img,
                    (plot.right() + 1, y),
                    (plot.right() + TICK_LEN as i32, y),
                    AXIS,
                    1,
                    canvas,
                );
                if i % every == 0 {
                    let x = plot.right() + TICK_LEN as i32 + 4;
                    draw_text(&mut img, x, y - (lh as i32 - 4) / 2, label, TICK_LABEL, ts);
                }
            }
        }
        // X tick labels, thinned until they no longer touch.
        let x_labels: Vec<(i32, String)> = x_axis
            .ticks
            .iter()
            .filter(|t| t.major)
            .map(|t| (px(t.value), x_axis.format(t.value)))
            .collect();
        let mut every = 1;
        while every < x_labels.len() {
            let kept: Vec<&(i32, String)> = x_labels.iter().step_by(every).collect();
            let fits = kept.windows(2).all(|w| {
                let half = |l: &String| text_width(l, ts) as i32 / 2;
                w[1].0 - w[0].0 > half(&w[0].1) + half(&w[1].1) + 8
            });
            if fits {
                break;
            }
            every += 1;
        }
        for (i, (x, label)) in x_labels.iter().enumerate() {
            draw_line(
                &mut img,
                (*x, plot.bottom() + 1),
                (*x, plot.bottom() + TICK_LEN as i32),
                AXIS,
                1,
                canvas,
            );
            if i % every == 0 {
                let lx = (x - text_width(label, ts) as i32 / 2)
                    .clamp(0, (width - text_width(label, ts)) as i32);
                draw_text(
                    &mut img,
                    lx,
                    plot.bottom() + TICK_LEN as i32 + 3,
                    label,
                    TICK_LABEL,
                    ts,
                );
            }
        }
        // Axis labels.
        if !self.x_label.is_empty() {
            let label = truncate_to_width(&self.x_label, plot.width, ts);
            let x = plot.x + (plot.width as i32 - text_width(&label, ts) as i32) / 2;
            let y = plot.bottom() + TICK_LEN as i32 + 3 + lh as i32 + 4;
            draw_text(&mut img, x, y, &label, INK, ts);
        }
        if !self.y_label.is_empty() {
            let label = truncate_to_width(&self.y_label, plot.height, ts);
            let y = plot.y + (plot.height as i32 + text_width(&label, ts) as i32) / 2;
            draw_text_vertical(&mut img, pad as i32, y, &label, INK, ts);
        }
        if has_y2 && !self.y2_label.is_empty() {
            let label = truncate_to_width(&self.y2_label, plot.height, ts);
            let y = plot.y + (plot.height as i32 + text_width(&label, ts) as i32) / 2;
            draw_text_vertical(&mut img, (width - pad - lh) as i32 + 2, y, &label, INK, ts);
        }

        if !has_data {
            let msg = "no data";
            let x = plot.x + (plot.width as i32 - text_width(msg, 2) as i32) / 2;
            let y = plot.y + (plot.height as i32 - line_height(2) as i32) / 2;
            draw_text(&mut img, x, y, msg, TICK_LABEL, 2);
        }

        // The series, in the order added (later ones on top), as runs of usable points.
        let mut drawn: Vec<(i32, i32)> = Vec::new();
        for s in &self.series {
            let axis = if s.secondary {
                y2_axis.as_ref().unwrap_or(&y_axis)
            } else {
                &y_axis
            };
            if !s.lines {
                for &p in s.points.iter().filter(|&&p| usable(s, p)) {
                    let (x, y) = (px(p.0), py(axis, p.1));
                    fill_rect(&mut img, Rect::new(x - 4, y - 4, 9, 9), s.color);
                    stroke_rect(&mut img, Rect::new(x - 4, y - 4, 9, 9), INK);
                    drawn.push((x, y));
                }
                continue;
            }
            let mut run: Vec<(i32, i32)> = Vec::new();
            let mut flush = |run: &mut Vec<(i32, i32)>, img: &mut RgbImage| {
                match run.len() {
                    0 => {}
                    1 => fill_rect(img, Rect::new(run[0].0 - 2, run[0].1 - 2, 5, 5), s.color),
                    _ => {
                        for w in run.windows(2) {
                            draw_line(img, w[0], w[1], s.color, 2, plot);
                        }
                    }
                }
                drawn.append(run);
            };
            for &p in &s.points {
                if usable(s, p) {
                    run.push((px(p.0), py(axis, p.1)));
                } else {
                    flush(&mut run, &mut img);
                }
            }
            flush(&mut run, &mut img);
        }

        // Legend, in the plot corner that hides the fewest points.
        let named: Vec<&Series> = self.series.iter().filter(|s| !s.name.is_empty()).collect();
        let swatch = 16;
        let legend_w = swatch
            + 14
            + named
                .iter()
                .map(|s| text_width(&s.name, ts))
                .max()
                .unwrap_or(0);
        let legend_fits =
            named.len() as u32 * lh + 20 <= plot.height && legend_w.min(160) + 12 <= plot.width;
        if has_data && !named.is_empty() && legend_fits {
            let max_name = plot
                .width
                .saturating_sub(swatch + 24)
                .max(text_width("...", ts));
            let names: Vec<String> = named
                .iter()
                .map(|s| truncate_to_width(&s.name, max_name, ts))
                .collect();
            let w = swatch + 14 + names.iter().map(|n| text_width(n, ts)).max().unwrap_or(0);
            let h = names.len() as u32 * lh + 8;
            let m = 6;
            let corners = [
                (plot.right() - m - w as i32, plot.y + m),
                (plot.x + m, plot.y + m),
                (plot.right() - m - w as i32, plot.bottom() - m - h as i32),
                (plot.x + m, plot.bottom() - m - h as i32),
            ];
            let hidden = |&(x, y): &(i32, i32)| {
                let r = Rect::new(x, y, w, h);
                drawn.iter().filter(|&&(dx, dy)| r.contains(dx, dy)).count()
            };
            let &(lx, ly) = corners
                .iter()
                .min_by_key(|c| hidden(c))
                .expect("four corners");
            let r = Rect::new(lx, ly, w, h);
            fill_rect(&mut img, r, BACKGROUND);
            stroke_rect(&mut img, r, LEGEND_FRAME);
            for (i, (s, name)) in named.iter().zip(&names).enumerate() {
                let y = ly + 4 + (i as u32 * lh) as i32;
                let mid = y + (lh as i32 - 4) / 2;
                if s.lines {
                    fill_rect(&mut img, Rect::new(lx + 6, mid - 1, swatch, 3), s.color);
                } else {
                    let sq = Rect::new(lx + 6 + swatch as i32 / 2 - 4, mid - 4, 9, 9);
                    fill_rect(&mut img, sq, s.color);
                    stroke_rect(&mut img, sq, INK);
                }
                draw_text(&mut img, lx + 6 + swatch as i32 + 6, y, name, INK, ts);
            }
        }
        img
    }

    /// Draws the chart and writes it as a PNG (atomically; see [`crate::image_io::save_png`]).
    pub fn save(&self, path: &Path, width: u32, height: u32) -> Result<()> {
        crate::image_io::save_png(&self.render(width, height), path)
    }
}

/// A training-loss chart: the raw loss per step in a light colour, its trailing moving
/// average over `window` steps on top, and, when given, the learning rate on a second
/// axis. The loss axis is logarithmic when the loss spans more than a factor of 20.
pub fn loss_curve(
    losses: &[(f64, f64)],
    window: usize,
    learning_rates: Option<&[(f64, f64)]>,
) -> LineChart {
    let finite: Vec<f64> = losses
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log = !finite.is_empty() && hi / lo > 20.0;
    let mut chart = LineChart::new("Training loss", "step", "loss")
        .series("loss", losses, Rgb([166, 199, 232]))
        .log_y(log);
    if window > 1 && losses.len() > 1 {
        let name = format!("moving average ({window} steps)");
        chart = chart.series(name, &moving_average(losses, window), PALETTE[0]);
    }
    if let Some(lr) = learning_rates {
        chart = chart.secondary_series("learning rate", "learning rate", lr, PALETTE[1]);
    }
    chart
}

/// The trailing moving average of `points` over `window` points (at least 1): each output
/// point keeps its x and averages the finite y values among it and the `window - 1` points
/// before it. Points with a non-finite x or y are left out of the output and the averages.
pub fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let window = window.max(1);
    let clean: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut sum = 0.0;
    let mut out = Vec::with_capacity(clean.len());
    for (i, &(x, y)) in clean.iter().enumerate() {
        sum += y;
        if i >= window {
            sum -= clean[i - window].1;
        }
        let n = (i + 1).min(window);
        out.push((x, sum / n as f64));
    }
    out
}

/// Label every how-many-th major tick so that labels `line` pixels tall, placed by
/// `position`, keep apart.
fn thinning(ticks: &[Tick], position: impl Fn(f64) -> i32, line: u32) -> usize {
    let ys: Vec<i32> = ticks
        .iter()
        .filter(|t| t.major)
        .map(|t| position(t.value))
        .collect();
    (1..ys.len().max(1))
        .find(|&k| {
            let kept: Vec<i32> = ys.iter().step_by(k).copied().collect();
            kept.windows(2)
                .all(|w| (w[0] - w[1]).abs() >= line as i32 + 2)
        })
        .unwrap_or(ys.len().max(1))
}

/// How many ticks suit an axis `length` pixels long with about `spacing` pixels apart.
fn target_ticks(length: u32, spacing: u32) -> usize {
    ((length / spacing.max(1)) as usize).clamp(2, 10)
}

/// A tick: its value and whether it is labelled (minor ticks only get a grid line).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tick {
    value: f64,
    major: bool,
}

/// An axis range with its ticks.
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<Tick>,
    /// Linear axes: the tick step (labels show as many decimals as it needs).
    step: f64,
}

impl Axis {
    /// A range covering `values` (finite, and positive on a log axis), widened to round
    /// tick values; 0 to 1 (1 to 10 on a log axis) when there are none.
    fn fit(values: &[f64], log: bool, target: usize) -> Self {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if log {
            if values.is_empty() {
                Self::log_axis(1.0, 10.0)
            } else {
                Self::log_axis(lo, hi)
            }
        } else if values.is_empty() {
            Self::linear_axis(0.0, 1.0, target)
        } else {
            Self::linear_axis(lo, hi, target)
        }
    }

    fn linear_axis(mut lo: f64, mut hi: f64, target: usize) -> Self {
        if hi - lo <= f64::EPSILON * hi.abs().max(lo.abs()).max(1e-300) {
            let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            lo -= d;
            hi += d;
        }
        let step = nice_step((hi - lo) / (target.max(2) - 1) as f64);
        let first = (lo / step).floor();
        let last = (hi / step).ceil();
        let ticks = (0..=(last - first) as i64)
            .map(|i| Tick {
                value: clean_zero((first + i as f64) * step),
                major: true,
            })
            .collect();
        Self {
            lo: first * step,
            hi: last * step,
            log: false,
            ticks,
            step,
        }
    }

    /// A log axis from the round value at or below `lo` to the one at or above `hi`.
    /// Ticks: 1..9 × 10^k within a decade or less, 1, 2, 5 × 10^k up to two decades,
    /// powers of ten beyond (every second, third ... power when there are many), with
    /// minor grid lines at the in-between multiples.
    fn log_axis(lo: f64, hi: f64) -> Self {
        let (llo, lhi) = (lo.log10(), hi.log10());
        let span = lhi - llo;
        let mantissas: &[f64] = if span <= 1.0 {
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        } else if span <= 2.0 {
            &[1.0, 2.0, 5.0]
        } else {
            &[1.0]
        };
        let decade_step = ((span / 8.0).ceil() as i32).max(1);
        let e_lo = llo.floor() as i32;
        let e_hi = lhi.ceil() as i32;
        let mut candidates: Vec<Tick> = Vec::new();
        for e in e_lo..=e_hi {
            for m in 1..=9 {
                let major =
                    mantissas.contains(&(m as f64)) && (m != 1 || (e - e_lo) % decade_step == 0);
                let major = major && (m == 1 || decade_step == 1);
                let minor_shown = span <= 6.0;
                if major || minor_shown {
                    candidates.push(Tick {
                        value: m as f64 * 10f64.powi(e),
                        major,
                    });
                }
            }
        }
        // Snap the range out to the nearest major ticks around the data.
        let eps = 1e-9;
        let start = candidates
            .iter()
            .rev()
            .find(|t| t.major && t.value <= lo * (1.0 + eps))
            .map(|t| t.value)
            .unwrap_or(10f64.powi(e_lo));
        let end = candidates
            .iter()
            .find(|t| t.major && t.value >= hi * (1.0 - eps))
            .map(|t| t.value)
            .unwrap_or(10f64.powi(e_hi));
        let end = if end <= start { start * 10.0 } else { end };
        let mut ticks: Vec<Tick> = candidates
            .into_iter()
            .filter(|t| t.value >= start * (1.0 - eps) && t.value <= end * (1.0 + eps))
            .collect();
        if !ticks.iter().any(|t| t.value >= end * (1.0 - eps)) {
            ticks.push(Tick {
                value: end,
                major: true,
            });
        }
        Self {
            lo: start,
            hi: end,
            log: true,
            ticks,
            step: 0.0,
        }
    }

    /// Where `v` falls between the ends, 0 to 1.
    fn frac(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// A tick label.
    fn format(&self, v: f64) -> String {
        if self.log {
            format_significant(v)
        } else {
            format_on_step(v, self.step, self.lo.abs().max(self.hi.abs()))
        }
    }
}

/// The round step (1, 2, 2.5 or 5 × 10^k) nearest above `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = if raw.is_finite() && raw > 0.0 {
        raw
    } else {
        1.0
    };
    let base = 10f64.powf(raw.log10().floor());
    let f = raw / base;
    let m = if f <= 1.0 + 1e-9 {
        1.0
    } else if f <= 2.0 + 1e-9 {
        2.0
    } else if f <= 2.5 + 1e-9 {
        2.5
    } else if f <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    m * base
}

fn clean_zero(v: f64) -> f64 {
    if v == 0.0 {
        0.0
    } else {
        v
    }
}

/// `v` with as many decimals as `step` needs; scientific when values are huge or tiny.
fn format_on_step(v: f64, step: f64, magnitude: f64) -> String {
    if magnitude >= 1e6 || (magnitude > 0.0 && magnitude < 1e-3) {
        // Mantissa digits: enough to tell ticks `step` apart at the largest magnitude.
        let digits = (magnitude.log10().floor() - step.log10().floor()).clamp(0.0, 6.0) as usize;
        if v.abs() < step * 1e-6 {
            return "0".into();
        }
        return trim_scientific(&format!("{v:.digits$e}"));
    }
    let mut decimals = 0;
    while decimals < 10 {
        let scaled = step * 10f64.powi(decimals);
        if (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0) {
            break;
        }
        decimals += 1;
    }
    let decimals = decimals as usize;
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// `v` with up to 4 significant digits, plain between 0.001 and 100000, else scientific.
fn format_significant(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if (1e-3..1e5).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        trim_scientific(&format!("{v:.3e}"))
    }
}

/// `2.500e-5` → `2.5e-5`, `1.0e3` → `1e3`.
fn trim_scientific(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) if m.contains('.') => {
            format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_linear_ticks_are_round() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12 * b.abs();
        assert!(close(nice_step(0.7), 1.0));
        assert!(close(nice_step(1.3), 2.0));
        assert!(close(nice_step(23.0), 25.0));
        assert!(close(nice_step(0.031), 0.05));
        let a = Axis::linear_axis(0.13, 0.87, 5);
        assert!(close(a.step, 0.2));
        let values: Vec<String> = a.ticks.iter().map(|t| a.format(t.value)).collect();
        assert_eq!(values, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let a = Axis::linear_axis(0.0, 1000.0, 5);
        let values: Vec<String> = a.ticks.iter().map(|t| a.format(t.value)).collect();
        assert_eq!(values, ["0", "250", "500", "750", "1000"]);
        let a = Axis::linear_axis(-3.0, 3.0, 4);
        assert!(a.ticks.iter().any(|t| a.format(t.value) == "0"));
        // A single value gets a range around it.
        let a = Axis::linear_axis(5.0, 5.0, 5);
        assert!(a.lo < 5.0 && a.hi > 5.0);
        let a = Axis::linear_axis(0.0, 0.0, 5);
        assert!(a.lo < 0.0 && a.hi > 0.0);
        assert_eq!(format_on_step(2.5e-5, 5e-6, 3e-5), "2.5e-5");
        assert_eq!(format_on_step(3e6, 1e6, 4e6), "3e6");
        assert_eq!(format_on_step(1e-20, 2e-5, 1e-4), "0");
    }

    #[test]
    fn scatter_series_are_markers_without_lines() {
        let pts = [(0.1, 0.2), (0.5, 0.9), (0.9, 0.4)];
        let color = PALETTE[3];
        let count = |img: &RgbImage| img.pixels().filter(|p| **p == color).count();
        let scatter = LineChart::new("style vs content", "CSD", "DINO")
            .scatter("LoRA", &pts, color)
            .render(400, 300);
        // Three 7×7 marker interiors, plus the legend's when it has room.
        let n = count(&scatter);
        assert!(n == 3 * 49 || n == 4 * 49, "{n} marker pixels");
        let lines = LineChart::new("", "", "")
            .series("LoRA", &pts, color)
            .render(400, 300);
        assert!(count(&lines) > n, "a line series joins its points");
    }

    #[test]
    fn log_ticks_cover_the_data() {
        let a = Axis::log_axis(0.12, 0.35);
        assert_eq!(a.lo, 0.1);
        assert!((a.hi - 0.4).abs() < 1e-12, "{}", a.hi);
        let labels: Vec<String> = a
            .ticks
            .iter()
            .filter(|t| t.major)
            .map(|t| a.format(t.value))
            .collect();
        assert_eq!(labels, ["0.1", "0.2", "0.3", "0.4"]);
        let a = Axis::log_axis(2e-5, 3.0);
        let labels: Vec<String> = a
            .ticks
            .iter()
            .filter(|t| t.major)
            .map(|t| a.format(t.value))
            .collect();
        assert_eq!(labels, ["1e-5", "1e-4", "0.001", "0.01", "0.1", "1", "10"]);
        let a = Axis::log_axis(1e-30, 1e30);
        assert!(a.ticks.iter().filter(|t| t.major).count() <= 11);
    }

    #[test]
    fn moving_average_skips_non_finite_points() {
        let pts = [
            (1.0, 1.0),
            (2.0, f64::NAN),
            (3.0, 3.0),
            (4.0, 5.0),
            (f64::INFINITY, 1.0),
        ];
        assert_eq!(
            moving_average(&pts, 2),
            vec![(1.0, 1.0), (3.0, 2.0), (4.0, 4.0)]
        );
        assert_eq!(moving_average(&[], 5), vec![]);
    }

    fn count(img: &RgbImage, c: Rgb<u8>) -> usize {
        img.pixels().filter(|p| **p == c).count()
    }

    fn dark(p: &Rgb<u8>) -> bool {
        p.0.iter().all(|&v| v < 80)
    }

    #[test]
    fn chart_saves_decodes_and_draws_lines_labels_and_legend() {
        let loss: Vec<(f64, f64)> = (0..200)
            .map(|s| {
                let s = s as f64;
                (
                    s,
                    0.1 + 0.9 * (-s / 40.0).exp() + 0.05 * (s * 1.7).sin().abs(),
                )
            })
            .chain([(200.0, f64::NAN), (201.0, f64::INFINITY)])
            .collect();
        let lr: Vec<(f64, f64)> = (0..200)
            .map(|s| (s as f64, 1e-4 * (s as f64 / 50.0).min(1.0)))
            .collect();
        let chart = loss_curve(&loss, 20, Some(&lr));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        chart.save(&path, 800, 480).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (800, 480));
        assert_eq!(img, chart.render(800, 480));
        // Both lines are drawn, the average over most of the width.
        assert!(count(&img, PALETTE[0]) > 600, "{}", count(&img, PALETTE[0]));
        assert!(count(&img, PALETTE[1]) > 600);
        let avg_xs: Vec<u32> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| **p == PALETTE[0])
            .map(|(x, _, _)| x)
            .collect();
        let span = avg_xs.iter().max().unwrap() - avg_xs.iter().min().unwrap();
        assert!(span > 500, "average line spans {span} px");
        // The title band has dark text; so do the tick label margins.
        let title_dark = (0..30)
            .flat_map(|y| (0..800).map(move |x| (x, y)))
            .filter(|&(x, y)| dark(img.get_pixel(x, y)));
        assert!(title_dark.count() > 100);
        // Tick labels are small: count their anti-aliased ink, not only solid pixels.
        let left_dark = (30..450)
            .flat_map(|y| (0..40).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&v| v < 160));
        assert!(left_dark.count() > 100);
        let bottom_dark = (455..480)
            .flat_map(|y| (0..800).map(move |x| (x, y)))
            .filter(|&(x, y)| dark(img.get_pixel(x, y)));
        assert!(bottom_dark.count() > 30, "no x axis label");
    }

    #[test]
    fn degenerate_series_still_render() {
        let sizes = [(800, 480), (200, 120), (1, 1)];
        let red = Rgb([255, 0, 0]);
        for (w, h) in sizes {
            let empty = LineChart::new("empty", "x", "y").render(w, h);
            assert!(empty.width() >= w && empty.height() >= h);
            let nan = LineChart::new("nan", "x", "y")
                .series("s", &[(0.0, f64::NAN), (f64::NAN, 1.0)], red)
                .log_y(true);
            let nan = nan.render(w, h);
            assert_eq!(count(&nan, red), 0);
            let one = LineChart::new("one", "x", "y")
                .series("s", &[(3.0, 7.0)], red)
                .render(w, h);
            assert!(count(&one, red) >= 20, "single point not marked");
            let flat = LineChart::new("", "", "")
                .series("", &[(0.0, 1.0), (10.0, 1.0)], red)
                .render(w, h);
            assert!(count(&flat, red) > 10);
        }
        // "no data" text appears in the middle of an empty chart.
        let empty = LineChart::new("", "", "").render(400, 300);
        let middle = (120..180)
            .flat_map(|y| (100..300).map(move |x| (x, y)))
            .filter(|&(x, y)| *empty.get_pixel(x, y) == TICK_LABEL);
        assert!(middle.count() > 50);
        let log_neg = LineChart::new("", "", "")
            .series("s", &[(0.0, -1.0), (1.0, 0.0), (2.0, 5.0)], red)
            .log_y(true)
            .render(300, 200);
        assert!(count(&log_neg, red) >= 20);
    }
}
