//! The toy world's contracts: determinism, every style at 32 and 64, captions that name
//! every object and colour in single CLIP tokens, and each style's measurable signature.

use std::io::Cursor;

use image::{ImageFormat, RgbImage};
use styleforge_tokenizer::ClipTokenizer;
use styleforge_world::caption::VOCABULARY;
use styleforge_world::render::{luma, saturation, Canvas, PALETTE, PIXEL_BLOCK};
use styleforge_world::{
    caption, caption_with_style_word, content_caption, render, CaptionKind, Ground, ObjectKind,
    Scene, SceneSampler, Sky, Slot, Style, World,
};

fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn scenes(seed: u64, n: usize) -> Vec<Scene> {
    SceneSampler::new(seed).take(n).collect()
}

fn pixels(img: &RgbImage) -> impl Iterator<Item = [f32; 3]> + '_ {
    img.pixels().map(|p| p.0.map(|v| v as f32 / 255.0))
}

fn mean<I: Iterator<Item = f32>>(values: I) -> f32 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n.max(1) as f32
}

/// Mean absolute discrete Laplacian of luma over interior pixels: blind to smooth
/// gradients, large for edges, speckle and grain.
fn high_frequency_energy(img: &RgbImage) -> f32 {
    let (w, h) = img.dimensions();
    let l = |x: u32, y: u32| luma(img.get_pixel(x, y).0.map(|v| v as f32 / 255.0));
    let mut total = 0.0;
    let mut n = 0;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let around = l(x - 1, y) + l(x + 1, y) + l(x, y - 1) + l(x, y + 1);
            total += (l(x, y) - around / 4.0).abs();
            n += 1;
        }
    }
    total / n as f32
}

#[test]
fn same_seed_gives_byte_identical_pngs_and_different_seeds_differ() {
    let world = World::new(11);
    for i in 0..14 {
        let a = world.sample(i);
        let b = World::new(11).sample(i);
        assert_eq!(png_bytes(&a.image), png_bytes(&b.image), "sample {i}");
        assert_eq!(a.caption, b.caption);
        assert_eq!(a.scene, b.scene);
    }
    let differ = (0..8)
        .filter(|&i| World::new(1).sample(i).image != World::new(2).sample(i).image)
        .count();
    assert!(
        differ >= 7,
        "only {differ}/8 samples differ between seeds 1 and 2"
    );

    // The render seed drives the stochastic styles.
    let scene = SceneSampler::new(5).sample();
    for style in [
        Style::Sketch,
        Style::Watercolor,
        Style::Cubist,
        Style::Pointillist,
    ] {
        assert_eq!(
            png_bytes(&render(&scene, style, 32, 3)),
            png_bytes(&render(&scene, style, 32, 3))
        );
        assert_ne!(
            render(&scene, style, 32, 3),
            render(&scene, style, 32, 4),
            "{style}"
        );
    }
}

#[test]
fn sample_i_is_a_pure_function_of_seed_and_i() {
    let world = World::new(3);
    let direct = world.sample(9);
    let via_iter = world.iter().nth(9).unwrap();
    assert_eq!(direct.image, via_iter.image);
    assert_eq!(direct.caption, via_iter.caption);
    assert_eq!(direct.style, Style::ALL[9 % 7]);
    let restyled = world.sample_in_style(9, Style::Cel);
    assert_eq!(restyled.scene, direct.scene);
    assert_eq!(restyled.content_caption, direct.content_caption);
    assert!(restyled.caption.ends_with(", cel style"));
    let base = World::new(3).with_styles(&Style::BASE);
    assert!((0..20).all(|i| base.sample(i).style.is_base()));
}

#[test]
fn every_style_renders_at_32_and_64_for_200_scenes() {
    for (k, scene) in scenes(42, 200).iter().enumerate() {
        for style in Style::ALL {
            for size in [32u32, 64] {
                let img = render(scene, style, size, k as u64);
                assert_eq!(img.dimensions(), (size, size));
            }
        }
    }
    // Odd and tiny sizes do not panic either.
    let scene = SceneSampler::new(1).sample();
    for style in Style::ALL {
        for size in [0u32, 1, 7, 30, 48] {
            assert_eq!(render(&scene, style, size, 0).dimensions(), (size, size));
        }
    }
}

