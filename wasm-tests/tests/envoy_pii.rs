//! PII redaction, end to end: the built chatguard.wasm in a real Envoy 1.40
//! (V8). Request and response bodies (JSON, SSE streamed slowly in tiny chunks,
//! gzip) are compared byte for byte with their redacted form; exempt callers,
//! size limits and unlisted content types are checked at the wire.

use serde_json::{json, Value};
use std::time::Duration;
use wasm_tests::e2e::{self, http, Envoy, EnvoyConfig, Reply, Upstream};
use wasm_tests::tokens;

/// The `pii.hash_key` of every test policy (the expected pseudonyms are computed with it).
const HASH_KEY: &str = "e2e-pii-hash-key-0123456789abcdef";
/// `pii.max_body_bytes` of every test policy: small, so the limit is cheap to cross.
const MAX_BODY: usize = 1024;

const EMAIL: &str = "jane.doe@example.com";
const OTHER_EMAIL: &str = "bob.smith@example.org";
/// A Luhn-valid Visa number.
const CARD: &str = "4111 1111 1111 1111";
const CARD_MASKED: &str = "**** **** **** 1111";
const CARD_DASHED: &str = "4111-1111-1111-1111";
const CARD_DASHED_MASKED: &str = "****-****-****-1111";
const SSN: &str = "123-45-6789";

/// `<EMAIL_ADDRESS:8 hex>`: the first 4 bytes of HMAC-SHA256(value, hash_key).
fn pseudonym(email: &str) -> String {
    let mac = hmac_sha256::HMAC::mac(email.as_bytes(), HASH_KEY.as_bytes());
    let hex: String = mac.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("<EMAIL_ADDRESS:{hex}>")
}

/// What every redacted text in these tests is expected to become.
fn redacted(text: &str) -> String {
    text.replace(EMAIL, &pseudonym(EMAIL))
        .replace(OTHER_EMAIL, &pseudonym(OTHER_EMAIL))
        .replace(CARD, CARD_MASKED)
        .replace(CARD_DASHED, CARD_DASHED_MASKED)
        .replace(SSN, "<US_SSN>")
}

fn assert_no_pii(what: &str, text: &str) {
    for v in [EMAIL, OTHER_EMAIL, CARD, CARD_DASHED, SSN, "jane.doe", "4111 1111", "4111-1111", "6789"] {
        assert!(!text.contains(v), "{what}: `{v}` leaked: {text}");
    }
}

/// A role `employee` that may use `/api/**`, and `privacy_officer` which also
/// holds the exempt permission `read_pii`.
fn rbac() -> Value {
    json!({
        "roles": {
            "employee": {"permissions": ["chat"]},
            "privacy_officer": {"inherits": ["employee"], "permissions": ["read_pii"]}
        },
        "rules": [{"id": "api", "path": "/api/**", "permissions": ["chat"]}],
        "default": "deny"
    })
}

fn policy() -> Value {
    tokens::policy_inline(
        &tokens::jwks(false),
        json!({
            "rbac": rbac(),
            "pii": {
                "request": true, "response": true,
                "operators": {"default": {"type": "replace"},
                              "CREDIT_CARD": {"type": "mask", "keep_last": 4},
                              "EMAIL_ADDRESS": {"type": "hash"}},
                "hash_key": HASH_KEY,
                "exempt_permission": "read_pii",
                "max_body_bytes": MAX_BODY,
                "content_types": ["application/json", "text/event-stream", "text/plain"]
            }
        }),
    )
}

fn start(up: &Upstream) -> Envoy {
    Envoy::start(EnvoyConfig::chatguard(&policy().to_string()).upstream(up.port())).unwrap()
}

fn bearer(roles: &[&str]) -> String {
    format!("Bearer {}", tokens::rs256("alice", roles))
}

/// Content-Length, when the upstream got one, must be the length of what it got.
fn assert_length_consistent(seen: &e2e::Received) {
    match seen.header("content-length") {
        Some(l) => assert_eq!(l.parse::<usize>().unwrap(), seen.body.len(), "stale content-length"),
        None => assert_eq!(seen.header("transfer-encoding"), Some("chunked"), "no framing at all"),
    }
}

