//! Text in pictures: DejaVu Sans, embedded in the library (`assets/fonts/`, Bitstream Vera
//! licence), rasterised anti-aliased with `ab_glyph`, so a prompt in any script reads as
//! written.
//!
//! Sizes come in integer `scale`s: at scale 1 the font's ascent-to-descent height is
//! [`PX_PER_SCALE`] pixels (an em of about 12 pixels) and a line [`LINE_PER_SCALE`]
//! pixels; everything grows linearly with the scale. A character the font lacks (CJK,
//! emoji, …) is drawn as its code point in hexadecimal inside a box, the convention of
//! browsers and GNU Unifont, so `東` shows as a box holding `6771`: never a `?`.
//!
//! Layout is one line at a time: [`text_width`] measures exactly what [`draw_text`] and
//! [`draw_text_vertical`] draw (advances and kerning; glyph ink stays inside the advance up
//! to a fraction of a pixel), and [`wrap_to_width`] / [`truncate_to_width`] fit text to a
//! width with those measures.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, GlyphId, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

/// The embedded font file.
static FONT_FILE: &[u8] = include_bytes!("../../../../assets/fonts/DejaVuSans.ttf");

/// The font's ascent-to-descent height in pixels at scale 1.
pub const PX_PER_SCALE: f32 = 14.0;
/// The distance from one line to the next in pixels at scale 1.
pub const LINE_PER_SCALE: u32 = 15;
/// Exponent applied to glyph coverage before blending (below 1 darkens thin strokes).
const COVERAGE_GAMMA: f32 = 0.7;
/// Size of the hexadecimal digits in a missing character's box, relative to the text.
const HEX_SIZE: f32 = 0.7;

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_FILE).expect("the embedded font parses"))
}

/// One thing a character becomes: a glyph of the font, or a boxed code point.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Item {
    Glyph(GlyphId),
    Missing(u32),
}

/// Sizes at one scale.
#[derive(Debug, Clone, Copy)]
struct Metrics {
    scale: u32,
    px: PxScale,
    /// Baseline's distance below the line's top, whole pixels.
    baseline: f32,
    line: u32,
}

impl Metrics {
    fn new(scale: u32) -> Self {
        let scale = scale.max(1);
        let px = PxScale::from(PX_PER_SCALE * scale as f32);
        let ascent = font().as_scaled(px).ascent();
        Self {
            scale,
            px,
            baseline: (ascent + 0.5 * scale as f32).round(),
            line: LINE_PER_SCALE * scale,
        }
    }

    fn hex_px(&self) -> PxScale {
        PxScale::from(self.px.y * HEX_SIZE)
    }
}

fn item(c: char) -> Item {
    let c = if c.is_whitespace() { ' ' } else { c };
    let id = font().glyph_id(c);
    if id.0 == 0 {
        Item::Missing(c as u32)
    } else {
        Item::Glyph(id)
    }
}

/// Format characters with no ink of their own (zero-width space and joiners, direction
/// marks, variation selectors, the byte-order mark): skipped rather than boxed.
fn invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x200B..=0x200F | 0x2060..=0x2064 | 0xFE00..=0xFE0F | 0xFEFF | 0xE0100..=0xE01EF
    )
}

fn hex(code: u32) -> String {
    format!("{code:04X}")
}

/// Width of `text` at `px` in the font alone (every character present).
fn plain_width(text: &str, px: PxScale) -> f32 {
    let f = font().as_scaled(px);
    text.chars().map(|c| f.h_advance(f.glyph_id(c))).sum()
}

/// A missing character's box: its inner padding, stroke and outer gap, and its advance.
fn missing_box(code: u32, m: &Metrics) -> (f32, f32, f32, f32) {
    let s = m.scale as f32;
    let (pad, stroke, gap) = (1.0 * s, 1.0 * s, 1.0 * s);
    let digits = plain_width(&hex(code), m.hex_px());
    (
        pad,
        stroke,
        gap,
        (digits + 2.0 * (pad + stroke + gap)).ceil(),
    )
}

