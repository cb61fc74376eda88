//! Caption handling of the StyleRef images, per step: caption dropout (train on the bare
//! token prompt with some probability, so the token alone carries the style) and tag
//! shuffling of comma-separated captions with the first `keep_tokens` tags fixed (kohya's
//! `shuffle_caption` / `keep_tokens`). With both off, prompts are tokenized once and every
//! step uses them as they are.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::ImageEntry;
use crate::error::{Error, Result};

/// Caption options (`[data]` keys of the run config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CaptionOptions {
    /// Probability of training a StyleRef image with the bare token prompt.
    pub dropout: f64,
    /// Shuffle the comma-separated tags of a caption every step.
    pub shuffle_tags: bool,
    /// Leading tags that keep their place when shuffling.
    pub keep_tokens: usize,
}

impl CaptionOptions {
    /// Whether prompts change from step to step.
    pub fn is_active(&self) -> bool {
        self.dropout > 0.0 || self.shuffle_tags
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if (0.0..=1.0).contains(&self.dropout) {
            Ok(())
        } else {
            Err(Error::InvalidConfig(format!(
                "data.caption_dropout must be in [0, 1] (got {})",
                self.dropout
            )))
        }
    }

    /// This step's prompt for `entry`, trained as `token_prompt` (the instance prompt):
    /// the bare token prompt when dropped out, else the (shuffled) caption with the token
    /// phrase as [`ImageEntry::prompt`] adds it. Draws from `rng` only for what is on.
    pub fn prompt(&self, entry: &ImageEntry, token_prompt: &str, rng: &mut ChaCha8Rng) -> String {
        if self.dropout > 0.0 && rng.gen::<f64>() < self.dropout {
            return token_prompt.to_string();
        }
        let caption = match (&entry.caption, self.shuffle_tags) {
            (Some(c), true) => Some(shuffle_tags(c, self.keep_tokens, rng)),
            (c, _) => c.clone(),
        };
        let shuffled = ImageEntry {
            caption,
            ..entry.clone()
        };
        shuffled.prompt(token_prompt, token_prompt)
    }
}

/// `caption`'s comma-separated tags with all but the first `keep` shuffled.
pub fn shuffle_tags(caption: &str, keep: usize, rng: &mut ChaCha8Rng) -> String {
    let mut tags: Vec<&str> = caption
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let keep = keep.min(tags.len());
    tags[keep..].shuffle(rng);
    tags.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn entry(caption: Option<&str>) -> ImageEntry {
        ImageEntry {
            path: "x.png".into(),
            caption: caption.map(str::to_string),
            width: 8,
            height: 8,
            content_hash: 0,
            mask: None,
            bucket: None,
        }
    }

    #[test]
    fn shuffles_all_but_the_kept_tags() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let s = shuffle_tags("1girl, red hair , smile, outdoors, tree", 2, &mut rng);
            assert!(s.starts_with("1girl, red hair, "), "{s}");
            let mut tags: Vec<&str> = s.split(", ").collect();
            tags.sort();
            assert_eq!(tags, ["1girl", "outdoors", "red hair", "smile", "tree"]);
            seen.insert(s);
        }
        assert!(seen.len() > 3, "{seen:?}");
    }

    #[test]
    fn dropout_trains_on_the_token_prompt() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let o = CaptionOptions {
            dropout: 0.5,
            ..Default::default()
        };
        let e = entry(Some("a cat"));
        let prompts: Vec<String> = (0..200)
            .map(|_| o.prompt(&e, "zwx style", &mut rng))
            .collect();
        let bare = prompts.iter().filter(|p| *p == "zwx style").count();
        assert!((70..130).contains(&bare), "{bare}");
        assert!(prompts
            .iter()
            .all(|p| p == "zwx style" || p == "a cat, zwx style"));
        let off = CaptionOptions::default();
        assert!(!off.is_active());
        assert_eq!(off.prompt(&entry(None), "zwx style", &mut rng), "zwx style");
        assert!(CaptionOptions {
            dropout: 2.0,
            ..off
        }
        .validate()
        .is_err());
    }
}
