//! Prompts of the generated images, and the content prompt CLIP-T is measured against.
//!
//! CLIP-T measures how well an image follows its text. The StyleForge paper computes it
//! against the *content* prompt, with the style token taken out ("a photo of a dog, ohwx
//! style" → "a photo of a dog"): a style token is a rare word CLIP has no meaning for, and
//! the style phrase would reward or punish the style rather than the content.
//! [`content_prompt`] does that.
//!
//! Prompts come from, in order of precedence:
//! 1. a prompts file ([`read_prompts_file`]): plain UTF-8 text, one prompt per line; empty
//!    lines and lines starting with `#` are skipped. Generated image `i` (in evaluation
//!    order, i.e. sorted by file name) gets line `i mod L` of the `L` prompts, so a file with
//!    one line applies to every image, and a file with as many lines as images maps them one
//!    to one;
//! 2. else each image's own prompt: the `parameters` chunk of a PNG that `styleforge
//!    generate` (or AUTOMATIC1111) wrote, or [`super::NamedImage::prompt`].
//!
//! Images without a prompt are simply left out of CLIP-T.

use std::path::Path;

use crate::error::{Error, Result};

/// The style tokens [`content_prompt`] removes by default: the usual DreamBooth/StyleForge
/// identifiers and placeholders. `<*>` stands for any `<...>` word (Textual Inversion
/// placeholders such as `<my-style>`).
pub const DEFAULT_STYLE_TOKENS: [&str; 5] = ["ohwx", "phol", "[V]", "[W]", "<*>"];

/// Reads a prompts file: one prompt per line, empty lines and `#` comments skipped, each
/// line trimmed. Errors (naming the file) when it cannot be read or holds no prompt.
pub fn read_prompts_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if prompts.is_empty() {
        return Err(Error::Data {
            path: path.to_path_buf(),
            message: "the prompts file holds no prompt (one prompt per line expected)".into(),
        });
    }
    Ok(prompts)
}

/// The prompt of generated image `index` from a prompts file's `prompts`: line
/// `index mod prompts.len()`.
pub fn prompt_for_index(prompts: &[String], index: usize) -> Option<&str> {
    (!prompts.is_empty()).then(|| prompts[index % prompts.len()].as_str())
}

/// Punctuation that may surround a word without being part of it.
const WORD_PUNCT: &[char] = &[',', '.', ';', ':', '!', '?', '"', '\'', '(', ')'];

fn bare(word: &str) -> &str {
    word.trim_matches(WORD_PUNCT)
}

fn is_style_token(word: &str, tokens: &[&str]) -> bool {
    let w = bare(word);
    tokens.iter().any(|t| {
        if *t == "<*>" {
            w.len() > 2 && w.starts_with('<') && w.ends_with('>')
        } else {
            w.eq_ignore_ascii_case(t)
        }
    })
}

fn is_word(word: &str, target: &str) -> bool {
    bare(word).eq_ignore_ascii_case(target)
}

/// The content prompt of `prompt`: the prompt with its style phrase and style tokens
/// removed, for CLIP-T. Works per comma-separated clause:
///
/// 1. `in the style of …` removes the rest of its clause ("a cat in the style of ohwx" →
///    "a cat");
/// 2. a style token directly followed by the word `style` is removed with it, and with an
///    `in`, `in a` or `in the` just before it ("a dog in ohwx style" → "a dog", "ohwx style
///    painting of a dog" → "painting of a dog");
/// 3. any remaining style token is removed, with an `in` or `by` right before it when it
///    ends its clause ("a phol portrait" → "a portrait");
/// 4. clauses left empty are dropped, and the rest joined with ", ".
///
/// `style_tokens` match whole words, case-insensitively, ignoring surrounding punctuation;
/// `<*>` matches any `<...>` word. Tokens are usually [`DEFAULT_STYLE_TOKENS`] plus the
/// run's own.
pub fn content_prompt(prompt: &str, style_tokens: &[&str]) -> String {
    let clauses: Vec<String> = prompt
        .split(',')
        .map(|clause| content_clause(clause, style_tokens))
        .filter(|c| !c.is_empty())
        .collect();
    clauses.join(", ")
}

