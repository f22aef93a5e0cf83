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

// ---------------------------------------------------------------------------
// State scope: rate buckets and lockout in the Durable Object, across isolates.
// Each worker service is its own isolate; `isolates(2)` serves the worker from
// two services on two ports, both bound to the first one's ChatguardState.

/// The client address the worker trusts (Cloudflare's header).
const CLIENT_IP: &str = "198.51.100.7";

fn get_as(port: u16, auth: Option<&str>, ip: &str) -> http::Response {
    let mut headers = vec![("cf-connecting-ip", ip)];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    http::get(port, "/api/chat", &headers)
}

/// Requests sent alternately through both isolates: how many were admitted.
fn admitted_alternating(w: &Workerd, auth: &str, n: usize) -> (usize, Vec<u16>) {
    let statuses: Vec<u16> = (0..n).map(|i| get_as(w.ports()[i % 2], Some(auth), CLIENT_IP).status).collect();
    (statuses.iter().filter(|s| **s == 200).count(), statuses)
}

#[test]
fn rate_buckets_hold_across_isolates_only_through_the_durable_object() {
    if e2e::skip_without_workerd("rate_buckets_hold_across_isolates_only_through_the_durable_object") {
        return;
    }
    const CAPACITY: usize = 4;
    let up = Upstream::start();
    let policy = tokens::policy_inline(
        &tokens::jwks(false),
        json!({"rate_limits": [{"name": "per-user", "key": "subject", "capacity": CAPACITY, "refill_per_minute": 1}]}),
    )
    .to_string();
    let auth = bearer(&tokens::rs256("alice", &[]));

    // One Durable Object: the two isolates draw from one bucket.
    let shared = Workerd::start(WorkerdConfig::chatguard(&policy, up.port()).isolates(2)).unwrap();
    let started = Instant::now();
    let (admitted, statuses) = admitted_alternating(&shared, &auth, 12);
    // refill_per_minute 1: a token more only if a minute passed.
    let refill = (started.elapsed().as_secs() / 60) as usize;
    assert_eq!(admitted, CAPACITY + refill, "shared bucket: {statuses:?}");
    assert_eq!(&statuses[..CAPACITY], &[200; CAPACITY], "{statuses:?}");
    assert!(statuses[CAPACITY..].iter().all(|s| *s == 429), "both isolates refuse once it is empty: {statuses:?}");
    assert_eq!(up.request_count(), admitted);
    drop(shared);

    // No Durable Object: each isolate has its own bucket, so twice the capacity.
    up.clear();
    let apart = Workerd::start(WorkerdConfig::chatguard(&policy, up.port()).isolates(2).per_isolate()).unwrap();
    let (admitted, statuses) = admitted_alternating(&apart, &auth, 12);
    assert_eq!(admitted, 2 * CAPACITY, "per-isolate buckets: {statuses:?}");
    assert_eq!(up.request_count(), 2 * CAPACITY);
}

/// The lockout sequence of the Envoy test (three forged tokens, then a valid
/// one), its answers as `(status, retry-after, body error)`.
fn lockout_sequence(first: u16, second: u16) -> Vec<(u16, Option<String>, String)> {
    let good = bearer(&tokens::rs256("dave", &["employee"]));
    let forged = bearer(&scenarios::forged_token("dave"));
    let answer = |r: http::Response| {
        let error = if r.status == 200 { String::new() } else { r.json()["error"].as_str().unwrap_or_default().to_string() };
        (r.status, r.header("retry-after").map(str::to_string), error)
    };
    let mut out = vec![answer(get_as(first, Some(&good), CLIENT_IP))];
    for _ in 0..3 {
        out.push(answer(get_as(first, Some(&forged), CLIENT_IP)));
    }
    // Locked where the failures happened, and (shared state) in the other isolate.
    for auth in [Some(good.as_str()), Some(forged.as_str()), None] {
        out.push(answer(get_as(second, auth, CLIENT_IP)));
    }
    out
}

