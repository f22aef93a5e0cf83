//! Failed-authentication lockout, shared by every worker.
//!
//! Failures (401s) are counted per key (client IP, or the claimed subject) in
//! shared data. The count is a sliding window approximated with two fixed
//! windows, as in Cloudflare's and nginx's limiters: the estimate is
//! `current + previous x (share of the previous window still inside the
//! sliding one)`. It never under-counts a burst by more than the previous
//! window's weighting error and needs 21 bytes of state instead of one
//! timestamp per failure.
//!
//! When the estimate reaches `max_failures`, the key is locked for
//! `lock_seconds`: [`CompiledLockout::check`] (one `shared_get`, before any
//! token is verified) answers [`LockState::Locked`] with the exact whole
//! seconds left, rounded up. Nothing shortens a lock, not even a successful
//! authentication; failures during a lock neither count nor extend it. The
//! failure that starts a lock returns a [`LockoutAlert`] to exactly one caller
//! (the one whose CAS write set the lock), so the engine raises one alert.
//!
//! # Memory and collisions
//! Counters live in a [`SlotTable`] of `lockout.table_slots` (N) keys: at most
//! `N x (33-byte value + ~12-byte key + the host's per-entry overhead)`,
//! about 150 bytes a slot on Envoy (600 KB for the default 4,096). A key
//! whose slot belongs to another key takes it over when that key is idle (not
//! locked, no failure within two windows). While the owner is busy, the
//! newcomer's failures are not counted (metric `lockout.slot_busy`) and it is
//! never reported locked. That is a deliberate fail-open: the lockout sheds
//! the cost of verifying bad tokens, it is not what rejects them (verification
//! still does), whereas sharing locks would let anyone who gets locked out
//! also lock out every client hashed to the same slot.

use crate::client_ip::bucket_bytes;
use crate::config::ratelimit::LockoutKey;
use crate::config::{ConfigError, Policy};
use crate::host::{Host, StoreError};
use crate::ratelimit::store::{key_hash, Reader, SlotTable, StoreFailure};
use std::net::IpAddr;

/// Prefix of the lockout slots' shared-data keys.
pub const SLOT_PREFIX: &str = "chatguard/lo/";

/// Counters the lockout increments.
pub mod metrics {
    /// Locks started.
    pub const LOCKED: &str = "chatguard.lockout.locked";
    /// Failures not counted because another busy key owns the slot.
    pub const SLOT_BUSY: &str = "chatguard.lockout.slot_busy";
}

/// Whether a key may try to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Go on and verify the token.
    Open,
    /// Answer 429 with `Retry-After: retry_after_secs` and
    /// [`crate::ratelimit::headers::LOCKED_OUT_BODY`], without verifying.
    Locked {
        /// Whole seconds until the lock ends, rounded up.
        retry_after_secs: u64,
    },
}

/// A lock has just started: report it once as a security alert. Carries no
/// key value (the engine knows the key and decides how to identify it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutAlert {
    /// What the lock is keyed on.
    pub key: LockoutKey,
    /// Failures counted in the window when the lock started.
    pub failures: u32,
    /// The configured window.
    pub window_seconds: u64,
    /// How long the lock lasts.
    pub lock_seconds: u64,
    /// When the lock ends (host clock, ms since the epoch).
    pub locked_until_ms: u64,
}

/// The lockout section of a policy, ready for per-request use.
#[derive(Debug, Clone)]
pub struct CompiledLockout {
    max_failures: u32,
    window_ms: u64,
    lock_ms: u64,
    key: LockoutKey,
    table: SlotTable,
    max_cas_retries: u32,
    seed: u64,
}

/// The counters of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    key_hash: u64,
    window_start_ms: u64,
    current: u32,
    previous: u32,
    locked_until_ms: u64,
}

const RECORD_VERSION: u8 = 1;
const RECORD_LEN: usize = 33;

