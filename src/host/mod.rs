//! The boundary between the pure engine and the runtime that hosts it.
//!
//! The engine never reads a clock, touches shared memory, opens a connection or
//! writes a log line by itself: it asks a [`Host`]. The Envoy adapter implements it
//! over proxy-wasm host calls, the edge adapter over JavaScript, and tests over
//! [`MemoryHost`], whose clock is set by hand.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

#[cfg(all(target_arch = "wasm32", feature = "envoy"))]
pub mod envoy;

#[cfg(all(target_arch = "wasm32", feature = "edge"))]
pub mod edge;

pub mod isolate;

/// Severity of a log line, mapped onto the host's own levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

/// A compare-and-swap token for shared data (proxy-wasm's `cas`).
pub type Cas = u32;

/// Why a shared-store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Another writer changed the value since it was read: read again and retry.
    CasMismatch,
    /// The host refused the operation (shared data unavailable, value too large).
    Unavailable,
}

/// An HTTP request the engine wants the host to send (JWKS fetch, audit batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    /// Envoy cluster name (Envoy) or base URL (edge).
    pub upstream: String,
    pub authority: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// Why an outbound call could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// The host has no such upstream (Envoy: unknown cluster).
    UnknownUpstream,
    /// The host refused the call for another reason.
    Refused,
}

/// The services a runtime provides to the engine.
pub trait Host {
    /// Wall-clock time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Emits a log line. Callers never pass tokens, claim values or PII.
    fn log(&self, level: LogLevel, message: &str);

    /// Reads a value from storage shared by every worker of this process.
    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError>;

    /// Writes a value; with `Some(cas)` only if nobody wrote since that read.
    /// `Some(0)` means "only if the key does not exist yet".
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError>;

    /// Starts an outbound HTTP call; the answer comes back to the adapter, which
    /// hands it to the engine with the returned id.
    fn http_call(&self, request: &OutboundRequest) -> Result<u32, CallError>;

    /// Adds `by` to the named counter (created on first use).
    fn count(&self, metric: &str, by: u64);
}

/// An in-memory [`Host`] with a settable clock: for native tests, the CLI and as
/// the per-isolate store of the edge adapter.
#[derive(Debug, Default)]
pub struct MemoryHost {
    now_ms: Cell<u64>,
    store: RefCell<HashMap<String, (Vec<u8>, Cas)>>,
    next_cas: Cell<Cas>,
    /// Every log line, in order.
    pub logs: RefCell<Vec<(LogLevel, String)>>,
    /// Every outbound call started, in order.
    pub calls: RefCell<Vec<OutboundRequest>>,
    /// Counter values by name.
    pub counters: RefCell<HashMap<String, u64>>,
    /// When set, the next N CAS writes fail with [`StoreError::CasMismatch`].
    pub force_cas_mismatches: Cell<u32>,
}

impl MemoryHost {
    /// A host whose clock reads `now_ms`.
    pub fn at(now_ms: u64) -> Self {
        let host = Self::default();
        host.now_ms.set(now_ms);
        host
    }

    /// Moves the clock (backwards too: the engine must cope).
    pub fn set_now_ms(&self, now_ms: u64) {
        self.now_ms.set(now_ms);
    }

    /// Advances the clock by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get().saturating_add(ms));
    }

    /// The value of a counter, 0 if never touched.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.borrow().get(name).copied().unwrap_or(0)
    }
}

impl Host for MemoryHost {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
        Ok(self.store.borrow().get(key).cloned())
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
        if let Some(expected) = cas {
            let forced = self.force_cas_mismatches.get();
            if forced > 0 {
                self.force_cas_mismatches.set(forced - 1);
                return Err(StoreError::CasMismatch);
            }
            let current = self.store.borrow().get(key).map(|(_, c)| *c).unwrap_or(0);
            if current != expected {
                return Err(StoreError::CasMismatch);
            }
        }
        let cas = self.next_cas.get().wrapping_add(1).max(1);
        self.next_cas.set(cas);
        self.store.borrow_mut().insert(key.to_string(), (value.to_vec(), cas));
        Ok(())
    }

    fn http_call(&self, request: &OutboundRequest) -> Result<u32, CallError> {
        let mut calls = self.calls.borrow_mut();
        calls.push(request.clone());
        Ok(calls.len() as u32)
    }

    fn count(&self, metric: &str, by: u64) {
        *self.counters.borrow_mut().entry(metric.to_string()).or_insert(0) += by;
    }
}
