//! A tiny built-in bitmap font: 5×9 pixel glyphs (7 rows above the baseline, 2 for
//! descenders) for printable ASCII, 32 (space) to 126 (`~`).
//!
//! Each glyph advances [`ADVANCE`] pixels and a line is [`LINE_HEIGHT`] pixels tall, both
//! times the integer `scale` the text is drawn at. Characters outside printable ASCII are
//! drawn as `?`.

use image::{Rgb, RgbImage};

/// Glyph width in font pixels.
pub const GLYPH_WIDTH: u32 = 5;
/// Glyph height in font pixels: 7 rows of capital height and 2 rows of descender.
pub const GLYPH_HEIGHT: u32 = 9;
/// Horizontal distance from one character to the next, in font pixels.
pub const ADVANCE: u32 = 6;
/// Vertical distance from one line to the next, in font pixels.
pub const LINE_HEIGHT: u32 = 11;

/// First character in [`GLYPHS`].
const FIRST: u32 = 32;

/// The glyphs of ASCII 32..=126, one row per byte, top row first; bit 4 is the leftmost
/// column. Capitals and digits fill rows 0-6, lower case has its x-height in rows 2-6 and
/// descenders in rows 7-8.
#[rustfmt::skip]
const GLYPHS: [[u8; 9]; 95] = [
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // ' '
    [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00100, 0b00000, 0b00000], // '!'
    [0b01010, 0b01010, 0b01010, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // '"'
    [0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010, 0b00000, 0b00000], // '#'
    [0b00100, 0b01111, 0b10100, 0b01110, 0b00101, 0b11110, 0b00100, 0b00000, 0b00000], // '$'
    [0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011, 0b00000, 0b00000], // '%'
    [0b01100, 0b10010, 0b10100, 0b01000, 0b10101, 0b10010, 0b01101, 0b00000, 0b00000], // '&'
    [0b00100, 0b00100, 0b01000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // '\''
    [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010, 0b00000, 0b00000], // '('
    [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000, 0b00000, 0b00000], // ')'
    [0b00000, 0b00100, 0b10101, 0b01110, 0b10101, 0b00100, 0b00000, 0b00000, 0b00000], // '*'
    [0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000, 0b00000, 0b00000], // '+'
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100, 0b00100, 0b01000], // ','
    [0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // '-'
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100, 0b00000, 0b00000], // '.'
    [0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000, 0b00000, 0b00000], // '/'
    [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110, 0b00000, 0b00000], // '0'
    [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000, 0b00000], // '1'
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111, 0b00000, 0b00000], // '2'
    [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110, 0b00000, 0b00000], // '3'
    [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010, 0b00000, 0b00000], // '4'
    [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110, 0b00000, 0b00000], // '5'
    [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110, 0b00000, 0b00000], // '6'
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00000, 0b00000], // '7'
    [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110, 0b00000, 0b00000], // '8'
    [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100, 0b00000, 0b00000], // '9'
    [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000, 0b00000, 0b00000], // ':'
    [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00100, 0b01000, 0b00000], // ';'
    [0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010, 0b00000, 0b00000], // '<'
    [0b00000, 0b00000, 0b11111, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000, 0b00000], // '='
    [0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000, 0b00000, 0b00000], // '>'
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100, 0b00000, 0b00000], // '?'
    [0b01110, 0b10001, 0b00001, 0b01101, 0b10101, 0b10101, 0b01110, 0b00000, 0b00000], // '@'
    [0b01110, 0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b00000, 0b00000], // 'A'
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110, 0b00000, 0b00000], // 'B'
    [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110, 0b00000, 0b00000], // 'C'
    [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100, 0b00000, 0b00000], // 'D'
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111, 0b00000, 0b00000], // 'E'
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000, 0b00000, 0b00000], // 'F'
    [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111, 0b00000, 0b00000], // 'G'
    [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001, 0b00000, 0b00000], // 'H'
    [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000, 0b00000], // 'I'
    [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100, 0b00000, 0b00000], // 'J'
    [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001, 0b00000, 0b00000], // 'K'
    [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111, 0b00000, 0b00000], // 'L'
    [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001, 0b00000, 0b00000], // 'M'
    [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001, 0b00000, 0b00000], // 'N'
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110, 0b00000, 0b00000], // 'O'
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000, 0b00000, 0b00000], // 'P'
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101, 0b00000, 0b00000], // 'Q'
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001, 0b00000, 0b00000], // 'R'
    [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110, 0b00000, 0b00000], // 'S'
    [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00000], // 'T'
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110, 0b00000, 0b00000], // 'U'
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00000, 0b00000], // 'V'
    [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010, 0b00000, 0b00000], // 'W'
    [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001, 0b00000, 0b00000], // 'X'
    [0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00000, 0b00000], // 'Y'
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111, 0b00000, 0b00000], // 'Z'
    [0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110, 0b00000, 0b00000], // '['
    [0b00000, 0b10000, 0b01000, 0b00100, 0b00010, 0b00001, 0b00000, 0b00000, 0b00000], // '\\'
    [0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110, 0b00000, 0b00000], // ']'
    [0b00100, 0b01010, 0b10001, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // '^'
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111, 0b00000], // '_'
    [0b01000, 0b00100, 0b00010, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // '`'
    [0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111, 0b00000, 0b00000], // 'a'
    [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110, 0b00000, 0b00000], // 'b'
    [0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110, 0b00000, 0b00000], // 'c'
    [0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111, 0b00000, 0b00000], // 'd'
    [0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110, 0b00000, 0b00000], // 'e'
    [0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000, 0b00000, 0b00000], // 'f'
    [0b00000, 0b00000, 0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110], // 'g'
    [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001, 0b00000, 0b00000], // 'h'
    [0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000, 0b00000], // 'i'
    [0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100], // 'j'
    [0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b00000, 0b00000], // 'k'
    [0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000, 0b00000], // 'l'
    [0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001, 0b00000, 0b00000], // 'm'
    [0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001, 0b00000, 0b00000], // 'n'
    [0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110, 0b00000, 0b00000], // 'o'
    [0b00000, 0b00000, 0b11110, 0b10001, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000], // 'p'
    [0b00000, 0b00000, 0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001], // 'q'
    [0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000, 0b00000, 0b00000], // 'r'
    [0b00000, 0b00000, 0b01111, 0b10000, 0b01110, 0b00001, 0b11110, 0b00000, 0b00000], // 's'
    [0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110, 0b00000, 0b00000], // 't'
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101, 0b00000, 0b00000], // 'u'
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00000, 0b00000], // 'v'
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010, 0b00000, 0b00000], // 'w'
    [0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b00000, 0b00000], // 'x'
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110], // 'y'
    [0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111, 0b00000, 0b00000], // 'z'
    [0b00010, 0b00100, 0b00100, 0b01000, 0b00100, 0b00100, 0b00010, 0b00000, 0b00000], // '{'
    [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000], // '|'
    [0b01000, 0b00100, 0b00100, 0b00010, 0b00100, 0b00100, 0b01000, 0b00000, 0b00000], // '}'
    [0b00000, 0b00000, 0b01000, 0b10101, 0b00010, 0b00000, 0b00000, 0b00000, 0b00000], // '~'
];

