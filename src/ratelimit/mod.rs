//! Token buckets shared by every worker, over the host's shared store.
//!
//! # How a request is checked
//! [`CompiledRateLimits::check`] finds the buckets that apply to the caller,
//! then in one pass:
//! 1. reads each distinct slot once (`shared_get`);
//! 2. refills and decides every bucket in memory; if any bucket lacks a token
//!    the request is limited and **nothing is written**, so a request denied by
//!    one bucket never drains the others;
//! 3. otherwise takes the tokens and writes each changed slot with CAS
//!    (`shared_set`). Fast path: one get and at most one set per bucket.
//!
//! Race window: between the read and the CAS write another worker may change
//! a slot; the CAS then fails and that slot (and the ones after it) is read and
//! decided again, at most `max_cas_retries` times before failing closed with
//! [`StoreFailure::Contention`]. Slots are written in order, so if slot 1 was
//! written and slot 2's retry then finds its bucket empty, the token taken
//! from slot 1 is given back (best effort, same retry bound): only in that
//! race can a denied request briefly hold another bucket's token.
//!
//! # Memory bound
//! Buckets live in one [`SlotTable`] of `rate_limit_settings.table_slots` (N)
//! keys, whatever the number of clients: at most
//! `N x (41-byte value + ~12-byte key + the host's per-entry overhead)`;
//! with Envoy's map overhead (~100 bytes) that is about 150 bytes a slot, so
//! the default N = 16,384 stays under 2.5 MB per Envoy process.
//!
//! # Collisions
//! A slot records its owner's full key hash and bucket parameters. Another key
//! hashing to the same slot
//! - takes the slot over when the owner's bucket has refilled to full (idle:
//!   nothing is lost), and
//! - otherwise **shares** the owner's tokens, seen through its own capacity.
//!
//! Sharing can only limit colliding clients more, never less. The alternative,
//! evicting a busy owner, would hand a fresh full bucket to whichever of two
//! colliding keys came last, so two clients alternating would both escape
//! their limits. The chance that a key shares is about B / N for B buckets
//! busy (not full) at once: size N to at least 100 x the clients active within
//! one refill window.
//!
//! # Missing key values
//! When a request has no value for a limit's key (no verified subject, no
//! role, no matched rule, header absent or empty), the bucket is keyed on the
//! client IP instead, in a separate key space: leaving out the value never
//! escapes the limit. No client IP at all keys on one shared "unknown" bucket.

pub mod bucket;
pub mod headers;
pub mod store;

use crate::client_ip::bucket_bytes;
use crate::config::ratelimit::{CostKind, KeySource, RateLimitMode};
use crate::config::{ConfigError, Policy};
use crate::host::{Cas, Host, StoreError};
use bucket::{units, Bucket, BucketParams, UNITS_PER_TOKEN};
use std::net::IpAddr;
pub use store::{SlotTable, StoreFailure};

/// Prefix of the bucket slots' shared-data keys.
pub const SLOT_PREFIX: &str = "chatguard/rl/";

/// Counters (host metrics) the stage increments; none on the fast path.
pub mod metrics {
    /// Requests refused by a bucket (enforce mode).
    pub const LIMITED: &str = "chatguard.ratelimit.limited";
    /// Requests that would have been refused (shadow mode).
    pub const SHADOW_LIMITED: &str = "chatguard.ratelimit.shadow_limited";
    /// CAS writes that lost to another worker and were retried.
    pub const CAS_RETRY: &str = "chatguard.ratelimit.cas_retry";
    /// Requests failed closed because the store failed or stayed contended.
    pub const STORE_FAILURE: &str = "chatguard.ratelimit.store_failure";
    /// Buckets decided on a slot owned by another busy key (shared).
    pub const SLOT_SHARED: &str = "chatguard.ratelimit.slot_shared";
}

/// What the rate stage needs to know about a request.
#[derive(Clone, Copy)]
pub struct RateCaller<'a> {
    /// The verified `sub` claim; `None` for anonymous requests.
    pub subject: Option<&'a str>,
    /// The client address (see [`crate::client_ip::client_ip`]).
    pub client_ip: Option<IpAddr>,
    /// The caller's roles (after inheritance).
    pub roles: &'a [&'a str],
    /// The id of the RBAC rule that matched.
    pub rule: Option<&'a str>,
    /// Request header lookup by lower-case name (only names from
    /// [`CompiledRateLimits::header_names`] are asked for).
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
}

