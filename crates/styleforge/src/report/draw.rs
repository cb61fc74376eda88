//! Drawing primitives on an [`RgbImage`]: filled and outlined rectangles, thick lines,
//! nearest-neighbour pasting. Everything is clipped to the image (and lines to an optional
//! clip rectangle), so callers may pass coordinates off the canvas.

use image::{Rgb, RgbImage};

/// An axis-aligned rectangle in pixels: `x .. x + width`, `y .. y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: i32,
    /// Top edge.
    pub y: i32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Rect {
    /// A rectangle from its top-left corner and size.
    pub fn new(x: i32, y: i32, width: u32, height: u32) -> Self {
        Self {
            x,
            y,
            width,
            height,
        }
    }

    /// The whole of `img`.
    pub fn of(img: &RgbImage) -> Self {
        Self::new(0, 0, img.width(), img.height())
    }

    /// One past the right edge.
    pub fn right(&self) -> i32 {
        self.x + self.width as i32
    }

    /// One past the bottom edge.
    pub fn bottom(&self) -> i32 {
        self.y + self.height as i32
    }

    /// Whether the pixel (`x`, `y`) lies inside.
    pub fn contains(&self, x: i32, y: i32) -> bool {
        x >= self.x && y >= self.y && x < self.right() && y < self.bottom()
    }
}

/// Sets one pixel if it lies inside the image.
pub fn put(img: &mut RgbImage, x: i32, y: i32, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, color);
    }
}

/// Fills `rect` with `color`.
pub fn fill_rect(img: &mut RgbImage, rect: Rect, color: Rgb<u8>) {
    let x0 = rect.x.max(0) as u32;
    let y0 = rect.y.max(0) as u32;
    let x1 = (rect.right().max(0) as u32).min(img.width());
    let y1 = (rect.bottom().max(0) as u32).min(img.height());
    for y in y0..y1 {
        for x in x0..x1 {
            img.put_pixel(x, y, color);
        }
    }
}

/// Draws the 1-pixel border just inside `rect`.
pub fn stroke_rect(img: &mut RgbImage, rect: Rect, color: Rgb<u8>) {
    if rect.width == 0 || rect.height == 0 {
        return;
    }
    let (r, b) = (rect.right() - 1, rect.bottom() - 1);
    for x in rect.x..=r {
        put(img, x, rect.y, color);
        put(img, x, b, color);
    }
    for y in rect.y..=b {
        put(img, rect.x, y, color);
        put(img, r, y, color);
    }
}

/// Draws a straight line from (`x0`, `y0`) to (`x1`, `y1`) with a square pen
/// `thickness` pixels wide (0 counts as 1), keeping only the pixels inside `clip`.
pub fn draw_line(
    img: &mut RgbImage,
    (x0, y0): (i32, i32),
    (x1, y1): (i32, i32),
    color: Rgb<u8>,
    thickness: u32,
    clip: Rect,
) {
    let t = thickness.max(1) as i32;
    let lo = -(t - 1) / 2;
    let hi = lo + t;
    let mut plot = |x: i32, y: i32| {
        for dy in lo..hi {
            for dx in lo..hi {
                if clip.contains(x + dx, y + dy) {
                    put(img, x + dx, y + dy, color);
                }
            }
        }
    };
    // Bresenham, all octants.
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        plot(x, y);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// Pastes `src` with its top-left corner at (`x`, `y`), each source pixel a
/// `scale`×`scale` square (nearest neighbour; 0 counts as 1).
pub fn blit_scaled(img: &mut RgbImage, src: &RgbImage, x: i32, y: i32, scale: u32) {
    let s = scale.max(1) as i32;
    for (sx, sy, p) in src.enumerate_pixels() {
        let (px, py) = (x + sx as i32 * s, y + sy as i32 * s);
        fill_rect(img, Rect::new(px, py, s as u32, s as u32), *p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLACK: Rgb<u8> = Rgb([0, 0, 0]);

    fn count(img: &RgbImage, color: Rgb<u8>) -> usize {
        img.pixels().filter(|p| **p == color).count()
    }

    #[test]
    fn rectangles_are_clipped() {
        let mut img = RgbImage::new(10, 10);
        fill_rect(&mut img, Rect::new(-5, 8, 100, 100), Rgb([9, 9, 9]));
        assert_eq!(count(&img, Rgb([9, 9, 9])), 20);
        let mut img = RgbImage::from_pixel(10, 10, Rgb([255, 255, 255]));
        stroke_rect(&mut img, Rect::new(2, 2, 4, 3), BLACK);
        assert_eq!(count(&img, BLACK), 10);
    }

    #[test]
    fn lines_join_their_ends_and_respect_the_clip() {
        let mut img = RgbImage::from_pixel(20, 20, Rgb([255, 255, 255]));
        let all = Rect::of(&img);
        draw_line(&mut img, (1, 1), (18, 7), BLACK, 1, all);
        assert_eq!(*img.get_pixel(1, 1), BLACK);
        assert_eq!(*img.get_pixel(18, 7), BLACK);
        assert_eq!(count(&img, BLACK), 18);
        let mut img = RgbImage::from_pixel(20, 20, Rgb([255, 255, 255]));
        draw_line(
            &mut img,
            (-10, 5),
            (30, 5),
            BLACK,
            3,
            Rect::new(5, 0, 5, 20),
        );
        assert_eq!(count(&img, BLACK), 15);
    }

    #[test]
    fn blit_scales_by_nearest_neighbour() {
        let mut src = RgbImage::new(2, 1);
        src.put_pixel(1, 0, Rgb([200, 0, 0]));
        let mut img = RgbImage::from_pixel(8, 4, Rgb([255, 255, 255]));
        blit_scaled(&mut img, &src, 1, 1, 3);
        assert_eq!(*img.get_pixel(1, 1), Rgb([0, 0, 0]));
        assert_eq!(*img.get_pixel(6, 3), Rgb([200, 0, 0]));
        assert_eq!(*img.get_pixel(7, 3), Rgb([255, 255, 255]));
        assert_eq!(count(&img, Rgb([200, 0, 0])), 9);
    }
}
