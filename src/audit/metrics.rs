//! Names of every counter the filter emits through [`crate::host::Host::count`].
//!
//! How they appear in Envoy: a proxy-wasm metric defined as `chatguard.<name>` is
//! stored under Envoy's custom stat namespace `wasmcustom` (Envoy's
//! `source/extensions/common/wasm`: "The custom stat namespace which prepends all
//! the user-defined metrics"). So:
//!
//! - admin `/stats`: `wasmcustom.chatguard.requests_total: 42`
//! - admin `/stats/prometheus`: the registered custom namespace is stripped and no
//!   `envoy_` prefix is added: `chatguard_requests_total 42` (dots become `_`).
//!
//! Envoy wasm counters have no labels, so a dimension is a name segment:
//! `chatguard.authn_failures.expired`, `chatguard.pii_redacted.email`. Operators who
//! want Prometheus labels can add a `stats_config.stats_tags` regex. Dimension
//! values come from closed sets (reason codes, entity types, policy names) and are
//! passed through [`dimension`], which keeps metric cardinality bounded and no
//! request data in metric names.

/// Prefix of every chatguard metric.
pub const PREFIX: &str = "chatguard.";

/// Requests seen by the filter.
pub const REQUESTS_TOTAL: &str = "chatguard.requests_total";
/// Authentication failures (all reasons); per reason see [`authn_failure`].
pub const AUTHN_FAILURES: &str = "chatguard.authn_failures";
/// Authorization denials.
pub const AUTHZ_DENIED: &str = "chatguard.authz_denied";
/// Requests refused by a rate limit.
pub const RATE_LIMITED: &str = "chatguard.rate_limited";
/// PII entities redacted (all types); per type see [`pii_redacted`].
pub const PII_REDACTED: &str = "chatguard.pii_redacted";
/// Audit records accepted by the collector.
pub const AUDIT_SENT: &str = "chatguard.audit_sent";
/// Audit records put back in the queue after a failed batch (one per record per failure).
pub const AUDIT_RETRIED: &str = "chatguard.audit_retried";
/// Audit records lost: queue overflow, or a batch the collector refused for good (4xx).
pub const AUDIT_DROPPED: &str = "chatguard.audit_dropped";
/// Security alerts raised.
pub const SECURITY_ALERTS: &str = "chatguard.security_alerts";
/// Remote JWKS fetches that returned a usable key set.
pub const JWKS_FETCHES_OK: &str = "chatguard.jwks_fetches.ok";
/// Remote JWKS fetches that failed (call refused, timeout, bad status, bad body).
pub const JWKS_FETCHES_FAILED: &str = "chatguard.jwks_fetches.failed";
/// Verified-token cache hits.
pub const TOKEN_CACHE_HITS: &str = "chatguard.token_cache_hits";
/// Verified-token cache misses (a signature verification followed).
pub const TOKEN_CACHE_MISSES: &str = "chatguard.token_cache_misses";

/// Longest dimension value kept in a metric name.
const MAX_DIMENSION_LEN: usize = 32;

/// `chatguard.authn_failures.<reason>`.
pub fn authn_failure(reason: &str) -> String {
    format!("{AUTHN_FAILURES}.{}", dimension(reason))
}

/// `chatguard.pii_redacted.<entity>`.
pub fn pii_redacted(entity: &str) -> String {
    format!("{PII_REDACTED}.{}", dimension(entity))
}

/// A metric-name segment: lowercase `[a-z0-9_]`, at most 32 bytes, `other` if empty.
pub fn dimension(raw: &str) -> String {
    let out: String = raw
        .chars()
        .take(MAX_DIMENSION_LEN)
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    if out.is_empty() {
        "other".to_string()
    } else {
        out
    }
}

/// Every fixed metric name, for adapters that define metrics up front.
pub const ALL_FIXED: [&str; 13] = [
    REQUESTS_TOTAL,
    AUTHN_FAILURES,
    AUTHZ_DENIED,
    RATE_LIMITED,
    PII_REDACTED,
    AUDIT_SENT,
    AUDIT_RETRIED,
    AUDIT_DROPPED,
    SECURITY_ALERTS,
    JWKS_FETCHES_OK,
    JWKS_FETCHES_FAILED,
    TOKEN_CACHE_HITS,
    TOKEN_CACHE_MISSES,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensioned_names() {
        assert_eq!(authn_failure("expired"), "chatguard.authn_failures.expired");
        assert_eq!(pii_redacted("Credit Card"), "chatguard.pii_redacted.credit_card");
        assert_eq!(dimension(""), "other");
        assert_eq!(dimension(&"x".repeat(100)).len(), 32);
    }

    #[test]
    fn fixed_names_are_prefixed_unique_and_stat_safe() {
        let mut names = ALL_FIXED.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL_FIXED.len());
        for name in ALL_FIXED {
            assert!(name.starts_with(PREFIX), "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.'),
                "{name}"
            );
        }
    }
}
