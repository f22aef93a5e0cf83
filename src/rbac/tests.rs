//! Scenario tests of the runtime against the demo policy and small policies.

use super::*;
use crate::config::Policy;
use serde_json::json;

/// Monday 2024-01-01 10:00 at +01:00 (09:00 UTC): inside office hours.
const MONDAY_10_LOCAL: u64 = 1_704_067_200_000 + 9 * 3_600_000;
/// Saturday 2024-01-06 10:00 at +01:00.
const SATURDAY_10_LOCAL: u64 = MONDAY_10_LOCAL + 5 * 86_400_000;

fn demo() -> CompiledRbac {
    CompiledRbac::default_policy().expect("demo policy has an rbac section")
}

fn claims(v: serde_json::Value) -> Claims {
    v.as_object().cloned().expect("object")
}

fn compile(rbac: serde_json::Value) -> CompiledRbac {
    let doc = json!({ "rbac": rbac });
    let policy = Policy::from_json(doc.to_string().as_bytes()).expect("valid policy");
    CompiledRbac::compile(&policy.rbac.expect("rbac")).expect("compiles")
}

/// Routes and decides; returns (allowed, rule id, reason).
fn ask(
    rbac: &CompiledRbac,
    method: &str,
    path: &str,
    caller: Option<serde_json::Value>,
    now: u64,
) -> (bool, Option<String>, Option<DenyReason>) {
    let p = NormalizedPath::parse(path).expect("path normalises");
    let route = rbac.route(method, "api.example.test", &p);
    let c = caller.map(claims);
    let d = rbac.decide(&route, c.as_ref(), now);
    (d.allowed, rbac.rule_id(&d).map(str::to_string), d.reason)
}

#[test]
fn default_policy_uses_the_static_tables_and_matches_runtime_compilation() {
    let stat = demo();
    assert!(stat.uses_static_tables());
    let policy = Policy::from_json(DEFAULT_POLICY_JSON.as_bytes()).unwrap();
    let runtime = CompiledRbac::compile(policy.rbac.as_ref().unwrap()).unwrap();
    assert!(!runtime.uses_static_tables());
    assert_eq!(stat.roles, runtime.roles);
    assert_eq!(stat.permissions, runtime.permissions);
    assert_eq!(stat.role_bits, runtime.role_bits);
}

