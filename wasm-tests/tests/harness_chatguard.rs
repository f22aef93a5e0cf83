//! The built chatguard.wasm in the wasmtime proxy-wasm harness: the ABI paths
//! Envoy exercises (local replies, header edits, parked requests resumed from
//! the root context, bodies in 5-byte chunks, shared-data CAS, outbound calls),
//! fast and deterministic. The real Envoy tests complement these.

use jwt_simple::prelude::*;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration as StdDuration, UNIX_EPOCH};
use wasm_tests::e2e;
use wasm_tests::harness::{Action, HarnessError, Plugin, Request, Response, Sandbox, SharedData};
use wasm_tests::tokens::{self, keys};

fn plugin() -> Option<Arc<Plugin>> {
    if e2e::skip_without_chatguard("harness_chatguard") {
        return None;
    }
    Some(Plugin::cached(e2e::chatguard_wasm().expect("module path")).expect("chatguard.wasm loads in the harness"))
}

/// A sandbox at the real current time (tokens are minted now).
fn sandbox(plugin: &Plugin, policy: &serde_json::Value) -> Sandbox {
    Sandbox::builder(plugin)
        .config(policy.to_string())
        .time(std::time::SystemTime::now())
        .upstreams(&["idp", "audit_collector"])
        .property(&["source", "address"], "10.0.0.7:4242")
        .start()
        .expect("policy accepted")
}

fn inline_policy(extra: serde_json::Value) -> serde_json::Value {
    tokens::policy_inline(&tokens::jwks(false), extra)
}

