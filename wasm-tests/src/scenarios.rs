//! Scenario data shared by the end-to-end tests of both hosts (Envoy and
//! workerd), so both are held to the same statuses and bytes: the demo
//! policy trusting the test keys, its callers, and the RBAC table.

use crate::tokens::{self, keys};
use jwt_simple::prelude::*;
use serde_json::{json, Value};

/// The compiled-in demo policy, trusting the test keys inline. Rate limits,
/// lockout and audit are left out (their own scenarios add them); `salaries`
/// loses its office hours so the table does not depend on when CI runs.
pub fn demo_policy(mode: &str) -> Value {
    let mut p: Value = serde_json::from_str(include_str!("../../policy/default.json")).expect("demo policy");
    if let Some(obj) = p.as_object_mut() {
        for k in ["rate_limits", "rate_limit_settings", "lockout", "audit"] {
            obj.remove(k);
        }
    }
    let provider = &mut p["jwt"]["providers"][0];
    if let Some(obj) = provider.as_object_mut() {
        obj.remove("remote_jwks");
    }
    provider["jwks"] = tokens::jwks(false);
    if let Some(rules) = p["rbac"]["rules"].as_array_mut() {
        for rule in rules {
            if let Some(obj) = rule.as_object_mut() {
                obj.remove("hours");
            }
        }
    }
    p["rbac"]["mode"] = json!(mode);
    p
}

/// An RS256 token for `sub` with extra claims.
pub fn token(sub: &str, extra: Value) -> String {
    keys().rs256.sign(tokens::claims(sub, extra)).expect("sign")
}

/// The demo policy's callers, one token each.
pub struct Callers {
    pub employee: String,
    pub sales_rep_east: String,
    pub manager_east: String,
    pub hr_mfa: String,
    pub hr_no_mfa: String,
    pub hr_by_group: String,
    pub admin_west: String,
}

/// Mints the callers' tokens.
pub fn callers() -> Callers {
    Callers {
        employee: token("emma", json!({"roles": ["employee"]})),
        sales_rep_east: token("sam", json!({"roles": ["sales_rep"], "region": "east"})),
        manager_east: token("maria", json!({"roles": "sales_manager", "region": "east"})),
        hr_mfa: token("hannah", json!({"roles": ["hr_specialist"], "amr": ["pwd", "mfa"]})),
        hr_no_mfa: token("henry", json!({"roles": ["hr_specialist"], "amr": ["pwd"]})),
        hr_by_group: token("gina", json!({"groups": ["idp-hr-staff"], "amr": ["otp"]})),
        admin_west: token("ada", json!({"roles": ["admin"], "region": "west"})),
    }
}

/// `(method, path, caller token ("" = anonymous), expected status)` under the
/// demo policy in enforce mode. Path tricks are in [`path_attack_table`]:
/// runtimes normalise request URLs differently before the filter sees them.
pub fn rbac_table(c: &Callers) -> Vec<(&'static str, &'static str, String, u16)> {
    let anon = String::new();
    vec![
        ("GET", "/api/faq/pricing", anon.clone(), 200),
        ("GET", "/api/docs/intro", anon.clone(), 200),
        ("GET", "/api/faq/pricing", c.employee.clone(), 200),
        ("GET", "/api/directory/people", anon.clone(), 401),
        ("GET", "/api/directory/people", c.employee.clone(), 200),
        ("GET", "/api/me/profile", c.employee.clone(), 200),
        ("GET", "/api/hr/records", c.employee.clone(), 403),
        ("GET", "/api/hr/records", c.hr_mfa.clone(), 200),
        ("GET", "/api/hr/records", c.hr_no_mfa.clone(), 403),
        ("GET", "/api/hr/records", c.hr_by_group.clone(), 200),
        ("GET", "/api/hr/salaries/2026", c.hr_mfa.clone(), 200),
        ("GET", "/api/sales/east/q3", c.manager_east.clone(), 200),
        ("GET", "/api/sales/west/q3", c.manager_east.clone(), 403),
        ("GET", "/api/sales/west/q3", c.admin_west.clone(), 200),
        ("GET", "/api/sales/east/q3", c.sales_rep_east.clone(), 403),
        ("POST", "/api/sales/east/notes", c.sales_rep_east.clone(), 200),
        ("POST", "/api/sales/west/notes", c.sales_rep_east.clone(), 403),
        ("GET", "/api/sales", c.employee.clone(), 403),
        ("GET", "/api/sales", c.sales_rep_east.clone(), 200),
        ("GET", "/api/finance/q3", c.employee.clone(), 403),
        ("GET", "/api/finance/q3", c.admin_west.clone(), 200),
        ("POST", "/api/chat", c.employee.clone(), 200),
        ("GET", "/api/chat", c.employee.clone(), 403),
        ("GET", "/api/unlisted", c.admin_west.clone(), 403),
    ]
}

