//! The audit record schema: one JSON object per record, flat, with the common
//! fields first and the kind's own fields after them.
//!
//! ```text
//! record_id       string   unique per record: "<worker prefix>-<counter hex>"
//! time            string   RFC 3339 UTC, milliseconds
//! kind            string   access | authn_failure | authz_decision | rate_limited |
//!                          data_access | security_alert | config_loaded | error
//! retention_days  integer  how long the collector should keep it (policy, per kind)
//! request_id      string?  x-request-id if UUID-shaped, else "h-" + keyed digest
//! method, path    string?  the request (path normalised, no query)
//! subject         string?  HMAC pseudonym (or raw subject in raw mode)
//! roles           [string]? the subject's roles
//! client_ip       string?  truncated, CIDR notation
//! ...kind fields (see the structs below)
//! prev_hash       string?  hex SHA-256 of the previous record's bytes (chain mode)
//! ```

use super::fields::{roles, AuditPath, ClientIp, Method, Name, Pseudonymizer, RequestId, Subject};
use super::time::rfc3339_ms;
use crate::config::audit::{IpTruncation, RetentionDays};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// A stable, lowercase code from the engine's closed sets (reasons, stages).
/// `&'static` so that request data can never be passed as a code.
pub type Code = &'static str;

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// Every request.
    Access,
    /// Authentication failed.
    AuthnFailure,
    /// An authorization decision (denied always; granted when configured).
    AuthzDecision,
    /// A rate limit refused the request.
    RateLimited,
    /// PII entity types and counts seen, per direction.
    DataAccess,
    /// Lockout, denial burst, volume anomaly.
    SecurityAlert,
    /// A policy was loaded.
    ConfigLoaded,
    /// The filter failed to do something (JWKS fetch, internal error).
    Error,
}

impl RecordKind {
    /// The name used in records and OTLP bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Access => "access",
            RecordKind::AuthnFailure => "authn_failure",
            RecordKind::AuthzDecision => "authz_decision",
            RecordKind::RateLimited => "rate_limited",
            RecordKind::DataAccess => "data_access",
            RecordKind::SecurityAlert => "security_alert",
            RecordKind::ConfigLoaded => "config_loaded",
            RecordKind::Error => "error",
        }
    }

    /// The retention class the policy gives this kind.
    pub fn retention_days(self, retention: &RetentionDays) -> u32 {
        match self {
            RecordKind::Access => retention.access,
            RecordKind::AuthnFailure => retention.authn_failure,
            RecordKind::AuthzDecision => retention.authz_decision,
            RecordKind::RateLimited => retention.rate_limited,
            RecordKind::DataAccess => retention.data_access,
            RecordKind::SecurityAlert => retention.security_alert,
            RecordKind::ConfigLoaded => retention.config_loaded,
            RecordKind::Error => retention.error,
        }
    }
}

/// Raw request data as the engine has it. Nothing here is written to a record
/// as is: [`RequestContext::from_facts`] reduces every field.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    /// The `x-request-id` header.
    pub request_id: Option<&'a str>,
    /// `:method`.
    pub method: &'a str,
    /// The normalised path (a query, if still present, is removed here).
    pub path: &'a str,
    /// The authenticated subject (`sub`), if any.
    pub subject: Option<&'a str>,
    /// The subject's roles.
    pub roles: &'a [String],
    /// The client address (with or without port).
    pub client_ip: Option<&'a str>,
}

/// The request fields shared by every record of one request, already reduced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestContext {
    /// `x-request-id` if UUID-shaped, else `h-<keyed digest>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// HTTP method.
    pub method: Method,
    /// Normalised path without query.
    pub path: AuditPath,
    /// Pseudonymised (or raw) subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// Roles of the subject.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Name>,
    /// Truncated client IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<ClientIp>,
}

impl RequestContext {
    /// Reduces `facts` for a record.
    pub fn from_facts(
        facts: &RequestFacts<'_>,
        pseudonymizer: &Pseudonymizer,
        truncation: &IpTruncation,
    ) -> RequestContext {
        RequestContext {
            request_id: facts.request_id.and_then(|id| RequestId::new(id, pseudonymizer)),
            method: Method::new(facts.method),
            path: AuditPath::new(facts.path),
            subject: facts.subject.map(|s| pseudonymizer.subject(s)),
            roles: roles(facts.roles),
            client_ip: facts.client_ip.and_then(|ip| ClientIp::truncated(ip, truncation)),
        }
    }
}

/// Final decision on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Forwarded upstream.
    Allow,
    /// Answered by the filter (401, 403, 429, 413, ...).
    Deny,
}

/// `access`: one per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    /// The route rule that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Name>,
    /// Response status sent downstream.
    pub status: u16,
    /// Allowed or denied.
    pub decision: Decision,
    /// Why it was denied (`authn_failed`, `forbidden`, `rate_limited`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Code>,
    /// Time from request headers to the end of the response, in ms.
    pub latency_ms: u64,
}

