//! The request/response pipeline: authn -> lockout -> rbac -> rate -> redact -> audit.
//!
//! An [`Engine`] is compiled once per policy (per wasm VM) and used for every
//! request. Each stage's outcome is returned as data: headers to change, a local
//! reply to send, a request context for the later phases. The host adapters only
//! translate these into host calls.

use crate::config::{ConfigError, Policy};
use crate::host::{Host, LogLevel};
use crate::jwt::{AuthnFailure, CacheStatus, TokenVerifier, Verification, VerifiedToken};
use crate::jwt::extract::{remove_cookie, remove_query_param, TokenLocation};
use std::rc::Rc;

/// The compiled-in default policy (validated by build.rs).
pub const DEFAULT_POLICY: &[u8] = include_bytes!("../../policy/default.json");

/// Realm announced in `WWW-Authenticate`.
const REALM: &str = "chatguard";

/// A request as the adapters see it at the headers phase.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: String,
    /// The raw `:path`, query included.
    pub path: String,
    pub authority: String,
    /// Header names lower-case (as HTTP/2 and Envoy give them).
    pub headers: Vec<(String, String)>,
    /// The downstream peer (`ip:port`), as the host reports it.
    pub downstream: Option<String>,
}

impl RequestHead {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The request id (`x-request-id`, set by Envoy), if any.
    pub fn request_id(&self) -> Option<&str> {
        self.header("x-request-id")
    }

    fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }
}

/// Changes to the request before it goes upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Headers to remove (lower-case names).
    pub remove: Vec<String>,
    /// Headers to set, replacing any value.
    pub set: Vec<(String, String)>,
}

/// A response the filter sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Short machine-readable cause, for the host's response details / logs.
    pub details: &'static str,
}

/// What the engine learned about a request, carried to the later phases.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The verified token, when the caller authenticated.
    pub token: Option<Rc<VerifiedToken>>,
    /// Why authentication failed, when it did.
    pub authn_failure: Option<AuthnFailure>,
    /// Whether the token came from the cache (for metrics).
    pub cache: Option<CacheStatus>,
    /// Name of the provider that verified the token.
    pub provider: Option<String>,
}

/// The engine's answer at the headers phase.
#[derive(Debug, Clone)]
pub enum RequestVerdict {
    /// Send upstream with these edits.
    Forward { edits: HeaderEdits, ctx: RequestContext },
    /// Answer with this reply; the request goes no further.
    Respond { reply: LocalReply, ctx: RequestContext },
    /// A provider's keys are being fetched: park the request and call
    /// [`Engine::on_request_headers`] again with `may_wait == false` once
    /// [`Engine::jwks_finished`] was called for it (or the wait timed out).
    WaitForKeys { provider: usize },
}

/// The compiled policy plus per-worker state.
pub struct Engine {
    verifier: TokenVerifier,
    policy_hash: String,
    description: Option<String>,
}

impl Engine {
    /// Compiles a policy document (Envoy's plugin configuration or a file).
    pub fn from_json(bytes: &[u8]) -> Result<Engine, ConfigError> {
        let policy = Policy::from_json(bytes)?;
        Engine::compile(&policy, bytes)
    }

    /// The compiled-in default policy.
    pub fn default_policy() -> Result<Engine, ConfigError> {
        Engine::from_json(DEFAULT_POLICY)
    }

    /// Compiles a validated policy; `source` is hashed for `config_loaded` records.
    pub fn compile(policy: &Policy, source: &[u8]) -> Result<Engine, ConfigError> {
        let verifier = TokenVerifier::compile(&policy.jwt)?;
        let digest = hmac_sha256::Hash::hash(source);
        Ok(Engine {
            verifier,
            policy_hash: hex(&digest[..8]),
            description: policy.description.clone(),
        })
    }

    /// Short hash of the policy document (first 8 bytes of SHA-256, hex).
    pub fn policy_hash(&self) -> &str {
        &self.policy_hash
    }

    /// The policy's description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The JWT stage (for JWKS scheduling by the adapter, and the CLI).
    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// Runs the request-headers phase.
    pub fn on_request_headers(&self, host: &dyn Host, head: &RequestHead, may_wait: bool) -> RequestVerdict {
        let now_ms = host.now_ms();
        let mut ctx = RequestContext::default();
        let mut edits = HeaderEdits::default();
        // Headers the filter sets for upstream must never come from the client.
        for name in self.verifier.claim_header_names() {
            edits.remove.push(name.to_ascii_lowercase());
        }

        host.count("requests_total", 1);
        let anonymous_route = false; // route rules arrive with the RBAC stage
        match self.verifier.find_token(&head.headers, head.query()) {
            None => {
                if self.verifier.provider_count() > 0 && !anonymous_route {
                    return self.deny_authn(host, head, ctx, AuthnFailure::Missing);
                }
            }
            Some(found) => match self.verifier.verify(&found, now_ms, may_wait) {
                Verification::NeedKeys { provider } => return RequestVerdict::WaitForKeys { provider },
                Verification::Failed(reason) => return self.deny_authn(host, head, ctx, reason),
                Verification::Verified(token, cache) => {
                    host.count(
                        match cache {
                            CacheStatus::Hit => "token_cache_hits",
                            CacheStatus::Miss => "token_cache_misses",
                        },
                        1,
                    );
                    self.add_claim_headers(&token, &mut edits);
                    if !self.verifier.forwards(token.provider) {
                        strip_token(head, &found.location, &mut edits);
                    }
                    ctx.provider = Some(self.verifier.provider_name(token.provider).to_string());
                    ctx.cache = Some(cache);
                    ctx.token = Some(token);
                }
            },
        }
        RequestVerdict::Forward { edits, ctx }
    }

