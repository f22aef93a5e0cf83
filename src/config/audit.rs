//! Schema of the `audit` section: where audit records go, how they are batched and
//! retried, how personal data is reduced before it reaches a record, how long the
//! collector should keep each kind, and the in-filter anomaly thresholds.

use super::ConfigError;
use serde::Deserialize;

/// Audit records and their transport to an external collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Envoy cluster (edge: base URL) of the collector.
    pub cluster: String,
    /// `:authority` of the batch requests (default: the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// Request path of the batch requests.
    #[serde(default = "default_path")]
    pub path: String,
    /// Wire format of a batch.
    #[serde(default)]
    pub format: AuditFormat,
    /// A partly filled batch is sent at the latest this long after the previous send.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Records per batch request.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Records held per worker (waiting plus in flight); beyond it new records are
    /// dropped and counted.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Batch requests outstanding at once per worker.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Timeout of one batch request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Backoff between attempts after a failed batch.
    #[serde(default)]
    pub retry: RetryConfig,
    /// How the subject appears in records.
    #[serde(default)]
    pub subject_mode: SubjectMode,
    /// HMAC key of the subject pseudonyms (at least 16 bytes). Required in
    /// `pseudonym` mode. Erasing a person's link to the archive = rotating this key.
    #[serde(default)]
    pub pseudonym_key: Option<String>,
    /// How much of the client IP is kept.
    #[serde(default)]
    pub client_ip_truncation: IpTruncation,
    /// Also record granted authorization decisions (denied ones always are).
    #[serde(default)]
    pub record_granted_authz: bool,
    /// Retention class (days) the collector should apply, per record kind.
    #[serde(default)]
    pub retention_days: RetentionDays,
    /// Tamper evidence: each record carries the SHA-256 of the previous record of
    /// its worker's chain.
    #[serde(default)]
    pub chain: bool,
    /// In-filter anomaly detection.
    #[serde(default)]
    pub anomaly: AnomalyConfig,
}

/// Wire format of an audit batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditFormat {
    /// One JSON record per line (`application/x-ndjson`): Vector, Fluent Bit, Loki.
    Ndjson,
    /// OTLP/HTTP JSON `ExportLogsServiceRequest` (`application/json`).
    #[default]
    OtlpJson,
}

/// How the authenticated subject appears in records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectMode {
    /// Keyed HMAC-SHA256 of the subject (hex): linkable across records, not
    /// reversible without the key.
    #[default]
    Pseudonym,
    /// The subject as the token states it. Only where the archive may hold it.
    Raw,
}

/// Backoff after a failed batch: `initial_ms`, doubled per consecutive failure, at
/// most `max_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First wait after a failure.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest wait.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}

/// Prefix lengths kept of the client IP (the rest is zeroed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpTruncation {
    /// IPv4 prefix bits kept (0..=32, default 24).
    #[serde(default = "default_v4_prefix")]
    pub v4_prefix: u8,
    /// IPv6 prefix bits kept (0..=128, default 48).
    #[serde(default = "default_v6_prefix")]
    pub v6_prefix: u8,
}

impl Default for IpTruncation {
    fn default() -> Self {
        IpTruncation { v4_prefix: default_v4_prefix(), v6_prefix: default_v6_prefix() }
    }
}

/// Retention class, in days, per record kind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDays {
    /// Default 90.
    #[serde(default = "days_90")]
    pub access: u32,
    /// Default 365.
    #[serde(default = "days_365")]
    pub authn_failure: u32,
    /// Default 2555 (7 years).
    #[serde(default = "days_7_years")]
    pub authz_decision: u32,
    /// Default 90.
    #[serde(default = "days_90")]
    pub rate_limited: u32,
    /// Default 2555 (7 years).
    #[serde(default = "days_7_years")]
    pub data_access: u32,
    /// Default 730 (2 years).
    #[serde(default = "days_2_years")]
    pub security_alert: u32,
    /// Default 2555 (7 years): which policy was in force is audit evidence.
    #[serde(default = "days_7_years")]
    pub config_loaded: u32,
    /// Default 90.
    #[serde(default = "days_90")]
    pub error: u32,
}

