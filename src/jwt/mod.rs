//! JWT authentication: providers, key sets (inline and remote), verification and
//! the verified-token cache.
//!
//! Checks run cheapest first: cache, length, shape, header (`alg`, `crit`, `kid`),
//! issuer-based provider choice, key choice, signature (jwt-simple, constant
//! time), then time, issuer and audience claims.

pub mod cache;
pub mod extract;
pub mod keys;
pub mod remote;

use crate::config::jwt::{ClaimToHeader, JwtConfig};
use crate::config::ConfigError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cache::{hash_token, TokenCache};
use extract::{TokenLocation, TokenSources};
use jwt_simple::prelude::{Duration, VerificationOptions};
use jwt_simple::JWTError;
use keys::{key_set_from_jwks, Alg, KeySet};
use remote::{FetchOutcome, RemoteKeys};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::rc::Rc;

/// Longest token accepted (bytes): real tokens are 1-4 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Tokens without `exp` (when allowed) are re-verified at least this often.
const NO_EXP_CACHE_MS: u64 = 5 * 60 * 1000;

/// Why a request failed authentication. [`AuthnFailure::code`] is the reason code
/// shown to the caller, in metrics and in audit records.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthnFailure {
    /// No token in any configured location.
    Missing,
    /// Not a compact JWS, undecodable header or payload, or too long.
    Malformed,
    /// `alg` is `none`, unknown, or not one the selected key may verify.
    BadAlgorithm,
    /// The header lists `crit` extensions (none are supported).
    UnsupportedCritical,
    /// `kid` names no key of the provider (after a re-fetch, for remote JWKS).
    UnknownKid,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is in the past (beyond the clock skew).
    Expired,
    /// `nbf` is in the future (beyond the clock skew).
    NotYetValid,
    /// `iat` is in the future (beyond the clock skew).
    IssuedInFuture,
    /// No `exp`, and the provider requires one.
    MissingExpiration,
    /// No provider accepts the token's `iss`.
    BadIssuer,
    /// `aud` names none of the provider's audiences.
    BadAudience,
    /// The provider's remote key set could not be fetched in time.
    JwksUnavailable,
}

impl AuthnFailure {
    /// Every reason, for metrics definitions and docs.
    pub const ALL: [AuthnFailure; 13] = [
        AuthnFailure::Missing,
        AuthnFailure::Malformed,
        AuthnFailure::BadAlgorithm,
        AuthnFailure::UnsupportedCritical,
        AuthnFailure::UnknownKid,
        AuthnFailure::BadSignature,
        AuthnFailure::Expired,
        AuthnFailure::NotYetValid,
        AuthnFailure::IssuedInFuture,
        AuthnFailure::MissingExpiration,
        AuthnFailure::BadIssuer,
        AuthnFailure::BadAudience,
        AuthnFailure::JwksUnavailable,
    ];

    /// The stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            AuthnFailure::Missing => "missing",
            AuthnFailure::Malformed => "malformed",
            AuthnFailure::BadAlgorithm => "bad_algorithm",
            AuthnFailure::UnsupportedCritical => "unsupported_crit",
            AuthnFailure::UnknownKid => "unknown_kid",
            AuthnFailure::BadSignature => "bad_signature",
            AuthnFailure::Expired => "expired",
            AuthnFailure::NotYetValid => "not_yet_valid",
            AuthnFailure::IssuedInFuture => "issued_in_future",
            AuthnFailure::MissingExpiration => "missing_exp",
            AuthnFailure::BadIssuer => "bad_issuer",
            AuthnFailure::BadAudience => "bad_audience",
            AuthnFailure::JwksUnavailable => "jwks_unavailable",
        }
    }

    /// A short human description for `WWW-Authenticate: error_description`.
    /// Never contains token or claim values.
    pub fn description(self) -> &'static str {
        match self {
            AuthnFailure::Missing => "a bearer token is required",
            AuthnFailure::Malformed => "the token is malformed",
            AuthnFailure::BadAlgorithm => "the token's algorithm is not accepted",
            AuthnFailure::UnsupportedCritical => "the token requires unsupported extensions",
            AuthnFailure::UnknownKid => "the token's key is unknown",
            AuthnFailure::BadSignature => "the token's signature is invalid",
            AuthnFailure::Expired => "the token has expired",
            AuthnFailure::NotYetValid => "the token is not valid yet",
            AuthnFailure::IssuedInFuture => "the token was issued in the future",
            AuthnFailure::MissingExpiration => "the token has no expiration",
            AuthnFailure::BadIssuer => "the token's issuer is not accepted",
            AuthnFailure::BadAudience => "the token's audience is not accepted",
            AuthnFailure::JwksUnavailable => "the token cannot be verified right now",
        }
    }
}

