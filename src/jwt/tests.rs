//! Verification tests with keys generated here (none committed).

use super::*;
use crate::config::jwt::{Jwk, JwtConfig};
use jwt_simple::prelude::*;
use std::sync::OnceLock;

pub(crate) const NOW: u64 = 1_800_000_000; // seconds
pub(crate) const ISS: &str = "https://idp.example.test";
pub(crate) const AUD: &str = "chatbot-api";

pub(crate) struct Keys {
    pub(crate) rsa: RS256KeyPair,
    rsa384: RS384KeyPair,
    rsa512: RS512KeyPair,
    ps256: PS256KeyPair,
    ps384: PS384KeyPair,
    ps512: PS512KeyPair,
    pub(crate) es256: ES256KeyPair,
    es384: ES384KeyPair,
    pub(crate) ed: Ed25519KeyPair,
    hs: HS256Key,
}

pub(crate) fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = RS256KeyPair::generate(2048).unwrap().with_key_id("rsa-1");
        let der = rsa.to_der().unwrap();
        Keys {
            rsa384: RS384KeyPair::from_der(&der).unwrap().with_key_id("rsa-1"),
            rsa512: RS512KeyPair::from_der(&der).unwrap().with_key_id("rsa-1"),
            ps256: PS256KeyPair::from_der(&der).unwrap().with_key_id("rsa-1"),
            ps384: PS384KeyPair::from_der(&der).unwrap().with_key_id("rsa-1"),
            ps512: PS512KeyPair::from_der(&der).unwrap().with_key_id("rsa-1"),
            rsa,
            es256: ES256KeyPair::generate().with_key_id("ec-256"),
            es384: ES384KeyPair::generate().with_key_id("ec-384"),
            ed: Ed25519KeyPair::generate().with_key_id("ed-1"),
            hs: HS256Key::from_bytes(&[7u8; 32]).with_key_id("hs-1"),
        }
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn jwks_json() -> Value {
    let k = keys();
    let rsa = k.rsa.public_key().to_components();
    let es256 = k.es256.public_key().public_key().to_bytes_uncompressed();
    let es384 = k.es384.public_key().public_key().to_bytes_uncompressed();
    serde_json::json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "n": b64(&rsa.n), "e": b64(&rsa.e)},
        {"kty": "EC", "kid": "ec-256", "crv": "P-256", "x": b64(&es256[1..33]), "y": b64(&es256[33..])},
        {"kty": "EC", "kid": "ec-384", "crv": "P-384", "x": b64(&es384[1..49]), "y": b64(&es384[49..])},
        {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64(&k.ed.public_key().to_bytes())},
        {"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": b64(&[7u8; 32])}
    ]})
}

fn config(extra: Value) -> JwtConfig {
    let mut provider = serde_json::json!({
        "name": "corp", "issuer": ISS, "audiences": [AUD], "jwks": jwks_json()
    });
    if let (Some(p), Some(e)) = (provider.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(serde_json::json!({"providers": [provider]})).unwrap()
}

fn verifier() -> TokenVerifier {
    TokenVerifier::compile(&config(serde_json::json!({}))).unwrap()
}

pub(crate) fn claims() -> JWTClaims<Value> {
    let mut c = Claims::with_custom_claims(serde_json::json!({"roles": ["employee"]}), Duration::from_secs(600));
    c.issued_at = Some(Duration::from_secs(NOW - 10));
    c.expires_at = Some(Duration::from_secs(NOW + 600));
    c.invalid_before = Some(Duration::from_secs(NOW - 10));
    c.issuer = Some(ISS.into());
    c.subject = Some("alice".into());
    c.audiences = Some(Audiences::AsString(AUD.into()));
    c
}

fn check(v: &TokenVerifier, token: &str) -> Result<Rc<VerifiedToken>, AuthnFailure> {
    let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let found = v.find_token(&headers, None).ok_or(AuthnFailure::Missing)?;
    match v.verify(&found, NOW * 1000, false) {
        Verification::Verified(t, _) => Ok(t),
        Verification::Failed(f) => Err(f),
        Verification::NeedKeys { .. } => Err(AuthnFailure::JwksUnavailable),
    }
}

/// A token with a hand-written header and payload (for what libraries refuse to mint).
fn raw_token(header: Value, payload: Value, sig: &[u8]) -> String {
    format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()), b64(sig))
}

fn payload() -> Value {
    serde_json::json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": NOW + 600, "iat": NOW - 10})
}

