//! Training data: folder scanning, DreamBooth preprocessing, the latent cache, the sampler.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use styleforge::data::{
    BucketSpec, Buckets, CacheSource, CropMode, EpochSampler, ImageFolder, LatentCache, Preprocess,
    SamplerState, ScanOptions,
};
use styleforge::image_io::image_to_tensor;
use styleforge::models::folder::{load_vae, LoadOptions};
use styleforge::models::vae::AutoencoderKL;
use styleforge::progress::NoProgress;
use styleforge::Error;

/// An RGB image whose pixel (x, y) is (10·x, 10·y, 7).
fn coords_image(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(10 * x) as u8, (10 * y) as u8, 7]))
}

/// A smooth, non-symmetric test picture.
fn picture(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = |k: u32| ((x * (3 + k + seed) + y * (5 + 2 * k) + 17 * seed) % 256) as u8;
        Rgb([v(0), v(1), v(2)])
    })
}

fn save(img: &RgbImage, path: &Path) {
    img.save(path).unwrap();
}

fn err_text<T: std::fmt::Debug>(r: styleforge::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn tiny_vae() -> AutoencoderKL {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-sd1/vae");
    load_vae(&dir, &LoadOptions::default()).unwrap().model
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A folder with three usable images of different formats and sizes, a caption, and files
/// that must be ignored.
fn sample_folder() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    save(&picture(40, 24, 1), &dir.join("b_wide.png"));
    picture(20, 36, 2)
        .save_with_format(dir.join("a_tall.JPG"), ImageFormat::Jpeg)
        .unwrap();
    save(&picture(16, 16, 3), &dir.join("c_square.webp"));
    std::fs::write(dir.join("b_wide.txt"), "  a wide picture of stripes\n").unwrap();
    std::fs::write(dir.join("c_square.txt"), "   \n").unwrap(); // blank: no caption
    std::fs::write(dir.join("notes.md"), "not an image").unwrap();
    std::fs::write(dir.join(".hidden.png"), "macOS fork, not an image").unwrap();
    std::fs::create_dir(dir.join("sub.png")).unwrap();
    (tmp, dir)
}

#[test]
fn scan_lists_images_sorted_with_captions() {
    let (_tmp, dir) = sample_folder();
    let folder = ImageFolder::scan(&dir, &Preprocess::new(16), 3).unwrap();
    let names: Vec<_> = folder
        .entries()
        .iter()
        .map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a_tall.JPG", "b_wide.png", "c_square.webp"]);
    let e = folder.entries();
    assert_eq!((e[0].width, e[0].height), (20, 36));
    assert_eq!((e[1].width, e[1].height), (40, 24));
    assert_eq!(e[0].caption, None);
    assert_eq!(e[1].caption.as_deref(), Some("a wide picture of stripes"));
    assert_eq!(e[2].caption, None);
    assert_eq!(e[0].prompt("a zwx style", "zwx style"), "a zwx style");
    assert_eq!(
        e[1].prompt("a zwx style", "zwx style"),
        "a wide picture of stripes, zwx style"
    );
    // webp round-trips losslessly
    let img = folder.load_rgb(2).unwrap();
    assert_eq!(img, picture(16, 16, 3));
}

#[test]
fn preprocess_sizes_and_center_crop_values() {
    let p = Preprocess::new(16);
    // short side already 16: no resize; spare 5 → offset round(2.5) = 2 (half to even)
    let out = p.apply(&coords_image(21, 16), 0, false);
    assert_eq!(out.dimensions(), (16, 16));
    assert_eq!(out.get_pixel(0, 0).0, [20, 0, 7]);
    assert_eq!(out.get_pixel(15, 15).0, [170, 150, 7]);
    // spare 7 → round(3.5) = 4
    let out = p.apply(&coords_image(16, 23), 0, false);
    assert_eq!(out.get_pixel(0, 0).0, [0, 40, 7]);
    // flip mirrors the cropped square
    let flipped = p.apply(&coords_image(21, 16), 0, true);
    assert_eq!(flipped.get_pixel(0, 0).0, [170, 0, 7]);
    assert_eq!(flipped.get_pixel(15, 3).0, [20, 30, 7]);
    // larger images are resized first: 40x24 → 26x16, then a 16x16 crop
    for (w, h) in [(40, 24), (24, 40), (64, 64), (17, 100)] {
        assert_eq!(p.apply(&picture(w, h, 0), 0, false).dimensions(), (16, 16));
    }
}

#[test]
fn resize_is_antialiased_and_preserves_constants() {
    let p = Preprocess::new(16);
    let flat = RgbImage::from_pixel(48, 32, Rgb([200, 100, 30]));
    let out = p.apply(&flat, 0, false);
    assert!(out.pixels().all(|px| px.0 == [200, 100, 30]));
    // 1-pixel stripes halved: an antialiased filter averages them to mid-grey
    let stripes = RgbImage::from_fn(32, 32, |x, _| {
        let v = if x % 2 == 0 { 0 } else { 255 };
        Rgb([v, v, v])
    });
    let out = p.apply(&stripes, 0, false);
    for px in out.pixels() {
        assert!((100..=155).contains(&px.0[0]), "{:?}", px.0);
    }
}

#[test]
fn random_crop_is_seeded() {
    let mut p = Preprocess::new(16);
    p.crop = CropMode::Random;
    p.seed = 11;
    let img = coords_image(16, 25); // no resize; top offset in 0..=9
    let tops: Vec<u8> = (0..12)
        .map(|i| p.apply(&img, i, false).get_pixel(0, 0).0[1])
        .collect();
    let again: Vec<u8> = (0..12)
        .map(|i| p.apply(&img, i, false).get_pixel(0, 0).0[1])
        .collect();
    assert_eq!(tops, again);
    assert!(tops.iter().all(|&t| t % 10 == 0 && t <= 90));
    assert!(tops.iter().any(|&t| t != tops[0]), "{tops:?}");
}

#[test]
fn tensor_is_chw_in_minus_one_to_one() {
    let img = RgbImage::from_fn(4, 2, |x, y| {
        Rgb([if x == 0 { 0 } else { 255 }, 51 * y as u8, 0])
    });
    let t = image_to_tensor(&img, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), [3, 2, 4]);
    let v = t.to_vec3::<f32>().unwrap();
    assert_eq!(v[0][0][0], -1.0);
    assert_eq!(v[0][1][3], 1.0);
    assert!((v[1][1][2] - (51.0 / 255.0 - 0.5) / 0.5).abs() < 1e-7);
    assert_eq!(v[2][0][0], -1.0);
}

