//! Schema of the `rbac` section (roles, inheritance, route rules, conditions).

use super::ConfigError;
use serde::Deserialize;

/// The RBAC matrix and route rules. (Filled in by the RBAC work, issue 3.)
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbacConfig {}

impl RbacConfig {
    /// Structural checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