impl fmt::Display for AuthnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A token whose signature and claims were verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// Index of the provider that verified it.
    pub provider: usize,
    /// `sub`, if present.
    pub subject: Option<String>,
    /// `exp` in seconds since the epoch, if present.
    pub expires_at: Option<u64>,
    /// Every claim of the payload.
    pub claims: Map<String, Value>,
}

impl VerifiedToken {
    /// The claim at a dotted path (`realm_access.roles`).
    pub fn claim(&self, path: &str) -> Option<&Value> {
        claim_at(&self.claims, path)
    }
}

/// The value at a dotted path in a claims object.
pub fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// Whether a verification hit the cache, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

/// The answer to "who sent this token?".
#[derive(Debug, Clone, PartialEq)]
pub enum Verification {
    /// Verified (from the cache or just now).
    Verified(Rc<VerifiedToken>, CacheStatus),
    /// Refused, with the reason.
    Failed(AuthnFailure),
    /// The provider's remote keys are being fetched: ask again when they arrive.
    NeedKeys { provider: usize },
}

/// A token found in a request, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken<'r> {
    pub token: &'r str,
    pub location: TokenLocation,
    /// Providers whose sources yielded this token, in configuration order.
    pub providers: Vec<usize>,
}

struct Provider {
    name: String,
    issuer: Option<String>,
    audiences: HashSet<String>,
    skew_secs: u64,
    require_exp: bool,
    sources: TokenSources,
    inline: KeySet,
    remote: Option<RefCell<RemoteKeys>>,
    claim_to_headers: Vec<ClaimToHeader>,
    forward: bool,
}

/// The compiled `jwt` section plus its mutable per-worker state (remote keys,
/// token cache). Single-threaded by design: one per wasm VM.
pub struct TokenVerifier {
    providers: Vec<Provider>,
    cache: RefCell<TokenCache>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

impl TokenVerifier {
    /// Compiles the `jwt` section; inline keys that cannot be used are refused
    /// here, naming the key.
    pub fn compile(cfg: &JwtConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut providers = Vec::with_capacity(cfg.providers.len());
        for (i, p) in cfg.providers.iter().enumerate() {
            let inline = match &p.jwks {
                Some(jwks) => {
                    let (set, rejected) = key_set_from_jwks(jwks);
                    if let Some((k, err)) = rejected.first() {
                        return Err(ConfigError::invalid(format!("jwt.providers[{i}].jwks.keys[{k}]"), err.to_string()));
                    }
                    set
                }
                None => KeySet::default(),
            };
            providers.push(Provider {
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                audiences: p.audiences.iter().cloned().collect(),
                skew_secs: p.clock_skew_seconds,
                require_exp: p.require_expiration,
                sources: TokenSources::of(p),
                inline,
                remote: p.remote_jwks.clone().map(|r| RefCell::new(RemoteKeys::new(r))),
                claim_to_headers: p.claim_to_headers.clone(),
                forward: p.forward,
            });
        }
        Ok(TokenVerifier { providers, cache: RefCell::new(TokenCache::new(cfg.cache.max_entries)) })
    }

    /// Number of providers.
    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    /// A provider's name (for logs, metrics, audit).
    pub fn provider_name(&self, provider: usize) -> &str {
        self.providers.get(provider).map(|p| p.name.as_str()).unwrap_or("?")
    }

    /// Claims copied to upstream headers for `provider`.
    pub fn claim_to_headers(&self, provider: usize) -> &[ClaimToHeader] {
        self.providers.get(provider).map(|p| p.claim_to_headers.as_slice()).unwrap_or(&[])
    }

    /// Every header any provider copies claims into (removed from every request
    /// first, so a client cannot forge them).
    pub fn claim_header_names(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().flat_map(|p| p.claim_to_headers.iter().map(|c| c.header.as_str()))
    }

    /// Whether `provider` keeps the token in the upstream request.
    pub fn forwards(&self, provider: usize) -> bool {
        self.providers.get(provider).map(|p| p.forward).unwrap_or(false)
    }

    /// The token in the request, if any provider finds one. `headers` names must
    /// be lower-case; `query` excludes the `?`.
    pub fn find_token<'r>(&self, headers: &'r [(String, String)], query: Option<&'r str>) -> Option<FoundToken<'r>> {
        let mut found: Option<FoundToken<'r>> = None;
        for (i, p) in self.providers.iter().enumerate() {
            if let Some((token, location)) = p.sources.find(headers, query) {
                match &mut found {
                    None => found = Some(FoundToken { token, location, providers: vec![i] }),
                    Some(f) if f.token == token => f.providers.push(i),
                    Some(_) => {}
                }
            }
        }
        found
    }