impl Default for RetentionDays {
    fn default() -> Self {
        RetentionDays {
            access: days_90(),
            authn_failure: days_365(),
            authz_decision: days_7_years(),
            rate_limited: days_90(),
            data_access: days_7_years(),
            security_alert: days_2_years(),
            config_loaded: days_7_years(),
            error: days_90(),
        }
    }
}

/// In-filter anomaly thresholds. Absent: that detector is off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// More than `max` authorization denials for one subject within
    /// `window_seconds` raise one `denial_burst` alert per window.
    #[serde(default)]
    pub denials_per_subject: Option<WindowThreshold>,
    /// More than `max` requests for one subject in a UTC day raise one
    /// `volume_anomaly` alert that day.
    #[serde(default)]
    pub requests_per_subject_per_day: Option<DailyThreshold>,
    /// Subjects tracked per worker; beyond it the oldest is forgotten.
    #[serde(default = "default_max_tracked_subjects")]
    pub max_tracked_subjects: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            denials_per_subject: None,
            requests_per_subject_per_day: None,
            max_tracked_subjects: default_max_tracked_subjects(),
        }
    }
}

/// A count allowed within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowThreshold {
    /// Events allowed in one window; the next one raises the alert.
    pub max: u64,
    /// Window length.
    pub window_seconds: u64,
}

/// A count allowed per UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyThreshold {
    /// Events allowed in one day; the next one raises the alert.
    pub max: u64,
}

fn default_path() -> String {
    "/v1/logs".to_string()
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_max_batch() -> usize {
    200
}
fn default_max_queue() -> usize {
    10_000
}
fn default_max_in_flight() -> usize {
    4
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_initial_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_v4_prefix() -> u8 {
    24
}
fn default_v6_prefix() -> u8 {
    48
}
fn days_90() -> u32 {
    90
}
fn days_365() -> u32 {
    365
}
fn days_2_years() -> u32 {
    730
}
fn days_7_years() -> u32 {
    2555
}
fn default_max_tracked_subjects() -> usize {
    10_000
}

/// Shortest pseudonym key accepted, in bytes.
pub const MIN_PSEUDONYM_KEY_BYTES: usize = 16;

impl AuditConfig {
    /// Structural checks; every error names its field under `audit.`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster.trim().is_empty() {
            return Err(ConfigError::invalid("audit.cluster", "must name the collector cluster"));
        }
        if let Some(authority) = &self.authority {
            if authority.trim().is_empty() {
                return Err(ConfigError::invalid("audit.authority", "must not be empty"));
            }
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::invalid("audit.path", "must start with `/`"));
        }
        positive("audit.flush_interval_ms", self.flush_interval_ms)?;
        positive("audit.max_batch", self.max_batch as u64)?;
        positive("audit.max_in_flight", self.max_in_flight as u64)?;
        positive("audit.timeout_ms", self.timeout_ms)?;
        if self.max_queue < self.max_batch {
            return Err(ConfigError::invalid(
                "audit.max_queue",
                format!("must be at least max_batch ({})", self.max_batch),
            ));
        }
        positive("audit.retry.initial_backoff_ms", self.retry.initial_backoff_ms)?;
        if self.retry.max_backoff_ms < self.retry.initial_backoff_ms {
            return Err(ConfigError::invalid(
                "audit.retry.max_backoff_ms",
                "must be at least initial_backoff_ms",
            ));
        }
        if self.subject_mode == SubjectMode::Pseudonym {
            match &self.pseudonym_key {
                None => {
                    return Err(ConfigError::invalid(
                        "audit.pseudonym_key",
                        "is required when subject_mode is \"pseudonym\"",
                    ))
                }
                Some(key) if key.len() < MIN_PSEUDONYM_KEY_BYTES => {
                    return Err(ConfigError::invalid(
                        "audit.pseudonym_key",
                        format!("must be at least {MIN_PSEUDONYM_KEY_BYTES} bytes"),
                    ))
                }
                Some(_) => {}
            }
        }
        if self.client_ip_truncation.v4_prefix > 32 {
            return Err(ConfigError::invalid(
                "audit.client_ip_truncation.v4_prefix",
                "must be between 0 and 32",
            ));
        }
        if self.client_ip_truncation.v6_prefix > 128 {
            return Err(ConfigError::invalid(
                "audit.client_ip_truncation.v6_prefix",
                "must be between 0 and 128",
            ));
        }
        let r = &self.retention_days;
        for (name, days) in [
            ("access", r.access),
            ("authn_failure", r.authn_failure),
            ("authz_decision", r.authz_decision),
            ("rate_limited", r.rate_limited),
            ("data_access", r.data_access),
            ("security_alert", r.security_alert),
            ("config_loaded", r.config_loaded),
            ("error", r.error),
        ] {
            positive(&format!("audit.retention_days.{name}"), u64::from(days))?;
        }
        if let Some(t) = &self.anomaly.denials_per_subject {
            positive("audit.anomaly.denials_per_subject.max", t.max)?;
            positive("audit.anomaly.denials_per_subject.window_seconds", t.window_seconds)?;
        }
        if let Some(t) = &self.anomaly.requests_per_subject_per_day {
            positive("audit.anomaly.requests_per_subject_per_day.max", t.max)?;
        }
        positive("audit.anomaly.max_tracked_subjects", self.anomaly.max_tracked_subjects as u64)?;
        Ok(())
    }

    /// The `:authority` to send batches with.
    pub fn authority(&self) -> &str {
        self.authority.as_deref().unwrap_or(&self.cluster)
    }
}