/// The bit rows of the glyph drawn for `c`: its own for printable ASCII, `?` otherwise.
pub fn glyph(c: char) -> &'static [u8; 9] {
    let code = c as u32;
    let index = if (FIRST..=126).contains(&code) {
        code - FIRST
    } else {
        '?' as u32 - FIRST
    };
    &GLYPHS[index as usize]
}

/// Width in pixels of `text` drawn on one line at `scale` (no spacing after the last
/// character). Scale 0 counts as 1.
pub fn text_width(text: &str, scale: u32) -> u32 {
    let scale = scale.max(1);
    let n = text.chars().count() as u32;
    if n == 0 {
        0
    } else {
        (n * ADVANCE - (ADVANCE - GLYPH_WIDTH)) * scale
    }
}

/// Distance in pixels from one line of text to the next at `scale`.
pub fn line_height(scale: u32) -> u32 {
    LINE_HEIGHT * scale.max(1)
}

/// Draws `text` on one line with its top-left corner at (`x`, `y`), each font pixel a
/// `scale`×`scale` square (scale 0 counts as 1). Parts outside the image are clipped.
/// Returns the width drawn, as [`text_width`].
pub fn draw_text(
    img: &mut RgbImage,
    x: i32,
    y: i32,
    text: &str,
    color: Rgb<u8>,
    scale: u32,
) -> u32 {
    let scale = scale.max(1);
    let mut pen = x as i64;
    for c in text.chars() {
        draw_glyph(img, pen, y as i64, c, color, scale, false);
        pen += (ADVANCE * scale) as i64;
    }
    text_width(text, scale)
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
    let scale = scale.max(1);
    let mut pen = y as i64;
    for c in text.chars() {
        draw_glyph(img, x as i64, pen, c, color, scale, true);
        pen -= (ADVANCE * scale) as i64;
    }
    text_width(text, scale)
}

