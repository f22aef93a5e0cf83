//! Benchmark support, not used by the filter: a straightforward regex-lite
//! implementation of the same detectors, kept as the yardstick (one regex per
//! detector, each run over the whole text, validators on the matches, overlaps
//! resolved leftmost-first), and the chat-like text both are measured on
//! (`benches/redact.rs` natively, `wasm-tests/examples/redact_wasm.rs` in wasm).

use super::entity::Entity;
use super::validators;
use regex_lite::Regex;

/// The compiled regexes.
#[derive(Debug)]
pub struct Baseline {
    rules: Vec<(Entity, Regex, fn(&str) -> bool)>,
}

fn digits_of(s: &str) -> Vec<u8> {
    s.bytes().filter(u8::is_ascii_digit).collect()
}

fn card_ok(s: &str) -> bool {
    validators::credit_card(&digits_of(s))
}

fn ssn_ok(s: &str) -> bool {
    let d = digits_of(s);
    <[u8; 9]>::try_from(d.as_slice()).is_ok_and(|a| validators::ssn(&a))
}

fn iban_ok(s: &str) -> bool {
    let v: Vec<u8> = s.bytes().filter(|c| *c != b' ').collect();
    let cc = [v.first().copied().unwrap_or(0), v.get(1).copied().unwrap_or(0)];
    validators::iban_length(cc) == Some(v.len()) && validators::iban_mod97(&v)
}

fn ipv6_ok(s: &str) -> bool {
    s.parse::<std::net::Ipv6Addr>().is_ok() && s.bytes().any(|c| c.is_ascii_digit())
}

fn any(_: &str) -> bool {
    true
}

impl Baseline {
    /// Compiles the regexes (once).
    pub fn new() -> Result<Baseline, regex_lite::Error> {
        let spec: [(Entity, &str, fn(&str) -> bool); 11] = [
            (Entity::EmailAddress, r"[A-Za-z0-9_%+][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}", any),
            (Entity::UsSsn, r"\b\d{3}([- ])\d{2}[- ]\d{4}\b", ssn_ok),
            (Entity::CreditCard, r"\b\d{4}(?:[ -]?\d{2,6}){2,4}\b", card_ok),
            (Entity::PhoneNumber, r"(?:\+1[ .-]?)?(?:\(\d{3}\) ?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b", any),
            (Entity::PhoneNumber, r"\+[1-9]\d{0,2}(?:[ -]\d{1,5}){1,5}\b", |s| (8..=15).contains(&digits_of(s).len())),
            (Entity::IbanCode, r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", iban_ok),
            (Entity::IpAddress, r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b", any),
            (Entity::IpAddress, r"(?:[0-9A-Fa-f]{1,4}:){1,7}(?::|(?::[0-9A-Fa-f]{1,4}){1,7}|[0-9A-Fa-f]{1,4})|::[0-9A-Fa-f]{1,4}", ipv6_ok),
            (Entity::Secret, r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}\b|\beyJ[A-Za-z0-9_-]{7,}\.eyJ[A-Za-z0-9_-]{7,}\.[A-Za-z0-9_-]*", any),
            (Entity::Secret, r"\b(?:sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}|xox[abprs]-[A-Za-z0-9-]{10,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,})", any),
            (Entity::Secret, r"(?:Bearer|BEARER) +[A-Za-z0-9._~+/-]{16,}=*|-----BEGIN [A-Z ]*PRIVATE KEY-----[\sA-Za-z0-9+/=:,-]*?-----END [A-Z ]*PRIVATE KEY-----", any),
        ];
        let mut rules = Vec::new();
        for (e, re, v) in spec {
            rules.push((e, Regex::new(re)?, v));
        }
        Ok(Baseline { rules })
    }

    /// Replaces every finding by `<ENTITY>`.
    pub fn redact(&self, text: &str) -> String {
        let mut spans: Vec<(usize, usize, Entity)> = Vec::new();
        for (e, re, ok) in &self.rules {
            for m in re.find_iter(text) {
                if ok(m.as_str()) {
                    spans.push((m.start(), m.end(), *e));
                }
            }
        }
        spans.sort_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
        let mut out = String::with_capacity(text.len());
        let mut cursor = 0;
        for (s, e, ent) in spans {
            if s < cursor {
                continue;
            }
            out.push_str(text.get(cursor..s).unwrap_or(""));
            out.push('<');
            out.push_str(ent.name());
            out.push('>');
            cursor = e;
        }
        out.push_str(text.get(cursor..).unwrap_or(""));
        out
    }
}

const CLEAN: &[&str] = &[
    "Could you summarise the attached meeting notes and list the action items for next week? ",
    "The quarterly report shows revenue grew by 12 percent, mostly in the Europe region. ",
    "Write a short poem about autumn leaves falling on a quiet street in the evening. ",
    "What is the difference between a process and a thread in modern operating systems? ",
    "Please translate the following paragraph into French and keep the formal tone. ",
    "Our team decided to move the launch to Thursday because QA needs two more days. ",
];

const PII: &[&str] = &[
    "Hi, I'm Jane, you can reach me at jane.doe@example.com or (555) 123-4567. ",
    "My card 4111 1111 1111 1111 was charged twice, the IBAN is DE89 3704 0044 0532 0130 00. ",
    "The server at 10.20.30.40 rejected key AKIAIOSFODNN7EXAMPLE with a 403. ",
    "SSN on file: 123-45-6789; call back on +44 20 7946 0958 after 5pm. ",
];

/// At least `bytes` of chat-like text; every `pii_every`-th sentence carries
/// PII (0: none), about one value per 18 words when it does.
pub fn chat_text(pii_every: usize, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 128);
    let mut i = 0;
    while s.len() < bytes {
        if pii_every > 0 && i % pii_every == 0 {
            s.push_str(PII[(i / pii_every) % PII.len()]);
        } else {
            s.push_str(CLEAN[i % CLEAN.len()]);
        }
        i += 1;
    }
    s
}