/// Each item of `text` with its pen position, and the total advance.
fn layout(text: &str, m: &Metrics) -> (Vec<(Item, f32)>, f32) {
    let f = font().as_scaled(m.px);
    let mut pen = 0.0f32;
    let mut prev: Option<GlyphId> = None;
    let mut items = Vec::with_capacity(text.len());
    for c in text.chars().filter(|&c| !invisible(c)) {
        let it = item(c);
        match it {
            Item::Glyph(id) => {
                if let Some(p) = prev {
                    pen += f.kern(p, id);
                }
                items.push((it, pen));
                pen += f.h_advance(id);
                prev = Some(id);
            }
            Item::Missing(code) => {
                items.push((it, pen));
                pen += missing_box(code, m).3;
                prev = None;
            }
        }
    }
    (items, pen)
}

/// Width in pixels of `text` drawn on one line at `scale` (scale 0 counts as 1).
pub fn text_width(text: &str, scale: u32) -> u32 {
    layout(text, &Metrics::new(scale)).1.ceil() as u32
}

/// Distance in pixels from one line of text to the next at `scale` (scale 0 counts as 1).
pub fn line_height(scale: u32) -> u32 {
    Metrics::new(scale).line
}

/// A line of text as coverage in [0, 1], `width` × `height` (the line's box).
struct Coverage {
    width: u32,
    height: u32,
    alpha: Vec<f32>,
}

impl Coverage {
    fn add(&mut self, x: i64, y: i64, a: f32) {
        if x >= 0 && y >= 0 && x < self.width as i64 && y < self.height as i64 {
            let v = &mut self.alpha[y as usize * self.width as usize + x as usize];
            *v = (*v + a).min(1.0);
        }
    }

    /// Draws the glyph `id` at `px` with its origin (baseline, left) at (`x`, `y`).
    fn glyph(&mut self, id: GlyphId, px: PxScale, x: f32, y: f32) {
        let g = id.with_scale_and_position(px, point(x, y));
        if let Some(outlined) = font().outline_glyph(g) {
            let b = outlined.px_bounds();
            outlined.draw(|gx, gy, a| {
                self.add(b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64, a);
            });
        }
    }

    /// A missing character: a box one line tall (less a pixel of margin per scale) holding
    /// its code point in hex, left edge at `x`.
    fn missing(&mut self, code: u32, x: f32, m: &Metrics) {
        let (pad, stroke, gap, advance) = missing_box(code, m);
        let hex_px = m.hex_px();
        let f = font().as_scaled(hex_px);
        // Digits are as tall as capitals, about 0.785 of DejaVu's ascent.
        let digits_h = f.ascent() * 0.785;
        let s = m.scale as i64;
        let (left, right) = (
            (x + gap).round() as i64,
            (x + advance - gap).round() as i64 - 1,
        );
        let (top, bottom) = (s, m.line as i64 - 1 - s);
        let t = stroke as i64;
        for yy in top..=bottom {
            for xx in left..=right {
                if xx < left + t || xx > right - t || yy < top + t || yy > bottom - t {
                    self.add(xx, yy, 1.0);
                }
            }
        }
        let baseline = ((top + bottom + 1) as f32 + digits_h) / 2.0;
        let mut pen = left as f32 + stroke + pad;
        for c in hex(code).chars() {
            let id = f.glyph_id(c);
            self.glyph(id, hex_px, pen, baseline.round());
            pen += f.h_advance(id);
        }
    }
}

/// Rasterises `text` on one line at `scale`.
fn rasterize(text: &str, scale: u32) -> Coverage {
    let m = Metrics::new(scale);
    let (items, advance) = layout(text, &m);
    let width = advance.ceil() as u32;
    let mut cov = Coverage {
        width,
        height: m.line,
        alpha: vec![0.0; width as usize * m.line as usize],
    };
    for (it, pen) in items {
        match it {
            // Whole-pixel origins keep every glyph's stems equally sharp.
            Item::Glyph(id) => cov.glyph(id, m.px, pen.round(), m.baseline),
            Item::Missing(code) => cov.missing(code, pen, &m),
        }
    }
    cov
}