fn content_clause(clause: &str, tokens: &[&str]) -> String {
    let mut words: Vec<&str> = clause.split_whitespace().collect();
    // 1. "in the style of …" to the end of the clause.
    if let Some(i) = (0..words.len().saturating_sub(3)).find(|&i| {
        is_word(words[i], "in")
            && is_word(words[i + 1], "the")
            && is_word(words[i + 2], "style")
            && is_word(words[i + 3], "of")
    }) {
        words.truncate(i);
    }
    // 2. "[in [a|the]] TOKEN... style" spans.
    let mut t = 0;
    while t < words.len() {
        if !is_style_token(words[t], tokens) {
            t += 1;
            continue;
        }
        let mut style = t + 1;
        while style < words.len() && is_style_token(words[style], tokens) {
            style += 1;
        }
        if style == words.len() || !is_word(words[style], "style") {
            t = style;
            continue;
        }
        let mut start = t;
        if start >= 2
            && is_word(words[start - 2], "in")
            && (is_word(words[start - 1], "a") || is_word(words[start - 1], "the"))
        {
            start -= 2;
        } else if start >= 1 && is_word(words[start - 1], "in") {
            start -= 1;
        }
        words.drain(start..=style);
        t = start;
    }
    // 3. Remaining tokens, with a dangling preposition before a clause-final token.
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        if is_style_token(w, tokens) {
            let last = words[i + 1..].iter().all(|w| is_style_token(w, tokens));
            if last
                && out
                    .last()
                    .is_some_and(|p| is_word(p, "in") || is_word(p, "by"))
            {
                out.pop();
            }
            continue;
        }
        out.push(w);
    }
    out.join(" ")
        .trim_matches(|c: char| c.is_whitespace() || c == '.' || c == ';')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(p: &str) -> String {
        content_prompt(p, &DEFAULT_STYLE_TOKENS)
    }

    #[test]
    fn trailing_style_clause_is_removed() {
        assert_eq!(content("a photo of a dog, ohwx style"), "a photo of a dog");
        assert_eq!(
            content("a photo of a dog, in ohwx style"),
            "a photo of a dog"
        );
        assert_eq!(content("a dog in [V] style"), "a dog");
        assert_eq!(content("a dog in the [V] style"), "a dog");
    }

    #[test]
    fn in_the_style_of_runs_to_the_end_of_its_clause() {
        assert_eq!(content("a cat in the style of ohwx"), "a cat");
        assert_eq!(
            content("a cat in the style of [V], at night"),
            "a cat, at night"
        );
        assert_eq!(content("a cat In The Style Of van gogh"), "a cat");
    }

    #[test]
    fn leading_and_inner_style_phrases_keep_the_content() {
        assert_eq!(
            content("[V] style, a castle on a hill"),
            "a castle on a hill"
        );
        assert_eq!(content("ohwx style painting of a dog"), "painting of a dog");
        assert_eq!(
            content("a dog in OHWX style on a beach"),
            "a dog on a beach"
        );
        assert_eq!(content("a phol cat in ohwx style"), "a cat");
    }

    #[test]
    fn bare_tokens_and_placeholders_are_removed() {
        assert_eq!(
            content("a phol portrait of a woman"),
            "a portrait of a woman"
        );
        assert_eq!(
            content("a <my-style> painting of a cat"),
            "a painting of a cat"
        );
        assert_eq!(content("a painting of a cat by [W]"), "a painting of a cat");
        assert_eq!(content("a cat in ohwx."), "a cat");
    }

    #[test]
    fn prompts_without_tokens_are_unchanged() {
        assert_eq!(content("a dog on a beach"), "a dog on a beach");
        assert_eq!(
            content("a stylish dog, watercolor style"),
            "a stylish dog, watercolor style"
        );
        assert_eq!(content(""), "");
    }

    #[test]
    fn custom_tokens() {
        assert_eq!(content_prompt("a zwx style cat", &["zwx"]), "a cat");
        assert_eq!(content_prompt("a zwx style cat", &[]), "a zwx style cat");
        // A prompt that is only the style phrase has no content left.
        assert_eq!(content("ohwx style"), "");
    }

    #[test]
    fn prompts_file_cycles_and_skips_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prompts.txt");
        std::fs::write(&path, "# comment\na cat\n\n  a dog  \n").unwrap();
        let p = read_prompts_file(&path).unwrap();
        assert_eq!(p, ["a cat", "a dog"]);
        assert_eq!(prompt_for_index(&p, 0), Some("a cat"));
        assert_eq!(prompt_for_index(&p, 3), Some("a dog"));
        std::fs::write(&path, "# only a comment\n").unwrap();
        let err = read_prompts_file(&path).unwrap_err().to_string();
        assert!(err.contains("prompts.txt"), "{err}");
    }
}