#[test]
fn modes_convert_to_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    GrayImage::from_pixel(16, 16, Luma([90]))
        .save(dir.join("1_gray.png"))
        .unwrap();
    // alpha is dropped, as PIL's convert("RGB") does
    RgbaImage::from_pixel(16, 16, Rgba([10, 20, 30, 0]))
        .save(dir.join("2_rgba.png"))
        .unwrap();
    // a palette PNG
    {
        let file = std::fs::File::create(dir.join("3_palette.png")).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 16, 16);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
        let mut w = enc.write_header().unwrap();
        let data: Vec<u8> = (0..256).map(|i| (i % 2) as u8).collect();
        w.write_image_data(&data).unwrap();
    }
    let folder = ImageFolder::scan(dir, &Preprocess::new(16), 3).unwrap();
    assert_eq!(folder.load_rgb(0).unwrap().get_pixel(3, 3).0, [90, 90, 90]);
    assert_eq!(folder.load_rgb(1).unwrap().get_pixel(3, 3).0, [10, 20, 30]);
    let pal = folder.load_rgb(2).unwrap();
    assert_eq!(pal.get_pixel(0, 0).0, [255, 0, 0]);
    assert_eq!(pal.get_pixel(1, 0).0, [0, 0, 255]);
    let t = folder
        .tensor(2, &Preprocess::new(16), false, &Device::Cpu)
        .unwrap();
    assert_eq!(t.dims(), [3, 16, 16]);
}