/// Blends `color` over the pixel (`x`, `y`) with coverage `a`, if it lies inside the image.
/// Coverage is raised to [`COVERAGE_GAMMA`] first: unhinted stems at small sizes straddle
/// pixels, and plain linear coverage draws them grey and faint.
fn blend(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>, a: f32) {
    if a <= 0.0 || x < 0 || y < 0 || x >= img.width() as i64 || y >= img.height() as i64 {
        return;
    }
    let a = a.powf(COVERAGE_GAMMA);
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (dst, src) in p.0.iter_mut().zip(color.0) {
        *dst = (*dst as f32 * (1.0 - a) + src as f32 * a).round() as u8;
    }
}

/// Draws `text` on one line with the top-left corner of its line box at (`x`, `y`), at
/// `scale` (0 counts as 1), anti-aliased over what is there. Parts outside the image are
/// clipped. Returns the width drawn, as [`text_width`].
pub fn draw_text(
    img: &mut RgbImage,
    x: i32,
    y: i32,
    text: &str,
    color: Rgb<u8>,
    scale: u32,
) -> u32 {
    let cov = rasterize(text, scale);
    for cy in 0..cov.height {
        for cx in 0..cov.width {
            let a = cov.alpha[(cy * cov.width + cx) as usize];
            blend(img, x as i64 + cx as i64, y as i64 + cy as i64, color, a);
        }
    }
    cov.width
}

/// Draws `text` turned a quarter turn anticlockwise (reading bottom to top), as for a
/// y-axis label: the text's top-left corner, before turning, lands at the bottom-left of
/// the drawn area, so it occupies `x .. x + line_height` and `y - text_width .. y`.
pub fn draw_text_vertical(
    img: &mut RgbImage,
    x: i32,
    y: i32,
    text: &str,
    color: Rgb<u8>,
    scale: u32,
) -> u32 {
    let cov = rasterize(text, scale);
    for cy in 0..cov.height {
        for cx in 0..cov.width {
            let a = cov.alpha[(cy * cov.width + cx) as usize];
            blend(
                img,
                x as i64 + cy as i64,
                y as i64 - 1 - cx as i64,
                color,
                a,
            );
        }
    }
    cov.width
}

