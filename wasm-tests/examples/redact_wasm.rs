//! Redaction throughput inside wasm: the built `chatguard.wasm` in the wasmtime
//! harness, driven through the proxy-wasm ABI the way Envoy drives it (headers,
//! then body callbacks, the body copied into and out of the module's memory),
//! beside the regex-lite baseline, on the same text in the same run (the
//! engine's native figures come from `cargo bench --bench redact`, in the same
//! `make bench` run, built with the release profile). `make bench` runs it:
//!
//! ```text
//! cargo run -p wasm-tests --example redact_wasm
//! ```
//!
//! The test profile is enough (and reuses the test build): what is timed is
//! cranelift's code for the release-built module plus the harness's buffer
//! copies; regex-lite is a dependency, built at opt-level 2 there (Cargo.toml).
//! `BENCH_MS` sets the time per figure (default 1500).
//!
//! Every wasm output is checked byte for byte against the native redaction of
//! the same text before it is timed: a fast wrong answer is no figure.

use chatguard::config::PiiConfig;
use chatguard::pii::baseline::{chat_text, Baseline};
use chatguard::pii::{BodyKind, Findings, Redactor};
use std::hint::black_box;
use std::time::{Duration, Instant};
use wasm_tests::e2e;
use wasm_tests::harness::{Plugin, Sandbox};

const MIB: usize = 1 << 20;
const POLICY: &str = r#"{"pii": {"request": true, "response": true, "max_body_bytes": 4194304}}"#;
/// Response chunks the size Envoy's HTTP/1 codec typically hands a filter.
const CHUNK: usize = 16 * 1024;

/// Runs `f` for about `budget` after one warm-up run; MB/s over `bytes` per run.
fn mb_per_s(bytes: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut runs = 0u32;
    while runs == 0 || start.elapsed() < budget {
        f();
        runs += 1;
    }
    (bytes as f64 * f64::from(runs)) / start.elapsed().as_secs_f64() / 1e6
}

/// Like [`mb_per_s`], over the time spent inside the module's hooks only
/// ([`Sandbox::guest_time`]: the ABI copies of the body in and out count, the
/// harness's own bookkeeping does not).
fn wasm_mb_per_s(sb: &mut Sandbox, bytes: usize, budget: Duration, mut f: impl FnMut(&mut Sandbox)) -> f64 {
    f(sb);
    let (start, guest) = (Instant::now(), sb.guest_time());
    let mut runs = 0u32;
    while runs == 0 || start.elapsed() < budget {
        f(sb);
        runs += 1;
    }
    (bytes as f64 * f64::from(runs)) / (sb.guest_time() - guest).as_secs_f64() / 1e6
}

/// One request with `body` buffered and redacted whole (text/plain or JSON).
fn wasm_request(sb: &mut Sandbox, body: &[u8], content_type: &str) -> Vec<u8> {
    let mut s = sb.http().expect("stream");
    let len = body.len().to_string();
    let headers = [
        (":method", "POST"),
        (":path", "/v1/chat"),
        (":authority", "api.example.test"),
        (":scheme", "https"),
        ("content-type", content_type),
        ("content-length", len.as_str()),
    ];
    s.request_headers(&headers, false).expect("request headers");
    s.request_body(body, true).expect("request body");
    let out = s.forwarded_request_body();
    s.finish().expect("finish");
    out
}

/// One response streamed through in [`CHUNK`]-byte chunks.
fn wasm_response(sb: &mut Sandbox, body: &[u8], content_type: &str) -> Vec<u8> {
    let mut s = sb.http().expect("stream");
    let headers = [(":method", "GET"), (":path", "/v1/chat"), (":authority", "api.example.test"), (":scheme", "https")];
    s.request_headers(&headers, true).expect("request headers");
    s.response_headers(&[(":status", "200"), ("content-type", content_type)], false).expect("response headers");
    s.response_body_chunks(body, CHUNK, true).expect("response body");
    let out = s.forwarded_response_body();
    s.finish().expect("finish");
    out
}

fn main() {
    let budget = Duration::from_millis(std::env::var("BENCH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500));
    let Some(path) = e2e::chatguard_wasm() else {
        eprintln!("no chatguard.wasm: run `make wasm` (or set CHATGUARD_WASM)");
        std::process::exit(2);
    };
    let plugin = Plugin::load(&path).expect("chatguard.wasm loads");
    let mut sb = Sandbox::builder(&plugin).config(POLICY).start().expect("policy accepted");
    let redactor = Redactor::compile(&PiiConfig::default()).expect("default pii config");
    let baseline = Baseline::new().expect("baseline regexes");

    println!("{:<32} {:>10} {:>10} {:>10} {:>11}", "input (1 MiB), MB/s", "wasm req", "wasm resp", "regex-lite", "wasm/regex");
    println!("{:<32} {:>10} {:>10} {:>10} {:>11}", "(time inside the module)", "buffered", "16K chunks", "(native)", "(x)");
    for (name, every) in [("clean chat text", 0usize), ("chat text, PII in 1 of 10 lines", 10), ("chat text, PII in 1 of 3 lines", 3)] {
        let text = chat_text(every, MIB);
        let body = text.as_bytes();
        let expected = redactor.redact_unbounded(body, BodyKind::Text, &mut Findings::new());
        assert_eq!(wasm_request(&mut sb, body, "text/plain"), expected, "{name}: wasm request body differs from native");
        assert_eq!(wasm_response(&mut sb, body, "text/plain"), expected, "{name}: wasm response body differs from native");

        let req = wasm_mb_per_s(&mut sb, body.len(), budget, |sb| {
            black_box(wasm_request(sb, body, "text/plain"));
        });
        let resp = wasm_mb_per_s(&mut sb, body.len(), budget, |sb| {
            black_box(wasm_response(sb, body, "text/plain"));
        });
        let regex = mb_per_s(body.len(), budget, || {
            black_box(baseline.redact(black_box(&text)));
        });
        println!("{name:<32} {req:>10.0} {resp:>10.0} {regex:>10.1} {:>10.0}x", req.min(resp) / regex);
    }

    // The floor: the same traffic through the module with no `pii` section
    // (bodies pass untouched), i.e. the harness's copies and the hook calls.
    let mut floor = Sandbox::builder(&plugin).config("{}").start().expect("empty policy accepted");
    let text = chat_text(0, MIB);
    let body = text.as_bytes();
    let req = wasm_mb_per_s(&mut floor, body.len(), budget, |sb| {
        black_box(wasm_request(sb, body, "text/plain"));
    });
    let resp = wasm_mb_per_s(&mut floor, body.len(), budget, |sb| {
        black_box(wasm_response(sb, body, "text/plain"));
    });
    println!("{:<32} {req:>10.0} {resp:>10.0}", "no pii section (ABI floor)");

    // The JSON path (an OpenAI-style request whose message is the text above).
    let text = chat_text(10, MIB);
    let json = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":{}}}]}}"#,
        serde_json::to_string(&text).expect("a string serialises")
    );
    let body = json.as_bytes();
    let expected = redactor.redact_unbounded(body, BodyKind::Json, &mut Findings::new());
    assert_eq!(wasm_request(&mut sb, body, "application/json"), expected, "JSON: wasm differs from native");
    let req = wasm_mb_per_s(&mut sb, body.len(), budget, |sb| {
        black_box(wasm_request(sb, body, "application/json"));
    });
    let resp = wasm_mb_per_s(&mut sb, body.len(), budget, |sb| {
        black_box(wasm_response(sb, body, "application/json"));
    });
    println!("{:<32} {req:>10.0} {resp:>10.0}", "JSON chat body, PII 1/10");
}
