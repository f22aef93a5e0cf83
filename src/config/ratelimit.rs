//! Schema of `rate_limits`, `rate_limit_settings`, `client_ip` and `lockout`.
//!
//! Only structure lives here (serde + std, see `config/mod.rs`); the engine
//! compiles it in `ratelimit::CompiledRateLimits` and `lockout::CompiledLockout`.

use super::{indexed, ConfigError, Policy};
use serde::Deserialize;
use std::collections::HashSet;

/// Largest bucket capacity: keeps the fixed-point arithmetic far from overflow.
pub const MAX_CAPACITY: u64 = 1_000_000_000;
/// Largest refill rate, in tokens per minute.
pub const MAX_REFILL_PER_MINUTE: f64 = 1_000_000_000.0;
/// Smallest refill rate: the fixed point counts thousandths of a token per minute.
pub const MIN_REFILL_PER_MINUTE: f64 = 0.001;
/// Largest shared-data table (slots) for buckets or lockout counters.
pub const MAX_TABLE_SLOTS: u32 = 1 << 24;
/// Longest limit name (it is echoed in headers and the 429 body).
pub const MAX_NAME_LEN: usize = 64;

/// One token bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Unique name, shown in the 429 body, `RateLimit` headers and metrics.
    /// Letters, digits, `.`, `_` and `-` only.
    pub name: String,
    /// What one bucket is kept per: `subject`, `client_ip`, `role`, `rule` or
    /// `header:NAME`. See [`KeySource`].
    pub key: String,
    /// Only callers holding one of these roles are limited; empty: everyone.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Only requests matching one of these RBAC rule ids are limited; empty: all.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Burst size: tokens a full bucket holds.
    pub capacity: u64,
    /// Tokens added per minute (fractions allowed, down to 0.001).
    pub refill_per_minute: f64,
    /// What a request costs.
    #[serde(default)]
    pub cost: CostKind,
}

/// What a request takes from a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostKind {
    /// One token per request, taken when the request is admitted.
    #[default]
    Request,
    /// The tokens the LLM response reports (`usage.total_tokens`), charged after
    /// the response; a request is admitted while the bucket holds one token.
    ResponseTokens,
}

/// The parsed `key` of a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The verified `sub` claim.
    Subject,
    /// The client address (see `client_ip`).
    ClientIp,
    /// One bucket per role the caller holds.
    Role,
    /// The id of the RBAC rule that matched.
    Rule,
    /// A request header's value; the name is stored lower-case.
    Header(String),
}

impl KeySource {
    /// Parses `subject`, `client_ip`, `role`, `rule` or `header:NAME`.
    pub fn parse(text: &str) -> Result<KeySource, String> {
        match text {
            "subject" => Ok(KeySource::Subject),
            "client_ip" => Ok(KeySource::ClientIp),
            "role" => Ok(KeySource::Role),
            "rule" => Ok(KeySource::Rule),
            other => match other.strip_prefix("header:") {
                Some("") => Err("`header:` needs a header name, e.g. `header:x-api-key`".into()),
                Some(name) if name.bytes().all(is_header_name_byte) => {
                    Ok(KeySource::Header(name.to_ascii_lowercase()))
                }
                Some(_) => Err("header name may contain only letters, digits and !#$%&'*+-.^_`|~".into()),
                None => Err(format!(
                    "unknown key `{other}`: expected subject, client_ip, role, rule or header:NAME"
                )),
            },
        }
    }
}

/// RFC 9110 `tchar`.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether limits deny or only count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitMode {
    /// Over-limit requests get 429.
    #[default]
    Enforce,
    /// Over-limit requests are counted and logged, then served.
    Shadow,
}

/// Options shared by every bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// `enforce` (default) or `shadow`.
    #[serde(default)]
    pub mode: RateLimitMode,
    /// Add `RateLimit-Policy` / `RateLimit` headers to allowed responses too
    /// (429s always carry them).
    #[serde(default)]
    pub response_headers: bool,
    /// How many times a bucket update is retried when another worker wrote it
    /// first; past that the request fails closed.
    #[serde(default = "default_max_cas_retries")]
    pub max_cas_retries: u32,
    /// Number of shared-data slots holding buckets: the memory bound.
    #[serde(default = "default_rate_slots")]
    pub table_slots: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            mode: RateLimitMode::Enforce,
            response_headers: false,
            max_cas_retries: default_max_cas_retries(),
            table_slots: default_rate_slots(),
        }
    }
}

fn default_max_cas_retries() -> u32 {
    8
}

