//! Rate limits and the failed-authentication lockout, end to end: the built
//! chatguard.wasm in a real Envoy 1.40 (V8), real HTTP requests from several
//! threads, buckets in proxy-wasm shared data seen by every worker VM.

use serde_json::json;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use wasm_tests::e2e::{self, http, Envoy, EnvoyConfig, Reply, Upstream};
use wasm_tests::tokens::{self, raw, AUDIENCE, ISSUER};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A policy trusting the test keys inline, plus `extra` sections.
fn policy(extra: serde_json::Value) -> String {
    tokens::policy_inline(&tokens::jwks(false), extra).to_string()
}

fn header<'a>(r: &'a http::Response, name: &str) -> &'a str {
    r.header(name).unwrap_or_else(|| panic!("response {} has no `{name}` header: {:?}", r.status, r.headers))
}

/// Sleeps until `at` (no-op if it passed).
fn sleep_until(at: Instant) {
    if let Some(d) = at.checked_duration_since(Instant::now()) {
        thread::sleep(d);
    }
}

/// Connections each worker accepted on the ingress listener (`worker_N` order).
fn per_worker_connections(envoy: &Envoy) -> Vec<u64> {
    // The listener was configured on port 0: its stats carry that address.
    let prefix = "listener.127.0.0.1_0.worker_";
    let mut found: Vec<(u32, u64)> = envoy
        .stats()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            let rest = k.strip_prefix(prefix)?;
            let (worker, stat) = rest.split_once('.')?;
            if stat != "downstream_cx_total" {
                return None;
            }
            Some((worker.parse().ok()?, v.trim().parse().ok()?))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

/// One request seen by a client thread.
struct Sent {
    subject: &'static str,
    at: Instant,
    response: http::Response,
}

/// Two worker VMs, six client threads (three per subject), a fresh connection
/// per request: each subject's bucket admits capacity + refill over the window,
/// within 5 %. Per-worker buckets would admit about twice that.
#[test]
fn two_workers_share_one_bucket_per_subject() {
    if e2e::skip_without_chatguard("two_workers_share_one_bucket_per_subject") {
        return;
    }
    const CAPACITY: f64 = 50.0;
    const PER_SECOND: f64 = 5.0;
    const WINDOW: Duration = Duration::from_secs(6);
    const PACE: Duration = Duration::from_millis(60);
    let up = Upstream::start();
    let policy = policy(json!({
        "rate_limits": [{ "name": "per-user", "key": "subject", "capacity": 50, "refill_per_minute": 300 }],
        "rate_limit_settings": { "response_headers": true },
    }));
    let envoy = Envoy::start(EnvoyConfig::chatguard(&policy).upstream(up.port()).concurrency(2)).unwrap();
    let port = envoy.listener_port();
    let alice = tokens::rs256("alice", &["employee"]);
    let bob = tokens::rs256("bob", &["employee"]);

    let sent: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let end = start + WINDOW;
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (subject, token) = if i % 2 == 0 { ("alice", alice.clone()) } else { ("bob", bob.clone()) };
            let sent = sent.clone();
            thread::spawn(move || {
                // Stagger the threads so requests spread over the pace interval.
                let mut next = start + PACE * i / 6;
                let auth = bearer(&token);
                while next < end {
                    sleep_until(next);
                    let at = Instant::now();
                    let response = http::get(port, "/v1/chat/completions", &[("authorization", &auth)]);
                    sent.lock().unwrap().push(Sent { subject, at, response });
                    next += PACE;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let sent = Arc::try_unwrap(sent).ok().unwrap().into_inner().unwrap();

    let mut total_admitted = 0;
    let mut total_limited = 0;
    for subject in ["alice", "bob"] {
        let mine: Vec<&Sent> = sent.iter().filter(|s| s.subject == subject).collect();
        let first = mine.iter().map(|s| s.at).min().unwrap();
        let last = mine.iter().map(|s| s.at).max().unwrap();
        let elapsed = (last - first).as_secs_f64();
        let admitted = mine.iter().filter(|s| s.response.status == 200).count();
        let limited = mine.iter().filter(|s| s.response.status == 429).count();
        assert_eq!(admitted + limited, mine.len(), "{subject}: only 200 and 429 expected");
        let expected = CAPACITY + PER_SECOND * elapsed;
        eprintln!("{subject}: {} requests over {elapsed:.2}s, admitted {admitted}, expected {expected:.1}", mine.len());
        // The clients must outrun the refill, or the count proves nothing.
        assert!(mine.len() as f64 > 2.0 * expected, "{subject}: only {} requests sent", mine.len());
        assert!(
            (admitted as f64 - expected).abs() <= 0.05 * expected,
            "{subject}: admitted {admitted}, expected {expected:.1} +-5% (per-worker buckets would give ~{:.0})",
            2.0 * expected
        );

        // Allowed responses carry the quota; refusals carry Retry-After and the quota.
        for s in mine.iter().filter(|s| s.response.status == 200) {
            let r = &s.response;
            assert_eq!(header(r, "ratelimit-policy"), "\"per-user\";q=50;w=10");
            let quota = header(r, "ratelimit");
            let remaining: u64 = quota
                .strip_prefix("\"per-user\";r=")
                .and_then(|rest| rest.split(';').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad RateLimit field {quota:?}"));
            assert!(remaining < 50, "{quota}");
            assert!(quota.ends_with(";t=1"), "one token accrues within 200 ms: {quota}");
            assert_eq!(r.header("retry-after"), None);
        }
        for s in mine.iter().filter(|s| s.response.status == 429) {
            let r = &s.response;
            // One token accrues in 200 ms: the wait rounds up to one second.
            assert_eq!(header(r, "retry-after"), "1");
            assert_eq!(header(r, "ratelimit-policy"), "\"per-user\";q=50;w=10");
            assert_eq!(header(r, "ratelimit"), "\"per-user\";r=0;t=1");
            assert_eq!(header(r, "content-type"), "application/json");
            let body = r.json();
            assert_eq!(body["error"], "rate_limited");
            assert_eq!(body["limit"], "per-user");
            let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["error", "limit", "request_id"], "{body}");
        }
        total_admitted += admitted;
        total_limited += limited;
    }
    assert_eq!(up.request_count(), total_admitted, "exactly the admitted requests went upstream");
    assert_eq!(envoy.counter("wasmcustom.chatguard.rate_limited"), Some(total_limited as u64));
    assert_eq!(envoy.counter("wasmcustom.chatguard.ratelimit.limited"), Some(total_limited as u64));
    assert_eq!(envoy.counter("wasmcustom.chatguard.ratelimit.store_failure").unwrap_or(0), 0);
    let workers = per_worker_connections(&envoy);
    eprintln!(
        "connections per worker: {workers:?}; CAS retries: {:?}",
        envoy.counter("wasmcustom.chatguard.ratelimit.cas_retry")
    );
    assert_eq!(workers.len(), 2, "two workers: {workers:?}");
    let connections: u64 = workers.iter().sum();
    assert_eq!(connections, sent.len() as u64, "one connection per request");
    for n in &workers {
        assert!(*n * 5 >= connections, "both workers served traffic: {workers:?}");
    }
}

/// A burst from many keep-alive connections on both workers at once, as fast
/// as they go: the CAS loop never admits more than the bucket holds.
#[test]
fn concurrent_burst_admits_exactly_the_capacity() {
    if e2e::skip_without_chatguard("concurrent_burst_admits_exactly_the_capacity") {
        return;
    }
    const THREADS: usize = 8;
    const PER_THREAD: usize = 40;
    let up = Upstream::start();
    let policy = policy(json!({
        "rate_limits": [{ "name": "burst", "key": "subject", "capacity": 100, "refill_per_minute": 0.001 }],
    }));
    let envoy = Envoy::start(EnvoyConfig::chatguard(&policy).upstream(up.port()).concurrency(2)).unwrap();
    let port = envoy.listener_port();
    let auth = bearer(&tokens::rs256("heidi", &["employee"]));
    // The first request creates the slot (Envoy's CAS cannot say "only if
    // absent", so creation races are documented as bounded, not excluded).
    assert_eq!(http::get(port, "/v1/chat/completions", &[("authorization", &auth)]).status, 200);

    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let auth = auth.clone();
            thread::spawn(move || {
                let mut conns = [http::Connection::open(port).unwrap(), http::Connection::open(port).unwrap()];
                let mut statuses = Vec::new();
                for i in 0..PER_THREAD {
                    let r =
                        conns[i % 2].request("GET", "/v1/chat/completions", &[("authorization", &auth)], b"").unwrap();
                    statuses.push(r.status);
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    let workers = per_worker_connections(&envoy);
    eprintln!(
        "burst: admitted {admitted} + 1, refused {limited}; connections per worker {workers:?}; CAS retries {:?}",
        envoy.counter("wasmcustom.chatguard.ratelimit.cas_retry")
    );
    assert_eq!(admitted + limited, THREADS * PER_THREAD, "only 200 and 429 expected");
    assert_eq!(admitted, 99, "capacity 100, one taken before the burst");
    assert_eq!(up.request_count(), 100);
    assert_eq!(envoy.counter("wasmcustom.chatguard.ratelimit.store_failure").unwrap_or(0), 0);
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(workers.iter().all(|n| *n > 0), "both workers served the burst: {workers:?}");
}

/// Retry-After is exact to the second: refused just before the time it
/// names, admitted right at it.
#[test]
fn retry_after_names_the_second_a_token_returns() {
    if e2e::skip_without_chatguard("retry_after_names_the_second_a_token_returns") {
        return;
    }
    let up = Upstream::start();
    let policy = policy(json!({
        "rate_limits": [{ "name": "slow", "key": "subject", "capacity": 1, "refill_per_minute": 12 }],
        "rate_limit_settings": { "response_headers": true },
    }));
    let envoy = Envoy::start(EnvoyConfig::chatguard(&policy).upstream(up.port()).concurrency(2)).unwrap();
    let port = envoy.listener_port();
    let auth = bearer(&tokens::rs256("carol", &["employee"]));
    let get = || http::get(port, "/v1/chat/completions", &[("authorization", &auth)]);

    let r = get();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "ratelimit-policy"), "\"slow\";q=1;w=5");
    assert_eq!(header(&r, "ratelimit"), "\"slow\";r=0;t=5");

    let r = get();
    let refused_at = Instant::now();
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(header(&r, "retry-after"), "5");
    assert_eq!(header(&r, "ratelimit"), "\"slow\";r=0;t=5");
    assert_eq!(r.json()["limit"], "slow");

    // 0.7 s before the named second: still refused, and now 1 s to wait.
    sleep_until(refused_at + Duration::from_millis(4300));
    let r = get();
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(header(&r, "retry-after"), "1");
    assert_eq!(header(&r, "ratelimit"), "\"slow\";r=0;t=1");

    // At the named second: admitted.
    sleep_until(refused_at + Duration::from_millis(5050));
    let r = get();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.request_count(), 2);
    assert_eq!(envoy.counter("wasmcustom.chatguard.rate_limited"), Some(2));
}

/// Three bad tokens lock the client address: even a valid token then gets 429
/// with Retry-After, without being verified, until lock_seconds pass; one
/// security alert is raised.
#[test]
fn lockout_refuses_valid_tokens_until_the_lock_ends() {
    if e2e::skip_without_chatguard("lockout_refuses_valid_tokens_until_the_lock_ends") {
        return;
    }
    let up = Upstream::start();
    let policy = policy(json!({
        "lockout": { "max_failures": 3, "window_seconds": 60, "lock_seconds": 3, "key": "client_ip" },
    }));
    let envoy = Envoy::start(EnvoyConfig::chatguard(&policy).upstream(up.port())).unwrap();
    let port = envoy.listener_port();
    let good = bearer(&tokens::rs256("dave", &["employee"]));
    let payload = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "dave", "exp": tokens::now() + 600});
    let forged = bearer(&raw(json!({"alg": "EdDSA", "kid": "ed-1"}), payload, &[0u8; 64]));
    let get = |auth: &str| http::get(port, "/api/chat", &[("authorization", auth)]);

    assert_eq!(get(&good).status, 200);
    for i in 0..3 {
        let r = get(&forged);
        assert_eq!(r.status, 401, "failure {i}: {}", r.text());
        assert_eq!(r.json()["reason"], "bad_signature");
    }
    let locked_at = Instant::now();
    assert_eq!(envoy.counter("wasmcustom.chatguard.authn_failures.bad_signature"), Some(3));
    assert_eq!(envoy.counter("wasmcustom.chatguard.security_alerts"), Some(1));
    assert!(
        envoy.wait_for_log("lockout: 3 failures within 60s; locked for 3s", Duration::from_secs(3)),
        "the lockout is logged"
    );
    let misses = envoy.counter("wasmcustom.chatguard.token_cache_misses");
    let hits = envoy.counter("wasmcustom.chatguard.token_cache_hits");

    // Locked: a valid token, a forged one and none at all all get 429.
    for (what, auth) in [("valid", Some(good.as_str())), ("forged", Some(forged.as_str())), ("none", None)] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
        let r = http::get(port, "/api/chat", &headers);
        assert_eq!(r.status, 429, "{what}: {}", r.text());
        assert_eq!(header(&r, "retry-after"), "3", "{what}");
        let body = r.json();
        assert_eq!(body["error"], "locked_out", "{what}");
        assert_eq!(r.header("www-authenticate"), None, "{what}");
    }
    // The lockout runs before JWT: nothing was verified (or looked up) while locked,
    // no further failure was counted, and no second alert raised.
    assert_eq!(envoy.counter("wasmcustom.chatguard.token_cache_misses"), misses);
    assert_eq!(envoy.counter("wasmcustom.chatguard.token_cache_hits"), hits);
    assert_eq!(envoy.counter("wasmcustom.chatguard.authn_failures.bad_signature"), Some(3));
    assert_eq!(envoy.counter("wasmcustom.chatguard.locked_out"), Some(3));
    assert_eq!(envoy.counter("wasmcustom.chatguard.security_alerts"), Some(1));
    assert_eq!(up.request_count(), 1);

    // Just before the end of the lock: one second to go.
    sleep_until(locked_at + Duration::from_millis(2300));
    let r = get(&good);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(header(&r, "retry-after"), "1");

    // After lock_seconds: access resumes.
    sleep_until(locked_at + Duration::from_millis(3050));
    let r = get(&good);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.request_count(), 2);
    assert_eq!(envoy.counter("wasmcustom.chatguard.security_alerts"), Some(1));
}