/// A header lookup that finds nothing.
pub fn no_headers<'a>(_: &str) -> Option<&'a str> {
    None
}

/// The verdict of [`CompiledRateLimits::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateOutcome {
    /// Every applicable bucket had a token (taken). `headers` holds
    /// `RateLimit-Policy` / `RateLimit` when `response_headers` is on.
    Allowed {
        /// Headers to add to the upstream response.
        headers: Vec<(String, String)>,
    },
    /// A bucket was empty; nothing was taken from any bucket. In shadow mode
    /// (`shadow: true`) the request goes on and only the metric is counted.
    Limited {
        /// The limit with the longest wait (first in policy order on a tie).
        limit: String,
        /// Whole seconds until every applicable bucket has a token again.
        retry_after_secs: u64,
        /// `Retry-After`, `RateLimit-Policy`, `RateLimit` for the 429.
        headers: Vec<(String, String)>,
        /// Shadow mode: count, do not refuse.
        shadow: bool,
    },
    /// The shared store failed: fail closed with [`StoreFailure::status`],
    /// `Retry-After: 1` and [`headers::STORE_FAILURE_BODY`].
    StoreFailed(StoreFailure),
}

/// One limit, compiled.
#[derive(Debug, Clone)]
struct CompiledLimit {
    name: String,
    key: KeySource,
    roles: Vec<String>,
    rules: Vec<String>,
    params: BucketParams,
    cost: CostKind,
    policy_item: String,
}

/// The rate limits of a policy, ready for per-request use.
#[derive(Debug, Clone)]
pub struct CompiledRateLimits {
    limits: Vec<CompiledLimit>,
    header_names: Vec<String>,
    shadow: bool,
    response_headers: bool,
    max_cas_retries: u32,
    table: SlotTable,
    seed: u64,
}

/// A bucket that applies to this request.
#[derive(Debug, Clone, Copy)]
struct Applied {
    limit: usize,
    key_hash: u64,
    entry: usize,
}

/// A slot read during a check, with the working copy of its record.
#[derive(Debug, Clone)]
struct Entry {
    slot: u32,
    cas: Cas,
    stored: Option<SlotRecord>,
    committed: bool,
}

/// What a bucket showed when decided.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    allowed: bool,
    wait_secs: u64,
    remaining: u64,
    next_secs: u64,
    took: i64,
}

/// The value stored in a slot: the owner's key hash, its bucket and parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotRecord {
    key_hash: u64,
    bucket: Bucket,
    params: BucketParams,
}

const RECORD_VERSION: u8 = 1;
const RECORD_LEN: usize = 41;

impl SlotRecord {
    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0] = RECORD_VERSION;
        out[1..9].copy_from_slice(&self.key_hash.to_le_bytes());
        out[9..17].copy_from_slice(&self.bucket.tokens.to_le_bytes());
        out[17..25].copy_from_slice(&self.bucket.last_ms.to_le_bytes());
        out[25..33].copy_from_slice(&self.params.capacity.to_le_bytes());
        out[33..41].copy_from_slice(&self.params.rate_per_ms.to_le_bytes());
        out
    }

    /// `None` for anything not written by this version: the slot is then free.
    fn decode(bytes: &[u8]) -> Option<SlotRecord> {
        let mut r = store::Reader::new(bytes);
        if r.u8()? != RECORD_VERSION {
            return None;
        }
        let key_hash = r.u64()?;
        let tokens = r.i64()?;
        let last_ms = r.u64()?;
        let capacity = r.i64()?;
        let rate_per_ms = r.u64()?;
        if !r.is_done() || capacity <= 0 || rate_per_ms == 0 {
            return None;
        }
        Some(SlotRecord {
            key_hash,
            bucket: Bucket { tokens, last_ms },
            params: BucketParams { capacity, rate_per_ms },
        })
    }
}

/// How a key relates to the record in its slot.
enum Claim {
    /// The slot is (now) this key's bucket.
    Own,
    /// Another busy key owns it; this key shares its tokens.
    Shared,
}

