//! Reading a diffusers / transformers `tokenizer/` folder: `vocab.json`, `merges.txt`,
//! and when present `tokenizer_config.json`, `special_tokens_map.json`, `added_tokens.json`
//! (or, when there is no `vocab.json`, a `tokenizer.json`).
//!
//! Special tokens follow transformers' loading rules: `tokenizer_config.json` names them
//! (as a string or an `AddedToken` object); `special_tokens_map.json` overrides it unless
//! `tokenizer_config.json` carries an `added_tokens_decoder`; missing ones default to CLIP's
//! (`<|startoftext|>`, `<|endoftext|>`, and `<|endoftext|>` for pad and unk).

use crate::added_tokens::AddedToken;
use crate::bpe::Merges;
use crate::error::{Result, TokenizerError};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The default maximum sequence length of CLIP's text encoder.
pub(crate) const DEFAULT_MAX_LENGTH: usize = 77;

const VOCAB_HINT: &str = "a tokenizer folder needs vocab.json and merges.txt (diffusers layout: \
    MODEL/tokenizer/vocab.json); download the model's tokenizer/ folder";
const MERGES_HINT: &str = "vocab.json needs its merges.txt next to it; download the model's \
    tokenizer/ folder again";

/// A special token as configured: its text and whether it is matched after normalisation.
#[derive(Debug, Clone)]
pub(crate) struct TokenSpec {
    pub content: String,
    pub normalized: bool,
    /// File the setting came from (for error messages).
    pub source: String,
}

/// Everything read from a tokenizer folder.
#[derive(Debug)]
pub(crate) struct FolderContents {
    /// The folder the files were read from.
    pub dir: PathBuf,
    /// Base vocabulary in id order.
    pub tokens: Vec<String>,
    /// File the vocabulary came from.
    pub vocab_file: PathBuf,
    /// Merges in rank order.
    pub merges: Merges,
    /// 1-based line number of each merge (for error messages).
    pub merge_lines: Vec<usize>,
    /// File the merges came from.
    pub merges_file: PathBuf,
    /// Added tokens declared by id (`added_tokens_decoder`, `added_tokens.json`, `tokenizer.json`).
    pub added: Vec<AddedToken>,
    /// File the added tokens came from.
    pub added_file: PathBuf,
    pub bos: TokenSpec,
    pub eos: TokenSpec,
    pub unk: TokenSpec,
    pub pad: TokenSpec,
    pub max_length: usize,
}

