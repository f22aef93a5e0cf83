//! Authorization end to end: the demo policy's RBAC matrix and rules, enforced
//! by the built module in a real Envoy, including path-normalisation attacks.

use serde_json::{json, Value};
use wasm_tests::e2e::{self, http, Envoy, EnvoyConfig, Reply, Upstream};
use wasm_tests::tokens::{self, keys};
use jwt_simple::prelude::*;

/// The compiled-in demo policy, trusting the test keys inline. Rate limits and
/// audit are left out (their own tests cover them); `salaries` loses its office
/// hours so the table does not depend on when CI runs (unit tests cover hours).
fn demo_policy(mode: &str) -> Value {
    let mut p: Value = serde_json::from_str(include_str!("../../policy/default.json")).unwrap();
    let obj = p.as_object_mut().unwrap();
    for k in ["rate_limits", "rate_limit_settings", "lockout", "audit"] {
        obj.remove(k);
    }
    let provider = &mut p["jwt"]["providers"][0];
    provider.as_object_mut().unwrap().remove("remote_jwks");
    provider["jwks"] = tokens::jwks(false);
    for rule in p["rbac"]["rules"].as_array_mut().unwrap() {
        rule.as_object_mut().unwrap().remove("hours");
    }
    p["rbac"]["mode"] = json!(mode);
    p
}

fn token(sub: &str, extra: Value) -> String {
    keys().rs256.sign(tokens::claims(sub, extra)).unwrap()
}

struct Callers {
    employee: String,
    sales_rep_east: String,
    manager_east: String,
    hr_mfa: String,
    hr_no_mfa: String,
    hr_by_group: String,
    admin_west: String,
}

