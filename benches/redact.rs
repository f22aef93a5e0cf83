//! `cargo bench --bench redact`: redaction throughput in MB/s, the single-pass
//! scanner beside a straightforward regex-lite implementation of the same
//! detectors (`chatguard::pii::baseline`), on clean chat text and on chat text
//! with realistic PII density, measured in the same run.

use chatguard::config::PiiConfig;
use chatguard::pii::baseline::{chat_text, Baseline};
use chatguard::pii::{BodyKind, Findings, Redactor};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn corpus(pii_every: usize) -> String {
    chat_text(pii_every, 1 << 20)
}

/// Runs `f` repeatedly for about `budget`; returns MB/s over `bytes` per run.
fn measure(bytes: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut runs = 0u32;
    while start.elapsed() < budget {
        f();
        runs += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    (bytes as f64 * f64::from(runs)) / secs / 1e6
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("BENCH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500),
    );
    let redactor = match Redactor::compile(&PiiConfig::default()) {
        Ok(r) => r,
        Err(e) => return eprintln!("compile: {e}"),
    };
    let baseline = match Baseline::new() {
        Ok(b) => b,
        Err(e) => return eprintln!("baseline: {e}"),
    };
    println!("{:<34} {:>12} {:>12} {:>8}", "input (1 MiB)", "scanner MB/s", "regex MB/s", "speed-up");
    for (name, every) in [("clean chat text", 0usize), ("chat text, PII in 1 of 10 lines", 10), ("chat text, PII in 1 of 3 lines", 3)] {
        let text = corpus(every);
        let mine = measure(text.len(), budget, || {
            let mut f = Findings::new();
            black_box(redactor.redact_unbounded(black_box(text.as_bytes()), BodyKind::Text, &mut f));
        });
        let theirs = measure(text.len(), budget, || {
            black_box(baseline.redact(black_box(&text)));
        });
        println!("{name:<34} {mine:>12.0} {theirs:>12.1} {:>7.0}x", mine / theirs);
    }
    // JSON and streaming paths of the scanner.
    let text = corpus(10);
    let json = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":{}}}]}}"#,
        serde_json::to_string(&text).unwrap_or_default()
    );
    let j = measure(json.len(), budget, || {
        let mut f = Findings::new();
        black_box(redactor.redact_unbounded(black_box(json.as_bytes()), BodyKind::Json, &mut f));
    });
    println!("{:<34} {j:>12.0}", "JSON body, PII 1/10");
    let st = measure(text.len(), budget, || {
        let mut s = redactor.stream(BodyKind::Text);
        let mut out = Vec::with_capacity(text.len());
        for c in text.as_bytes().chunks(16 * 1024) {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        black_box(out);
    });
    println!("{:<34} {st:>12.0}", "streamed text 16 KiB chunks, 1/10");
}