#[test]
fn undecodable_image_is_named() {
    let (_tmp, dir) = sample_folder();
    std::fs::write(
        dir.join("broken.png"),
        b"\x89PNG\r\n\x1a\nthis is not really a png",
    )
    .unwrap();
    let msg = err_text(ImageFolder::scan(&dir, &Preprocess::new(16), 1));
    assert!(msg.contains("broken.png"), "{msg}");
    assert!(msg.contains("cannot decode"), "{msg}");
    // a truncated file too
    let (_tmp2, dir2) = sample_folder();
    let good = std::fs::read(dir2.join("b_wide.png")).unwrap();
    std::fs::write(dir2.join("b_wide.png"), &good[..good.len() / 2]).unwrap();
    let msg = err_text(ImageFolder::scan(&dir2, &Preprocess::new(16), 1));
    assert!(msg.contains("b_wide.png"), "{msg}");
}

#[test]
fn too_small_image_is_named_unless_upscaling() {
    let (_tmp, dir) = sample_folder();
    save(&picture(12, 30, 4), &dir.join("d_small.png"));
    let msg = err_text(ImageFolder::scan(&dir, &Preprocess::new(16), 1));
    assert!(msg.contains("d_small.png"), "{msg}");
    assert!(msg.contains("12x30") && msg.contains("16x16"), "{msg}");
    let mut p = Preprocess::new(16);
    p.allow_upscale = true;
    let folder = ImageFolder::scan(&dir, &p, 1).unwrap();
    assert_eq!(folder.len(), 4);
    let t = folder.tensor(3, &p, false, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), [3, 16, 16]);
}

#[test]
fn too_few_images_names_the_folder_and_count() {
    let (_tmp, dir) = sample_folder();
    let msg = err_text(ImageFolder::scan(&dir, &Preprocess::new(16), 5));
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(
        msg.contains("only 3 images") && msg.contains("at least 5"),
        "{msg}"
    );
    let empty = tempfile::tempdir().unwrap();
    let msg = err_text(ImageFolder::scan(empty.path(), &Preprocess::new(16), 1));
    assert!(msg.contains("found no images"), "{msg}");
    let msg = err_text(ImageFolder::scan(
        &empty.path().join("missing"),
        &Preprocess::new(16),
        1,
    ));
    assert!(msg.contains("missing"), "{msg}");
}

#[test]
fn caption_that_is_not_utf8_is_named() {
    let (_tmp, dir) = sample_folder();
    std::fs::write(dir.join("a_tall.txt"), [0xff, 0xfe, 0x41, 0x80]).unwrap();
    let err = ImageFolder::scan(&dir, &Preprocess::new(16), 1).unwrap_err();
    assert!(matches!(err, Error::Data { .. }));
    let msg = err.to_string();
    assert!(msg.contains("a_tall.txt") && msg.contains("UTF-8"), "{msg}");
}

