//! Operators: what a finding is rewritten to.

use super::entity::Entity;
use crate::config::pii::{OperatorConfig, OperatorKind, PiiConfig};
use crate::config::ConfigError;

/// One compiled operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operator {
    /// Which rewrite.
    pub kind: OperatorKind,
    /// `mask`: the byte written over letters and digits.
    pub mask_char: u8,
    /// `mask`: trailing letters and digits left readable.
    pub keep_last: usize,
}

impl Operator {
    /// `replace`, the default.
    pub const REPLACE: Operator = Operator { kind: OperatorKind::Replace, mask_char: b'*', keep_last: 0 };

    fn from_config(c: &OperatorConfig) -> Operator {
        Operator {
            kind: c.kind,
            // validate() admits printable ASCII only.
            mask_char: c.mask_char.and_then(|ch| u8::try_from(ch).ok()).unwrap_or(b'*'),
            keep_last: c.keep_last.unwrap_or(0),
        }
    }
}

/// The operator of every entity, and the hash key.
#[derive(Clone)]
pub struct Operators {
    per_entity: [Operator; 7],
    hash_key: Vec<u8>,
}

impl std::fmt::Debug for Operators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Operators").field("per_entity", &self.per_entity).finish_non_exhaustive()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Operators {
    /// Compiles the `operators` and `hash_key` fields.
    pub fn compile(cfg: &PiiConfig) -> Result<Operators, ConfigError> {
        let default = cfg.operators.get("default").map(Operator::from_config).unwrap_or(Operator::REPLACE);
        let mut per_entity = [default; 7];
        for e in Entity::ALL {
            if let (Some(c), Some(slot)) = (cfg.operators.get(e.name()), per_entity.get_mut(e.index())) {
                *slot = Operator::from_config(c);
            }
        }
        let hash_key = cfg.hash_key.as_deref().unwrap_or("").as_bytes().to_vec();
        if hash_key.is_empty() && per_entity.iter().any(|o| o.kind == OperatorKind::Hash) {
            return Err(ConfigError::invalid("pii.hash_key", "required because an operator has type `hash`"));
        }
        Ok(Operators { per_entity, hash_key })
    }

    /// The operator for `e`.
    pub fn get(&self, e: Entity) -> Operator {
        self.per_entity.get(e.index()).copied().unwrap_or(Operator::REPLACE)
    }

    /// Appends the rewrite of `value` (an `e`) to `out`.
    pub fn render(&self, e: Entity, value: &[u8], out: &mut Vec<u8>) {
        let op = self.get(e);
        match op.kind {
            OperatorKind::Replace => {
                out.push(b'<');
                out.extend_from_slice(e.name().as_bytes());
                out.push(b'>');
            }
            OperatorKind::Hash => {
                let mac = hmac_sha256::HMAC::mac(value, &self.hash_key);
                out.push(b'<');
                out.extend_from_slice(e.name().as_bytes());
                out.push(b':');
                for &byte in mac.iter().take(4) {
                    out.push(HEX[usize::from(byte >> 4)]);
                    out.push(HEX[usize::from(byte & 15)]);
                }
                out.push(b'>');
            }
            OperatorKind::Mask => {
                let alnum = value.iter().filter(|c| c.is_ascii_alphanumeric()).count();
                let mut to_mask = alnum.saturating_sub(op.keep_last);
                for &c in value {
                    if c.is_ascii_alphanumeric() && to_mask > 0 {
                        out.push(op.mask_char);
                        to_mask -= 1;
                    } else {
                        out.push(c);
                    }
                }
            }
            OperatorKind::Remove => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(json: &str) -> Operators {
        let p = crate::config::Policy::from_json(json.as_bytes()).unwrap().pii.unwrap();
        Operators::compile(&p).unwrap()
    }

    fn render(o: &Operators, e: Entity, v: &str) -> String {
        let mut out = Vec::new();
        o.render(e, v.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn each_operator_renders_as_documented() {
        let o = ops(
            r##"{"pii": {"hash_key": "0123456789abcdef0123",
                "operators": {"default": {"type": "replace"},
                              "CREDIT_CARD": {"type": "mask", "keep_last": 4},
                              "US_SSN": {"type": "mask", "mask_char": "#"},
                              "EMAIL_ADDRESS": {"type": "hash"},
                              "SECRET": {"type": "remove"}}}}"##,
        );
        assert_eq!(render(&o, Entity::PhoneNumber, "555-123-4567"), "<PHONE_NUMBER>");
        assert_eq!(render(&o, Entity::CreditCard, "4111 1111 1111 1111"), "**** **** **** 1111");
        assert_eq!(render(&o, Entity::UsSsn, "123-45-6789"), "###-##-####");
        assert_eq!(render(&o, Entity::Secret, "AKIAIOSFODNN7EXAMPLE"), "");
        let h1 = render(&o, Entity::EmailAddress, "jane@example.com");
        let h2 = render(&o, Entity::EmailAddress, "jane@example.com");
        let h3 = render(&o, Entity::EmailAddress, "john@example.com");
        assert_eq!(h1, h2);
        assert_ne!(h1, h3);
        assert_eq!(h1.len(), "<EMAIL_ADDRESS:12345678>".len());
        let mac = hmac_sha256::HMAC::mac(b"jane@example.com", b"0123456789abcdef0123");
        let hex: String = mac.iter().take(4).map(|b| format!("{b:02x}")).collect();
        assert_eq!(h1, format!("<EMAIL_ADDRESS:{hex}>"));
    }
}
