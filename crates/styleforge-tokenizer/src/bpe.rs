//! The byte-level BPE model: vocabulary, merge ranks and the merge loop, with a word cache.
//!
//! A word (one piece from the pre-tokenizer) is turned into its byte-level characters, the
//! last one carrying the end-of-word suffix `</w>`; then the adjacent pair with the lowest
//! merge rank is merged (leftmost first among equal ranks) until no pair can be merged.

use crate::byte_level::ByteLevel;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

/// The suffix CLIP appends to the last symbol of every word.
pub(crate) const END_OF_WORD: &str = "</w>";

/// Merge pairs `(left, right)` in rank order.
pub(crate) type Merges = Vec<(String, String)>;

/// Words longer than this (in bytes) are not cached.
const MAX_CACHED_WORD_LEN: usize = 128;
/// Maximum number of cached words; the cache is cleared when full.
const MAX_CACHE_ENTRIES: usize = 20_000;

/// Why a vocabulary or merge list was refused, with the offending line / token.
#[derive(Debug)]
pub(crate) enum BpeBuildError {
    /// Two vocabulary entries share a token string.
    DuplicateToken(String),
    /// A merge line refers to a token that is not in the vocabulary.
    MergeTokenMissing {
        /// Index of the merge in the list (0-based).
        index: usize,
        /// The missing token.
        token: String,
    },
}