/// Puts `key_hash`'s bucket into `record` as of `now`: keeps its own, takes
/// over a free or idle slot, or shares a busy one. Refills in every case.
fn claim(record: &mut Option<SlotRecord>, key_hash: u64, params: &BucketParams, now: u64) -> Claim {
    match record {
        Some(r) if r.key_hash == key_hash => {
            // Parameters follow the current policy.
            r.params = *params;
            r.bucket.refill(params, now);
            r.bucket.tokens = r.bucket.tokens.min(params.capacity);
            Claim::Own
        }
        Some(r) if !r.bucket.is_full_at(&r.params, now) => {
            let owner = r.params;
            r.bucket.refill(&owner, now);
            Claim::Shared
        }
        _ => {
            *record = Some(SlotRecord { key_hash, bucket: Bucket::full(params, now), params: *params });
            Claim::Own
        }
    }
}

/// Namespace tags in the key hash, so values of different kinds never alias.
mod tag {
    pub const SUBJECT: u8 = 1;
    pub const IP: u8 = 2;
    pub const ROLE: u8 = 3;
    pub const RULE: u8 = 4;
    pub const HEADER: u8 = 5;
    pub const UNKNOWN_IP: u8 = 6;
}

impl CompiledRateLimits {
    /// Compiles the `rate_limits` and `rate_limit_settings` of a validated policy.
    pub fn compile(policy: &Policy) -> Result<Self, ConfigError> {
        let mut limits = Vec::with_capacity(policy.rate_limits.len());
        let mut header_names: Vec<String> = Vec::new();
        for (i, limit) in policy.rate_limits.iter().enumerate() {
            let key = KeySource::parse(&limit.key)
                .map_err(|m| ConfigError::invalid(format!("rate_limits[{i}].key"), m))?;
            if let KeySource::Header(name) = &key {
                if !header_names.contains(name) {
                    header_names.push(name.clone());
                }
            }
            let params = BucketParams::new(limit.capacity, limit.refill_per_minute);
            let llm = limit.cost == CostKind::ResponseTokens;
            limits.push(CompiledLimit {
                name: limit.name.clone(),
                key,
                roles: limit.roles.clone(),
                rules: limit.rules.clone(),
                policy_item: headers::policy_item(&limit.name, params.capacity_tokens(), params.window_secs(), llm),
                params,
                cost: limit.cost,
            });
        }
        let settings = &policy.rate_limit_settings;
        Ok(CompiledRateLimits {
            limits,
            header_names,
            shadow: settings.mode == RateLimitMode::Shadow,
            response_headers: settings.response_headers,
            max_cas_retries: settings.max_cas_retries,
            table: SlotTable::new(SLOT_PREFIX, settings.table_slots),
            seed: 0,
        })
    }

    /// Mixes a secret into slot placement, so clients choosing their own key
    /// values (`header:` keys) cannot aim at another client's slot. Every
    /// worker must use the same seed (e.g. one stored in shared data at start).
    pub fn with_hash_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether no limit is configured (the stage can be skipped).
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Lower-case names of the request headers some limit keys on.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// Whether any limit charges response tokens (the engine then parses usage).
    pub fn charges_response_tokens(&self) -> bool {
        self.limits.iter().any(|l| l.cost == CostKind::ResponseTokens)
    }

    /// The slot table (for sizing reports and tests).
    pub fn table(&self) -> &SlotTable {
        &self.table
    }

