//! Plain: the canvas as drawn (flat shapes, sky gradient, speckled ground).

use super::Canvas;

/// The plain picture.
pub(super) fn apply(canvas: &Canvas) -> Vec<[f32; 3]> {
    canvas.rgb.clone()
}