fn positive(field: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(field, "must be greater than 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Policy;

    fn audit_json(extra: &str) -> String {
        format!(
            r#"{{"audit": {{"cluster": "audit_collector", "pseudonym_key": "0123456789abcdef0123"{extra}}}}}"#
        )
    }

    #[test]
    fn minimal_section_gets_the_documented_defaults() {
        let policy = Policy::from_json(audit_json("").as_bytes()).unwrap();
        let audit = policy.audit.unwrap();
        assert_eq!(audit.authority(), "audit_collector");
        assert_eq!(audit.path, "/v1/logs");
        assert_eq!(audit.format, AuditFormat::OtlpJson);
        assert_eq!(
            (audit.flush_interval_ms, audit.max_batch, audit.max_queue, audit.timeout_ms),
            (1000, 200, 10_000, 2000)
        );
        assert_eq!(audit.retry, RetryConfig { initial_backoff_ms: 500, max_backoff_ms: 30_000 });
        assert_eq!(audit.subject_mode, SubjectMode::Pseudonym);
        assert_eq!(audit.client_ip_truncation, IpTruncation { v4_prefix: 24, v6_prefix: 48 });
        assert!(!audit.record_granted_authz);
        assert!(!audit.chain);
        let r = audit.retention_days;
        assert_eq!(
            (r.access, r.authz_decision, r.data_access, r.security_alert),
            (90, 2555, 2555, 730)
        );
        assert_eq!(audit.anomaly, AnomalyConfig::default());
    }

    #[test]
    fn formats_and_modes_parse_by_their_documented_names() {
        let policy = Policy::from_json(
            audit_json(r#", "format": "ndjson", "subject_mode": "raw""#).as_bytes(),
        )
        .unwrap();
        let audit = policy.audit.unwrap();
        assert_eq!(audit.format, AuditFormat::Ndjson);
        assert_eq!(audit.subject_mode, SubjectMode::Raw);
    }

    #[test]
    fn unknown_format_is_a_schema_error_naming_the_field() {
        let err = Policy::from_json(audit_json(r#", "format": "xml""#).as_bytes()).unwrap_err();
        assert!(matches!(err, ConfigError::Schema { .. }));
        assert_eq!(err.field(), "audit.format");
    }

    #[test]
    fn unknown_nested_field_is_named() {
        let err = Policy::from_json(audit_json(r#", "retry": {"initial_ms": 1}"#).as_bytes())
            .unwrap_err();
        assert_eq!(err.field(), "audit.retry.initial_ms");
    }

    #[test]
    fn invalid_values_name_their_field() {
        let cases: &[(&str, &str)] = &[
            (r#", "authority": """#, "audit.authority"),
            (r#", "path": "v1/logs""#, "audit.path"),
            (r#", "flush_interval_ms": 0"#, "audit.flush_interval_ms"),
            (r#", "max_batch": 0"#, "audit.max_batch"),
            (r#", "max_batch": 50, "max_queue": 49"#, "audit.max_queue"),
            (r#", "max_in_flight": 0"#, "audit.max_in_flight"),
            (r#", "timeout_ms": 0"#, "audit.timeout_ms"),
            (r#", "retry": {"initial_backoff_ms": 0}"#, "audit.retry.initial_backoff_ms"),
            (
                r#", "retry": {"initial_backoff_ms": 100, "max_backoff_ms": 99}"#,
                "audit.retry.max_backoff_ms",
            ),
            (
                r#", "client_ip_truncation": {"v4_prefix": 33}"#,
                "audit.client_ip_truncation.v4_prefix",
            ),
            (
                r#", "client_ip_truncation": {"v6_prefix": 129}"#,
                "audit.client_ip_truncation.v6_prefix",
            ),
            (r#", "retention_days": {"error": 0}"#, "audit.retention_days.error"),
            (
                r#", "anomaly": {"denials_per_subject": {"max": 0, "window_seconds": 60}}"#,
                "audit.anomaly.denials_per_subject.max",
            ),
            (
                r#", "anomaly": {"denials_per_subject": {"max": 5, "window_seconds": 0}}"#,
                "audit.anomaly.denials_per_subject.window_seconds",
            ),
            (
                r#", "anomaly": {"requests_per_subject_per_day": {"max": 0}}"#,
                "audit.anomaly.requests_per_subject_per_day.max",
            ),
            (r#", "anomaly": {"max_tracked_subjects": 0}"#, "audit.anomaly.max_tracked_subjects"),
        ];
        for (extra, field) in cases {
            let err = Policy::from_json(audit_json(extra).as_bytes())
                .err()
                .unwrap_or_else(|| panic!("{extra} was accepted"));
            assert!(matches!(err, ConfigError::Invalid { .. }), "{extra}: {err}");
            assert_eq!(err.field(), *field, "{extra}: {err}");
        }
    }

    #[test]
    fn blank_cluster_is_refused() {
        let err = Policy::from_json(br#"{"audit": {"cluster": " ", "subject_mode": "raw"}}"#)
            .unwrap_err();
        assert_eq!(err.field(), "audit.cluster");
    }

    #[test]
    fn pseudonym_mode_requires_a_long_enough_key() {
        let missing = Policy::from_json(br#"{"audit": {"cluster": "c"}}"#).unwrap_err();
        assert_eq!(missing.field(), "audit.pseudonym_key");
        let short = Policy::from_json(br#"{"audit": {"cluster": "c", "pseudonym_key": "short"}}"#)
            .unwrap_err();
        assert_eq!(short.field(), "audit.pseudonym_key");
        assert!(!short.to_string().contains("short\""), "the key must not be echoed: {short}");
        Policy::from_json(br#"{"audit": {"cluster": "c", "subject_mode": "raw"}}"#).unwrap();
    }
}