/// Finds the tokenizer files for `dir`: the folder itself or its `tokenizer/` subfolder.
pub(crate) fn resolve_dir(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(TokenizerError::FolderNotFound {
            path: dir.to_path_buf(),
        });
    }
    let has_files = |d: &Path| d.join("vocab.json").is_file() || d.join("tokenizer.json").is_file();
    let sub = dir.join("tokenizer");
    if !has_files(dir) && sub.is_dir() {
        Ok(sub)
    } else {
        Ok(dir.to_path_buf())
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|cause| TokenizerError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

fn read_json(path: &Path, what: &'static str) -> Result<Value> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|cause| TokenizerError::Json {
        path: path.to_path_buf(),
        what,
        cause,
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_optional_object(path: &Path, what: &'static str) -> Result<Option<Map<String, Value>>> {
    if !path.exists() {
        return Ok(None);
    }
    match read_json(path, what)? {
        Value::Object(map) => Ok(Some(map)),
        _ => Err(invalid(path, "expected a JSON object")),
    }
}

/// Reads the folder (already resolved with [`resolve_dir`]).
pub(crate) fn read_folder(dir: &Path) -> Result<FolderContents> {
    let vocab_path = dir.join("vocab.json");
    let tokenizer_json_path = dir.join("tokenizer.json");
    let config_path = dir.join("tokenizer_config.json");
    let config = read_optional_object(&config_path, "tokenizer config (JSON object)")?;

    let (tokens, merges, merge_lines, merges_file, vocab_file, mut added, mut added_file);
    if vocab_path.is_file() {
        let vocab = read_json(&vocab_path, "vocabulary (JSON object of token → id)")?;
        tokens = vocab_from_json(&vocab_path, &vocab)?;
        vocab_file = vocab_path.clone();
        merges_file = dir.join("merges.txt");
        if !merges_file.is_file() {
            return Err(TokenizerError::MissingFile {
                path: merges_file,
                hint: MERGES_HINT,
            });
        }
        (merges, merge_lines) = parse_merges_txt(&merges_file, &read_text(&merges_file)?)?;
        added = Vec::new();
        added_file = config_path.clone();
    } else if tokenizer_json_path.is_file() {
        let json = read_json(&tokenizer_json_path, "tokenizer.json")?;
        let model = json
            .get("model")
            .ok_or_else(|| invalid(&tokenizer_json_path, "no \"model\" section"))?;
        let vocab = model
            .get("vocab")
            .ok_or_else(|| invalid(&tokenizer_json_path, "no \"model.vocab\" section"))?;
        tokens = vocab_from_json(&tokenizer_json_path, vocab)?;
        vocab_file = tokenizer_json_path.clone();
        (merges, merge_lines) = merges_from_json(&tokenizer_json_path, model.get("merges"))?;
        merges_file = tokenizer_json_path.clone();
        added = match json.get("added_tokens") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| added_token_from_object(&tokenizer_json_path, item, None))
                .collect::<Result<_>>()?,
            _ => Vec::new(),
        };
        added_file = tokenizer_json_path.clone();
    } else {
        return Err(TokenizerError::MissingFile {
            path: vocab_path,
            hint: VOCAB_HINT,
        });
    }

    // Special tokens: tokenizer_config.json, overridden by special_tokens_map.json (legacy).
    let config_name = "tokenizer_config.json";
    let mut specials: [(&str, Option<TokenSpec>); 4] = [
        ("bos_token", None),
        ("eos_token", None),
        ("unk_token", None),
        ("pad_token", None),
    ];
    if let Some(cfg) = &config {
        for (key, slot) in specials.iter_mut() {
            *slot = token_spec(&config_path, cfg.get(*key), config_name)?;
        }
    }
    let decoder = config.as_ref().and_then(|c| c.get("added_tokens_decoder"));
    match decoder {
        Some(Value::Object(entries)) => {
            added = Vec::new();
            added_file = config_path.clone();
            for (id, item) in entries {
                let id: u32 = id.parse().map_err(|_| {
                    invalid(
                        &config_path,
                        format!("added_tokens_decoder key {id:?} is not an id"),
                    )
                })?;
                added.push(added_token_from_object(&config_path, item, Some(id))?);
            }
        }
        Some(Value::Null) | None => {
            let map_path = dir.join("special_tokens_map.json");
            if let Some(map) = read_optional_object(&map_path, "special tokens map (JSON object)")?
            {
                for (key, slot) in specials.iter_mut() {
                    if let Some(spec) =
                        token_spec(&map_path, map.get(*key), "special_tokens_map.json")?
                    {
                        *slot = Some(spec);
                    }
                }
            }
            let added_path = dir.join("added_tokens.json");
            if let Some(map) =
                read_optional_object(&added_path, "added tokens (JSON object of token → id)")?
            {
                let special_contents: Vec<&str> = specials
                    .iter()
                    .filter_map(|(_, s)| s.as_ref().map(|s| s.content.as_str()))
                    .collect();
                added_file = added_path.clone();
                for (content, id) in map.iter() {
                    let id = json_id(id).ok_or_else(|| {
                        invalid(
                            &added_path,
                            format!("the id of {content:?} is not a valid token id"),
                        )
                    })?;
                    let special = special_contents.contains(&content.as_str());
                    added.push(AddedToken {
                        content: content.clone(),
                        id,
                        special,
                        normalized: !special,
                    });
                }
            }
        }
        Some(_) => {
            return Err(invalid(
                &config_path,
                "added_tokens_decoder is not a JSON object",
            ))
        }
    }
    added.sort_by_key(|t| t.id);

    // A special token named by its text takes the flags of the added token with that text.
    let [bos, eos, unk, pad] = specials.map(|(_, s)| s);
    let resolve = |spec: Option<TokenSpec>, default: &str| {
        let mut spec = spec.unwrap_or_else(|| TokenSpec {
            content: default.to_string(),
            normalized: false,
            source: "the CLIP defaults".to_string(),
        });
        if let Some(a) = added.iter().find(|a| a.content == spec.content) {
            spec.normalized = a.normalized;
        }
        spec
    };
    let bos = resolve(bos, "<|startoftext|>");
    let eos = resolve(eos, "<|endoftext|>");
    let unk = resolve(unk, "<|endoftext|>");
    let pad = resolve(pad, "<|endoftext|>");

    let max_length = match config.as_ref().and_then(|c| c.get("model_max_length")) {
        None | Some(Value::Null) => DEFAULT_MAX_LENGTH,
        Some(v) => match v.as_f64() {
            // transformers writes a huge number (1e30) when the length is unknown.
            Some(x) if x >= 1e9 => DEFAULT_MAX_LENGTH,
            Some(x) if x >= 2.0 && x.fract() == 0.0 => x as usize,
            _ => {
                return Err(invalid(
                    &config_path,
                    format!("model_max_length {v} is not a whole number of at least 2"),
                ))
            }
        },
    };

    Ok(FolderContents {
        dir: dir.to_path_buf(),
        tokens,
        vocab_file,
        merges,
        merge_lines,
        merges_file,
        added,
        added_file,
        bos,
        eos,
        unk,
        pad,
        max_length,
    })
}

