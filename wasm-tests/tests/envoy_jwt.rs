//! JWT authentication, end to end: the built chatguard.wasm in a real Envoy 1.40
//! (V8), real HTTP requests, an upstream and a JWKS server written here.

use jwt_simple::prelude::*;
use serde_json::json;
use std::time::{Duration as StdDuration, Instant};
use wasm_tests::e2e::{self, http, Envoy, EnvoyConfig, JwksServer, Upstream};
use wasm_tests::tokens::{self, keys, raw, ISSUER, AUDIENCE};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn inline_keys_accept_every_algorithm_and_reject_with_exact_reasons() {
    if e2e::skip_without_chatguard("inline_keys_accept_every_algorithm_and_reject_with_exact_reasons") {
        return;
    }
    let up = Upstream::start();
    let policy = tokens::policy_inline(&tokens::jwks(true), json!({}));
    let envoy = Envoy::start(EnvoyConfig::chatguard(&policy.to_string()).upstream(up.port())).unwrap();
    let port = envoy.listener_port();
    let k = keys();
    let c = || tokens::claims("alice", json!({"roles": ["employee"]}));

    let accepted = [
        ("RS256", k.rs256.sign(c()).unwrap()),
        ("RS384", k.rs384.sign(c()).unwrap()),
        ("RS512", k.rs512.sign(c()).unwrap()),
        ("PS256", k.ps256.sign(c()).unwrap()),
        ("PS384", k.ps384.sign(c()).unwrap()),
        ("PS512", k.ps512.sign(c()).unwrap()),
        ("ES256", k.es256.sign(c()).unwrap()),
        ("ES384", k.es384.sign(c()).unwrap()),
        ("EdDSA", k.eddsa.sign(c()).unwrap()),
        ("HS256", k.hs256.authenticate(c()).unwrap()),
    ];
    for (alg, token) in &accepted {
        up.clear();
        // A forged identity header must not survive: chatguard sets it from the token.
        let r = http::get(port, "/api/chat", &[("authorization", &bearer(token)), ("x-user-id", "admin")]);
        assert_eq!(r.status, 200, "{alg}: {}", r.text());
        let seen = up.last_request().expect("upstream saw the request");
        assert_eq!(seen.header("x-user-id"), Some("alice"), "{alg}");
        assert_eq!(seen.header("authorization"), None, "{alg}: token stripped (forward: false)");
    }

    let now = tokens::now();
    let with = |f: &dyn Fn(&mut JWTClaims<serde_json::Value>)| {
        let mut cl = c();
        f(&mut cl);
        k.es256.sign(cl).unwrap()
    };
    let rsa_pem = k.rs256.public_key().to_pem().unwrap();
    let payload = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600});
    let rejected: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "missing"),
        ("alg none", Some(raw(json!({"alg": "none"}), payload.clone(), b""))  , "bad_algorithm"),
        (
            "HS256 keyed with the RSA public key",
            Some(HS256Key::from_bytes(rsa_pem.as_bytes()).with_key_id("rsa-1").authenticate(c()).unwrap()),
            "bad_algorithm",
        ),
        ("kid/alg mismatch", Some(raw(json!({"alg": "ES256", "kid": "rsa-1"}), payload.clone(), &[1u8; 64])), "bad_algorithm"),
        ("crit", Some(raw(json!({"alg": "RS256", "kid": "rsa-1", "crit": ["x"]}), payload.clone(), b"s")), "unsupported_crit"),
        ("unknown kid", Some(k.rotated.sign(c()).unwrap()), "unknown_kid"),
        ("bad signature", Some(raw(json!({"alg": "EdDSA", "kid": "ed-1"}), payload.clone(), &[0u8; 64])), "bad_signature"),
        ("malformed", Some("not-a-jwt".into()), "malformed"),
        ("expired", Some(with(&|cl| cl.expires_at = Some(Duration::from_secs(now - 120)))), "expired"),
        ("not yet valid", Some(with(&|cl| cl.invalid_before = Some(Duration::from_secs(now + 600)))), "not_yet_valid"),
        ("issued in the future", Some(with(&|cl| cl.issued_at = Some(Duration::from_secs(now + 600)))), "issued_in_future"),
        ("no exp", Some(with(&|cl| cl.expires_at = None)), "missing_exp"),
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
        let body = r.json();
        assert_eq!(body["error"], "unauthorized", "{name}");
        assert_eq!(body["reason"], *reason, "{name}");
        if let Some(t) = token {
            assert!(!r.text().contains(t.as_str()), "{name}: token echoed");
        }
    }
    assert_eq!(up.request_count(), 0, "no rejected request reached the upstream");
    assert_eq!(envoy.counter("wasmcustom.chatguard.authn_failures.bad_algorithm"), Some(3));
    assert!(envoy.counter("wasmcustom.chatguard.token_cache_misses").unwrap_or(0) >= accepted.len() as u64);
}

#[test]
fn repeated_tokens_hit_the_verified_token_cache() {
    if e2e::skip_without_chatguard("repeated_tokens_hit_the_verified_token_cache") {
        return;
    }
    let up = Upstream::start();
    let policy = tokens::policy_inline(&tokens::jwks(false), json!({}));
    let envoy = Envoy::start(EnvoyConfig::chatguard(&policy.to_string()).upstream(up.port())).unwrap();
    let token = tokens::rs256("alice", &["employee"]);
    for _ in 0..5 {
        let r = http::get(envoy.listener_port(), "/api/chat", &[("authorization", &bearer(&token))]);
        assert_eq!(r.status, 200);
    }
    assert_eq!(envoy.counter("wasmcustom.chatguard.token_cache_misses"), Some(1));
    assert_eq!(envoy.counter("wasmcustom.chatguard.token_cache_hits"), Some(4));
}

