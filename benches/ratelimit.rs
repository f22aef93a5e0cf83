//! Native micro-benchmark of the rate stage over `MemoryHost`:
//! `cargo bench --bench ratelimit`. Reports ns per check, shared-data calls
//! per request, and the store size after a million distinct clients.

use chatguard::config::Policy;
use chatguard::host::{Cas, CallError, Host, LogLevel, MemoryHost, OutboundRequest, StoreError};
use chatguard::lockout::CompiledLockout;
use chatguard::ratelimit::{no_headers, CompiledRateLimits, RateCaller, RateOutcome};
use std::cell::Cell;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

const POLICY: &str = r#"{
  "rate_limits": [
    { "name": "per-user", "key": "subject", "capacity": 60, "refill_per_minute": 60 },
    { "name": "anonymous", "key": "client_ip", "roles": ["public"], "capacity": 10, "refill_per_minute": 10 },
    { "name": "chat", "key": "subject", "rules": ["chat"], "capacity": 20, "refill_per_minute": 20 },
    { "name": "llm-tokens", "key": "subject", "cost": "response_tokens", "capacity": 50000, "refill_per_minute": 2000 }
  ],
  "rate_limit_settings": { "table_slots": 16384 },
  "lockout": { "max_failures": 5, "window_seconds": 300, "lock_seconds": 900 }
}"#;

/// Counts shared-data calls.
struct Counting {
    inner: MemoryHost,
    calls: Cell<u64>,
}

impl Host for Counting {
    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.inner.log(level, message)
    }
    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
        self.calls.set(self.calls.get() + 1);
        self.inner.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
        self.calls.set(self.calls.get() + 1);
        self.inner.shared_set(key, value, cas)
    }
    fn http_call(&self, request: &OutboundRequest) -> Result<u32, CallError> {
        self.inner.http_call(request)
    }
    fn count(&self, metric: &str, by: u64) {
        self.inner.count(metric, by)
    }
}

fn run(label: &str, n: u64, host: &Counting, mut f: impl FnMut(u64)) {
    host.calls.set(0);
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    let calls = host.calls.get() as f64 / n as f64;
    println!("{label:<58} {ns:>8.0} ns/op  {calls:>4.1} shared-data calls/op");
}

fn main() {
    let policy = Policy::from_json(POLICY.as_bytes()).expect("bench policy");
    let rl = CompiledRateLimits::compile(&policy).expect("compile");
    let lockout = CompiledLockout::compile(&policy).expect("compile").expect("lockout");
    let host = Counting { inner: MemoryHost::at(1_700_000_000_000), calls: Cell::new(0) };
    let n = 200_000;
    let ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));

    // Keep buckets from emptying: advance the clock by one refill interval per request.
    let chat = RateCaller { subject: Some("carol"), client_ip: ip, roles: &["user"], rule: Some("chat"), header: &no_headers };
    run("check, chat user (3 buckets: 2 taken, 1 response_tokens)", n, &host, |_| {
        host.inner.advance_ms(3_000);
        assert!(matches!(black_box(rl.check(&host, &chat)), RateOutcome::Allowed { .. }));
    });
    let plain = RateCaller { rule: None, ..chat };
    run("check, plain user (2 buckets: 1 taken, 1 response_tokens)", n, &host, |_| {
        host.inner.advance_ms(1_000);
        black_box(rl.check(&host, &plain));
    });
    run("check, limited (bucket empty: reads only)", n, &host, |_| {
        black_box(rl.check(&host, &plain));
    });
    run("charge 500 response tokens", n, &host, |_| {
        host.inner.advance_ms(1_000);
        black_box(rl.charge(&host, &plain, 500)).expect("charge");
    });
    run("check, distinct client IPs (anonymous: 3 buckets)", n, &host, |i| {
        let caller = RateCaller {
            subject: None,
            client_ip: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32))),
            roles: &["public"],
            rule: None,
            header: &no_headers,
        };
        black_box(rl.check(&host, &caller));
    });
    run("lockout check (open)", n, &host, |_| {
        black_box(lockout.check(&host, None, ip)).expect("check");
    });

    // Memory bound: a million distinct clients.
    let fresh = MemoryHost::at(1_700_000_000_000);
    let start = Instant::now();
    for i in 0..1_000_000u32 {
        let caller = RateCaller {
            subject: None,
            client_ip: Some(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i))),
            roles: &["public"],
            rule: None,
            header: &no_headers,
        };
        black_box(rl.check(&fresh, &caller));
    }
    let slots = rl.table().slots();
    let keys = (0..slots).filter(|s| fresh.shared_get(&rl.table().key(*s)).ok().flatten().is_some()).count();
    println!(
        "1,000,000 distinct clients: {keys} shared-data keys (table {slots} slots) in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(keys as u32 <= slots);
}