/// The demo policy, request by request: (method, path, claims, now, allowed, rule, reason).
#[test]
fn demo_policy_decision_table() {
    let rbac = demo();
    let mfa = |roles: serde_json::Value| json!({"sub": "u", "roles": roles, "amr": ["pwd", "otp"]});
    let no_mfa = |roles: serde_json::Value| json!({"sub": "u", "roles": roles, "amr": ["pwd"]});
    use DenyReason::*;
    let cases: Vec<(&str, &str, Option<serde_json::Value>, u64, bool, Option<&str>, Option<DenyReason>)> = vec![
        ("GET", "/api/faq/shipping", None, MONDAY_10_LOCAL, true, Some("faq"), None),
        ("POST", "/api/faq/shipping", None, MONDAY_10_LOCAL, false, None, Some(NoRule)),
        ("GET", "/api/faq", None, MONDAY_10_LOCAL, true, Some("faq"), None),
        ("GET", "/api/faq/x", Some(no_mfa(json!(["employee"]))), MONDAY_10_LOCAL, true, Some("faq"), None),
        ("GET", "/api/faq/x", Some(no_mfa(json!([]))), MONDAY_10_LOCAL, true, Some("faq"), None),
        ("GET", "/api/hr/people/1", None, MONDAY_10_LOCAL, false, Some("hr-records"), Some(Unauthenticated)),
        ("GET", "/api/hr/people/1", Some(mfa(json!(["employee"]))), MONDAY_10_LOCAL, false, Some("hr-records"), Some(MissingPermission)),
        ("GET", "/api/hr/people/1", Some(no_mfa(json!(["hr_specialist"]))), MONDAY_10_LOCAL, false, Some("hr-records"), Some(MfaRequired)),
        ("GET", "/api/hr/people/1", Some(mfa(json!(["hr_specialist"]))), MONDAY_10_LOCAL, true, Some("hr-records"), None),
        ("GET", "/api/hr/salaries/2024", Some(mfa(json!(["hr_specialist"]))), MONDAY_10_LOCAL, true, Some("salaries"), None),
        ("GET", "/api/hr/salaries/2024", Some(mfa(json!(["hr_specialist"]))), SATURDAY_10_LOCAL, false, Some("salaries"), Some(OutsideHours)),
        ("GET", "/api/hr/salaries", Some(no_mfa(json!(["hr_specialist"]))), SATURDAY_10_LOCAL, false, Some("salaries"), Some(OutsideHours)),
        ("GET", "/api/hr/salaries", Some(mfa(json!(["admin"]))), MONDAY_10_LOCAL, true, Some("salaries"), None),
        ("GET", "/api/sales/emea/q1", Some(json!({"roles": ["sales_manager"], "region": "emea"})), 0, true, Some("team-sales"), None),
        ("GET", "/api/sales/apac/q1", Some(json!({"roles": ["sales_manager"], "region": "emea"})), 0, false, Some("team-sales"), Some(ClaimMismatch)),
        ("GET", "/api/sales/apac", Some(json!({"roles": ["sales_manager"], "region": ["emea", "apac"]})), 0, true, Some("team-sales"), None),
        ("GET", "/api/sales/apac/q1", Some(json!({"roles": ["sales_manager"]})), 0, false, Some("team-sales"), Some(ClaimMismatch)),
        ("GET", "/api/sales/apac/q1", Some(json!({"roles": ["admin"]})), 0, true, Some("team-sales"), None),
        ("GET", "/api/sales/emea/q1", Some(json!({"roles": ["sales_rep"], "region": "emea"})), 0, false, Some("team-sales"), Some(MissingPermission)),
        ("POST", "/api/sales/emea/notes", Some(json!({"roles": ["sales_rep"], "region": "emea"})), 0, true, Some("sales-notes"), None),
        ("POST", "/api/sales/apac/notes", Some(json!({"roles": ["sales_rep"], "region": "emea"})), 0, false, Some("sales-notes"), Some(ClaimMismatch)),
        ("GET", "/api/sales", Some(json!({"roles": "employee sales_rep"})), 0, true, Some("sales"), None),
        ("GET", "/api/sales", Some(json!({"roles": "employee"})), 0, false, Some("sales"), Some(MissingPermission)),
        ("GET", "/api/finance/q1", Some(json!({"roles": ["finance"]})), 0, true, Some("finance-reports"), None),
        ("GET", "/api/finance/q1", Some(json!({"roles": ["sales_manager"]})), 0, false, Some("finance-reports"), Some(MissingPermission)),
        ("GET", "/api/hr/people/1", Some(json!({"groups": ["idp-hr-staff"], "amr": ["hwk"]})), 0, true, Some("hr-records"), None),
        ("GET", "/api/hr/people/1", Some(json!({"roles": ["no-such-role"], "amr": ["mfa"]})), 0, false, Some("hr-records"), Some(MissingPermission)),
        ("POST", "/api/chat", Some(json!({"sub": "u"})), 0, true, Some("chat"), None),
        ("POST", "/api/chat", None, 0, false, Some("chat"), Some(Unauthenticated)),
        ("GET", "/api/chat", Some(json!({"roles": ["admin"]})), 0, false, None, Some(NoRule)),
        ("GET", "/api/unknown", Some(json!({"roles": ["admin"]})), 0, false, None, Some(NoRule)),
        // Path tricks land on the rule the upstream will actually serve.
        ("GET", "/api/faq/../hr/people/1", None, 0, false, Some("hr-records"), Some(Unauthenticated)),
        ("GET", "/api/faq/%2e%2e/hr/people/1", None, 0, false, Some("hr-records"), Some(Unauthenticated)),
        ("GET", "//api//hr/people", None, 0, false, Some("hr-records"), Some(Unauthenticated)),
        ("GET", "/api/./hr/people", None, 0, false, Some("hr-records"), Some(Unauthenticated)),
        ("GET", "/api/hr/", None, 0, false, Some("hr-records"), Some(Unauthenticated)),
        ("GET", "/api/hr", None, 0, false, Some("hr-records"), Some(Unauthenticated)),
        ("GET", "/api/%68r/people", None, 0, false, Some("hr-records"), Some(Unauthenticated)),
        ("GET", "/api/faq/x?next=/api/hr", None, 0, true, Some("faq"), None),
        ("GET", "/API/hr/people", None, 0, false, None, Some(NoRule)),
        ("GET", "/api/hr/salaries/../people", Some(mfa(json!(["hr_specialist"]))), SATURDAY_10_LOCAL, true, Some("hr-records"), None),
        ("GET", "/api/hr/x/../salaries/2024", Some(mfa(json!(["hr_specialist"]))), SATURDAY_10_LOCAL, false, Some("salaries"), Some(OutsideHours)),
    ];
    for (method, path, caller, now, allowed, rule, reason) in cases {
        let got = ask(&rbac, method, path, caller.clone(), now);
        assert_eq!(got, (allowed, rule.map(str::to_string), reason), "{method} {path} {caller:?}");
    }
}