#[test]
fn every_supported_algorithm_verifies() {
    let k = keys();
    let v = verifier();
    let tokens = [
        ("RS256", k.rsa.sign(claims()).unwrap()),
        ("RS384", k.rsa384.sign(claims()).unwrap()),
        ("RS512", k.rsa512.sign(claims()).unwrap()),
        ("PS256", k.ps256.sign(claims()).unwrap()),
        ("PS384", k.ps384.sign(claims()).unwrap()),
        ("PS512", k.ps512.sign(claims()).unwrap()),
        ("ES256", k.es256.sign(claims()).unwrap()),
        ("ES384", k.es384.sign(claims()).unwrap()),
        ("EdDSA", k.ed.sign(claims()).unwrap()),
        ("HS256", k.hs.authenticate(claims()).unwrap()),
    ];
    for (alg, token) in tokens {
        let t = check(&v, &token).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(t.subject.as_deref(), Some("alice"), "{alg}");
        assert_eq!(t.claim("roles"), Some(&serde_json::json!(["employee"])), "{alg}");
    }
}

#[test]
fn rejections_have_exact_reasons() {
    let k = keys();
    let v = verifier();
    let rsa_pub_pem = k.rsa.public_key().to_pem().unwrap();
    let hs_with_rsa_pub = HS256Key::from_bytes(rsa_pub_pem.as_bytes()).with_key_id("rsa-1");
    // Alice's signature on Mallory's payload.
    let tampered = {
        let alice = k.rsa.sign(claims()).unwrap();
        let mut c = claims();
        c.subject = Some("mallory".into());
        let mallory = k.rsa.sign(c).unwrap();
        let cut = mallory.rfind('.').unwrap();
        format!("{}{}", &mallory[..cut], &alice[alice.rfind('.').unwrap()..])
    };
    let with = |f: &dyn Fn(&mut JWTClaims<Value>)| {
        let mut c = claims();
        f(&mut c);
        k.es256.sign(c).unwrap()
    };
    let cases: Vec<(&str, String, AuthnFailure)> = vec![
        ("alg none", raw_token(serde_json::json!({"alg":"none"}), payload(), b""), AuthnFailure::BadAlgorithm),
        ("alg unknown", raw_token(serde_json::json!({"alg":"XS256"}), payload(), b"x"), AuthnFailure::BadAlgorithm),
        ("HS256 keyed with the RSA public key", hs_with_rsa_pub.authenticate(claims()).unwrap(), AuthnFailure::BadAlgorithm),
        (
            "kid of an RSA key, alg ES256",
            raw_token(serde_json::json!({"alg":"ES256","kid":"rsa-1"}), payload(), &[0u8; 64]),
            AuthnFailure::BadAlgorithm,
        ),
        (
            "crit header",
            raw_token(serde_json::json!({"alg":"RS256","kid":"rsa-1","crit":["exp"]}), payload(), b"x"),
            AuthnFailure::UnsupportedCritical,
        ),
        ("unknown kid", raw_token(serde_json::json!({"alg":"RS256","kid":"nope"}), payload(), b"x"), AuthnFailure::UnknownKid),
        ("tampered payload", tampered, AuthnFailure::BadSignature),
        ("two parts", "abc.def".into(), AuthnFailure::Malformed),
        ("four parts", "a.b.c.d".into(), AuthnFailure::Malformed),
        ("bad base64 header", "%%%.e30.x".into(), AuthnFailure::Malformed),
        ("too long", format!("{}.e30.x", "a".repeat(MAX_TOKEN_BYTES)), AuthnFailure::Malformed),
        ("expired", with(&|c| c.expires_at = Some(Duration::from_secs(NOW - 61))), AuthnFailure::Expired),
        ("not yet valid", with(&|c| c.invalid_before = Some(Duration::from_secs(NOW + 61))), AuthnFailure::NotYetValid),
        ("issued in future", with(&|c| c.issued_at = Some(Duration::from_secs(NOW + 61))), AuthnFailure::IssuedInFuture),
        ("no exp", with(&|c| c.expires_at = None), AuthnFailure::MissingExpiration),
        ("other issuer", with(&|c| c.issuer = Some("https://evil.test".into())), AuthnFailure::BadIssuer),
        ("no issuer", with(&|c| c.issuer = None), AuthnFailure::BadIssuer),
        ("other audience", with(&|c| c.audiences = Some(Audiences::AsString("other".into()))), AuthnFailure::BadAudience),
        ("no audience", with(&|c| c.audiences = None), AuthnFailure::BadAudience),
    ];
    for (name, token, want) in cases {
        assert_eq!(check(&v, &token).err(), Some(want), "{name}");
    }
}