#[test]
fn an_invalid_policy_is_refused_naming_the_field() {
    let Some(plugin) = plugin() else { return };
    let bad = json!({"jwt": {"providers": [{"name": "a", "jwks": {"keys": []}, "clock_skew_seconds": "60"}]}});
    match Sandbox::builder(&plugin).config(bad.to_string()).start() {
        Err(HarnessError::ConfigureRefused { logs }) => {
            assert!(
                logs.iter().any(|(_, l)| l.contains("policy field `jwt.providers[0].clock_skew_seconds`")),
                "{logs:?}"
            );
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn missing_and_valid_tokens() {
    let Some(plugin) = plugin() else { return };
    let mut sb = sandbox(&plugin, &inline_policy(json!({})));
    let mut s = sb.http().unwrap();
    let sent = s.send_request(&Request::get("/api/chat")).unwrap();
    assert_eq!(sent.headers, Action::Pause);
    let reply = s.local_response().expect("401");
    assert_eq!(reply.status, 401);
    assert_eq!(reply.headers.get("www-authenticate"), Some("Bearer realm=\"chatguard\""));
    assert!(s.forwarded_request_headers().is_none(), "nothing went upstream");

    let token = tokens::rs256("alice", &["employee"]);
    let mut s = sb.http().unwrap();
    let sent = s.send_request(&Request::get("/api/chat").bearer(&token).header("x-user-id", "root")).unwrap();
    assert_eq!(sent.headers, Action::Continue);
    let fwd = s.forwarded_request_headers().unwrap();
    assert_eq!(fwd.get_all("x-user-id"), vec!["alice"]);
    assert_eq!(fwd.get("authorization"), None);
    assert_eq!(sb.metric("chatguard.token_cache_misses"), Some(1));
}

#[test]
fn a_request_waits_for_remote_keys_and_is_resumed_from_the_root_context() {
    let Some(plugin) = plugin() else { return };
    let policy = tokens::policy_remote(json!({}), json!({}));
    let mut sb = sandbox(&plugin, &policy);
    let token = tokens::rs256("alice", &[]);
    let id = {
        let mut s = sb.http().unwrap();
        let sent = s.send_request(&Request::get("/api/chat").bearer(&token)).unwrap();
        assert_eq!(sent.headers, Action::Pause, "parked until keys arrive");
        s.id()
    };
    sb.advance_ticking(StdDuration::from_millis(150)).unwrap();
    let call = sb.pending_calls().into_iter().find(|c| c.upstream == "idp").expect("JWKS fetch dispatched on tick");
    assert_eq!(call.headers.get(":path"), Some("/.well-known/jwks.json"));
    assert_eq!(call.headers.get(":authority"), Some("idp.example.test"));
    sb.respond_to_call(call.token, 200, &[("content-type", "application/json")], tokens::jwks(false).to_string().as_bytes())
        .unwrap();
    assert!(!sb.resumes().is_empty(), "the parked request was resumed");
    let s = sb.stream(id);
    assert_eq!(s.forwarded_request_headers().unwrap().get("x-user-id"), Some("alice"));
}

#[test]
fn request_bodies_streamed_in_five_byte_chunks_are_redacted_whole() {
    let Some(plugin) = plugin() else { return };
    let policy = inline_policy(json!({"pii": {
        "request": true, "response": true,
        "entities": ["EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN"],
        "operators": {"default": {"type": "replace"}, "CREDIT_CARD": {"type": "mask", "keep_last": 4}}
    }}));
    let mut sb = sandbox(&plugin, &policy);
    let token = tokens::rs256("alice", &[]);
    let body = r#"{"messages":[{"role":"user","content":"I am bob@example.com, card 4111 1111 1111 1111, ssn 123-45-6789"}]}"#;
    let mut s = sb.http().unwrap();
    s.send_request(&Request::post("/api/chat").bearer(&token).json(body).chunked(5)).unwrap();
    assert!(s.local_response().is_none());
    assert_eq!(
        String::from_utf8(s.forwarded_request_body()).unwrap(),
        r#"{"messages":[{"role":"user","content":"I am <EMAIL_ADDRESS>, card **** **** **** 1111, ssn <US_SSN>"}]}"#
    );
    assert_eq!(s.forwarded_request_headers().unwrap().get("content-length"), None, "length dropped");
    assert_eq!(sb.metric("chatguard.pii_redacted.request.EMAIL_ADDRESS"), Some(1));
}

#[test]
fn an_sse_response_in_three_byte_chunks_is_redacted_like_the_whole() {
    let Some(plugin) = plugin() else { return };
    let policy = inline_policy(json!({"pii": {"request": false, "response": true, "entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"]}}));
    let mut sb = sandbox(&plugin, &policy);
    let token = tokens::rs256("alice", &[]);
    let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"mail jane.doe@example.com\"}}]}\n\n\
               data: {\"choices\":[{\"delta\":{\"content\":\"or call (555) 123-4567\"}}]}\n\ndata: [DONE]\n\n";
    let mut s = sb.http().unwrap();
    s.send_request(&Request::get("/api/chat").bearer(&token)).unwrap();
    s.send_response(&Response::new(200).header("content-type", "text/event-stream").body(sse).chunked(3)).unwrap();
    let out = String::from_utf8(s.forwarded_response_body()).unwrap();
    assert_eq!(
        out,
        "data: {\"choices\":[{\"delta\":{\"content\":\"mail <EMAIL_ADDRESS>\"}}]}\n\n\
         data: {\"choices\":[{\"delta\":{\"content\":\"or call <PHONE_NUMBER>\"}}]}\n\ndata: [DONE]\n\n"
    );
}

fn limited_policy(capacity: u64) -> serde_json::Value {
    inline_policy(json!({
        "rate_limits": [{"name": "per-user", "key": "subject", "capacity": capacity, "refill_per_minute": 0.001}],
        "rate_limit_settings": {"max_cas_retries": 4}
    }))
}

fn status_of(sb: &mut Sandbox, token: &str) -> u32 {
    let mut s = sb.http().unwrap();
    s.send_request(&Request::get("/api/chat").bearer(token)).unwrap();
    s.local_response().map(|r| r.status).unwrap_or(200)
}

#[test]
fn cas_mismatches_are_retried_then_fail_closed() {
    let Some(plugin) = plugin() else { return };
    let mut sb = sandbox(&plugin, &limited_policy(5));
    let token = tokens::rs256("alice", &[]);
    assert_eq!(status_of(&mut sb, &token), 200, "creates the bucket");
    sb.force_cas_mismatches(3);
    assert_eq!(status_of(&mut sb, &token), 200, "admitted after 3 CAS retries");
    sb.force_cas_mismatches(50);
    assert_eq!(status_of(&mut sb, &token), 429, "contention beyond max_cas_retries fails closed");
}

#[test]
fn shared_data_calls_per_request_are_counted_on_tick() {
    // The fast path's budget (issue 5): one read and one write per bucket, one
    // read for the lockout check; counted in the VM and flushed on tick (Envoy
    // shows them as `wasmcustom.chatguard.shared_data.*`).
    let Some(plugin) = plugin() else { return };
    let policy = inline_policy(json!({
        "rate_limits": [
            {"name": "per-user", "key": "subject", "capacity": 100, "refill_per_minute": 60},
            {"name": "per-ip", "key": "client_ip", "capacity": 100, "refill_per_minute": 60}],
        "lockout": {"max_failures": 5, "window_seconds": 300, "lock_seconds": 900, "key": "client_ip"}
    }));
    let mut sb = sandbox(&plugin, &policy);
    let token = tokens::rs256("alice", &[]);
    for _ in 0..10 {
        assert_eq!(status_of(&mut sb, &token), 200);
    }
    assert_eq!(sb.metric("chatguard.shared_data.reads"), None, "not flushed before the tick");
    sb.advance_ticking(StdDuration::from_millis(250)).unwrap();
    assert_eq!(sb.metric("chatguard.shared_data.reads"), Some(30), "2 buckets + lockout, x10");
    assert_eq!(sb.metric("chatguard.shared_data.writes"), Some(20), "2 buckets, x10");
}

#[test]
fn two_workers_share_one_bucket() {
    let Some(plugin) = plugin() else { return };
    let shared = SharedData::default();
    let policy = limited_policy(3);
    let build = |shared: &SharedData| {
        Sandbox::builder(&plugin)
            .config(policy.to_string())
            .time(std::time::SystemTime::now())
            .shared(shared.clone())
            .start()
            .unwrap()
    };
    let (mut a, mut b) = (build(&shared), build(&shared));
    let token = tokens::rs256("alice", &[]);
    let statuses: Vec<u32> = (0..3).flat_map(|_| [status_of(&mut a, &token), status_of(&mut b, &token)]).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 3, "{statuses:?}");
}

#[test]
fn audit_batches_go_out_on_tick_to_the_collector_cluster() {
    let Some(plugin) = plugin() else { return };
    let policy = inline_policy(json!({"audit": {
        "cluster": "audit_collector", "path": "/v1/logs", "format": "ndjson", "flush_interval_ms": 100,
        "pseudonym_key": "harness-pseudonym-key-0123456789"
    }}));
    let mut sb = sandbox(&plugin, &policy);
    let token = keys().eddsa.sign(tokens::claims("alice", json!({}))).unwrap();
    {
        // The access record is written when the stream ends (on_log).
        let mut s = sb.http().unwrap();
        s.send_request(&Request::get("/api/chat").bearer(&token)).unwrap();
        s.send_response(&Response::new(200).header("content-type", "text/plain").body("ok")).unwrap();
        s.finish().unwrap();
    }
    sb.advance_ticking(StdDuration::from_millis(300)).unwrap();
    // Answer each batch so the next one may go; collect everything sent.
    for _ in 0..3 {
        for c in sb.pending_calls().into_iter().filter(|c| c.upstream == "audit_collector") {
            sb.respond_to_call(c.token, 200, &[], b"{}").unwrap();
        }
        sb.advance_ticking(StdDuration::from_millis(300)).unwrap();
    }
    let calls: Vec<_> = sb.calls().iter().filter(|c| c.upstream == "audit_collector").cloned().collect();
    assert!(!calls.is_empty(), "a batch was sent");
    let body = String::from_utf8(calls.iter().flat_map(|c| c.body.clone()).collect()).unwrap();
    assert!(body.contains("\"kind\":\"config_loaded\""), "{body}");
    assert!(body.contains("\"kind\":\"access\""), "{body}");
    assert!(!body.contains("alice") && !body.contains(&token[..30]), "no raw subject or token");
    let _ = UNIX_EPOCH;
}

#[test]
fn a_body_ending_in_trailers_is_still_redacted() {
    let Some(plugin) = plugin() else { return };
    let policy = inline_policy(json!({"pii": {"request": true, "response": false, "entities": ["EMAIL_ADDRESS"]}}));
    let mut sb = sandbox(&plugin, &policy);
    let token = tokens::rs256("alice", &[]);
    let mut s = sb.http().unwrap();
    s.send_request(&Request::post("/api/chat").bearer(&token).json(r#"{"q":"I am bob@example.com"}"#).trailer("x-end", "1").chunked(5))
        .unwrap();
    assert_eq!(String::from_utf8(s.forwarded_request_body()).unwrap(), r#"{"q":"I am <EMAIL_ADDRESS>"}"#);
}

/// The demo policy trusting the test keys inline (rate limits and audit out,
/// office hours out so the table does not depend on the clock).
fn demo_policy() -> serde_json::Value {
    let mut p: serde_json::Value = serde_json::from_str(include_str!("../../policy/default.json")).unwrap();
    for k in ["rate_limits", "rate_limit_settings", "lockout", "audit", "pii"] {
        p.as_object_mut().unwrap().remove(k);
    }
    let provider = &mut p["jwt"]["providers"][0];
    provider.as_object_mut().unwrap().remove("remote_jwks");
    provider["jwks"] = tokens::jwks(false);
    for rule in p["rbac"]["rules"].as_array_mut().unwrap() {
        rule.as_object_mut().unwrap().remove("hours");
    }
    p
}

#[test]
fn the_demo_rbac_table_holds_in_the_harness() {
    let Some(plugin) = plugin() else { return };
    let mut sb = sandbox(&plugin, &demo_policy());
    let t = |sub: &str, extra: serde_json::Value| keys().rs256.sign(tokens::claims(sub, extra)).unwrap();
    let employee = t("emma", json!({"roles": ["employee"]}));
    let hr = t("hannah", json!({"roles": ["hr_specialist"], "amr": ["mfa"]}));
    let hr_no_mfa = t("henry", json!({"roles": ["hr_specialist"], "amr": ["pwd"]}));
    let manager = t("maria", json!({"roles": ["sales_manager"], "region": "east"}));
    let table: Vec<(&str, &str, Option<&str>, u32)> = vec![
        ("GET", "/api/faq/pricing", None, 200),
        ("GET", "/api/directory/people", None, 401),
        ("GET", "/api/directory/people", Some(&employee), 200),
        ("GET", "/api/hr/records", Some(&employee), 403),
        ("GET", "/api/hr/records", Some(&hr), 200),
        ("GET", "/api/hr/records", Some(&hr_no_mfa), 403),
        ("GET", "/api/sales/east/q3", Some(&manager), 200),
        ("GET", "/api/sales/west/q3", Some(&manager), 403),
        ("POST", "/api/chat", Some(&employee), 200),
        ("GET", "/api/faq/../hr/records", None, 401),
        ("GET", "/api/faq/..%2Fhr/records", None, 400),
        ("GET", "/api//hr//records", Some(&hr), 200),
    ];
    for (method, path, token, want) in table {
        let mut req = Request::new(method, path);
        if let Some(tok) = token {
            req = req.bearer(tok);
        }
        let mut s = sb.http().unwrap();
        s.send_request(&req).unwrap();
        let got = s.local_response().map(|r| r.status).unwrap_or(200);
        assert_eq!(got, want, "{method} {path}");
        assert_eq!(s.forwarded_request_headers().is_some(), want == 200, "{method} {path}: upstream iff allowed");
    }
}