#[test]
fn lockout_holds_across_isolates_only_through_the_durable_object() {
    if e2e::skip_without_workerd("lockout_holds_across_isolates_only_through_the_durable_object") {
        return;
    }
    const LOCK_SECONDS: u64 = 3;
    let up = Upstream::start();
    let policy = tokens::policy_inline(&tokens::jwks(false), scenarios::lockout_sections(LOCK_SECONDS));
    let w = Workerd::start(WorkerdConfig::chatguard(&policy.to_string(), up.port()).isolates(2)).unwrap();
    let (a, b) = (w.ports()[0], w.ports()[1]);
    let seq = lockout_sequence(a, b);
    let locked_at = Instant::now();
    let unauthorized = (401, None, "unauthorized".to_string());
    let locked = (429, Some(LOCK_SECONDS.to_string()), "locked_out".to_string());
    assert_eq!(
        seq,
        vec![(200, None, String::new()), unauthorized.clone(), unauthorized.clone(), unauthorized.clone(),
             locked.clone(), locked.clone(), locked.clone()],
        "failures in isolate 1 lock the client out in isolate 2"
    );
    assert_eq!(up.request_count(), 1);
    // The same sequence in Envoy (one process, shared data) gives the same answers.
    if let Some(envoy) = envoy_too(&policy, &up) {
        let p = envoy.listener_port();
        // Envoy sees the TCP peer (127.0.0.1), not cf-connecting-ip: one client either way.
        assert_eq!(lockout_sequence(p, p), seq, "same answers as Envoy");
    }
    // Another client is not locked; the lock ends after lock_seconds, in both isolates.
    assert_eq!(get_as(b, Some(&bearer(&tokens::rs256("erin", &[]))), "198.51.100.8").status, 200);
    let good = bearer(&tokens::rs256("dave", &["employee"]));
    if let Some(d) = (locked_at + StdDuration::from_millis(LOCK_SECONDS * 1000 + 100)).checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
    assert_eq!(get_as(b, Some(&good), CLIENT_IP).status, 200, "lock over");
    assert_eq!(get_as(a, Some(&good), CLIENT_IP).status, 200, "lock over");
    drop(w);

    // Per isolate: the other isolate never saw the failures.
    let w = Workerd::start(WorkerdConfig::chatguard(&policy.to_string(), up.port()).isolates(2).per_isolate()).unwrap();
    let seq = lockout_sequence(w.ports()[0], w.ports()[1]);
    assert_eq!(seq[4], (200, None, String::new()), "per isolate: not locked in the other isolate: {seq:?}");
    assert_eq!(get_as(w.ports()[0], Some(&good), CLIENT_IP).status, 429, "but locked where it failed");
}

#[test]
fn the_429_carries_the_same_rate_limit_headers_as_envoy() {
    if e2e::skip_without_workerd("the_429_carries_the_same_rate_limit_headers_as_envoy") {
        return;
    }
    let up = Upstream::start();
    let policy = tokens::policy_inline(&tokens::jwks(false), scenarios::slow_rate_sections());
    let shared = Workerd::start(WorkerdConfig::chatguard(&policy.to_string(), up.port())).unwrap();
    let apart = Workerd::start(WorkerdConfig::chatguard(&policy.to_string(), up.port()).per_isolate()).unwrap();
    let envoy = envoy_too(&policy, &up);
    let auth = bearer(&tokens::rs256("carol", &["employee"]));
    let hosts = [("workerd + Durable Object", shared.port()), ("workerd per isolate", apart.port())]
        .into_iter()
        .chain(envoy.iter().map(|e| ("envoy", e.listener_port())));
    for (host, port) in hosts {
        for (i, (status, retry, policy_header, limit_header)) in scenarios::SLOW_RATE_ANSWERS.iter().enumerate() {
            let r = http::get(port, "/api/chat", &[("authorization", &auth)]);
            assert_eq!(r.status, *status, "{host} request {i}: {}", r.text());
            assert_eq!(r.header("retry-after"), *retry, "{host} request {i}");
            assert_eq!(r.header("ratelimit-policy"), Some(*policy_header), "{host} request {i}");
            assert_eq!(r.header("ratelimit"), Some(*limit_header), "{host} request {i}");
            if r.status == 429 {
                // Envoy adds the request id it generated; the edge has none to add.
                let mut body = r.json();
                body.as_object_mut().map(|o| o.remove("request_id"));
                assert_eq!(body, json!({"error": "rate_limited", "limit": "slow"}), "{host}");
            }
        }
    }
}