fn remote_envoy(jwks: &JwksServer, up: &Upstream, remote: serde_json::Value) -> Envoy {
    let policy = tokens::policy_remote(remote, json!({}));
    Envoy::start(EnvoyConfig::chatguard(&policy.to_string()).upstream(up.port()).cluster("idp", jwks.port())).unwrap()
}

#[test]
fn remote_jwks_is_fetched_rotated_and_kept_when_the_server_goes_down() {
    if e2e::skip_without_chatguard("remote_jwks_is_fetched_rotated_and_kept_when_the_server_goes_down") {
        return;
    }
    let up = Upstream::start();
    let jwks = JwksServer::start_at("/.well-known/jwks.json", &tokens::jwks(false).to_string());
    let envoy = remote_envoy(&jwks, &up, json!({"refetch_cooldown_seconds": 1}));
    let port = envoy.listener_port();

    let r = http::get(port, "/api/chat", &[("authorization", &bearer(&tokens::rs256("alice", &[])))]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(jwks.fetch_count() >= 1);
    let fetch = jwks.requests().into_iter().next().unwrap();
    assert_eq!(fetch.header("host").or(fetch.header(":authority")), Some("idp.example.test"));

    // Rotation: the IdP now signs with a key chatguard has never seen. The first
    // such token triggers a re-fetch (past the cooldown) and waits for it.
    let mut both = tokens::jwks(false);
    both["keys"].as_array_mut().unwrap().extend(tokens::rotated_jwks()["keys"].as_array().unwrap().clone());
    jwks.set_jwks(&both.to_string());
    std::thread::sleep(StdDuration::from_millis(1100));
    let rotated = keys().rotated.sign(tokens::claims("bob", json!({}))).unwrap();
    let r = http::get(port, "/api/chat", &[("authorization", &bearer(&rotated))]);
    assert_eq!(r.status, 200, "rotated key accepted after re-fetch: {}", r.text());
    assert_eq!(up.last_request().unwrap().header("x-user-id"), Some("bob"));

    // The IdP goes down: the last good set stays in use.
    jwks.down();
    std::thread::sleep(StdDuration::from_millis(1100));
    let fresh = keys().eddsa.sign(tokens::claims("carol", json!({}))).unwrap();
    let r = http::get(port, "/api/chat", &[("authorization", &bearer(&fresh))]);
    assert_eq!(r.status, 200, "{}", r.text());
    // ...and a token for a key nobody knows is refused, not waited on forever.
    let stranger = RS256KeyPair::generate(2048).unwrap().with_key_id("stranger");
    let r = http::get(port, "/api/chat", &[("authorization", &bearer(&stranger.sign(tokens::claims("x", json!({}))).unwrap()))]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "unknown_kid");
}

#[test]
fn requests_wait_for_the_first_fetch_and_fail_closed_when_it_never_comes() {
    if e2e::skip_without_chatguard("requests_wait_for_the_first_fetch_and_fail_closed_when_it_never_comes") {
        return;
    }
    let up = Upstream::start();
    let jwks = JwksServer::start_at("/.well-known/jwks.json", &tokens::jwks(false).to_string());
    jwks.set_unavailable(true);
    let envoy = remote_envoy(&jwks, &up, json!({"max_wait_ms": 800}));
    let token = tokens::rs256("alice", &[]);
    // The request is parked until a fetch answers (here: 503) or max_wait_ms
    // passes, then refused: never passed unverified, never parked for ever.
    let started = Instant::now();
    let r = http::get(envoy.listener_port(), "/api/chat", &[("authorization", &bearer(&token))]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["reason"], "jwks_unavailable");
    assert!(started.elapsed() < StdDuration::from_millis(800 + 500), "bounded wait");
    assert!(!jwks.requests().is_empty(), "a fetch was attempted");
    assert_eq!(up.request_count(), 0);

    // The IdP comes back: the next attempt fetches and the same token passes.
    jwks.set_unavailable(false);
    let deadline = Instant::now() + StdDuration::from_secs(15);
    loop {
        let r = http::get(envoy.listener_port(), "/api/chat", &[("authorization", &bearer(&token))]);
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {}", r.text());
        std::thread::sleep(StdDuration::from_millis(300));
    }
    assert!(envoy.counter("wasmcustom.chatguard.jwks_fetches.failed").unwrap_or(0) >= 1);
}

#[test]
fn an_invalid_policy_refuses_to_load_naming_the_field() {
    if e2e::skip_without_chatguard("an_invalid_policy_refuses_to_load_naming_the_field") {
        return;
    }
    let up = Upstream::start();
    let bad = json!({"jwt": {"providers": [{"name": "corp", "isuer": ISSUER, "jwks": {"keys": []}}]}});
    let err = Envoy::start(EnvoyConfig::chatguard(&bad.to_string()).upstream(up.port())).err().expect("Envoy must refuse the plugin");
    assert!(err.log.contains("chatguard policy refused: policy field `jwt.providers[0].isuer`"), "{}", err.message);
}