    /// Decides a request: every applicable bucket must hold a token.
    pub fn check(&self, host: &dyn Host, caller: &RateCaller<'_>) -> RateOutcome {
        let (applied, mut entries) = self.applicable(caller, |_| true);
        if applied.is_empty() {
            return RateOutcome::Allowed { headers: Vec::new() };
        }
        let mut seen = vec![Seen::default(); applied.len()];
        for attempt in 0..=self.max_cas_retries {
            if attempt > 0 {
                host.count(metrics::CAS_RETRY, 1);
            }
            if let Err(failure) = self.read_pending(host, &mut entries) {
                return self.fail(host, &applied, &entries, &seen, failure);
            }
            let now = host.now_ms();
            // Decide on working copies; `entries` keeps what was read.
            let mut working: Vec<Option<SlotRecord>> = entries.iter().map(|e| e.stored).collect();
            let mut shared = 0;
            for (i, a) in applied.iter().enumerate() {
                let Some(entry) = entries.get(a.entry) else { continue };
                if entry.committed {
                    continue;
                }
                let (Some(limit), Some(record)) = (self.limits.get(a.limit), working.get_mut(a.entry)) else {
                    continue;
                };
                if let Some((s, was_shared)) = decide(limit, record, a.key_hash, now) {
                    shared += u64::from(was_shared);
                    if let Some(slot) = seen.get_mut(i) {
                        *slot = s;
                    }
                }
            }
            if shared > 0 {
                host.count(metrics::SLOT_SHARED, shared);
            }
            if seen.iter().any(|s| !s.allowed) {
                self.refund(host, &applied, &entries, &seen);
                self.follow_clock_back(host, &entries, now);
                return self.limited(host, &applied, &seen);
            }
            match self.write_pending(host, &applied, &mut entries, &working, &seen) {
                Ok(true) => return self.allowed(&applied, &seen),
                Ok(false) => continue,
                Err(failure) => return self.fail(host, &applied, &entries, &seen, failure),
            }
        }
        self.fail(host, &applied, &entries, &seen, StoreFailure::Contention)
    }

    /// Charges `tokens` LLM tokens to every applicable `response_tokens`
    /// bucket, after the response (it may go into debt; the next request waits).
    /// Call with the same caller as the `check` of that request.
    pub fn charge(&self, host: &dyn Host, caller: &RateCaller<'_>, tokens: u64) -> Result<(), StoreFailure> {
        if tokens == 0 {
            return Ok(());
        }
        let (applied, entries) = self.applicable(caller, |l| l.cost == CostKind::ResponseTokens);
        let cost = units(tokens);
        let mut result = Ok(());
        for a in &applied {
            let (Some(limit), Some(entry)) = (self.limits.get(a.limit), entries.get(a.entry)) else {
                continue;
            };
            let update = |record: &mut Option<SlotRecord>, now: u64| {
                claim(record, a.key_hash, &limit.params, now);
                if let Some(r) = record {
                    r.bucket.take(cost);
                }
                true
            };
            if let Err(failure) = self.update_slot(host, entry.slot, update) {
                host.count(metrics::STORE_FAILURE, 1);
                host.log(crate::host::LogLevel::Warn, &format!("rate limit `{}`: response tokens not charged: {failure}", limit.name));
                result = Err(failure);
            }
        }
        result
    }

    /// The buckets that apply to `caller` among limits passing `filter`, and
    /// the distinct slots they live in.
    fn applicable(&self, caller: &RateCaller<'_>, filter: impl Fn(&CompiledLimit) -> bool) -> (Vec<Applied>, Vec<Entry>) {
        let mut applied = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        for (index, limit) in self.limits.iter().enumerate() {
            if !filter(limit) || !applies(limit, caller) {
                continue;
            }
            let mut push = |key_hash: u64| {
                let slot = self.table.slot_of(key_hash);
                let entry = match entries.iter().position(|e| e.slot == slot) {
                    Some(found) => found,
                    None => {
                        entries.push(Entry { slot, cas: 0, stored: None, committed: false });
                        entries.len() - 1
                    }
                };
                applied.push(Applied { limit: index, key_hash, entry });
            };
            let name = limit.name.as_bytes();
            match &limit.key {
                KeySource::Role => {
                    let mut any = false;
                    for role in caller.roles.iter().filter(|r| limit.roles.is_empty() || limit.roles.iter().any(|l| l == *r)) {
                        any = true;
                        push(store::key_hash(self.seed, name, tag::ROLE, role.as_bytes()));
                    }
                    if !any {
                        push(self.ip_hash(name, caller));
                    }
                }
                key => {
                    let value = match key {
                        KeySource::Subject => caller.subject.map(|v| (tag::SUBJECT, v)),
                        KeySource::Rule => caller.rule.map(|v| (tag::RULE, v)),
                        KeySource::Header(h) => (caller.header)(h).map(|v| (tag::HEADER, v)),
                        KeySource::ClientIp | KeySource::Role => None,
                    };
                    match value.filter(|(_, v)| !v.is_empty()) {
                        Some((t, v)) => push(store::key_hash(self.seed, name, t, v.as_bytes())),
                        None => push(self.ip_hash(name, caller)),
                    }
                }
            }
        }
        (applied, entries)
    }

