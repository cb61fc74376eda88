//! Seeded, resumable sampling over dataset indices.
//!
//! [`EpochSampler`] yields every index of `0..len` once per epoch in a fresh shuffled order
//! (nanoGPT-style explicit state rather than a framework's hidden one). Its whole state —
//! the ChaCha8 generator's position, the current order and the position in it — can be
//! saved with [`EpochSampler::state`] and restored with [`EpochSampler::from_state`], so a
//! resumed run draws exactly what an uninterrupted one would. [`RngState`] does the same for
//! any other ChaCha8 generator the engine keeps.
//!
//! Shuffling is an explicit Fisher–Yates over rejection-sampled `u64`s, not
//! `rand::seq::SliceRandom`, so orders stay the same across `rand` releases.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A uniform draw in `0..bound` (`bound > 0`), by rejection so every value is equally likely.
pub(crate) fn uniform_below(rng: &mut impl RngCore, bound: u64) -> u64 {
    debug_assert!(bound > 0);
    if bound <= 1 {
        return 0;
    }
    // the largest multiple of `bound` that fits, minus one: draws above it are rejected
    let limit = u64::MAX - (u64::MAX % bound + 1) % bound;
    loop {
        let x = rng.next_u64();
        if x <= limit {
            return x % bound;
        }
    }
}

/// Shuffles `items` in place (Fisher–Yates, from the back).
pub(crate) fn shuffle<T>(rng: &mut impl RngCore, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = uniform_below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// The full state of a [`ChaCha8Rng`]: key, stream and position in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key (`seed_from_u64` expands a `u64` into one).
    pub seed: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// Position in the stream, in 32-bit words; a decimal string since it is a `u128` and
    /// JSON/TOML readers differ on big integers.
    #[serde(with = "u128_string")]
    pub word_pos: u128,
}

impl RngState {
    /// The state of `rng`.
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// A generator in exactly this state.
    pub fn restore(&self) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Saved state of an [`EpochSampler`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    /// Number of indices sampled from.
    pub len: usize,
    /// Epochs begun so far.
    pub epoch: u64,
    /// The current epoch's order (empty before the first draw).
    pub order: Vec<usize>,
    /// How many of `order` were already drawn.
    pub pos: usize,
    /// The generator that shuffles the next epoch.
    pub rng: RngState,
}

/// Yields each index of `0..len` once per epoch, reshuffled every epoch.
#[derive(Debug, Clone)]
pub struct EpochSampler {
    len: usize,
    epoch: u64,
    order: Vec<usize>,
    pos: usize,
    rng: ChaCha8Rng,
}

impl EpochSampler {
    /// A sampler over `0..len` seeded with `seed`; `len` must be positive.
    pub fn new(len: usize, seed: u64) -> Result<Self> {
        if len == 0 {
            return Err(Error::msg(
                "cannot sample from an empty set of training images",
            ));
        }
        Ok(Self {
            len,
            epoch: 0,
            order: Vec::new(),
            pos: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// The next index; a new epoch (a new order) begins when the current one is used up.
    pub fn next_index(&mut self) -> usize {
        if self.pos >= self.order.len() {
            self.order = (0..self.len).collect();
            shuffle(&mut self.rng, &mut self.order);
            self.pos = 0;
            self.epoch += 1;
        }
        let i = self.order[self.pos];
        self.pos += 1;
        i
    }

    /// Number of indices sampled from.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a sampler has at least one index.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Epochs begun so far (1 after the first draw).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Everything needed to continue exactly where this sampler is.
    pub fn state(&self) -> SamplerState {
        SamplerState {
            len: self.len,
            epoch: self.epoch,
            order: self.order.clone(),
            pos: self.pos,
            rng: RngState::capture(&self.rng),
        }
    }

    /// A sampler continuing from `state`; checks that the state is consistent.
    pub fn from_state(state: SamplerState) -> Result<Self> {
        let mut seen = vec![false; state.len];
        let permutation = state.order.len() == state.len
            && state
                .order
                .iter()
                .all(|&i| i < state.len && !std::mem::replace(&mut seen[i], true));
        let consistent = state.len > 0
            && state.pos <= state.order.len()
            && (permutation || (state.order.is_empty() && state.pos == 0));
        if !consistent {
            return Err(Error::msg(format!(
                "saved sampler state is inconsistent (len {}, order of {} at position {}); \
                 was it saved for a different image folder?",
                state.len,
                state.order.len(),
                state.pos
            )));
        }
        Ok(Self {
            len: state.len,
            epoch: state.epoch,
            order: state.order,
            pos: state.pos,
            rng: state.rng.restore(),
        })
    }
}

impl Iterator for EpochSampler {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        Some(self.next_index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_below_covers_the_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0usize; 5];
        for _ in 0..5000 {
            counts[uniform_below(&mut rng, 5) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(uniform_below(&mut rng, 1), 0);
        // bound = 2^63 + 1 still terminates and stays in range
        assert!(uniform_below(&mut rng, (1 << 63) + 1) <= 1 << 63);
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut v: Vec<usize> = (0..50).collect();
        shuffle(&mut rng, &mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