impl Counters {
    fn fresh(key_hash: u64, now: u64) -> Self {
        Counters { key_hash, window_start_ms: now, current: 0, previous: 0, locked_until_ms: 0 }
    }

    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0] = RECORD_VERSION;
        out[1..9].copy_from_slice(&self.key_hash.to_le_bytes());
        out[9..17].copy_from_slice(&self.window_start_ms.to_le_bytes());
        out[17..21].copy_from_slice(&self.current.to_le_bytes());
        out[21..25].copy_from_slice(&self.previous.to_le_bytes());
        out[25..33].copy_from_slice(&self.locked_until_ms.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes);
        if r.u8()? != RECORD_VERSION {
            return None;
        }
        let counters = Counters {
            key_hash: r.u64()?,
            window_start_ms: r.u64()?,
            current: r.u32()?,
            previous: r.u32()?,
            locked_until_ms: r.u64()?,
        };
        r.is_done().then_some(counters)
    }

    fn is_locked(&self, now: u64) -> bool {
        now < self.locked_until_ms
    }

    /// Moves the fixed windows forward to contain `now`. A clock that went
    /// backwards moves nothing (the previous window then weighs in fully).
    fn roll(&mut self, now: u64, window_ms: u64) {
        if now < self.window_start_ms {
            return;
        }
        let windows = (now - self.window_start_ms) / window_ms;
        match windows {
            0 => {}
            1 => {
                self.previous = self.current;
                self.current = 0;
            }
            _ => {
                self.previous = 0;
                self.current = 0;
            }
        }
        self.window_start_ms = self.window_start_ms.saturating_add(windows.saturating_mul(window_ms));
    }

    /// The sliding-window estimate in thousandths of a failure (after `roll`).
    fn estimate_milli(&self, now: u64, window_ms: u64) -> u128 {
        let elapsed = u128::from(now.saturating_sub(self.window_start_ms).min(window_ms));
        let window = u128::from(window_ms.max(1));
        let previous_share = u128::from(self.previous) * 1000 * (window - elapsed) / window;
        u128::from(self.current) * 1000 + previous_share
    }

    /// Not locked and nothing counted that could still matter.
    fn is_idle(&self, now: u64, window_ms: u64) -> bool {
        let mut rolled = *self;
        rolled.roll(now, window_ms);
        !self.is_locked(now) && rolled.estimate_milli(now, window_ms) == 0
    }
}

impl CompiledLockout {
    /// Compiles the `lockout` section; `None` when the policy has none.
    pub fn compile(policy: &Policy) -> Result<Option<Self>, ConfigError> {
        let Some(config) = &policy.lockout else { return Ok(None) };
        if config.max_failures == 0 || config.window_seconds == 0 || config.lock_seconds == 0 {
            return Err(ConfigError::invalid("lockout", "max_failures, window_seconds and lock_seconds must be positive"));
        }
        Ok(Some(CompiledLockout {
            max_failures: config.max_failures,
            window_ms: config.window_seconds.saturating_mul(1000),
            lock_ms: config.lock_seconds.saturating_mul(1000),
            key: config.key,
            table: SlotTable::new(SLOT_PREFIX, config.table_slots),
            max_cas_retries: policy.rate_limit_settings.max_cas_retries,
            seed: 0,
        }))
    }

    /// Mixes a secret into slot placement (same seed in every worker).
    pub fn with_hash_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// What failures are counted per.
    pub fn key_kind(&self) -> LockoutKey {
        self.key
    }

    /// The slot table (for sizing reports and tests).
    pub fn table(&self) -> &SlotTable {
        &self.table
    }

    /// Whether the caller is locked out: one `shared_get`. `subject` is only
    /// used with `key: subject`; without one, the client IP is the key.
    pub fn check(&self, host: &dyn Host, subject: Option<&str>, client_ip: Option<IpAddr>) -> Result<LockState, StoreFailure> {
        let hash = self.key_hash(subject, client_ip);
        let read = self.table.read(host, self.table.slot_of(hash))?;
        let now = host.now_ms();
        match read.value.as_deref().and_then(Counters::decode) {
            Some(c) if c.key_hash == hash && c.is_locked(now) => {
                // Capped so a wall clock stepped backwards never announces more than a full lock.
                let secs = (c.locked_until_ms - now).div_ceil(1000).min(self.lock_ms / 1000);
                Ok(LockState::Locked { retry_after_secs: secs.max(1) })
            }
            _ => Ok(LockState::Open),
        }
    }