#[test]
fn scenes_follow_the_rules() {
    for scene in scenes(7, 2000) {
        let n = scene.objects.len();
        assert!((1..=2).contains(&n));
        let suns = scene
            .objects
            .iter()
            .filter(|o| o.kind == ObjectKind::Sun)
            .count();
        assert!(suns <= 1);
        if suns == 1 {
            assert_ne!(scene.sky, Sky::Night, "{scene:?}");
            assert_eq!(n, 2, "the sun is never alone: {scene:?}");
        }
        if n == 1 {
            assert_eq!(scene.objects[0].slot, Slot::Centre);
        } else {
            assert_eq!(scene.objects[0].slot, Slot::Left);
            assert_eq!(scene.objects[1].slot, Slot::Right);
        }
        assert_eq!(scene.sky == Sky::Night, !scene.stars.is_empty());
        for o in &scene.objects {
            if o.kind == ObjectKind::Sun {
                assert!(o.y < scene.horizon);
            } else {
                assert!(o.y > scene.horizon);
            }
            if scene.ground == Ground::Grass && o.kind != ObjectKind::Sun {
                assert_ne!(
                    o.colour.name(),
                    "green",
                    "a green object on grass: {scene:?}"
                );
            }
        }
    }
}

#[test]
fn every_object_shows_its_colour_at_32() {
    for scene in scenes(21, 500) {
        let canvas = Canvas::draw(&scene, 32);
        for (k, o) in scene.objects.iter().enumerate() {
            let visible = canvas
                .object
                .iter()
                .zip(&canvas.rgb)
                .filter(|(&id, &c)| id as usize == k + 1 && c == o.colour.rgb())
                .count();
            assert!(visible >= 10, "{visible} pixels of {o:?} in {scene:?}");
        }
    }
}

#[test]
fn captions_mention_every_object_colour_sky_and_ground() {
    for scene in scenes(9, 500) {
        let content = content_caption(&scene);
        let words: Vec<&str> = content.split(' ').collect();
        for o in &scene.objects {
            let phrase = format!("{} {}", o.colour.name(), o.kind.name());
            assert!(content.contains(&phrase), "{content:?} lacks {phrase:?}");
        }
        assert!(words.contains(&scene.ground.name()), "{content:?}");
        assert!(content.ends_with(scene.sky.phrase()), "{content:?}");
        for style in Style::ALL {
            assert_eq!(
                caption(&scene, style),
                format!("{content}, {} style", style.name())
            );
        }
        assert_eq!(
            caption_with_style_word(&scene, "zwx style"),
            format!("{content}, zwx style")
        );
        for word in words {
            assert!(VOCABULARY.contains(&word), "{word:?} not in VOCABULARY");
        }
    }
}

#[test]
fn caption_words_are_single_clip_tokens() {
    let tokenizer = ClipTokenizer::standard().unwrap();
    let single = |w: &str| tokenizer.encode_content(w).len() == 1;
    for word in VOCABULARY {
        assert!(single(word), "{word:?} is {:?}", tokenizer.tokenize(word));
    }
    // Style names: all single tokens but these (pinned, so a change is noticed).
    let multi: Vec<&str> = Style::ALL
        .iter()
        .flat_map(|s| s.name().split(' '))
        .filter(|w| !single(w))
        .collect();
    assert_eq!(
        multi, MULTI_TOKEN_STYLE_WORDS,
        "style words split by CLIP BPE"
    );
    // A whole caption is one token per word and per comma.
    for scene in scenes(3, 50) {
        let text = caption(&scene, Style::Sketch);
        let expected = text.split(' ').count() + text.matches(',').count();
        assert_eq!(tokenizer.encode_content(&text).len(), expected, "{text:?}");
    }
}

/// Style-name words that are more than one CLIP token: "cubist" is `cu bi st`,
/// "pointillist" `point illi st`. Both name held-out styles, which personalization binds to
/// a placeholder token anyway.
const MULTI_TOKEN_STYLE_WORDS: [&str; 2] = ["cubist", "pointillist"];

