//! The seven rendering styles, and which of them a base model sees in pretraining.
//!
//! The split: **base** styles (plain, pixel art, sketch, watercolor) are in the pretraining
//! data, so the base model knows their names; **held-out** styles (cel, cubist, pointillist)
//! never appear there and are what personalization (StyleForge, DreamBooth, …) has to teach
//! from a handful of references. The held-out three each have one simple, measurable
//! signature (thick dark outlines, dark facet edges, dots on white) that no base style has.
//!
//! Cubist stays held out, but note: in the throw-away PyTorch experiment (see
//! `shared/reference/toy-world/README.md`) a 6.7M-parameter pixel-space base fine-tuned for
//! 400 steps on cubist references at 32×32 did not learn it (thin dark facet edges are hard
//! at that size); pointillist and cel are the more learnable held-out styles there.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A rendering style of the toy world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// Flat colours, simple shapes, a sky gradient and a speckled ground.
    Plain,
    /// The scene at a quarter of the resolution in a small palette, blown back up.
    PixelArt,
    /// Grey outlines and diagonal hatching on paper white.
    Sketch,
    /// Flat fills with thick dark outlines.
    Cel,
    /// Soft blur, washed colours and paper grain.
    Watercolor,
    /// Voronoi facets filled with their mean colour, with dark edges.
    Cubist,
    /// Coloured dots on white.
    Pointillist,
}

impl Style {
    /// Every style, in the canonical column order.
    pub const ALL: [Style; 7] = [
        Style::Plain,
        Style::PixelArt,
        Style::Sketch,
        Style::Cel,
        Style::Watercolor,
        Style::Cubist,
        Style::Pointillist,
    ];

    /// The styles a base model is pretrained on (named in its captions).
    pub const BASE: [Style; 4] = [
        Style::Plain,
        Style::PixelArt,
        Style::Sketch,
        Style::Watercolor,
    ];

    /// The styles kept out of pretraining, for personalization to learn from references.
    /// Cubist is among them but was not learnt at 32×32 in the PyTorch experiment (see the
    /// module docs); prefer cel or pointillist for a demo that must visibly learn.
    pub const HELD_OUT: [Style; 3] = [Style::Cel, Style::Cubist, Style::Pointillist];

    /// The English name used in captions (`"pixel art"`).
    pub fn name(self) -> &'static str {
        match self {
            Style::Plain => "plain",
            Style::PixelArt => "pixel art",
            Style::Sketch => "sketch",
            Style::Cel => "cel",
            Style::Watercolor => "watercolor",
            Style::Cubist => "cubist",
            Style::Pointillist => "pointillist",
        }
    }

    /// A file- and config-friendly identifier (`"pixel_art"`), as serde writes it.
    pub fn id(self) -> &'static str {
        match self {
            Style::PixelArt => "pixel_art",
            other => other.name(),
        }
    }

    /// The caption phrase naming the style (`"pixel art style"`).
    pub fn phrase(self) -> String {
        format!("{} style", self.name())
    }

    /// Whether the style is in the pretraining data ([`Style::BASE`]).
    pub fn is_base(self) -> bool {
        Style::BASE.contains(&self)
    }

    /// The style named `name`: its caption name or id, any case, with `-`, `_` or a space
    /// between words, and an optional trailing `" style"` (`"Pixel-Art"`, `"cel style"`).
    pub fn from_name(name: &str) -> Option<Style> {
        let lower = name.trim().to_ascii_lowercase().replace(['-', '_'], " ");
        let words: Vec<&str> = lower.split_whitespace().collect();
        let words = match words.split_last() {
            Some((&"style", rest)) if !rest.is_empty() => rest,
            _ => &words[..],
        };
        let joined = words.join(" ");
        Style::ALL.into_iter().find(|s| s.name() == joined)
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown style name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseStyleError(pub String);

impl fmt::Display for ParseStyleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Style::ALL.iter().map(|s| s.id()).collect();
        write!(
            f,
            "unknown style {:?} (expected one of {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for ParseStyleError {}

impl FromStr for Style {
    type Err = ParseStyleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Style::from_name(s).ok_or_else(|| ParseStyleError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for style in Style::ALL {
            assert_eq!(Style::from_name(style.name()), Some(style));
            assert_eq!(style.id().parse::<Style>(), Ok(style));
            assert_eq!(Style::from_name(&style.phrase()), Some(style));
        }
        assert_eq!(Style::from_name("Pixel-Art"), Some(Style::PixelArt));
        assert!(Style::from_name("style").is_none());
        assert!("oil".parse::<Style>().is_err());
    }

    #[test]
    fn base_and_held_out_partition_all() {
        for style in Style::ALL {
            assert_ne!(style.is_base(), Style::HELD_OUT.contains(&style));
        }
    }
}