fn json_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|id| u32::try_from(id).ok())
}

/// Turns a `{token: id}` object into the token list in id order (ids must be 0..N-1).
fn vocab_from_json(path: &Path, vocab: &Value) -> Result<Vec<String>> {
    let Value::Object(map) = vocab else {
        return Err(invalid(
            path,
            "the vocabulary is not a JSON object of token → id",
        ));
    };
    let mut tokens: Vec<Option<String>> = vec![None; map.len()];
    for (token, id) in map {
        let id = json_id(id).ok_or_else(|| {
            invalid(
                path,
                format!("the id of token {token:?} is not a valid token id"),
            )
        })?;
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            invalid(
                path,
                format!(
                    "token {token:?} has id {id}, but the {} tokens must use ids 0..{} without gaps",
                    map.len(),
                    map.len()
                ),
            )
        })?;
        if let Some(other) = slot {
            return Err(invalid(
                path,
                format!("tokens {other:?} and {token:?} share id {id}"),
            ));
        }
        *slot = Some(token.clone());
    }
    // With N entries, ids < N and no shared ids, every slot is filled.
    Ok(tokens.into_iter().flatten().collect())
}

/// Parses merges.txt: one `left right` pair per line, optionally after a `#version` line.
pub(crate) fn parse_merges_txt(path: &Path, text: &str) -> Result<(Merges, Vec<usize>)> {
    let mut merges = Vec::new();
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if (index == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_string(), b.to_string()));
                lines.push(index + 1);
            }
            _ => {
                return Err(invalid(
                    path,
                    format!(
                        "line {} is not a merge (two tokens separated by one space): {line:?}",
                        index + 1
                    ),
                ))
            }
        }
    }
    Ok((merges, lines))
}

fn merges_from_json(path: &Path, merges: Option<&Value>) -> Result<(Merges, Vec<usize>)> {
    let Some(Value::Array(items)) = merges else {
        return Err(invalid(path, "no \"model.merges\" list"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let pair = match item {
            Value::String(s) => s
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string())),
            Value::Array(ab) => match ab.as_slice() {
                [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                _ => None,
            },
            _ => None,
        };
        out.push(
            pair.ok_or_else(|| invalid(path, format!("merge #{} is not a token pair", i + 1)))?,
        );
    }
    let lines = (1..=out.len()).collect();
    Ok((out, lines))
}

/// Reads a special-token setting: a string, an `AddedToken` object, or null.
fn token_spec(path: &Path, value: Option<&Value>, source: &str) -> Result<Option<TokenSpec>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(TokenSpec {
            content: s.clone(),
            normalized: false,
            source: source.to_string(),
        })),
        Some(Value::Object(obj)) => {
            let content = obj
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(path, "a special token object has no \"content\" string"))?;
            Ok(Some(TokenSpec {
                content: content.to_string(),
                normalized: obj
                    .get("normalized")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                source: source.to_string(),
            }))
        }
        Some(other) => Err(invalid(
            path,
            format!("special token setting {other} is not a string or object"),
        )),
    }
}

/// Reads an added-token object (`{"content": …, "special": …, "normalized": …, "id": …}`).
fn added_token_from_object(path: &Path, item: &Value, id: Option<u32>) -> Result<AddedToken> {
    let content = item
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(path, "an added token has no \"content\" string"))?;
    let id = match id {
        Some(id) => id,
        None => item
            .get("id")
            .and_then(json_id)
            .ok_or_else(|| invalid(path, format!("added token {content:?} has no valid \"id\"")))?,
    };
    let special = item
        .get("special")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let normalized = item
        .get("normalized")
        .and_then(Value::as_bool)
        .unwrap_or(!special);
    Ok(AddedToken {
        content: content.to_string(),
        id,
        special,
        normalized,
    })
}
