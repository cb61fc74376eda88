//! The standard 49,408-token CLIP vocabulary, built from OpenAI's merges file that ships
//! with this crate (`data/bpe_simple_vocab_16e6.txt.gz`), the way CLIP builds it:
//!
//! - merges: lines `1 ..= 48_894` of the file (line 0 is a header);
//! - vocabulary: the 256 byte-level characters, the same with `</w>` appended, each merge
//!   concatenated, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407).

use crate::bpe::{Merges, END_OF_WORD};
use crate::byte_level::ByteLevel;
use crate::error::{Result, TokenizerError};
use std::io::Read;

/// OpenAI CLIP's merges file (MIT licence, see `data/README.md`).
static MERGES_GZ: &[u8] = include_bytes!("../data/bpe_simple_vocab_16e6.txt.gz");

/// Number of merges CLIP uses: 49,152 - 256 - 2.
pub(crate) const STANDARD_MERGES: usize = 49_152 - 256 - 2;
/// Size of the standard vocabulary.
pub const STANDARD_VOCAB_SIZE: usize = 49_408;
/// Id of `<|startoftext|>` in the standard vocabulary.
pub const STANDARD_BOS_ID: u32 = 49_406;
/// Id of `<|endoftext|>` in the standard vocabulary.
pub const STANDARD_EOS_ID: u32 = 49_407;

/// The standard vocabulary (in id order) and merges (in rank order).
pub(crate) fn standard_vocab() -> Result<(Vec<String>, Merges)> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(MERGES_GZ)
        .read_to_string(&mut text)
        .map_err(|e| TokenizerError::Embedded(e.to_string()))?;
    let mut merges = Vec::with_capacity(STANDARD_MERGES);
    for line in text.split('\n').skip(1).take(STANDARD_MERGES) {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => merges.push((a.to_string(), b.to_string())),
            _ => return Err(TokenizerError::Embedded(format!("bad merge line {line:?}"))),
        }
    }
    if merges.len() != STANDARD_MERGES {
        return Err(TokenizerError::Embedded(format!(
            "{} merges instead of {STANDARD_MERGES}",
            merges.len()
        )));
    }
    let alphabet = ByteLevel::get().alphabet();
    let mut tokens: Vec<String> = Vec::with_capacity(STANDARD_VOCAB_SIZE);
    tokens.extend(alphabet.iter().map(|c| c.to_string()));
    tokens.extend(alphabet.iter().map(|c| format!("{c}{END_OF_WORD}")));
    tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    tokens.push("<|startoftext|>".to_string());
    tokens.push("<|endoftext|>".to_string());
    Ok((tokens, merges))
}
