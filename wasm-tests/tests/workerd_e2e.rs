//! The edge build end to end: edge/worker.js + the wasm-bindgen module in a
//! real workerd, real HTTP requests, an upstream, a JWKS server and an audit
//! collector written here. Where Envoy is available too, the same requests go
//! through the proxy-wasm build and both hosts must give the same statuses
//! and the same redacted bytes.

use jwt_simple::prelude::*;
use serde_json::{json, Value};
use std::time::{Duration as StdDuration, Instant};
use wasm_tests::e2e::{self, http, Collector, Envoy, EnvoyConfig, JwksServer, Reply, Upstream, Workerd, WorkerdConfig};
use wasm_tests::scenarios::{self, PII_TEXT};
use wasm_tests::tokens::{self, keys, raw, AUDIENCE, ISSUER};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn start(policy: &Value, up: &Upstream) -> Workerd {
    Workerd::start(WorkerdConfig::chatguard(&policy.to_string(), up.port())).unwrap()
}

/// Envoy with the same policy, when Envoy and the proxy-wasm module are built.
fn envoy_too(policy: &Value, up: &Upstream) -> Option<Envoy> {
    if e2e::envoy_bin().is_none() || e2e::chatguard_wasm().is_none() {
        eprintln!("Envoy or chatguard.wasm missing: comparing with Envoy skipped");
        return None;
    }
    Some(Envoy::start(EnvoyConfig::chatguard(&policy.to_string()).upstream(up.port())).unwrap())
}

#[test]
fn jwt_accepts_every_algorithm_and_rejects_with_exact_reasons() {
    if e2e::skip_without_workerd("jwt_accepts_every_algorithm_and_rejects_with_exact_reasons") {
        return;
    }
    let up = Upstream::start();
    let w = start(&tokens::policy_inline(&tokens::jwks(true), json!({})), &up);
    let port = w.port();
    let k = keys();
    let c = || tokens::claims("alice", json!({"roles": ["employee"]}));

    let accepted = [
        ("RS256", k.rs256.sign(c()).unwrap()),
        ("PS256", k.ps256.sign(c()).unwrap()),
        ("ES256", k.es256.sign(c()).unwrap()),
        ("ES384", k.es384.sign(c()).unwrap()),
        ("EdDSA", k.eddsa.sign(c()).unwrap()),
        ("HS256", k.hs256.authenticate(c()).unwrap()),
    ];
    for (alg, token) in &accepted {
        up.clear();
        let r = http::get(port, "/api/chat", &[("authorization", &bearer(token)), ("x-user-id", "admin")]);
        assert_eq!(r.status, 200, "{alg}: {}", r.text());
        let seen = up.last_request().expect("upstream saw the request");
        assert_eq!(seen.header("x-user-id"), Some("alice"), "{alg}: identity from the token, not the client");
        assert_eq!(seen.header("authorization"), None, "{alg}: token stripped (forward: false)");
    }

    let now = tokens::now();
    let with = |f: &dyn Fn(&mut JWTClaims<Value>)| {
        let mut cl = c();
        f(&mut cl);
        k.es256.sign(cl).unwrap()
    };
    let payload = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600});
    let rejected: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "missing"),
        ("alg none", Some(raw(json!({"alg": "none"}), payload.clone(), b"")), "bad_algorithm"),
        ("unknown kid", Some(k.rotated.sign(c()).unwrap()), "unknown_kid"),
        ("bad signature", Some(raw(json!({"alg": "EdDSA", "kid": "ed-1"}), payload.clone(), &[0u8; 64])), "bad_signature"),
        ("bad RSA signature", Some(raw(json!({"alg": "RS256", "kid": "rsa-1"}), payload.clone(), &[7u8; 256])), "bad_signature"),
        ("malformed", Some("not-a-jwt".into()), "malformed"),
        ("expired", Some(with(&|cl| cl.expires_at = Some(Duration::from_secs(now - 120)))), "expired"),
        ("wrong issuer", Some(with(&|cl| cl.issuer = Some("https://evil.test".into()))), "bad_issuer"),
        ("wrong audience", Some(with(&|cl| cl.audiences = Some(Audiences::AsString("other".into())))), "bad_audience"),
    ];
    up.clear();
    for (name, token, reason) in &rejected {
        let auth = token.as_deref().map(bearer);
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = http::get(port, "/api/chat", &headers);
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        let challenge = r.header("www-authenticate").unwrap_or_default().to_string();
        if *reason == "missing" {
            assert_eq!(challenge, "Bearer realm=\"chatguard\"", "{name}");
        } else {
            assert!(challenge.starts_with("Bearer realm=\"chatguard\", error=\"invalid_token\""), "{name}: {challenge}");
        }
        assert_eq!(r.json(), json!({"error": "unauthorized", "reason": reason}), "{name}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{name}");
        if let Some(t) = token {
            assert!(!r.text().contains(t.as_str()), "{name}: token echoed");
        }
    }
    assert_eq!(up.request_count(), 0, "no rejected request reached the upstream");
}