#[test]
fn latent_cache_encodes_samples_and_round_trips() {
    let (_tmp, dir) = sample_folder();
    let prep = Preprocess::new(16);
    let folder = ImageFolder::scan(&dir, &prep, 3).unwrap();
    let vae = tiny_vae();
    let dev = Device::Cpu;
    let source = CacheSource {
        folder: &folder,
        preprocess: &prep,
        with_flips: true,
        vae_tag: "tiny-sd1",
    };
    let cache = LatentCache::build(&source, &vae, DType::F32, &dev, &mut NoProgress).unwrap();
    assert_eq!(cache.len(), 3);
    assert!(cache.has_flips());
    assert_eq!(cache.latent_shape(), [1, 4, 8, 8]);

    // each variant is the VAE's posterior of the preprocessed (and mirrored) image
    for (index, flip) in [(0, false), (1, true), (2, false), (2, true)] {
        let pixels = folder
            .tensor(index, &prep, flip, &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let direct = vae.encode(&pixels).unwrap();
        let post = cache.posterior(index, flip).unwrap();
        assert_eq!(max_abs_diff(&post.mean, &direct.mean), 0.0);
        assert_eq!(max_abs_diff(&post.logvar, &direct.logvar), 0.0);
        // sample = (mean + std · noise) · scaling_factor
        let noise = Tensor::randn(0f32, 1f32, (1, 4, 8, 8), &dev).unwrap();
        let want = (direct.sample_with(&noise).unwrap() * vae.scaling_factor()).unwrap();
        let got = cache.sample(index, flip, &noise).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-6);
    }
    // flipped and unflipped latents differ
    let a = cache.posterior(1, false).unwrap().mean;
    let b = cache.posterior(1, true).unwrap().mean;
    assert!(max_abs_diff(&a, &b) > 1e-3);
    // wrong noise shape, bad index
    let bad = Tensor::zeros((1, 4, 4, 4), DType::F32, &dev).unwrap();
    assert!(err_text(cache.sample(0, false, &bad)).contains("noise has shape"));
    assert!(cache.posterior(3, false).is_err());

    // save → load gives identical tensors
    let run = tempfile::tempdir().unwrap();
    let path = cache.path_in(run.path());
    cache.save(&path).unwrap();
    let back = LatentCache::load(&path, &source.key(), &dev)
        .unwrap()
        .unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(back.scaling_factor(), cache.scaling_factor());
    for (index, flip) in [(0, false), (0, true), (2, true)] {
        let (x, y) = (
            cache.posterior(index, flip).unwrap(),
            back.posterior(index, flip).unwrap(),
        );
        assert_eq!(max_abs_diff(&x.mean, &y.mean), 0.0);
        assert_eq!(max_abs_diff(&x.logvar, &y.logvar), 0.0);
    }
    // another key's file is not taken
    let other = CacheSource {
        with_flips: false,
        ..source
    };
    assert!(LatentCache::load(&path, &other.key(), &dev)
        .unwrap()
        .is_none());
}

#[test]
fn latent_cache_is_reused_until_inputs_change() {
    let (_tmp, dir) = sample_folder();
    let prep = Preprocess::new(16);
    let vae = tiny_vae();
    let dev = Device::Cpu;
    let run = tempfile::tempdir().unwrap();
    let folder = ImageFolder::scan(&dir, &prep, 1).unwrap();
    let source = CacheSource {
        folder: &folder,
        preprocess: &prep,
        with_flips: false,
        vae_tag: "tiny-sd1",
    };
    let (first, reused) =
        LatentCache::load_or_build(run.path(), &source, &vae, DType::F32, &dev, &mut NoProgress)
            .unwrap();
    assert!(!reused);
    assert!(first.path_in(run.path()).is_file());
    let (second, reused) =
        LatentCache::load_or_build(run.path(), &source, &vae, DType::F32, &dev, &mut NoProgress)
            .unwrap();
    assert!(reused);
    let m = |c: &LatentCache| c.posterior(1, false).unwrap().mean;
    assert_eq!(max_abs_diff(&m(&first), &m(&second)), 0.0);

    // the key follows the resolution, crop, VAE tag and image bytes
    let key = source.key();
    let mut random = prep;
    random.crop = CropMode::Random;
    let mut random2 = random;
    random2.seed = 1;
    let keys = [
        CacheSource {
            vae_tag: "other",
            ..source
        }
        .key(),
        CacheSource {
            preprocess: &Preprocess::new(32),
            ..source
        }
        .key(),
        CacheSource {
            preprocess: &random,
            ..source
        }
        .key(),
        CacheSource {
            preprocess: &random2,
            ..source
        }
        .key(),
    ];
    for (i, k) in keys.iter().enumerate() {
        assert_ne!(k, &key, "key {i}");
    }
    assert_ne!(keys[2], keys[3]);
    save(&picture(40, 24, 9), &dir.join("b_wide.png"));
    let changed = ImageFolder::scan(&dir, &prep, 1).unwrap();
    let changed_source = CacheSource {
        folder: &changed,
        ..source
    };
    assert_ne!(changed_source.key(), key);
    let (_, reused) = LatentCache::load_or_build(
        run.path(),
        &changed_source,
        &vae,
        DType::F32,
        &dev,
        &mut NoProgress,
    )
    .unwrap();
    assert!(!reused);
    // a file changed after the scan is refused by name
    save(&picture(40, 24, 10), &dir.join("b_wide.png"));
    let msg = err_text(changed.load_rgb(1));
    assert!(
        msg.contains("b_wide.png") && msg.contains("changed"),
        "{msg}"
    );
}

