//! The fixed-length form of a prompt that the text encoder sees, with its truncation report.

/// A prompt encoded to exactly the tokenizer's maximum length (77 for CLIP):
/// `<|startoftext|>`, at most `max_length - 2` content tokens, `<|endoftext|>`, then padding.
///
/// When the prompt has more content tokens than fit, the extra ones are cut off and
/// reported here ([`Encoding::truncated`], [`Encoding::dropped_ids`]) rather than lost silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Exactly `max_length` ids: BOS, content, EOS, padding.
    pub ids: Vec<u32>,
    /// Length of the untruncated encoding, BOS and EOS included.
    pub untruncated_len: usize,
    /// Whether content tokens were cut off to fit.
    pub truncated: bool,
    /// The content ids that were cut off (empty unless `truncated`).
    pub dropped_ids: Vec<u32>,
    /// Number of ids before the padding (BOS, kept content, EOS).
    pub unpadded_len: usize,
}

impl Encoding {
    /// Builds the fixed-length form from the content ids (without BOS/EOS).
    pub(crate) fn from_content(
        content: &[u32],
        bos: u32,
        eos: u32,
        pad: u32,
        max_length: usize,
    ) -> Encoding {
        let max_length = max_length.max(2);
        let capacity = max_length - 2;
        let (kept, dropped) = content.split_at(content.len().min(capacity));
        let mut ids = Vec::with_capacity(max_length);
        ids.push(bos);
        ids.extend_from_slice(kept);
        ids.push(eos);
        let unpadded_len = ids.len();
        ids.resize(max_length, pad);
        Encoding {
            ids,
            untruncated_len: content.len() + 2,
            truncated: !dropped.is_empty(),
            dropped_ids: dropped.to_vec(),
            unpadded_len,
        }
    }

    /// Position of the `<|endoftext|>` that ends the kept tokens (where CLIP pools).
    pub fn eos_position(&self) -> usize {
        self.unpadded_len.saturating_sub(1)
    }

    /// The kept content ids, without BOS, EOS and padding.
    pub fn content_ids(&self) -> &[u32] {
        let end = self.unpadded_len.saturating_sub(1).max(1);
        self.ids.get(1..end).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::Encoding;

    #[test]
    fn pads_and_truncates() {
        let e = Encoding::from_content(&[5, 6], 1, 2, 0, 6);
        assert_eq!(e.ids, [1, 5, 6, 2, 0, 0]);
        assert!(!e.truncated);
        assert_eq!(
            (e.untruncated_len, e.unpadded_len, e.eos_position()),
            (4, 4, 3)
        );
        assert_eq!(e.content_ids(), [5, 6]);

        let e = Encoding::from_content(&[5, 6, 7, 8, 9], 1, 2, 0, 6);
        assert_eq!(e.ids, [1, 5, 6, 7, 8, 2]);
        assert!(e.truncated);
        assert_eq!(e.dropped_ids, [9]);
        assert_eq!(e.untruncated_len, 7);

        let e = Encoding::from_content(&[], 1, 2, 0, 4);
        assert_eq!(e.ids, [1, 2, 0, 0]);
        assert!(e.content_ids().is_empty());
    }
}
