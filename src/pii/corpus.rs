//! The labelled corpus: chat messages and OpenAI-style JSON bodies with
//! generated values of every entity (several spellings each) and look-alike
//! negatives. Prints recall and precision per entity and requires >= 99%.

use super::tests::{redactor, Rng};
use super::*;

const PER_GENERATOR: usize = 60;

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len())]
}

fn digits(rng: &mut Rng, n: usize) -> String {
    (0..n).map(|_| char::from(b'0' + rng.below(10) as u8)).collect()
}

fn chars(rng: &mut Rng, alphabet: &[u8], n: usize) -> String {
    (0..n).map(|_| char::from(alphabet[rng.below(alphabet.len())])).collect()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const UPNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn luhn_complete(prefix: &str, len: usize, rng: &mut Rng) -> String {
    let mut s = format!("{prefix}{}", digits(rng, len - prefix.len() - 1));
    for d in 0..10 {
        let cand = format!("{s}{d}");
        if validators::luhn(cand.as_bytes()) {
            s = cand;
            break;
        }
    }
    s
}

fn group(s: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    for &n in sizes {
        if i >= s.len() {
            break;
        }
        let e = (i + n).min(s.len());
        out.push(&s[i..e]);
        i = e;
    }
    if i < s.len() {
        out.push(&s[i..]);
    }
    out.join(sep)
}

fn email(rng: &mut Rng) -> String {
    let first = pick(rng, &["jane", "John", "m.garcia", "li_wei", "o'neil", "anna-maria", "x"]).replace('\'', "");
    let tag = pick(rng, &["", "+news", "2024", ".work", "_01"]);
    let dom = pick(rng, &["example.com", "mail.example.co.uk", "corp-mail.io", "EXAMPLE.ORG", "uni.edu", "t.de"]);
    format!("{first}{tag}@{dom}")
}

fn phone(rng: &mut Rng) -> String {
    let area = format!("{}{}", 2 + rng.below(8), digits(rng, 2));
    let ex = digits(rng, 3);
    let line = digits(rng, 4);
    match rng.below(9) {
        0 => format!("({area}) {ex}-{line}"),
        1 => format!("{area}-{ex}-{line}"),
        2 => format!("{area}.{ex}.{line}"),
        3 => format!("+1 {area} {ex} {line}"),
        4 => format!("+1-{area}-{ex}-{line}"),
        5 => format!("+44 20 {} {}", digits(rng, 4), digits(rng, 4)),
        6 => format!("+49 30 {}", digits(rng, 7)),
        7 => format!("+33 1 {} {} {} {}", digits(rng, 2), digits(rng, 2), digits(rng, 2), digits(rng, 2)),
        _ => format!("+81 3-{}-{}", digits(rng, 4), digits(rng, 4)),
    }
}

fn ssn(rng: &mut Rng) -> String {
    let area = loop {
        let a = 1 + rng.below(899);
        if a != 666 {
            break a;
        }
    };
    let sep = pick(rng, &["-", " "]);
    format!("{area:03}{sep}{:02}{sep}{:04}", 1 + rng.below(99), 1 + rng.below(9999))
}

fn card(rng: &mut Rng) -> String {
    let (prefix, len, groups): (&str, usize, &[usize]) = match rng.below(9) {
        0 => ("4", 16, &[4, 4, 4, 4]),
        1 => ("4", 13, &[4, 4, 5]),
        2 => ("5", 16, &[4, 4, 4, 4]),
        3 => ("2221", 16, &[4, 4, 4, 4]),
        4 => ("37", 15, &[4, 6, 5]),
        5 => ("6011", 16, &[4, 4, 4, 4]),
        6 => ("3528", 16, &[4, 4, 4, 4]),
        7 => ("36", 14, &[4, 6, 4]),
        _ => ("62", 19, &[4, 4, 4, 4, 3]),
    };
    let prefix = if prefix == "5" { ["51", "52", "53", "54", "55"][rng.below(5)] } else { prefix };
    let n = luhn_complete(prefix, len, rng);
    match rng.below(3) {
        0 => n,
        1 => group(&n, groups, " "),
        _ => group(&n, groups, "-"),
    }
}

fn iban(rng: &mut Rng) -> String {
    let (cc, bban) = match rng.below(6) {
        0 => ("DE", digits(rng, 18)),
        1 => ("GB", format!("{}{}", chars(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4), digits(rng, 14))),
        2 => ("FR", digits(rng, 23)),
        3 => ("NL", format!("{}{}", chars(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4), digits(rng, 10))),
        4 => ("ES", digits(rng, 20)),
        _ => ("CH", digits(rng, 17)),
    };
    let mut check = 0;
    for c in 2..99 {
        let cand = format!("{cc}{c:02}{bban}");
        if validators::iban_mod97(cand.as_bytes()) {
            check = c;
            break;
        }
    }
    let iban = format!("{cc}{check:02}{bban}");
    if rng.below(2) == 0 { iban } else { group(&iban, &[4; 9], " ") }
}

fn ip(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 | 1 => format!("{}.{}.{}.{}", 1 + rng.below(223), rng.below(256), rng.below(256), 1 + rng.below(254)),
        2 => (0..8).map(|_| format!("{:x}", rng.below(65536))).collect::<Vec<_>>().join(":"),
        _ => format!("2001:db8::{:x}:{}", rng.below(65536), 1 + rng.below(9)),
    }
}