#[test]
fn latent_cache_is_deterministic() {
    let (_tmp, dir) = sample_folder();
    let mut prep = Preprocess::new(16);
    prep.crop = CropMode::Random;
    prep.seed = 5;
    let folder = ImageFolder::scan(&dir, &prep, 1).unwrap();
    let vae = tiny_vae();
    let source = CacheSource {
        folder: &folder,
        preprocess: &prep,
        with_flips: true,
        vae_tag: "t",
    };
    let a = LatentCache::build(&source, &vae, DType::F32, &Device::Cpu, &mut NoProgress).unwrap();
    let b = LatentCache::build(&source, &vae, DType::F32, &Device::Cpu, &mut NoProgress).unwrap();
    let run = tempfile::tempdir().unwrap();
    a.save(&run.path().join("a.safetensors")).unwrap();
    b.save(&run.path().join("b.safetensors")).unwrap();
    assert_eq!(
        std::fs::read(run.path().join("a.safetensors")).unwrap(),
        std::fs::read(run.path().join("b.safetensors")).unwrap()
    );
}

#[test]
fn latent_cache_rejects_resolution_not_multiple_of_vae_factor() {
    let (_tmp, dir) = sample_folder();
    let prep = Preprocess::new(15);
    let folder = ImageFolder::scan(&dir, &prep, 1).unwrap();
    let source = CacheSource {
        folder: &folder,
        preprocess: &prep,
        with_flips: false,
        vae_tag: "t",
    };
    let msg = err_text(LatentCache::build(
        &source,
        &tiny_vae(),
        DType::F32,
        &Device::Cpu,
        &mut NoProgress,
    ));
    assert!(msg.contains("15") && msg.contains("multiple"), "{msg}");
}

#[test]
fn sampler_shuffles_each_epoch_and_resumes_exactly() {
    let mut s = EpochSampler::new(7, 1337).unwrap();
    let first: Vec<usize> = (&mut s).take(21).collect();
    for epoch in first.chunks(7) {
        let mut sorted = epoch.to_vec();
        sorted.sort();
        assert_eq!(sorted, (0..7).collect::<Vec<_>>());
    }
    assert_ne!(first[..7], first[7..14]);
    assert_eq!(s.epoch(), 3);
    // same seed, same stream
    let again: Vec<usize> = EpochSampler::new(7, 1337).unwrap().take(21).collect();
    assert_eq!(first, again);
    let other: Vec<usize> = EpochSampler::new(7, 1338).unwrap().take(21).collect();
    assert_ne!(first, other);

    // stop mid-epoch, save as JSON, restore: the continuation is identical
    let mut a = EpochSampler::new(5, 9).unwrap();
    for _ in 0..8 {
        a.next_index();
    }
    let json = serde_json::to_string(&a.state()).unwrap();
    let state: SamplerState = serde_json::from_str(&json).unwrap();
    let mut b = EpochSampler::from_state(state).unwrap();
    let rest_a: Vec<usize> = (&mut a).take(23).collect();
    let rest_b: Vec<usize> = (&mut b).take(23).collect();
    assert_eq!(rest_a, rest_b);
    assert_eq!(a.epoch(), b.epoch());

    // a state for another folder size is refused
    let mut bad = a.state();
    bad.len = 6;
    assert!(EpochSampler::from_state(bad).is_err());
    assert!(EpochSampler::new(0, 1).is_err());
}

