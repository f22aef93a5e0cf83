//! Behaviour of the redactor: detection tables, body kinds, streaming equality.

use super::*;
use crate::config::Policy;

pub(crate) fn redactor() -> Redactor {
    Redactor::compile(&PiiConfig::default()).unwrap()
}

pub(crate) fn redact(r: &Redactor, s: &str, kind: BodyKind) -> (String, Findings) {
    let mut f = Findings::new();
    let out = r.redact(s.as_bytes(), kind, &mut f).unwrap();
    (String::from_utf8(out).unwrap(), f)
}

fn text(s: &str) -> String {
    redact(&redactor(), s, BodyKind::Text).0
}

#[test]
fn detects_each_entity_in_text() {
    let cases = [
        ("mail jane.doe+x@mail.example.co.uk now", "mail <EMAIL_ADDRESS> now"),
        ("call (555) 123-4567.", "call <PHONE_NUMBER>."),
        ("call 555-123-4567", "call <PHONE_NUMBER>"),
        ("call 555.123.4567", "call <PHONE_NUMBER>"),
        ("call +1 555 123 4567", "call <PHONE_NUMBER>"),
        ("call +44 20 7946 0958!", "call <PHONE_NUMBER>!"),
        ("call +49 30 1234567", "call <PHONE_NUMBER>"),
        ("ssn 123-45-6789", "ssn <US_SSN>"),
        ("card 4111 1111 1111 1111", "card <CREDIT_CARD>"),
        ("card 4111-1111-1111-1111", "card <CREDIT_CARD>"),
        ("card 378282246310005", "card <CREDIT_CARD>"),
        ("card 4111 1111 1111 1111 2025", "card <CREDIT_CARD> 2025"),
        ("iban DE89 3704 0044 0532 0130 00.", "iban <IBAN_CODE>."),
        ("iban GB82WEST12345698765432", "iban <IBAN_CODE>"),
        ("ip 192.168.1.20, ok", "ip <IP_ADDRESS>, ok"),
        ("ip 2001:db8::8a2e:370:7334", "ip <IP_ADDRESS>"),
        ("ip fe80::1 and ::1", "ip <IP_ADDRESS> and <IP_ADDRESS>"),
        ("key AKIAIOSFODNN7EXAMPLE", "key <SECRET>"),
        ("Authorization: Bearer abcdefghijklmnop0123", "Authorization: Bearer <SECRET>"),
        ("k=sk-proj-abcdefghijklmnopqrstuvwx", "k=<SECRET>"),
        ("t ghp_abcdefghijklmnopqrstuvwxyz0123456789", "t <SECRET>"),
        ("t xoxb-1234567890-abcdefghij", "t <SECRET>"),
        ("t eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl end", "t <SECRET> end"),
        (
            "x -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA==\n-----END RSA PRIVATE KEY----- y",
            "x <SECRET> y",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(text(input), want, "{input}");
    }
}

#[test]
fn look_alikes_survive() {
    let cases = [
        "order 4111111111111112 shipped",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        "at 2024-01-15T10:30:00Z",
        "price $1,234.56 and 12:30",
        "version 1.2.3 and v10.0.19041.1",
        "ssn 000-12-3456 666-12-3456 912-12-3456 123-00-4567 123-45-0000",
        "zip 94103-1234 and 10001",
        "Rust std::vec::Vec and a::b",
        "sk-learn is a library; ghp_ short",
        "call 123-456-7890 (area code cannot start with 1)",
        "tracking 1Z999AA10123456784",
        "mac 00:1A:2B:3C:4D:5E",
    ];
    for input in cases {
        assert_eq!(text(input), input);
    }
}

#[test]
fn json_string_values_only_and_escapes() {
    let r = redactor();
    let cases = [
        (
            r#"{"messages":[{"role":"user","content":"mail me at jane@example.com"}]}"#,
            r#"{"messages":[{"role":"user","content":"mail me at <EMAIL_ADDRESS>"}]}"#,
        ),
        // Keys and numbers stay; an escaped @ is still found.
        (r#"{"jane@example.com": 4111111111111111, "v": "jane\u0040example.com"}"#, r#"{"jane@example.com": 4111111111111111, "v": "<EMAIL_ADDRESS>"}"#),
        // A quote right after the value ends it.
        (r#"{"v": "\"jane@example.com\" said"}"#, r#"{"v": "\"<EMAIL_ADDRESS>\" said"}"#),
        // PEM with \n escapes.
        (
            r#"{"v": "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----\n"}"#,
            r#"{"v": "<SECRET>\n"}"#,
        ),
        // Escapes in strings without findings are left alone.
        (r#"{"v": "caf\u00e9 \/ ok"}"#, r#"{"v": "caf\u00e9 \/ ok"}"#),
    ];
    for (input, want) in cases {
        let (out, _) = redact(&r, input, BodyKind::Json);
        assert_eq!(out, want);
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
    }
}

#[test]
fn masked_values_are_reescaped_in_json() {
    let cfg = Policy::from_json(br#"{"pii": {"operators": {"SECRET": {"type": "mask", "keep_last": 2}}}}"#)
        .unwrap()
        .pii
        .unwrap();
    let r = Redactor::compile(&cfg).unwrap();
    let (out, f) = redact(&r, r#"{"v":"-----BEGIN EC PRIVATE KEY-----\nAB\n-----END EC PRIVATE KEY-----"}"#, BodyKind::Json);
    assert_eq!(f.count(Entity::Secret), 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["v"], "-----***** ** ******* ***-----\n**\n-----*** ** ******* *EY-----");
}

#[test]
fn not_json_falls_back_to_text() {
    let (out, f) = redact(&redactor(), "hello jane@example.com", BodyKind::Json);
    assert_eq!(out, "hello <EMAIL_ADDRESS>");
    assert_eq!(f.count(Entity::EmailAddress), 1);
}

#[test]
fn form_values_are_decoded_and_reencoded() {
    let (out, f) = redact(&redactor(), "a=1&email=jane%40example.com&note=call+555-123-4567&k%40=x", BodyKind::Form);
    assert_eq!(out, "a=1&email=%3CEMAIL_ADDRESS%3E&note=call+%3CPHONE_NUMBER%3E&k%40=x");
    assert_eq!(f.total(), 2);
}

#[test]
fn sse_events_are_redacted_each() {
    let body = "data: {\"choices\":[{\"delta\":{\"content\":\"mail jane@example.com\"}}]}\n\n: ping 10.0.0.1\n\ndata: [DONE]\n\n";
    let (out, f) = redact(&redactor(), body, BodyKind::EventStream);
    assert_eq!(
        out,
        "data: {\"choices\":[{\"delta\":{\"content\":\"mail <EMAIL_ADDRESS>\"}}]}\n\n: ping <IP_ADDRESS>\n\ndata: [DONE]\n\n"
    );
    assert_eq!(f.total(), 2);
}

#[test]
fn other_bodies_pass_untouched() {
    let (out, f) = redact(&redactor(), "jane@example.com", BodyKind::Other);
    assert_eq!(out, "jane@example.com");
    assert!(f.is_empty());
}

#[test]
fn too_large_is_refused() {
    let cfg = Policy::from_json(br#"{"pii": {"max_body_bytes": 4}}"#).unwrap().pii.unwrap();
    let r = Redactor::compile(&cfg).unwrap();
    let err = r.redact(b"12345", BodyKind::Text, &mut Findings::new()).unwrap_err();
    assert_eq!(err, RedactError::TooLarge { size: 5, limit: 4 });
}

#[test]
fn classify_content_types() {
    let r = redactor();
    for (ct, kind) in [
        ("application/json; charset=utf-8", BodyKind::Json),
        ("Application/JSON", BodyKind::Json),
        ("text/plain", BodyKind::Text),
        ("text/event-stream", BodyKind::EventStream),
        ("application/x-www-form-urlencoded", BodyKind::Form),
        ("image/png", BodyKind::Other),
        ("application/vnd.api+json", BodyKind::Other),
        ("", BodyKind::Other),
    ] {
        assert_eq!(r.classify(ct), kind, "{ct}");
    }
}

#[test]
fn gzip_and_deflate_decode_with_a_limit() {
    use std::io::Write;
    let plain = b"mail jane@example.com".repeat(100);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(decode_content_encoding("gzip", &gz, 1 << 20).unwrap(), plain);
    assert_eq!(decode_content_encoding("gzip", &gz, 100), Err(DecodeError::TooLarge { limit: 100 }));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&plain).unwrap();
    assert_eq!(decode_content_encoding("deflate", &z.finish().unwrap(), 1 << 20).unwrap(), plain);
    let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    raw.write_all(&plain).unwrap();
    assert_eq!(decode_content_encoding("deflate", &raw.finish().unwrap(), 1 << 20).unwrap(), plain);
    assert_eq!(decode_content_encoding("gzip", b"not gzip", 100), Err(DecodeError::Corrupt));
    assert_eq!(decode_content_encoding("br", b"x", 100), Err(DecodeError::Unsupported("br".into())));
    // A zip bomb stops at the limit.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![0u8; 10 << 20]).unwrap();
    assert_eq!(decode_content_encoding("gzip", &bomb.finish().unwrap(), 1 << 20), Err(DecodeError::TooLarge { limit: 1 << 20 }));
}

/// A tiny deterministic PRNG (xorshift64*), so the tests need no crate.
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }
}

fn streamed(r: &Redactor, input: &[u8], kind: BodyKind, cuts: &[usize]) -> (Vec<u8>, Findings) {
    let mut s = r.stream(kind);
    let mut out = Vec::new();
    let mut prev = 0;
    for &c in cuts {
        s.push(&input[prev..c], &mut out);
        prev = c;
    }
    s.push(&input[prev..], &mut out);
    s.finish(&mut out);
    (out, *s.findings())
}

fn stream_inputs() -> Vec<(BodyKind, String)> {
    let long_jwt = format!("eyJhbGciOiJIUzI1NiJ9.eyJ{}.sig", "a".repeat(5000));
    vec![
        (BodyKind::Text, "mail jane.doe@example.com, call (555) 123-4567 or +44 20 7946 0958; ssn 123-45-6789".into()),
        (BodyKind::Text, "card 4111 1111 1111 1111 iban DE89 3704 0044 0532 0130 00 ip 10.1.2.3 / 2001:db8::1".into()),
        (BodyKind::Text, "AKIAIOSFODNN7EXAMPLE Bearer abcdefghijklmnop0123 sk-proj-abcdefghijklmnopqrstuvwx x".into()),
        (BodyKind::Text, "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\nafter".into()),
        (BodyKind::Text, format!("jwt {long_jwt} tail 4111111111111111")),
        (BodyKind::Text, "order 4111111111111112 uuid 550e8400-e29b-41d4-a716-446655440000 v1.2.3".into()),
        (BodyKind::Json, r#"{"messages":[{"role":"user","content":"I am jane@example.com, \"ssn\" 123-45-6789\nkey\u0020AKIAIOSFODNN7EXAMPLE"}],"n":4111111111111111}"#.into()),
        (BodyKind::Form, "email=jane%40example.com&phone=555-123-4567&x=1".into()),
        (
            BodyKind::EventStream,
            "data: {\"choices\":[{\"delta\":{\"content\":\"jane@example.com\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" and 555-123-4567\"}}]}\n\ndata: [DONE]\n\n".into(),
        ),
    ]
}

#[test]
fn streamed_output_equals_whole_output_at_every_split() {
    let r = redactor();
    for (kind, input) in stream_inputs() {
        let b = input.as_bytes();
        let mut wf = Findings::new();
        let whole = r.redact_unbounded(b, kind, &mut wf);
        assert!(!wf.is_empty() || input.contains("order"), "{input}");
        let step = if b.len() > 1000 { 7 } else { 1 };
        for cut in (0..=b.len()).step_by(step) {
            let (out, f) = streamed(&r, b, kind, &[cut]);
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&whole), "{kind:?} split at {cut}");
            assert_eq!(f, wf, "{kind:?} split at {cut}");
        }
    }
}

#[test]
fn streamed_output_equals_whole_output_with_random_splits() {
    let r = redactor();
    let mut rng = Rng::new(7);
    for (kind, input) in stream_inputs() {
        let b = input.as_bytes();
        let whole = r.redact_unbounded(b, kind, &mut Findings::new());
        for _ in 0..200 {
            let mut cuts: Vec<usize> = (0..1 + rng.below(12)).map(|_| rng.below(b.len() + 1)).collect();
            cuts.sort_unstable();
            let (out, _) = streamed(&r, b, kind, &cuts);
            assert_eq!(out, whole, "{kind:?} cuts {cuts:?}");
        }
        // One byte at a time.
        let cuts: Vec<usize> = (1..b.len()).collect();
        assert_eq!(streamed(&r, b, kind, &cuts).0, whole, "{kind:?} byte by byte");
    }
}

#[test]
fn first_half_of_a_split_value_is_never_released_and_holdback_is_bounded() {
    let r = redactor();
    let mut s = r.stream(BodyKind::Text);
    let mut out = Vec::new();
    s.push(b"hello, write to jane.d", &mut out);
    assert!(!String::from_utf8_lossy(&out).contains("jane"));
    s.push(b"oe@example.com and call 555-12", &mut out);
    assert!(!String::from_utf8_lossy(&out).contains("555"));
    s.push(b"3-4567 now", &mut out);
    s.finish(&mut out);
    assert_eq!(String::from_utf8(out).unwrap(), "hello, write to <EMAIL_ADDRESS> and call <PHONE_NUMBER> now");
    // Clean text: at most the fixed tail stays held.
    let mut s = r.stream(BodyKind::Text);
    let mut out = Vec::new();
    for _ in 0..1000 {
        s.push(b"just some ordinary words without anything in them. ", &mut out);
        assert!(s.held_back() <= scanner::TAIL, "{}", s.held_back());
    }
    // A PEM block without its end: held up to the cap, then released redacted.
    let mut s = r.stream(BodyKind::Text);
    let mut out = Vec::new();
    s.push(b"-----BEGIN PRIVATE KEY-----\n", &mut out);
    for _ in 0..400 {
        s.push(b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldY\n", &mut out);
        assert!(s.held_back() <= MAX_HOLDBACK, "{}", s.held_back());
    }
    assert!(!String::from_utf8_lossy(&out).contains("QUJD"));
}

#[test]
fn long_json_values_are_cut_where_no_escape_or_character_is_split() {
    use super::json::safe_cut;
    assert_eq!(safe_cut(b"abcdefgh", 4), 4);
    assert_eq!(safe_cut(br"ab\ncd", 3), 2, "before a two-byte escape");
    assert_eq!(safe_cut(br"ab\u0041cd", 5), 2, "before a \\u escape");
    assert_eq!(safe_cut(br"ab\ud83d\ude00cd", 9), 2, "a surrogate pair is one unit");
    assert_eq!(safe_cut(br"ab\\ncd", 4), 4, "an escaped backslash ends at 4: the n is plain");
    assert_eq!(safe_cut("abé".as_bytes(), 3), 2, "before a two-byte character");
    assert_eq!(safe_cut("a€b".as_bytes(), 3), 1, "before a three-byte character");
    assert_eq!(safe_cut(br"\u0041", 3), 3, "nothing above zero: the cap");
}

#[test]
fn json_values_longer_than_a_piece_stream_like_the_whole() {
    // Values over SEGMENT_CAP are redacted in pieces; the cuts must fall at the
    // same offsets whatever the chunking. Escapes, multi-byte characters and
    // PII are placed around the 64 KiB boundaries.
    let r = redactor();
    let cap = super::stream::SEGMENT_CAP;
    let mut v = String::new();
    let fillers = ["plain words here ", "caf\u{e9} \u{20ac}5 ", r"line\nbreak \u00e9 ", r#"\ud83d\ude00 quote\" "#, "mail jane@example.com "];
    let mut i = 0;
    while v.len() < 2 * cap + 5000 {
        v.push_str(fillers[i % fillers.len()]);
        i += 1;
    }
    let body = format!(r#"{{"messages":[{{"role":"user","content":"{v}"}}],"n":1}}"#);
    let b = body.as_bytes();
    let mut wf = Findings::new();
    let whole = r.redact_unbounded(b, BodyKind::Json, &mut wf);
    assert!(serde_json::from_slice::<serde_json::Value>(&whole).is_ok(), "still JSON");
    assert!(wf.count(Entity::EmailAddress) > 1000);
    for size in [1usize, 7, 4093, 16 * 1024, cap - 1, cap + 13] {
        let cuts: Vec<usize> = (1..b.len()).step_by(size).skip(1).collect();
        let (out, f) = streamed(&r, b, BodyKind::Json, &cuts);
        assert!(out == whole, "chunks of {size}: streamed output differs");
        assert_eq!(f, wf, "chunks of {size}");
    }
}
