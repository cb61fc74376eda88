//! [`ClipTokenizer`]: text → ids and back, as transformers' `CLIPTokenizer` does it.
//!
//! Encoding a prompt:
//! 1. cut the raw text at added tokens matched as written (special tokens);
//! 2. normalise each remaining piece (NFC, whitespace runs → one space, lower case);
//! 3. cut it at added tokens matched after normalisation (e.g. `<zwx>`);
//! 4. split the rest into words (CLIP's regex) and encode each with byte-level BPE.
//!
//! The full encoding is `<|startoftext|>`, the content ids, `<|endoftext|>`.

use crate::added_tokens::{AddedToken, AddedVocab, Segment};
use crate::bpe::{Bpe, BpeBuildError, END_OF_WORD};
use crate::byte_level::ByteLevel;
use crate::encoding::Encoding;
use crate::error::{Result, TokenizerError};
use crate::folder::{self, TokenSpec, DEFAULT_MAX_LENGTH};
use crate::normalizer::normalize;
use crate::pre_tokenizer::for_each_word;
use crate::standard;
use std::path::{Path, PathBuf};

/// CLIP's byte-level BPE tokenizer, compatible with Stable Diffusion's `tokenizer/` folders.
///
/// Encoding never fails and never panics, whatever the input.
#[derive(Clone)]
pub struct ClipTokenizer {
    bpe: Bpe,
    added: AddedVocab,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    unk_id: u32,
    max_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("added_tokens", &self.added.tokens())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish()
    }
}

/// Where a tokenizer's data came from, for error messages.
struct Origin {
    vocab_file: PathBuf,
    merges_file: PathBuf,
    merge_lines: Vec<usize>,
    added_file: PathBuf,
}

impl ClipTokenizer {
    /// The standard 49,408-token CLIP tokenizer (Stable Diffusion 1.x), built from the merges
    /// file embedded in this crate; padding with `<|endoftext|>`, maximum length 77.
    ///
    /// For Stable Diffusion 2.x, follow it with [`ClipTokenizer::set_pad_token`]`("!")`.
    pub fn standard() -> Result<ClipTokenizer> {
        let (tokens, merges) = standard::standard_vocab()?;
        let specials = [
            "<|startoftext|>",
            "<|endoftext|>",
            "<|endoftext|>",
            "<|endoftext|>",
        ]
        .map(|content| TokenSpec {
            content: content.to_string(),
            normalized: false,
            source: "the standard CLIP tokenizer".to_string(),
        });
        let origin = Origin {
            vocab_file: PathBuf::from("<embedded bpe_simple_vocab_16e6.txt.gz>"),
            merges_file: PathBuf::from("<embedded bpe_simple_vocab_16e6.txt.gz>"),
            merge_lines: (2..merges.len() + 2).collect(),
            added_file: PathBuf::new(),
        };
        Self::build(
            tokens,
            &merges,
            Vec::new(),
            specials,
            DEFAULT_MAX_LENGTH,
            origin,
        )
    }

