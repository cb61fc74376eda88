//! Every case of fixtures/tokenizer/clip_tokenizer_cases.json (transformers' CLIPTokenizer on
//! the full 49,408-token CLIP vocabulary) must match exactly.

mod common;

use serde_json::Value;
use styleforge_tokenizer::{ClipTokenizer, STANDARD_BOS_ID, STANDARD_EOS_ID, STANDARD_VOCAB_SIZE};

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("an id")).expect("a u32 id"))
        .collect()
}

fn cases() -> Vec<Value> {
    let path = common::fixtures().join("tokenizer/clip_tokenizer_cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run tools/fixtures/make_fixtures.py)",
            path.display()
        )
    });
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["vocab_size"], 49408);
    json["cases"].as_array().unwrap().clone()
}

#[test]
fn standard_vocabulary_shape() {
    let tok = ClipTokenizer::standard().unwrap();
    assert_eq!(tok.vocab_size(), STANDARD_VOCAB_SIZE);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (STANDARD_BOS_ID, STANDARD_EOS_ID, STANDARD_EOS_ID)
    );
    assert_eq!(tok.max_length(), 77);
    assert_eq!(tok.id_to_token(0), Some("!"));
    assert_eq!(tok.id_to_token(256), Some("!</w>"));
    assert_eq!(tok.token_to_id("cat</w>"), Some(2368));
    assert_eq!(tok.id_to_token(49406), Some("<|startoftext|>"));
}

fn check_all(tok: &ClipTokenizer, tok_sd2: &ClipTokenizer) {
    let cases = cases();
    assert!(cases.len() >= 250, "only {} cases", cases.len());
    let mut failures = Vec::new();
    let (mut truncated, mut sd2) = (0, 0);
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let want_padded = ids(&case["padded"]);
        let got = tok.encode(text);
        let enc = tok.encode_padded(text);
        if got != want {
            failures.push(format!(
                "text {text:?}\n  expected ids {want:?}\n  got          {got:?}"
            ));
        }
        if enc.ids != want_padded {
            failures.push(format!(
                "text {text:?}\n  expected padded {want_padded:?}\n  got             {:?}",
                enc.ids
            ));
        }
        assert_eq!(enc.untruncated_len, want.len(), "{text:?}");
        assert_eq!(enc.truncated, want.len() > 77, "{text:?}");
        truncated += usize::from(enc.truncated);
        if let Some(p) = case.get("padded_sd2") {
            sd2 += 1;
            let want_sd2 = ids(p);
            let got_sd2 = tok_sd2.encode_padded(text).ids;
            if got_sd2 != want_sd2 {
                failures.push(format!(
                    "text {text:?} (SD 2.x pad)\n  expected {want_sd2:?}\n  got      {got_sd2:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(truncated > 0 && sd2 > 0);
    eprintln!(
        "{} reference cases match ({truncated} truncated, {sd2} with SD 2.x padding)",
        cases.len()
    );
}

#[test]
fn standard_tokenizer_matches_transformers() {
    let tok = ClipTokenizer::standard().unwrap();
    let mut tok_sd2 = tok.clone();
    assert_eq!(tok_sd2.set_pad_token("!").unwrap(), 0);
    check_all(&tok, &tok_sd2);
}

/// The same cases through a tokenizer folder written from the standard vocabulary, in the
/// layout the Hugging Face hub uses (vocab.json, merges.txt, configs).
#[test]
fn folder_tokenizer_matches_transformers() {
    let tok = ClipTokenizer::standard().unwrap();
    let dir = common::TempDir::new("full-folder");
    let vocab: serde_json::Map<String, Value> = (0..tok.vocab_size() as u32)
        .map(|id| (tok.id_to_token(id).unwrap().to_string(), Value::from(id)))
        .collect();
    dir.write("vocab.json", &serde_json::to_string(&vocab).unwrap());
    // merges.txt: the first 48,894 merges of the embedded file, after a version header.
    let gz = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/bpe_simple_vocab_16e6.txt.gz"
    ))
    .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    let merges: Vec<&str> = text.split('\n').skip(1).take(48_894).collect();
    dir.write(
        "merges.txt",
        &format!("#version: 0.2\n{}\n", merges.join("\n")),
    );
    dir.write(
        "tokenizer_config.json",
        r#"{"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}"#,
    );
    let from_folder = ClipTokenizer::from_folder(dir.path()).unwrap();
    assert_eq!(from_folder.vocab_size(), STANDARD_VOCAB_SIZE);
    dir.write(
        "special_tokens_map.json",
        r#"{"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!", "unk_token": "<|endoftext|>"}"#,
    );
    let from_folder_sd2 = ClipTokenizer::from_folder(dir.path()).unwrap();
    assert_eq!(from_folder_sd2.pad_id(), 0);
    check_all(&from_folder, &from_folder_sd2);
}
