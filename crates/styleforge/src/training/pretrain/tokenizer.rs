//! The standard CLIP tokenizer written out as a transformers tokenizer folder, for the
//! pretrained model's `tokenizer/`.

use std::collections::HashMap;
use std::path::Path;

use styleforge_models::files;
use styleforge_models::tokenizer::ClipTokenizer;

use super::write_json;
use crate::error::{Error, Result};

/// The standard CLIP tokenizer as `vocab.json` and `merges.txt` text.
///
/// The merges are recovered from the vocabulary: the token of rank `r` (id `512 + r`) is
/// re-segmented by byte-pair encoding with the merges of lower rank, which leaves exactly
/// the pair that merge `r` joined.
fn standard_tokenizer_files() -> Result<(String, String)> {
    let tok = ClipTokenizer::standard()?;
    let n = tok.base_vocab_size();
    let tokens: Vec<String> = (0..n as u32)
        .map(|id| {
            tok.id_to_token(id)
                .map(str::to_string)
                .ok_or_else(|| Error::msg(format!("standard tokenizer lacks id {id}")))
        })
        .collect::<Result<_>>()?;
    let mut ranks: HashMap<(String, String), usize> = HashMap::new();
    let mut merges = String::from("#version: 0.2\n");
    // 256 byte symbols, the same with `</w>`, the merges, then the two special tokens.
    for (rank, token) in tokens[512..n - 2].iter().enumerate() {
        let (body, end_of_word) = match token.strip_suffix("</w>") {
            Some(b) => (b, true),
            None => (token.as_str(), false),
        };
        let mut syms: Vec<String> = body.chars().map(|c| c.to_string()).collect();
        if end_of_word {
            if let Some(last) = syms.last_mut() {
                last.push_str("</w>");
            }
        }
        while syms.len() > 2 {
            let best = (0..syms.len() - 1)
                .filter_map(|i| {
                    ranks
                        .get(&(syms[i].clone(), syms[i + 1].clone()))
                        .map(|&r| (r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let right = syms.remove(i + 1);
            syms[i].push_str(&right);
        }
        if syms.len() != 2 {
            return Err(Error::msg(format!(
                "cannot recover the merge of standard token {token:?}"
            )));
        }
        merges.push_str(&format!("{} {}\n", syms[0], syms[1]));
        let right = syms.pop().expect("two symbols");
        let left = syms.pop().expect("two symbols");
        ranks.insert((left, right), rank);
    }
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
        .collect();
    let vocab = serde_json::to_string(&vocab).map_err(|e| Error::Json {
        what: "the standard vocabulary".into(),
        source: e,
    })?;
    Ok((vocab, merges))
}

/// Writes the standard 49,408-token CLIP tokenizer (what SD 1.x ships) into `dir` as a
/// transformers tokenizer folder (`vocab.json`, `merges.txt`, `tokenizer_config.json`,
/// `special_tokens_map.json`), and checks that the folder encodes like
/// [`ClipTokenizer::standard`].
pub fn write_standard_tokenizer(dir: &Path) -> Result<()> {
    let (vocab, merges) = standard_tokenizer_files()?;
    let write = |name: &str, text: &str| -> Result<()> { Ok(files::write(&dir.join(name), text)?) };
    write("vocab.json", &vocab)?;
    write("merges.txt", &merges)?;
    let specials = serde_json::json!({
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    });
    write_json(&dir.join("special_tokens_map.json"), &specials)?;
    let mut config = specials;
    config["model_max_length"] = 77.into();
    config["do_lower_case"] = true.into();
    config["tokenizer_class"] = "CLIPTokenizer".into();
    config["add_prefix_space"] = false.into();
    config["errors"] = "replace".into();
    write_json(&dir.join("tokenizer_config.json"), &config)?;
    let written = ClipTokenizer::from_folder(dir)?;
    let standard = ClipTokenizer::standard()?;
    for probe in [
        "a red house and an orange sun on grass at sunset, pixel art style",
        "cubist pointillist watercolor sketch, zwx style!",
        "Hello wörld 123 -- it's a dog's life",
    ] {
        if written.encode_padded(probe).ids != standard.encode_padded(probe).ids {
            return Err(Error::msg(format!(
                "the tokenizer written to {} does not encode {probe:?} as the standard one",
                dir.display()
            )));
        }
    }
    Ok(())
}
