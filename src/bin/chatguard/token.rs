//! `chatguard token`: verify a token against a policy; make demo keys and tokens.
//!
//! `verify` exits 0 and prints the subject and claims for a valid token, 1 with
//! the reason code for an invalid one, 2 for a usage or policy error.

use crate::{flag_value, load_policy, usage_error};
use chatguard::engine::Engine;
use chatguard::jwt::Verification;
use jwt_simple::prelude::*;

/// Runs `token verify|keygen|sign`.
pub fn run(args: &[String]) -> u8 {
    match args.first().map(String::as_str) {
        Some("verify") => verify(&args[1..]),
        Some("keygen") => keygen(&args[1..]),
        Some("sign") => sign(&args[1..]),
        _ => usage_error(
            "token: expected `verify --policy P [--jwks FILE] [--now UNIX_SECONDS] TOKEN`, \
             `keygen --out DIR [--kid KID]` or `sign --key PEM [--kid KID] [--sub S] [--claims JSON] [--ttl SECONDS] [--iss I] [--aud A] [--count N]`",
        ),
    }
}

/// The last argument that is neither a flag nor a flag's value.
fn positional(args: &[String], flags_with_values: &[&str]) -> Option<String> {
    let mut i = 0;
    let mut last = None;
    while i < args.len() {
        if flags_with_values.contains(&args[i].as_str()) {
            i += 2;
            continue;
        }
        last = Some(args[i].clone());
        i += 1;
    }
    last
}

fn now_secs(args: &[String]) -> Result<u64, u8> {
    match flag_value(args, "--now") {
        Some(v) => v.parse().map_err(|_| usage_error("--now takes Unix seconds")),
        None => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    }
}

fn verify(args: &[String]) -> u8 {
    let Some(policy_path) = flag_value(args, "--policy") else {
        return usage_error("token verify: --policy is required");
    };
    let Some(token) = positional(args, &["--policy", "--jwks", "--now"]) else {
        return usage_error("token verify: TOKEN is required");
    };
    let policy = match load_policy(policy_path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let source = std::fs::read(policy_path).unwrap_or_default();
    let engine = match Engine::compile(&policy, &source) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("chatguard: {e}");
            return 2;
        }
    };
    let now = match now_secs(args) {
        Ok(n) => n,
        Err(code) => return code,
    };
    let verifier = engine.verifier();
    // Remote providers: the CLI cannot reach an Envoy cluster; `--jwks FILE`
    // stands in for the fetched set.
    if let Some(jwks_path) = flag_value(args, "--jwks") {
        let body = match std::fs::read(jwks_path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("chatguard: cannot read {jwks_path}: {e}");
                return 2;
            }
        };
        for provider in 0..verifier.provider_count() {
            verifier.jwks_started(provider, now * 1000, true);
            verifier.jwks_finished(provider, now * 1000, Some(200), &body);
        }
    }
    let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let Some(found) = verifier.find_token(&headers, None) else {
        println!("invalid: missing");
        return 1;
    };
    match verifier.verify(&found, now * 1000, false) {
        Verification::Verified(t, _) => {
            println!("valid: provider={} subject={}", verifier.provider_name(t.provider), t.subject.as_deref().unwrap_or("-"));
            println!("{}", serde_json::to_string_pretty(&t.claims).unwrap_or_default());
            0
        }
        Verification::Failed(reason) => {
            println!("invalid: {}", reason.code());
            1
        }
        Verification::NeedKeys { .. } => {
            println!("invalid: jwks_unavailable (remote keys: pass --jwks FILE)");
            1
        }
    }
}

/// Verifies `token` against the policy at `policy_path` (with `jwks_path`
/// standing in for remote key sets): the claims, or the reason code.
pub fn verify_claims(
    policy_path: &str,
    token: &str,
    jwks_path: Option<&str>,
    now: u64,
) -> Result<Result<serde_json::Map<String, serde_json::Value>, &'static str>, u8> {
    let policy = load_policy(policy_path)?;
    let source = std::fs::read(policy_path).unwrap_or_default();
    let engine = Engine::compile(&policy, &source).map_err(|e| {
        eprintln!("chatguard: {e}");
        2u8
    })?;
    let verifier = engine.verifier();
    if let Some(path) = jwks_path {
        let body = std::fs::read(path).map_err(|e| {
            eprintln!("chatguard: cannot read {path}: {e}");
            2u8
        })?;
        for provider in 0..verifier.provider_count() {
            verifier.jwks_started(provider, now * 1000, true);
            verifier.jwks_finished(provider, now * 1000, Some(200), &body);
        }
    }
    let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let Some(found) = verifier.find_token(&headers, None) else { return Ok(Err("missing")) };
    Ok(match verifier.verify(&found, now * 1000, false) {
        Verification::Verified(t, _) => Ok(t.claims.clone()),
        Verification::Failed(reason) => Err(reason.code()),
        Verification::NeedKeys { .. } => Err("jwks_unavailable"),
    })
}

