//! Behaviour beyond the reference cases: truncation reports, added tokens, decoding,
//! batches, SD 2.x padding, and robustness on arbitrary input. Expected ids were checked
//! against transformers 5.23 / tokenizers 0.23.3 `CLIPTokenizer`.

use std::sync::OnceLock;
use styleforge_tokenizer::{ClipTokenizer, TokenizerError};

fn standard() -> &'static ClipTokenizer {
    static TOK: OnceLock<ClipTokenizer> = OnceLock::new();
    TOK.get_or_init(|| ClipTokenizer::standard().unwrap())
}

#[test]
fn short_prompt_is_padded() {
    let enc = standard().encode_padded("a photo of a cat");
    assert_eq!(&enc.ids[..7], [49406, 320, 1125, 539, 320, 2368, 49407]);
    assert!(enc.ids[7..].iter().all(|&id| id == 49407));
    assert_eq!(enc.ids.len(), 77);
    assert_eq!(
        (enc.untruncated_len, enc.unpadded_len, enc.eos_position()),
        (7, 7, 6)
    );
    assert!(!enc.truncated && enc.dropped_ids.is_empty());
    assert_eq!(enc.content_ids(), [320, 1125, 539, 320, 2368]);
}

#[test]
fn truncation_is_reported() {
    let tok = standard();
    // 75 content tokens fit exactly; 76 do not
    let fits = tok.encode_padded(&"word ".repeat(75));
    assert!(!fits.truncated);
    assert_eq!(fits.untruncated_len, 77);
    let over = tok.encode_padded(&"word ".repeat(76));
    assert!(over.truncated);
    assert_eq!(over.dropped_ids, [2653]);

    let text = format!("{} and then a dragon appears", "word ".repeat(75));
    let enc = tok.encode_padded(&text);
    assert!(enc.truncated);
    assert_eq!(enc.untruncated_len, 82);
    assert_eq!(enc.ids.len(), 77);
    assert_eq!(enc.ids[0], 49406);
    assert_eq!(enc.ids[76], 49407);
    assert_eq!(enc.unpadded_len, 77);
    assert_eq!(
        tok.decode(&enc.dropped_ids, true),
        "and then a dragon appears"
    );
    assert_eq!(tok.encode(&text).len(), 82);
}

#[test]
fn batch_rows_have_fixed_length() {
    let prompts = ["a cat", "", &"long ".repeat(100)];
    let rows = standard().encode_batch_ids(&prompts);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.len() == 77));
    assert_eq!(&rows[1][..3], [49406, 49407, 49407]);
    let encs = standard().encode_batch(&prompts);
    assert_eq!(
        encs.iter().map(|e| e.truncated).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(encs[0].ids, rows[0]);
}

#[test]
fn special_tokens_in_text() {
    let tok = standard();
    // matched as written, anywhere
    assert_eq!(
        tok.encode("x<|endoftext|>!"),
        [49406, 343, 49407, 256, 49407]
    );
    // not matched in another case: split like punctuation and letters
    assert_eq!(
        tok.encode("<|ENDOFTEXT|> x"),
        [49406, 27, 347, 40786, 4160, 91, 285, 343, 49407]
    );
}

#[test]
fn sd2_pad_token_is_special_in_text() {
    let mut sd2 = standard().clone();
    assert_eq!(sd2.set_pad_token("!").unwrap(), 0);
    assert_eq!(
        standard().encode("wow!!! nice! a!b"),
        [49406, 2781, 995, 1805, 256, 320, 256, 321, 49407]
    );
    assert_eq!(
        sd2.encode("wow!!! nice! a!b"),
        [49406, 2781, 0, 0, 0, 1805, 0, 320, 0, 321, 49407]
    );
    assert_eq!(
        &sd2.encode_padded("hello!").ids[..6],
        [49406, 3306, 0, 49407, 0, 0]
    );
    assert!(matches!(
        sd2.set_pad_token("<pad>"),
        Err(TokenizerError::UnknownSpecialToken { .. })
    ));
}

#[test]
fn normalisation_details() {
    let tok = standard();
    // lower-casing, whitespace runs, NFD input composed
    assert_eq!(tok.encode("A  PHOTO\t\nof"), tok.encode("a photo of"));
    assert_eq!(tok.encode("cafe\u{301}"), tok.encode("café"));
    // per-character lower-casing: final sigma stays σ (U+03C3 = CF 83)
    assert_eq!(
        tok.encode("ΟΔΟΣ Σ"),
        [49406, 138, 123, 138, 112, 138, 123, 139, 481, 139, 481, 49407]
    );
    // contractions
    assert_eq!(tok.encode("it'sa 'S"), [49406, 585, 568, 320, 568, 49407]);
    // U+1F (not whitespace) is a token; U+85 is whitespace
    assert_eq!(tok.encode("r\u{1f}q"), [49406, 337, 475, 336, 49407]);
    assert_eq!(tok.encode("r\u{85}q"), tok.encode("r q"));
    // emoji with zero-width joiners
    assert_eq!(
        tok.encode("👨\u{200d}👩\u{200d}👧 🙂"),
        [49406, 25023, 26304, 964, 356, 14860, 49407]
    );
    assert_eq!(tok.encode("İstanbul"), [49406, 328, 16384, 11231, 49407]);
}

