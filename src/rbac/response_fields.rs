//! Column-level filtering of JSON responses (`response_fields` of a rule).

use serde_json::Value;
use std::fmt;

/// Fields removed from JSON response bodies, at any depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseFieldFilter {
    remove: Vec<String>,
    /// Permission index whose holders see the fields.
    pub(crate) unless: Option<usize>,
}

/// Why a body could not be filtered. The engine fails closed (the body is not
/// forwarded as is).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFieldsError {
    /// The body is not JSON.
    NotJson,
}

impl fmt::Display for ResponseFieldsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseFieldsError::NotJson => f.write_str("response body is not JSON: cannot remove fields"),
        }
    }
}

impl std::error::Error for ResponseFieldsError {}

/// A filtered body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredBody {
    /// The re-serialised JSON (compact).
    pub body: Vec<u8>,
    /// How many object members were removed.
    pub removed: usize,
}

impl ResponseFieldFilter {
    pub(crate) fn new(mut remove: Vec<String>, unless: Option<usize>) -> Self {
        remove.sort();
        remove.dedup();
        ResponseFieldFilter { remove, unless }
    }

    /// The field names removed.
    pub fn fields(&self) -> &[String] {
        &self.remove
    }

    /// Removes the configured keys from every object of the JSON `body`.
    pub fn apply(&self, body: &[u8]) -> Result<FilteredBody, ResponseFieldsError> {
        let mut value: Value = serde_json::from_slice(body).map_err(|_| ResponseFieldsError::NotJson)?;
        let removed = self.strip(&mut value);
        let body = serde_json::to_vec(&value).map_err(|_| ResponseFieldsError::NotJson)?;
        Ok(FilteredBody { body, removed })
    }

    fn strip(&self, value: &mut Value) -> usize {
        match value {
            Value::Object(map) => {
                let before = map.len();
                map.retain(|k, _| self.remove.binary_search(k).is_err());
                let mut removed = before - map.len();
                for v in map.values_mut() {
                    removed += self.strip(v);
                }
                removed
            }
            Value::Array(items) => items.iter_mut().map(|v| self.strip(v)).sum(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_fields_at_any_depth_keeping_json_valid() {
        let f = ResponseFieldFilter::new(vec!["salary".into(), "ssn".into()], None);
        let body = br#"{"name":"a","salary":1,"team":[{"ssn":"x","n":1},{"deep":{"salary":{"x":1}}}],"note":"salary"}"#;
        let out = f.apply(body).unwrap();
        let got: Value = serde_json::from_slice(&out.body).unwrap();
        let want = serde_json::json!({"name":"a","note":"salary","team":[{"n":1},{"deep":{}}]});
        assert_eq!(got, want);
        assert_eq!(out.removed, 3);
    }

    #[test]
    fn non_json_body_is_an_error() {
        let f = ResponseFieldFilter::new(vec!["ssn".into()], None);
        assert_eq!(f.apply(b"ssn: 1"), Err(ResponseFieldsError::NotJson));
    }
}
