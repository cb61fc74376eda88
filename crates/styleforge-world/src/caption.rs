//! Plain English captions of scenes.
//!
//! `"a red house and a yellow sun on grass at sunset, sketch style"`: objects left to
//! right with their colour words, then the ground and the sky, then the style phrase. The
//! content caption (no style phrase) serves CLIP-T-like checks and drift prompts; a caption
//! with a placeholder (`"zwx style"`) in place of the style name serves personalization.
//! Every content word is a single token of the CLIP BPE vocabulary (checked in the tests);
//! so are the style names but two: "cubist" and "pointillist" are three tokens each, kept
//! because those held-out styles are bound to a placeholder token in personalization.

use crate::scene::Scene;
use crate::style::Style;

/// Every word a content caption can use.
pub const VOCABULARY: [&str; 25] = [
    "a", "an", "and", "on", "at", "by", // glue
    "person", "house", "tree", "sun", "cat", "car", // objects
    "red", "orange", "yellow", "green", "blue", "purple", // colours
    "day", "sunset", "night", // skies
    "grass", "sand", "snow", // grounds
    "style",
];

/// The caption without a style: `"a red house and a yellow sun on grass at sunset"`.
pub fn content_caption(scene: &Scene) -> String {
    let objects: Vec<String> = scene
        .objects
        .iter()
        .map(|o| {
            let colour = o.colour.name();
            let article = if colour.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            format!("{article} {colour} {}", o.kind.name())
        })
        .collect();
    format!(
        "{} on {} {}",
        objects.join(" and "),
        scene.ground.name(),
        scene.sky.phrase()
    )
}

/// The full caption: the content caption, a comma and the style phrase
/// (`"…, pixel art style"`).
pub fn caption(scene: &Scene, style: Style) -> String {
    caption_with_style_word(scene, &style.phrase())
}

/// The content caption followed by `", "` and `style_words` in place of the style phrase,
/// e.g. `caption_with_style_word(scene, "zwx style")`; with empty `style_words`, the
/// content caption alone.
pub fn caption_with_style_word(scene: &Scene, style_words: &str) -> String {
    let content = content_caption(scene);
    if style_words.trim().is_empty() {
        content
    } else {
        format!("{content}, {}", style_words.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::{Colour, Ground, ObjectKind, SceneObject, Sky, Slot};

    fn scene() -> Scene {
        let object = |kind, colour, slot| SceneObject {
            kind,
            colour,
            slot,
            x: 0.5,
            y: 0.8,
            scale: 1.0,
            facing_left: false,
        };
        Scene {
            sky: Sky::Sunset,
            ground: Ground::Grass,
            horizon: 0.6,
            objects: vec![
                object(ObjectKind::House, Colour::Red, Slot::Left),
                object(ObjectKind::Sun, Colour::Orange, Slot::Right),
            ],
            stars: vec![],
            texture_seed: 0,
        }
    }

    #[test]
    fn captions_read_as_english() {
        let s = scene();
        assert_eq!(
            content_caption(&s),
            "a red house and an orange sun on grass at sunset"
        );
        assert_eq!(
            caption(&s, Style::PixelArt),
            "a red house and an orange sun on grass at sunset, pixel art style"
        );
        assert_eq!(
            caption_with_style_word(&s, "zwx style"),
            "a red house and an orange sun on grass at sunset, zwx style"
        );
        assert_eq!(caption_with_style_word(&s, " "), content_caption(&s));
    }
}
