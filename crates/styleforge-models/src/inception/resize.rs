//! Resizing images to the 299×299 input of the FID InceptionV3, the two ways FID tools do.
//!
//! - [`ResizeMode::CleanFid`] (the default) is clean-fid's `make_resizer("PIL", False,
//!   "bicubic", (299, 299))` (Parmar et al., "On Aliased Resizing and Surprising Subtleties in
//!   GAN Evaluation", CVPR 2022): Pillow's antialiased BICUBIC resize applied to each channel as
//!   a float32 (`'F'` mode) image, clipped to the value range, never re-quantised to 8 bits.
//!   Implemented here as Pillow's `Resample.c` does it: separable, horizontal pass first into a
//!   float32 intermediate, then vertical; the kernel support widened by the downscale factor;
//!   the Keys cubic with a = −0.5; each output's weights normalised to sum 1; sums in f64.
//! - [`ResizeMode::PytorchFid`] is pytorch-fid's `resize_input=True`:
//!   `F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)`, no antialias
//!   (aliases when downscaling, which is what clean-fid's paper is about).
//!
//! Both work on planar float data (`[c, h, w]`, values in [0, 1]); [`rgb8_to_chw`] turns an
//! interleaved 8-bit RGB buffer (`image::RgbImage::as_raw`) into that layout.

use candle_core::Tensor;

use crate::error::{ModelError, Result};

/// The side of the square input the FID InceptionV3 takes.
pub const FID_INPUT_SIZE: usize = 299;

/// How an image is brought to 299×299 before the FID InceptionV3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeMode {
    /// clean-fid: Pillow's antialiased bicubic on float data, clipped to [0, 1].
    #[default]
    CleanFid,
    /// pytorch-fid: PyTorch's bilinear interpolation, `align_corners=False`, no antialias.
    PytorchFid,
}

/// Interleaved 8-bit RGB (`h·w·3` bytes, row-major, as `image::RgbImage::as_raw` holds it)
/// → planar `[3, h, w]` values in [0, 1].
pub fn rgb8_to_chw(pixels: &[u8], height: usize, width: usize) -> Result<Vec<f32>> {
    let plane = height * width;
    if pixels.len() != plane * 3 {
        return Err(ModelError::BadInput(format!(
            "an RGB image of {height}x{width} has {} bytes, got {}",
            plane * 3,
            pixels.len()
        )));
    }
    let mut out = vec![0f32; plane * 3];
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * plane + i] = f32::from(v) / 255.0;
        }
    }
    Ok(out)
}

/// Resizes a planar image `[channels, height, width]` (row-major `f32`) to
/// `[channels, out.0, out.1]`, each channel on its own.
pub fn resize_chw(
    image: &[f32],
    channels: usize,
    size: (usize, usize),
    out: (usize, usize),
    mode: ResizeMode,
) -> Result<Vec<f32>> {
    let (h, w) = size;
    let (oh, ow) = out;
    if h == 0 || w == 0 || oh == 0 || ow == 0 || channels == 0 {
        return Err(ModelError::BadInput(format!(
            "cannot resize a {channels}x{h}x{w} image to {oh}x{ow}"
        )));
    }
    if image.len() != channels * h * w {
        return Err(ModelError::BadInput(format!(
            "a {channels}x{h}x{w} image has {} values, got {}",
            channels * h * w,
            image.len()
        )));
    }
    let mut result = Vec::with_capacity(channels * oh * ow);
    for plane in image.chunks_exact(h * w) {
        match mode {
            ResizeMode::CleanFid => {
                let mut r = pil_bicubic(plane, size, out);
                // clean-fid: `np.asarray(img).clip(0, 255)` (here on the 0..1 scale).
                r.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
                result.extend_from_slice(&r);
            }
            ResizeMode::PytorchFid => result.extend_from_slice(&torch_bilinear(plane, size, out)),
        }
    }
    Ok(result)
}

/// An image tensor `[3, h, w]` (values in [0, 1]) → the `[3, 299, 299]` f32 input of
/// [`super::FidInceptionV3::features`].
pub fn resize_for_fid(image: &Tensor, mode: ResizeMode) -> Result<Tensor> {
    let (c, h, w) = match image.dims() {
        &[3, h, w] => (3, h, w),
        other => {
            return Err(ModelError::BadInput(format!(
                "resize_for_fid expects one RGB image [3, h, w], got {other:?}"
            )))
        }
    };
    let data = image
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let s = FID_INPUT_SIZE;
    let out = resize_chw(&data, c, (h, w), (s, s), mode)?;
    Ok(Tensor::from_vec(out, (c, s, s), image.device())?)
}

