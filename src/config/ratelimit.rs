//! Schema of `rate_limits`, `rate_limit_settings`, `client_ip` and `lockout`.

use super::{ConfigError, Policy};
use serde::Deserialize;

/// One token bucket. (Filled in by the rate-limit work, issue 5.)
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {}

/// Options shared by every bucket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {}

/// How the client IP is determined.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIpConfig {
    /// How many X-Forwarded-For entries, counted from the right, were added by
    /// proxies we trust. 0: use the downstream address and ignore the header.
    #[serde(default)]
    pub xff_trusted_hops: u32,
}

/// Failed-authentication lockout.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutConfig {}

/// Structural checks of the rate and lockout sections (they refer to roles and rules).
pub fn validate(_policy: &Policy) -> Result<(), ConfigError> {
    Ok(())
}
