//! The verified-token cache: the design, not an optimisation. An RSA verify costs
//! ~1.7 ms inside V8; a chat client sends the same token on every request.
//!
//! Keyed by SHA-256 of the token (the token itself is never stored), bounded in
//! entries, and an entry never outlives the token's `exp`.

use super::VerifiedToken;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// SHA-256 of a token.
pub type TokenHash = [u8; 32];

/// Hashes a token for the cache.
pub fn hash_token(token: &str) -> TokenHash {
    hmac_sha256::Hash::hash(token.as_bytes())
}

struct Entry {
    token: Rc<VerifiedToken>,
    valid_until_ms: u64,
    provider: usize,
}

/// A bounded, FIFO-evicting map of verified tokens.
pub struct TokenCache {
    max_entries: usize,
    entries: HashMap<TokenHash, Entry>,
    order: VecDeque<TokenHash>,
}

impl TokenCache {
    /// A cache holding at most `max_entries` tokens (0 disables it).
    pub fn new(max_entries: usize) -> Self {
        TokenCache { max_entries, entries: HashMap::new(), order: VecDeque::new() }
    }

    /// The verified token, if cached and still valid at `now_ms`.
    pub fn get(&mut self, hash: &TokenHash, now_ms: u64) -> Option<Rc<VerifiedToken>> {
        let entry = self.entries.get(hash)?;
        if now_ms >= entry.valid_until_ms {
            self.entries.remove(hash);
            return None;
        }
        Some(entry.token.clone())
    }

    /// Remembers a verified token until `valid_until_ms`.
    pub fn insert(&mut self, hash: TokenHash, token: Rc<VerifiedToken>, valid_until_ms: u64, provider: usize) {
        if self.max_entries == 0 {
            return;
        }
        if self.entries.contains_key(&hash) {
            self.entries.insert(hash, Entry { token, valid_until_ms, provider });
            return;
        }
        while self.entries.len() >= self.max_entries {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        // `order` may hold hashes already dropped by `get`/`forget_provider`;
        // keep it from growing past twice the bound.
        if self.order.len() >= self.max_entries.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|h| entries.contains_key(h));
        }
        self.order.push_back(hash);
        self.entries.insert(hash, Entry { token, valid_until_ms, provider });
    }

    /// Drops every token verified with `provider`'s keys (its key set changed).
    pub fn forget_provider(&mut self, provider: usize) {
        self.entries.retain(|_, e| e.provider != provider);
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(sub: &str) -> Rc<VerifiedToken> {
        Rc::new(VerifiedToken {
            provider: 0,
            subject: Some(sub.into()),
            expires_at: None,
            claims: Default::default(),
        })
    }

    #[test]
    fn entries_expire_at_their_deadline() {
        let mut c = TokenCache::new(4);
        let h = hash_token("a");
        c.insert(h, token("a"), 1000, 0);
        assert!(c.get(&h, 999).is_some());
        assert!(c.get(&h, 1000).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn size_is_bounded_and_oldest_goes_first() {
        let mut c = TokenCache::new(3);
        for i in 0..10 {
            c.insert(hash_token(&i.to_string()), token("x"), u64::MAX, 0);
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&hash_token("9"), 0).is_some());
        assert!(c.get(&hash_token("6"), 0).is_none());
        assert!(c.order.len() <= 6);
    }

    #[test]
    fn zero_capacity_disables() {
        let mut c = TokenCache::new(0);
        c.insert(hash_token("a"), token("a"), u64::MAX, 0);
        assert!(c.is_empty());
    }

    #[test]
    fn forgetting_a_provider_drops_its_tokens_only() {
        let mut c = TokenCache::new(4);
        c.insert(hash_token("a"), token("a"), u64::MAX, 0);
        c.insert(hash_token("b"), token("b"), u64::MAX, 1);
        c.forget_provider(0);
        assert!(c.get(&hash_token("a"), 0).is_none());
        assert!(c.get(&hash_token("b"), 0).is_some());
    }
}