#[test]
fn path_attacks_that_cannot_be_normalised_are_refused_before_routing() {
    use crate::path::PathError;
    for (path, err) in [
        ("/api/faq/..%2Fhr/people", PathError::EncodedSeparator),
        ("/api/faq%5C..%5Chr", PathError::EncodedSeparator),
        ("/api/faq/..;/hr", PathError::ForbiddenCharacter),
        ("/api/faq/%00/../hr", PathError::NulByte),
        ("/api/faq/%C0%AE%C0%AE/hr", PathError::InvalidPercentEncoding),
        ("/../api/hr", PathError::EscapesRoot),
    ] {
        assert_eq!(NormalizedPath::parse(path), Err(err), "{path}");
    }
}

#[test]
fn route_tells_whether_a_token_is_required() {
    let rbac = demo();
    let p = NormalizedPath::parse("/api/faq/x").unwrap();
    assert!(!rbac.route("GET", "h", &p).requires_authentication());
    let p = NormalizedPath::parse("/api/hr/x").unwrap();
    assert!(rbac.route("GET", "h", &p).requires_authentication());
    let p = NormalizedPath::parse("/nothing").unwrap();
    assert!(!rbac.route("GET", "h", &p).requires_authentication());
}

#[test]
fn decision_reports_roles_permissions_missing_and_conditions() {
    let rbac = demo();
    let p = NormalizedPath::parse("/api/hr/salaries/1").unwrap();
    let r = rbac.route("GET", "h", &p);
    let c = claims(json!({"roles": ["sales_rep"]}));
    let d = rbac.decide(&r, Some(&c), SATURDAY_10_LOCAL);
    assert_eq!(rbac.role_names(&d).collect::<Vec<_>>(), ["public", "sales_rep"]);
    assert_eq!(
        rbac.permission_names(&d).collect::<Vec<_>>(),
        [
            "read_public_faq",
            "read_public_docs",
            "read_company_directory",
            "read_own_data",
            "read_sales",
            "write_sales_notes",
            "read_own_performance"
        ]
    );
    assert_eq!(rbac.missing_permission(&d), Some("read_hr_data"));
    assert_eq!(d.reason, Some(DenyReason::MissingPermission));
    assert_eq!(
        d.conditions,
        Conditions { mfa: Check::Failed, hours: Check::Failed, claim_matches_path: Check::NotApplicable }
    );
    assert!(rbac.holds(&d, "read_sales"));
    assert!(!rbac.holds(&d, "read_pii"));
    assert!(!rbac.holds(&d, "no_such_permission"));
}

#[test]
fn admin_holds_everything_including_the_wildcard() {
    let rbac = demo();
    let p = NormalizedPath::parse("/api/me").unwrap();
    let c = claims(json!({"roles": ["admin"]}));
    let d = rbac.decide(&rbac.route("GET", "h", &p), Some(&c), 0);
    assert!(d.allowed);
    assert!(rbac.holds(&d, "*"));
    assert!(rbac.holds(&d, "export_financial_reports"));
    assert_eq!(rbac.permission_names(&d).count(), 17);
}

#[test]
fn shadow_mode_reports_but_does_not_enforce() {
    let rbac = compile(json!({
        "roles": {"reader": {"permissions": ["read"]}},
        "rules": [{"id": "docs", "path": "/docs/**", "permissions": ["read"]}],
        "mode": "shadow"
    }));
    let p = NormalizedPath::parse("/docs/a").unwrap();
    let c = claims(json!({"roles": []}));
    let d = rbac.decide(&rbac.route("GET", "h", &p), Some(&c), 0);
    assert!(!d.allowed && !d.enforced && d.proceeds());
    assert_eq!(rbac.shadow_header(&d), "deny;rule=docs;reason=missing_permission");
    let c = claims(json!({"roles": ["reader"]}));
    let d = rbac.decide(&rbac.route("GET", "h", &p), Some(&c), 0);
    assert_eq!(rbac.shadow_header(&d), "allow;rule=docs");
    let p = NormalizedPath::parse("/other").unwrap();
    let d = rbac.decide(&rbac.route("GET", "h", &p), None, 0);
    assert_eq!(rbac.shadow_header(&d), "deny;rule=-;reason=no_rule");
    assert!(d.proceeds());
}