#[test]
fn clock_skew_is_tolerated_within_bounds() {
    let k = keys();
    let v = verifier();
    let mut c = claims();
    c.expires_at = Some(Duration::from_secs(NOW - 59));
    c.issued_at = Some(Duration::from_secs(NOW + 59));
    c.invalid_before = Some(Duration::from_secs(NOW + 59));
    assert!(check(&v, &k.ed.sign(c).unwrap()).is_ok());
}

#[test]
fn audience_may_be_a_list() {
    let k = keys();
    let v = verifier();
    let mut c = claims();
    c.audiences = Some(Audiences::AsSet(HashSet::from(["x".to_string(), AUD.to_string()])));
    assert!(check(&v, &k.ed.sign(c).unwrap()).is_ok());
}

#[test]
fn exp_can_be_made_optional() {
    let k = keys();
    let v = TokenVerifier::compile(&config(serde_json::json!({"require_expiration": false}))).unwrap();
    let mut c = claims();
    c.expires_at = None;
    assert!(check(&v, &k.ed.sign(c).unwrap()).is_ok());
}

#[test]
fn second_verification_is_a_cache_hit_until_exp() {
    let k = keys();
    let v = verifier();
    let token = k.rsa.sign(claims()).unwrap();
    let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let found = v.find_token(&headers, None).unwrap();
    assert!(matches!(v.verify(&found, NOW * 1000, false), Verification::Verified(_, CacheStatus::Miss)));
    assert!(matches!(v.verify(&found, NOW * 1000, false), Verification::Verified(_, CacheStatus::Hit)));
    // At exp the cached entry is gone and the token is re-checked: beyond the
    // skew it is refused as expired.
    let late = (NOW + 600 + 61) * 1000;
    assert_eq!(v.verify(&found, late, false), Verification::Failed(AuthnFailure::Expired));
}

#[test]
fn weak_rsa_keys_are_refused_at_load() {
    let mut n = vec![0xffu8; 128];
    n[0] = 0xc1;
    let jwk = serde_json::json!({"keys": [{"kty": "RSA", "n": b64(&n), "e": "AQAB"}]});
    let cfg: JwtConfig = serde_json::from_value(serde_json::json!({"providers": [{"name": "a", "jwks": jwk}]})).unwrap();
    let err = TokenVerifier::compile(&cfg).err().unwrap();
    assert_eq!(err.field(), "jwt.providers[0].jwks.keys[0]");
    assert!(err.to_string().contains("1024 bits"), "{err}");
}

#[test]
fn jwk_alg_pins_the_algorithm() {
    let k = keys();
    let rsa = k.rsa.public_key().to_components();
    let cfg: JwtConfig = serde_json::from_value(serde_json::json!({"providers": [{
        "name": "a", "issuer": ISS, "audiences": [AUD],
        "jwks": {"keys": [{"kty": "RSA", "kid": "rsa-1", "alg": "PS256", "n": b64(&rsa.n), "e": b64(&rsa.e)}]}
    }]}))
    .unwrap();
    let v = TokenVerifier::compile(&cfg).unwrap();
    assert!(check(&v, &k.ps256.sign(claims()).unwrap()).is_ok());
    assert_eq!(check(&v, &k.rsa.sign(claims()).unwrap()).err(), Some(AuthnFailure::BadAlgorithm));
}

#[test]
fn bad_jwks_in_config_name_the_key() {
    let cases = [
        (serde_json::json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}), "P-521"),
        (serde_json::json!({"kty": "RSA", "n": "!!", "e": "AQAB"}), "base64url"),
        (serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}), "not a valid public key"),
        (serde_json::json!({"kty": "oct", "k": "c2hvcnQ"}), "not a valid public key"),
        (serde_json::json!({"kty": "RSA", "alg": "ES256", "n": "AA", "e": "AQAB"}), "ES256"),
    ];
    for (jwk, needle) in cases {
        let cfg: JwtConfig =
            serde_json::from_value(serde_json::json!({"providers": [{"name": "a", "jwks": {"keys": [jwk]}}]})).unwrap();
        let err = TokenVerifier::compile(&cfg).err().unwrap();
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}

fn remote_verifier() -> TokenVerifier {
    let cfg: JwtConfig = serde_json::from_value(serde_json::json!({"providers": [{
        "name": "corp", "issuer": ISS, "audiences": [AUD],
        "remote_jwks": {"cluster": "idp", "path": "/jwks", "refetch_cooldown_seconds": 10}
    }]}))
    .unwrap();
    TokenVerifier::compile(&cfg).unwrap()
}

