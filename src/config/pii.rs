//! Schema of the `pii` section.

use super::ConfigError;
use serde::Deserialize;

/// PII and secret redaction. (Filled in by the redaction work, issue 4.)
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiConfig {}

impl PiiConfig {
    /// Structural checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
