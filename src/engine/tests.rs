//! Pipeline tests: what the caller and the upstream see.

use super::*;
use crate::host::MemoryHost;
use crate::jwt::tests::{claims, jwks_json, keys, NOW};
use jwt_simple::prelude::*;

fn engine(extra: serde_json::Value) -> Engine {
    let mut provider = serde_json::json!({
        "name": "corp", "issuer": crate::jwt::tests::ISS, "audiences": [crate::jwt::tests::AUD],
        "jwks": jwks_json(),
        "claim_to_headers": [{"claim": "sub", "header": "x-user-id"}, {"claim": "roles", "header": "x-roles"}]
    });
    for (k, v) in extra.as_object().unwrap() {
        provider[k] = v.clone();
    }
    let doc = serde_json::json!({"jwt": {"providers": [provider]}}).to_string();
    Engine::from_json(doc.as_bytes()).unwrap()
}

fn head(headers: &[(&str, &str)]) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: "/api/chat".into(),
        authority: "chat.example.test".into(),
        headers: headers.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        downstream: Some("10.1.2.3:5555".into()),
        body_follows: false,
    }
}

fn host() -> MemoryHost {
    MemoryHost::at(NOW * 1000)
}

#[test]
fn missing_token_gets_a_bare_bearer_challenge() {
    let e = engine(serde_json::json!({}));
    let RequestVerdict::Respond { reply, ctx } = e.on_request_headers(&host(), &head(&[("x-request-id", "0b1c2d3e-0000-4000-8000-000000000001")]), true) else {
        panic!("expected a reply")
    };
    assert_eq!(reply.status, 401);
    assert_eq!(reply.headers[0], ("www-authenticate".into(), "Bearer realm=\"chatguard\"".into()));
    assert_eq!(String::from_utf8(reply.body).unwrap(), r#"{"error":"unauthorized","reason":"missing","request_id":"0b1c2d3e-0000-4000-8000-000000000001"}"#);
    assert_eq!(ctx.authn_failure, Some(AuthnFailure::Missing));
}

#[test]
fn invalid_token_gets_invalid_token_and_is_never_echoed() {
    let e = engine(serde_json::json!({}));
    let h = host();
    let mut c = claims();
    c.expires_at = Some(Duration::from_secs(NOW - 3600));
    let token = keys().ed.sign(c).unwrap();
    let auth = format!("Bearer {token}");
    let RequestVerdict::Respond { reply, .. } = e.on_request_headers(&h, &head(&[("authorization", &auth)]), true) else {
        panic!("expected a reply")
    };
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.headers[0].1,
        "Bearer realm=\"chatguard\", error=\"invalid_token\", error_description=\"the token has expired\""
    );
    let body = String::from_utf8(reply.body).unwrap();
    assert_eq!(body, r#"{"error":"unauthorized","reason":"expired"}"#);
    assert_eq!(h.counter("authn_failures.expired"), 1);
    for (_, line) in h.logs.borrow().iter() {
        assert!(!line.contains(&token[..20]), "token in log: {line}");
    }
}

#[test]
fn valid_token_sets_claim_headers_strips_forged_ones_and_the_token() {
    let e = engine(serde_json::json!({}));
    let h = host();
    let token = keys().rsa.sign(claims()).unwrap();
    let auth = format!("bearer {token}");
    let req = head(&[("authorization", &auth), ("x-user-id", "forged-admin")]);
    let RequestVerdict::Forward { edits, ctx } = e.on_request_headers(&h, &req, true) else { panic!("expected forward") };
    assert!(edits.remove.contains(&"x-user-id".to_string()));
    assert!(edits.remove.contains(&"authorization".to_string()), "forward=false strips the token");
    assert!(edits.set.contains(&("x-user-id".into(), "alice".into())));
    assert!(edits.set.contains(&("x-roles".into(), "employee".into())));
    assert_eq!(ctx.token.unwrap().subject.as_deref(), Some("alice"));
    assert_eq!(h.counter("token_cache_misses"), 1);
    e.on_request_headers(&h, &req, true);
    assert_eq!(h.counter("token_cache_hits"), 1);
}

#[test]
fn forward_true_keeps_the_token() {
    let e = engine(serde_json::json!({"forward": true}));
    let token = keys().rsa.sign(claims()).unwrap();
    let auth = format!("Bearer {token}");
    let RequestVerdict::Forward { edits, .. } = e.on_request_headers(&host(), &head(&[("authorization", &auth)]), true) else {
        panic!()
    };
    assert!(!edits.remove.contains(&"authorization".to_string()));
}

#[test]
fn token_in_a_query_parameter_is_removed_from_the_path() {
    let e = engine(serde_json::json!({"from_params": ["access_token"]}));
    let token = keys().es256.sign(claims()).unwrap();
    let mut req = head(&[]);
    req.path = format!("/api/chat?q=1&access_token={token}&x=2");
    let RequestVerdict::Forward { edits, .. } = e.on_request_headers(&host(), &req, true) else { panic!() };
    assert!(edits.set.contains(&(":path".into(), "/api/chat?q=1&x=2".into())));
}

#[test]
fn claim_values_with_control_characters_are_not_rendered() {
    assert_eq!(header_value(&serde_json::json!("a\r\nx-admin: 1")), None);
    assert_eq!(header_value(&serde_json::json!(["a", "b"])), Some("a,b".into()));
    assert_eq!(header_value(&serde_json::json!(42)), Some("42".into()));
    assert_eq!(header_value(&serde_json::json!({"a": 1})), None);
}

#[test]
fn default_policy_compiles() {
    let e = Engine::default_policy().unwrap();
    assert_eq!(e.verifier().provider_count(), 1);
    assert_eq!(e.policy_hash().len(), 16);
}

fn pii_engine() -> Engine {
    let provider = serde_json::json!({
        "name": "corp", "issuer": crate::jwt::tests::ISS, "audiences": [crate::jwt::tests::AUD],
        "jwks": jwks_json()
    });
    let doc = serde_json::json!({"jwt": {"providers": [provider]}, "pii": {"max_body_bytes": 64}}).to_string();
    Engine::from_json(doc.as_bytes()).unwrap()
}

#[test]
fn a_body_without_content_length_is_still_inspected_and_bounded() {
    // HTTP/2 bodies and HTTP/1 chunked ones (Envoy strips transfer-encoding)
    // announce nothing but `body_follows`; they must not skip redaction.
    let e = pii_engine();
    let h = host();
    let token = keys().rsa.sign(claims()).unwrap();
    let auth = format!("Bearer {token}");
    let mut req = head(&[("authorization", &auth), ("content-type", "application/json")]);
    req.method = "POST".into();
    req.body_follows = true;
    let RequestVerdict::Forward { mut ctx, edits } = e.on_request_headers(&h, &req, true) else { panic!("expected forward") };
    assert_eq!(ctx.request_body, Some(BodyKind::Json));
    assert!(edits.remove.contains(&"content-length".to_string()));
    let body = br#"{"c":"mail jane.doe@example.com"}"#;
    assert_eq!(e.on_request_body(&h, &mut ctx, body, true), BodyAction::Replace(br#"{"c":"mail <EMAIL_ADDRESS>"}"#.to_vec()));
    let big = [b' '; 65];
    assert!(matches!(e.on_request_body(&h, &mut ctx, &big, false), BodyAction::Reply(r) if r.status == 413));
    assert_eq!(h.counter("body_too_large"), 1);

    // An announced oversized body is refused at the headers, and counted the same way.
    let mut req = head(&[("authorization", &auth), ("content-type", "application/json"), ("content-length", "65")]);
    req.method = "POST".into();
    let RequestVerdict::Respond { reply, ctx } = e.on_request_headers(&h, &req, true) else { panic!("expected 413") };
    assert_eq!(reply.status, 413);
    assert_eq!(ctx.deny_code, Some("body_too_large"));
    assert_eq!(h.counter("body_too_large"), 2);

    // Unlisted content types pass, counted.
    let mut req = head(&[("authorization", &auth), ("content-type", "application/xml")]);
    req.body_follows = true;
    let RequestVerdict::Forward { ctx, .. } = e.on_request_headers(&h, &req, true) else { panic!("expected forward") };
    assert_eq!(ctx.request_body, None);
    assert_eq!(h.counter("pii_unlisted_content_type.request"), 1);
}

#[test]
fn buffered_bodies_are_decided_by_size_until_their_end() {
    // Envoy hands the filter everything buffered so far on every chunk; the
    // host reads the bytes only when these say the size alone cannot decide.
    let e = pii_engine();
    let h = host();
    let token = keys().rsa.sign(claims()).unwrap();
    let auth = format!("Bearer {token}");
    let mut req = head(&[("authorization", &auth), ("content-type", "text/plain")]);
    req.method = "POST".into();
    req.body_follows = true;
    let RequestVerdict::Forward { mut ctx, .. } = e.on_request_headers(&h, &req, true) else { panic!("expected forward") };
    assert_eq!(e.request_body_by_size(&h, &mut ctx, 10, false), Some(BodyAction::Buffer));
    assert_eq!(e.request_body_by_size(&h, &mut ctx, 64, false), Some(BodyAction::Buffer));
    assert_eq!(e.request_body_by_size(&h, &mut ctx, 64, true), None, "the end needs the bytes");
    assert!(matches!(e.request_body_by_size(&h, &mut ctx, 65, false), Some(BodyAction::Reply(r)) if r.status == 413));
    assert_eq!(h.counter("body_too_large"), 1);

    let mut ctx = RequestContext::default();
    assert_eq!(e.request_body_by_size(&h, &mut ctx, 1 << 20, false), Some(BodyAction::Continue), "not inspected");
    assert_eq!(e.response_body_by_size(&ctx, 1 << 20, false), Some(BodyAction::Continue), "no plan: passes");
    let headers = [("content-type".to_string(), "text/plain".to_string())];
    e.on_response_headers(&h, &mut ctx, &headers);
    assert!(matches!(ctx.response, ResponsePlan::Buffer { .. }));
    assert_eq!(e.response_body_by_size(&ctx, 64, false), Some(BodyAction::Buffer));
    assert_eq!(e.response_body_by_size(&ctx, 64, true), None);
    assert_eq!(e.response_body_by_size(&ctx, 65, false), None, "over the limit: streamed, needs the bytes");
    let sse = [("content-type".to_string(), "text/event-stream".to_string())];
    let mut ctx = RequestContext::default();
    e.on_response_headers(&h, &mut ctx, &sse);
    assert_eq!(e.response_body_by_size(&ctx, 10, false), None, "a stream reads every chunk");
}

#[test]
fn a_buffered_response_with_nothing_found_goes_on_untouched() {
    // Nothing to change: the host keeps the bytes it holds (no copy back).
    let e = pii_engine();
    let h = host();
    let headers = [("content-type".to_string(), "text/plain".to_string())];
    let mut ctx = RequestContext::default();
    e.on_response_headers(&h, &mut ctx, &headers);
    assert_eq!(e.on_response_body(&h, &mut ctx, b"nothing to see", true), BodyAction::Continue);
    let mut ctx = RequestContext::default();
    e.on_response_headers(&h, &mut ctx, &headers);
    assert_eq!(
        e.on_response_body(&h, &mut ctx, b"mail jane.doe@example.com", true),
        BodyAction::Replace(b"mail <EMAIL_ADDRESS>".to_vec())
    );
    assert_eq!(ctx.response_findings.count(crate::pii::Entity::EmailAddress), 1);
}
