//! The policy schema and its structural validation.
//!
//! Everything in `src/config/` depends on serde and std only, because `build.rs`
//! includes these files to validate the compiled-in default policy: a policy that
//! would be refused at load also fails the build. Checks that need crypto (JWK key
//! material) run when the engine compiles the policy (`engine::CompiledPolicy`).
//!
//! Every error names the field it is about, as a JSON path such as
//! `jwt.providers[0].issuer`, so an operator can act on it.

use serde::Deserialize;
use std::fmt;

pub mod audit;
pub mod jwt;
pub mod pii;
pub mod ratelimit;
pub mod rbac;
pub mod rbac_matrix;

pub use self::audit::AuditConfig;
pub use self::jwt::JwtConfig;
pub use self::pii::PiiConfig;
pub use self::ratelimit::{ClientIpConfig, LockoutConfig, RateLimitConfig, RateLimitSettings};
pub use self::rbac::RbacConfig;

/// The whole policy: the compiled-in default (`policy/default.json`) or Envoy's
/// plugin `configuration`, which replaces it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Free text shown in logs and `config_loaded` records.
    #[serde(default)]
    pub description: Option<String>,
    /// JWT providers (authentication).
    #[serde(default)]
    pub jwt: JwtConfig,
    /// The RBAC matrix and route rules (authorization).
    #[serde(default)]
    pub rbac: Option<RbacConfig>,
    /// Token buckets.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
    /// Options shared by all buckets (mode, response headers).
    #[serde(default)]
    pub rate_limit_settings: RateLimitSettings,
    /// How the client IP is found.
    #[serde(default)]
    pub client_ip: ClientIpConfig,
    /// Failed-authentication lockout.
    #[serde(default)]
    pub lockout: Option<LockoutConfig>,
    /// PII and secret redaction.
    #[serde(default)]
    pub pii: Option<PiiConfig>,
    /// Audit records and their transport.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
}

/// Why a policy was refused. The message names the field.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The bytes are not UTF-8 JSON, or do not fit the schema (unknown field,
    /// wrong type, missing required field).
    Schema { field: String, message: String },
    /// A value fits the schema but breaks a rule of its own.
    Invalid { field: String, message: String },
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { field: field.into(), message: message.into() }
    }

    /// The JSON path of the offending field (`.` for the document itself).
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Schema { field, .. } | ConfigError::Invalid { field, .. } => field,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Schema { field, message } => {
                write!(f, "policy field `{field}`: {message}")
            }
            ConfigError::Invalid { field, message } => {
                write!(f, "policy field `{field}`: {message}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl Policy {
    /// Parses a policy document and runs every structural check.
    pub fn from_json(bytes: &[u8]) -> Result<Policy, ConfigError> {
        let policy = parse_json(bytes)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Runs the structural checks of every section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.jwt.validate()?;
        if let Some(rbac) = &self.rbac {
            rbac.validate()?;
        }
        ratelimit::validate(self)?;
        if let Some(pii) = &self.pii {
            pii.validate()?;
        }
        if let Some(audit) = &self.audit {
            audit.validate()?;
        }
        Ok(())
    }
}

/// Deserialises `bytes` as a `Policy`, naming the field on a schema error.
///
/// The document is parsed to a `serde_json::Value` first and the schema is
/// applied to that: the path-tracking deserializer then wraps the small `Value`
/// deserializer instead of the byte parser, which keeps the wasm module small.
fn parse_json(bytes: &[u8]) -> Result<Policy, ConfigError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|err| ConfigError::Schema { field: ".".into(), message: format!("not valid JSON: {err}") })?;
    duplicates::check(bytes)?;
    serde_path_to_error::deserialize(value).map_err(|err| ConfigError::Schema {
        field: err.path().to_string(),
        message: err.into_inner().to_string(),
    })
}

/// A `Value` keeps the last of two equal keys silently; a policy with a role or
/// provider written twice is a mistake the operator must hear about.
mod duplicates {
    use super::ConfigError;
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::collections::HashSet;
    use std::fmt;

    /// Refuses the first object with a repeated key, naming its path.
    pub fn check(bytes: &[u8]) -> Result<(), ConfigError> {
        let mut path = Vec::new();
        let mut found = None;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let _ = Walk { path: &mut path, found: &mut found }.deserialize(&mut de);
        match found {
            Some((field, key)) => Err(ConfigError::Schema { field, message: format!("duplicate key `{key}`") }),
            None => Ok(()),
        }
    }

    struct Walk<'a> {
        path: &'a mut Vec<String>,
        found: &'a mut Option<(String, String)>,
    }

    fn render(path: &[String]) -> String {
        let mut out = String::new();
        for seg in path {
            if !seg.starts_with('[') && !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
        if out.is_empty() {
            out.push('.');
        }
        out
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) && self.found.is_none() {
                    *self.found = Some((render(self.path), key.clone()));
                }
                self.path.push(key);
                map.next_value_seed(Walk { path: self.path, found: self.found })?;
                self.path.pop();
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0usize;
            loop {
                self.path.push(format!("[{i}]"));
                let more = seq.next_element_seed(Walk { path: self.path, found: self.found })?;
                self.path.pop();
                if more.is_none() {
                    return Ok(());
                }
                i += 1;
            }
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
}

/// Formats `prefix[index]` for error paths.
pub fn indexed(prefix: &str, index: usize) -> String {
    format!("{prefix}[{index}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_a_valid_policy() {
        let policy = Policy::from_json(b"{}").unwrap();
        assert!(policy.jwt.providers.is_empty());
    }

    #[test]
    fn unknown_top_level_field_is_named() {
        let err = Policy::from_json(br#"{"jwtt": {}}"#).unwrap_err();
        assert!(matches!(err, ConfigError::Schema { .. }));
        assert!(err.to_string().contains("jwtt"), "{err}");
    }

    #[test]
    fn nested_unknown_field_is_named_with_its_path() {
        let err = Policy::from_json(br#"{"jwt": {"providers": [{"name": "a", "isuer": "x"}]}}"#)
            .unwrap_err();
        assert_eq!(err.field(), "jwt.providers[0].isuer");
        assert!(err.to_string().contains("isuer"), "{err}");
    }

    #[test]
    fn not_json_is_a_schema_error() {
        let err = Policy::from_json(b"{not json").unwrap_err();
        assert!(matches!(err, ConfigError::Schema { .. }));
    }

    #[test]
    fn default_policy_passes_structural_validation() {
        let bytes = include_bytes!("../../policy/default.json");
        Policy::from_json(bytes).unwrap();
    }
}