/// The BPE vocabulary and merges.
pub(crate) struct Bpe {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    /// (left id, right id) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Id of each byte's character, without and with the end-of-word suffix.
    byte_ids: [Option<u32>; 256],
    byte_end_ids: [Option<u32>; 256],
    unk_id: Option<u32>,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl Clone for Bpe {
    fn clone(&self) -> Self {
        Bpe {
            tokens: self.tokens.clone(),
            ids: self.ids.clone(),
            merges: self.merges.clone(),
            byte_ids: self.byte_ids,
            byte_end_ids: self.byte_end_ids,
            unk_id: self.unk_id,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl Bpe {
    /// Builds the model from the vocabulary in id order and the merges in rank order.
    pub(crate) fn new(
        tokens: Vec<String>,
        merges: &[(String, String)],
    ) -> Result<Bpe, BpeBuildError> {
        let mut ids = HashMap::with_capacity(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            if ids.insert(token.clone(), id).is_some() {
                return Err(BpeBuildError::DuplicateToken(token.clone()));
            }
        }
        let lookup = |index: usize, token: &str| {
            ids.get(token)
                .copied()
                .ok_or_else(|| BpeBuildError::MergeTokenMissing {
                    index,
                    token: token.to_string(),
                })
        };
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (index, (left, right)) in merges.iter().enumerate() {
            let l = lookup(index, left)?;
            let r = lookup(index, right)?;
            let merged = lookup(index, &format!("{left}{right}"))?;
            let rank = u32::try_from(index).unwrap_or(u32::MAX);
            // Like the reference, a repeated pair keeps its last rank.
            merge_map.insert((l, r), (rank, merged));
        }
        let bl = ByteLevel::get();
        let mut byte_ids = [None; 256];
        let mut byte_end_ids = [None; 256];
        for b in 0u8..=255 {
            let c = bl.char_of(b);
            byte_ids[usize::from(b)] = ids.get(c.to_string().as_str()).copied();
            byte_end_ids[usize::from(b)] = ids.get(format!("{c}{END_OF_WORD}").as_str()).copied();
        }
        Ok(Bpe {
            tokens,
            ids,
            merges: merge_map,
            byte_ids,
            byte_end_ids,
            unk_id: None,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the id emitted for a byte whose character is not in the vocabulary.
    pub(crate) fn set_unk_id(&mut self, unk_id: Option<u32>) {
        self.unk_id = unk_id;
        self.cache_guard().clear();
    }

    /// Number of tokens in the base vocabulary.
    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The token string of an id of the base vocabulary.
    pub(crate) fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a token string of the base vocabulary.
    pub(crate) fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    fn cache_guard(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u32>>> {
        // A poisoned cache is still a valid cache: every entry is inserted whole.
        match self.cache.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Appends the ids of one pre-tokenized word (in its original UTF-8 form) to `out`.
    pub(crate) fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        let cacheable = word.len() <= MAX_CACHED_WORD_LEN;
        if cacheable {
            if let Some(ids) = self.cache_guard().get(word) {
                out.extend_from_slice(ids);
                return;
            }
        }
        let ids = self.merge_word(word.as_bytes());
        out.extend_from_slice(&ids);
        if cacheable {
            let mut cache = self.cache_guard();
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(word.to_string(), ids);
        }
    }

    /// Runs the merge loop on the bytes of one word.
    fn merge_word(&self, bytes: &[u8]) -> Vec<u32> {
        // Symbols as a doubly linked list over the initial positions.
        let n = bytes.len();
        let mut sym_id: Vec<Option<u32>> = Vec::with_capacity(n);
        for (i, &b) in bytes.iter().enumerate() {
            let id = if i + 1 == n {
                self.byte_end_ids[usize::from(b)]
            } else {
                self.byte_ids[usize::from(b)]
            };
            sym_id.push(id.or(self.unk_id));
        }
        // Characters that are neither in the vocabulary nor mapped to unk are dropped.
        let mut ids: Vec<u32> = sym_id.into_iter().flatten().collect();
        let n = ids.len();
        if n < 2 {
            return ids;
        }
        let none = usize::MAX;
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { none } else { i - 1 }).collect();
        let mut next: Vec<usize> = (0..n)
            .map(|i| if i + 1 == n { none } else { i + 1 })
            .collect();
        let mut alive = vec![true; n];

        // Min-heap of candidate merges: (rank, left position, right position, left id, right id).
        let mut heap = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some(&(rank, _)) = self.merges.get(&(ids[i], ids[i + 1])) {
                heap.push(Reverse((rank, i, i + 1, ids[i], ids[i + 1])));
            }
        }
        while let Some(Reverse((rank, left, right, left_id, right_id))) = heap.pop() {
            // Skip stale candidates: a side was merged away or changed since it was pushed.
            if !alive[left] || !alive[right] || next[left] != right {
                continue;
            }
            if ids[left] != left_id || ids[right] != right_id {
                continue;
            }
            let Some(&(r, merged)) = self.merges.get(&(left_id, right_id)) else {
                continue;
            };
            if r != rank {
                continue;
            }
            ids[left] = merged;
            alive[right] = false;
            let after = next[right];
            next[left] = after;
            if after != none {
                prev[after] = left;
            }
            let before = prev[left];
            if before != none {
                if let Some(&(rank, _)) = self.merges.get(&(ids[before], merged)) {
                    heap.push(Reverse((rank, before, left, ids[before], merged)));
                }
            }
            if after != none {
                if let Some(&(rank, _)) = self.merges.get(&(merged, ids[after])) {
                    heap.push(Reverse((rank, left, after, merged, ids[after])));
                }
            }
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i != none {
            out.push(ids[i]);
            i = next[i];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Bpe {
        let tokens: Vec<String> = [
            "a", "b", "c", "a</w>", "b</w>", "c</w>", "ab", "abc</w>", "aa", "aa</w>",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let merges: Vec<(String, String)> =
            [("a", "b"), ("ab", "c</w>"), ("a", "a"), ("a", "a</w>")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        Bpe::new(tokens, &merges).unwrap()
    }

    fn encode(bpe: &Bpe, word: &str) -> Vec<u32> {
        let mut out = Vec::new();
        bpe.encode_word(word, &mut out);
        out
    }

    #[test]
    fn merges_by_rank_leftmost_first() {
        let bpe = tiny();
        assert_eq!(encode(&bpe, "abc"), [7]);
        assert_eq!(encode(&bpe, "abc"), [7]); // cached
        assert_eq!(encode(&bpe, "aaa"), [8, 3]);
        assert_eq!(encode(&bpe, "aaaa"), [8, 9]);
        assert_eq!(encode(&bpe, "ba"), [1, 3]);
        assert_eq!(encode(&bpe, "a"), [3]);
    }

    #[test]
    fn unknown_bytes_are_dropped_or_unk() {
        let mut bpe = tiny();
        assert_eq!(encode(&bpe, "zab"), [0, 4]);
        bpe.set_unk_id(Some(2));
        assert_eq!(encode(&bpe, "zab"), [2, 0, 4]);
    }

    #[test]
    fn refuses_bad_merges() {
        let tokens = vec!["a".to_string(), "b".to_string()];
        let merges = vec![("a".to_string(), "b".to_string())];
        assert!(matches!(
            Bpe::new(tokens, &merges),
            Err(BpeBuildError::MergeTokenMissing { index: 0, .. })
        ));
    }
}