/// A folder of a wide and a tall image with `.caption` captions, `.txt` files that are not
/// captions under that extension, and masks (`a`: left half white; `b`: all white).
fn masked_folder() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imgs");
    std::fs::create_dir(&dir).unwrap();
    save(&picture(40, 20, 1), &dir.join("a.png"));
    save(&picture(20, 40, 2), &dir.join("b.png"));
    std::fs::write(dir.join("a.caption"), " a wide one\n").unwrap();
    std::fs::write(dir.join("a.txt"), "not read").unwrap();
    std::fs::write(dir.join("b.txt"), "not read either").unwrap();
    GrayImage::from_fn(40, 20, |x, _| Luma([if x < 20 { 255 } else { 0 }]))
        .save(dir.join("a.mask.png"))
        .unwrap();
    // any mode: an RGB mask, read as grey
    RgbImage::from_pixel(20, 40, Rgb([255, 255, 255]))
        .save(dir.join("b.mask.png"))
        .unwrap();
    (tmp, dir)
}

fn bucket_scan(masks: bool) -> ScanOptions {
    let spec = BucketSpec {
        resolution: 32,
        step: 16,
        max_aspect: 2.0,
    };
    ScanOptions {
        caption_extension: ".caption".into(),
        masks,
        buckets: Some(Buckets::new(&spec).unwrap()),
    }
}

#[test]
fn scan_with_a_caption_extension_masks_and_buckets() {
    let (_tmp, dir) = masked_folder();
    let prep = Preprocess::new(32);
    let folder = ImageFolder::scan_with(&dir, &prep, 2, &bucket_scan(true)).unwrap();
    // masks are never images
    assert_eq!(folder.len(), 2);
    let e = folder.entries();
    assert_eq!(e[0].caption.as_deref(), Some("a wide one"));
    assert_eq!(e[1].caption, None);
    assert_eq!((e[0].bucket, e[1].bucket), (Some((32, 16)), Some((16, 32))));
    assert!(e.iter().all(|e| e.mask.is_some()));
    assert_eq!(folder.target(1, &prep).unwrap(), (16, 32));
    assert_eq!(
        folder.preprocessed(0, &prep, false).unwrap().dimensions(),
        (32, 16)
    );
    // the default scan skips the masks too, and reads `.txt` captions
    let plain = ImageFolder::scan(&dir, &Preprocess::new(16), 2).unwrap();
    assert_eq!(plain.len(), 2);
    assert_eq!(
        plain.entries()[1].caption.as_deref(),
        Some("not read either")
    );
    assert!(plain
        .entries()
        .iter()
        .all(|e| e.mask.is_none() && e.bucket.is_none()));

    // a missing mask names the image; a mask of another size names the mask
    std::fs::rename(dir.join("b.mask.png"), dir.join("b.mask.bak")).unwrap();
    let msg = err_text(ImageFolder::scan_with(&dir, &prep, 2, &bucket_scan(true)));
    assert!(
        msg.contains("b.png") && msg.contains("b.mask.png") && msg.contains("masked_loss"),
        "{msg}"
    );
    assert!(ImageFolder::scan_with(&dir, &prep, 2, &bucket_scan(false)).is_ok());
    save(&picture(20, 41, 2), &dir.join("b.mask.png"));
    let msg = err_text(ImageFolder::scan_with(&dir, &prep, 2, &bucket_scan(true)));
    assert!(msg.contains("b.mask.png") && msg.contains("20x41"), "{msg}");
    GrayImage::new(20, 40).save(dir.join("b.mask.png")).unwrap();
    let msg = err_text(ImageFolder::scan_with(&dir, &prep, 2, &bucket_scan(true)));
    assert!(msg.contains("entirely black"), "{msg}");
    // an image smaller than its bucket is refused unless upscaling is allowed
    save(&picture(30, 15, 3), &dir.join("c.png"));
    let msg = err_text(ImageFolder::scan_with(&dir, &prep, 2, &bucket_scan(false)));
    assert!(msg.contains("c.png") && msg.contains("32x16"), "{msg}");
}

