//! The responses the filter sends itself. One place maps an outcome to a status,
//! headers and a short JSON body; no token, claim value or PII is ever echoed.

use crate::jwt::AuthnFailure;
use crate::rbac::DenyReason;

/// Realm announced in `WWW-Authenticate`.
const REALM: &str = "chatguard";

/// A response the filter sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Short machine-readable cause, for response details and logs.
    pub details: &'static str,
}

fn reply(status: u16, details: &'static str, mut headers: Vec<(String, String)>, body: Vec<u8>) -> LocalReply {
    headers.push(("content-type".into(), "application/json".into()));
    headers.push(("cache-control".into(), "no-store".into()));
    LocalReply { status, headers, body, details }
}

/// 401 (RFC 6750 section 3): no error code when no token was sent.
pub fn unauthorized(reason: AuthnFailure, request_id: Option<&str>) -> LocalReply {
    let challenge = if reason == AuthnFailure::Missing {
        format!("Bearer realm=\"{REALM}\"")
    } else {
        format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
            reason.description()
        )
    };
    reply(
        401,
        "chatguard_unauthorized",
        vec![("www-authenticate".into(), challenge)],
        json_body("unauthorized", Some(reason.code()), request_id),
    )
}

/// 403. The rule and the missing permission go to logs and audit, not here;
/// an MFA step-up gets RFC 9470's challenge.
pub fn forbidden(reason: DenyReason, request_id: Option<&str>) -> LocalReply {
    let mut headers = Vec::new();
    if reason == DenyReason::MfaRequired {
        headers.push((
            "www-authenticate".into(),
            format!("Bearer realm=\"{REALM}\", error=\"insufficient_user_authentication\", error_description=\"multi-factor authentication is required\""),
        ));
    }
    let code = (reason == DenyReason::MfaRequired).then_some("insufficient_user_authentication");
    reply(403, "chatguard_forbidden", headers, json_body("forbidden", code, request_id))
}

/// 400 for a path that cannot be matched safely.
pub fn bad_path(code: &'static str, request_id: Option<&str>) -> LocalReply {
    reply(400, "chatguard_bad_path", Vec::new(), json_body("bad_request", Some(code), request_id))
}

/// 429 for a rate limit: headers come from the rate stage (Retry-After, RateLimit*).
pub fn rate_limited(limit: &str, headers: Vec<(String, String)>, request_id: Option<&str>) -> LocalReply {
    let mut body = serde_json::Map::new();
    body.insert("error".into(), "rate_limited".into());
    body.insert("limit".into(), limit.into());
    if let Some(id) = request_id.filter(|id| is_safe_request_id(id)) {
        body.insert("request_id".into(), id.into());
    }
    reply(429, "chatguard_rate_limited", headers, serde_json::Value::Object(body).to_string().into_bytes())
}

/// 429 while a client is locked out after repeated authentication failures.
pub fn locked_out(retry_after_secs: u64, request_id: Option<&str>) -> LocalReply {
    reply(
        429,
        "chatguard_locked_out",
        vec![("retry-after".into(), retry_after_secs.to_string())],
        json_body("locked_out", None, request_id),
    )
}

/// 413: a request body larger than `pii.max_body_bytes` cannot be inspected.
pub fn too_large(request_id: Option<&str>) -> LocalReply {
    reply(413, "chatguard_body_too_large", Vec::new(), json_body("payload_too_large", None, request_id))
}

/// 415: a request body that cannot be inspected (unsupported content-encoding).
pub fn unsupported_media(request_id: Option<&str>) -> LocalReply {
    reply(415, "chatguard_unsupported_encoding", Vec::new(), json_body("unsupported_media_type", None, request_id))
}

/// 502: an upstream body that cannot be decoded for inspection is never passed on.
pub fn bad_gateway(request_id: Option<&str>) -> LocalReply {
    reply(502, "chatguard_undecodable_body", Vec::new(), json_body("bad_gateway", Some("undecodable_body"), request_id))
}

/// 503 / 429 when shared state cannot be read or written (fail closed).
pub fn unavailable(status: u16, request_id: Option<&str>) -> LocalReply {
    reply(status, "chatguard_state_unavailable", vec![("retry-after".into(), "1".into())], json_body("unavailable", None, request_id))
}

/// 500 when the filter cannot do what the policy requires.
pub fn internal(request_id: Option<&str>) -> LocalReply {
    reply(500, "chatguard_internal", Vec::new(), json_body("internal", None, request_id))
}

/// `{"error":..,"reason":..,"request_id":..}`: values are our own codes and
/// the proxy's request id, never request content.
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
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}