fn secret(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => format!("AKIA{}", chars(rng, UPNUM, 16)),
        1 => format!("sk-proj-{}", chars(rng, B64URL, 40)),
        2 => format!("ghp_{}", chars(rng, ALNUM, 36)),
        3 => format!("xoxb-{}-{}", digits(rng, 12), chars(rng, ALNUM, 24)),
        4 => format!("eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}", chars(rng, B64URL, 30), chars(rng, B64URL, 43)),
        5 => format!("sk_live_{}", chars(rng, ALNUM, 24)),
        6 => format!("github_pat_{}", chars(rng, ALNUM, 40)),
        _ => format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}\n{}\n-----END RSA PRIVATE KEY-----",
            chars(rng, ALNUM, 64),
            chars(rng, ALNUM, 20)
        ),
    }
}

/// Look-alikes that must survive.
fn negative(rng: &mut Rng) -> String {
    match rng.below(16) {
        0 => format!("order #{}", digits(rng, 8)),
        1 => format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            rng.next() as u32,
            rng.below(65536),
            rng.below(4096),
            rng.below(4096),
            rng.next() & 0xffff_ffff_ffff
        ),
        2 => format!("2024-{:02}-{:02}T{:02}:{:02}:{:02}Z", 1 + rng.below(12), 1 + rng.below(28), rng.below(24), rng.below(60), rng.below(60)),
        3 => format!("${}.{:02}", 1 + rng.below(9999), rng.below(100)),
        4 => format!("v{}.{}.{}", rng.below(20), rng.below(50), rng.below(100)),
        5 => {
            // A 16-digit number with a card prefix that fails Luhn.
            let good = luhn_complete("4", 16, rng);
            let last = good.as_bytes()[15] - b'0';
            format!("{}{}", &good[..15], (last + 1 + rng.below(9) as u8) % 10)
        }
        6 => format!("{}-{:02}-{:04}", pick(rng, &["000", "666", "900", "987"]), 1 + rng.below(99), 1 + rng.below(9999)),
        7 => format!("{:02}/{:02}/{}", 1 + rng.below(12), 1 + rng.below(28), 1990 + rng.below(40)),
        8 => format!("{:05}", rng.below(100000)),
        9 => format!("{:05}-{:04}", rng.below(100000), rng.below(10000)),
        10 => format!("{}:{:02}", rng.below(24), rng.below(60)),
        11 => chars(rng, b"0123456789abcdef", 40),
        12 => format!("{}%", rng.below(100)),
        13 => format!("ticket {}-{}", pick(rng, &["JIRA", "OPS", "SEC"]), rng.below(99999)),
        14 => format!("{} items at {}.{}", rng.below(99), rng.below(99), rng.below(99)),
        _ => format!("build {}.{}.{}.{}", rng.below(10), rng.below(10), rng.below(1000) + 256, rng.below(10)),
    }
}

