//! CLIP's byte-level BPE tokenizer, as used by Stable Diffusion 1.x and 2.x.
//!
//! Compatible with transformers' `CLIPTokenizer` (the `tokenizers`-backed one): same text
//! normalisation (NFC, whitespace clean-up, lower case), word splitting, byte-level BPE
//! with `</w>` word endings, special and added tokens, and the padded/truncated 77-id form
//! the text encoder takes — where a truncation is reported, not silent.
//!
//! ```no_run
//! use styleforge_tokenizer::ClipTokenizer;
//! # fn main() -> Result<(), styleforge_tokenizer::TokenizerError> {
//! let tokenizer = ClipTokenizer::from_folder("models/sd15")?; // reads models/sd15/tokenizer/
//! let encoding = tokenizer.encode_padded("a photo of a cat");
//! assert_eq!(encoding.ids.len(), 77);
//! if encoding.truncated {
//!     eprintln!("dropped: {}", tokenizer.decode(&encoding.dropped_ids, true));
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod added_tokens;
mod bpe;
mod byte_level;
mod encoding;
mod error;
mod folder;
mod normalizer;
mod pre_tokenizer;
mod standard;
mod tokenizer;

pub use added_tokens::AddedToken;
pub use encoding::Encoding;
pub use error::{Result, TokenizerError};
pub use standard::{STANDARD_BOS_ID, STANDARD_EOS_ID, STANDARD_VOCAB_SIZE};
pub use tokenizer::ClipTokenizer;