#[test]
fn a_state_object_that_cannot_answer_fails_closed_with_503() {
    if e2e::skip_without_workerd("a_state_object_that_cannot_answer_fails_closed_with_503") {
        return;
    }
    let up = Upstream::start();
    let good = tokens::policy_inline(&tokens::jwks(false), scenarios::lockout_sections(60)).to_string();
    let auth = bearer(&tokens::rs256("alice", &[]));

    // The object's own policy is invalid: it throws on every call.
    let broken = json!({"jwt": {"providers": [{"name": "corp", "isuer": ISSUER, "jwks": {"keys": []}}]}}).to_string();
    let w = Workerd::start(WorkerdConfig::chatguard(&broken, up.port()).isolates(2).second_policy(&good)).unwrap();
    let r = get_as(w.ports()[1], Some(&auth), CLIENT_IP);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(!r.text().contains(&auth[7..]), "no token in the answer");
    assert!(w.wait_for_log("chatguard: state object unavailable", StdDuration::from_secs(5)), "{}", w.log_text());
    assert!(!w.log_text().contains(&auth[7..]), "no token in the log");
    drop(w);

    // The object holds another policy: it refuses the query; the worker fails closed.
    let other = tokens::policy_inline(&tokens::jwks(false), scenarios::lockout_sections(61)).to_string();
    let w = Workerd::start(WorkerdConfig::chatguard(&other, up.port()).isolates(2).second_policy(&good)).unwrap();
    assert_eq!(get_as(w.ports()[1], Some(&auth), CLIENT_IP).status, 503);
    assert_eq!(get_as(w.ports()[0], Some(&auth), CLIENT_IP).status, 200, "the object's own worker is fine");
    assert!(w.wait_for_log("state query refused", StdDuration::from_secs(5)), "{}", w.log_text());
    assert_eq!(up.request_count(), 1, "nothing reached the origin without its state stages");
}

#[test]
fn request_ids_are_echoed_only_when_uuid_shaped() {
    if e2e::skip_without_workerd("request_ids_are_echoed_only_when_uuid_shaped") {
        return;
    }
    let up = Upstream::start();
    let w = start(&tokens::policy_inline(&tokens::jwks(false), json!({})), &up);
    let id = "0b1c2d3e-0000-4000-8000-000000000001";
    let r = http::get(w.port(), "/api/chat", &[("x-request-id", id)]);
    assert_eq!(r.json(), json!({"error": "unauthorized", "reason": "missing", "request_id": id}));
    let r = http::get(w.port(), "/api/chat", &[("x-request-id", "<script>alert(1)</script>")]);
    assert_eq!(r.json(), json!({"error": "unauthorized", "reason": "missing"}));
}

