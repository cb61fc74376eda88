//! Writes a preview grid of the toy world: rows are scenes, columns the seven styles
//! (plain, pixel art, sketch, cel, watercolor, cubist, pointillist), upscaled 4×.
//!
//! `cargo run -p styleforge-world --example preview -- OUT.png [ROWS] [SEED] [SIZE]`

use image::{imageops, Rgb, RgbImage};
use styleforge_world::{render, Style, World};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: preview OUT.png [ROWS] [SEED] [SIZE]")?;
    let rows: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(8);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let size: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(32);
    let (zoom, gap) = (128 / size.max(1), 4);
    let tile = size * zoom;
    let cols = Style::ALL.len() as u32;
    let mut grid = RgbImage::from_pixel(
        cols * (tile + gap) + gap,
        rows as u32 * (tile + gap) + gap,
        Rgb([255, 255, 255]),
    );
    let world = World::new(seed).with_size(size);
    for row in 0..rows {
        let scene = world.scene(row);
        println!("{row}: {}", styleforge_world::content_caption(&scene));
        for (col, style) in Style::ALL.into_iter().enumerate() {
            let img = render(&scene, style, size, row * 7 + col as u64);
            let big = imageops::resize(&img, tile, tile, imageops::FilterType::Nearest);
            let (x, y) = (
                gap + col as u32 * (tile + gap),
                gap + row as u32 * (tile + gap),
            );
            imageops::replace(&mut grid, &big, x as i64, y as i64);
        }
    }
    grid.save(&out)?;
    println!("wrote {out}");
    Ok(())
}
