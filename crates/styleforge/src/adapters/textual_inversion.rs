//! Textual Inversion (Gal et al. 2022): new tokens in the tokenizer whose embeddings are
//! the only trained weights. A placeholder with `n` vectors becomes the tokens
//! `<tok>`, `<tok>_1`, …, `<tok>_{n-1}` (diffusers' convention), appended after the
//! existing vocabulary; the token table is the frozen table with a trainable block of
//! rows concatenated below it, so every other row stays bit-identical.
//!
//! Files: diffusers' `learned_embeds.safetensors` (`{"<tok>": [n, d]}`) and the
//! AUTOMATIC1111 embedding (`{"emb_params": [n, d]}`, token named after the file).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, Var};
use styleforge_tokenizer::ClipTokenizer;

use super::{BaseWeights, TOKEN_TABLE};
use crate::error::{Error, Result};

/// The tokens a placeholder with `n` vectors stands for.
pub fn placeholder_tokens(placeholder: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i == 0 {
                placeholder.to_string()
            } else {
                format!("{placeholder}_{i}")
            }
        })
        .collect()
}

/// Writes every whole-word `placeholder` in `prompt` as its `n` tokens
/// (`<tok> <tok>_1 …`), as diffusers does for multi-vector embeddings.
pub fn expand_prompt(prompt: &str, placeholder: &str, n: usize) -> String {
    if n <= 1 {
        return prompt.to_string();
    }
    let expanded = placeholder_tokens(placeholder, n).join(" ");
    prompt
        .split(' ')
        .map(|w| {
            if w == placeholder {
                expanded.as_str()
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn add_tokens(
    tokenizer: &mut ClipTokenizer,
    tokens: &[String],
    table_rows: usize,
) -> Result<Vec<u32>> {
    if tokenizer.vocab_size() != table_rows {
        return Err(Error::Adapter(format!(
            "the tokenizer has {} ids but the text encoder's token table {table_rows} rows",
            tokenizer.vocab_size()
        )));
    }
    let ids = tokenizer
        .add_tokens(tokens)
        .map_err(|e| Error::InvalidRequest(format!("cannot add the new token(s): {e}")))?;
    for (i, id) in ids.iter().enumerate() {
        if *id as usize != table_rows + i {
            return Err(Error::Adapter(format!(
                "token `{}` got id {id}, expected {}",
                tokens[i],
                table_rows + i
            )));
        }
    }
    Ok(ids)
}

/// Trainable embeddings for new tokens.
#[derive(Debug, Clone)]
pub struct TextualInversion {
    /// The placeholder as written in prompts, e.g. `<zwx>`.
    pub placeholder: String,
    /// The tokens it stands for (`<zwx>`, `<zwx>_1`, …).
    pub tokens: Vec<String>,
    /// Their ids (the rows after the frozen table).
    pub token_ids: Vec<u32>,
    /// Their embeddings `[n, hidden]`, the only trained weights.
    pub embeds: Var,
}

impl TextualInversion {
    /// Adds `placeholder` (with `num_vectors` vectors) to `tokenizer`, each row initialised
    /// to the embedding of `initializer`, which must be a single existing token. Fails,
    /// naming the token, if a new token already exists.
    pub fn new(
        base: &BaseWeights,
        tokenizer: &mut ClipTokenizer,
        placeholder: &str,
        num_vectors: usize,
        initializer: &str,
    ) -> Result<Self> {
        if num_vectors == 0 {
            return Err(Error::InvalidRequest(
                "Textual Inversion needs at least one vector".into(),
            ));
        }
        let init_ids = tokenizer.encode_content(initializer);
        let [init_id] = init_ids[..] else {
            return Err(Error::InvalidRequest(format!(
                "the initializer `{initializer}` must be a single token, it is {} tokens",
                init_ids.len()
            )));
        };
        let table = &base.text_encoder[TOKEN_TABLE];
        let tokens = placeholder_tokens(placeholder, num_vectors);
        let token_ids = add_tokens(tokenizer, &tokens, table.dim(0)?)?;
        let row = table.narrow(0, init_id as usize, 1)?;
        // f32 whatever the base's dtype: the embeddings are master weights.
        let init = row.repeat((num_vectors, 1))?.to_dtype(DType::F32)?;
        Ok(Self {
            placeholder: placeholder.to_string(),
            tokens,
            token_ids,
            embeds: Var::from_tensor(&init)?,
        })
    }

    /// The trainable variable, named.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        vec![(
            format!("textual_inversion.{}", self.placeholder),
            self.embeds.clone(),
        )]
    }

    /// The text-encoder replacement: the frozen table with the new rows below it.
    pub fn overrides(&self, base: &BaseWeights) -> Result<HashMap<String, Tensor>> {
        let table = &base.text_encoder[TOKEN_TABLE];
        let rows = self.embeds.as_tensor().to_dtype(table.dtype())?;
        Ok(HashMap::from([(
            TOKEN_TABLE.to_string(),
            Tensor::cat(&[table, &rows], 0)?,
        )]))
    }

    /// `prompt` with the placeholder expanded to all of its tokens.
    pub fn expand_prompt(&self, prompt: &str) -> String {
        expand_prompt(prompt, &self.placeholder, self.tokens.len())
    }

    /// diffusers' `learned_embeds.safetensors`: `{placeholder: [n, d]}`.
    pub fn diffusers_tensors(&self) -> Result<HashMap<String, Tensor>> {
        Ok(HashMap::from([(
            self.placeholder.clone(),
            self.embeds.as_tensor().to_dtype(DType::F32)?,
        )]))
    }

    /// The AUTOMATIC1111 embedding: `{"emb_params": [n, d]}`.
    pub fn a1111_tensors(&self) -> Result<HashMap<String, Tensor>> {
        Ok(HashMap::from([(
            "emb_params".to_string(),
            self.embeds.as_tensor().to_dtype(DType::F32)?,
        )]))
    }
}

/// An embedding read from a file, ready to be added to a tokenizer and text encoder.
#[derive(Debug, Clone)]
pub struct EmbeddingFile {
    /// The placeholder token (the diffusers key, or the A1111 file's stem).
    pub token: String,
    /// `[n, d]`.
    pub vectors: Tensor,
}

impl EmbeddingFile {
    /// Reads a diffusers `learned_embeds.safetensors` (one key: the token) or an
    /// AUTOMATIC1111 embedding (`emb_params`, or `string_to_param.*`; the token is `token`
    /// or else the file's stem).
    pub fn load(path: &Path, token: Option<&str>) -> Result<Self> {
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .map_err(|e| bad(format!("not a readable embedding safetensors file: {e}")))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let a1111 = tensors
            .iter()
            .find(|(k, _)| *k == "emb_params" || k.starts_with("string_to_param."));
        let (name, vectors) = if let Some((_, v)) = a1111 {
            (token.map(str::to_string).unwrap_or(stem), v.clone())
        } else if tensors.len() == 1 {
            let (k, v) = tensors.into_iter().next().expect("one tensor");
            (token.map(str::to_string).unwrap_or(k), v)
        } else {
            let mut keys: Vec<&String> = tensors.keys().collect();
            keys.sort();
            return Err(bad(format!(
                "not a Textual Inversion embedding: expected `emb_params` or a single token key, found {keys:?}"
            )));
        };
        let vectors = match vectors.rank() {
            1 => vectors.unsqueeze(0)?,
            2 => vectors,
            _ => {
                return Err(bad(format!(
                    "embedding `{name}` has shape {:?}, expected [vectors, width]",
                    vectors.dims()
                )))
            }
        };
        Ok(Self {
            token: name,
            vectors: vectors.to_dtype(DType::F32)?,
        })
    }
}

/// What [`install_embeddings`] returns: the widened token table (under [`TOKEN_TABLE`])
/// and each placeholder with its number of vectors.
pub type InstalledEmbeddings = (HashMap<String, Tensor>, Vec<(String, usize)>);

/// Adds loaded embeddings to `tokenizer` and returns the text encoder's widened token
/// table (pass it to [`BaseWeights::build_text_encoder`] under [`TOKEN_TABLE`]) and the
/// placeholders with their vector counts (for [`expand_prompt`]). Fails, naming the token,
/// on a width that is not the text encoder's or a token that already exists.
pub fn install_embeddings(
    base: &BaseWeights,
    tokenizer: &mut ClipTokenizer,
    embeddings: &[EmbeddingFile],
) -> Result<InstalledEmbeddings> {
    let table = base.text_encoder[TOKEN_TABLE].clone();
    let width = table.dim(1)?;
    let mut parts = vec![table];
    let mut rows = parts[0].dim(0)?;
    let mut placeholders = Vec::new();
    for e in embeddings {
        let (n, d) = e.vectors.dims2()?;
        if d != width {
            return Err(Error::InvalidRequest(format!(
                "embedding `{}` is {d} wide but the text encoder's embeddings are {width} wide",
                e.token
            )));
        }
        let tokens = placeholder_tokens(&e.token, n);
        add_tokens(tokenizer, &tokens, rows)?;
        parts.push(e.vectors.to_dtype(base.dtype())?.to_device(base.device())?);
        rows += n;
        placeholders.push((e.token.clone(), n));
    }
    let table = Tensor::cat(&parts, 0)?;
    Ok((
        HashMap::from([(TOKEN_TABLE.to_string(), table)]),
        placeholders,
    ))
}