/// Draws one glyph; `vertical` turns it a quarter turn anticlockwise about its
/// bottom-left corner at (`x`, `y`).
fn draw_glyph(
    img: &mut RgbImage,
    x: i64,
    y: i64,
    c: char,
    color: Rgb<u8>,
    scale: u32,
    vertical: bool,
) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let s = scale as i64;
    for (row, bits) in glyph(c).iter().enumerate() {
        for col in 0..GLYPH_WIDTH as i64 {
            if bits & (1 << (GLYPH_WIDTH as i64 - 1 - col)) == 0 {
                continue;
            }
            // Top-left of this font pixel in image space.
            let (px, py) = if vertical {
                (x + row as i64 * s, y - (col + 1) * s)
            } else {
                (x + col * s, y + row as i64 * s)
            };
            for dy in 0..s {
                for dx in 0..s {
                    let (qx, qy) = (px + dx, py + dy);
                    if qx >= 0 && qy >= 0 && qx < w && qy < h {
                        img.put_pixel(qx as u32, qy as u32, color);
                    }
                }
            }
        }
    }
}

/// Shortens `text` to fit `max_width` pixels at `scale`, ending it with `...` when cut.
/// Returns it unchanged when it fits; may return an empty string when not even `...` fits.
pub fn truncate_to_width(text: &str, max_width: u32, scale: u32) -> String {
    if text_width(text, scale) <= max_width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    for keep in (0..chars.len()).rev() {
        let candidate: String = chars[..keep]
            .iter()
            .collect::<String>()
            .trim_end()
            .to_string()
            + "...";
        if text_width(&candidate, scale) <= max_width {
            return candidate;
        }
    }
    let mut dots = "...".to_string();
    while !dots.is_empty() && text_width(&dots, scale) > max_width {
        dots.pop();
    }
    dots
}

