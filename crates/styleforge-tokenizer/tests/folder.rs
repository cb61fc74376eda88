//! Loading tokenizer folders: the tiny SD fixtures (a 1,000-token truncated CLIP vocabulary,
//! checked against the ids transformers produced for them), other layouts, and the errors
//! for missing or corrupt files.

mod common;

use common::{copy_files, fixtures, TempDir};
use serde_json::Value;
use std::path::Path;
use styleforge_tokenizer::{ClipTokenizer, TokenizerError};

const TINY_FILES: &[&str] = &[
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// The prompts of a tiny model's reference.json and the input_ids transformers made of them.
fn reference_rows(model: &str) -> Vec<(String, Vec<u32>)> {
    let dir = fixtures().join(model);
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let tensors = dir.join("reference.safetensors");
    let mut rows = Vec::new();
    for (prompts, ids) in [("prompts", "input_ids"), ("grad_prompts", "grad_input_ids")] {
        let prompts = reference["recipe"][prompts].as_array().unwrap();
        let ids = common::read_i64_rows(&tensors, ids);
        assert_eq!(prompts.len(), ids.len());
        for (p, row) in prompts.iter().zip(ids) {
            rows.push((p.as_str().unwrap().to_string(), row));
        }
    }
    rows
}

fn check_reference(tok: &ClipTokenizer, model: &str) {
    let rows = reference_rows(model);
    assert!(!rows.is_empty(), "{model}: no reference prompts");
    for (prompt, want) in rows {
        let got = tok.encode_padded(&prompt);
        assert_eq!(got.ids, want, "{model}: {prompt:?}");
        assert!(!got.truncated);
    }
}

#[test]
fn tiny_sd1_model_folder() {
    let tok = ClipTokenizer::from_folder(fixtures().join("tiny-sd1")).unwrap();
    assert_eq!(tok.vocab_size(), 1000);
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.pad_id()), (998, 999, 999));
    assert_eq!(tok.max_length(), 77);
    check_reference(&tok, "tiny-sd1");
}

#[test]
fn tiny_sd1_tokenizer_folder_itself() {
    let tok = ClipTokenizer::from_folder(fixtures().join("tiny-sd1/tokenizer")).unwrap();
    assert_eq!(tok.bos_id(), 998);
    check_reference(&tok, "tiny-sd1");
}

/// SD 2.x pads with "!" (id 0), and, as in transformers, a "!" in the prompt is then the
/// special pad token too (the tiny-sd2 reference prompt contains "stop!").
#[test]
fn tiny_sd2_pads_with_exclamation_mark() {
    let tok = ClipTokenizer::from_folder(fixtures().join("tiny-sd2")).unwrap();
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.pad_id()), (998, 999, 0));
    assert!(reference_rows("tiny-sd2")
        .iter()
        .any(|(p, _)| p.contains('!')));
    check_reference(&tok, "tiny-sd2");
    let enc = tok.encode_padded("a");
    assert_eq!(&enc.ids[..4], [998, 320, 999, 0]);
}

#[test]
fn tokenizer_json_only() {
    let dir = TempDir::new("tokenizer-json");
    copy_files(
        &fixtures().join("tiny-sd1/tokenizer"),
        dir.path(),
        &["tokenizer.json", "tokenizer_config.json"],
    );
    let tok = ClipTokenizer::from_folder(dir.path()).unwrap();
    assert_eq!(tok.vocab_size(), 1000);
    check_reference(&tok, "tiny-sd1");
}

fn tiny_copy(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    copy_files(
        &fixtures().join("tiny-sd1/tokenizer"),
        dir.path(),
        TINY_FILES,
    );
    dir
}

#[test]
fn vocab_and_merges_alone_use_clip_defaults() {
    let dir = TempDir::new("bare");
    copy_files(
        &fixtures().join("tiny-sd1/tokenizer"),
        dir.path(),
        &["vocab.json", "merges.txt"],
    );
    let tok = ClipTokenizer::from_folder(dir.path()).unwrap();
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id(), tok.max_length()),
        (998, 999, 999, 77)
    );
    check_reference(&tok, "tiny-sd1");
}

#[test]
fn added_tokens_json_is_loaded() {
    let dir = tiny_copy("added-json");
    dir.write("added_tokens.json", r#"{"<zwx>": 1000, "<other>": 1001}"#);
    let tok = ClipTokenizer::from_folder(dir.path()).unwrap();
    assert_eq!(tok.vocab_size(), 1002);
    assert_eq!(tok.token_to_id("<zwx>"), Some(1000));
    // added tokens are matched after normalisation (case-insensitively), inside words too
    assert_eq!(tok.encode("<ZWX>x<other>"), [998, 1000, 343, 1001, 999]);
}

#[test]
fn added_tokens_decoder_is_loaded() {
    let dir = tiny_copy("added-decoder");
    dir.write(
        "tokenizer_config.json",
        r#"{"model_max_length": 77, "pad_token": "!",
            "added_tokens_decoder": {
              "998": {"content": "<|startoftext|>", "special": true, "normalized": false},
              "999": {"content": "<|endoftext|>", "special": true, "normalized": false},
              "1000": {"content": "<cat-toy>", "special": false, "normalized": true}}}"#,
    );
    let tok = ClipTokenizer::from_folder(dir.path()).unwrap();
    assert_eq!(tok.pad_id(), 0);
    assert_eq!(tok.encode("a <cat-toy>"), [998, 320, 1000, 999]);
    assert_eq!(tok.decode(&[998, 320, 1000, 999], true), "a <cat-toy>");
}