/// Pillow's bicubic filter (`bicubic_filter` in `Resample.c`, a = −0.5), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// One axis' taps, as Pillow's `precompute_coeffs`: for each output index, the first input
/// index and the normalised weights of the inputs from there on.
fn pil_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    const SUPPORT: f64 = 2.0;
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; Pillow then clamps to the image.
            let xmin = ((center - support + 0.5).trunc().max(0.0)) as usize;
            let xmax = ((center + support + 0.5).trunc() as usize).min(in_size);
            let mut k: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|v| *v /= ww);
            }
            (xmin, k)
        })
        .collect()
}

/// Pillow's `ImagingResample` on one `'F'` plane with the BICUBIC filter: horizontal pass
/// (skipped when the width is unchanged) into float32, then vertical.
fn pil_bicubic(src: &[f32], (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f32> {
    let horizontal: Vec<f32> = if ow != w {
        let taps = pil_coeffs(w, ow);
        let mut tmp = Vec::with_capacity(h * ow);
        for row in src.chunks_exact(w) {
            for (xmin, k) in &taps {
                let ss: f64 = row[*xmin..]
                    .iter()
                    .zip(k)
                    .map(|(&v, &c)| f64::from(v) * c)
                    .sum();
                tmp.push(ss as f32);
            }
        }
        tmp
    } else {
        src.to_vec()
    };
    if oh == h {
        return horizontal;
    }
    let taps = pil_coeffs(h, oh);
    let mut out = Vec::with_capacity(oh * ow);
    let mut acc = vec![0f64; ow];
    for (ymin, k) in &taps {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (y, &c) in k.iter().enumerate() {
            let row = &horizontal[(ymin + y) * ow..(ymin + y + 1) * ow];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += f64::from(v) * c;
            }
        }
        out.extend(acc.iter().map(|&a| a as f32));
    }
    out
}

/// PyTorch's source index and weights for one output index of a linear resize with
/// `align_corners=False` (`area_pixel_compute_source_index` + `guard_index_and_lambda`,
/// in f32 as PyTorch computes them for f32 tensors).
fn torch_linear_taps(in_size: usize, out_size: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|d| {
            let real = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (real.floor() as usize).min(in_size - 1);
            let l1 = (real - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 + 1 < in_size { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// `F.interpolate(mode="bilinear", align_corners=False)` on one plane.
fn torch_bilinear(src: &[f32], (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f32> {
    let rows = torch_linear_taps(h, oh);
    let cols = torch_linear_taps(w, ow);
    let mut out = Vec::with_capacity(oh * ow);
    for &(y0, y1, h0, h1) in &rows {
        let (r0, r1) = (&src[y0 * w..(y0 + 1) * w], &src[y1 * w..(y1 + 1) * w]);
        for &(x0, x1, w0, w1) in &cols {
            let t0 = w0 * r0[x0] + w1 * r0[x1];
            let t1 = w0 * r1[x0] + w1 * r1[x1];
            out.push(h0 * t0 + h1 * t1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_in_both_modes() {
        let img: Vec<f32> = (0..3 * 5 * 7).map(|i| (i % 11) as f32 / 10.0).collect();
        for mode in [ResizeMode::CleanFid, ResizeMode::PytorchFid] {
            let out = resize_chw(&img, 3, (5, 7), (5, 7), mode).unwrap();
            assert_eq!(out, img, "{mode:?}");
        }
    }

    #[test]
    fn pil_weights_sum_to_one_and_stay_inside() {
        for (i, o) in [(512, 299), (170, 299), (7, 3), (3, 7)] {
            for (xmin, k) in pil_coeffs(i, o) {
                assert!(xmin + k.len() <= i);
                assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn rgb8_is_planar() {
        let px = [0u8, 255, 51, 255, 0, 102];
        let out = rgb8_to_chw(&px, 1, 2).unwrap();
        assert_eq!(out, vec![0.0, 1.0, 1.0, 0.0, 0.2, 0.4]);
        assert!(rgb8_to_chw(&px, 2, 2).is_err());
    }
}
