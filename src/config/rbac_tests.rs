//! Validation of the `rbac` section: one rejection per rule, naming the field.

use super::super::rbac_matrix::{static_tables_for_policy, Grant, RbacMatrix};
use super::super::{ConfigError, Policy};
use serde_json::{json, Value};

fn check(rbac: Value) -> Result<RbacMatrix, ConfigError> {
    let doc = json!({ "rbac": rbac });
    let policy = Policy::from_json(doc.to_string().as_bytes())?;
    policy.rbac.unwrap_or_default().build_matrix()
}

fn invalid(field: &str, message_part: &str, rbac: Value) {
    match check(rbac.clone()) {
        Err(ConfigError::Invalid { field: f, message }) => {
            assert_eq!(f, field, "message: {message}");
            assert!(message.contains(message_part), "{message:?} lacks {message_part:?}");
        }
        other => panic!("expected Invalid at {field}, got {other:?} for {rbac}"),
    }
}

fn rule(extra: Value) -> Value {
    let mut r = json!({"id": "r", "path": "/x"});
    if let (Some(o), Some(e)) = (r.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    r
}

#[test]
fn rejections_name_the_field() {
    let roles = json!({"a": {"permissions": ["p"]}, "b": {"inherits": ["a"]}});
    let cases: Vec<(&str, &str, Value)> = vec![
        ("rbac.roles.b.inherits[0]", "unknown role `zz`", json!({"roles": {"b": {"inherits": ["zz"]}}})),
        ("rbac.roles.b.inherits[1]", "listed twice", json!({"roles": {"a": {}, "b": {"inherits": ["a", "a"]}}})),
        ("rbac.groups_to_roles.g[1]", "unknown role `nope`", json!({"roles": roles, "groups_to_roles": {"g": ["a", "nope"]}})),
        ("rbac.anonymous_role", "unknown role `ghost`", json!({"roles": roles, "anonymous_role": "ghost"})),
        ("rbac.roles.a.permissions[0]", "unknown permission `p`", json!({"permissions": ["q"], "roles": roles})),
        ("rbac.rules[0].permissions[0]", "unknown permission `typo`", json!({"permissions": ["p"], "roles": roles, "rules": [rule(json!({"permissions": ["typo"]}))]})),
        ("rbac.rules[0].response_fields.unless", "unknown permission `x`", json!({"permissions": ["p"], "roles": roles, "rules": [rule(json!({"response_fields": {"remove": ["ssn"], "unless": "x"}}))]})),
        ("rbac.permissions[1]", "declared twice", json!({"permissions": ["p", "p"]})),
        ("rbac.permissions[0]", "not `*`", json!({"permissions": ["*"]})),
        ("rbac.roles.bad name", "role name", json!({"roles": {"bad name": {}}})),
        ("rbac.roles_claim", "claim path", json!({"roles_claim": "a..b"})),
        ("rbac.rules[1].id", "duplicate rule id `r` (also rbac.rules[0])", json!({"rules": [rule(json!({})), rule(json!({"path": "/y"}))]})),
        ("rbac.rules[0].id", "rule id", json!({"rules": [rule(json!({"id": ""}))]})),
        ("rbac.rules[0].path", "starts with `/`", json!({"rules": [rule(json!({"path": "x"}))]})),
        ("rbac.rules[0].path", "`**` must be the last", json!({"rules": [rule(json!({"path": "/a/**/b"}))]})),
        ("rbac.rules[0].path", "empty segment", json!({"rules": [rule(json!({"path": "/a//b"}))]})),
        ("rbac.rules[0].path", "empty segment", json!({"rules": [rule(json!({"path": "/a/"}))]})),
        ("rbac.rules[0].path", "`.` and `..`", json!({"rules": [rule(json!({"path": "/a/../b"}))]})),
        ("rbac.rules[0].path", "bad parameter", json!({"rules": [rule(json!({"path": "/a/{}"}))]})),
        ("rbac.rules[0].path", "appears twice", json!({"rules": [rule(json!({"path": "/{a}/{a}"}))]})),
        ("rbac.rules[0].path", "character `*`", json!({"rules": [rule(json!({"path": "/a*"}))]})),
        ("rbac.rules[0].path", "character `%`", json!({"rules": [rule(json!({"path": "/a%2F"}))]})),
        ("rbac.rules[0].methods[0]", "upper-case", json!({"rules": [rule(json!({"methods": ["get"]}))]})),
        ("rbac.rules[0].methods[1]", "listed twice", json!({"rules": [rule(json!({"methods": ["GET", "GET"]}))]})),
        ("rbac.rules[0].host", "DNS name", json!({"rules": [rule(json!({"host": "a.test:80"}))]})),
        ("rbac.rules[0].hours.from", "HH:MM", json!({"rules": [rule(json!({"hours": {"from": "9:00", "to": "17:00"}}))]})),
        ("rbac.rules[0].hours.to", "HH:MM", json!({"rules": [rule(json!({"hours": {"from": "09:00", "to": "24:01"}}))]})),
        ("rbac.rules[0].hours.from", "HH:MM", json!({"rules": [rule(json!({"hours": {"from": "24:00", "to": "10:00"}}))]})),
        ("rbac.rules[0].hours.to", "window is empty", json!({"rules": [rule(json!({"hours": {"from": "00:00", "to": "24:00"}}))]})),
        ("rbac.rules[0].hours.days[1]", "one of mon", json!({"rules": [rule(json!({"hours": {"days": ["mon", "monday"], "from": "09:00", "to": "10:00"}}))]})),
        ("rbac.rules[0].hours.days[1]", "listed twice", json!({"rules": [rule(json!({"hours": {"days": ["mon", "mon"], "from": "09:00", "to": "10:00"}}))]})),
        ("rbac.rules[0].hours.utc_offset", "offset", json!({"rules": [rule(json!({"hours": {"from": "09:00", "to": "10:00", "utc_offset": "+15:00"}}))]})),
        ("rbac.rules[0].hours.utc_offset", "offset", json!({"rules": [rule(json!({"hours": {"from": "09:00", "to": "10:00", "utc_offset": "CET"}}))]})),
        ("rbac.rules[0].claim_matches_path.param", "not a `{param}`", json!({"rules": [rule(json!({"path": "/t/{team}", "claim_matches_path": {"claim": "team", "param": "region"}}))]})),
        ("rbac.rules[0].claim_matches_path.claim", "claim path", json!({"rules": [rule(json!({"path": "/t/{team}", "claim_matches_path": {"claim": "", "param": "team"}}))]})),
        ("rbac.rules[0].require_mfa", "cannot require MFA", json!({"rules": [rule(json!({"anonymous": true, "require_mfa": true}))]})),
        ("rbac.rules[0].claim_matches_path", "cannot match claims", json!({"rules": [rule(json!({"path": "/t/{t}", "anonymous": true, "claim_matches_path": {"claim": "t", "param": "t"}}))]})),
        ("rbac.rules[0].anonymous", "anonymous_role is not set", json!({"roles": roles, "rules": [rule(json!({"anonymous": true, "permissions": ["p"]}))]})),
        ("rbac.rules[0].anonymous", "does not hold `q`", json!({"roles": {"a": {"permissions": ["p"]}}, "anonymous_role": "a", "rules": [rule(json!({"anonymous": true, "permissions": ["q"]}))]})),
        ("rbac.rules[0].response_fields.remove", "at least one", json!({"rules": [rule(json!({"response_fields": {"remove": []}}))]})),
        ("rbac.mfa", "nobody could pass", json!({"mfa": {"amr": []}, "rules": [rule(json!({"require_mfa": true}))]})),
        ("rbac.rules[1]", "rule `deep` is never reached: rule `hr` (rbac.rules[0])", json!({"rules": [
            {"id": "hr", "path": "/api/hr/**"}, {"id": "deep", "methods": ["GET"], "path": "/api/hr/salaries/{year}"}]})),
        ("rbac.rules[1]", "never reached", json!({"rules": [
            {"id": "any", "path": "/{a}/{b}"}, {"id": "lit", "host": "x.test", "path": "/a/b"}]})),
        ("rbac.rules[1]", "never reached", json!({"rules": [
            {"id": "wild", "host": "*.example.test", "path": "/a"}, {"id": "one", "host": "api.example.test", "path": "/a"}]})),
    ];
    for (field, message, rbac) in cases {
        invalid(field, message, rbac);
    }
}

#[test]
fn overlapping_but_reachable_rules_are_accepted() {
    for rules in [
        json!([{"id": "a", "methods": ["GET"], "path": "/x/**"}, {"id": "b", "path": "/x/y"}]),
        json!([{"id": "a", "path": "/x/{p}"}, {"id": "b", "path": "/x/**"}]),
        json!([{"id": "a", "host": "a.test", "path": "/x"}, {"id": "b", "path": "/x"}]),
        json!([{"id": "a", "path": "/x/y/**"}, {"id": "b", "path": "/x/**"}]),
    ] {
        check(json!({"rules": rules})).unwrap();
    }
}

#[test]
fn inheritance_cycles_are_refused_with_the_cycle_named() {
    invalid(
        "rbac.roles.c.inherits[0]",
        "inheritance cycle: c -> a -> b -> c",
        json!({"roles": {"a": {"inherits": ["b"]}, "b": {"inherits": ["c"]}, "c": {"inherits": ["a"]}}}),
    );
    invalid("rbac.roles.self.inherits[0]", "inheritance cycle: self -> self", json!({"roles": {"self": {"inherits": ["self"]}}}));
    invalid(
        "rbac.roles.y.inherits[1]",
        "inheritance cycle: y -> x -> y",
        json!({"roles": {"ok": {}, "x": {"inherits": ["ok", "y"]}, "y": {"inherits": ["ok", "x"]}}}),
    );
}

#[test]
fn duplicate_role_is_a_schema_error_naming_it() {
    let err = Policy::from_json(br#"{"rbac": {"roles": {"a": {}, "a": {}}}}"#).unwrap_err();
    assert!(matches!(&err, ConfigError::Schema { field, .. } if field == "rbac.roles"), "{err:?}");
    assert!(err.to_string().contains("duplicate key `a`"), "{err}");
}

#[test]
fn flattening_diamonds_multiple_parents_and_wildcard() {
    let m = check(json!({
        "roles": {
            "base": {"permissions": ["b"]},
            "left": {"inherits": ["base"], "permissions": ["l"]},
            "right": {"inherits": ["base"], "permissions": ["r", "b"]},
            "top": {"inherits": ["left", "right"]},
            "root": {"permissions": ["*"]},
            "heir": {"inherits": ["root"], "permissions": ["l"]}
        },
        "rules": [{"id": "only-admins", "path": "/x", "permissions": ["secret"]}]
    }))
    .unwrap();
    assert_eq!(m.permissions, ["*", "b", "l", "r", "secret"]);
    let (top, right, heir) = (m.role_index("top").unwrap(), m.role_index("right").unwrap(), m.role_index("heir").unwrap());
    assert_eq!(m.role_bits(top), [0b01110]);
    assert_eq!(m.grant(top, 1), Grant::Inherited);
    assert_eq!(m.grant(right, 1), Grant::Direct, "direct wins over inherited");
    assert_eq!(m.grant(top, 4), Grant::None);
    assert_eq!(m.role_bits(heir), [0b11111]);
    assert_eq!(m.grant(heir, 2), Grant::Direct);
    assert_eq!(m.grant(heir, 4), Grant::Wildcard);
    assert_eq!(m.grant(heir, 0), Grant::Inherited);
}

#[test]
fn more_than_64_permissions_use_several_words() {
    let perms: Vec<String> = (0..130).map(|i| format!("p{i}")).collect();
    let m = check(json!({"roles": {"big": {"permissions": perms}, "all": {"permissions": ["*"]}}})).unwrap();
    assert_eq!(m.words, 3);
    assert_eq!(m.role_bits(m.role_index("big").unwrap()), [u64::MAX - 1, u64::MAX, 0b111]);
    assert_eq!(m.role_bits(m.role_index("all").unwrap()), [u64::MAX, u64::MAX, 0b111]);
}

/// What `build.rs` runs: a broken copy of the default policy fails with a
/// message naming the culprit (the build prints it and stops).
#[test]
fn broken_default_policy_fails_the_build_step_naming_the_culprit() {
    let original: Value = serde_json::from_slice(include_bytes!("../../policy/default.json")).unwrap();
    assert!(static_tables_for_policy(original.to_string().as_bytes()).unwrap().contains("DEFAULT_ROLE_BITS"));
    type Breaker = fn(&mut Value);
    let breakers: Vec<(&str, &str, Breaker)> = vec![
        ("rbac.roles.admin.inherits[0]", "inheritance cycle: admin -> public -> admin", |p| {
            p["rbac"]["roles"]["public"]["inherits"] = json!(["admin"]);
            p["rbac"]["roles"]["admin"]["inherits"] = json!(["public"]);
        }),
        ("rbac.roles.finance.inherits[0]", "unknown role `employe`", |p| {
            p["rbac"]["roles"]["finance"]["inherits"] = json!(["employe"]);
        }),
        ("rbac.groups_to_roles.idp-hr-staff[0]", "unknown role `hr`", |p| {
            p["rbac"]["groups_to_roles"]["idp-hr-staff"] = json!(["hr"]);
        }),
        ("rbac.rules[0].permissions[0]", "unknown permission `read_team_sale`", |p| {
            p["rbac"]["rules"][0]["permissions"] = json!(["read_team_sale"]);
        }),
        ("rbac.rules[1].id", "duplicate rule id `team-sales`", |p| {
            p["rbac"]["rules"][1]["id"] = json!("team-sales");
        }),
    ];
    for (field, message, breaker) in breakers {
        let mut broken = original.clone();
        breaker(&mut broken);
        let err = static_tables_for_policy(broken.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.field(), field);
        assert!(err.to_string().contains(message), "{err}");
    }
}