/// `authn_failure`: the token was missing, malformed, expired, unknown, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthnFailure {
    /// Reason code (`missing`, `expired`, `bad_signature`, `issuer`, ...).
    pub reason: Code,
    /// The provider that was tried, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<Name>,
}

/// Outcome of an authorization check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthzOutcome {
    /// The subject holds the permission.
    Granted,
    /// It does not (or a condition failed).
    Denied,
}

/// `authz_decision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthzDecision {
    /// Granted or denied.
    pub outcome: AuthzOutcome,
    /// The rule that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Name>,
    /// The permission the subject lacked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_permission: Option<Name>,
    /// A failed condition (`mfa`, `time_window`, `own_team`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Code>,
}

/// `rate_limited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimited {
    /// The bucket that ran dry.
    pub limit: Name,
    /// Seconds until a token is available.
    pub retry_after_s: u64,
}

/// `data_access`: PII entity types and counts per direction; never values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DataAccess {
    /// Entity type -> count found in the request body.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub request_entities: BTreeMap<Name, u64>,
    /// Entity type -> count found in the response body.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub response_entities: BTreeMap<Name, u64>,
    /// Whether the entities were redacted (false: the caller was exempt).
    pub redacted: bool,
}

/// Which anomaly a `security_alert` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A subject or client IP was locked out after failed authentications.
    Lockout,
    /// Too many authorization denials for one subject in a window.
    DenialBurst,
    /// Too many requests for one subject in a day.
    VolumeAnomaly,
}

/// `security_alert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityAlert {
    /// What was detected.
    pub alert: AlertKind,
    /// Events counted when the alert fired.
    pub count: u64,
    /// The configured maximum that was exceeded.
    pub threshold: u64,
    /// The window the count is over.
    pub window_seconds: u64,
}

/// `config_loaded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigLoaded {
    /// Hex SHA-256 of the policy bytes as loaded.
    pub policy_hash: String,
    /// chatguard's version.
    pub module_version: &'static str,
}

impl ConfigLoaded {
    /// The record for loading `policy_bytes`.
    pub fn new(policy_bytes: &[u8]) -> ConfigLoaded {
        ConfigLoaded {
            policy_hash: super::fields::hex(&hmac_sha256::Hash::hash(policy_bytes)),
            module_version: crate::VERSION,
        }
    }
}

/// `error`: the filter could not do something. Codes only, no message text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorRecord {
    /// Pipeline stage (`jwks_fetch`, `redact`, `audit`, ...).
    pub stage: Code,
    /// What went wrong (`timeout`, `bad_status`, `parse`, ...).
    pub code: Code,
}

/// The kind-specific part of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RecordBody {
    /// See [`Access`].
    Access(Access),
    /// See [`AuthnFailure`].
    AuthnFailure(AuthnFailure),
    /// See [`AuthzDecision`].
    AuthzDecision(AuthzDecision),
    /// See [`RateLimited`].
    RateLimited(RateLimited),
    /// See [`DataAccess`].
    DataAccess(DataAccess),
    /// See [`SecurityAlert`].
    SecurityAlert(SecurityAlert),
    /// See [`ConfigLoaded`].
    ConfigLoaded(ConfigLoaded),
    /// See [`ErrorRecord`].
    Error(ErrorRecord),
}

impl RecordBody {
    /// The kind this body makes a record of.
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordBody::Access(_) => RecordKind::Access,
            RecordBody::AuthnFailure(_) => RecordKind::AuthnFailure,
            RecordBody::AuthzDecision(_) => RecordKind::AuthzDecision,
            RecordBody::RateLimited(_) => RecordKind::RateLimited,
            RecordBody::DataAccess(_) => RecordKind::DataAccess,
            RecordBody::SecurityAlert(_) => RecordKind::SecurityAlert,
            RecordBody::ConfigLoaded(_) => RecordKind::ConfigLoaded,
            RecordBody::Error(_) => RecordKind::Error,
        }
    }

    /// OTLP severity: warnings for refusals, errors for alerts and failures.
    pub fn severity(&self) -> Severity {
        match self {
            RecordBody::Access(a) if a.decision == Decision::Deny => Severity::Warn,
            RecordBody::AuthzDecision(d) if d.outcome == AuthzOutcome::Denied => Severity::Warn,
            RecordBody::AuthnFailure(_) | RecordBody::RateLimited(_) => Severity::Warn,
            RecordBody::SecurityAlert(_) | RecordBody::Error(_) => Severity::Error,
            _ => Severity::Info,
        }
    }
}

/// Log severity of a record (OpenTelemetry severity numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// INFO (9).
    Info,
    /// WARN (13).
    Warn,
    /// ERROR (17).
    Error,
}

impl Severity {
    /// OpenTelemetry `SeverityNumber`.
    pub fn number(self) -> u8 {
        match self {
            Severity::Info => 9,
            Severity::Warn => 13,
            Severity::Error => 17,
        }
    }