#[test]
fn remote_keys_are_waited_for_then_used() {
    let k = keys();
    let v = remote_verifier();
    let token = k.ed.sign(claims()).unwrap();
    let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let found = v.find_token(&headers, None).unwrap();
    let t = NOW * 1000;
    assert_eq!(v.verify(&found, t, true), Verification::NeedKeys { provider: 0 });
    assert_eq!(v.verify(&found, t, false), Verification::Failed(AuthnFailure::JwksUnavailable));
    let due = v.jwks_due(t);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1.upstream, "idp");
    assert_eq!(due[0].1.path, "/jwks");
    v.jwks_started(0, t, true);
    assert!(v.jwks_due(t).is_empty(), "one fetch at a time");
    let body = jwks_json().to_string();
    assert!(matches!(v.jwks_finished(0, t, Some(200), body.as_bytes()), Some(FetchOutcome::Updated { keys: 5, .. })));
    assert!(matches!(v.verify(&found, t, true), Verification::Verified(_, CacheStatus::Miss)));
}

#[test]
fn rotation_to_an_unknown_kid_triggers_one_refetch() {
    let k = keys();
    let v = remote_verifier();
    let t = NOW * 1000;
    v.jwks_started(0, t, true);
    let only_ed = serde_json::json!({"keys": [jwks_json()["keys"][3].clone()]}).to_string();
    v.jwks_finished(0, t, Some(200), only_ed.as_bytes());

    let rotated = k.es256.sign(claims()).unwrap();
    let headers = vec![("authorization".to_string(), format!("Bearer {rotated}"))];
    let found = v.find_token(&headers, None).unwrap();
    // Within the cooldown after the last fetch: no refetch, unknown kid.
    assert_eq!(v.verify(&found, t + 1000, true), Verification::Failed(AuthnFailure::UnknownKid));
    // After it: the request waits for a refetch.
    let later = t + 11_000;
    assert_eq!(v.verify(&found, later, true), Verification::NeedKeys { provider: 0 });
    assert_eq!(v.jwks_due(later).len(), 1);
    v.jwks_started(0, later, true);
    v.jwks_finished(0, later, Some(200), jwks_json().to_string().as_bytes());
    assert!(matches!(v.verify(&found, later, false), Verification::Verified(..)));
}

#[test]
fn jwks_down_keeps_the_last_good_set() {
    let k = keys();
    let v = remote_verifier();
    let t = NOW * 1000;
    v.jwks_started(0, t, true);
    v.jwks_finished(0, t, Some(200), jwks_json().to_string().as_bytes());
    let later = t + 600_000;
    assert_eq!(v.jwks_due(later).len(), 1, "refresh due");
    v.jwks_started(0, later, true);
    assert!(matches!(v.jwks_finished(0, later, None, b""), Some(FetchOutcome::Failed(_))));
    assert!(check(&v, &k.ed.sign(claims()).unwrap()).is_ok());
}

#[test]
fn providers_are_chosen_by_issuer() {
    let k = keys();
    let mut cfg = config(serde_json::json!({}));
    let mut other: crate::config::jwt::JwtProvider = cfg.providers[0].clone();
    other.name = "partner".into();
    other.issuer = Some("https://partner.test".into());
    other.jwks = Some(crate::config::jwt::JwkSet {
        keys: vec![Jwk { kty: "OKP".into(), kid: Some("ed-1".into()), crv: Some("Ed25519".into()), x: Some(b64(&k.ed.public_key().to_bytes())), ..Jwk::default() }],
    });
    cfg.providers.insert(0, other);
    let v = TokenVerifier::compile(&cfg).unwrap();
    let t = check(&v, &k.rsa.sign(claims()).unwrap()).unwrap();
    assert_eq!(v.provider_name(t.provider), "corp");
    let mut c = claims();
    c.issuer = Some("https://partner.test".into());
    let t = check(&v, &k.ed.sign(c).unwrap()).unwrap();
    assert_eq!(v.provider_name(t.provider), "partner");
}

#[test]
fn missing_token_is_missing() {
    let v = verifier();
    assert_eq!(v.find_token(&[], None), None);
    let headers = vec![("authorization".to_string(), "Basic dXNlcjpwYXNz".to_string())];
    assert_eq!(v.find_token(&headers, None), None);
}