/// Shortens `text` to fit `max_width` pixels at `scale`, ending it with `...` when cut.
/// Returns it unchanged when it fits; may return an empty string when not even `...` fits.
pub fn truncate_to_width(text: &str, max_width: u32, scale: u32) -> String {
    if text_width(text, scale) <= max_width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let cut = |keep: usize| {
        chars[..keep]
            .iter()
            .collect::<String>()
            .trim_end()
            .to_string()
            + "..."
    };
    // The longest prefix that fits with its `...` (widths grow with the prefix).
    let (mut lo, mut hi) = (0usize, chars.len());
    if text_width(&cut(0), scale) > max_width {
        let mut dots = "...".to_string();
        while !dots.is_empty() && text_width(&dots, scale) > max_width {
            dots.pop();
        }
        return dots;
    }
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if text_width(&cut(mid), scale) <= max_width {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    cut(lo)
}

/// Breaks `text` into lines no wider than `max_width` pixels at `scale`, at spaces where
/// it can, then after hyphens, and inside words that are still too long on their own (a
/// line holds at least one character). At most `max_lines` lines are returned (0 means no
/// limit); when the text needs more, the last one ends in `...`.
pub fn wrap_to_width(text: &str, max_width: u32, scale: u32, max_lines: usize) -> Vec<String> {
    let fits = |s: &str| text_width(s, scale) <= max_width;
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        // "Single-StyleForge" may break as "Single-" / "StyleForge".
        for (i, part) in word.split_inclusive('-').enumerate() {
            let sep = if i == 0 { " " } else { "" };
            let joined = if current.is_empty() {
                part.to_string()
            } else {
                format!("{current}{sep}{part}")
            };
            if fits(&joined) {
                current = joined;
                continue;
            }
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            // The part alone: split it where it overflows.
            let mut rest: Vec<char> = part.chars().collect();
            while !rest.is_empty() {
                let mut n = 1;
                while n < rest.len() && fits(&rest[..=n].iter().collect::<String>()) {
                    n += 1;
                }
                let piece: String = rest.drain(..n).collect();
                if rest.is_empty() {
                    current = piece;
                } else {
                    lines.push(piece);
                }
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    if max_lines > 0 && lines.len() > max_lines {
        lines.truncate(max_lines);
        let last = lines.last_mut().expect("max_lines > 0");
        *last = truncate_to_width(&format!("{last}..."), max_width, scale);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
    const BLACK: Rgb<u8> = Rgb([0, 0, 0]);

    /// The picture of `text` alone on a white line.
    fn picture(text: &str, scale: u32) -> RgbImage {
        let mut img =
            RgbImage::from_pixel(text_width(text, scale).max(1), line_height(scale), WHITE);
        draw_text(&mut img, 0, 0, text, BLACK, scale);
        img
    }

    fn inked(img: &RgbImage) -> Vec<(u32, u32)> {
        img.enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] < 128)
            .map(|(x, y, _)| (x, y))
            .collect()
    }

    #[test]
    fn the_embedded_font_has_the_latin_greek_and_cyrillic_letters() {
        for c in "AZaz09éïçßØŒΩωЖж€…".chars() {
            assert!(matches!(item(c), Item::Glyph(_)), "{c:?}");
        }
        assert_eq!(item('東'), Item::Missing(0x6771));
        // A zero-width joiner or variation selector adds nothing.
        assert_eq!(text_width("a\u{200d}b\u{fe0f}", 1), text_width("ab", 1));
        assert_eq!(item('\t'), item(' '));
    }

    #[test]
    fn a_non_ascii_prompt_draws_distinct_visible_glyphs() {
        let prompt = "café, naïve, 東京, Ωmega";
        let img = picture(prompt, 1);
        assert!(
            inked(&img).len() > 100,
            "{} inked pixels",
            inked(&img).len()
        );
        // Every non-space character leaves ink of its own, and different characters
        // differ: é from e, ï from i, Ω from O, 東 from 京.
        let mut seen: Vec<(char, RgbImage)> = Vec::new();
        for c in prompt.chars().filter(|c| !c.is_whitespace()) {
            let glyph = picture(&c.to_string(), 2);
            assert!(!inked(&glyph).is_empty(), "{c:?} drew nothing");
            if let Some((other, _)) = seen.iter().find(|(o, g)| *o != c && *g == glyph) {
                panic!("{c:?} and {other:?} draw the same picture");
            }
            seen.push((c, glyph));
        }
        for (a, b) in [
            ('e', 'é'),
            ('i', 'ï'),
            ('O', 'Ω'),
            ('東', '京'),
            ('?', '東'),
        ] {
            assert_ne!(
                picture(&a.to_string(), 1),
                picture(&b.to_string(), 1),
                "{a} {b}"
            );
        }
        // Anti-aliased: some pixels are neither ink nor paper.
        assert!(img.pixels().any(|p| p.0[0] > 30 && p.0[0] < 225));
    }

    #[test]
    fn missing_characters_are_boxed_code_points() {
        let img = picture("東", 2);
        let ink = inked(&img);
        let (x0, x1) = (
            ink.iter().map(|p| p.0).min().unwrap(),
            ink.iter().map(|p| p.0).max().unwrap(),
        );
        let (y0, y1) = (
            ink.iter().map(|p| p.1).min().unwrap(),
            ink.iter().map(|p| p.1).max().unwrap(),
        );
        // The box's four sides are solid.
        assert!(
            (x0..=x1).all(|x| img.get_pixel(x, y0).0[0] < 128 && img.get_pixel(x, y1).0[0] < 128)
        );
        assert!(
            (y0..=y1).all(|y| img.get_pixel(x0, y).0[0] < 128 && img.get_pixel(x1, y).0[0] < 128)
        );
        // It holds the digits "6771": the same ink as drawing them at the digit size.
        let inside = ink
            .iter()
            .filter(|&&(x, y)| x > x0 + 2 && x < x1 - 2 && y > y0 + 2 && y < y1 - 2);
        assert!(inside.count() > 20, "no digits in the box");
        assert!(text_width("東", 1) > text_width("6", 1) * 3);
    }

    #[test]
    fn width_and_drawing_agree() {
        assert_eq!(text_width("", 2), 0);
        assert!(
            text_width("A", 1) >= 6 && text_width("A", 1) <= 10,
            "{}",
            text_width("A", 1)
        );
        assert!(text_width("AB", 1) > text_width("A", 1));
        let (one, three) = (text_width("Hello, world", 1), text_width("Hello, world", 3));
        assert!(three.abs_diff(3 * one) <= 3, "{one} {three}");
        assert_eq!(line_height(0), line_height(1));
        assert_eq!(line_height(2), 2 * line_height(1));
        let mut img = RgbImage::from_pixel(120, 40, WHITE);
        let text = "Hij! çà 東";
        let w = draw_text(&mut img, 5, 3, text, BLACK, 1);
        assert_eq!(w, text_width(text, 1));
        let ink = inked(&img);
        assert!(!ink.is_empty());
        // The ink lies in the measured box: x .. x + width, y .. y + line height.
        for &(x, y) in &ink {
            assert!(x >= 5 && x < 5 + w, "x {x} outside 5..{}", 5 + w);
            assert!(y >= 3 && y < 3 + line_height(1), "y {y}");
        }
        let right = ink.iter().map(|p| p.0).max().unwrap();
        assert!(
            right + 4 >= 5 + w,
            "the last character is drawn ({right}, width {w})"
        );
        // Drawing off the image is clipped, not a panic.
        draw_text(&mut img, -100, -100, "clipped", BLACK, 4);
        draw_text(&mut img, 110, 35, "clipped", BLACK, 4);
        draw_text_vertical(&mut img, 115, 5, "clipped", BLACK, 1);
    }

    #[test]
    fn vertical_text_occupies_the_turned_box() {
        let mut img = RgbImage::from_pixel(30, 80, WHITE);
        let w = draw_text_vertical(&mut img, 4, 70, "Ab 東", BLACK, 1);
        let ink = inked(&img);
        assert!(ink.len() > 20);
        for (x, y) in ink {
            assert!((4..4 + line_height(1)).contains(&x), "x {x}");
            assert!(y < 70 && y >= 70 - w, "y {y}");
        }
    }

    #[test]
    fn wrapping_and_truncation_fit_the_width() {
        let text = "a person standing in a field under a bright yellow sun, café, 東京";
        let mut checked = 0;
        for width in [12u32, 20, 47, 96, 300] {
            let lines = wrap_to_width(text, width, 1, 0);
            assert!(!lines.is_empty());
            for line in &lines {
                checked += 1;
                let one_char = line.chars().count() == 1;
                assert!(
                    text_width(line, 1) <= width || one_char,
                    "{line:?} wider than {width}"
                );
            }
        }
        assert!(checked > 10);
        let lines = wrap_to_width(text, 96, 1, 0);
        assert_eq!(lines.join(" "), text);
        let two = wrap_to_width(text, 96, 1, 2);
        assert_eq!(two.len(), 2);
        assert!(two[1].ends_with("..."), "{two:?}");
        assert!(text_width(&two[1], 1) <= 96);
        let t = truncate_to_width(text, 60, 1);
        assert!(t.ends_with("...") && text_width(&t, 1) <= 60, "{t:?}");
        assert!(t.len() > 6, "{t:?}");
        assert_eq!(truncate_to_width("short", 100, 1), "short");
        assert_eq!(truncate_to_width("anything", 1, 1), "");
        let split = wrap_to_width("supercalifragilistic", 30, 1, 0);
        assert!(split.len() >= 3, "{split:?}");
        assert_eq!(split.concat(), "supercalifragilistic");
        let w = text_width("Single-StyleForge", 1);
        assert_eq!(
            wrap_to_width("Single-StyleForge", w - 1, 1, 0),
            ["Single-", "StyleForge"]
        );
        assert_eq!(
            wrap_to_width("Single-StyleForge", w, 1, 0),
            ["Single-StyleForge"]
        );
        let w = text_width("a Multi-", 1).max(text_width("StyleForge", 1));
        let narrow = wrap_to_width("a Multi-StyleForge run", w, 1, 0);
        assert_eq!(narrow[0], "a Multi-", "{narrow:?}");
        assert!(narrow[1].starts_with("StyleForge"), "{narrow:?}");
    }
}
