use image::{Rgb, RgbImage};
use styleforge::report::*;
fn main() {
    let out = std::path::Path::new("/tmp/rep");
    let mut text = RgbImage::from_pixel(620, 120, Rgb([255, 255, 255]));
    let all: String = (32u8..=126).map(|c| c as char).collect();
    draw_text(&mut text, 5, 5, &all[..48], Rgb([0, 0, 0]), 2);
    draw_text(&mut text, 5, 30, &all[48..], Rgb([0, 0, 0]), 2);
    draw_text(
        &mut text,
        5,
        60,
        "The quick brown fox jumps over the lazy dog. gjpqy 0.001 1e-4 naive cafe",
        Rgb([0, 0, 0]),
        1,
    );
    draw_text(
        &mut text,
        5,
        80,
        "Unicode: caf\u{e9} \u{6f22}",
        Rgb([200, 0, 0]),
        2,
    );
    save_png(&text, &out.join("font.png")).unwrap();
    let loss: Vec<(f64, f64)> = (0..500)
        .map(|s| {
            let s = s as f64;
            (
                s,
                0.08 + 0.5 * (-s / 60.0).exp()
                    + 0.04 * ((s * 12.9898).sin() * 43758.5453).fract().abs(),
            )
        })
        .collect();
    let lr: Vec<(f64, f64)> = (0..500)
        .map(|s| (s as f64, 1e-4 * (s as f64 / 50.0).min(1.0)))
        .collect();
    loss_curve(&loss, 25, Some(&lr))
        .save(&out.join("loss.png"), 800, 480)
        .unwrap();
    let wide: Vec<(f64, f64)> = (1..2000)
        .map(|s| (s as f64, 3.0 / (s as f64).powf(1.3)))
        .collect();
    loss_curve(&wide, 50, None)
        .save(&out.join("loss_log.png"), 640, 400)
        .unwrap();
    LineChart::new("Nothing yet", "step", "loss")
        .save(&out.join("empty.png"), 400, 300)
        .unwrap();
    LineChart::new("One point", "step", "loss")
        .series("loss", &[(3.0, 0.25)], PALETTE[3])
        .save(&out.join("one.png"), 400, 300)
        .unwrap();
    let c = |r, g, b| {
        RgbImage::from_fn(32, 32, move |x, y| {
            Rgb([
                ((x * 8) as u8).wrapping_add(r),
                ((y * 8) as u8).wrapping_add(g),
                b,
            ])
        })
    };
    ImageGrid::new("Samples: zwx style vs base model, 500 steps")
        .columns([
            "seed 1",
            "seed 2",
            "seed 3 with a long label that wraps over lines",
        ])
        .row("base", vec![c(0, 0, 0), c(50, 0, 100), c(0, 80, 200)])
        .row(
            "StyleForge lr 1e-4 rank 8",
            vec![c(100, 0, 0), c(0, 100, 0)],
        )
        .captioned_row(
            "captioned",
            vec![
                (c(0, 0, 0), "a person standing in a field"),
                (c(9, 9, 9), "x"),
            ],
        )
        .save(&out.join("grid.png"))
        .unwrap();
}