/// Breaks `text` into lines no wider than `max_width` pixels at `scale`, at spaces where
/// it can and inside words that are too long on their own. At most `max_lines` lines are
/// returned (0 means no limit); when the text needs more, the last one ends in `...`.
pub fn wrap_to_width(text: &str, max_width: u32, scale: u32, max_lines: usize) -> Vec<String> {
    let scale = scale.max(1);
    // n characters take n * ADVANCE - 1 font pixels.
    let per_line = ((max_width + scale) / (ADVANCE * scale)).max(1) as usize;
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let current_len = current.chars().count();
            let needed = if current.is_empty() {
                word.len()
            } else {
                current_len + 1 + word.len()
            };
            if needed <= per_line {
                if !current.is_empty() {
                    current.push(' ');
                }
                current.extend(word.iter());
                break;
            }
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
                continue;
            }
            // A word longer than a line: split it.
            let rest = word.split_off(per_line);
            lines.push(word.iter().collect());
            word = rest;
            if word.is_empty() {
                break;
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

    #[test]
    fn every_printable_ascii_character_has_a_distinct_visible_glyph() {
        let mut seen = std::collections::HashMap::new();
        for code in 33u8..=126 {
            let c = code as char;
            let g = glyph(c);
            assert!(g.iter().any(|&row| row != 0), "{c:?} has an empty glyph");
            assert!(
                g.iter().all(|&row| row < 32),
                "{c:?} is wider than 5 pixels"
            );
            if let Some(other) = seen.insert(*g, c) {
                panic!("{c:?} and {other:?} share a glyph");
            }
        }
        assert!(glyph(' ').iter().all(|&row| row == 0));
    }

    #[test]
    fn non_ascii_draws_as_question_mark() {
        assert_eq!(glyph('é'), glyph('?'));
        assert_eq!(glyph('\n'), glyph('?'));
        assert_eq!(glyph('漢'), glyph('?'));
    }

    #[test]
    fn width_and_drawing_agree() {
        assert_eq!(text_width("", 2), 0);
        assert_eq!(text_width("A", 1), 5);
        assert_eq!(text_width("AB", 1), 11);
        assert_eq!(text_width("AB", 3), 33);
        let mut img = RgbImage::from_pixel(40, 20, Rgb([255, 255, 255]));
        let w = draw_text(&mut img, 2, 3, "Hi!", Rgb([0, 0, 0]), 2);
        assert_eq!(w, text_width("Hi!", 2));
        let dark: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 == [0, 0, 0])
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(!dark.is_empty());
        let max_x = dark.iter().map(|p| p.0).max().unwrap();
        let min_x = dark.iter().map(|p| p.0).min().unwrap();
        let min_y = dark.iter().map(|p| p.1).min().unwrap();
        assert_eq!(min_x, 2);
        assert_eq!(min_y, 3);
        assert!(max_x < 2 + w);
        // Drawing off the image is clipped, not a panic.
        draw_text(&mut img, -100, -100, "clipped", Rgb([0, 0, 0]), 4);
        draw_text(&mut img, 35, 15, "clipped", Rgb([0, 0, 0]), 4);
        draw_text_vertical(&mut img, 35, 5, "clipped", Rgb([0, 0, 0]), 1);
    }

    #[test]
    fn vertical_text_occupies_the_turned_box() {
        let mut img = RgbImage::from_pixel(20, 40, Rgb([255, 255, 255]));
        let w = draw_text_vertical(&mut img, 4, 35, "Ab", Rgb([0, 0, 0]), 1);
        for (x, y, p) in img.enumerate_pixels() {
            if p.0 == [0, 0, 0] {
                assert!((4..4 + GLYPH_HEIGHT).contains(&x), "x {x}");
                assert!(y < 35 && y >= 35 - w, "y {y}");
            }
        }
    }

    #[test]
    fn wrapping_and_truncation_fit_the_width() {
        let text = "a person standing in a field under a bright yellow sun";
        for width in [5u32, 20, 47, 96, 300] {
            for line in wrap_to_width(text, width, 1, 0) {
                assert!(
                    text_width(&line, 1) <= width.max(5),
                    "{line:?} wider than {width}"
                );
            }
        }
        let lines = wrap_to_width(text, 96, 1, 0);
        assert_eq!(lines.join(" "), text);
        let two = wrap_to_width(text, 96, 1, 2);
        assert_eq!(two.len(), 2);
        assert!(two[1].ends_with("..."), "{two:?}");
        assert!(text_width(&two[1], 1) <= 96);
        let t = truncate_to_width(text, 60, 1);
        assert!(t.ends_with("...") && text_width(&t, 1) <= 60, "{t:?}");
        assert_eq!(truncate_to_width("short", 100, 1), "short");
        assert_eq!(
            wrap_to_width("supercalifragilistic", 30, 1, 0),
            vec!["super", "calif", "ragil", "istic"]
        );
    }
}