    /// Counts one authentication failure. Returns the alert when this failure
    /// started a lock (exactly once per lock, across all workers).
    pub fn record_failure(
        &self,
        host: &dyn Host,
        subject: Option<&str>,
        client_ip: Option<IpAddr>,
    ) -> Result<Option<LockoutAlert>, StoreFailure> {
        let busy = || {
            host.count(metrics::SLOT_BUSY, 1);
            None
        };
        let alert = self.update(host, self.key_hash(subject, client_ip), busy, |c, now| {
            if c.is_locked(now) {
                return Err(None);
            }
            c.roll(now, self.window_ms);
            c.current = c.current.saturating_add(1);
            let estimate = c.estimate_milli(now, self.window_ms);
            if estimate < u128::from(self.max_failures) * 1000 {
                return Ok(None);
            }
            c.locked_until_ms = now.saturating_add(self.lock_ms);
            c.current = 0;
            c.previous = 0;
            c.window_start_ms = now;
            Ok(Some(LockoutAlert {
                key: self.key,
                failures: u32::try_from(estimate / 1000).unwrap_or(u32::MAX),
                window_seconds: self.window_ms / 1000,
                lock_seconds: self.lock_ms / 1000,
                locked_until_ms: c.locked_until_ms,
            }))
        })?;
        if alert.is_some() {
            host.count(metrics::LOCKED, 1);
        }
        Ok(alert)
    }

    /// Notes in `host`'s store that the key is locked until `until_ms`: a lock
    /// decided elsewhere (the edge worker's memo of its Durable Object's
    /// answers), so that [`CompiledLockout::check`] here refuses without
    /// asking again. Never shortens a recorded lock; a slot busy with another
    /// key is left alone (the key is then simply asked about again).
    pub fn remember_lock(
        &self,
        host: &dyn Host,
        subject: Option<&str>,
        client_ip: Option<IpAddr>,
        until_ms: u64,
    ) -> Result<(), StoreFailure> {
        self.update(host, self.key_hash(subject, client_ip), || (), |c, _| {
            if c.locked_until_ms >= until_ms {
                return Err(());
            }
            c.locked_until_ms = until_ms;
            Ok(())
        })
    }