    /// Verifies a found token at `now_ms`. With `may_wait`, a provider whose
    /// remote keys are missing (or lack the token's `kid`) answers `NeedKeys`
    /// instead of failing; the adapter parks the request and asks again once
    /// the fetch is done, with `may_wait == false`.
    pub fn verify(&self, found: &FoundToken<'_>, now_ms: u64, may_wait: bool) -> Verification {
        let hash = hash_token(found.token);
        if let Some(hit) = self.cache.borrow_mut().get(&hash, now_ms) {
            if found.providers.contains(&hit.provider) {
                return Verification::Verified(hit, CacheStatus::Hit);
            }
        }
        match self.verify_uncached(found, now_ms, may_wait) {
            Ok(token) => {
                let token = Rc::new(token);
                let until = match token.expires_at {
                    Some(exp) => exp.saturating_mul(1000),
                    None => now_ms.saturating_add(NO_EXP_CACHE_MS),
                };
                self.cache.borrow_mut().insert(hash, token.clone(), until, token.provider);
                Verification::Verified(token, CacheStatus::Miss)
            }
            Err(Pending::Keys(provider)) => Verification::NeedKeys { provider },
            Err(Pending::Failed(f)) => Verification::Failed(f),
        }
    }

    fn verify_uncached(&self, found: &FoundToken<'_>, now_ms: u64, may_wait: bool) -> Result<VerifiedToken, Pending> {
        let token = found.token;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthnFailure::Malformed.into());
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthnFailure::Malformed.into());
        };
        let header: Header = decode_json(h64).ok_or(AuthnFailure::Malformed)?;
        if header.crit.is_some() {
            return Err(AuthnFailure::UnsupportedCritical.into());
        }
        let alg = Alg::from_name(&header.alg).ok_or(AuthnFailure::BadAlgorithm)?;
        let claims: Map<String, Value> = decode_json(p64).ok_or(AuthnFailure::Malformed)?;

        // Choose the provider by issuer: the unverified `iss` only selects which
        // keys to try; the signature check below is what makes it trustworthy.
        let iss = claims.get("iss").and_then(Value::as_str);
        let provider_idx = found
            .providers
            .iter()
            .copied()
            .find(|&i| match self.providers.get(i).and_then(|p| p.issuer.as_deref()) {
                None => true,
                Some(want) => iss == Some(want),
            })
            .ok_or(AuthnFailure::BadIssuer)?;
        let provider = self.providers.get(provider_idx).ok_or(AuthnFailure::BadIssuer)?;

        let remote = provider.remote.as_ref().map(|r| r.borrow());
        let remote_keys = remote.as_ref().and_then(|r| r.keys());
        if provider.remote.is_some() && remote_keys.is_none() && provider.inline.keys.is_empty() {
            return Err(if may_wait { Pending::Keys(provider_idx) } else { AuthnFailure::JwksUnavailable.into() });
        }
        let all_keys = provider.inline.keys.iter().chain(remote_keys.into_iter().flat_map(|s| s.keys.iter()));
        let candidates: Vec<_> = match &header.kid {
            Some(kid) => all_keys.filter(|k| k.kid.as_deref() == Some(kid.as_str())).collect(),
            None => all_keys.collect(),
        };
        if candidates.is_empty() {
            drop(remote);
            if let Some(r) = &provider.remote {
                let worth_waiting = r.borrow_mut().want_refetch(now_ms);
                if may_wait && worth_waiting {
                    return Err(Pending::Keys(provider_idx));
                }
            }
            return Err(AuthnFailure::UnknownKid.into());
        }
        let usable: Vec<_> = candidates.iter().filter_map(|k| k.for_alg(alg)).collect();
        if usable.is_empty() {
            // The kid names a key of another type (or a JWK pinned to another
            // alg): the classic RS256 -> HS256 confusion ends here.
            return Err(AuthnFailure::BadAlgorithm.into());
        }

        let mut last = AuthnFailure::BadSignature;
        for key in usable {
            match key.verify(token, self.options(provider, now_ms)) {
                Ok(verified) => {
                    if provider.require_exp && verified.expires_at.is_none() {
                        return Err(AuthnFailure::MissingExpiration.into());
                    }
                    return Ok(VerifiedToken {
                        provider: provider_idx,
                        subject: claims.get("sub").and_then(Value::as_str).map(str::to_string),
                        expires_at: verified.expires_at.map(|d| d.as_secs()),
                        claims,
                    });
                }
                Err(e) => {
                    last = map_error(&e);
                    if last != AuthnFailure::BadSignature {
                        // The signature verified; a claim is wrong. Final.
                        return Err(last.into());
                    }
                }
            }
        }
        Err(last.into())
    }

    fn options(&self, provider: &Provider, now_ms: u64) -> VerificationOptions {
        VerificationOptions {
            time_tolerance: Some(Duration::from_secs(provider.skew_secs)),
            artificial_time: Some(Duration::from_secs(now_ms / 1000)),
            allowed_issuers: provider.issuer.as_ref().map(|i| HashSet::from([i.clone()])),
            allowed_audiences: (!provider.audiences.is_empty()).then(|| provider.audiences.clone()),
            max_token_length: Some(MAX_TOKEN_BYTES),
            ..VerificationOptions::default()
        }
    }

    /// Remote JWKS fetches due now: `(provider, request)`. The caller sends each
    /// and reports with [`TokenVerifier::jwks_started`].
    pub fn jwks_due(&self, now_ms: u64) -> Vec<(usize, crate::host::OutboundRequest)> {
        self.providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let r = p.remote.as_ref()?.borrow();
                r.due(now_ms).then(|| (i, r.request()))
            })
            .collect()
    }

    /// Records that a fetch for `provider` was sent (`sent`) or refused by the host.
    pub fn jwks_started(&self, provider: usize, now_ms: u64, sent: bool) {
        if let Some(r) = self.providers.get(provider).and_then(|p| p.remote.as_ref()) {
            r.borrow_mut().started(now_ms, sent);
        }
    }

    /// Hands the answer of a fetch to `provider`'s state. On a new key set the
    /// tokens cached for that provider are dropped (a removed key must not keep
    /// verifying tokens).
    pub fn jwks_finished(&self, provider: usize, now_ms: u64, status: Option<u16>, body: &[u8]) -> Option<FetchOutcome> {
        let r = self.providers.get(provider)?.remote.as_ref()?;
        let outcome = r.borrow_mut().finished(now_ms, status, body);
        if matches!(outcome, FetchOutcome::Updated { .. }) {
            self.cache.borrow_mut().forget_provider(provider);
        }
        Some(outcome)
    }

    /// Whether a fetch for `provider` is under way.
    pub fn jwks_in_flight(&self, provider: usize) -> bool {
        self.providers
            .get(provider)
            .and_then(|p| p.remote.as_ref())
            .map(|r| r.borrow().in_flight())
            .unwrap_or(false)
    }

    /// How long a request may wait for `provider`'s keys.
    pub fn jwks_max_wait_ms(&self, provider: usize) -> u64 {
        self.providers
            .get(provider)
            .and_then(|p| p.remote.as_ref())
            .map(|r| r.borrow().max_wait_ms())
            .unwrap_or(0)
    }

    /// Number of cached verified tokens.
    pub fn cached_tokens(&self) -> usize {
        self.cache.borrow().len()
    }
}