    fn ip_hash(&self, name: &[u8], caller: &RateCaller<'_>) -> u64 {
        match &caller.client_ip {
            Some(ip) => {
                let (bytes, len) = bucket_bytes(ip);
                store::key_hash(self.seed, name, tag::IP, bytes.get(..len).unwrap_or(&bytes))
            }
            None => store::key_hash(self.seed, name, tag::UNKNOWN_IP, b""),
        }
    }

    /// Reads every slot not yet written by this request.
    fn read_pending(&self, host: &dyn Host, entries: &mut [Entry]) -> Result<(), StoreFailure> {
        for entry in entries.iter_mut().filter(|e| !e.committed) {
            let read = self.table.read(host, entry.slot)?;
            entry.cas = read.cas;
            entry.stored = read.value.as_deref().and_then(SlotRecord::decode);
        }
        Ok(())
    }

    /// Writes the slots whose buckets gave tokens. `Ok(false)`: a CAS lost; the
    /// written ones are marked committed and the rest must be decided again.
    fn write_pending(
        &self,
        host: &dyn Host,
        applied: &[Applied],
        entries: &mut [Entry],
        working: &[Option<SlotRecord>],
        seen: &[Seen],
    ) -> Result<bool, StoreFailure> {
        for (index, entry) in entries.iter_mut().enumerate() {
            if entry.committed {
                continue;
            }
            let took = applied.iter().zip(seen).any(|(a, s)| a.entry == index && s.took > 0);
            let Some(Some(record)) = working.get(index) else { continue };
            if !took {
                // Nothing taken (response_tokens buckets only look): no write.
                entry.committed = true;
                continue;
            }
            match self.table.write(host, entry.slot, &record.encode(), entry.cas) {
                Ok(()) => entry.committed = true,
                Err(StoreError::CasMismatch) => return Ok(false),
                Err(StoreError::Unavailable) => return Err(StoreFailure::Unavailable),
            }
        }
        Ok(true)
    }

    /// Gives back tokens taken from slots already written by a request that
    /// ends up refused (only after a lost CAS race; see the module docs).
    fn refund(&self, host: &dyn Host, applied: &[Applied], entries: &[Entry], seen: &[Seen]) {
        for (a, s) in applied.iter().zip(seen) {
            let written = entries.get(a.entry).is_some_and(|e| e.committed);
            if !written || s.took <= 0 {
                continue;
            }
            let Some(entry) = entries.get(a.entry) else { continue };
            let give = |record: &mut Option<SlotRecord>, _now: u64| match record {
                Some(r) => {
                    let params = r.params;
                    r.bucket.give_back(&params, s.took);
                    true
                }
                None => false,
            };
            // Best effort: a refund that cannot be written only errs towards limiting.
            let _ = self.update_slot(host, entry.slot, give);
        }
    }

    /// After the wall clock stepped back, a refused request still records the
    /// new reading (tokens untouched): otherwise an empty bucket would earn
    /// nothing until the clock caught up with its old reading. One CAS
    /// attempt, errors ignored; this only happens after a clock step.
    fn follow_clock_back(&self, host: &dyn Host, entries: &[Entry], now: u64) {
        for entry in entries.iter().filter(|e| !e.committed) {
            if let Some(mut record) = entry.stored.filter(|r| r.bucket.last_ms > now) {
                record.bucket.last_ms = now;
                let _ = self.table.write(host, entry.slot, &record.encode(), entry.cas);
            }
        }
    }

