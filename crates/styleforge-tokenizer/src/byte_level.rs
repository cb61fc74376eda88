//! GPT-2's byte-level alphabet: a reversible mapping of the 256 byte values to 256
//! printable Unicode characters, so that BPE can work on text of any script.
//!
//! Printable Latin-1 bytes (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) map to themselves; the other
//! 68 bytes map, in increasing order, to U+0100, U+0101, ….

use std::collections::HashMap;
use std::sync::OnceLock;

/// The byte ↔ character tables.
pub(crate) struct ByteLevel {
    to_char: [char; 256],
    to_byte: HashMap<char, u8>,
}

impl ByteLevel {
    /// The shared tables (built on first use).
    pub(crate) fn get() -> &'static ByteLevel {
        static TABLES: OnceLock<ByteLevel> = OnceLock::new();
        TABLES.get_or_init(ByteLevel::build)
    }

    fn build() -> ByteLevel {
        let mut to_char = ['\0'; 256];
        let mut next_extra = 256u32;
        for (byte, slot) in (0u8..=255).zip(to_char.iter_mut()) {
            let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
            *slot = if printable {
                char::from(byte)
            } else {
                let c = char::from_u32(next_extra).unwrap_or(char::REPLACEMENT_CHARACTER);
                next_extra += 1;
                c
            };
        }
        let to_byte = (0u8..=255).map(|b| (to_char[usize::from(b)], b)).collect();
        ByteLevel { to_char, to_byte }
    }

    /// The character standing for `byte`.
    pub(crate) fn char_of(&self, byte: u8) -> char {
        self.to_char[usize::from(byte)]
    }

    /// The byte a character stands for, if it is one of the 256 alphabet characters.
    pub(crate) fn byte_of(&self, c: char) -> Option<u8> {
        self.to_byte.get(&c).copied()
    }

    /// The 256 alphabet characters in GPT-2's `bytes_to_unicode` order, which is the order
    /// of the first 256 vocabulary entries: the characters of the printable bytes (`!`, `"`,
    /// …, `ÿ`), then U+0100, U+0101, … (the other bytes).
    pub(crate) fn alphabet(&self) -> Vec<char> {
        let mut chars = self.to_char.to_vec();
        chars.sort_by_key(|&c| (u32::from(c) >= 256, u32::from(c)));
        chars
    }

    /// Appends the bytes a vocabulary token stands for to `out`. Characters outside the
    /// alphabet (only possible in added tokens) are kept as their UTF-8 bytes.
    pub(crate) fn decode_into(&self, token: &str, out: &mut Vec<u8>) {
        for c in token.chars() {
            match self.byte_of(c) {
                Some(b) => out.push(b),
                None => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_a_bijection_like_gpt2() {
        let bl = ByteLevel::get();
        assert_eq!(bl.char_of(b'a'), 'a');
        assert_eq!(bl.char_of(b' '), '\u{120}'); // 'Ġ'
        assert_eq!(bl.char_of(0), '\u{100}');
        assert_eq!(bl.char_of(0xAD), '\u{143}');
        for b in 0u8..=255 {
            assert_eq!(bl.byte_of(bl.char_of(b)), Some(b));
        }
        let alphabet = bl.alphabet();
        assert_eq!(
            (alphabet[0], alphabet[93], alphabet[188]),
            ('!', '~', '\u{100}')
        );
    }
}