fn callers() -> Callers {
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

#[test]
fn the_demo_matrix_and_rules_hold_end_to_end() {
    if e2e::skip_without_chatguard("the_demo_matrix_and_rules_hold_end_to_end") {
        return;
    }
    let up = Upstream::start();
    let envoy = Envoy::start(EnvoyConfig::chatguard(&demo_policy("enforce").to_string()).upstream(up.port())).unwrap();
    let c = callers();
    let anon = "";
    // (method, path, caller token, expected status)
    let table: Vec<(&str, &str, &str, u16)> = vec![
        ("GET", "/api/faq/pricing", anon, 200),
        ("GET", "/api/docs/intro", anon, 200),
        ("GET", "/api/faq/pricing", &c.employee, 200),
        ("GET", "/api/directory/people", anon, 401),
        ("GET", "/api/directory/people", &c.employee, 200),
        ("GET", "/api/me/profile", &c.employee, 200),
        ("GET", "/api/hr/records", &c.employee, 403),
        ("GET", "/api/hr/records", &c.hr_mfa, 200),
        ("GET", "/api/hr/records", &c.hr_by_group, 200),
        ("GET", "/api/hr/salaries/2026", &c.hr_mfa, 200),
        ("GET", "/api/sales/east/q3", &c.manager_east, 200),
        ("GET", "/api/sales/west/q3", &c.manager_east, 403),
        ("GET", "/api/sales/west/q3", &c.admin_west, 200),
        ("GET", "/api/sales/east/q3", &c.sales_rep_east, 403),
        ("POST", "/api/sales/east/notes", &c.sales_rep_east, 200),
        ("POST", "/api/sales/west/notes", &c.sales_rep_east, 403),
        ("GET", "/api/sales", &c.employee, 403),
        ("GET", "/api/sales", &c.sales_rep_east, 200),
        ("GET", "/api/finance/q3", &c.employee, 403),
        ("GET", "/api/finance/q3", &c.admin_west, 200),
        ("POST", "/api/chat", &c.employee, 200),
        ("GET", "/api/chat", &c.employee, 403),
        ("GET", "/api/unlisted", &c.admin_west, 403),
        // Path tricks: matching happens on the normalised path, never the raw one.
        ("GET", "/api/faq/../hr/records", anon, 401),
        ("GET", "/api/faq/%2e%2e/hr/records", anon, 401),
        ("GET", "/api/faq/..%2Fhr/records", anon, 400),
        ("GET", "/api/faq/..%5Chr/records", anon, 400),
        ("GET", "/api/faq/%2E%2E/%2E%2E/../etc", anon, 400),
        ("GET", "/api//hr//records", &c.employee, 403),
        ("GET", "/api/./hr/./records", &c.hr_mfa, 200),
        ("GET", "/api/faq/x?next=/api/hr/records", anon, 200),
        ("GET", "/API/HR/records", &c.hr_mfa, 403),
        ("GET", "/api/faq/..;/hr/records", anon, 400),
    ];
    for (method, path, who, want) in &table {
        up.clear();
        let auth = (!who.is_empty()).then(|| format!("Bearer {who}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = http::request(envoy.listener_port(), method, path, &headers, if *method == "POST" { b"{}" } else { b"" });
        assert_eq!(r.status, *want, "{method} {path} as {}: {}", if who.is_empty() { "anonymous" } else { "caller" }, r.text());
        assert_eq!(up.request_count(), usize::from(*want == 200), "{method} {path}: upstream reached iff allowed");
        if *want == 403 {
            let body = r.json();
            assert_eq!(body["error"], "forbidden");
            assert!(body.get("rule").is_none() && !r.text().contains("read_"), "no rule or permission leaks to the caller");
        }
    }
    assert!(envoy.counter("wasmcustom.chatguard.authz_denied").unwrap_or(0) >= 10);
}

#[test]
fn missing_mfa_gets_the_step_up_challenge() {
    if e2e::skip_without_chatguard("missing_mfa_gets_the_step_up_challenge") {
        return;
    }
    let up = Upstream::start();
    let envoy = Envoy::start(EnvoyConfig::chatguard(&demo_policy("enforce").to_string()).upstream(up.port())).unwrap();
    let auth = format!("Bearer {}", callers().hr_no_mfa);
    let r = http::get(envoy.listener_port(), "/api/hr/records", &[("authorization", &auth)]);
    assert_eq!(r.status, 403);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("error=\"insufficient_user_authentication\""), "{challenge}");
    assert_eq!(up.request_count(), 0);
}

#[test]
fn response_fields_are_removed_unless_the_caller_may_see_them() {
    if e2e::skip_without_chatguard("response_fields_are_removed_unless_the_caller_may_see_them") {
        return;
    }
    let up = Upstream::start();
    let record = json!({"people": [{"name": "Jo", "team": "eng", "salary": 91000, "nested": {"ssn_note": "x", "home_address": "1 Main St"}}]});
    up.on_prefix("/api/directory/", Reply::json(200, &record));
    let mut policy = demo_policy("enforce");
    policy.as_object_mut().unwrap().remove("pii");
    let envoy = Envoy::start(EnvoyConfig::chatguard(&policy.to_string()).upstream(up.port())).unwrap();
    let c = callers();
    let as_employee = http::get(envoy.listener_port(), "/api/directory/people", &[("authorization", &format!("Bearer {}", c.employee))]);
    assert_eq!(as_employee.status, 200);
    assert_eq!(as_employee.json(), json!({"people": [{"name": "Jo", "team": "eng", "nested": {"ssn_note": "x"}}]}));
    let as_hr = http::get(envoy.listener_port(), "/api/directory/people", &[("authorization", &format!("Bearer {}", c.hr_mfa))]);
    assert_eq!(as_hr.json(), record, "read_pii holders see every field");
}

#[test]
fn shadow_mode_reports_without_enforcing() {
    if e2e::skip_without_chatguard("shadow_mode_reports_without_enforcing") {
        return;
    }
    let up = Upstream::start();
    let envoy = Envoy::start(EnvoyConfig::chatguard(&demo_policy("shadow").to_string()).upstream(up.port())).unwrap();
    let auth = format!("Bearer {}", callers().employee);
    let r = http::get(envoy.listener_port(), "/api/hr/records", &[("authorization", &auth), ("x-chatguard-shadow", "allow;forged")]);
    assert_eq!(r.status, 200, "shadow mode does not enforce");
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("x-chatguard-shadow"), Some("deny;rule=hr-records;reason=missing_permission"));
    assert_eq!(envoy.counter("wasmcustom.chatguard.authz_shadow_denied"), Some(1));
}

#[test]
fn bad_role_inheritance_refuses_to_load() {
    if e2e::skip_without_chatguard("bad_role_inheritance_refuses_to_load") {
        return;
    }
    let up = Upstream::start();
    let mut policy = demo_policy("enforce");
    policy["rbac"]["roles"]["public"]["inherits"] = json!(["admin", "employee"]);
    let err = Envoy::start(EnvoyConfig::chatguard(&policy.to_string()).upstream(up.port())).err().expect("refused");
    assert!(err.log.contains("inheritance cycle"), "{}", err.message);
}

#[allow(dead_code)]
fn unused(_: Duration) {}
