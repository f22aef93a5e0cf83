//! Small bitsets that stay inline (no allocation) up to 256 bits, which covers
//! any realistic policy; larger policies spill to the heap.

const INLINE_WORDS: usize = 4;

/// A set of permission or role indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitSet {
    len: usize,
    inline: [u64; INLINE_WORDS],
    heap: Vec<u64>,
}

impl BitSet {
    /// An empty set of `words` 64-bit words.
    pub fn with_words(words: usize) -> BitSet {
        if words <= INLINE_WORDS {
            BitSet { len: words, inline: [0; INLINE_WORDS], heap: Vec::new() }
        } else {
            BitSet { len: words, inline: [0; INLINE_WORDS], heap: vec![0; words] }
        }
    }

    /// The words.
    pub fn words(&self) -> &[u64] {
        if self.heap.is_empty() {
            self.inline.get(..self.len).unwrap_or(&[])
        } else {
            &self.heap
        }
    }

    fn words_mut(&mut self) -> &mut [u64] {
        if self.heap.is_empty() {
            self.inline.get_mut(..self.len).unwrap_or(&mut [])
        } else {
            &mut self.heap
        }
    }

    /// `self |= other` (extra words of `other` are ignored).
    pub fn union_with(&mut self, other: &[u64]) {
        for (a, b) in self.words_mut().iter_mut().zip(other) {
            *a |= *b;
        }
    }

    /// Adds index `i`.
    pub fn insert(&mut self, i: usize) {
        if let Some(w) = self.words_mut().get_mut(i / 64) {
            *w |= 1u64 << (i % 64);
        }
    }

    /// True when index `i` is in the set.
    pub fn contains(&self, i: usize) -> bool {
        crate::config::rbac_matrix::bit(self.words(), i)
    }

    /// The lowest index of `required` not in this set.
    pub fn first_missing(&self, required: &[u64]) -> Option<usize> {
        let mine = self.words();
        for (w, req) in required.iter().enumerate() {
            let missing = req & !mine.get(w).copied().unwrap_or(0);
            if missing != 0 {
                return Some(w * 64 + missing.trailing_zeros() as usize);
            }
        }
        None
    }

    /// Indices in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words().iter().enumerate().flat_map(|(w, &word)| {
            (0..64).filter(move |b| word & (1u64 << b) != 0).map(move |b| w * 64 + b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_heap_sets_behave_alike() {
        for words in [1, 4, 5, 40] {
            let mut s = BitSet::with_words(words);
            s.insert(3);
            s.insert(words * 64 - 1);
            assert!(s.contains(3) && s.contains(words * 64 - 1) && !s.contains(4));
            let mut req = vec![0u64; words];
            req[0] = 0b11000;
            assert_eq!(s.first_missing(&req), Some(4));
            s.union_with(&req);
            assert_eq!(s.first_missing(&req), None);
            assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 4, words * 64 - 1]);
        }
    }
}
