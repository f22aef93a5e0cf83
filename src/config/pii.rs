//! Schema of the `pii` section: which entities are redacted, how, and in which bodies.

use super::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The entity names the redactor knows, in Presidio's spelling.
pub const ENTITY_NAMES: [&str; 7] = [
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "SECRET",
];

/// Default for `max_body_bytes`: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Longest `keep_last` accepted: a mask that keeps more than this is not a mask.
pub const MAX_KEEP_LAST: usize = 32;

/// Shortest `hash_key` accepted, in bytes: shorter keys make pseudonyms guessable.
pub const MIN_HASH_KEY_BYTES: usize = 16;

/// PII and secret redaction of request and response bodies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiConfig {
    /// Redact request bodies (towards the upstream / model).
    #[serde(default = "yes")]
    pub request: bool,
    /// Redact response bodies (towards the client).
    #[serde(default = "yes")]
    pub response: bool,
    /// Entity types to detect (Presidio names). Default: all of them.
    #[serde(default = "all_entities")]
    pub entities: Vec<String>,
    /// What replaces a finding: `default`, overridden per entity name.
    #[serde(default)]
    pub operators: BTreeMap<String, OperatorConfig>,
    /// HMAC-SHA256 key for the `hash` operator (at least 16 bytes). Required when
    /// any operator is `hash`.
    #[serde(default)]
    pub hash_key: Option<String>,
    /// Callers holding this permission get unredacted responses.
    #[serde(default)]
    pub exempt_permission: Option<String>,
    /// Largest non-streamed body that is buffered whole.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Content types that are inspected; `type/*` matches a whole family. Others
    /// pass untouched (and are counted).
    #[serde(default = "default_content_types")]
    pub content_types: Vec<String>,
}

/// One operator: what a finding is rewritten to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// `replace`, `mask`, `hash` or `remove`.
    #[serde(rename = "type")]
    pub kind: OperatorKind,
    /// `mask` only: the character written over the value (default `*`).
    #[serde(default)]
    pub mask_char: Option<char>,
    /// `mask` only: how many trailing letters/digits stay readable (default 0).
    #[serde(default)]
    pub keep_last: Option<usize>,
}

/// The operator types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorKind {
    /// `<ENTITY>`.
    Replace,
    /// Letters and digits overwritten by `mask_char`, separators kept.
    Mask,
    /// `<ENTITY:8 hex>`: keyed HMAC-SHA256 pseudonym, stable per deployment key.
    Hash,
    /// The value disappears.
    Remove,
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig {
            request: true,
            response: true,
            entities: all_entities(),
            operators: BTreeMap::new(),
            hash_key: None,
            exempt_permission: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            content_types: default_content_types(),
        }
    }
}

fn yes() -> bool {
    true
}

fn all_entities() -> Vec<String> {
    ENTITY_NAMES.iter().map(|s| (*s).to_string()).collect()
}

fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

fn default_content_types() -> Vec<String> {
    ["application/json", "text/*", "text/event-stream", "application/x-www-form-urlencoded"]
        .iter()
        .map(|s| (*s).to_string())
        .collect()
}

impl PiiConfig {
    /// Structural checks; each error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, name) in self.entities.iter().enumerate() {
            let field = format!("pii.entities[{i}]");
            if !ENTITY_NAMES.contains(&name.as_str()) {
                return Err(ConfigError::invalid(
                    field,
                    format!("unknown entity `{name}`; known: {}", ENTITY_NAMES.join(", ")),
                ));
            }
            if self.entities[..i].contains(name) {
                return Err(ConfigError::invalid(field, format!("entity `{name}` is listed twice")));
            }
        }
        let mut uses_hash = false;
        for (key, op) in &self.operators {
            let field = format!("pii.operators.{key}");
            if key != "default" && !ENTITY_NAMES.contains(&key.as_str()) {
                return Err(ConfigError::invalid(
                    field,
                    "expected `default` or an entity name such as `CREDIT_CARD`",
                ));
            }
            op.validate(&field)?;
            uses_hash |= op.kind == OperatorKind::Hash;
        }
        match &self.hash_key {
            Some(key) if key.len() < MIN_HASH_KEY_BYTES => {
                return Err(ConfigError::invalid(
                    "pii.hash_key",
                    format!("must be at least {MIN_HASH_KEY_BYTES} bytes"),
                ));
            }
            None if uses_hash => {
                return Err(ConfigError::invalid(
                    "pii.hash_key",
                    "required because an operator has type `hash`",
                ));
            }
            _ => {}
        }
        if let Some(p) = &self.exempt_permission {
            if p.is_empty() {
                return Err(ConfigError::invalid("pii.exempt_permission", "must not be empty"));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::invalid("pii.max_body_bytes", "must be greater than 0"));
        }
        for (i, ct) in self.content_types.iter().enumerate() {
            if !is_media_range(ct) {
                return Err(ConfigError::invalid(
                    format!("pii.content_types[{i}]"),
                    "expected `type/subtype` or `type/*` in lower case, without parameters",
                ));
            }
        }
        Ok(())
    }
}