/// `cost: response_tokens`: the upstream's `usage.total_tokens` is charged to
/// the caller's bucket, so once the budget is spent the next request is refused.
#[test]
fn response_tokens_are_charged_and_exhaust_the_budget() {
    if e2e::skip_without_chatguard("response_tokens_are_charged_and_exhaust_the_budget") {
        return;
    }
    let up = Upstream::start();
    up.on("/v1/chat/completions", Reply::usage(500));
    let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
               data: {\"choices\":[],\"usage\":{\"prompt_tokens\":400,\"completion_tokens\":600,\"total_tokens\":1000}}\n\n\
               data: [DONE]\n\n";
    up.on("/v1/stream", Reply::sse(sse, 24, Duration::from_millis(5)));
    let policy = policy(json!({
        "rate_limits": [{ "name": "llm-tokens", "key": "subject", "cost": "response_tokens",
                          "capacity": 1000, "refill_per_minute": 6 }],
        "rate_limit_settings": { "response_headers": true },
    }));
    let envoy = Envoy::start(EnvoyConfig::chatguard(&policy).upstream(up.port()).concurrency(2)).unwrap();
    let port = envoy.listener_port();
    let erin = bearer(&tokens::rs256("erin", &["employee"]));
    let frank = bearer(&tokens::rs256("frank", &["employee"]));
    let chat = |auth: &str| {
        http::post_json(port, "/v1/chat/completions", &[("authorization", auth)], &json!({"messages": []}))
    };
    let unit_policy = "\"llm-tokens\";q=1000;w=10000;chatguard-unit=\"llm-tokens\"";

    // Full bucket: admitted, nothing taken up front.
    let r = chat(&erin);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["total_tokens"], 500);
    assert_eq!(header(&r, "ratelimit-policy"), unit_policy);
    assert_eq!(header(&r, "ratelimit"), "\"llm-tokens\";r=1000;t=10");
    // 500 charged: half the budget left.
    let r = chat(&erin);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "ratelimit"), "\"llm-tokens\";r=500;t=10");
    // 1000 charged: the next request is refused until one token accrues (10 s).
    let r = chat(&erin);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(header(&r, "retry-after"), "10");
    assert_eq!(header(&r, "ratelimit-policy"), unit_policy);
    assert_eq!(header(&r, "ratelimit"), "\"llm-tokens\";r=0;t=10");
    assert_eq!(r.json()["limit"], "llm-tokens");
    // Another subject has its own budget; a stream's usage (in its last
    // event, split across chunks) is charged too.
    let r = http::get(port, "/v1/stream", &[("authorization", &frank)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "ratelimit"), "\"llm-tokens\";r=1000;t=10");
    assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
    let r = chat(&frank);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(header(&r, "retry-after"), "10");
    assert_eq!(up.request_count(), 3);
    assert_eq!(envoy.counter("wasmcustom.chatguard.rate_limited"), Some(2));
}

