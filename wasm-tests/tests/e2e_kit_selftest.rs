//! Proves the end-to-end kit against a real Envoy 1.40: the `no_filter` and
//! `native_baseline` bootstraps start, requests reach the upstream, SSE is not
//! buffered, gzip passes, Envoy's jwt_authn/rbac answer as expected; and the
//! kit's servers (collector, JWKS) behave as documented without Envoy.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jwt_simple::prelude::*;
use std::io::Read;
use std::time::{Duration as StdDuration, Instant};
use wasm_tests::e2e::{self, http, Collector, CollectorMode, Envoy, EnvoyConfig, JwksServer, NativeBaseline, Reply, Upstream};

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "chatbot-api";

fn no_filter(up: &Upstream) -> Envoy {
    Envoy::start(EnvoyConfig::no_filter().upstream(up.port())).unwrap()
}

/// An RS256 key with kid `k1`, and its public JWKS document.
fn rsa_key() -> (RS256KeyPair, String) {
    let key = RS256KeyPair::generate(2048).unwrap().with_key_id("k1");
    let c = key.public_key().to_components();
    let jwks = serde_json::json!({ "keys": [{
        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1",
        "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e),
    }] });
    (key, jwks.to_string())
}

fn token(key: &RS256KeyPair, sub: &str) -> String {
    let claims = Claims::create(Duration::from_mins(5)).with_issuer(ISSUER).with_audience(AUDIENCE).with_subject(sub);
    key.sign(claims).unwrap()
}

#[test]
fn no_filter_forwards_request_and_upstream_records_it() {
    if e2e::skip_without_envoy("no_filter_forwards_request_and_upstream_records_it") {
        return;
    }
    let up = Upstream::start();
    let envoy = no_filter(&up);
    eprintln!("envoy LIVE in {:?}", envoy.started_in());
    let r = http::post(envoy.listener_port(), "/api/chat?x=1", &[("x-test", "a")], b"{\"m\":\"hi\"}");
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/api/chat?x=1");
    assert_eq!(echo["body"], "{\"m\":\"hi\"}");
    let got = up.last_request().unwrap();
    assert_eq!(got.path_only(), "/api/chat");
    assert_eq!(got.header("x-test"), Some("a"));
    // use_remote_address: for a loopback client Envoy appends its own node
    // address (the host's primary IP), not 127.0.0.1.
    let xff = got.header("x-forwarded-for").unwrap();
    assert!(xff.parse::<std::net::IpAddr>().is_ok(), "x-forwarded-for {xff:?}");
    assert_eq!(got.header("x-request-id").map(str::len), Some(36), "generate_request_id");
    assert_eq!(envoy.counter("cluster.upstream.upstream_rq_200"), Some(1));
    assert!(envoy.stats().contains("http.ingress.downstream_rq_completed: 1"));
    assert!(envoy.wait_for_log("starting main dispatch loop", StdDuration::from_secs(2)));
}

#[test]
fn no_filter_streams_sse_chunks_without_buffering() {
    if e2e::skip_without_envoy("no_filter_streams_sse_chunks_without_buffering") {
        return;
    }
    let up = Upstream::start();
    let body = "data: {\"delta\":\"hel\"}\n\ndata: {\"delta\":\"lo\"}\n\ndata: [DONE]\n\n";
    up.on("/v1/chat/completions", Reply::sse(body, 8, StdDuration::from_millis(60)));
    let envoy = no_filter(&up);
    let s = http::stream(envoy.listener_port(), "POST", "/v1/chat/completions", &[], b"{}");
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.text(), body);
    let pieces = body.len().div_ceil(8);
    assert!(s.chunks.len() * 2 >= pieces, "{} chunks for {pieces} upstream pieces: buffered?", s.chunks.len());
    let spread = s.chunks.last().unwrap().at - s.chunks[0].at;
    assert!(spread >= StdDuration::from_millis(60 * (pieces as u64 - 2)), "chunks arrived within {spread:?}");
}

#[test]
fn no_filter_passes_gzip_and_request_bodies_sent_in_parts() {
    if e2e::skip_without_envoy("no_filter_passes_gzip_and_request_bodies_sent_in_parts") {
        return;
    }
    let up = Upstream::start();
    up.on("/gz", Reply::gzip(200, "application/json", b"{\"email\":\"a@b.test\"}"));
    let envoy = no_filter(&up);
    let r = http::get(envoy.listener_port(), "/gz", &[("accept-encoding", "gzip")]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&r.body[..]).read_to_string(&mut plain).unwrap();
    assert_eq!(plain, "{\"email\":\"a@b.test\"}");

    let parts: [&[u8]; 3] = [b"{\"a\":", b"\"split", b"\"}"];
    let r = http::request_in_parts(envoy.listener_port(), "POST", "/parts", &[], &parts, StdDuration::from_millis(50));
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().unwrap().body, b"{\"a\":\"split\"}");
    let r = http::request_in_parts(
        envoy.listener_port(), "POST", "/parts", &[("content-length", "13")], &parts, StdDuration::from_millis(50),
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().unwrap().text(), "{\"a\":\"split\"}");
}

