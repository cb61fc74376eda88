//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading or extending a [`crate::ClipTokenizer`].
///
/// Encoding and decoding never fail; only loading files and changing the vocabulary do.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The tokenizer folder itself does not exist or is not a folder.
    #[error(
        "tokenizer folder {path} does not exist or is not a folder: pass a diffusers model folder \
         (containing tokenizer/) or its tokenizer/ folder"
    )]
    FolderNotFound {
        /// The folder that was asked for.
        path: PathBuf,
    },

    /// A file the tokenizer needs is absent.
    #[error("tokenizer file {path} is missing: {hint}")]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// What the user can do about it.
        hint: &'static str,
    },

    /// A file exists but could not be read.
    #[error("could not read tokenizer file {path}: {cause}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error (part of the message, hence not a `source`).
        cause: std::io::Error,
    },

    /// A JSON file is not valid JSON or does not have the expected shape.
    #[error(
        "tokenizer file {path} is not a valid {what} ({cause}); the file is probably corrupt or \
         truncated: download the model's tokenizer/ folder again"
    )]
    Json {
        /// The file that failed.
        path: PathBuf,
        /// What the file should contain, e.g. "vocabulary (JSON object of token → id)".
        what: &'static str,
        /// The parse error (part of the message, hence not a `source`).
        cause: serde_json::Error,
    },

    /// A file parsed, but its content is inconsistent (bad merge line, duplicate id, …).
    #[error(
        "tokenizer file {path} is invalid: {message}; the file is probably corrupt or does not \
         belong with the other tokenizer files: download the model's tokenizer/ folder again"
    )]
    Invalid {
        /// The file that failed.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The CLIP merges file embedded in this crate could not be decoded (a build problem).
    #[error("the CLIP merges file embedded in styleforge-tokenizer is corrupt: {0}")]
    Embedded(String),

    /// A special token (BOS, EOS, pad, unk) names a token that is not in the vocabulary.
    #[error(
        "the {role} token {token:?} (from {source_file}) is not in the vocabulary; check \
         tokenizer_config.json / special_tokens_map.json"
    )]
    UnknownSpecialToken {
        /// Which special token: "bos", "eos", "pad" or "unk".
        role: &'static str,
        /// The token's text.
        token: String,
        /// Where the token was configured.
        source_file: String,
    },

    /// [`crate::ClipTokenizer::add_token`] was given a token that already exists.
    #[error(
        "token {token:?} already exists in the tokenizer (id {id}); choose a different \
         placeholder token, e.g. \"<my-concept>\""
    )]
    TokenExists {
        /// The token that was asked for.
        token: String,
        /// The id it already has.
        id: u32,
    },

    /// [`crate::ClipTokenizer::add_token`] was given a token that cannot be matched in text.
    #[error("cannot add token {token:?}: {reason}")]
    InvalidToken {
        /// The token that was asked for.
        token: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;
