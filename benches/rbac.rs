//! Decision benchmark: `cargo bench --bench rbac`.
//!
//! Measures path normalisation + route + decide per request, for the demo
//! policy and for generated policies of 200 roles and 2,000 rules, and how long
//! compiling the generated policy takes. No external harness: `Instant` over
//! many iterations, best of several rounds.

use chatguard::config::Policy;
use chatguard::path::NormalizedPath;
use chatguard::rbac::{Claims, CompiledRbac};
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Instant;

fn claims(v: Value) -> Claims {
    v.as_object().cloned().unwrap_or_default()
}

/// Nanoseconds this thread has spent on a CPU (Linux), so that a machine shared
/// with other jobs does not inflate the figures; wall-clock time elsewhere.
fn cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// ns per call of `f`, best of 5 rounds of `iters` (on-CPU time when available).
fn measure(iters: u32, mut f: impl FnMut() -> bool) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let cpu_start = cpu_ns();
        let mut allowed = 0u32;
        for _ in 0..iters {
            allowed += u32::from(black_box(f()));
        }
        black_box(allowed);
        let elapsed = match (cpu_start, cpu_ns()) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64,
            _ => start.elapsed().as_nanos() as f64,
        };
        best = best.min(elapsed / f64::from(iters));
    }
    best
}

fn decide(rbac: &CompiledRbac, method: &str, path: &str, caller: Option<&Claims>, now: u64) -> bool {
    match NormalizedPath::parse(black_box(path)) {
        Ok(p) => {
            let route = rbac.route(method, "api.example.test", &p);
            rbac.decide(&route, caller, now).allowed
        }
        Err(_) => false,
    }
}

/// 200 roles in a binary tree of inheritance (each also inheriting a second
/// parent), 400 permissions, and 2,000 rules. `spread`: rules spread over 50
/// two-segment prefixes (40 per index bucket); otherwise all share one prefix
/// (the worst case for the prefix index: a linear scan of 2,000).
fn generated(spread: bool) -> Value {
    let mut roles = serde_json::Map::new();
    for i in 0..200usize {
        let mut inherits = Vec::new();
        if i > 0 {
            inherits.push(format!("role{}", (i - 1) / 2));
        }
        // A second parent, always of a lower index: no cycles, many diamonds.
        if i > 2 && i / 3 - 1 != (i - 1) / 2 {
            inherits.push(format!("role{}", i / 3 - 1));
        }
        roles.insert(
            format!("role{i}"),
            json!({"inherits": inherits, "permissions": [format!("p{}", 2 * i), format!("p{}", 2 * i + 1)]}),
        );
    }
    let rules: Vec<Value> = (0..2000usize)
        .map(|i| {
            let path = if spread {
                format!("/api/svc{}/res{}/{{id}}/**", i / 40, i % 40)
            } else {
                format!("/api/items/res{i}/{{id}}/**")
            };
            json!({"id": format!("rule{i}"), "methods": ["GET"], "path": path,
                   "permissions": [format!("p{}", (i * 7) % 400)]})
        })
        .collect();
    json!({"rbac": {"roles": roles, "rules": rules, "anonymous_role": "role199"}})
}

fn compile(doc: &Value) -> (CompiledRbac, f64) {
    let bytes = doc.to_string();
    let start = Instant::now();
    let policy = Policy::from_json(bytes.as_bytes()).unwrap_or_else(|e| panic!("generated policy: {e}"));
    let rbac = CompiledRbac::compile(policy.rbac.as_ref().unwrap_or(&Default::default()))
        .unwrap_or_else(|e| panic!("generated policy: {e}"));
    (rbac, start.elapsed().as_secs_f64() * 1e3)
}

fn main() {
    let demo = CompiledRbac::default_policy().unwrap_or_else(|| panic!("demo policy"));
    // Monday 2024-01-01 10:00 at +01:00.
    let now = 1_704_067_200_000 + 9 * 3_600_000;
    let hr = claims(json!({"sub": "u1", "roles": ["hr_specialist"], "amr": ["pwd", "otp"], "region": "emea"}));
    let mgr = claims(json!({"sub": "u2", "roles": ["sales_manager"], "region": "emea"}));
    const N: u32 = 200_000;

    println!("demo policy (7 roles, 11 rules)                      ns/decision");
    let cases: [(&str, &str, &str, Option<&Claims>); 6] = [
        ("anonymous faq", "GET", "/api/faq/shipping", None),
        ("hr-records allow (mfa)", "GET", "/api/hr/people/42", Some(&hr)),
        ("salaries allow (mfa+hours)", "GET", "/api/hr/salaries/2024", Some(&hr)),
        ("team-sales claim match", "GET", "/api/sales/emea/q1?x=1", Some(&mgr)),
        ("deny: missing permission", "GET", "/api/hr/people/42", Some(&mgr)),
        ("path with ../ and %2e", "GET", "/api/faq/%2e%2e/hr/people/42", Some(&hr)),
    ];
    for (name, method, path, caller) in cases {
        let ns = measure(N, || decide(&demo, method, path, caller, now));
        println!("  {name:<50} {ns:>8.1}");
    }
    let p = NormalizedPath::parse("/api/hr/people/42").unwrap_or_else(|e| panic!("{e}"));
    let route = demo.route("GET", "h", &p);
    let ns = measure(N, || demo.decide(black_box(&route), Some(&hr), now).allowed);
    println!("  {:<50} {ns:>8.1}", "decide only (pre-routed hr-records)");

    for (label, spread) in [("generated, 50 prefixes x 40 rules", true), ("generated, 2,000 rules on one prefix", false)] {
        let (rbac, ms) = compile(&generated(spread));
        println!("\n{label} (200 roles, 400 permissions): compile {ms:.1} ms");
        let who = claims(json!({"sub": "g", "roles": ["role150", "role77"]}));
        let (first, last) = if spread {
            ("/api/svc0/res0/1/x", "/api/svc49/res39/1/x")
        } else {
            ("/api/items/res0/1/x", "/api/items/res1999/1/x")
        };
        for (name, path) in [("first rule of its bucket", first), ("last rule", last), ("no rule (deny)", "/api/nothing/here")] {
            let ns = measure(N / 10, || decide(&rbac, "GET", path, Some(&who), now));
            println!("  {name:<50} {ns:>8.1}");
        }
    }
}
