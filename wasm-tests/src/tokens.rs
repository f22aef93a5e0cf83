//! Keys generated once per test binary (never committed) and tokens minted with
//! them: one key per algorithm chatguard accepts, their JWKS, and claim builders.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

/// Issuer the test policies trust.
pub const ISSUER: &str = "https://idp.example.test";
/// Audience the test policies require.
pub const AUDIENCE: &str = "chatbot-api";

/// One key per algorithm; the RSA and PSS keys share one 2048-bit modulus.
pub struct TestKeys {
    pub rs256: RS256KeyPair,
    pub rs384: RS384KeyPair,
    pub rs512: RS512KeyPair,
    pub ps256: PS256KeyPair,
    pub ps384: PS384KeyPair,
    pub ps512: PS512KeyPair,
    pub es256: ES256KeyPair,
    pub es384: ES384KeyPair,
    pub eddsa: Ed25519KeyPair,
    pub hs256: HS256Key,
    /// A second RSA key ("rotated-1"), absent from [`TestKeys::jwks`].
    pub rotated: RS256KeyPair,
}

/// The secret of the HS256 test key.
pub const HS256_SECRET: [u8; 32] = [42u8; 32];

/// The keys of this test binary.
pub fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rs256 = RS256KeyPair::generate(2048).expect("rsa keygen").with_key_id("rsa-1");
        let der = rs256.to_der().expect("der");
        TestKeys {
            rs384: RS384KeyPair::from_der(&der).expect("der").with_key_id("rsa-1"),
            rs512: RS512KeyPair::from_der(&der).expect("der").with_key_id("rsa-1"),
            ps256: PS256KeyPair::from_der(&der).expect("der").with_key_id("rsa-1"),
            ps384: PS384KeyPair::from_der(&der).expect("der").with_key_id("rsa-1"),
            ps512: PS512KeyPair::from_der(&der).expect("der").with_key_id("rsa-1"),
            rs256,
            es256: ES256KeyPair::generate().with_key_id("ec-256"),
            es384: ES384KeyPair::generate().with_key_id("ec-384"),
            eddsa: Ed25519KeyPair::generate().with_key_id("ed-1"),
            hs256: HS256Key::from_bytes(&HS256_SECRET).with_key_id("hs-1"),
            rotated: RS256KeyPair::generate(2048).expect("rsa keygen").with_key_id("rotated-1"),
        }
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_jwk(key: &RS256KeyPair) -> Value {
    let c = key.public_key().to_components();
    json!({"kty": "RSA", "kid": key.key_id().clone().unwrap_or_default(), "n": b64(&c.n), "e": b64(&c.e)})
}

/// JWKS with every key but the rotated one (and HS256 only with `with_secret`).
pub fn jwks(with_secret: bool) -> Value {
    let k = keys();
    let es256 = k.es256.public_key().public_key().to_bytes_uncompressed();
    let es384 = k.es384.public_key().public_key().to_bytes_uncompressed();
    let mut list = vec![
        rsa_jwk(&k.rs256),
        json!({"kty": "EC", "kid": "ec-256", "crv": "P-256", "x": b64(&es256[1..33]), "y": b64(&es256[33..])}),
        json!({"kty": "EC", "kid": "ec-384", "crv": "P-384", "x": b64(&es384[1..49]), "y": b64(&es384[49..])}),
        json!({"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64(&k.eddsa.public_key().to_bytes())}),
    ];
    if with_secret {
        list.push(json!({"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": b64(&HS256_SECRET)}));
    }
    json!({ "keys": list })
}

/// JWKS holding only the rotated key.
pub fn rotated_jwks() -> Value {
    json!({ "keys": [rsa_jwk(&keys().rotated)] })
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Claims valid for 10 minutes from `now`, for `sub`, with extra claims.
pub fn claims(sub: &str, extra: Value) -> JWTClaims<Value> {
    claims_at(sub, extra, now())
}

/// Claims valid for 10 minutes from `at`.
pub fn claims_at(sub: &str, extra: Value, at: u64) -> JWTClaims<Value> {
    let mut c = Claims::with_custom_claims(extra, Duration::from_secs(600));
    c.issued_at = Some(Duration::from_secs(at));
    c.invalid_before = Some(Duration::from_secs(at));
    c.expires_at = Some(Duration::from_secs(at + 600));
    c.issuer = Some(ISSUER.into());
    c.audiences = Some(Audiences::AsString(AUDIENCE.into()));
    c.subject = Some(sub.into());
    c
}

/// An RS256 token for `sub` with `roles`.
pub fn rs256(sub: &str, roles: &[&str]) -> String {
    keys().rs256.sign(claims(sub, json!({ "roles": roles }))).expect("sign")
}

/// A token with a hand-written header and payload (what libraries refuse to mint).
pub fn raw(header: Value, payload: Value, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()), b64(signature))
}

/// A policy whose single provider trusts `jwks` inline, plus extra top-level sections.
pub fn policy_inline(jwks: &Value, extra: Value) -> Value {
    let mut p = json!({"jwt": {"providers": [{
        "name": "corp", "issuer": ISSUER, "audiences": [AUDIENCE], "jwks": jwks,
        "claim_to_headers": [{"claim": "sub", "header": "x-user-id"}]
    }]}});
    merge(&mut p, extra);
    p
}

/// A policy whose provider fetches its keys from cluster `idp`.
pub fn policy_remote(remote: Value, extra: Value) -> Value {
    let mut r = json!({"cluster": "idp", "authority": "idp.example.test", "path": "/.well-known/jwks.json"});
    merge(&mut r, remote);
    let mut p = json!({"jwt": {"providers": [{
        "name": "corp", "issuer": ISSUER, "audiences": [AUDIENCE], "remote_jwks": r,
        "claim_to_headers": [{"claim": "sub", "header": "x-user-id"}]
    }]}});
    merge(&mut p, extra);
    p
}

/// Shallow-merges object `extra` into `base` (top-level keys replaced).
pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}
