//! One decoder for evaluation and training: RGBA, grey, 16-bit and EXIF-rotated files
//! (written here with the `image` crate) reach the metrics (`ImageSet` → `EvalImage::load`,
//! what feature extraction decodes) and the training data (`ImageFolder`, what the latent
//! cache encodes) as the same 8-bit RGB pixels: alpha dropped, grey repeated, 16 bits
//! scaled with rounding, the EXIF orientation applied.

use std::path::{Path, PathBuf};

use candle_core::Device;
use image::codecs::jpeg::JpegEncoder;
use image::{
    ExtendedColorType, GrayImage, ImageBuffer, ImageEncoder, Luma, Rgb, RgbImage, Rgba, RgbaImage,
};
use styleforge::data::{ImageFolder, Preprocess};
use styleforge::evaluation::ImageSet;
use styleforge::image_io::image_to_tensor;

const SIDE: u32 = 16;

/// A big-endian EXIF (TIFF) block holding one tag: Orientation = `value`.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut e = b"MM\0\x2a\0\0\0\x08".to_vec();
    e.extend_from_slice(&1u16.to_be_bytes()); // one entry
    e.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    e.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    e.extend_from_slice(&1u32.to_be_bytes()); // count
    e.extend_from_slice(&value.to_be_bytes());
    e.extend_from_slice(&[0, 0]); // value padding
    e.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    e
}

/// JPEG bytes of `img`, with an EXIF orientation when given.
fn jpeg(img: &RgbImage, orientation: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = JpegEncoder::new_with_quality(&mut out, 95);
    if let Some(o) = orientation {
        enc.set_exif_metadata(exif_orientation(o)).unwrap();
    }
    enc.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        ExtendedColorType::Rgb8,
    )
    .unwrap();
    out
}

/// Writes the four kinds of file into `dir`; returns each file's name and the RGB pixels
/// PIL's `exif_transpose` + `convert("RGB")` gives (16 bits rounded, not truncated).
fn write_files(dir: &Path) -> Vec<(String, RgbImage)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut expected = Vec::new();

    // RGBA with every alpha from opaque to fully transparent: the stored colour stays.
    let rgba = RgbaImage::from_fn(SIDE, SIDE, |x, y| {
        Rgba([(x * 15) as u8, (y * 15) as u8, 90, ((x + y) * 8) as u8])
    });
    rgba.save(dir.join("a-rgba.png")).unwrap();
    expected.push((
        "a-rgba.png".to_string(),
        RgbImage::from_fn(SIDE, SIDE, |x, y| {
            let p = rgba.get_pixel(x, y).0;
            Rgb([p[0], p[1], p[2]])
        }),
    ));

    // Grey: repeated into the three channels.
    let grey = GrayImage::from_fn(SIDE, SIDE, |x, y| Luma([(x * 16 + y) as u8]));
    grey.save(dir.join("b-grey.png")).unwrap();
    expected.push((
        "b-grey.png".to_string(),
        RgbImage::from_fn(SIDE, SIDE, |x, y| {
            let v = grey.get_pixel(x, y).0[0];
            Rgb([v, v, v])
        }),
    ));

    // 16-bit colour: (v + 128) / 257 per channel, so 100·257 + 128 rounds up to 101.
    let deep: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(SIDE, SIDE, |x, y| {
        Rgb([(x * 4096) as u16, 100 * 257 + 128 + y as u16, 65535])
    });
    deep.save(dir.join("c-deep.png")).unwrap();
    let to8 = |v: u16| ((v as u32 + 128) / 257) as u8;
    expected.push((
        "c-deep.png".to_string(),
        RgbImage::from_fn(SIDE, SIDE, |x, y| {
            let p = deep.get_pixel(x, y).0;
            Rgb([to8(p[0]), to8(p[1]), to8(p[2])])
        }),
    ));

    // A JPEG stored 32×16 with EXIF orientation 6 (shown turned a quarter turn clockwise):
    // decoded upright, 16×32. The same bytes without the EXIF block decode to the stored
    // pixels (read here by `image` itself), which turned are what is expected.
    let stored = RgbImage::from_fn(2 * SIDE, SIDE, |x, y| {
        if x < SIDE {
            Rgb([220, 20 + y as u8, 20])
        } else {
            Rgb([20, 20, 220 - y as u8])
        }
    });
    std::fs::write(dir.join("d-turned.jpg"), jpeg(&stored, Some(6))).unwrap();
    let plain = image::load_from_memory(&jpeg(&stored, None))
        .unwrap()
        .to_rgb8();
    expected.push((
        "d-turned.jpg".to_string(),
        image::imageops::rotate90(&plain),
    ));
    expected
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn eval_and_training_decode_every_kind_of_file_to_the_same_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    let expected = write_files(&dir);
    let turned = &expected[3].1;
    assert_eq!(turned.dimensions(), (SIDE, 2 * SIDE));
    // The red half of the stored picture ends up on top.
    assert!(
        turned.get_pixel(SIDE / 2, 2).0[0] > 150,
        "{:?}",
        turned.get_pixel(8, 2)
    );

    // Evaluation: the images of a folder set, decoded as feature extraction decodes them.
    let eval: Vec<(String, RgbImage)> = ImageSet::Folder(dir.clone())
        .items()
        .unwrap()
        .iter()
        .map(|img| (name(img.path().unwrap()), img.load().unwrap()))
        .collect();
    // Training: the same folder as a concept's images.
    let prep = Preprocess::new(SIDE);
    let folder = ImageFolder::scan(&dir, &prep, expected.len()).unwrap();
    let paths: Vec<PathBuf> = folder.entries().iter().map(|e| e.path.clone()).collect();
    assert_eq!(paths.len(), expected.len());

    for (i, (file, want)) in expected.iter().enumerate() {
        let (eval_name, eval_img) = &eval[i];
        assert_eq!(eval_name, file);
        assert_eq!(eval_img, want, "{file}: the pixels evaluation scores");
        assert_eq!(name(&paths[i]), *file);
        let train_img = folder.load_rgb(i).unwrap();
        assert_eq!(&train_img, want, "{file}: the pixels training reads");
        // And what training encodes: the preprocessed square of those same pixels.
        let tensor = folder.tensor(i, &prep, false, &Device::Cpu).unwrap();
        let from_eval = image_to_tensor(&prep.apply(eval_img, i, false), &Device::Cpu).unwrap();
        let diff = (tensor - from_eval)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "{file}: the training tensor");
    }
}
