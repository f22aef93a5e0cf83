//! A fixed table of slots in the host's shared store.
//!
//! Shared data (proxy-wasm) is one key/value map per Envoy process, seen by
//! every worker, with compare-and-swap but no expiry and no deletion. To keep
//! memory bounded whatever the number of distinct clients, a table never uses
//! more than `slots` keys: a bucket's key is hashed, the hash picks a slot, and
//! the slot's value starts with the full 64-bit hash of its owner so a
//! collision is recognised. What happens on a collision is the caller's
//! policy (see `ratelimit` and `lockout`).
//!
//! Memory bound per table: `slots x (value bytes + key bytes + the host's
//! per-entry overhead)`; key names are `prefix` + up to 6 hex digits.

use crate::host::{Cas, Host, StoreError};
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::Hasher;

/// Why a shared-store update could not be made: the request fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// Other workers kept writing the same slot through every retry. Only a
    /// key hammered from several workers at once gets here, so the advice is
    /// 429 with `Retry-After: 1`: it tells that client to back off, where a 503
    /// would invite proxies and clients to retry at once and add to the storm.
    Contention,
    /// The host refused to read or write shared data: a server fault, so 503.
    Unavailable,
}

impl StoreFailure {
    /// The HTTP status the engine should answer with (see the variants).
    pub fn status(self) -> u16 {
        match self {
            StoreFailure::Contention => 429,
            StoreFailure::Unavailable => 503,
        }
    }
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreFailure::Contention => {
                f.write_str("shared-data slot still contended after the configured CAS retries")
            }
            StoreFailure::Unavailable => f.write_str("shared data unavailable"),
        }
    }
}

/// A table of `slots` shared-data keys named `prefix` + slot number in hex.
#[derive(Debug, Clone)]
pub struct SlotTable {
    prefix: &'static str,
    slots: u32,
}

/// What a slot held when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRead {
    /// The stored bytes; `None` if the slot was never written.
    pub value: Option<Vec<u8>>,
    /// The CAS to write back with (0 for a never-written slot).
    pub cas: Cas,
}

impl SlotTable {
    /// A table of `slots` (at least 1) keys under `prefix`.
    pub fn new(prefix: &'static str, slots: u32) -> Self {
        SlotTable { prefix, slots: slots.max(1) }
    }

    /// Number of slots: the most keys this table ever creates.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The slot a key hash lives in (multiply-shift: uses the high bits, no modulo bias worth noting).
    pub fn slot_of(&self, key_hash: u64) -> u32 {
        ((u128::from(key_hash) * u128::from(self.slots)) >> 64) as u32
    }

    /// The shared-data key of a slot.
    pub fn key(&self, slot: u32) -> String {
        format!("{}{slot:x}", self.prefix)
    }

    /// Reads a slot: one `shared_get`.
    pub fn read(&self, host: &dyn Host, slot: u32) -> Result<SlotRead, StoreFailure> {
        match host.shared_get(&self.key(slot)) {
            Ok(Some((value, cas))) => Ok(SlotRead { value: Some(value), cas }),
            Ok(None) => Ok(SlotRead { value: None, cas: 0 }),
            Err(_) => Err(StoreFailure::Unavailable),
        }
    }

    /// Writes a slot if nobody wrote it since `cas` was read: one `shared_set`.
    ///
    /// `cas == 0` asks for "only if absent". Envoy treats 0 as "no check", so
    /// two workers creating the same slot at the same instant can both win:
    /// the loss is bounded by one request per worker per slot creation.
    pub fn write(&self, host: &dyn Host, slot: u32, value: &[u8], cas: Cas) -> Result<(), StoreError> {
        host.shared_set(&self.key(slot), value, Some(cas))
    }
}

/// Hash of a bucket or lockout key, stable within one build of the module (all
/// workers run the same build, so they agree). `seed` lets the embedder make
/// slots unpredictable to clients that choose their own keys (headers).
pub fn key_hash(seed: u64, namespace: &[u8], tag: u8, value: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write_u64(seed);
    hasher.write_usize(namespace.len());
    hasher.write(namespace);
    hasher.write_u8(tag);
    hasher.write(value);
    hasher.finish()
}

/// Little-endian reader over a stored value; `None` when the value is short.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_at_checked(N)?;
        self.bytes = rest;
        head.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.take::<8>().map(i64::from_le_bytes)
    }

    /// Whether every byte was consumed.
    pub(crate) fn is_done(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;

    #[test]
    fn slots_cover_the_table_and_stay_in_range() {
        let table = SlotTable::new("t/", 7);
        let mut seen = [false; 7];
        for i in 0..1_000u64 {
            let slot = table.slot_of(key_hash(0, b"n", 0, &i.to_le_bytes()));
            seen[slot as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(table.slot_of(u64::MAX), 6);
        assert_eq!(table.slot_of(0), 0);
        assert_eq!(SlotTable::new("t/", 0).slots(), 1);
    }

    #[test]
    fn keys_are_prefix_and_hex() {
        let table = SlotTable::new("cg/rl/", 1 << 24);
        assert_eq!(table.key(0), "cg/rl/0");
        assert_eq!(table.key(0xffffff), "cg/rl/ffffff");
    }

    #[test]
    fn hash_separates_namespace_tag_and_value() {
        let base = key_hash(0, b"ab", 1, b"c");
        assert_ne!(base, key_hash(0, b"a", 1, b"bc"));
        assert_ne!(base, key_hash(0, b"ab", 2, b"c"));
        assert_ne!(base, key_hash(1, b"ab", 1, b"c"));
        assert_eq!(base, key_hash(0, b"ab", 1, b"c"));
    }

    #[test]
    fn read_and_cas_write() {
        let host = MemoryHost::at(0);
        let table = SlotTable::new("t/", 4);
        let first = table.read(&host, 1).unwrap();
        assert_eq!(first, SlotRead { value: None, cas: 0 });
        table.write(&host, 1, b"x", first.cas).unwrap();
        assert_eq!(table.write(&host, 1, b"y", first.cas), Err(StoreError::CasMismatch));
        let second = table.read(&host, 1).unwrap();
        assert_eq!(second.value.as_deref(), Some(&b"x"[..]));
        table.write(&host, 1, b"y", second.cas).unwrap();
    }

    #[test]
    fn store_failure_statuses() {
        assert_eq!(StoreFailure::Contention.status(), 429);
        assert_eq!(StoreFailure::Unavailable.status(), 503);
    }
}
