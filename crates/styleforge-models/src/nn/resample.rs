//! Nearest-neighbour upsampling with a backward pass for any target size.

use candle_core::{Result, Tensor};

/// Nearest-neighbour resize of `[b, c, h, w]` to `[b, c, out_h, out_w]`, picking source
/// index `floor(dst · in / out)` as PyTorch's `interpolate(mode="nearest")` does.
///
/// An exact 2× upsample (the common case) is a broadcast; other sizes (latents whose sides
/// are not multiples of the UNet's total downsampling) gather rows and columns. Both have a
/// backward pass, unlike candle's `upsample_nearest2d` for non-integer factors.
pub fn upsample_nearest(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if out_h == 2 * h && out_w == 2 * w {
        return x
            .reshape((b, c, h, 1, w, 1))?
            .broadcast_as((b, c, h, 2, w, 2))?
            .reshape((b, c, out_h, out_w));
    }
    let rows = nearest_indices(h, out_h, x.device())?;
    let cols = nearest_indices(w, out_w, x.device())?;
    x.index_select(&rows, 2)?.index_select(&cols, 3)
}

fn nearest_indices(input: usize, output: usize, device: &candle_core::Device) -> Result<Tensor> {
    // PyTorch computes the scale in f32 as input / output.
    let scale = input as f32 / output as f32;
    let idx: Vec<u32> = (0..output)
        .map(|dst| ((dst as f32 * scale).floor() as usize).min(input - 1) as u32)
        .collect();
    Tensor::from_vec(idx, output, device)
}