/// The Envoy audit scenario at the edge: allowed with PII, expired token,
/// denied, rate limited; the collector gets the documented fields and no PII.
#[test]
fn audit_records_carry_the_documented_fields_and_no_personal_data() {
    if e2e::skip_without_workerd("audit_records_carry_the_documented_fields_and_no_personal_data") {
        return;
    }
    const KEY: &str = "edge-audit-pseudonym-key-0123456789";
    const ALICE: &str = "alice.liddell@corp.example";
    const BODY_EMAIL: &str = "jane.roe@example.com";
    const QUERY_SECRET: &str = "sk-QUERYSECRET-9f8e7d6c";
    let pseudonym = |s: &str| -> String {
        hmac_sha256::HMAC::mac(s.as_bytes(), KEY.as_bytes())[..16].iter().map(|b| format!("{b:02x}")).collect()
    };
    let up = Upstream::start();
    let collector = Collector::start();
    let base = format!("http://127.0.0.1:{}", collector.port());
    let mut sections = json!({
        "audit": {"cluster": base, "path": "/v1/logs", "format": "ndjson", "flush_interval_ms": 100, "pseudonym_key": KEY}
    });
    tokens::merge(&mut sections, scenarios::audit_sections());
    let policy = tokens::policy_inline(&tokens::jwks(false), sections);
    let w = Workerd::start(WorkerdConfig::chatguard(&policy.to_string(), up.port()).collector(&base)).unwrap();
    let port = w.port();
    let alice = keys().rs256.sign(tokens::claims(ALICE, json!({"roles": ["employee"]}))).unwrap();
    let expired = {
        let mut c = tokens::claims(ALICE, json!({"roles": ["employee"]}));
        c.expires_at = Some(Duration::from_secs(tokens::now() - 3600));
        keys().rs256.sign(c).unwrap()
    };
    let id = |n: u32| format!("1b1c2d3e-0000-4000-8000-00000000000{n}");
    let send = |n: u32, method: &str, path: &str, token: &str, body: &[u8]| {
        let (auth, rid) = (bearer(token), id(n));
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json"), ("x-request-id", rid.as_str()),
                       ("cf-connecting-ip", "203.0.113.77")];
        http::request(port, method, path, &headers, body).status
    };
    let chat = json!({"messages": [{"role": "user", "content": format!("Please mail {BODY_EMAIL} the numbers")}]}).to_string();
    assert_eq!(send(1, "POST", &format!("/api/chat?api_key={QUERY_SECRET}"), &alice, chat.as_bytes()), 200);
    assert!(!up.last_request().unwrap().text().contains(BODY_EMAIL));
    assert_eq!(send(2, "GET", &format!("/api/reports/q1?user={BODY_EMAIL}"), &expired, b""), 401);
    assert_eq!(send(3, "GET", "/api/reports/q1", &alice, b""), 403);
    assert_eq!(send(4, "GET", "/api/ping", &alice, b""), 200);
    assert_eq!(send(5, "GET", "/api/ping", &alice, b""), 429);

    let deadline = Instant::now() + StdDuration::from_secs(15);
    let recs: Vec<Value> = loop {
        let recs: Vec<Value> = collector
            .records()
            .iter()
            .flat_map(|b| b.text().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<Value>>())
            .collect();
        let done = (1..=5).all(|n| recs.iter().any(|r| r["kind"] == "access" && r["request_id"] == id(n).as_str()));
        if done || Instant::now() >= deadline {
            break recs;
        }
        std::thread::sleep(StdDuration::from_millis(100));
    };
    let one = |kind: &str, n: u32| -> &Value {
        let found: Vec<&Value> = recs.iter().filter(|r| r["kind"] == kind && r["request_id"] == id(n).as_str()).collect();
        assert_eq!(found.len(), 1, "one {kind} record for request {n}: {recs:#?}");
        found[0]
    };
    let check = |rec: &Value, want: Value| {
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&rec[k], v, "field `{k}` of {rec:#}");
        }
    };
    let ctx = |method: &str, path: &str, subject: bool| {
        let mut c = json!({"method": method, "path": path, "client_ip": "203.0.113.0/24"});
        if subject {
            c["subject"] = json!(pseudonym(ALICE));
            c["roles"] = json!(["employee"]);
        }
        c
    };
    let with = |mut base: Value, extra: Value| {
        tokens::merge(&mut base, extra);
        base
    };
    check(one("data_access", 1), with(ctx("POST", "/api/chat", true), json!({"request_entities": {"EMAIL_ADDRESS": 1}, "redacted": true})));
    check(one("access", 1), with(ctx("POST", "/api/chat", true), json!({"rule": "chat", "status": 200, "decision": "allow"})));
    check(one("authn_failure", 2), with(ctx("GET", "/api/reports/q1", false), json!({"reason": "expired"})));
    check(one("access", 2), json!({"status": 401, "decision": "deny", "reason": "expired"}));
    check(
        one("authz_decision", 3),
        with(ctx("GET", "/api/reports/q1", true), json!({"outcome": "denied", "rule": "reports", "missing_permission": "read_reports"})),
    );
    check(one("access", 3), json!({"rule": "reports", "status": 403, "decision": "deny", "reason": "missing_permission"}));
    check(one("access", 4), json!({"rule": "ping", "status": 200, "decision": "allow"}));
    check(one("rate_limited", 5), with(ctx("GET", "/api/ping", true), json!({"limit": "ping-burst"})));
    check(one("access", 5), json!({"rule": "ping", "status": 429, "decision": "deny", "reason": "rate_limited"}));
    assert!(recs.iter().any(|r| r["kind"] == "config_loaded"));

    let wire: String = collector.attempts().iter().map(|b| b.text() + "\n").collect();
    for needle in [BODY_EMAIL, "jane.roe", QUERY_SECRET, "api_key", "?", ALICE, "alice", "203.0.113.77", "Bearer"] {
        assert!(!wire.contains(needle), "`{needle}` reached the collector:\n{wire}");
    }
    for part in alice.split('.').chain(expired.split('.')) {
        assert!(!wire.contains(part), "a token segment reached the collector");
    }
}