fn default_rate_slots() -> u32 {
    16_384
}

fn default_lockout_slots() -> u32 {
    4_096
}

/// How the client IP is determined.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIpConfig {
    /// How many X-Forwarded-For entries, counted from the right, were added by
    /// proxies we trust. 0: use the downstream address and ignore the header.
    #[serde(default)]
    pub xff_trusted_hops: u32,
}

/// What failures are counted per.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockoutKey {
    /// The client address.
    #[default]
    ClientIp,
    /// The subject the failed token claimed (unverified: the engine decides).
    Subject,
}

/// Failed-authentication lockout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutConfig {
    /// Failures within `window_seconds` that start a lock (the failure that
    /// reaches this number locks).
    pub max_failures: u32,
    /// Length of the sliding window failures are counted in.
    pub window_seconds: u64,
    /// How long a lock lasts; successful authentications do not shorten it.
    pub lock_seconds: u64,
    /// `client_ip` (default) or `subject`.
    #[serde(default)]
    pub key: LockoutKey,
    /// Number of shared-data slots holding counters: the memory bound.
    #[serde(default = "default_lockout_slots")]
    pub table_slots: u32,
}

/// Structural checks of the rate and lockout sections.
///
/// Whether `roles` / `rules` name things the RBAC section declares is checked by
/// [`validate_references`], which the RBAC-aware caller runs.
pub fn validate(policy: &Policy) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, limit) in policy.rate_limits.iter().enumerate() {
        let at = indexed("rate_limits", i);
        validate_limit(limit, &at)?;
        if !names.insert(limit.name.as_str()) {
            return Err(ConfigError::invalid(
                format!("{at}.name"),
                format!("duplicate limit name `{}`: names must be unique", limit.name),
            ));
        }
    }
    let settings = &policy.rate_limit_settings;
    if settings.max_cas_retries > 100 {
        return Err(ConfigError::invalid(
            "rate_limit_settings.max_cas_retries",
            "must be at most 100",
        ));
    }
    validate_slots(settings.table_slots, "rate_limit_settings.table_slots")?;
    if let Some(lockout) = &policy.lockout {
        validate_lockout(lockout)?;
    }
    Ok(())
}

fn validate_limit(limit: &RateLimitConfig, at: &str) -> Result<(), ConfigError> {
    let name = &limit.name;
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ConfigError::invalid(
            format!("{at}.name"),
            format!("must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(ConfigError::invalid(
            format!("{at}.name"),
            "may contain only letters, digits, `.`, `_` and `-`",
        ));
    }
    KeySource::parse(&limit.key).map_err(|m| ConfigError::invalid(format!("{at}.key"), m))?;
    for (field, list) in [("roles", &limit.roles), ("rules", &limit.rules)] {
        for (j, item) in list.iter().enumerate() {
            if item.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.{field}[{j}]"),
                    "must not be empty",
                ));
            }
        }
    }
    if limit.capacity == 0 || limit.capacity > MAX_CAPACITY {
        return Err(ConfigError::invalid(
            format!("{at}.capacity"),
            format!("must be between 1 and {MAX_CAPACITY}"),
        ));
    }
    let refill = limit.refill_per_minute;
    if !refill.is_finite() || !(MIN_REFILL_PER_MINUTE..=MAX_REFILL_PER_MINUTE).contains(&refill) {
        return Err(ConfigError::invalid(
            format!("{at}.refill_per_minute"),
            format!(
                "must be between {MIN_REFILL_PER_MINUTE} and {MAX_REFILL_PER_MINUTE} tokens per minute"
            ),
        ));
    }
    Ok(())
}

fn validate_slots(slots: u32, field: &str) -> Result<(), ConfigError> {
    if slots == 0 || slots > MAX_TABLE_SLOTS {
        return Err(ConfigError::invalid(field, format!("must be between 1 and {MAX_TABLE_SLOTS}")));
    }
    Ok(())
}

fn validate_lockout(lockout: &LockoutConfig) -> Result<(), ConfigError> {
    if lockout.max_failures == 0 || lockout.max_failures > 1_000_000 {
        return Err(ConfigError::invalid("lockout.max_failures", "must be between 1 and 1000000"));
    }
    // A year bounds the millisecond arithmetic and catches unit mistakes.
    const YEAR: u64 = 366 * 86_400;
    if lockout.window_seconds == 0 || lockout.window_seconds > YEAR {
        return Err(ConfigError::invalid(
            "lockout.window_seconds",
            format!("must be between 1 and {YEAR}"),
        ));
    }
    if lockout.lock_seconds == 0 || lockout.lock_seconds > YEAR {
        return Err(ConfigError::invalid(
            "lockout.lock_seconds",
            format!("must be between 1 and {YEAR}"),
        ));
    }
    validate_slots(lockout.table_slots, "lockout.table_slots")
}