    /// Read-modify-CAS-write of one slot with the retry bound. `update` returns
    /// whether there is something to write.
    fn update_slot(
        &self,
        host: &dyn Host,
        slot: u32,
        update: impl Fn(&mut Option<SlotRecord>, u64) -> bool,
    ) -> Result<(), StoreFailure> {
        for attempt in 0..=self.max_cas_retries {
            if attempt > 0 {
                host.count(metrics::CAS_RETRY, 1);
            }
            let read = self.table.read(host, slot)?;
            let mut record = read.value.as_deref().and_then(SlotRecord::decode);
            if !update(&mut record, host.now_ms()) {
                return Ok(());
            }
            let Some(record) = record else { return Ok(()) };
            match self.table.write(host, slot, &record.encode(), read.cas) {
                Ok(()) => return Ok(()),
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Unavailable) => return Err(StoreFailure::Unavailable),
            }
        }
        Err(StoreFailure::Contention)
    }

    fn allowed(&self, applied: &[Applied], seen: &[Seen]) -> RateOutcome {
        let headers = if self.response_headers { self.quota_headers(applied, seen) } else { Vec::new() };
        RateOutcome::Allowed { headers }
    }

    fn limited(&self, host: &dyn Host, applied: &[Applied], seen: &[Seen]) -> RateOutcome {
        let mut worst: Option<(usize, u64)> = None;
        for (a, s) in applied.iter().zip(seen) {
            if !s.allowed && worst.is_none_or(|(_, w)| s.wait_secs > w) {
                worst = Some((a.limit, s.wait_secs));
            }
        }
        let (limit, retry_after_secs) = worst.unwrap_or((0, 1));
        let name = self.limits.get(limit).map(|l| l.name.clone()).unwrap_or_default();
        host.count(if self.shadow { metrics::SHADOW_LIMITED } else { metrics::LIMITED }, 1);
        let mut headers = vec![(headers::RETRY_AFTER.to_string(), retry_after_secs.to_string())];
        headers.extend(self.quota_headers(applied, seen));
        RateOutcome::Limited { limit: name, retry_after_secs, headers, shadow: self.shadow }
    }

    fn fail(&self, host: &dyn Host, applied: &[Applied], entries: &[Entry], seen: &[Seen], failure: StoreFailure) -> RateOutcome {
        self.refund(host, applied, entries, seen);
        host.count(metrics::STORE_FAILURE, 1);
        host.log(crate::host::LogLevel::Warn, &format!("rate limit failed closed: {failure}"));
        RateOutcome::StoreFailed(failure)
    }

    /// `RateLimit-Policy` and `RateLimit` over the applicable buckets.
    fn quota_headers(&self, applied: &[Applied], seen: &[Seen]) -> Vec<(String, String)> {
        let mut policy = String::new();
        let mut limit = String::new();
        for (a, s) in applied.iter().zip(seen) {
            let Some(l) = self.limits.get(a.limit) else { continue };
            if !policy.is_empty() {
                policy.push_str(", ");
                limit.push_str(", ");
            }
            policy.push_str(&l.policy_item);
            limit.push_str(&headers::limit_item(&l.name, s.remaining, s.next_secs));
        }
        vec![(headers::RATELIMIT_POLICY.to_string(), policy), (headers::RATELIMIT.to_string(), limit)]
    }
}

/// Whether a limit's `roles` / `rules` narrowing lets it apply to `caller`.
fn applies(limit: &CompiledLimit, caller: &RateCaller<'_>) -> bool {
    let role_ok = limit.roles.is_empty() || caller.roles.iter().any(|r| limit.roles.iter().any(|l| l == r));
    let rule_ok = limit.rules.is_empty() || caller.rule.is_some_and(|r| limit.rules.iter().any(|l| l == r));
    role_ok && rule_ok
}

/// Refills and decides one bucket in the working record; takes its token if
/// it allows. Returns what was seen and whether the slot was shared.
fn decide(limit: &CompiledLimit, record: &mut Option<SlotRecord>, key_hash: u64, now: u64) -> Option<(Seen, bool)> {
    let shared = matches!(claim(record, key_hash, &limit.params, now), Claim::Shared);
    let r = record.as_mut()?;
    // What this key sees: the slot's tokens through its own capacity, refilled
    // at the rate of the slot's owner.
    let view_params = BucketParams { capacity: limit.params.capacity, rate_per_ms: r.params.rate_per_ms };
    let mut view = Bucket { tokens: r.bucket.tokens.min(limit.params.capacity), last_ms: now };
    let allowed = view.has(UNITS_PER_TOKEN);
    let mut took = 0;
    if allowed && limit.cost == CostKind::Request {
        r.bucket.take(UNITS_PER_TOKEN);
        view.take(UNITS_PER_TOKEN);
        took = UNITS_PER_TOKEN;
    }
    Some((
        Seen {
            allowed,
            wait_secs: view.secs_until(&view_params, UNITS_PER_TOKEN),
            remaining: view.whole_tokens(),
            next_secs: view.secs_to_next_token(&view_params),
            took,
        },
        shared,
    ))
}

#[cfg(test)]
pub(crate) mod tests;