#[test]
fn enforce_mode_does_not_proceed_on_deny() {
    let rbac = demo();
    let p = NormalizedPath::parse("/nothing").unwrap();
    let d = rbac.decide(&rbac.route("GET", "h", &p), None, 0);
    assert!(!d.proceeds());
}

#[test]
fn default_allow_lets_unmatched_requests_through() {
    let rbac = compile(json!({"default": "allow", "roles": {"a": {}}, "rules": [{"id": "x", "path": "/x", "permissions": ["p"]}]}));
    assert_eq!(ask(&rbac, "GET", "/y", None, 0), (true, None, None));
    assert_eq!(ask(&rbac, "GET", "/x", Some(json!({})), 0).2, Some(DenyReason::MissingPermission));
}

#[test]
fn inheritance_diamond_and_multiple_parents() {
    let rbac = compile(json!({
        "roles": {
            "base": {"permissions": ["b"]},
            "left": {"inherits": ["base"], "permissions": ["l"]},
            "right": {"inherits": ["base"], "permissions": ["r"]},
            "top": {"inherits": ["left", "right"], "permissions": ["t"]},
            "other": {"permissions": ["o"]}
        },
        "rules": [{"id": "all", "path": "/all", "permissions": ["b", "l", "r", "t"]}]
    }));
    assert!(ask(&rbac, "GET", "/all", Some(json!({"roles": ["top"]})), 0).0);
    assert!(!ask(&rbac, "GET", "/all", Some(json!({"roles": ["left"]})), 0).0);
    // Union over several roles held at once.
    assert!(ask(&rbac, "GET", "/all", Some(json!({"roles": ["left", "right", "other"], "x": 1})), 0).0 == false);
    let p = NormalizedPath::parse("/all").unwrap();
    let c = claims(json!({"roles": ["left", "right"]}));
    let d = rbac.decide(&rbac.route("GET", "h", &p), Some(&c), 0);
    assert_eq!(rbac.missing_permission(&d), Some("t"));
}

#[test]
fn roles_claim_is_a_dotted_path_array_or_string() {
    let rbac = compile(json!({
        "roles_claim": "realm_access.roles",
        "groups_claim": "grp",
        "groups_to_roles": {"g1": ["r"]},
        "roles": {"r": {"permissions": ["p"]}},
        "rules": [{"id": "x", "path": "/x", "permissions": ["p"]}]
    }));
    assert!(ask(&rbac, "GET", "/x", Some(json!({"realm_access": {"roles": ["r"]}})), 0).0);
    assert!(ask(&rbac, "GET", "/x", Some(json!({"realm_access": {"roles": "a r"}})), 0).0);
    assert!(!ask(&rbac, "GET", "/x", Some(json!({"roles": ["r"]})), 0).0);
    assert!(!ask(&rbac, "GET", "/x", Some(json!({"realm_access": {"roles": [["r"]]}})), 0).0);
    assert!(ask(&rbac, "GET", "/x", Some(json!({"grp": "g1"})), 0).0);
    assert!(!ask(&rbac, "GET", "/x", Some(json!({"groups": ["g1"]})), 0).0);
}

#[test]
fn mfa_via_configured_acr() {
    let rbac = compile(json!({
        "roles": {"r": {}},
        "mfa": {"amr": [], "acr": ["gold"]},
        "rules": [{"id": "x", "path": "/x", "require_mfa": true}]
    }));
    assert!(ask(&rbac, "GET", "/x", Some(json!({"acr": "gold"})), 0).0);
    assert_eq!(ask(&rbac, "GET", "/x", Some(json!({"amr": ["mfa"]})), 0).2, Some(DenyReason::MfaRequired));
}

