//! `chatguard redact [--policy P] [--content-type T] [--stream CHUNK_BYTES] < in > out`
//!
//! Redacts standard input with the policy's `pii` section (the compiled-in
//! default policy without `--policy`) and writes the result to standard output.
//! The findings (entity counts, never values) go to standard error.

use chatguard::config::{PiiConfig, Policy};
use chatguard::pii::{BodyKind, Findings, Redactor};
use std::io::{Read, Write};

/// Runs the command; returns the process exit code.
pub fn run(args: &[String]) -> u8 {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--policy" | "--content-type" | "--stream" if args.get(i + 1).is_some() => i += 2,
            other => return crate::usage_error(&format!("redact: unexpected argument `{other}`")),
        }
    }
    let policy = match crate::flag_value(args, "--policy") {
        Some(p) => match crate::load_policy(p) {
            Ok(p) => p,
            Err(code) => return code,
        },
        None => match Policy::from_json(include_bytes!("../../../policy/default.json")) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("chatguard: default policy: {e}");
                return 2;
            }
        },
    };
    let cfg = policy.pii.unwrap_or_else(PiiConfig::default);
    let redactor = match Redactor::compile(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chatguard: {e}");
            return 2;
        }
    };
    let content_type = crate::flag_value(args, "--content-type").unwrap_or("text/plain");
    let kind = redactor.classify(content_type);
    let chunk = match crate::flag_value(args, "--stream").map(str::parse::<usize>) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => return crate::usage_error("redact: --stream takes a positive number of bytes"),
    };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("chatguard: cannot read standard input: {e}");
        return 2;
    }
    let mut out = Vec::with_capacity(input.len());
    let findings = match chunk {
        Some(n) => {
            let mut s = redactor.stream(kind);
            for c in input.chunks(n) {
                s.push(c, &mut out);
            }
            s.finish(&mut out);
            *s.findings()
        }
        None => {
            let mut f = Findings::new();
            out = redactor.redact_unbounded(&input, kind, &mut f);
            f
        }
    };
    if let Err(e) = std::io::stdout().write_all(&out).and_then(|()| std::io::stdout().flush()) {
        eprintln!("chatguard: cannot write standard output: {e}");
        return 2;
    }
    let kind_name = match kind {
        BodyKind::Json => "json",
        BodyKind::Text => "text",
        BodyKind::EventStream => "event-stream",
        BodyKind::Form => "form",
        BodyKind::Other => "not inspected (content type not listed)",
    };
    eprintln!("chatguard: {kind_name}: {} finding(s) {findings}", findings.total());
    0
}
