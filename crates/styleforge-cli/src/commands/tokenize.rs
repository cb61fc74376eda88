//! `styleforge tokenize`: show how a prompt is tokenized, and where the text encoder's
//! 77-token limit cuts it.

use anyhow::{bail, Context};
use std::path::PathBuf;
use styleforge::models::source::ResolveOptions;
use styleforge::tokenizer::{ClipTokenizer, Encoding};

/// Arguments of `styleforge tokenize`.
#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    /// Model folder (diffusers layout: DIR/tokenizer/), a tokenizer folder itself, or a
    /// Hub model `owner/name[@revision]` (only its tokenizer is fetched); without it, the
    /// standard CLIP tokenizer of Stable Diffusion 1.x is used.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Print a JSON object (ids padded to the maximum length, length, truncated, tokens)
    /// instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The prompt to tokenize.
    pub text: String,
}

/// Runs `styleforge tokenize`.
pub fn run(args: &TokenizeArgs) -> anyhow::Result<()> {
    styleforge::pipelines::check_prompt("the prompt", &args.text)?;
    let (tokenizer, source) = match &args.model {
        Some(arg) => {
            let mut opts = ResolveOptions::diffusers(None);
            opts.hub.components = Some(vec!["tokenizer".into()]);
            let model = super::model_source::resolve(arg, opts)?;
            if model.is_single_file() {
                bail!(
                    "--model {}: a single-file checkpoint has no tokenizer folder; give a \
                     model or tokenizer folder, a Hub name, or no --model for the standard \
                     CLIP tokenizer",
                    arg.display()
                );
            }
            (
                ClipTokenizer::from_folder(&model.path)
                    .with_context(|| format!("cannot load the tokenizer of {}", arg.display()))?,
                arg.display().to_string(),
            )
        }
        None => (
            ClipTokenizer::standard().context("cannot build the standard CLIP tokenizer")?,
            "standard CLIP tokenizer".to_string(),
        ),
    };

    let content = tokenizer.encode_content(&args.text);
    let encoding = tokenizer.pad_content(&content);
    let full = tokenizer.encode(&args.text);
    let dropped_text = tokenizer.decode(&encoding.dropped_ids, false);

    if encoding.truncated {
        tracing::warn!(
            "the prompt is {} tokens long but the text encoder sees only {}: {} token(s) are dropped: {:?}",
            encoding.untruncated_len,
            tokenizer.max_length(),
            encoding.dropped_ids.len(),
            dropped_text
        );
    }

    if args.json {
        let tokens: Vec<String> = full
            .iter()
            .map(|&id| tokenizer.id_to_token(id).unwrap_or_default().to_string())
            .collect();
        let out = serde_json::json!({
            "ids": encoding.ids,
            "length": encoding.untruncated_len,
            "truncated": encoding.truncated,
            "tokens": tokens,
            "max_length": tokenizer.max_length(),
            "dropped_text": dropped_text,
        });
        println!("{out}");
    } else {
        print_table(
            &tokenizer,
            &source,
            &args.text,
            &full,
            &encoding,
            &dropped_text,
        );
    }
    Ok(())
}

/// How a token is shown: its vocabulary spelling, plus the text it stands for when that
/// spelling is not plain ASCII (byte-level characters of non-Latin text), or its bytes in hex
/// when it holds only part of a character.
fn display_token(tokenizer: &ClipTokenizer, id: u32) -> String {
    let token = tokenizer.id_to_token(id).unwrap_or("?");
    if token.chars().all(|c| c.is_ascii_graphic()) {
        return token.to_string();
    }
    let bytes = tokenizer.token_bytes(id).unwrap_or_default();
    match std::str::from_utf8(&bytes) {
        Ok(text) => format!("{token}  {text:?}"),
        Err(_) => {
            let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("{token}  (bytes {})", hex.join(" "))
        }
    }
}

fn print_table(
    tokenizer: &ClipTokenizer,
    source: &str,
    text: &str,
    full: &[u32],
    encoding: &Encoding,
    dropped_text: &str,
) {
    let max = tokenizer.max_length();
    println!("tokenizer: {source} ({} tokens)", tokenizer.vocab_size());
    println!("prompt:    {text:?}");
    println!();
    println!("{:>5}  {:>6}  token", "pos", "id");
    // The text encoder sees BOS + the first max-2 content tokens + EOS.
    let kept = max.saturating_sub(1);
    for (pos, &id) in full.iter().enumerate() {
        if encoding.truncated && pos == kept {
            println!(
                "-----  {max}-token limit: the tokens below are dropped (<|endoftext|> takes position {}) -----",
                max - 1
            );
        }
        println!("{pos:>5}  {id:>6}  {}", display_token(tokenizer, id));
    }
    println!();
    if encoding.truncated {
        println!(
            "length: {} tokens (with start/end), over the limit of {max}: {} token(s) dropped",
            encoding.untruncated_len,
            encoding.dropped_ids.len()
        );
        println!("dropped text: {dropped_text:?}");
    } else {
        println!(
            "length: {} tokens (with start/end) of {max}; {} left",
            encoding.untruncated_len,
            max.saturating_sub(encoding.untruncated_len)
        );
    }
    let ids: Vec<String> = encoding.ids.iter().map(u32::to_string).collect();
    println!("ids ({max}, padded): [{}]", ids.join(", "));
}