    /// OpenTelemetry `severityText`.
    pub fn text(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
        }
    }
}

/// One audit record. Built by [`super::AuditLog`]; every request-derived field is
/// one of the reducing types of [`super::fields`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    record_id: String,
    #[serde(rename = "time", serialize_with = "serialize_time")]
    time_ms: u64,
    kind: RecordKind,
    retention_days: u32,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    context: Option<RequestContext>,
    #[serde(flatten)]
    body: RecordBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_hash: Option<String>,
}

fn serialize_time<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_ms(*ms))
}

impl AuditRecord {
    /// A record of `body`'s kind; the retention comes from `retention`.
    pub fn new(
        record_id: String,
        time_ms: u64,
        retention: &RetentionDays,
        context: Option<RequestContext>,
        body: RecordBody,
    ) -> AuditRecord {
        let kind = body.kind();
        AuditRecord {
            record_id,
            time_ms,
            kind,
            retention_days: kind.retention_days(retention),
            context,
            body,
            prev_hash: None,
        }
    }

    /// The unique id.
    pub fn record_id(&self) -> &str {
        &self.record_id
    }

    /// When it happened (ms since the epoch).
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// Its kind.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    /// Its kind-specific part.
    pub fn body(&self) -> &RecordBody {
        &self.body
    }

    /// The request fields, if the record is about a request.
    pub fn context(&self) -> Option<&RequestContext> {
        self.context.as_ref()
    }

    /// The chain link, in chain mode.
    pub fn prev_hash(&self) -> Option<&str> {
        self.prev_hash.as_deref()
    }

    pub(crate) fn set_prev_hash(&mut self, hash: String) {
        self.prev_hash = Some(hash);
    }

    /// The canonical serialisation: one JSON object, the NDJSON line without its
    /// newline. The chain hashes exactly these bytes.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serialising these types cannot fail: every map key is a string and
        // there are no floats; an empty object would still be valid JSON.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// Makes record ids: a per-worker prefix derived from the seed the engine gives
/// (host clock, worker id), then a counter. Unique per record so that a collector
/// can de-duplicate retried batches.
#[derive(Debug, Clone)]
pub struct RecordIds {
    prefix: u64,
    next: u64,
}

impl RecordIds {
    /// Ids for one worker; distinct seeds give unrelated prefixes.
    pub fn new(seed: u64) -> RecordIds {
        RecordIds { prefix: splitmix64(seed), next: 0 }
    }

    /// The next id: `<16 hex prefix>-<counter hex>`.
    pub fn next_id(&mut self) -> String {
        let id = format!("{:016x}-{:x}", self.prefix, self.next);
        self.next = self.next.wrapping_add(1);
        id
    }
}

/// A bijective mixer (SplitMix64 finaliser): close seeds map to distant prefixes.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialise_to_their_documented_names() {
        let kinds = [
            RecordKind::Access,
            RecordKind::AuthnFailure,
            RecordKind::AuthzDecision,
            RecordKind::RateLimited,
            RecordKind::DataAccess,
            RecordKind::SecurityAlert,
            RecordKind::ConfigLoaded,
            RecordKind::Error,
        ];
        for kind in kinds {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.as_str()));
        }
    }

    #[test]
    fn record_ids_are_unique_and_differ_between_seeds() {
        let mut a = RecordIds::new(1);
        let mut b = RecordIds::new(2);
        let ids_a: Vec<String> = (0..1000).map(|_| a.next_id()).collect();
        let ids_b: Vec<String> = (0..1000).map(|_| b.next_id()).collect();
        let mut all: Vec<&String> = ids_a.iter().chain(ids_b.iter()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 2000);
        assert!(ids_a[0].ends_with("-0") && ids_a[17].ends_with("-11"), "{}", ids_a[17]);
        assert_eq!(ids_a[0].len(), 18);
    }

    #[test]
    fn config_loaded_hashes_the_policy_bytes() {
        let c = ConfigLoaded::new(b"{}");
        assert_eq!(
            c.policy_hash,
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(c.module_version, crate::VERSION);
    }

    #[test]
    fn retention_follows_the_kind() {
        let r = RetentionDays::default();
        let rec = AuditRecord::new(
            "id".into(),
            0,
            &r,
            None,
            RecordBody::SecurityAlert(SecurityAlert {
                alert: AlertKind::Lockout,
                count: 5,
                threshold: 4,
                window_seconds: 60,
            }),
        );
        assert_eq!(rec.kind(), RecordKind::SecurityAlert);
        assert_eq!(
            String::from_utf8(rec.to_json_bytes()).unwrap(),
            r#"{"record_id":"id","time":"1970-01-01T00:00:00.000Z","kind":"security_alert","retention_days":730,"alert":"lockout","count":5,"threshold":4,"window_seconds":60}"#
        );
    }
}