/// Shadow mode: over-limit requests are counted, never refused; without
/// `response_headers` allowed responses carry no quota headers.
#[test]
fn shadow_mode_counts_without_enforcing() {
    if e2e::skip_without_chatguard("shadow_mode_counts_without_enforcing") {
        return;
    }
    let up = Upstream::start();
    let policy = policy(json!({
        "rate_limits": [{ "name": "per-user", "key": "subject", "capacity": 2, "refill_per_minute": 0.001 }],
        "rate_limit_settings": { "mode": "shadow" },
    }));
    let envoy = Envoy::start(EnvoyConfig::chatguard(&policy).upstream(up.port()).concurrency(2)).unwrap();
    let port = envoy.listener_port();
    let auth = bearer(&tokens::rs256("grace", &["employee"]));
    for i in 0..5 {
        let r = http::get(port, "/v1/chat/completions", &[("authorization", &auth)]);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        for name in ["retry-after", "ratelimit", "ratelimit-policy"] {
            assert_eq!(r.header(name), None, "request {i}: {name}");
        }
    }
    assert_eq!(up.request_count(), 5);
    assert_eq!(envoy.counter("wasmcustom.chatguard.ratelimit.shadow_limited"), Some(3));
    assert_eq!(envoy.counter("wasmcustom.chatguard.ratelimit.limited").unwrap_or(0), 0);
    assert_eq!(envoy.counter("wasmcustom.chatguard.rate_limited").unwrap_or(0), 0);
}