#[test]
fn remote_jwks_is_fetched_from_a_base_url_and_fails_closed_when_down() {
    if e2e::skip_without_workerd("remote_jwks_is_fetched_from_a_base_url_and_fails_closed_when_down") {
        return;
    }
    let up = Upstream::start();
    let jwks = JwksServer::start_at("/.well-known/jwks.json", &tokens::jwks(false).to_string());
    jwks.set_unavailable(true);
    // At the edge `cluster` is the IdP's base URL.
    let policy = tokens::policy_remote(
        json!({"cluster": format!("http://127.0.0.1:{}", jwks.port()), "max_wait_ms": 800}),
        json!({}),
    );
    let w = start(&policy, &up);
    let token = tokens::rs256("alice", &[]);
    let started = Instant::now();
    let r = http::get(w.port(), "/api/chat", &[("authorization", &bearer(&token))]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["reason"], "jwks_unavailable");
    assert!(started.elapsed() < StdDuration::from_millis(800 + 1500), "bounded wait: {:?}", started.elapsed());
    assert!(!jwks.requests().is_empty(), "a fetch was attempted");

    jwks.set_unavailable(false);
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let r = http::get(w.port(), "/api/chat", &[("authorization", &bearer(&token))]);
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {}", r.text());
        std::thread::sleep(StdDuration::from_millis(300));
    }
    assert_eq!(up.last_request().unwrap().header("x-user-id"), Some("alice"));
    let fetch = jwks.requests().into_iter().last().unwrap();
    assert_eq!(fetch.path_only(), "/.well-known/jwks.json");
}

#[test]
fn the_demo_rbac_matrix_holds_at_the_edge() {
    if e2e::skip_without_workerd("the_demo_rbac_matrix_holds_at_the_edge") {
        return;
    }
    let up = Upstream::start();
    let w = start(&scenarios::demo_policy("enforce"), &up);
    let c = scenarios::callers();
    for (method, path, who, want) in scenarios::rbac_table(&c) {
        up.clear();
        let auth = (!who.is_empty()).then(|| bearer(&who));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let body: &[u8] = if method == "POST" { b"{}" } else { b"" };
        let r = http::request(w.port(), method, path, &headers, body);
        let who = if who.is_empty() { "anonymous" } else { "caller" };
        assert_eq!(r.status, want, "{method} {path} as {who}: {}", r.text());
        assert_eq!(up.request_count(), usize::from(want == 200), "{method} {path}: upstream reached iff allowed");
        if want == 403 {
            assert_eq!(r.json()["error"], "forbidden", "{method} {path}");
            assert!(!r.text().contains("read_"), "no permission leaks to the caller");
        }
    }
    for (method, path, who, allowed) in scenarios::path_attack_table(&c) {
        let auth = (!who.is_empty()).then(|| bearer(&who));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = http::request(w.port(), method, path, &headers, b"");
        assert!(allowed.contains(&r.status), "{method} {path}: {} not in {allowed:?}: {}", r.status, r.text());
    }
    // Step-up: HR without MFA gets the insufficient_user_authentication challenge.
    let r = http::get(w.port(), "/api/hr/records", &[("authorization", &bearer(&c.hr_no_mfa))]);
    assert_eq!(r.status, 403);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("insufficient_user_authentication"), "{challenge}");
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    if e2e::skip_without_workerd("rate_limits_answer_429_with_retry_after") {
        return;
    }
    let up = Upstream::start();
    let policy = tokens::policy_inline(
        &tokens::jwks(false),
        json!({"rate_limits": [{"name": "per-user", "key": "subject", "capacity": 3, "refill_per_minute": 1}]}),
    );
    let w = start(&policy, &up);
    let alice = tokens::rs256("alice", &[]);
    let bob = tokens::rs256("bob", &[]);
    let get = |t: &str| http::get(w.port(), "/api/chat", &[("authorization", &bearer(t))]);
    for i in 0..3 {
        assert_eq!(get(&alice).status, 200, "request {i} within capacity");
    }
    let r = get(&alice);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "rate_limited");
    assert_eq!(r.json()["limit"], "per-user");
    let retry: u64 = r.header("retry-after").expect("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(get(&bob).status, 200, "buckets are per subject");
    assert_eq!(up.request_count(), 4);
}