    /// Loads a tokenizer folder in the diffusers / transformers layout (`vocab.json`,
    /// `merges.txt`, optional `tokenizer_config.json`, `special_tokens_map.json`,
    /// `added_tokens.json`; or a `tokenizer.json` alone).
    ///
    /// `dir` may also be a diffusers model folder, in which case `dir/tokenizer/` is read.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<ClipTokenizer> {
        let dir = folder::resolve_dir(dir.as_ref())?;
        let contents = folder::read_folder(&dir)?;
        tracing::debug!(
            dir = %contents.dir.display(),
            vocab = contents.tokens.len(),
            merges = contents.merges.len(),
            "loading CLIP tokenizer"
        );
        let origin = Origin {
            vocab_file: contents.vocab_file,
            merges_file: contents.merges_file,
            merge_lines: contents.merge_lines,
            added_file: contents.added_file,
        };
        Self::build(
            contents.tokens,
            &contents.merges,
            contents.added,
            [contents.bos, contents.eos, contents.unk, contents.pad],
            contents.max_length,
            origin,
        )
    }

    /// Builds a tokenizer from a vocabulary (in id order) and merges (in rank order), with
    /// CLIP's special tokens (`<|startoftext|>`, `<|endoftext|>`), which must be in `tokens`.
    pub fn from_vocab_and_merges(
        tokens: Vec<String>,
        merges: &[(String, String)],
        max_length: usize,
    ) -> Result<ClipTokenizer> {
        let specials = [
            "<|startoftext|>",
            "<|endoftext|>",
            "<|endoftext|>",
            "<|endoftext|>",
        ]
        .map(|content| TokenSpec {
            content: content.to_string(),
            normalized: false,
            source: "the CLIP defaults".to_string(),
        });
        let origin = Origin {
            vocab_file: PathBuf::from("<vocabulary>"),
            merges_file: PathBuf::from("<merges>"),
            merge_lines: (1..=merges.len()).collect(),
            added_file: PathBuf::from("<added tokens>"),
        };
        Self::build(
            tokens,
            merges,
            Vec::new(),
            specials,
            max_length.max(2),
            origin,
        )
    }

    fn build(
        tokens: Vec<String>,
        merges: &[(String, String)],
        added: Vec<AddedToken>,
        [bos, eos, unk, pad]: [TokenSpec; 4],
        max_length: usize,
        origin: Origin,
    ) -> Result<ClipTokenizer> {
        let mut bpe = Bpe::new(tokens, merges).map_err(|e| match e {
            BpeBuildError::DuplicateToken(token) => TokenizerError::Invalid {
                path: origin.vocab_file.clone(),
                message: format!("token {token:?} appears twice"),
            },
            BpeBuildError::MergeTokenMissing { index, token } => TokenizerError::Invalid {
                path: origin.merges_file.clone(),
                message: format!(
                    "the merge on line {} needs token {token:?}, which is not in the vocabulary",
                    origin.merge_lines.get(index).copied().unwrap_or(index + 1)
                ),
            },
        })?;

        // Added tokens declared by id: those in the base vocabulary keep their vocabulary
        // id; the others must follow it without gaps.
        let base = bpe.len();
        let mut vocab = AddedVocab::default();
        let mut next_id = base;
        for mut token in added {
            if let Some(id) = bpe.id(&token.content) {
                token.id = id;
            } else if token.id as usize == next_id {
                next_id += 1;
            } else {
                return Err(TokenizerError::Invalid {
                    path: origin.added_file,
                    message: format!(
                        "added token {:?} has id {}, but the next free id is {next_id}",
                        token.content, token.id
                    ),
                });
            }
            vocab.insert(token);
        }

        // Resolve the special tokens (in transformers' order; the last flags win).
        let mut ids = [0u32; 4];
        let roles = ["bos", "eos", "unk", "pad"];
        for ((role, spec), id) in roles.into_iter().zip([bos, eos, unk, pad]).zip(&mut ids) {
            let found = vocab
                .by_content(&spec.content)
                .map(|t| t.id)
                .or_else(|| bpe.id(&spec.content));
            let Some(found) = found else {
                return Err(TokenizerError::UnknownSpecialToken {
                    role,
                    token: spec.content,
                    source_file: spec.source,
                });
            };
            *id = found;
            vocab.insert(AddedToken {
                content: spec.content,
                id: found,
                special: true,
                normalized: spec.normalized,
            });
        }
        let [bos_id, eos_id, unk_id, pad_id] = ids;
        bpe.set_unk_id(Some(unk_id));
        Ok(ClipTokenizer {
            bpe,
            added: vocab,
            bos_id,
            eos_id,
            pad_id,
            unk_id,
            max_length,
        })
    }

    /// The content ids of `text`: no BOS/EOS, no truncation.
    pub fn encode_content(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for segment in self.added.split_raw(text) {
            match segment {
                Segment::Token(id) => ids.push(id),
                Segment::Text(raw) => {
                    let normalized = normalize(raw);
                    for segment in self.added.split_normalized(&normalized) {
                        match segment {
                            Segment::Token(id) => ids.push(id),
                            Segment::Text(text) => {
                                for_each_word(text, |word| self.bpe.encode_word(word, &mut ids));
                            }
                        }
                    }
                }
            }
        }
        ids
    }

    /// The full, untruncated encoding of `text`: BOS, content ids, EOS.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let content = self.encode_content(text);
        let mut ids = Vec::with_capacity(content.len() + 2);
        ids.push(self.bos_id);
        ids.extend(content);
        ids.push(self.eos_id);
        ids
    }

    /// `text` padded or truncated to [`ClipTokenizer::max_length`] ids, as the text encoder
    /// takes it: BOS, the first `max_length - 2` content ids, EOS, padding. A truncation is
    /// reported in the result and logged as a warning.
    pub fn encode_padded(&self, text: &str) -> Encoding {
        let encoding = self.pad_content(&self.encode_content(text));
        if encoding.truncated {
            tracing::warn!(
                tokens = encoding.untruncated_len,
                max = self.max_length,
                dropped = %self.decode(&encoding.dropped_ids, true),
                "prompt is longer than the text encoder's limit and was truncated"
            );
        }
        encoding
    }

    /// The fixed-length form of already encoded content ids (from
    /// [`ClipTokenizer::encode_content`]), without logging a truncation.
    pub fn pad_content(&self, content_ids: &[u32]) -> Encoding {
        Encoding::from_content(
            content_ids,
            self.bos_id,
            self.eos_id,
            self.pad_id,
            self.max_length,
        )
    }

    /// [`ClipTokenizer::encode_padded`] for each prompt.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Vec<Encoding> {
        texts
            .iter()
            .map(|t| self.encode_padded(t.as_ref()))
            .collect()
    }

    /// The fixed-length id rows of a batch of prompts (truncations are logged as warnings;
    /// use [`ClipTokenizer::encode_batch`] to inspect them).
    pub fn encode_batch_ids<S: AsRef<str>>(&self, texts: &[S]) -> Vec<Vec<u32>> {
        self.encode_batch(texts)
            .into_iter()
            .map(|e| e.ids)
            .collect()
    }

    /// The token strings of `text`'s content (vocabulary spelling: byte-level characters,
    /// `</w>` ending a word), without BOS/EOS.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        self.encode_content(text)
            .into_iter()
            .filter_map(|id| self.id_to_token(id).map(str::to_string))
            .collect()
    }

    /// Turns ids back into text: bytes decoded as UTF-8 (invalid sequences become U+FFFD),
    /// `</w>` becomes a space, surrounding spaces trimmed. With `skip_special_tokens`, special
    /// tokens (BOS, EOS, pad, …) are left out. Unknown ids are ignored.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> String {
        let byte_level = ByteLevel::get();
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(added) = self.added.by_id(id) {
                if !(skip_special_tokens && added.special) {
                    bytes.extend_from_slice(added.content.as_bytes());
                }
            } else if let Some(token) = self.bpe.token(id) {
                byte_level.decode_into(token, &mut bytes);
            }
        }
        String::from_utf8_lossy(&bytes)
            .replace(END_OF_WORD, " ")
            .trim()
            .to_string()
    }

    /// The bytes of text one token stands for (without the end-of-word marker `</w>`); a
    /// token may hold only part of a multi-byte character. `None` for unknown ids.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        if let Some(added) = self.added.by_id(id) {
            return Some(added.content.as_bytes().to_vec());
        }
        let token = self.bpe.token(id)?;
        let mut bytes = Vec::new();
        ByteLevel::get().decode_into(token.strip_suffix(END_OF_WORD).unwrap_or(token), &mut bytes);
        Some(bytes)
    }

    /// The vocabulary spelling of an id (an added token's text for added tokens).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        match self.added.by_id(id) {
            Some(t) => Some(&t.content),
            None => self.bpe.token(id),
        }
    }

    /// The id of a token, given in its vocabulary spelling (e.g. `"cat</w>"`) or as an added
    /// token's text.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added
            .by_content(token)
            .map(|t| t.id)
            .or_else(|| self.bpe.id(token))
    }

    /// Adds a token that is matched as a whole in text before BPE (as transformers'
    /// `add_tokens`: case-insensitively, after normalisation), e.g. a Textual Inversion
    /// placeholder `"<zwx>"`. Returns its id, which is the vocabulary size before the call.
    ///
    /// Fails if the token already exists (in the vocabulary or as an added token, also in
    /// another letter case) or is empty / only whitespace.
    pub fn add_token(&mut self, token: &str) -> Result<u32> {
        let invalid = |reason| TokenizerError::InvalidToken {
            token: token.to_string(),
            reason,
        };
        if token.is_empty() {
            return Err(invalid("the token is empty"));
        }
        if token.chars().all(char::is_whitespace) {
            return Err(invalid("the token is only whitespace"));
        }
        if let Some(id) = self.token_to_id(token) {
            return Err(TokenizerError::TokenExists {
                token: token.to_string(),
                id,
            });
        }
        let pattern = normalize(token);
        if let Some(existing) = self
            .added
            .tokens()
            .iter()
            .find(|t| t.normalized && normalize(&t.content) == pattern)
        {
            return Err(TokenizerError::TokenExists {
                token: token.to_string(),
                id: existing.id,
            });
        }
        let id = u32::try_from(self.vocab_size()).map_err(|_| invalid("the vocabulary is full"))?;
        self.added.insert(AddedToken {
            content: token.to_string(),
            id,
            special: false,
            normalized: true,
        });
        Ok(id)
    }

    /// [`ClipTokenizer::add_token`] for several tokens; adds none of them if one fails.
    pub fn add_tokens<S: AsRef<str>>(&mut self, tokens: &[S]) -> Result<Vec<u32>> {
        let mut extended = self.clone();
        let ids = tokens
            .iter()
            .map(|t| extended.add_token(t.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        *self = extended;
        Ok(ids)
    }

    /// Makes `token` (which must exist) the padding token. Like transformers, it becomes a
    /// special token matched as written in text: with Stable Diffusion 2.x's pad token `"!"`,
    /// every `!` in a prompt encodes to id 0.
    pub fn set_pad_token(&mut self, token: &str) -> Result<u32> {
        let Some(id) = self.token_to_id(token) else {
            return Err(TokenizerError::UnknownSpecialToken {
                role: "pad",
                token: token.to_string(),
                source_file: "set_pad_token".to_string(),
            });
        };
        if self.added.by_content(token).is_none() {
            self.added.insert(AddedToken {
                content: token.to_string(),
                id,
                special: true,
                normalized: false,
            });
        }
        self.pad_id = id;
        Ok(id)
    }

    /// Sets the fixed length of [`ClipTokenizer::encode_padded`] (at least 2).
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length.max(2);
    }

    /// Number of ids, added tokens included (49,408 for the standard CLIP vocabulary).
    pub fn vocab_size(&self) -> usize {
        let added_max = self
            .added
            .tokens()
            .iter()
            .map(|t| t.id as usize + 1)
            .max()
            .unwrap_or(0);
        self.bpe.len().max(added_max)
    }

    /// Number of ids of the base BPE vocabulary (without tokens added after it).
    pub fn base_vocab_size(&self) -> usize {
        self.bpe.len()
    }

    /// All added tokens (special tokens included).
    pub fn added_tokens(&self) -> &[AddedToken] {
        self.added.tokens()
    }

    /// Whether `id` is a special token (BOS, EOS, pad, unk, or another special added token).
    pub fn is_special(&self, id: u32) -> bool {
        self.added.by_id(id).is_some_and(|t| t.special)
    }

    /// Id of `<|startoftext|>`.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of `<|endoftext|>`.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Id used for padding (`<|endoftext|>` in SD 1.x, `!` = 0 in SD 2.x).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id emitted for bytes missing from the vocabulary (never happens with a full CLIP vocabulary).
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// The fixed sequence length of the text encoder (77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }
}