/// Checks that every `roles` / `rules` entry of every limit names a role / rule
/// the RBAC section declares. Called by whoever knows the RBAC schema.
pub fn validate_references(
    limits: &[RateLimitConfig],
    is_role: &dyn Fn(&str) -> bool,
    is_rule: &dyn Fn(&str) -> bool,
) -> Result<(), ConfigError> {
    for (i, limit) in limits.iter().enumerate() {
        for (j, role) in limit.roles.iter().enumerate() {
            if !is_role(role) {
                return Err(ConfigError::invalid(
                    format!("rate_limits[{i}].roles[{j}]"),
                    format!("no role `{role}` in rbac.roles"),
                ));
            }
        }
        for (j, rule) in limit.rules.iter().enumerate() {
            if !is_rule(rule) {
                return Err(ConfigError::invalid(
                    format!("rate_limits[{i}].rules[{j}]"),
                    format!("no rule `{rule}` in rbac.rules"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Result<Policy, ConfigError> {
        Policy::from_json(json.as_bytes())
    }

    fn limit(fields: &str) -> String {
        format!(r#"{{"rate_limits": [{{{fields}}}]}}"#)
    }

    #[test]
    fn issue_example_parses_with_defaults() {
        let p = policy(
            r#"{ "rate_limits": [
                { "name": "per-user", "key": "subject", "capacity": 60, "refill_per_minute": 60 },
                { "name": "anonymous", "key": "client_ip", "roles": ["public"], "capacity": 10, "refill_per_minute": 10 },
                { "name": "chat", "key": "subject", "rules": ["chat"], "capacity": 20, "refill_per_minute": 20 },
                { "name": "llm-tokens", "key": "subject", "cost": "response_tokens", "capacity": 50000, "refill_per_minute": 2000 }
              ],
              "client_ip": { "xff_trusted_hops": 0 },
              "lockout": { "max_failures": 5, "window_seconds": 300, "lock_seconds": 900, "key": "client_ip" } }"#,
        )
        .unwrap();
        assert_eq!(p.rate_limits.len(), 4);
        assert_eq!(p.rate_limits[3].cost, CostKind::ResponseTokens);
        assert_eq!(p.rate_limits[0].cost, CostKind::Request);
        assert_eq!(p.rate_limit_settings.mode, RateLimitMode::Enforce);
        assert_eq!(p.rate_limit_settings.max_cas_retries, 8);
        assert_eq!(p.rate_limit_settings.table_slots, 16_384);
        let lockout = p.lockout.unwrap();
        assert_eq!(lockout.key, LockoutKey::ClientIp);
        assert_eq!(lockout.table_slots, 4_096);
    }

    #[test]
    fn key_sources_parse() {
        let cases: &[(&str, Result<KeySource, ()>)] = &[
            ("subject", Ok(KeySource::Subject)),
            ("client_ip", Ok(KeySource::ClientIp)),
            ("role", Ok(KeySource::Role)),
            ("rule", Ok(KeySource::Rule)),
            ("header:X-Api-Key", Ok(KeySource::Header("x-api-key".into()))),
            ("header:", Err(())),
            ("header:bad name", Err(())),
            ("Subject", Err(())),
            ("ip", Err(())),
        ];
        for (text, want) in cases {
            assert_eq!(KeySource::parse(text).map_err(|_| ()), *want, "{text}");
        }
    }

    #[test]
    fn each_invalid_limit_names_its_field() {
        let ok = r#""name": "a", "key": "subject", "capacity": 1, "refill_per_minute": 1"#;
        let cases: &[(&str, &str)] = &[
            (r#""name": "", "key": "subject", "capacity": 1, "refill_per_minute": 1"#, "rate_limits[0].name"),
            (r#""name": "a b", "key": "subject", "capacity": 1, "refill_per_minute": 1"#, "rate_limits[0].name"),
            (r#""name": "a\"", "key": "subject", "capacity": 1, "refill_per_minute": 1"#, "rate_limits[0].name"),
            (r#""name": "a", "key": "header:", "capacity": 1, "refill_per_minute": 1"#, "rate_limits[0].key"),
            (r#""name": "a", "key": "sub", "capacity": 1, "refill_per_minute": 1"#, "rate_limits[0].key"),
            (r#""name": "a", "key": "subject", "capacity": 0, "refill_per_minute": 1"#, "rate_limits[0].capacity"),
            (r#""name": "a", "key": "subject", "capacity": 1000000001, "refill_per_minute": 1"#, "rate_limits[0].capacity"),
            (r#""name": "a", "key": "subject", "capacity": 1, "refill_per_minute": 0"#, "rate_limits[0].refill_per_minute"),
            (r#""name": "a", "key": "subject", "capacity": 1, "refill_per_minute": -1"#, "rate_limits[0].refill_per_minute"),
            (r#""name": "a", "key": "subject", "capacity": 1, "refill_per_minute": 0.0001"#, "rate_limits[0].refill_per_minute"),
            (r#""name": "a", "key": "subject", "roles": [""], "capacity": 1, "refill_per_minute": 1"#, "rate_limits[0].roles[0]"),
            (r#""name": "a", "key": "subject", "rules": ["x", ""], "capacity": 1, "refill_per_minute": 1"#, "rate_limits[0].rules[1]"),
        ];
        assert!(policy(&limit(ok)).is_ok());
        for (fields, field) in cases {
            let err = policy(&limit(fields)).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }), "{fields}: {err}");
            assert_eq!(err.field(), *field, "{fields}: {err}");
        }
    }

    #[test]
    fn schema_errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"rate_limits": [{"name": "a", "key": "subject", "capacity": 1, "refill_per_minute": 1, "cost": "bytes"}]}"#, "rate_limits[0].cost"),
            (r#"{"rate_limits": [{"name": "a", "key": "subject", "capacity": 1, "refill_per_minute": 1, "burst": 2}]}"#, "rate_limits[0].burst"),
            (r#"{"rate_limits": [{"name": "a", "key": "subject", "capacity": 1}]}"#, "rate_limits[0]"),
            (r#"{"rate_limit_settings": {"mode": "dry_run"}}"#, "rate_limit_settings.mode"),
            (r#"{"lockout": {"max_failures": 5, "window_seconds": 1, "lock_seconds": 1, "key": "role"}}"#, "lockout.key"),
        ];
        for (json, field) in cases {
            let err = policy(json).unwrap_err();
            assert!(matches!(err, ConfigError::Schema { .. }), "{json}: {err}");
            assert_eq!(err.field(), *field, "{json}: {err}");
        }
    }

    #[test]
    fn duplicate_names_are_refused() {
        let one = r#"{"name": "a", "key": "subject", "capacity": 1, "refill_per_minute": 1}"#;
        let err = policy(&format!(r#"{{"rate_limits": [{one}, {one}]}}"#)).unwrap_err();
        assert_eq!(err.field(), "rate_limits[1].name");
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn invalid_settings_and_lockout_name_their_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"rate_limit_settings": {"table_slots": 0}}"#, "rate_limit_settings.table_slots"),
            (r#"{"rate_limit_settings": {"max_cas_retries": 101}}"#, "rate_limit_settings.max_cas_retries"),
            (r#"{"lockout": {"max_failures": 0, "window_seconds": 1, "lock_seconds": 1}}"#, "lockout.max_failures"),
            (r#"{"lockout": {"max_failures": 1, "window_seconds": 0, "lock_seconds": 1}}"#, "lockout.window_seconds"),
            (r#"{"lockout": {"max_failures": 1, "window_seconds": 1, "lock_seconds": 0}}"#, "lockout.lock_seconds"),
            (r#"{"lockout": {"max_failures": 1, "window_seconds": 1, "lock_seconds": 1, "table_slots": 0}}"#, "lockout.table_slots"),
        ];
        for (json, field) in cases {
            let err = policy(json).unwrap_err();
            assert_eq!(err.field(), *field, "{json}: {err}");
        }
    }

    #[test]
    fn references_to_unknown_roles_and_rules_are_named() {
        let p = policy(&limit(
            r#""name": "a", "key": "subject", "roles": ["public", "ghost"], "rules": ["chat"], "capacity": 1, "refill_per_minute": 1"#,
        ))
        .unwrap();
        let roles = |r: &str| r == "public";
        let rules = |r: &str| r == "chat";
        let none = |_: &str| false;
        assert_eq!(
            validate_references(&p.rate_limits, &roles, &rules).unwrap_err().field(),
            "rate_limits[0].roles[1]"
        );
        let all = |_: &str| true;
        assert_eq!(
            validate_references(&p.rate_limits, &all, &none).unwrap_err().field(),
            "rate_limits[0].rules[0]"
        );
        validate_references(&p.rate_limits, &all, &all).unwrap();
    }
}