impl OperatorConfig {
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.kind != OperatorKind::Mask {
            if self.mask_char.is_some() {
                return Err(ConfigError::invalid(
                    format!("{field}.mask_char"),
                    "only allowed with type `mask`",
                ));
            }
            if self.keep_last.is_some() {
                return Err(ConfigError::invalid(
                    format!("{field}.keep_last"),
                    "only allowed with type `mask`",
                ));
            }
        }
        if let Some(c) = self.mask_char {
            // The mask lands inside JSON strings and form values: keep it a plain
            // printable ASCII character that needs no escaping anywhere.
            if !c.is_ascii_graphic() || matches!(c, '"' | '\\' | '&' | '=' | '%' | '+') {
                return Err(ConfigError::invalid(
                    format!("{field}.mask_char"),
                    "must be a printable ASCII character other than \" \\ & = % +",
                ));
            }
        }
        if let Some(n) = self.keep_last {
            if n > MAX_KEEP_LAST {
                return Err(ConfigError::invalid(
                    format!("{field}.keep_last"),
                    format!("must be at most {MAX_KEEP_LAST}"),
                ));
            }
        }
        Ok(())
    }
}

/// `type/subtype` or `type/*`: lower-case token characters, no parameters.
fn is_media_range(s: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$&-^_.+".contains(&b))
    };
    match s.split_once('/') {
        Some((ty, sub)) => token(ty) && (sub == "*" || token(sub)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Policy;

    fn err(json: &str) -> ConfigError {
        Policy::from_json(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn defaults_cover_every_entity_and_the_usual_content_types() {
        let p = Policy::from_json(br#"{"pii": {}}"#).unwrap().pii.unwrap();
        assert!(p.request && p.response);
        assert_eq!(p.entities.len(), 7);
        assert_eq!(p.max_body_bytes, 1 << 20);
        assert!(p.content_types.iter().any(|c| c == "text/*"));
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            (r#"{"pii": {"entities": ["EMAIL"]}}"#, "pii.entities[0]"),
            (r#"{"pii": {"entities": ["US_SSN", "US_SSN"]}}"#, "pii.entities[1]"),
            (r#"{"pii": {"operators": {"EMAIL": {"type": "replace"}}}}"#, "pii.operators.EMAIL"),
            (r#"{"pii": {"operators": {"default": {"type": "hash"}}}}"#, "pii.hash_key"),
            (r#"{"pii": {"hash_key": "short"}}"#, "pii.hash_key"),
            (
                r#"{"pii": {"operators": {"default": {"type": "replace", "keep_last": 4}}}}"#,
                "pii.operators.default.keep_last",
            ),
            (
                r#"{"pii": {"operators": {"CREDIT_CARD": {"type": "mask", "mask_char": "\""}}}}"#,
                "pii.operators.CREDIT_CARD.mask_char",
            ),
            (
                r#"{"pii": {"operators": {"CREDIT_CARD": {"type": "mask", "keep_last": 99}}}}"#,
                "pii.operators.CREDIT_CARD.keep_last",
            ),
            (r#"{"pii": {"max_body_bytes": 0}}"#, "pii.max_body_bytes"),
            (r#"{"pii": {"content_types": ["json"]}}"#, "pii.content_types[0]"),
            (r#"{"pii": {"content_types": ["Text/Plain"]}}"#, "pii.content_types[0]"),
            (r#"{"pii": {"exempt_permission": ""}}"#, "pii.exempt_permission"),
        ];
        for (json, field) in cases {
            let e = err(json);
            assert!(matches!(e, ConfigError::Invalid { .. }), "{json}: {e}");
            assert_eq!(e.field(), field, "{json}: {e}");
        }
    }

    #[test]
    fn unknown_operator_type_is_a_schema_error_naming_the_field() {
        let e = err(r#"{"pii": {"operators": {"default": {"type": "encrypt"}}}}"#);
        assert!(matches!(e, ConfigError::Schema { .. }));
        assert_eq!(e.field(), "pii.operators.default.type");
    }
}
