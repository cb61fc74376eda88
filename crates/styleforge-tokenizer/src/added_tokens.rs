//! Added tokens: special tokens (`<|startoftext|>`, `<|endoftext|>`, a pad token) and tokens
//! added later (Textual Inversion / Custom Diffusion placeholders such as `<zwx>`).
//!
//! Before BPE, the text is cut at every occurrence of an added token, which then becomes a
//! single id, wherever it appears (also inside a word: `a<zwx>b` gives `a`, `<zwx>`, `b`).
//! As in the reference, a token marked *normalized* is looked for in the normalised text
//! (after NFC, whitespace clean-up and lower-casing, so `<ZWX>` matches too), the others in
//! the raw text. Among tokens starting at the same place the longest wins.

use crate::normalizer::normalize;

/// A token that is matched as a whole in the text, before BPE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedToken {
    /// The token's text.
    pub content: String,
    /// Its id.
    pub id: u32,
    /// Whether it is a special token (BOS, EOS, pad, …): `decode` can skip those.
    pub special: bool,
    /// Whether it is matched in the normalised (lower-cased) text rather than the raw text.
    pub normalized: bool,
}

/// A piece of text after cutting at added tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    /// Ordinary text, to be encoded further.
    Text(&'a str),
    /// An added token's id.
    Token(u32),
}

/// The set of added tokens with their match patterns.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddedVocab {
    tokens: Vec<AddedToken>,
    /// (pattern, id) of tokens matched in the raw text.
    raw: Vec<(String, u32)>,
    /// (normalised pattern, id) of tokens matched in the normalised text.
    normalized: Vec<(String, u32)>,
}

impl AddedVocab {
    /// All added tokens, in the order they were added.
    pub(crate) fn tokens(&self) -> &[AddedToken] {
        &self.tokens
    }

    /// The added token with this id.
    pub(crate) fn by_id(&self, id: u32) -> Option<&AddedToken> {
        self.tokens.iter().find(|t| t.id == id)
    }

    /// The added token with this content.
    pub(crate) fn by_content(&self, content: &str) -> Option<&AddedToken> {
        self.tokens.iter().find(|t| t.content == content)
    }

    /// Adds a token, or replaces the flags of the token with the same content.
    pub(crate) fn insert(&mut self, token: AddedToken) {
        match self.tokens.iter_mut().find(|t| t.content == token.content) {
            Some(existing) => *existing = token,
            None => self.tokens.push(token),
        }
        self.rebuild_patterns();
    }

    fn rebuild_patterns(&mut self) {
        self.raw.clear();
        self.normalized.clear();
        for t in &self.tokens {
            if t.normalized {
                let pattern = normalize(&t.content);
                if !pattern.is_empty() {
                    self.normalized.push((pattern, t.id));
                }
            } else if !t.content.is_empty() {
                self.raw.push((t.content.clone(), t.id));
            }
        }
    }

    /// Cuts raw text at the tokens matched before normalisation.
    pub(crate) fn split_raw<'a>(&self, text: &'a str) -> Vec<Segment<'a>> {
        split(text, &self.raw)
    }

    /// Cuts normalised text at the tokens matched after normalisation.
    pub(crate) fn split_normalized<'a>(&self, text: &'a str) -> Vec<Segment<'a>> {
        split(text, &self.normalized)
    }
}

/// Cuts `text` at the leftmost-longest occurrences of `patterns`.
fn split<'a>(text: &'a str, patterns: &[(String, u32)]) -> Vec<Segment<'a>> {
    let mut out = Vec::new();
    if patterns.is_empty() {
        if !text.is_empty() {
            out.push(Segment::Text(text));
        }
        return out;
    }
    let mut start = 0; // start of the pending text segment
    let mut pos = 0;
    while pos < text.len() {
        let rest = &text[pos..];
        let best = patterns
            .iter()
            .filter(|(p, _)| rest.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len());
        match best {
            Some((p, id)) => {
                if start < pos {
                    out.push(Segment::Text(&text[start..pos]));
                }
                out.push(Segment::Token(*id));
                pos += p.len();
                start = pos;
            }
            None => {
                pos += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    if start < text.len() {
        out.push(Segment::Text(&text[start..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> AddedVocab {
        let mut v = AddedVocab::default();
        for (content, id, normalized) in [
            ("<|endoftext|>", 9, false),
            ("<zwx>", 10, true),
            ("<zwx>-long", 11, false),
        ] {
            v.insert(AddedToken {
                content: content.to_string(),
                id,
                special: id == 9,
                normalized,
            });
        }
        v
    }

    #[test]
    fn splits_leftmost_longest() {
        let v = vocab();
        assert_eq!(
            v.split_raw("a<|endoftext|>b<zwx>-long"),
            [
                Segment::Text("a"),
                Segment::Token(9),
                Segment::Text("b"),
                Segment::Token(11)
            ]
        );
        assert_eq!(
            v.split_raw("é<|ENDOFTEXT|>"),
            [Segment::Text("é<|ENDOFTEXT|>")]
        );
        assert_eq!(
            v.split_normalized("<zwx><zwx>"),
            [Segment::Token(10), Segment::Token(10)]
        );
        assert!(v.split_raw("").is_empty());
    }
}
