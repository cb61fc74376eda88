//! The world as a dataset: sample `i` is a pure function of `(seed, i)`, and a range of
//! samples can be written as a captioned image folder.
//!
//! The folder follows the convention of the training loader
//! (`styleforge::data::folder`): `img_0000.png` with its caption in `img_0000.txt` beside
//! it, file-name order = sample order. `metadata.jsonl` holds one JSON object of labels per
//! image (file, index, style, captions, sky, ground, objects), for probes and reports.

use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Range;
use std::path::Path;

use image::RgbImage;

use crate::caption::{caption, caption_with_style_word, content_caption};
use crate::render::{render, DEFAULT_SIZE};
use crate::scene::{Scene, SceneSampler};
use crate::style::Style;

/// A seeded, endless supply of captioned pictures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// Seed of everything: scenes, style choice and render noise.
    pub seed: u64,
    /// Picture size in pixels (default [`DEFAULT_SIZE`]).
    pub size: u32,
    /// Styles cycled through by [`World::sample`]: sample `i` is in `styles[i % len]`.
    /// Empty means plain.
    pub styles: Vec<Style>,
}

/// One picture of the world with its captions and labels.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Position in the world's stream.
    pub index: u64,
    /// The rendered picture.
    pub image: RgbImage,
    /// Content caption plus style phrase.
    pub caption: String,
    /// The caption without the style phrase.
    pub content_caption: String,
    /// The ground-truth scene.
    pub scene: Scene,
    /// The style it is rendered in.
    pub style: Style,
}

/// Which caption a written folder's `.txt` files hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptionKind {
    /// Content and style name (`"a red car on snow by day, sketch style"`).
    Full,
    /// Content only (the loader then appends its token phrase).
    Content,
    /// Content followed by these words in place of the style name (`"zwx style"`).
    StyleWord(String),
}

impl World {
    /// The world of `seed`: 32×32 pictures cycling through all seven styles.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            size: DEFAULT_SIZE,
            styles: Style::ALL.to_vec(),
        }
    }

    /// The same world at another picture size.
    pub fn with_size(mut self, size: u32) -> Self {
        self.size = size;
        self
    }

    /// The same world restricted to `styles` (e.g. [`Style::BASE`] for pretraining).
    pub fn with_styles(mut self, styles: &[Style]) -> Self {
        self.styles = styles.to_vec();
        self
    }

    /// The scene of sample `index`.
    pub fn scene(&self, index: u64) -> Scene {
        SceneSampler::new(stream_seed(self.seed, index, 0)).sample()
    }

    /// The style of sample `index`.
    pub fn style(&self, index: u64) -> Style {
        if self.styles.is_empty() {
            Style::Plain
        } else {
            self.styles[(index % self.styles.len() as u64) as usize]
        }
    }

    /// Sample `index`, in its own style.
    pub fn sample(&self, index: u64) -> Sample {
        self.sample_in_style(index, self.style(index))
    }

    /// Sample `index`'s scene rendered in `style` (same scene and noise seed as
    /// [`World::sample`]), e.g. for style-swapped pairs.
    pub fn sample_in_style(&self, index: u64, style: Style) -> Sample {
        let scene = self.scene(index);
        let image = render(&scene, style, self.size, stream_seed(self.seed, index, 1));
        Sample {
            index,
            image,
            caption: caption(&scene, style),
            content_caption: content_caption(&scene),
            scene,
            style,
        }
    }

    /// Samples `0, 1, 2, …`, without end.
    pub fn iter(&self) -> impl Iterator<Item = Sample> + '_ {
        (0..).map(|i| self.sample(i))
    }

    /// Writes samples `range` into `dir` (created if missing): `img_NNNN.png`,
    /// `img_NNNN.txt` with the caption chosen by `captions`, and `metadata.jsonl`.
    /// Returns the number of images written.
    pub fn write_folder(
        &self,
        dir: &Path,
        range: Range<u64>,
        captions: &CaptionKind,
    ) -> std::io::Result<usize> {
        std::fs::create_dir_all(dir)?;
        let digits = range.end.saturating_sub(1).max(1).to_string().len().max(4);
        let mut metadata = std::fs::File::create(dir.join("metadata.jsonl"))?;
        let mut written = 0;
        for i in range {
            let sample = self.sample(i);
            let stem = format!("img_{i:0digits$}");
            let file = format!("{stem}.png");
            sample
                .image
                .save(dir.join(&file))
                .map_err(std::io::Error::other)?;
            let text = match captions {
                CaptionKind::Full => sample.caption.clone(),
                CaptionKind::Content => sample.content_caption.clone(),
                CaptionKind::StyleWord(words) => caption_with_style_word(&sample.scene, words),
            };
            std::fs::write(dir.join(format!("{stem}.txt")), &text)?;
            writeln!(metadata, "{}", metadata_line(&file, &sample, &text))?;
            written += 1;
        }
        Ok(written)
    }
}

/// One `metadata.jsonl` line: the sample's labels as a JSON object.
pub fn metadata_line(file: &str, sample: &Sample, caption_text: &str) -> String {
    let s = &sample.scene;
    let mut line = String::new();
    let _ = write!(
        line,
        "{{\"file\":{},\"index\":{},\"style\":{},\"caption\":{},\"content_caption\":{},\
         \"sky\":{},\"ground\":{},\"objects\":[",
        json_str(file),
        sample.index,
        json_str(sample.style.id()),
        json_str(caption_text),
        json_str(&sample.content_caption),
        json_str(s.sky.name()),
        json_str(s.ground.name()),
    );
    for (k, o) in s.objects.iter().enumerate() {
        let _ = write!(
            line,
            "{}{{\"kind\":{},\"colour\":{},\"slot\":{}}}",
            if k > 0 { "," } else { "" },
            json_str(o.kind.name()),
            json_str(o.colour.name()),
            json_str(o.slot.name()),
        );
    }
    line.push_str("]}");
    line
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An independent seed for stream `stream` of sample `index` of world `seed`.
fn stream_seed(seed: u64, index: u64, stream: u64) -> u64 {
    crate::render::hash_seed(seed, index, stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a \"b\"\\\n"), "\"a \\\"b\\\"\\\\\\n\"");
    }
}