#[test]
fn bucketed_cache_keeps_each_size_and_the_masks_at_latent_resolution() {
    let (tmp, dir) = masked_folder();
    let prep = Preprocess::new(32);
    let folder = ImageFolder::scan_with(&dir, &prep, 2, &bucket_scan(true)).unwrap();
    let vae = tiny_vae();
    let dev = Device::Cpu;
    let source = CacheSource {
        folder: &folder,
        preprocess: &prep,
        with_flips: true,
        vae_tag: "tiny",
    };
    let cache = LatentCache::build(&source, &vae, DType::F32, &dev, &mut NoProgress).unwrap();
    assert_eq!(cache.latent_shape_of(0).unwrap(), [1, 4, 8, 16]);
    assert_eq!(cache.latent_shape_of(1).unwrap(), [1, 4, 16, 8]);
    assert!(cache.has_masks());
    // the latent of a is the VAE's encoding of its bucket picture
    let pixels = folder
        .tensor(0, &prep, true, &dev)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let post = vae.encode(&pixels).unwrap();
    assert_eq!(
        max_abs_diff(&cache.posterior(0, true).unwrap().mean, &post.mean),
        0.0
    );
    // a's mask: white on the left, black on the right, mirrored for the flip; the average
    // of its 2x2 blocks
    let m = cache.mask(0, false).unwrap().unwrap();
    assert_eq!(m.dims(), [1, 1, 8, 16]);
    let rows = m
        .squeeze(0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert!(rows
        .iter()
        .all(|r| r[0] == 1.0 && r[6] == 1.0 && r[9] == 0.0 && r[15] == 0.0));
    let edge = folder.preprocessed_mask(0, &prep, false).unwrap().unwrap();
    let block = |x: u32, y: u32| {
        (0..2)
            .flat_map(|dy| (0..2).map(move |dx| (dx, dy)))
            .map(|(dx, dy)| edge.get_pixel(2 * x + dx, 2 * y + dy).0[0] as f32)
            .sum::<f32>()
            / (4.0 * 255.0)
    };
    for (x, y) in [(7, 0), (8, 3), (0, 7)] {
        assert!(
            (rows[y][x] - block(x as u32, y as u32)).abs() < 1e-6,
            "{x},{y}"
        );
    }
    let flipped = cache.mask(0, true).unwrap().unwrap();
    let mirrored: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| r.iter().rev().copied().collect())
        .collect();
    let flipped_rows = flipped
        .squeeze(0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(flipped_rows, mirrored);
    let b = cache.mask(1, false).unwrap().unwrap();
    assert!(b
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|&v| v == 1.0));

    // saved and loaded, the groups and masks come back
    let path = tmp.path().join(cache.key().file_name());
    cache.save(&path).unwrap();
    let back = LatentCache::load(&path, &source.key(), &dev)
        .unwrap()
        .unwrap();
    assert_eq!(back.latent_shape_of(1).unwrap(), [1, 4, 16, 8]);
    assert_eq!(
        max_abs_diff(&back.mask(0, true).unwrap().unwrap(), &flipped),
        0.0
    );
    assert_eq!(
        max_abs_diff(
            &back.posterior(1, false).unwrap().logvar,
            &cache.posterior(1, false).unwrap().logvar
        ),
        0.0
    );
    // a changed mask changes the key (the cache is rebuilt); so do buckets and masks at all
    GrayImage::from_pixel(20, 40, Luma([128]))
        .save(dir.join("b.mask.png"))
        .unwrap();
    let changed = ImageFolder::scan_with(&dir, &prep, 2, &bucket_scan(true)).unwrap();
    let key = |folder: &ImageFolder| {
        CacheSource {
            folder,
            preprocess: &prep,
            with_flips: true,
            vae_tag: "tiny",
        }
        .key()
    };
    assert_ne!(key(&changed), source.key());
    let unmasked = ImageFolder::scan_with(&dir, &prep, 2, &bucket_scan(false)).unwrap();
    assert_ne!(key(&unmasked), key(&changed));
    let square =
        ImageFolder::scan_with(&dir, &Preprocess::new(16), 2, &ScanOptions::default()).unwrap();
    let default_scan = ImageFolder::scan(&dir, &Preprocess::new(16), 2).unwrap();
    assert_eq!(key(&square), key(&default_scan));
}