    /// Read, decide, write with CAS, retried up to `max_cas_retries`: the one
    /// way counters change. `decide` gets the key's counters (fresh when the
    /// slot is new or idle) and answers `Ok(v)` to write them and return `v`,
    /// `Err(v)` to return `v` without writing; a slot held by another, still
    /// active key returns `busy()`.
    fn update<T>(
        &self,
        host: &dyn Host,
        hash: u64,
        busy: impl FnOnce() -> T,
        mut decide: impl FnMut(&mut Counters, u64) -> Result<T, T>,
    ) -> Result<T, StoreFailure> {
        let slot = self.table.slot_of(hash);
        for _ in 0..=self.max_cas_retries {
            let read = self.table.read(host, slot)?;
            let now = host.now_ms();
            let mut c = match read.value.as_deref().and_then(Counters::decode) {
                Some(c) if c.key_hash == hash => c,
                Some(c) if !c.is_idle(now, self.window_ms) => return Ok(busy()),
                _ => Counters::fresh(hash, now),
            };
            let value = match decide(&mut c, now) {
                Ok(v) => v,
                Err(v) => return Ok(v),
            };
            match self.table.write(host, slot, &c.encode(), read.cas) {
                Ok(()) => return Ok(value),
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Unavailable) => return Err(StoreFailure::Unavailable),
            }
        }
        Err(StoreFailure::Contention)
    }

    fn key_hash(&self, subject: Option<&str>, client_ip: Option<IpAddr>) -> u64 {
        if self.key == LockoutKey::Subject {
            if let Some(s) = subject.filter(|s| !s.is_empty()) {
                return key_hash(self.seed, b"lockout", 1, s.as_bytes());
            }
        }
        match client_ip {
            Some(ip) => {
                let (bytes, len) = bucket_bytes(&ip);
                key_hash(self.seed, b"lockout", 2, bytes.get(..len).unwrap_or(&bytes))
            }
            None => key_hash(self.seed, b"lockout", 3, b""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;
    use crate::ratelimit::tests::CountingHost;

    const T0: u64 = 1_700_000_000_000;

    fn lockout(extra: &str) -> CompiledLockout {
        let json = format!(
            r#"{{"lockout": {{"max_failures": 5, "window_seconds": 300, "lock_seconds": 900{extra}}}}}"#
        );
        let policy = Policy::from_json(json.as_bytes()).unwrap();
        CompiledLockout::compile(&policy).unwrap().unwrap()
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn a_remembered_lock_refuses_here_and_is_never_shortened() {
        let host = MemoryHost::at(T0);
        let lo = lockout("");
        let who = ip("192.0.2.1");
        lo.remember_lock(&host, None, who, T0 + 10_500).unwrap();
        assert_eq!(lo.check(&host, None, who).unwrap(), LockState::Locked { retry_after_secs: 11 });
        lo.remember_lock(&host, None, who, T0 + 2_000).unwrap();
        assert_eq!(lo.check(&host, None, who).unwrap(), LockState::Locked { retry_after_secs: 11 }, "not shortened");
        assert_eq!(lo.check(&host, None, ip("192.0.2.2")).unwrap(), LockState::Open);
        host.advance_ms(10_500);
        assert_eq!(lo.check(&host, None, who).unwrap(), LockState::Open);
    }

    #[test]
    fn no_section_compiles_to_none() {
        assert!(CompiledLockout::compile(&Policy::default()).unwrap().is_none());
    }

    #[test]
    fn fifth_failure_locks_with_one_alert_and_exact_retry_after() {
        let host = MemoryHost::at(T0);
        let lo = lockout("");
        let who = ip("192.0.2.1");
        for _ in 0..4 {
            assert_eq!(lo.record_failure(&host, None, who).unwrap(), None);
            assert_eq!(lo.check(&host, None, who).unwrap(), LockState::Open);
        }
        let alert = lo.record_failure(&host, None, who).unwrap().unwrap();
        assert_eq!(
            alert,
            LockoutAlert {
                key: LockoutKey::ClientIp,
                failures: 5,
                window_seconds: 300,
                lock_seconds: 900,
                locked_until_ms: T0 + 900_000
            }
        );
        assert_eq!(host.counter(metrics::LOCKED), 1);
        // Exact to the second, rounded up.
        let cases: &[(u64, LockState)] = &[
            (0, LockState::Locked { retry_after_secs: 900 }),
            (1, LockState::Locked { retry_after_secs: 900 }),
            (999, LockState::Locked { retry_after_secs: 900 }),
            (1_000, LockState::Locked { retry_after_secs: 899 }),
            (899_001, LockState::Locked { retry_after_secs: 1 }),
            (899_999, LockState::Locked { retry_after_secs: 1 }),
            (900_000, LockState::Open),
        ];
        for (offset, want) in cases {
            host.set_now_ms(T0 + offset);
            assert_eq!(lo.check(&host, None, who).unwrap(), *want, "+{offset} ms");
        }
    }

    #[test]
    fn failures_during_a_lock_neither_alert_again_nor_extend_it() {
        let host = MemoryHost::at(T0);
        let lo = lockout("");
        let who = ip("192.0.2.1");
        let alerts: usize = (0..20).filter(|_| lo.record_failure(&host, None, who).unwrap().is_some()).count();
        assert_eq!(alerts, 1);
        host.set_now_ms(T0 + 600_000);
        assert_eq!(lo.record_failure(&host, None, who).unwrap(), None);
        assert_eq!(lo.check(&host, None, who).unwrap(), LockState::Locked { retry_after_secs: 300 });
        // After the lock the count starts afresh; a new lock is a new alert.
        host.set_now_ms(T0 + 900_000);
        assert_eq!(lo.check(&host, None, who).unwrap(), LockState::Open);
        let later: Vec<_> = (0..5).map(|_| lo.record_failure(&host, None, who).unwrap()).collect();
        assert!(later[..4].iter().all(Option::is_none));
        assert!(later[4].is_some());
    }

    #[test]
    fn other_keys_are_not_locked() {
        let host = MemoryHost::at(T0);
        let lo = lockout("");
        for _ in 0..5 {
            lo.record_failure(&host, None, ip("192.0.2.1")).unwrap();
        }
        assert_eq!(lo.check(&host, None, ip("192.0.2.2")).unwrap(), LockState::Open);
        assert!(matches!(lo.check(&host, None, ip("192.0.2.1")).unwrap(), LockState::Locked { .. }));
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_lock() {
        let host = MemoryHost::at(T0);
        let lo = lockout("");
        let who = ip("192.0.2.1");
        // One failure every two minutes: the sliding window (300 s) never holds 5.
        for minute in 0..30 {
            host.set_now_ms(T0 + minute * 120_000);
            assert_eq!(lo.record_failure(&host, None, who).unwrap(), None, "minute {minute}");
        }
    }

    #[test]
    fn the_previous_window_is_weighted_by_its_remaining_share() {
        let host = MemoryHost::at(T0);
        let lo = lockout("");
        let who = ip("192.0.2.1");
        // 4 failures in window 1 (it starts with the first one).
        assert_eq!(lo.record_failure(&host, None, who).unwrap(), None);
        host.set_now_ms(T0 + 290_000);
        for _ in 0..3 {
            assert_eq!(lo.record_failure(&host, None, who).unwrap(), None);
        }
        // Half-way through window 2: estimate = 1 + 4 x 0.5 = 3: open.
        host.set_now_ms(T0 + 450_000);
        assert_eq!(lo.record_failure(&host, None, who).unwrap(), None);
        // Early in window 2 it would have been 1 + 4 x ~0.97 >= 5 with the next one.
        let host = MemoryHost::at(T0);
        lo.record_failure(&host, None, who).unwrap();
        host.set_now_ms(T0 + 290_000);
        for _ in 0..3 {
            lo.record_failure(&host, None, who).unwrap();
        }
        host.set_now_ms(T0 + 301_000);
        assert_eq!(lo.record_failure(&host, None, who).unwrap(), None); // 1 + 3.98
        assert!(lo.record_failure(&host, None, who).unwrap().is_some()); // 2 + 3.98
    }

    #[test]
    fn subject_key_falls_back_to_the_client_ip() {
        let host = MemoryHost::at(T0);
        let lo = lockout(r#", "key": "subject""#);
        for _ in 0..5 {
            lo.record_failure(&host, Some("alice"), ip("192.0.2.1")).unwrap();
        }
        assert!(matches!(lo.check(&host, Some("alice"), ip("198.51.100.7")).unwrap(), LockState::Locked { .. }));
        assert_eq!(lo.check(&host, Some("bob"), ip("192.0.2.1")).unwrap(), LockState::Open);
        assert_eq!(lo.check(&host, None, ip("192.0.2.1")).unwrap(), LockState::Open);
    }

    #[test]
    fn concurrent_writer_wins_the_race_and_only_one_alert_is_raised() {
        let host = MemoryHost::at(T0);
        let lo = lockout("");
        let who = ip("192.0.2.1");
        for _ in 0..4 {
            lo.record_failure(&host, None, who).unwrap();
        }
        // A CAS mismatch forces a re-read; the retry still locks exactly once.
        host.force_cas_mismatches.set(2);
        assert!(lo.record_failure(&host, None, who).unwrap().is_some());
        assert_eq!(lo.record_failure(&host, None, who).unwrap(), None);
        host.force_cas_mismatches.set(100);
        assert_eq!(lockout("").record_failure(&host, None, ip("192.0.2.9")), Err(StoreFailure::Contention));
    }

    #[test]
    fn busy_colliding_key_is_not_counted_and_idle_slot_is_taken_over() {
        let host = MemoryHost::at(T0);
        let lo = lockout(r#", "table_slots": 1"#);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for _ in 0..5 {
            lo.record_failure(&host, None, a).unwrap();
        }
        // The only slot is locked by `a`: `b` is neither counted nor locked.
        for _ in 0..10 {
            assert_eq!(lo.record_failure(&host, None, b).unwrap(), None);
        }
        assert_eq!(host.counter(metrics::SLOT_BUSY), 10);
        assert_eq!(lo.check(&host, None, b).unwrap(), LockState::Open);
        // Once `a`'s lock is over (counts reset at lock start), `b` takes the slot.
        host.set_now_ms(T0 + 900_000);
        for _ in 0..4 {
            assert_eq!(lo.record_failure(&host, None, b).unwrap(), None);
        }
        assert!(lo.record_failure(&host, None, b).unwrap().is_some());
        assert_eq!(lo.check(&host, None, a).unwrap(), LockState::Open);
    }

    #[test]
    fn clock_going_backwards_does_not_panic_or_overstate_retry_after() {
        let host = MemoryHost::at(T0);
        let lo = lockout("");
        let who = ip("192.0.2.1");
        for _ in 0..5 {
            lo.record_failure(&host, None, who).unwrap();
        }
        host.set_now_ms(T0 - 3_600_000);
        assert_eq!(lo.check(&host, None, who).unwrap(), LockState::Locked { retry_after_secs: 900 });
        host.set_now_ms(0);
        assert_eq!(lo.record_failure(&host, None, ip("192.0.2.3")).unwrap(), None);
    }

    #[test]
    fn check_costs_one_shared_get() {
        let host = CountingHost::new(T0);
        let lo = lockout("");
        lo.check(&host, None, ip("192.0.2.1")).unwrap();
        assert_eq!(host.gets.get(), 1);
        assert_eq!(host.sets.get(), 0);
    }
}