fn pii_policy() -> Value {
    let demo: Value = serde_json::from_str(include_str!("../../policy/default.json")).unwrap();
    tokens::policy_inline(&tokens::jwks(false), json!({"pii": demo["pii"].clone()}))
}

#[test]
fn request_bodies_are_redacted_the_same_as_in_envoy() {
    if e2e::skip_without_workerd("request_bodies_are_redacted_the_same_as_in_envoy") {
        return;
    }
    let up = Upstream::start();
    let policy = pii_policy();
    let w = start(&policy, &up);
    let envoy = envoy_too(&policy, &up);
    let token = tokens::rs256("alice", &[]);
    let auth = bearer(&token);
    let bodies: [(&str, Vec<u8>); 2] = [
        ("text/plain", PII_TEXT.as_bytes().to_vec()),
        ("application/json", json!({"messages": [{"role": "user", "content": PII_TEXT}]}).to_string().into_bytes()),
    ];
    for (content_type, body) in &bodies {
        let mut seen = Vec::new();
        let ports = std::iter::once(("workerd", w.port())).chain(envoy.iter().map(|e| ("envoy", e.listener_port())));
        for (host, port) in ports {
            up.clear();
            let r = http::request(port, "POST", "/api/chat", &[("authorization", &auth), ("content-type", content_type)], body);
            assert_eq!(r.status, 200, "{host} {content_type}: {}", r.text());
            let got = up.last_request().unwrap().body;
            let text = String::from_utf8_lossy(&got).into_owned();
            assert!(!text.contains("jane.doe@example.com") && !text.contains("078-05-1120"), "{host}: {text}");
            assert!(text.contains("1111"), "{host}: card keeps its last 4: {text}");
            seen.push((host, got));
        }
        if let [(_, a), (_, b)] = seen.as_slice() {
            assert_eq!(String::from_utf8_lossy(a), String::from_utf8_lossy(b), "{content_type}: same bytes upstream from both hosts");
        }
    }
}

