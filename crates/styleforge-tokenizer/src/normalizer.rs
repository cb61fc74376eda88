//! CLIP's text normalisation, as in the `tokenizers`-backed `CLIPTokenizer`:
//! Unicode NFC, then every run of whitespace becomes one space, then each character is
//! lower-cased on its own.
//!
//! Details that matter for matching the reference exactly:
//! - its NFC uses Unicode 9.0 tables: characters assigned after Unicode 9.0 are left alone
//!   (they neither compose nor get reordered), so this module applies NFC only to the runs of
//!   text between such characters;
//! - "whitespace" is the Unicode `White_Space` property (what `\s` means in the reference's
//!   Oniguruma regex);
//! - lower-casing is per character, without the context rules of [`str::to_lowercase`], so a
//!   word-final `Σ` becomes `σ`, not `ς`.

use regex::Regex;
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;

/// Matches the characters that Unicode 9.0 did not have.
fn post_unicode9() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    // A constant pattern covered by the tests: compiling it cannot fail.
    PATTERN.get_or_init(|| Regex::new(r"\P{Age=9.0}").expect("Age pattern compiles"))
}

/// NFC with Unicode 9.0's normalisation data.
fn nfc_unicode9(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    for m in post_unicode9().find_iter(text) {
        out.extend(text[start..m.start()].nfc());
        out.push_str(m.as_str());
        start = m.end();
    }
    out.extend(text[start..].nfc());
    out
}

/// Normalises `text` the way CLIP does before splitting it into words.
pub(crate) fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_whitespace = false;
    for c in nfc_unicode9(text).chars() {
        if c.is_whitespace() {
            if !in_whitespace {
                out.push(' ');
            }
            in_whitespace = true;
        } else {
            in_whitespace = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn collapses_whitespace_and_lowercases() {
        assert_eq!(normalize("  A\t\n photo\u{3000}\u{85}OF "), " a photo of ");
        // control characters that are not White_Space are kept
        assert_eq!(normalize("a\u{1f}b"), "a\u{1f}b");
        // per-character lower-casing: no final sigma
        assert_eq!(normalize("ΟΔΟΣ"), "οδοσ");
        // NFC composes e + combining acute
        assert_eq!(normalize("E\u{301}"), "é");
        // İ lower-cases to i + combining dot above
        assert_eq!(normalize("İ"), "i\u{307}");
    }

    #[test]
    fn nfc_uses_unicode_9_data() {
        // U+1AB5 (Unicode 7.0, ccc 220) is reordered before U+0301 (ccc 230) …
        assert_eq!(normalize("q\u{301}\u{1ab5}"), "q\u{1ab5}\u{301}");
        // … U+1DF9 (Unicode 10.0, ccc 220) is not.
        assert_eq!(normalize("q\u{301}\u{1df9}"), "q\u{301}\u{1df9}");
    }
}