enum Pending {
    Keys(usize),
    Failed(AuthnFailure),
}

impl From<AuthnFailure> for Pending {
    fn from(f: AuthnFailure) -> Self {
        Pending::Failed(f)
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn map_error(err: &jwt_simple::Error) -> AuthnFailure {
    match err.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidSignature) | Some(JWTError::InvalidAuthenticationTag) => AuthnFailure::BadSignature,
        Some(JWTError::TokenHasExpired) => AuthnFailure::Expired,
        Some(JWTError::TokenNotValidYet) => AuthnFailure::NotYetValid,
        Some(JWTError::ClockDrift) => AuthnFailure::IssuedInFuture,
        Some(JWTError::RequiredIssuerMismatch) | Some(JWTError::RequiredIssuerMissing) => AuthnFailure::BadIssuer,
        Some(JWTError::RequiredAudienceMismatch) | Some(JWTError::RequiredAudienceMissing) => {
            AuthnFailure::BadAudience
        }
        Some(JWTError::AlgorithmMismatch) => AuthnFailure::BadAlgorithm,
        Some(JWTError::UnknownCriticalExtension) => AuthnFailure::UnsupportedCritical,
        // Signature backends report a bad signature as an internal error string.
        Some(JWTError::InternalError(_)) => AuthnFailure::BadSignature,
        _ => AuthnFailure::Malformed,
    }
}

#[cfg(test)]
pub(crate) mod tests;
