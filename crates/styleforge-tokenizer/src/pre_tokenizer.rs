//! Splitting normalised text into the words that BPE encodes one at a time.
//!
//! The reference applies two regexes in sequence and drops what neither matches (that is,
//! whitespace):
//!
//! 1. CLIP's pattern
//!    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`
//!    (letter runs, single digits, runs of other symbols, English contractions);
//! 2. inside each piece, GPT-2's byte-level pattern. It only splits pieces further in one
//!    case: the literal `<|startoftext|>` / `<|endoftext|>` pieces of step 1 (reached when the
//!    text spells a special token that is not matched as one, e.g. in upper case) become
//!    `<|`, `startoftext`, `|>`.

use regex::Regex;
use std::sync::OnceLock;

const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+";

/// GPT-2's pattern without its whitespace branches (the pieces it sees contain none).
const BYTE_LEVEL_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+";

struct Patterns {
    clip: Regex,
    byte_level: Regex,
}

fn patterns() -> &'static Patterns {
    static PATTERNS: OnceLock<Patterns> = OnceLock::new();
    PATTERNS.get_or_init(|| Patterns {
        // Both patterns are constants covered by the tests, so compiling them cannot fail.
        clip: Regex::new(CLIP_PATTERN).expect("CLIP pre-tokenizer pattern compiles"),
        byte_level: Regex::new(BYTE_LEVEL_PATTERN).expect("byte-level pattern compiles"),
    })
}

/// Calls `word` for every word of the normalised `text`, in order.
pub(crate) fn for_each_word<'a>(text: &'a str, mut word: impl FnMut(&'a str)) {
    let p = patterns();
    for piece in p.clip.find_iter(text) {
        for sub in p.byte_level.find_iter(piece.as_str()) {
            word(sub.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::for_each_word;

    fn words(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for_each_word(text, |w| out.push(w));
        out
    }

    #[test]
    fn splits_like_clip() {
        assert_eq!(
            words("a photo, of 42 cats!!"),
            ["a", "photo", ",", "of", "4", "2", "cats", "!!"]
        );
        assert_eq!(words("it'sa don't"), ["it", "'s", "a", "don", "'t"]);
        assert_eq!(
            words("x<|endoftext|>!"),
            ["x", "<|", "endoftext", "|>", "!"]
        );
        assert_eq!(words("x<|endof"), ["x", "<|", "endof"]);
        assert_eq!(words("日本語 テスト"), ["日本語", "テスト"]);
        assert_eq!(words("i\u{307}stanbul"), ["i", "\u{307}", "stanbul"]);
        assert!(words("   ").is_empty());
    }
}
