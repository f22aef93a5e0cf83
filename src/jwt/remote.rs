//! Remote JWKS: when to fetch, and what to keep when a fetch fails.
//!
//! One state machine per provider and per worker. The adapter asks which fetches
//! are due (on tick, and when a request needs keys), sends them, and hands back the
//! answer. The last good key set is kept when a fetch fails; a token naming an
//! unknown `kid` triggers a re-fetch, at most once per cooldown.

use super::keys::{key_set_from_jwks, KeyError, KeySet};
use crate::config::jwt::{JwkSet, RemoteJwks};
use crate::host::OutboundRequest;

/// Fraction of `cache_seconds` after which a set is refreshed (before it expires).
const REFRESH_AT_PERCENT: u64 = 90;
/// First retry delay after a failed fetch when no set is known yet.
const INITIAL_RETRY_MS: u64 = 500;

/// The remote key state of one provider.
#[derive(Debug)]
pub struct RemoteKeys {
    cfg: RemoteJwks,
    keys: Option<KeySet>,
    fetched_at_ms: u64,
    last_attempt_ms: Option<u64>,
    in_flight: bool,
    refetch_wanted: bool,
    failures: u32,
}

/// The outcome of one fetch, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// A new set is in use; `skipped` lists the keys of the set that were unusable.
    Updated { keys: usize, skipped: Vec<(usize, KeyError)> },
    /// The fetch failed; the previous set (if any) stays in use.
    Failed(FetchFailure),
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// No answer (connection refused, timeout, reset).
    NoResponse,
    /// The server answered with a non-200 status.
    Status(u16),
    /// The body is not a JWK Set.
    NotAJwkSet,
    /// The set holds no usable key.
    NoUsableKey,
}

impl RemoteKeys {
    /// State before the first fetch.
    pub fn new(cfg: RemoteJwks) -> Self {
        RemoteKeys {
            cfg,
            keys: None,
            fetched_at_ms: 0,
            last_attempt_ms: None,
            in_flight: false,
            refetch_wanted: false,
            failures: 0,
        }
    }

    /// The keys in use, if a fetch ever succeeded.
    pub fn keys(&self) -> Option<&KeySet> {
        self.keys.as_ref()
    }

    /// True while a fetch is under way.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Asks for a re-fetch (a token named an unknown `kid`). Returns true if one
    /// is in flight or will be sent now, i.e. waiting for it makes sense.
    pub fn want_refetch(&mut self, now_ms: u64) -> bool {
        self.refetch_wanted = true;
        self.in_flight || self.due(now_ms)
    }

    /// Whether a fetch should be sent now.
    pub fn due(&self, now_ms: u64) -> bool {
        if self.in_flight {
            return false;
        }
        let since_attempt = self.last_attempt_ms.map(|t| now_ms.saturating_sub(t));
        let cooldown_ms = self.cfg.refetch_cooldown_seconds.saturating_mul(1000);
        match (&self.keys, since_attempt) {
            (_, None) => true,
            (None, Some(since)) => {
                let backoff = INITIAL_RETRY_MS
                    .saturating_mul(1u64 << self.failures.min(16))
                    .min(cooldown_ms.max(INITIAL_RETRY_MS));
                since >= backoff
            }
            (Some(_), Some(since)) => {
                let refresh_ms = self.cfg.cache_seconds.saturating_mul(10 * REFRESH_AT_PERCENT);
                let stale = now_ms.saturating_sub(self.fetched_at_ms) >= refresh_ms;
                let failed_recently = self.failures > 0 && since < cooldown_ms;
                (stale && !failed_recently) || (self.refetch_wanted && since >= cooldown_ms)
            }
        }
    }