/// GET on a raw socket: every byte the client receives until the connection
/// closes or resets (a reset is not an error here: it is what is asserted).
fn raw_get(port: u16, path: &str, auth: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: {auth}\r\naccept-encoding: gzip\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("no end of response within 10 s: {:?}", String::from_utf8_lossy(&out))
            }
            Err(_) => break,
        }
    }
    out
}

fn counter(envoy: &Envoy, name: &str) -> u64 {
    envoy.counter(&format!("wasmcustom.chatguard.{name}")).unwrap_or(0)
}

#[test]
fn json_request_bodies_reach_the_upstream_redacted_with_stable_pseudonyms() {
    if e2e::skip_without_chatguard("json_request_bodies_reach_the_upstream_redacted_with_stable_pseudonyms") {
        return;
    }
    let up = Upstream::start();
    let envoy = start(&up);
    let port = envoy.listener_port();
    let auth = bearer(&["employee"]);
    let h: &[(&str, &str)] = &[("authorization", &auth), ("content-type", "application/json")];

    let first = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"I am {EMAIL}, card {CARD}, SSN {SSN}. Order 1234-5678."}}],"n":1}}"#
    );
    let r = http::post(port, "/api/chat", h, first.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last_request().expect("upstream saw the request");
    let expected = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"I am {}, card {CARD_MASKED}, SSN <US_SSN>. Order 1234-5678."}}],"n":1}}"#,
        pseudonym(EMAIL)
    );
    assert_eq!(seen.text(), expected);
    assert_eq!(expected, redacted(&first));
    let parsed = seen.json();
    assert_eq!(parsed["messages"][0]["role"], "user", "still valid JSON, structure kept");
    assert_length_consistent(&seen);
    assert_no_pii("upstream body", &seen.text());

    // The same e-mail maps to the same pseudonym in another request; another
    // e-mail to another one. This body arrives chunked, split inside the values.
    let second = format!(r#"{{"messages":[{{"role":"user","content":"again {EMAIL} and {OTHER_EMAIL}"}}]}}"#);
    let bytes = second.as_bytes();
    let cut1 = second.find("doe@").unwrap() + 2;
    let cut2 = second.find("smith").unwrap() + 3;
    let parts = [&bytes[..cut1], &bytes[cut1..cut2], &bytes[cut2..]];
    let r = http::request_in_parts(port, "POST", "/api/chat", h, &parts, Duration::from_millis(30));
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last_request().unwrap();
    assert_eq!(
        seen.text(),
        format!(r#"{{"messages":[{{"role":"user","content":"again {} and {}"}}]}}"#, pseudonym(EMAIL), pseudonym(OTHER_EMAIL))
    );
    assert_ne!(pseudonym(EMAIL), pseudonym(OTHER_EMAIL));
    let shape = pseudonym(EMAIL);
    assert_eq!(shape.len(), "<EMAIL_ADDRESS:>".len() + 8);
    assert!(shape[15..23].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{shape}");
    assert_length_consistent(&seen);

    // A body without PII is passed byte for byte.
    let clean = r#"{"messages":[{"role":"user","content":"order 4111-2222 ships v1.2.3 on 2024-05-01"}]}"#;
    let r = http::post(port, "/api/chat", h, clean.as_bytes());
    assert_eq!(r.status, 200);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.text(), clean);
    assert_length_consistent(&seen);

    assert_eq!(counter(&envoy, "pii_redacted.request.EMAIL_ADDRESS"), 3);
    assert_eq!(counter(&envoy, "pii_redacted.request.CREDIT_CARD"), 1);
    assert_eq!(counter(&envoy, "pii_redacted.request.US_SSN"), 1);
}

#[test]
fn json_responses_are_redacted_unless_the_caller_holds_the_exempt_permission() {
    if e2e::skip_without_chatguard("json_responses_are_redacted_unless_the_caller_holds_the_exempt_permission") {
        return;
    }
    let up = Upstream::start();
    let profile =
        format!(r#"{{"name":"Jane Doe","email":"{EMAIL}","card":"{CARD_DASHED}","ssn":"{SSN}","plan":"gold","id":42}}"#);
    up.on("/api/profile", Reply::new(200).header("content-type", "application/json").body(profile.clone()));
    // Over max_body_bytes: not buffered, redacted as a stream instead.
    let filler = "lorem ipsum dolor sit amet ".repeat(60);
    let big = format!(r#"{{"a":"{EMAIL} {filler}","b":"{filler} card {CARD}","c":"{SSN}"}}"#);
    assert!(big.len() > 2 * MAX_BODY);
    up.on("/api/big", Reply::new(200).header("content-type", "application/json; charset=utf-8").body(big.clone()));
    let envoy = start(&up);
    let port = envoy.listener_port();

    let employee = bearer(&["employee"]);
    let r = http::get(port, "/api/profile", &[("authorization", &employee)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let expected = format!(
        r#"{{"name":"Jane Doe","email":"{}","card":"{CARD_DASHED_MASKED}","ssn":"<US_SSN>","plan":"gold","id":42}}"#,
        pseudonym(EMAIL)
    );
    assert_eq!(r.text(), expected);
    assert_eq!(r.json()["id"], 42);
    if let Some(l) = r.header("content-length") {
        assert_eq!(l.parse::<usize>().unwrap(), r.body.len(), "stale content-length");
    }
    assert_eq!(up.last_request().unwrap().header("accept-encoding"), Some("identity"));

    let r = http::get(port, "/api/big", &[("authorization", &employee)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), redacted(&big), "an oversized response is redacted, not passed");
    assert_no_pii("oversized response", &r.text());

    // The exempt caller (read_pii via privacy_officer) gets the original bytes.
    let officer = bearer(&["privacy_officer"]);
    let r = http::get(port, "/api/profile", &[("authorization", &officer)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), profile);
    let r = http::get(port, "/api/big", &[("authorization", &officer)]);
    assert_eq!(r.text(), big);

    // The permission is what counts, not the name: an employee again is redacted.
    let r = http::get(port, "/api/profile", &[("authorization", &employee)]);
    assert_eq!(r.text(), expected);

    assert_eq!(counter(&envoy, "pii_redacted.response.EMAIL_ADDRESS"), 3);
    assert_eq!(counter(&envoy, "pii_redacted.response.US_SSN"), 3);
    assert_eq!(counter(&envoy, "pii_redacted.response.CREDIT_CARD"), 3);
}

/// Chunk sizes cycling through 3..=7 bytes.
fn tiny_pieces(body: &str) -> Vec<Vec<u8>> {
    let sizes = [3usize, 5, 7, 4, 6];
    let bytes = body.as_bytes();
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let n = sizes[i % sizes.len()].min(bytes.len() - at);
        pieces.push(bytes[at..at + n].to_vec());
        at += n;
        i += 1;
    }
    pieces
}

#[test]
fn sse_streamed_in_tiny_slow_chunks_is_redacted_progressively() {
    if e2e::skip_without_chatguard("sse_streamed_in_tiny_slow_chunks_is_redacted_progressively") {
        return;
    }
    let delta = |s: &str| format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{s}\"}}}}]}}\n\n");
    let events = [
        delta("Hello! Your record:"),
        delta(&format!("email {EMAIL}")),
        delta(&format!("card {CARD}")),
        delta(&format!("ssn {SSN}, all set.")),
        "event: note\ndata: plain text line, no pii\n\n".to_string(),
        "data: [DONE]\n\n".to_string(),
    ];
    let body: String = events.concat();
    let pieces = tiny_pieces(&body);
    // Every value is cut by at least one chunk boundary.
    for v in [EMAIL, CARD, SSN] {
        let at = body.find(v).unwrap();
        assert!(pieces.iter().all(|p| !String::from_utf8_lossy(p).contains(v)), "{v} at {at} not split");
    }
    let delay = Duration::from_millis(20);
    let up = Upstream::start();
    up.on("/api/stream", Reply::stream(200, "text/event-stream", pieces.clone(), delay).header("cache-control", "no-cache"));
    let envoy = start(&up);
    let auth = bearer(&["employee"]);
    let s = http::stream(envoy.listener_port(), "GET", "/api/stream", &[("authorization", &auth)], b"");
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.header("content-length"), None);

    let expected = redacted(&body);
    assert_ne!(expected, body);
    assert_eq!(s.text(), expected, "the concatenated stream equals the redacted whole");
    for c in &s.chunks {
        assert_no_pii("a streamed chunk", &String::from_utf8_lossy(&c.data));
    }

    // Progressive: the upstream needs pieces*delay to send everything; the first
    // event must not wait for the last.
    let data: Vec<_> = s.chunks.iter().filter(|c| !c.data.is_empty()).collect();
    assert!(data.len() >= events.len(), "only {} non-empty chunks: {:?}", data.len(), s.chunks);
    let first = data.first().unwrap().at;
    let last = data.last().unwrap().at;
    let sending = delay * (pieces.len() as u32 - 1);
    assert!(
        last - first >= sending / 2,
        "events were held back: first at {first:?}, last at {last:?}, upstream sent for {sending:?}"
    );
    // Each event arrives in order, and the first event arrives before the
    // upstream wrote the second one's last byte.
    let first_text = String::from_utf8_lossy(&data[0].data).into_owned();
    assert!(expected.starts_with(&first_text));
    assert!(first < sending / 2, "first event only at {first:?}");
    assert_eq!(counter(&envoy, "pii_redacted.response.EMAIL_ADDRESS"), 1);
    assert_eq!(counter(&envoy, "pii_redacted.response.CREDIT_CARD"), 1);
    assert_eq!(counter(&envoy, "pii_redacted.response.US_SSN"), 1);
}

#[test]
fn compressed_responses_are_decoded_and_redacted_or_refused() {
    if e2e::skip_without_chatguard("compressed_responses_are_decoded_and_redacted_or_refused") {
        return;
    }
    let plain = format!(r#"{{"reply":"contact {EMAIL} or use card {CARD}","ssn":"{SSN}"}}"#);
    let up = Upstream::start();
    // The upstream ignores accept-encoding: identity.
    up.on("/api/gz", Reply::gzip(200, "application/json", plain.as_bytes()));
    let deflated = {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(plain.as_bytes()).unwrap();
        z.finish().unwrap()
    };
    up.on(
        "/api/deflate",
        Reply::new(200).header("content-type", "application/json").header("content-encoding", "deflate").body(deflated),
    );
    let mut corrupt = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0xff];
    corrupt.extend_from_slice(format!("not deflate at all {EMAIL}").as_bytes());
    up.on(
        "/api/corrupt",
        Reply::new(200).header("content-type", "application/json").header("content-encoding", "gzip").body(corrupt),
    );
    let envoy = start(&up);
    let port = envoy.listener_port();
    let auth = bearer(&["employee"]);
    let h: &[(&str, &str)] = &[("authorization", &auth), ("accept-encoding", "gzip, deflate, br")];

    for path in ["/api/gz", "/api/deflate"] {
        let r = http::get(port, path, h);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-encoding"), None, "{path}");
        assert_eq!(r.text(), redacted(&plain), "{path}");
        if let Some(l) = r.header("content-length") {
            assert_eq!(l.parse::<usize>().unwrap(), r.body.len(), "{path}: stale content-length");
        }
        let seen = up.last_request().unwrap();
        assert_eq!(seen.header("accept-encoding"), Some("identity"), "{path}");
    }

    // Undecodable. In Envoy the status line is already on its way when the body
    // shows the problem (proxy-wasm cannot hold response headers and still see
    // the body), so the refusal is a reset: the head, then no body at all.
    let raw = raw_get(port, "/api/corrupt", &auth);
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\ntransfer-encoding: chunked\r\n"), "{text}");
    let head_end = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(text.len());
    assert_eq!(&text[head_end..], "", "no body byte after the head");
    assert!(!text.to_ascii_lowercase().contains("content-encoding"), "{text}");
    assert_no_pii("corrupt response", &text);
    assert!(!text.contains("not deflate"), "{text}");
    assert_eq!(counter(&envoy, "undecodable_body"), 1);
    // The connection is usable for the next request on a fresh socket.
    let r = http::get(port, "/api/gz", h);
    assert_eq!(r.text(), redacted(&plain));
}

#[test]
fn oversized_requests_get_413_and_never_reach_the_upstream() {
    if e2e::skip_without_chatguard("oversized_requests_get_413_and_never_reach_the_upstream") {
        return;
    }
    let up = Upstream::start();
    let envoy = start(&up);
    let port = envoy.listener_port();
    let auth = bearer(&["employee"]);
    let content = "x".repeat(MAX_BODY);
    let big = format!(r#"{{"messages":[{{"role":"user","content":"{EMAIL} {content}"}}]}}"#);
    assert!(big.len() > MAX_BODY);

    // Announced by content-length: refused at the headers.
    let r = http::post(port, "/api/chat", &[("authorization", &auth), ("content-type", "application/json")], big.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"], "payload_too_large");

    // Chunked, no content-length: refused once the buffered body crosses the limit.
    let parts: Vec<&[u8]> = big.as_bytes().chunks(300).collect();
    let r = http::request_in_parts(
        port,
        "POST",
        "/api/chat",
        &[("authorization", &auth), ("content-type", "application/json")],
        &parts,
        Duration::from_millis(10),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"], "payload_too_large");
    assert_no_pii("413 body", &r.text());

    // The chunked one's headers may have gone upstream before the body crossed
    // the limit (proxy-wasm cannot hold request headers and still see the body);
    // the stream is then reset, so no request ever completes there.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(up.request_count(), 0, "no oversized request reached the upstream");
    assert_eq!(counter(&envoy, "body_too_large"), 2);

    // At the limit exactly is fine (and redacted).
    let pad = MAX_BODY - format!(r#"{{"c":"{EMAIL} "}}"#).len();
    let exact = format!(r#"{{"c":"{EMAIL} {}"}}"#, "y".repeat(pad));
    assert_eq!(exact.len(), MAX_BODY);
    let parts: Vec<&[u8]> = exact.as_bytes().chunks(300).collect();
    let r = http::request_in_parts(
        port,
        "POST",
        "/api/chat",
        &[("authorization", &auth), ("content-type", "application/json")],
        &parts,
        Duration::from_millis(10),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last_request().unwrap().text(), redacted(&exact));
}

#[test]
fn unlisted_content_types_pass_untouched() {
    if e2e::skip_without_chatguard("unlisted_content_types_pass_untouched") {
        return;
    }
    let raw = format!("<profile><email>{EMAIL}</email><card>{CARD}</card><ssn>{SSN}</ssn></profile>");
    let up = Upstream::start();
    up.on("/api/xml", Reply::new(200).header("content-type", "application/xml").body(raw.clone()));
    up.on("/api/upload", Reply::new(200).header("content-type", "application/octet-stream").body("stored"));
    let envoy = start(&up);
    let port = envoy.listener_port();
    let auth = bearer(&["employee"]);

    // Request: bytes and content-length as sent (and not subject to max_body_bytes).
    let big = format!("{raw}{}", " ".repeat(2 * MAX_BODY));
    for body in [&raw, &big] {
        let r = http::post(port, "/api/upload", &[("authorization", &auth), ("content-type", "application/xml")], body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = up.last_request().unwrap();
        assert_eq!(seen.text(), *body);
        assert_eq!(seen.header("content-length"), Some(body.len().to_string().as_str()));
    }

    // Response: bytes and content-length as the upstream sent them.
    let r = http::get(port, "/api/xml", &[("authorization", &auth)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), raw);
    assert_eq!(r.header("content-length"), Some(raw.len().to_string().as_str()));
    assert_eq!(counter(&envoy, "pii_redacted.request.EMAIL_ADDRESS"), 0);
    assert_eq!(counter(&envoy, "pii_redacted.response.EMAIL_ADDRESS"), 0);
    assert_eq!(counter(&envoy, "pii_unlisted_content_type.request"), 2);
    assert_eq!(counter(&envoy, "pii_unlisted_content_type.response"), 3);
}
