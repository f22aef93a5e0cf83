//! Schema of the `jwt` section. Names follow Envoy's jwt_authn filter.

use super::{indexed, ConfigError};
use serde::Deserialize;
use std::collections::HashSet;

/// The `jwt` section: one or more providers, tried in order.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    #[serde(default)]
    pub providers: Vec<JwtProvider>,
    /// Verified-token cache (per worker).
    #[serde(default)]
    pub cache: TokenCacheConfig,
}

/// Bounds of the verified-token cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheConfig {
    /// Maximum number of verified tokens remembered per worker; 0 disables.
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        TokenCacheConfig { max_entries: default_cache_entries() }
    }
}

fn default_cache_entries() -> usize {
    4096
}

/// One identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    /// Unique name, used in logs, metrics and audit records.
    pub name: String,
    /// Required `iss` value; absent means any issuer is accepted.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values (the token must name at least one); empty: any.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Inline keys (RFC 7517 JWK Set).
    #[serde(default)]
    pub jwks: Option<JwkSet>,
    /// Keys fetched from the IdP through an Envoy cluster.
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwks>,
    /// Where to look for the token in headers (default: `Authorization: Bearer`).
    #[serde(default)]
    pub from_headers: Option<Vec<HeaderSource>>,
    /// Query parameters that may carry the token.
    #[serde(default)]
    pub from_params: Vec<String>,
    /// Cookies that may carry the token.
    #[serde(default)]
    pub from_cookies: Vec<String>,
    /// Tolerance for `exp`, `nbf` and `iat` (seconds).
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Reject tokens without `exp` (default true).
    #[serde(default = "default_true")]
    pub require_expiration: bool,
    /// Copy claims to upstream request headers.
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Keep the token in the request sent upstream (default false, as in Envoy).
    #[serde(default)]
    pub forward: bool,
}

fn default_clock_skew() -> u64 {
    60
}

fn default_true() -> bool {
    true
}

/// A header that may carry the token, with an optional scheme prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSource {
    pub name: String,
    #[serde(default)]
    pub value_prefix: Option<String>,
}

/// Copy claim `claim` (dotted path) into request header `header`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    pub claim: String,
    pub header: String,
}

/// An RFC 7517 JWK Set.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// One RFC 7517 key. Unknown members (x5c, key_ops, ...) are ignored: real IdPs
/// publish them and operators paste their JWKS as is.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    #[serde(default)]
    pub k: Option<String>,
}

/// Where and how often to fetch the provider's JWKS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwks {
    /// Envoy cluster (edge: base URL) serving the JWKS.
    pub cluster: String,
    /// `:authority` of the fetch.
    #[serde(default)]
    pub authority: Option<String>,
    pub path: String,
    /// How long a fetched set is used before it is refreshed.
    #[serde(default = "default_cache_seconds")]
    pub cache_seconds: u64,
    /// Minimum time between two fetches triggered by an unknown `kid` or a failure.
    #[serde(default = "default_cooldown")]
    pub refetch_cooldown_seconds: u64,
    /// Timeout of one fetch.
    #[serde(default = "default_fetch_timeout")]
    pub timeout_ms: u64,
    /// How long a request may wait for the first fetch before it fails (401 `jwks_unavailable`).
    #[serde(default = "default_wait")]
    pub max_wait_ms: u64,
}

fn default_cache_seconds() -> u64 {
    600
}
fn default_cooldown() -> u64 {
    10
}
fn default_fetch_timeout() -> u64 {
    3000
}
fn default_wait() -> u64 {
    5000
}

impl JwtConfig {
    /// Structural checks: unique names, a key source per provider, sane sources.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let at = indexed("jwt.providers", i);
            if p.name.is_empty() {
                return Err(ConfigError::invalid(format!("{at}.name"), "must not be empty"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!("duplicate provider name {:?}", p.name),
                ));
            }
            if p.jwks.is_none() && p.remote_jwks.is_none() {
                return Err(ConfigError::invalid(
                    at.clone(),
                    "needs `jwks` (inline keys) or `remote_jwks`",
                ));
            }
            if let Some(jwks) = &p.jwks {
                for (k, key) in jwks.keys.iter().enumerate() {
                    validate_jwk_shape(key, &format!("{at}.jwks.keys[{k}]"))?;
                }
            }
            if let Some(remote) = &p.remote_jwks {
                if remote.cluster.is_empty() {
                    return Err(ConfigError::invalid(format!("{at}.remote_jwks.cluster"), "must not be empty"));
                }
                if !remote.path.starts_with('/') {
                    return Err(ConfigError::invalid(format!("{at}.remote_jwks.path"), "must start with '/'"));
                }
                if remote.cache_seconds == 0 {
                    return Err(ConfigError::invalid(
                        format!("{at}.remote_jwks.cache_seconds"),
                        "must be at least 1",
                    ));
                }
            }
            if let Some(headers) = &p.from_headers {
                for (h, src) in headers.iter().enumerate() {
                    if src.name.is_empty() {
                        return Err(ConfigError::invalid(
                            format!("{at}.from_headers[{h}].name"),
                            "must not be empty",
                        ));
                    }
                }
            }
            for (c, cth) in p.claim_to_headers.iter().enumerate() {
                let name = cth.header.to_ascii_lowercase();
                if name.is_empty() || name.starts_with(':') || name == "host" || name == "authorization" {
                    return Err(ConfigError::invalid(
                        format!("{at}.claim_to_headers[{c}].header"),
                        "must be an ordinary request header name",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks that a JWK has the members its `kty` needs. Key material itself is
/// decoded and checked (sizes, curve points) when the policy is compiled.
fn validate_jwk_shape(key: &Jwk, at: &str) -> Result<(), ConfigError> {
    let need = |member: &str, v: &Option<String>| -> Result<(), ConfigError> {
        match v {
            Some(s) if !s.is_empty() => Ok(()),
            _ => Err(ConfigError::invalid(format!("{at}.{member}"), format!("required for kty {:?}", key.kty))),
        }
    };
    match key.kty.as_str() {
        "RSA" => {
            need("n", &key.n)?;
            need("e", &key.e)
        }
        "EC" => {
            need("crv", &key.crv)?;
            need("x", &key.x)?;
            need("y", &key.y)
        }
        "OKP" => {
            need("crv", &key.crv)?;
            need("x", &key.x)
        }
        "oct" => need("k", &key.k),
        other => Err(ConfigError::invalid(format!("{at}.kty"), format!("unsupported key type {other:?}"))),
    }
}
