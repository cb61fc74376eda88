//! The one image layer: every picture the library reads or writes goes through here.
//!
//! - [`decode`]: image files (PNG, JPEG, WebP) to 8-bit RGB, as the field's Python tools read
//!   them (`PIL.ImageOps.exif_transpose` then `Image.convert("RGB")`): one decoder for
//!   training data, evaluation sets and `stylize` inputs ([`load_rgb`], [`decode_rgb`]).
//! - [`encode`]: PNGs, with the AUTOMATIC1111 `parameters` text chunk when there are
//!   generation parameters to keep, written atomically ([`save_png`],
//!   [`save_png_with_parameters`], [`read_png_parameters`]).
//! - [`tensor`]: RGB images to `[3, H, W]` tensors in [-1, 1] and decoded `[3, H, W]` images
//!   in [0, 1] back to RGB ([`image_to_tensor`], [`tensor_to_image`]), and the exact resize
//!   `stylize` uses ([`resize_exact`]).
//!
//! Image folders are recognised by one list of extensions, [`IMAGE_EXTENSIONS`]
//! ([`is_image_file`]).

pub mod decode;
pub mod encode;
pub mod tensor;

use std::path::Path;

pub use decode::{decode_rgb, decode_rgb_within, load_rgb};
pub use encode::{png_parameters_of, read_png_parameters, save_png, save_png_with_parameters};
pub use tensor::{image_to_tensor, resize_exact, rgb_to_tensor, tensor_to_image};

/// File extensions (lower case) taken as images when a folder is listed; compared
/// case-insensitively. Each is a format the decoder reads.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// Whether `path` names an image file by its extension ([`IMAGE_EXTENSIONS`], any case).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_match_in_any_case_and_only_those() {
        for name in ["a.png", "b.JPG", "c.jpeg", "d.WebP"] {
            assert!(is_image_file(Path::new(name)), "{name}");
        }
        for name in ["a.txt", "png", "b.gif", "c.png.tmp"] {
            assert!(!is_image_file(Path::new(name)), "{name}");
        }
    }
}