#[test]
fn model_max_length_is_read() {
    let dir = tiny_copy("max-length");
    dir.write("tokenizer_config.json", r#"{"model_max_length": 10}"#);
    let tok = ClipTokenizer::from_folder(dir.path()).unwrap();
    assert_eq!(tok.max_length(), 10);
    let enc = tok.encode_padded("a a a a a a a a a a");
    assert_eq!(enc.ids.len(), 10);
    assert!(enc.truncated);
    // transformers' "unknown" length (1e30) means CLIP's 77
    dir.write("tokenizer_config.json", r#"{"model_max_length": 1e30}"#);
    assert_eq!(
        ClipTokenizer::from_folder(dir.path()).unwrap().max_length(),
        77
    );
}

// ----- errors -----------------------------------------------------------------------------

fn load_err(dir: &Path) -> (TokenizerError, String) {
    let err = ClipTokenizer::from_folder(dir).unwrap_err();
    let msg = err.to_string();
    (err, msg)
}

#[test]
fn missing_folder() {
    let (err, msg) = load_err(Path::new("/definitely/not/here"));
    assert!(
        matches!(err, TokenizerError::FolderNotFound { .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("/definitely/not/here") && msg.contains("tokenizer/"),
        "{msg}"
    );
}

#[test]
fn missing_vocab() {
    let dir = TempDir::new("empty");
    let (err, msg) = load_err(dir.path());
    assert!(matches!(err, TokenizerError::MissingFile { .. }), "{err:?}");
    assert!(
        msg.contains("vocab.json") && msg.contains("merges.txt"),
        "{msg}"
    );
}

#[test]
fn missing_merges() {
    let dir = TempDir::new("no-merges");
    copy_files(
        &fixtures().join("tiny-sd1/tokenizer"),
        dir.path(),
        &["vocab.json"],
    );
    let (err, msg) = load_err(dir.path());
    assert!(matches!(err, TokenizerError::MissingFile { .. }), "{err:?}");
    assert!(msg.contains("merges.txt"), "{msg}");
}

#[test]
fn corrupt_vocab_json() {
    let dir = tiny_copy("corrupt-vocab");
    let vocab = std::fs::read_to_string(dir.path().join("vocab.json")).unwrap();
    dir.write("vocab.json", &vocab[..vocab.len() / 2]);
    let (err, msg) = load_err(dir.path());
    assert!(matches!(err, TokenizerError::Json { .. }), "{err:?}");
    assert!(
        msg.contains("vocab.json") && msg.contains("corrupt"),
        "{msg}"
    );

    dir.write("vocab.json", r#"["a", "b"]"#);
    let (err, msg) = load_err(dir.path());
    assert!(matches!(err, TokenizerError::Invalid { .. }), "{err:?}");
    assert!(msg.contains("vocab.json"), "{msg}");
}

#[test]
fn vocab_ids_with_gap_or_duplicate() {
    let dir = tiny_copy("vocab-gap");
    dir.write("vocab.json", r#"{"a": 0, "b": 2}"#);
    let (_, msg) = load_err(dir.path());
    assert!(
        msg.contains("vocab.json") && msg.contains("without gaps"),
        "{msg}"
    );
    dir.write("vocab.json", r#"{"a": 0, "b": 0}"#);
    let (_, msg) = load_err(dir.path());
    assert!(msg.contains("share id 0"), "{msg}");
}

#[test]
fn corrupt_merges_txt() {
    let dir = tiny_copy("corrupt-merges");
    dir.write("merges.txt", "#version: 0.2\ni n\nthis line has three\n");
    let (err, msg) = load_err(dir.path());
    assert!(matches!(err, TokenizerError::Invalid { .. }), "{err:?}");
    assert!(
        msg.contains("merges.txt") && msg.contains("line 3"),
        "{msg}"
    );

    dir.write("merges.txt", "#version: 0.2\ni n\nzz qq\n");
    let (_, msg) = load_err(dir.path());
    assert!(
        msg.contains("merges.txt") && msg.contains("line 3") && msg.contains("\"zz\""),
        "{msg}"
    );
}

#[test]
fn corrupt_config_files() {
    let dir = tiny_copy("corrupt-config");
    dir.write("tokenizer_config.json", "{ not json");
    let (err, msg) = load_err(dir.path());
    assert!(matches!(err, TokenizerError::Json { .. }), "{err:?}");
    assert!(msg.contains("tokenizer_config.json"), "{msg}");

    let dir = tiny_copy("corrupt-map");
    dir.write("special_tokens_map.json", "[]");
    let (_, msg) = load_err(dir.path());
    assert!(msg.contains("special_tokens_map.json"), "{msg}");

    let dir = tiny_copy("bad-length");
    dir.write("tokenizer_config.json", r#"{"model_max_length": 1}"#);
    let (_, msg) = load_err(dir.path());
    assert!(msg.contains("model_max_length"), "{msg}");
}

#[test]
fn unknown_special_token() {
    let dir = tiny_copy("unknown-special");
    dir.write("special_tokens_map.json", r#"{"pad_token": "<pad>"}"#);
    let (err, msg) = load_err(dir.path());
    assert!(
        matches!(err, TokenizerError::UnknownSpecialToken { role: "pad", .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("<pad>") && msg.contains("special_tokens_map.json"),
        "{msg}"
    );
}

#[test]
fn added_token_id_gap() {
    let dir = tiny_copy("added-gap");
    dir.write("added_tokens.json", r#"{"<zwx>": 1005}"#);
    let (err, msg) = load_err(dir.path());
    assert!(matches!(err, TokenizerError::Invalid { .. }), "{err:?}");
    assert!(
        msg.contains("added_tokens.json") && msg.contains("1000"),
        "{msg}"
    );
}