#[test]
fn streamed_responses_are_redacted_across_chunks_the_same_as_in_envoy() {
    if e2e::skip_without_workerd("streamed_responses_are_redacted_across_chunks_the_same_as_in_envoy") {
        return;
    }
    let up = Upstream::start();
    let sse = scenarios::pii_event_stream();
    // 7-byte pieces: every PII value is split across chunks.
    up.on("/api/chat/stream", Reply::sse(&sse, 7, StdDuration::from_millis(2)));
    up.on("/api/chat/json", Reply::json(200, &json!({"answer": PII_TEXT})));
    let policy = pii_policy();
    let w = start(&policy, &up);
    let envoy = envoy_too(&policy, &up);
    let auth = bearer(&tokens::rs256("alice", &[]));
    for path in ["/api/chat/stream", "/api/chat/json"] {
        let mut seen = Vec::new();
        let ports = std::iter::once(("workerd", w.port())).chain(envoy.iter().map(|e| ("envoy", e.listener_port())));
        for (host, port) in ports {
            let r = http::stream(port, "GET", path, &[("authorization", &auth)], b"");
            assert_eq!(r.status, 200, "{host} {path}");
            let text = r.text();
            assert!(!text.contains("jane.doe@example.com") && !text.contains("078-05-1120"), "{host} {path}: {text}");
            assert!(!text.contains("4111 1111 1111 1111"), "{host} {path}: {text}");
            if path.ends_with("stream") {
                assert!(text.ends_with("data: [DONE]\n\n"), "{host}: stream complete: {text}");
                assert!(r.chunks.len() > 1, "{host}: streamed, not buffered whole");
            }
            seen.push((host, text));
        }
        if let [(_, a), (_, b)] = seen.as_slice() {
            assert_eq!(a, b, "{path}: same redacted bytes from both hosts");
        }
    }
}

#[test]
fn audit_records_reach_the_collector() {
    if e2e::skip_without_workerd("audit_records_reach_the_collector") {
        return;
    }
    let up = Upstream::start();
    let collector = Collector::start();
    let base = format!("http://127.0.0.1:{}", collector.port());
    let policy = tokens::policy_inline(
        &tokens::jwks(false),
        json!({"audit": {"cluster": base, "path": "/v1/logs", "format": "ndjson", "flush_interval_ms": 200,
                         "subject_mode": "pseudonym", "pseudonym_key": "edge-test-pseudonym-key-0123456789"}}),
    );
    let w = Workerd::start(WorkerdConfig::chatguard(&policy.to_string(), up.port()).collector(&base)).unwrap();
    let token = tokens::rs256("alice", &[]);
    assert_eq!(http::get(w.port(), "/api/chat", &[("authorization", &bearer(&token))]).status, 200);
    assert_eq!(http::get(w.port(), "/api/chat", &[]).status, 401);
    // Records are batched per isolate and flushed by the worker's tick loop.
    let wanted = ["config_loaded", "access", "authn_failure"];
    let deadline = Instant::now() + StdDuration::from_secs(10);
    let (batches, kinds) = loop {
        let batches = collector.records();
        let kinds: Vec<String> = batches
            .iter()
            .flat_map(|b| b.text().lines().map(str::to_string).collect::<Vec<_>>())
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Value>(&l).unwrap()["kind"].as_str().unwrap_or_default().to_string())
            .collect();
        if wanted.iter().all(|k| kinds.iter().any(|s| s == k)) || Instant::now() >= deadline {
            break (batches, kinds);
        }
        std::thread::sleep(StdDuration::from_millis(100));
    };
    for want in wanted {
        assert!(kinds.iter().any(|k| k == want), "{want} in {kinds:?}");
    }
    let all = batches.iter().map(|b| b.text()).collect::<String>();
    assert!(!all.contains("alice") && !all.contains(&token), "no raw subject or token in audit records");
    assert_eq!(batches[0].header("content-type"), Some("application/x-ndjson"));
}

#[test]
fn an_invalid_policy_fails_closed_naming_the_field() {
    if e2e::skip_without_workerd("an_invalid_policy_fails_closed_naming_the_field") {
        return;
    }
    let up = Upstream::start();
    let bad = json!({"jwt": {"providers": [{"name": "corp", "isuer": ISSUER, "jwks": {"keys": []}}]}});
    let w = start(&bad, &up);
    let r = http::get(w.port(), "/api/chat", &[]);
    assert_eq!(r.status, 500);
    assert_eq!(up.request_count(), 0);
    assert!(
        w.wait_for_log("chatguard policy refused: policy field `jwt.providers[0].isuer`", StdDuration::from_secs(5)),
        "{}",
        w.log_text()
    );
}
