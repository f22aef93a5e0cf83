//! Schema of the `audit` section.

use super::ConfigError;
use serde::Deserialize;

/// Audit records and their transport. (Filled in by the audit work, issue 6.)
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {}

impl AuditConfig {
    /// Structural checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