fn keygen(args: &[String]) -> u8 {
    let Some(out) = flag_value(args, "--out") else {
        return usage_error("token keygen: --out DIR is required");
    };
    let kid = flag_value(args, "--kid").unwrap_or("demo-rs256");
    let pair = match RS256KeyPair::generate(2048) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chatguard: key generation failed: {e}");
            return 2;
        }
    };
    let components = pair.public_key().to_components();
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let jwks = serde_json::json!({"keys": [{
        "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": b64(&components.n), "e": b64(&components.e)
    }]});
    let pem = match pair.to_pem() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chatguard: cannot encode key: {e}");
            return 2;
        }
    };
    let dir = std::path::Path::new(out);
    let written = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(dir.join("private.pem"), pem))
        .and_then(|_| std::fs::write(dir.join("jwks.json"), jwks.to_string()));
    if let Err(e) = written {
        eprintln!("chatguard: cannot write to {out}: {e}");
        return 2;
    }
    println!("wrote {out}/private.pem and {out}/jwks.json (kid {kid})");
    0
}

fn sign(args: &[String]) -> u8 {
    let Some(key_path) = flag_value(args, "--key") else {
        return usage_error("token sign: --key PEM is required");
    };
    let pem = match std::fs::read_to_string(key_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chatguard: cannot read {key_path}: {e}");
            return 2;
        }
    };
    let kid = flag_value(args, "--kid").unwrap_or("demo-rs256");
    let pair = match RS256KeyPair::from_pem(&pem) {
        Ok(p) => p.with_key_id(kid),
        Err(e) => {
            eprintln!("chatguard: {key_path} is not an RSA private key: {e}");
            return 2;
        }
    };
    let custom: serde_json::Value = match flag_value(args, "--claims") {
        Some(json) => match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => return usage_error(&format!("--claims is not JSON: {e}")),
        },
        None => serde_json::json!({}),
    };
    let ttl: u64 = match flag_value(args, "--ttl").map(str::parse).transpose() {
        Ok(t) => t.unwrap_or(3600),
        Err(_) => return usage_error("--ttl takes seconds"),
    };
    let now = match now_secs(args) {
        Ok(n) => n,
        Err(code) => return code,
    };
    let count: u64 = match flag_value(args, "--count").map(str::parse).transpose() {
        Ok(c) => c.unwrap_or(1),
        Err(_) => return usage_error("--count takes a number"),
    };
    if count > 1 {
        // Distinct tokens (distinct `jti`), e.g. for cache-miss benchmarks.
        for n in 0..count {
            let mut c = custom.clone();
            if let Some(obj) = c.as_object_mut() {
                obj.insert("jti".into(), format!("t{n}").into());
            }
            let code = sign_one(&pair, c, ttl, now, args);
            if code != 0 {
                return code;
            }
        }
        return 0;
    }
    sign_one(&pair, custom, ttl, now, args)
}

fn sign_one(pair: &RS256KeyPair, custom: serde_json::Value, ttl: u64, now: u64, args: &[String]) -> u8 {
    let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(ttl));
    claims.issued_at = Some(Duration::from_secs(now));
    claims.invalid_before = Some(Duration::from_secs(now));
    claims.expires_at = Some(Duration::from_secs(now + ttl));
    claims.issuer = Some(flag_value(args, "--iss").unwrap_or("https://idp.example.test").to_string());
    claims.audiences = Some(Audiences::AsString(flag_value(args, "--aud").unwrap_or("chatbot-api").to_string()));
    claims.subject = flag_value(args, "--sub").map(str::to_string);
    match pair.sign(claims) {
        Ok(token) => {
            println!("{token}");
            0
        }
        Err(e) => {
            eprintln!("chatguard: signing failed: {e}");
            2
        }
    }
}