#[test]
fn native_baseline_inline_jwks_authenticates_and_rbac_denies() {
    if e2e::skip_without_envoy("native_baseline_inline_jwks_authenticates_and_rbac_denies") {
        return;
    }
    let (key, jwks) = rsa_key();
    let up = Upstream::start();
    let baseline = NativeBaseline::inline_jwks(ISSUER, &jwks)
        .audience(AUDIENCE)
        .anonymous_prefix("/public")
        .deny_prefix("/admin")
        .claim_to_header("sub", "x-user-id")
        .rate_limit(1000, 1000, StdDuration::from_secs(1));
    let envoy = Envoy::start(EnvoyConfig::native_baseline(baseline).upstream(up.port()).concurrency(2)).unwrap();
    let port = envoy.listener_port();

    let r = http::get(port, "/api/faq", &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.request_count(), 0, "a rejected request reached the upstream");

    let bearer = format!("Bearer {}", token(&key, "alice"));
    let r = http::get(port, "/api/faq", &[("authorization", &bearer)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last_request().unwrap().header("x-user-id"), Some("alice"));

    let r = http::get(port, "/api/faq", &[("authorization", "Bearer not.a.jwt")]);
    assert_eq!(r.status, 401);
    let r = http::get(port, "/admin/users", &[("authorization", &bearer)]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(http::get(port, "/public/x", &[]).status, 200);
    assert_eq!(up.request_count(), 2);
    // Allowed by jwt_authn: the valid token, the anonymous path, and /admin (denied later by rbac).
    assert_eq!(envoy.counter("http.ingress.jwt_authn.allowed"), Some(3));
    assert_eq!(envoy.counter("http.ingress.rbac.denied"), Some(1));
}

#[test]
fn native_baseline_remote_jwks_follows_rotation() {
    if e2e::skip_without_envoy("native_baseline_remote_jwks_follows_rotation") {
        return;
    }
    let (key, jwks) = rsa_key();
    let idp = JwksServer::start(&jwks);
    let up = Upstream::start();
    let baseline = NativeBaseline::remote_jwks(ISSUER, "idp", &idp.path()).audience(AUDIENCE);
    let envoy =
        Envoy::start(EnvoyConfig::native_baseline(baseline).upstream(up.port()).cluster("idp", idp.port())).unwrap();
    let bearer = format!("Bearer {}", token(&key, "bob"));
    let r = http::get(envoy.listener_port(), "/api", &[("authorization", &bearer)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(idp.fetch_count() >= 1);
    assert_eq!(idp.requests()[0].header("host"), Some("idp"));
}

#[test]
fn start_error_names_the_problem_and_carries_the_log() {
    if e2e::skip_without_envoy("start_error_names_the_problem_and_carries_the_log") {
        return;
    }
    let up = Upstream::start();
    let cfg = EnvoyConfig::chatguard("{}").wasm_module("/nonexistent/chatguard.wasm").upstream(up.port());
    let err = Envoy::start(cfg.start_timeout(StdDuration::from_secs(10))).err().expect("Envoy must refuse a missing module");
    assert!(err.message.starts_with("Envoy did not start"), "{err}");
    assert!(err.log.contains("/nonexistent/chatguard.wasm"), "{}", err.log);
    // A protobuf field-name mistake would read "INVALID_ARGUMENT" / "unknown field".
    assert!(!err.log.contains("unknown field"), "{}", err.log);
}

#[test]
fn collector_answers_503_hangs_and_returns_on_the_same_port() {
    let c = Collector::start();
    let port = c.port();
    assert_eq!(http::post(port, "/v1/logs", &[], b"one").status, 200);
    c.set_mode(CollectorMode::Unavailable);
    assert_eq!(http::post(port, "/v1/logs", &[], b"two").status, 503);
    c.set_mode(CollectorMode::Hang);
    let mut conn = http::Connection::open(port).unwrap();
    conn.set_timeout(StdDuration::from_millis(300)).unwrap();
    let started = Instant::now();
    assert!(conn.request("POST", "/v1/logs", &[], b"three").is_err());
    assert!(started.elapsed() >= StdDuration::from_millis(250));
    c.down();
    assert!(http::try_request(port, "POST", "/v1/logs", &[], b"four").is_err());
    c.up();
    c.set_mode(CollectorMode::Accept);
    assert_eq!(http::post(port, "/v1/logs", &[], b"five").status, 200);
    let bodies: Vec<String> = c.records().iter().map(|r| r.text()).collect();
    assert_eq!(bodies, ["one", "five"]);
    assert_eq!(c.attempts().len(), 4);
}

#[test]
fn jwks_server_rotates_fails_and_counts() {
    let idp = JwksServer::start("{\"keys\":[]}");
    let r = http::get(idp.port(), e2e::DEFAULT_JWKS_PATH, &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "{\"keys\":[]}"));
    idp.set_jwks("{\"keys\":[1]}");
    assert_eq!(http::get(idp.port(), e2e::DEFAULT_JWKS_PATH, &[]).text(), "{\"keys\":[1]}");
    idp.set_unavailable(true);
    assert_eq!(http::get(idp.port(), e2e::DEFAULT_JWKS_PATH, &[]).status, 503);
    assert_eq!(http::get(idp.port(), "/other", &[]).status, 404);
    assert_eq!(idp.fetch_count(), 3);
}

#[test]
fn upstream_keep_alive_usage_and_chunked_request() {
    let up = Upstream::start();
    up.on("/v1/chat/completions", Reply::usage(42));
    let mut conn = http::Connection::open(up.port()).unwrap();
    let r = conn.request("POST", "/v1/chat/completions", &[], b"{}").unwrap();
    assert_eq!(r.json()["usage"]["total_tokens"], 42);
    let r = conn.request("GET", "/echo", &[("x-a", "1"), ("x-a", "2")], b"").unwrap();
    assert_eq!(r.json()["headers"]["x-a"], "1, 2");
    let parts: [&[u8]; 2] = [b"ab", b"cd"];
    conn.request_in_parts("POST", "/c", &[], &parts, StdDuration::from_millis(10)).unwrap();
    assert_eq!(up.wait_for_requests(3, StdDuration::from_secs(1))[2].body, b"abcd");
}