#[test]
fn methods_and_hosts_match() {
    let rbac = compile(json!({
        "roles": {"r": {}},
        "rules": [
            {"id": "exact", "methods": ["GET", "HEAD"], "host": "api.example.test", "path": "/a"},
            {"id": "wild", "host": "*.example.test", "path": "/a"}
        ]
    }));
    let who = Some(claims(json!({})));
    let p = NormalizedPath::parse("/a").unwrap();
    let id = |m: &str, h: &str| {
        let d = rbac.decide(&rbac.route(m, h, &p), who.as_ref(), 0);
        rbac.rule_id(&d).map(str::to_string)
    };
    assert_eq!(id("GET", "api.example.test:8443").as_deref(), Some("exact"));
    assert_eq!(id("GET", "API.Example.Test").as_deref(), Some("exact"));
    assert_eq!(id("HEAD", "api.example.test").as_deref(), Some("exact"));
    assert_eq!(id("POST", "api.example.test").as_deref(), Some("wild"));
    assert_eq!(id("get", "other.example.test").as_deref(), Some("wild"));
    assert_eq!(id("GET", "example.test").as_deref(), None);
    assert_eq!(id("GET", "evil-example.test").as_deref(), None);
    assert_eq!(id("GET", "a.b.example.test").as_deref(), Some("wild"));
}

#[test]
fn templates_capture_one_segment_and_rest_matches_zero_or_more() {
    let rbac = compile(json!({
        "roles": {"r": {}},
        "rules": [
            {"id": "one", "path": "/t/{id}"},
            {"id": "rest", "path": "/r/{id}/**"},
            {"id": "root", "path": "/"}
        ]
    }));
    let who = Some(json!({}));
    let rule = |path: &str| ask(&rbac, "GET", path, who.clone(), 0).1;
    assert_eq!(rule("/t/1").as_deref(), Some("one"));
    assert_eq!(rule("/t/1/").as_deref(), Some("one"));
    assert_eq!(rule("/t/1/2"), None);
    assert_eq!(rule("/t"), None);
    assert_eq!(rule("/r/1").as_deref(), Some("rest"));
    assert_eq!(rule("/r/1/a/b/c").as_deref(), Some("rest"));
    assert_eq!(rule("/r"), None);
    assert_eq!(rule("/").as_deref(), Some("root"));
}

#[test]
fn first_match_order_is_kept_across_index_buckets() {
    let rbac = compile(json!({
        "roles": {"r": {}},
        "rules": [
            {"id": "specific", "methods": ["POST"], "path": "/api/a/x"},
            {"id": "param-first", "methods": ["GET"], "path": "/{any}/a/**"},
            {"id": "bucketed", "path": "/api/a/**"},
            {"id": "catch-all", "path": "/**"}
        ]
    }));
    let who = Some(json!({}));
    let rule = |m: &str, path: &str| ask(&rbac, m, path, who.clone(), 0).1;
    assert_eq!(rule("POST", "/api/a/x").as_deref(), Some("specific"));
    assert_eq!(rule("GET", "/api/a/x").as_deref(), Some("param-first"));
    assert_eq!(rule("GET", "/zzz/a").as_deref(), Some("param-first"));
    assert_eq!(rule("POST", "/api/a/y").as_deref(), Some("bucketed"));
    assert_eq!(rule("GET", "/api/b").as_deref(), Some("catch-all"));
    assert_eq!(rule("GET", "/").as_deref(), Some("catch-all"));
}

#[test]
fn response_filter_applies_unless_the_caller_holds_the_permission() {
    let rbac = demo();
    let p = NormalizedPath::parse("/api/directory/people").unwrap();
    let r = rbac.route("GET", "h", &p);
    let emp = claims(json!({"roles": ["employee"]}));
    let d = rbac.decide(&r, Some(&emp), 0);
    let f = rbac.response_filter(&d).expect("employees get filtered responses");
    let out = f.apply(br#"[{"name":"Ann","salary":100,"ssn":"x"}]"#).unwrap();
    assert_eq!(out.body, br#"[{"name":"Ann"}]"#);
    let hr = claims(json!({"roles": ["hr_specialist"]}));
    let d = rbac.decide(&r, Some(&hr), 0);
    assert!(rbac.response_filter(&d).is_none());
}

#[test]
fn no_allocation_sized_sets_for_the_demo_policy() {
    let rbac = demo();
    let p = NormalizedPath::parse("/api/me").unwrap();
    let c = claims(json!({"roles": ["employee"]}));
    let d = rbac.decide(&rbac.route("GET", "h", &p), Some(&c), 0);
    assert_eq!(d.permissions.words().len(), 1);
    assert_eq!(d.roles.words().len(), 1);
}