    /// The request to send for this provider's keys.
    pub fn request(&self) -> OutboundRequest {
        OutboundRequest {
            upstream: self.cfg.cluster.clone(),
            authority: self.cfg.authority.clone().unwrap_or_else(|| self.cfg.cluster.clone()),
            method: "GET".into(),
            path: self.cfg.path.clone(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
            timeout_ms: self.cfg.timeout_ms,
        }
    }

    /// Records that the fetch was sent (or could not be sent: `sent == false`).
    pub fn started(&mut self, now_ms: u64, sent: bool) {
        self.last_attempt_ms = Some(now_ms);
        self.in_flight = sent;
        if !sent {
            self.failures = self.failures.saturating_add(1);
        }
    }

    /// Takes the answer of the fetch: `status` is `None` when there was none.
    pub fn finished(&mut self, now_ms: u64, status: Option<u16>, body: &[u8]) -> FetchOutcome {
        self.in_flight = false;
        let outcome = match status {
            None => Err(FetchFailure::NoResponse),
            Some(200) => parse(body),
            Some(s) => Err(FetchFailure::Status(s)),
        };
        match outcome {
            Ok((set, skipped)) => {
                let keys = set.keys.len();
                self.keys = Some(set);
                self.fetched_at_ms = now_ms;
                self.failures = 0;
                self.refetch_wanted = false;
                FetchOutcome::Updated { keys, skipped }
            }
            Err(f) => {
                self.failures = self.failures.saturating_add(1);
                FetchOutcome::Failed(f)
            }
        }
    }

    /// How long a request may wait for the first set.
    pub fn max_wait_ms(&self) -> u64 {
        self.cfg.max_wait_ms
    }
}

fn parse(body: &[u8]) -> Result<(KeySet, Vec<(usize, KeyError)>), FetchFailure> {
    let jwks: JwkSet = serde_json::from_slice(body).map_err(|_| FetchFailure::NotAJwkSet)?;
    let (set, skipped) = key_set_from_jwks(&jwks);
    if set.keys.is_empty() {
        return Err(FetchFailure::NoUsableKey);
    }
    Ok((set, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> RemoteKeys {
        RemoteKeys::new(
            serde_json::from_str(r#"{"cluster":"idp","path":"/jwks","cache_seconds":100,"refetch_cooldown_seconds":10}"#)
                .unwrap(),
        )
    }

    const EMPTY_BUT_VALID: &[u8] = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    #[test]
    fn first_fetch_is_due_at_once_and_not_twice() {
        let mut r = remote();
        assert!(r.due(0));
        r.started(0, true);
        assert!(!r.due(0));
        assert!(r.in_flight());
    }

    #[test]
    fn failure_before_any_set_retries_with_backoff() {
        let mut r = remote();
        r.started(0, true);
        assert_eq!(r.finished(10, None, b""), FetchOutcome::Failed(FetchFailure::NoResponse));
        assert!(!r.due(400));
        assert!(r.due(1000));
    }

    #[test]
    fn good_set_is_refreshed_before_it_expires_and_kept_on_failure() {
        let mut r = remote();
        r.started(0, true);
        assert!(matches!(r.finished(0, Some(200), EMPTY_BUT_VALID), FetchOutcome::Updated { keys: 1, .. }));
        assert!(!r.due(89_000));
        assert!(r.due(90_000));
        r.started(90_000, true);
        assert_eq!(r.finished(90_001, Some(503), b""), FetchOutcome::Failed(FetchFailure::Status(503)));
        assert!(r.keys().is_some(), "last good set kept");
        assert!(!r.due(95_000), "cooldown after a failure");
        assert!(r.due(100_001));
    }

    #[test]
    fn unknown_kid_refetch_honours_the_cooldown() {
        let mut r = remote();
        r.started(0, true);
        r.finished(0, Some(200), EMPTY_BUT_VALID);
        assert!(!r.want_refetch(5_000), "within cooldown of the last fetch");
        assert!(r.want_refetch(10_000));
        r.started(10_000, true);
        r.finished(10_001, Some(200), EMPTY_BUT_VALID);
        assert!(!r.due(10_002), "satisfied");
    }

    #[test]
    fn a_set_without_usable_keys_is_a_failure() {
        let mut r = remote();
        r.started(0, true);
        assert_eq!(
            r.finished(0, Some(200), br#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#),
            FetchOutcome::Failed(FetchFailure::NoUsableKey)
        );
        assert_eq!(r.finished(0, Some(200), b"<html>"), FetchOutcome::Failed(FetchFailure::NotAJwkSet));
    }
}