#[test]
fn decode_round_trips() {
    let tok = standard();
    let ids = tok.encode("Hello, World! it's 2024 — café 🐱");
    assert_eq!(
        tok.decode(&ids, true),
        "hello , world ! it 's 2 0 2 4 — café 🐱"
    );
    assert!(tok.decode(&ids, false).starts_with("<|startoftext|>hello"));
    // a cut inside a character's bytes gives U+FFFD
    assert_eq!(tok.decode(&[39121, 44353, 34002], false), "日本\u{fffd}");
    // unknown ids are ignored
    assert_eq!(tok.decode(&[320, 999_999, 1125], true), "a photo");
    assert_eq!(tok.tokenize("a cat"), ["a</w>", "cat</w>"]);
}

#[test]
fn added_tokens() {
    let mut tok = standard().clone();
    let zwx = tok.add_token("<zwx>").unwrap();
    assert_eq!(zwx, 49408);
    let cat = tok.add_token("<猫>").unwrap();
    assert_eq!(cat, 49409);
    assert_eq!(tok.vocab_size(), 49410);
    assert_eq!(tok.base_vocab_size(), 49408);
    assert_eq!(tok.token_to_id("<zwx>"), Some(49408));
    assert_eq!(tok.id_to_token(49409), Some("<猫>"));
    assert!(!tok.is_special(49408));
    assert_eq!(
        tok.encode("a <zwx>cat <猫> <ZWX>"),
        [49406, 320, 49408, 2368, 49409, 49408, 49407]
    );
    assert_eq!(tok.encode("x<zwx>y"), [49406, 343, 49408, 344, 49407]);
    assert_eq!(tok.encode("<zw x>"), [49406, 283, 42188, 343, 285, 49407]);
    let ids = tok.encode("A <ZWX> photo");
    assert_eq!(ids, [49406, 320, 49408, 1125, 49407]);
    assert_eq!(tok.decode(&ids, true), "a <zwx>photo");
    // the standard tokenizer is unchanged
    assert_eq!(standard().vocab_size(), 49408);
    assert_ne!(standard().encode("<zwx>"), tok.encode("<zwx>"));
}

#[test]
fn adding_an_existing_token_fails() {
    let mut tok = standard().clone();
    tok.add_token("<zwx>").unwrap();
    for (token, id) in [
        ("<zwx>", 49408),
        ("<ZWX>", 49408),
        ("cat</w>", 2368),
        ("<|endoftext|>", 49407),
    ] {
        let err = tok.add_token(token).unwrap_err();
        assert!(
            matches!(err, TokenizerError::TokenExists { id: i, .. } if i == id),
            "{token}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("{token:?}")), "{err}");
    }
    for token in ["", "  "] {
        assert!(matches!(
            tok.add_token(token),
            Err(TokenizerError::InvalidToken { .. })
        ));
    }
    // add_tokens is all-or-nothing
    let before = tok.vocab_size();
    assert!(tok.add_tokens(&["<a1>", "<a2>", "<zwx>"]).is_err());
    assert_eq!(tok.vocab_size(), before);
    assert_eq!(tok.add_tokens(&["<a1>", "<a2>"]).unwrap(), [49409, 49410]);
}

#[test]
fn long_and_hostile_inputs_do_not_panic() {
    let tok = standard();
    let long_word = "a".repeat(100_000);
    let enc = tok.encode_padded(&long_word);
    assert!(enc.truncated);
    assert_eq!(enc.ids.len(), 77);
    let mixed: String = (0u32..0x3_0000).filter_map(char::from_u32).collect();
    assert!(tok.encode(&mixed).len() > 1000);
    for text in [
        "\0",
        "\u{fffd}",
        "\u{301}",
        "\u{10ffff}",
        "\u{feff}\u{200b}",
        "<|",
        "|>",
        "<|startoftext|",
        "'",
        "''s",
        "\r\n\r\n",
        " \u{3000} ",
        "🏳️‍🌈",
        "\u{e000}",
        "a\u{0}b",
    ] {
        let enc = tok.encode_padded(text);
        assert_eq!(enc.ids.len(), 77, "{text:?}");
        let _ = tok.decode(&enc.ids, false);
    }
    // every single byte value via lossy UTF-8 and decoding arbitrary ids
    let bytes: Vec<u8> = (0u8..=255).collect();
    let _ = tok.encode(&String::from_utf8_lossy(&bytes));
    let all: Vec<u32> = (0..49_500).collect();
    let _ = tok.decode(&all, false);
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ClipTokenizer>();
    let tok = standard();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(tok.encode("a cat").len(), 4));
        }
    });
}

#[test]
fn from_vocab_and_merges() {
    let mut tokens: Vec<String> = (0..=255u8)
        .map(|b| standard().id_to_token(u32::from(b)).unwrap().to_string())
        .collect();
    tokens.extend((256..512).map(|id| standard().id_to_token(id).unwrap().to_string()));
    tokens.push("ca".to_string());
    tokens.push("cat</w>".to_string());
    let merges = vec![
        ("c".to_string(), "a".to_string()),
        ("ca".to_string(), "t</w>".to_string()),
    ];
    // CLIP's special tokens are required
    let err = ClipTokenizer::from_vocab_and_merges(tokens.clone(), &merges, 77).unwrap_err();
    assert!(
        matches!(err, TokenizerError::UnknownSpecialToken { role: "bos", .. }),
        "{err:?}"
    );
    tokens.push("<|startoftext|>".to_string());
    tokens.push("<|endoftext|>".to_string());
    let tok = ClipTokenizer::from_vocab_and_merges(tokens, &merges, 8).unwrap();
    assert_eq!(
        tok.encode_padded("Cat cab").ids,
        [514, 513, 512, 321, 515, 515, 515, 515]
    );
    assert_eq!(tok.decode(&[513, 512, 321], false), "cat cab");
}