/// Path tricks: `(method, path, caller, allowed statuses)`. Whatever the
/// runtime's own URL normalisation, a trick never reaches what the plain path
/// would not: the filter refuses it (400), or sees the normalised path.
pub fn path_attack_table(c: &Callers) -> Vec<(&'static str, &'static str, String, &'static [u16])> {
    let anon = String::new();
    vec![
        ("GET", "/api/faq/../hr/records", anon.clone(), &[401]),
        ("GET", "/api/faq/%2e%2e/hr/records", anon.clone(), &[401]),
        ("GET", "/api/faq/..%2Fhr/records", anon.clone(), &[400, 401]),
        ("GET", "/api/faq/..%5Chr/records", anon.clone(), &[400, 401]),
        ("GET", "/api//hr//records", c.employee.clone(), &[403]),
        ("GET", "/api/./hr/./records", c.hr_mfa.clone(), &[200]),
        ("GET", "/api/faq/x?next=/api/hr/records", anon.clone(), &[200]),
        ("GET", "/API/HR/records", c.hr_mfa.clone(), &[403]),
    ]
}

/// A text with PII of several kinds, for redaction scenarios.
pub const PII_TEXT: &str = "Contact jane.doe@example.com or +1 415 555 0100, card 4111 1111 1111 1111, SSN 078-05-1120.";

/// An OpenAI-style event stream that carries [`PII_TEXT`] split over deltas.
pub fn pii_event_stream() -> String {
    let mut s = String::new();
    for word in PII_TEXT.split_inclusive(' ') {
        s.push_str(&format!("data: {}\n\n", json!({"choices": [{"delta": {"content": word}}]})));
    }
    s.push_str("data: {\"usage\":{\"total_tokens\":42}}\n\ndata: [DONE]\n\n");
    s
}

/// Rate limit whose every header value is known: one request per 5 s per
/// subject, with `RateLimit-Policy` / `RateLimit` on every answer.
pub fn slow_rate_sections() -> Value {
    json!({
        "rate_limits": [{ "name": "slow", "key": "subject", "capacity": 1, "refill_per_minute": 12 }],
        "rate_limit_settings": { "response_headers": true },
    })
}

/// What both hosts answer under [`slow_rate_sections`]: `(status,
/// retry-after, ratelimit-policy, ratelimit)` for two requests in a row.
pub const SLOW_RATE_ANSWERS: [(u16, Option<&str>, &str, &str); 2] = [
    (200, None, "\"slow\";q=1;w=5", "\"slow\";r=0;t=5"),
    (429, Some("5"), "\"slow\";q=1;w=5", "\"slow\";r=0;t=5"),
];

/// Three failed authentications lock the client address for `lock_seconds`.
pub fn lockout_sections(lock_seconds: u64) -> Value {
    json!({ "lockout": { "max_failures": 3, "window_seconds": 60, "lock_seconds": lock_seconds, "key": "client_ip" } })
}

/// A token with a valid header and claims but a forged EdDSA signature
/// (`bad_signature`): what a lockout counts.
pub fn forged_token(sub: &str) -> String {
    let payload = json!({"iss": tokens::ISSUER, "aud": tokens::AUDIENCE, "sub": sub, "exp": tokens::now() + 600});
    tokens::raw(json!({"alg": "EdDSA", "kid": "ed-1"}), payload, &[0u8; 64])
}

/// The sections the audit scenarios run with besides `audit` (both hosts): an
/// RBAC table with a granted, a denied and an open rule, a one-request burst
/// limit on the open one, and e-mail redaction of request bodies, so every
/// record type the scenario asserts is produced.
pub fn audit_sections() -> Value {
    json!({
        "rbac": {
            "roles_claim": "roles",
            "roles": {"employee": {"permissions": ["chat"]}},
            "rules": [
                {"id": "chat", "methods": ["POST"], "path": "/api/chat", "permissions": ["chat"]},
                {"id": "reports", "methods": ["GET"], "path": "/api/reports/**", "permissions": ["read_reports"]},
                {"id": "ping", "methods": ["GET"], "path": "/api/ping"}
            ],
            "default": "deny"
        },
        "rate_limits": [{"name": "ping-burst", "key": "subject", "rules": ["ping"], "capacity": 1, "refill_per_minute": 0.001}],
        "pii": {"request": true, "response": false, "entities": ["EMAIL_ADDRESS"], "operators": {"default": {"type": "replace"}}}
    })
}