    fn deny_authn(&self, host: &dyn Host, head: &RequestHead, mut ctx: RequestContext, reason: AuthnFailure) -> RequestVerdict {
        host.count(&format!("authn_failures.{}", reason.code()), 1);
        host.log(
            LogLevel::Info,
            &format!(
                "authn denied: reason={} request_id={}",
                reason.code(),
                head.request_id().unwrap_or("-")
            ),
        );
        ctx.authn_failure = Some(reason);
        RequestVerdict::Respond { reply: unauthorized(reason, head.request_id()), ctx }
    }

    fn add_claim_headers(&self, token: &VerifiedToken, edits: &mut HeaderEdits) {
        for mapping in self.verifier.claim_to_headers(token.provider) {
            if let Some(value) = token.claim(&mapping.claim).and_then(header_value) {
                edits.set.push((mapping.header.to_ascii_lowercase(), value));
            }
        }
    }

    /// Remote JWKS fetches due now (adapters call this on tick).
    pub fn jwks_due(&self, now_ms: u64) -> Vec<(usize, crate::host::OutboundRequest)> {
        self.verifier.jwks_due(now_ms)
    }

    /// Hands a JWKS answer to the verifier, logging and counting the outcome.
    pub fn jwks_finished(&self, host: &dyn Host, provider: usize, status: Option<u16>, body: &[u8]) {
        use crate::jwt::remote::FetchOutcome;
        let name = self.verifier.provider_name(provider).to_string();
        match self.verifier.jwks_finished(provider, host.now_ms(), status, body) {
            Some(FetchOutcome::Updated { keys, skipped }) => {
                host.count("jwks_fetches.ok", 1);
                host.log(LogLevel::Info, &format!("jwks updated: provider={name} keys={keys} skipped={}", skipped.len()));
                for (i, why) in skipped {
                    host.log(LogLevel::Warn, &format!("jwks key skipped: provider={name} index={i}: {why}"));
                }
            }
            Some(FetchOutcome::Failed(why)) => {
                host.count("jwks_fetches.failed", 1);
                host.log(LogLevel::Warn, &format!("jwks fetch failed: provider={name}: {why:?}; keeping the last good set"));
            }
            None => {}
        }
    }
}

/// The 401 reply (RFC 6750 section 3): no error code when no token was sent.
pub fn unauthorized(reason: AuthnFailure, request_id: Option<&str>) -> LocalReply {
    let challenge = if reason == AuthnFailure::Missing {
        format!("Bearer realm=\"{REALM}\"")
    } else {
        format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
            reason.description()
        )
    };
    LocalReply {
        status: 401,
        headers: vec![
            ("www-authenticate".into(), challenge),
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: json_body("unauthorized", Some(reason.code()), request_id),
        details: "chatguard_unauthorized",
    }
}

/// `{"error":..,"reason":..,"request_id":..}`: values are our own codes and
/// Envoy's request id, never request content.
pub fn json_body(error: &str, reason: Option<&str>, request_id: Option<&str>) -> Vec<u8> {
    let mut body = serde_json::Map::new();
    body.insert("error".into(), error.into());
    if let Some(r) = reason {
        body.insert("reason".into(), r.into());
    }
    if let Some(id) = request_id.filter(|id| is_safe_request_id(id)) {
        body.insert("request_id".into(), id.into());
    }
    serde_json::Value::Object(body).to_string().into_bytes()
}

/// Envoy generates UUIDs; a client-sent id is echoed only if it looks like one.
fn is_safe_request_id(id: &str) -> bool {
    id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A claim rendered as a header value: strings as is, numbers and booleans in
/// JSON form, arrays of scalars comma-joined; objects and control characters
/// are not rendered (a header must stay one line).
fn header_value(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => {
            let parts: Option<Vec<String>> =
                items.iter().map(|i| if i.is_array() { None } else { header_value(i) }).collect();
            parts?.join(",")
        }
        _ => return None,
    };
    (!s.bytes().any(|b| b.is_ascii_control())).then_some(s)
}

fn strip_token(head: &RequestHead, location: &TokenLocation, edits: &mut HeaderEdits) {
    match location {
        TokenLocation::Header(name) => edits.remove.push(name.clone()),
        TokenLocation::Param(name) => {
            if let Some((path, query)) = head.path.split_once('?') {
                let rest = remove_query_param(query, name);
                let new_path = if rest.is_empty() { path.to_string() } else { format!("{path}?{rest}") };
                edits.set.push((":path".into(), new_path));
            }
        }
        TokenLocation::Cookie(name) => {
            if let Some(cookie) = head.header("cookie") {
                let rest = remove_cookie(cookie, name);
                if rest.is_empty() {
                    edits.remove.push("cookie".into());
                } else {
                    edits.set.push(("cookie".into(), rest));
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
