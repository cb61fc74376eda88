//! A small, stable content hash for cache keys.
//!
//! FNV-1a with 128-bit state (Fowler, Noll, Vo; parameters from the reference at
//! <http://www.isthe.com/chongo/tech/comp/fnv/>). Not cryptographic: it names cache files and
//! detects changed images, where accidental collisions are what matters, and its output never
//! changes across Rust versions (unlike `std`'s `DefaultHasher`).

const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

/// Incremental FNV-1a 128.
#[derive(Debug, Clone)]
pub(crate) struct Fnv128(u128);

impl Default for Fnv128 {
    fn default() -> Self {
        Self(OFFSET)
    }
}

impl Fnv128 {
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u128;
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }

    /// Writes a length-prefixed string, so that ("ab", "c") and ("a", "bc") differ.
    pub(crate) fn write_str(&mut self, s: &str) {
        self.write(&(s.len() as u64).to_le_bytes());
        self.write(s.as_bytes());
    }

    pub(crate) fn finish(&self) -> u128 {
        self.0
    }
}

/// The hash of `bytes`.
pub(crate) fn fnv128(bytes: &[u8]) -> u128 {
    let mut h = Fnv128::default();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_test_vectors() {
        // FNV-1a 128 of "" is the offset basis; of "a": from the FNV reference test suite.
        assert_eq!(fnv128(b""), OFFSET);
        assert_eq!(fnv128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    }
}