#[test]
fn style_signatures_hold() {
    let scenes = scenes(123, 60);
    let render_all = |style: Style, size: u32| -> Vec<RgbImage> {
        scenes
            .iter()
            .enumerate()
            .map(|(k, s)| render(s, style, size, k as u64))
            .collect()
    };
    let plain = render_all(Style::Plain, 32);

    // Sketch: bright, nearly grey paper.
    let sketch = render_all(Style::Sketch, 32);
    let brightness = mean(sketch.iter().flat_map(pixels).map(luma));
    let sat = mean(sketch.iter().flat_map(pixels).map(saturation));
    assert!(brightness > 0.7, "sketch mean luma {brightness}");
    assert!(sat < 0.2, "sketch mean saturation {sat}");

    // Pixel art: constant over 4×4 blocks, colours from the palette only.
    let palette: Vec<[u8; 3]> = PALETTE
        .iter()
        .map(|c| c.map(|v| (v * 255.0).round() as u8))
        .collect();
    for size in [32u32, 64] {
        for img in render_all(Style::PixelArt, size) {
            for (x, y, p) in img.enumerate_pixels() {
                let corner = img.get_pixel(
                    x / PIXEL_BLOCK as u32 * PIXEL_BLOCK as u32,
                    y / PIXEL_BLOCK as u32 * PIXEL_BLOCK as u32,
                );
                assert_eq!(p, corner, "pixel art block not constant at ({x}, {y})");
                assert!(palette.contains(&p.0), "{:?} not in the palette", p.0);
            }
        }
    }

    // Pointillist: much white paper (plain has almost none outside snow).
    let white = |img: &RgbImage| -> f32 {
        mean(pixels(img).map(|c| (luma(c) > 0.88 && saturation(c) < 0.12) as u8 as f32))
    };
    let pointillist = render_all(Style::Pointillist, 32);
    for (k, (p, q)) in pointillist.iter().zip(&plain).enumerate() {
        let (wp, wq) = (white(p), white(q));
        assert!(
            wp > 0.3 && wp > wq + 0.15,
            "scene {k}: pointillist white {wp}, plain {wq}"
        );
    }

    // Cel: a good share of near-black outline pixels in every picture.
    let ink = |img: &RgbImage| -> f32 {
        mean(pixels(img).map(|c| (c[0] < 0.1 && c[1] < 0.1 && c[2] < 0.12) as u8 as f32))
    };
    for (k, img) in render_all(Style::Cel, 32).iter().enumerate() {
        assert!(ink(img) > 0.05, "scene {k}: cel ink share {}", ink(img));
    }

    // Cubist: dark facet edges.
    for (k, img) in render_all(Style::Cubist, 32).iter().enumerate() {
        let dark = mean(pixels(img).map(|c| (luma(c) < 0.2) as u8 as f32));
        assert!(dark > 0.12, "scene {k}: cubist dark share {dark}");
    }

    // Watercolor: far less high-frequency energy than plain.
    for (k, (w, p)) in render_all(Style::Watercolor, 32)
        .iter()
        .zip(&plain)
        .enumerate()
    {
        let (ew, ep) = (high_frequency_energy(w), high_frequency_energy(p));
        assert!(ew < 0.5 * ep, "scene {k}: watercolor {ew} vs plain {ep}");
    }
}

#[test]
fn write_folder_follows_the_loader_convention() {
    let dir = std::env::temp_dir().join(format!("styleforge-world-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let world = World::new(5).with_styles(&[Style::Cel]);
    let written = world
        .write_folder(&dir, 0..5, &CaptionKind::StyleWord("zwx style".into()))
        .unwrap();
    assert_eq!(written, 5);
    for i in 0..5u64 {
        let sample = world.sample(i);
        let png = image::open(dir.join(format!("img_{i:04}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(png, sample.image);
        let text = std::fs::read_to_string(dir.join(format!("img_{i:04}.txt"))).unwrap();
        assert_eq!(text, format!("{}, zwx style", sample.content_caption));
    }
    let metadata = std::fs::read_to_string(dir.join("metadata.jsonl")).unwrap();
    let lines: Vec<&str> = metadata.lines().collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[0].starts_with("{\"file\":\"img_0000.png\",\"index\":0,\"style\":\"cel\""));
    let scene = world.scene(0);
    assert!(lines[0].contains(&format!("\"sky\":\"{}\"", scene.sky.name())));
    assert!(lines[0].contains(&format!(
        "\"kind\":\"{}\",\"colour\":\"{}\"",
        scene.objects[0].kind.name(),
        scene.objects[0].colour.name()
    )));
    std::fs::remove_dir_all(&dir).unwrap();
}
