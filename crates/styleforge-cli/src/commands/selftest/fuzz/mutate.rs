//! The seeded mutator: bit flips, byte overwrites, inserts and deletes, interesting
//! integers (binary and written out in decimal), truncation, splices with other corpus
//! entries, copied chunks and dictionary tokens.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Binary values at the edges of integer types, written at a random place.
const INTERESTING: [u64; 16] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
    1 << 60,
    u64::MAX - 7,
];

/// Numbers written as text, replacing a run of digits.
const INTERESTING_TEXT: [&str; 22] = [
    "0",
    "1",
    "-1",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "1e308",
    "-1e308",
    "1e-320",
    "NaN",
    "inf",
    "-0",
    "3.5",
    "1000000",
];

/// A seeded input mutator.
pub struct Mutator {
    rng: ChaCha8Rng,
    dictionary: Vec<Vec<u8>>,
}

impl Mutator {
    /// A mutator drawing from `seed`, inserting `dictionary` tokens among its mutations.
    pub fn new(seed: u64, dictionary: Vec<Vec<u8>>) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            dictionary,
        }
    }

    /// A random index below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.gen_range(0..n)
    }

    /// Applies 1 to 8 random mutations to `data` (`corpus` for splices), then cuts it to
    /// `max_len`.
    pub fn mutate(&mut self, data: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
        let rounds = 1 << self.rng.gen_range(0..4);
        for _ in 0..rounds {
            self.mutate_once(data, corpus);
        }
        data.truncate(max_len);
    }

    fn pos(&mut self, data: &[u8]) -> usize {
        if data.is_empty() {
            0
        } else {
            self.rng.gen_range(0..data.len())
        }
    }

    fn mutate_once(&mut self, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        let r = &mut self.rng;
        match r.gen_range(0..12) {
            0 if !data.is_empty() => {
                let i = r.gen_range(0..data.len());
                data[i] ^= 1 << r.gen_range(0..8);
            }
            1 if !data.is_empty() => {
                let i = r.gen_range(0..data.len());
                data[i] = r.gen();
            }
            2 => {
                let i = self.pos(data);
                let r = &mut self.rng;
                let n = r.gen_range(1..=8);
                let bytes: Vec<u8> = if r.gen_bool(0.5) {
                    (0..n).map(|_| r.gen()).collect()
                } else {
                    vec![r.gen(); n * 8]
                };
                data.splice(i..i, bytes);
            }
            3 if !data.is_empty() => {
                let i = r.gen_range(0..data.len());
                let n = r.gen_range(1..=16.min(data.len() - i));
                data.drain(i..i + n);
            }
            4 => {
                let value = INTERESTING[r.gen_range(0..INTERESTING.len())];
                let width = [1usize, 2, 4, 8][r.gen_range(0..4)];
                let bytes = if r.gen_bool(0.5) {
                    value.to_le_bytes()[..width].to_vec()
                } else {
                    value.to_be_bytes()[8 - width..].to_vec()
                };
                if data.len() >= width {
                    let i = r.gen_range(0..=data.len() - width);
                    data[i..i + width].copy_from_slice(&bytes);
                } else {
                    data.extend_from_slice(&bytes);
                }
            }
            5 => {
                // A run of digits (the first at or after a random place) becomes an
                // interesting number.
                let start = self.pos(data);
                if let Some(i) = data[start..].iter().position(u8::is_ascii_digit) {
                    let i = start + i;
                    let end = i + data[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                    let text = INTERESTING_TEXT[self.rng.gen_range(0..INTERESTING_TEXT.len())];
                    data.splice(i..end, text.bytes());
                }
            }
            6 if !data.is_empty() => {
                let n = r.gen_range(0..data.len());
                data.truncate(n);
            }
            7 if !corpus.is_empty() => {
                let other = &corpus[r.gen_range(0..corpus.len())];
                let i = if data.is_empty() {
                    0
                } else {
                    r.gen_range(0..=data.len())
                };
                let j = if other.is_empty() {
                    0
                } else {
                    r.gen_range(0..other.len())
                };
                data.truncate(i);
                data.extend_from_slice(&other[j..]);
            }
            8 if !data.is_empty() => {
                let a = r.gen_range(0..data.len());
                let n = r.gen_range(1..=64.min(data.len() - a));
                let chunk = data[a..a + n].to_vec();
                let at = r.gen_range(0..=data.len());
                data.splice(at..at, chunk);
            }
            9 | 10 if !self.dictionary.is_empty() => {
                let token = self.dictionary[r.gen_range(0..self.dictionary.len())].clone();
                let i = self.pos(data);
                if self.rng.gen_bool(0.5) || data.len() < i + token.len() {
                    data.splice(i..i, token);
                } else {
                    data[i..i + token.len()].copy_from_slice(&token);
                }
            }
            _ if data.len() >= 2 => {
                let a = r.gen_range(0..data.len());
                let b = r.gen_range(0..data.len());
                data.swap(a, b);
            }
            _ => data.push(r.gen()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_mutations_within_the_size_limit() {
        let corpus = vec![b"{\"a\": [1, 2, 3]}".to_vec(), vec![0u8; 40]];
        let run = |seed| {
            let mut m = Mutator::new(seed, vec![b"null".to_vec()]);
            let mut out = Vec::new();
            for i in 0..500 {
                let mut d = corpus[i % 2].clone();
                m.mutate(&mut d, &corpus, 64);
                assert!(d.len() <= 64);
                out.push(d);
            }
            out
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        // Mutations do change inputs.
        assert!(
            run(5)
                .iter()
                .filter(|d| **d != corpus[0] && **d != corpus[1])
                .count()
                > 400
        );
    }
}