const CHAT: [&str; 6] = [
    "Hi, my details are {} if you need them.",
    "{}",
    "Please reach me at {}. Thanks!",
    "Can you check this: \"{}\"?",
    "- item one\n- value: {}\n- item three",
    "(see {})",
];

/// One labelled sample: a body, its kind, and the body expected after redaction.
struct Sample {
    kind: BodyKind,
    body: String,
    expected: String,
    entity: Option<Entity>,
}

fn samples() -> Vec<Sample> {
    let mut rng = Rng::new(0x5eed);
    let gens: [(Option<Entity>, fn(&mut Rng) -> String); 8] = [
        (Some(Entity::EmailAddress), email),
        (Some(Entity::PhoneNumber), phone),
        (Some(Entity::UsSsn), ssn),
        (Some(Entity::CreditCard), card),
        (Some(Entity::IbanCode), iban),
        (Some(Entity::IpAddress), ip),
        (Some(Entity::Secret), secret),
        (None, negative),
    ];
    let mut out = Vec::new();
    for (entity, gen) in gens {
        let n = if entity.is_none() { PER_GENERATOR * 8 } else { PER_GENERATOR * 2 };
        for i in 0..n {
            let v = gen(&mut rng);
            let repl = entity.map_or(v.clone(), |e| format!("<{}>", e.name()));
            let tpl = CHAT[rng.below(CHAT.len())];
            let msg = tpl.replace("{}", &v);
            let want = tpl.replace("{}", &repl);
            if i % 2 == 0 {
                out.push(Sample { kind: BodyKind::Text, body: msg, expected: want, entity });
            } else {
                let json = |m: &str| {
                    format!(
                        r#"{{"model":"gpt-4o","messages":[{{"role":"system","content":"You are helpful."}},{{"role":"user","content":{}}}],"temperature":0.2}}"#,
                        serde_json::to_string(m).unwrap()
                    )
                };
                out.push(Sample { kind: BodyKind::Json, body: json(&msg), expected: json(&want), entity });
            }
        }
    }
    out
}

#[test]
fn corpus_recall_and_precision_per_entity() {
    let r = redactor();
    let mut tp = [0u32; 7];
    let mut fn_ = [0u32; 7];
    let mut fp = [0u32; 7];
    let mut failures = Vec::new();
    for s in samples() {
        let mut f = Findings::new();
        let out = String::from_utf8(r.redact(s.body.as_bytes(), s.kind, &mut f).unwrap()).unwrap();
        for e in Entity::ALL {
            let expected = u32::from(s.entity == Some(e));
            let got = f.count(e);
            if expected == 1 {
                if got >= 1 && out == s.expected {
                    tp[e.index()] += 1;
                } else {
                    fn_[e.index()] += 1;
                    failures.push(format!("missed {e}: {} -> {out}", s.body));
                }
            }
            if got > expected {
                fp[e.index()] += got - expected;
                failures.push(format!("false {e}: {} -> {out}", s.body));
            }
        }
    }
    println!("{:<14} {:>5} {:>5} {:>5} {:>8} {:>9}", "entity", "TP", "FN", "FP", "recall", "precision");
    let mut ok = true;
    for e in Entity::ALL {
        let i = e.index();
        let recall = f64::from(tp[i]) / f64::from((tp[i] + fn_[i]).max(1));
        let precision = f64::from(tp[i]) / f64::from((tp[i] + fp[i]).max(1));
        println!("{:<14} {:>5} {:>5} {:>5} {:>7.1}% {:>8.1}%", e.name(), tp[i], fn_[i], fp[i], recall * 100.0, precision * 100.0);
        ok &= recall >= 0.99 && precision >= 0.99;
    }
    for f in failures.iter().take(20) {
        println!("{f}");
    }
    assert!(ok, "recall and precision must be >= 99% for every entity");
}
