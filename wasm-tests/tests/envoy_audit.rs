//! Audit records to an external collector, end to end: the built chatguard.wasm
//! in a real Envoy 1.40 (V8), the kit's [`Collector`] as cluster `audit_collector`.
//!
//! - records arrive in both wire formats (NDJSON, OTLP/HTTP JSON) with the
//!   documented fields, and nothing the requests carried that is personal or
//!   secret (body PII, tokens, query strings, the raw subject, the full client IP);
//! - a collector outage (503s, then connection refused) loses nothing within
//!   `max_queue`, and exactly the overflow is counted as `audit_dropped`;
//! - a hanging collector does not change user-visible latency.

use jwt_simple::prelude::RSAKeyPairLike;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use wasm_tests::e2e::{self, http, Collector, CollectorMode, Envoy, EnvoyConfig, Received, Upstream};
use wasm_tests::scenarios;
use wasm_tests::tokens::{self, keys};

const PSEUDONYM_KEY: &str = "e2e-audit-pseudonym-key-0123456789";
const ALICE: &str = "alice.liddell@corp.example";
const BOB: &str = "bob.builder@corp.example";
const BODY_EMAIL: &str = "jane.roe@example.com";
const QUERY_SECRET: &str = "sk-QUERYSECRET-9f8e7d6c";
/// The chatguard crate's version (`config_loaded.module_version`).
const CHATGUARD_VERSION: &str = "0.1.0";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The documented pseudonym: HMAC-SHA256(key, subject), first 128 bits, hex.
fn pseudonym(subject: &str) -> String {
    hex(&hmac_sha256::HMAC::mac(subject.as_bytes(), PSEUDONYM_KEY.as_bytes())[..16])
}

/// A policy trusting the test keys, with `audit` merged over a base section
/// shipping to `audit_collector` every 100 ms, and `extra` top-level sections.
fn policy(audit: Value, extra: Value) -> String {
    let mut section = json!({
        "cluster": "audit_collector",
        "path": "/v1/logs",
        "flush_interval_ms": 100,
        "pseudonym_key": PSEUDONYM_KEY,
        "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 200},
    });
    tokens::merge(&mut section, audit);
    let mut sections = json!({ "audit": section });
    tokens::merge(&mut sections, extra);
    tokens::policy_inline(&tokens::jwks(false), sections).to_string()
}

fn start(policy: &str, up: &Upstream, collector: &Collector) -> Envoy {
    Envoy::start(EnvoyConfig::chatguard(policy).upstream(up.port()).cluster("audit_collector", collector.port()))
        .unwrap()
}

/// OTLP `AnyValue` back to plain JSON (int64 travels as a decimal string).
fn any_value(v: &Value) -> Value {
    let o = v.as_object().unwrap_or_else(|| panic!("AnyValue is not an object: {v}"));
    assert_eq!(o.len(), 1, "AnyValue sets exactly one field: {v}");
    match o.iter().next().unwrap() {
        (k, s) if k == "stringValue" => s.clone(),
        (k, Value::String(i)) if k == "intValue" => json!(i.parse::<u64>().unwrap()),
        (k, b) if k == "boolValue" => b.clone(),
        (k, a) if k == "arrayValue" => Value::Array(a["values"].as_array().unwrap().iter().map(any_value).collect()),
        (k, kv) if k == "kvlistValue" => attributes(&kv["values"]),
        _ => panic!("unexpected AnyValue {v}"),
    }
}

fn attributes(list: &Value) -> Value {
    let mut out = Map::new();
    for kv in list.as_array().unwrap() {
        let key = kv["key"].as_str().unwrap().to_string();
        assert!(out.insert(key, any_value(&kv["value"])).is_none(), "duplicate attribute in {list}");
    }
    Value::Object(out)
}

/// Every record of every accepted batch, flattened to the NDJSON shape (an
/// OTLP log record's body becomes `kind`, its severity `_severity`), after
/// checking each batch's request line, headers and envelope.
fn flatten(format: &str, batches: &[Received]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        assert_eq!((b.method.as_str(), b.path.as_str()), ("POST", "/v1/logs"));
        assert_eq!(b.header("host").or(b.header(":authority")), Some("audit_collector"));
        match format {
            "ndjson" => {
                assert_eq!(b.header("content-type"), Some("application/x-ndjson"));
                let text = b.text();
                assert!(text.ends_with('\n'), "every NDJSON line ends with a newline: {text:?}");
                for line in text.lines() {
                    out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("bad NDJSON line ({e}): {line}")));
                }
            }
            "otlp_json" => {
                assert_eq!(b.header("content-type"), Some("application/json"));
                let v = b.json();
                let resource = &v["resourceLogs"][0];
                let res = attributes(&resource["resource"]["attributes"]);
                assert_eq!(res["service.name"], "chatguard", "{v}");
                assert_eq!(resource["scopeLogs"][0]["scope"]["name"], "chatguard.audit", "{v}");
                for log in resource["scopeLogs"][0]["logRecords"].as_array().unwrap() {
                    let mut rec = attributes(&log["attributes"]);
                    let ns: u128 = log["timeUnixNano"].as_str().unwrap().parse().unwrap();
                    assert!(ns > 1_600_000_000_000_000_000, "{log}");
                    assert_eq!(log["observedTimeUnixNano"], log["timeUnixNano"]);
                    assert!(rec.get("kind").is_none() && rec.get("time").is_none(), "{log}");
                    rec["kind"] = log["body"]["stringValue"].clone();
                    rec["_severity"] = json!([log["severityNumber"].clone(), log["severityText"].clone()]);
                    out.push(rec);
                }
            }
            other => panic!("unknown format {other}"),
        }
    }
    out
}

/// Polls the collector until `done` holds for the flattened records.
fn wait_records(collector: &Collector, format: &str, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let end = Instant::now() + timeout;
    loop {
        let recs = flatten(format, &collector.records());
        if done(&recs) {
            return recs;
        }
        assert!(Instant::now() < end, "timed out waiting for audit records; have {}: {recs:#?}", recs.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn of_kind<'a>(recs: &'a [Value], kind: &str, request_id: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["kind"] == kind && r["request_id"] == request_id).collect()
}

fn one<'a>(recs: &'a [Value], kind: &str, request_id: &str) -> &'a Value {
    let found = of_kind(recs, kind, request_id);
    assert_eq!(found.len(), 1, "exactly one {kind} record for request {request_id}: {recs:#?}");
    found[0]
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks a record: its kind, retention class and id shape, every field of
/// `want` exactly, and no field beyond the common ones and `want`'s.
fn assert_record(rec: &Value, format: &str, kind: &str, retention: u64, want: Value) {
    let obj = rec.as_object().unwrap();
    assert_eq!(rec["kind"], kind, "{rec:#}");
    assert_eq!(rec["retention_days"], retention, "{rec:#}");
    let id = rec["record_id"].as_str().unwrap_or_else(|| panic!("record_id: {rec:#}"));
    assert!(id.len() > 17 && id.as_bytes()[16] == b'-', "record id <16 hex>-<counter>: {id}");
    if format == "ndjson" {
        let t = rec["time"].as_str().unwrap();
        assert!(t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T', "RFC 3339 ms UTC: {t}");
    }
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&rec[k], v, "field `{k}` of {rec:#}");
    }
    let common = ["record_id", "time", "kind", "retention_days", "_severity", "request_id", "method", "path", "subject", "roles", "client_ip"];
    for k in obj.keys() {
        assert!(common.contains(&k.as_str()) || want.get(k).is_some() || k == "latency_ms" || k == "retry_after_s",
            "unexpected field `{k}` in {rec:#}");
    }
}

fn records_arrive_with_the_right_fields(format: &str) {
    let up = Upstream::start();
    let collector = Collector::start();
    let policy = policy(
        json!({ "format": format }),
        scenarios::audit_sections(),
    );
    let envoy = start(&policy, &up, &collector);
    let port = envoy.listener_port();
    let alice = keys().rs256.sign(tokens::claims(ALICE, json!({"roles": ["employee"]}))).unwrap();
    let bob = keys().rs256.sign(tokens::claims(BOB, json!({"roles": ["employee"]}))).unwrap();
    let expired = {
        let mut c = tokens::claims(ALICE, json!({"roles": ["employee"]}));
        c.expires_at = Some(jwt_simple::prelude::Duration::from_secs(tokens::now() - 3600));
        keys().rs256.sign(c).unwrap()
    };

    // 1. Allowed, with an email in the body and a secret in the query string.
    let chat_body = json!({"messages": [{"role": "user", "content": format!("Please mail {BODY_EMAIL} the numbers")}]});
    let r = http::request(
        port,
        "POST",
        &format!("/api/chat?api_key={QUERY_SECRET}&to={BODY_EMAIL}"),
        &[("authorization", &bearer(&alice)), ("content-type", "application/json")],
        chat_body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last_request().unwrap();
    assert!(!seen.text().contains(BODY_EMAIL), "request body redacted: {}", seen.text());
    let chat_id = seen.header("x-request-id").unwrap().to_string();
    assert!(is_uuid(&chat_id), "{chat_id}");

    // 2. Authentication failure: an expired token (and PII in the query).
    let r = http::get(port, &format!("/api/reports/q1?user={BODY_EMAIL}"), &[("authorization", &bearer(&expired))]);
    assert_eq!((r.status, r.json()["reason"].as_str()), (401, Some("expired")), "{}", r.text());
    let expired_id = r.json()["request_id"].as_str().unwrap().to_string();

    // 3. Authorization denied: alice lacks read_reports.
    let r = http::get(port, "/api/reports/q1", &[("authorization", &bearer(&alice))]);
    assert_eq!(r.status, 403, "{}", r.text());
    let denied_id = r.json()["request_id"].as_str().unwrap().to_string();

    // 4-5. Rate limited: one ping per subject, the second refused.
    let r = http::get(port, "/api/ping", &[("authorization", &bearer(&bob))]);
    assert_eq!(r.status, 200, "{}", r.text());
    let ping_id = up.last_request().unwrap().header("x-request-id").unwrap().to_string();
    let r = http::get(port, "/api/ping", &[("authorization", &bearer(&bob))]);
    assert_eq!(r.status, 429, "{}", r.text());
    let limited_id = r.json()["request_id"].as_str().unwrap().to_string();

    let ids = [&chat_id, &expired_id, &denied_id, &ping_id, &limited_id];
    let recs = wait_records(&collector, format, Duration::from_secs(10), |recs| {
        recs.iter().any(|r| r["kind"] == "config_loaded")
            && ids.iter().all(|id| recs.iter().any(|r| r["kind"] == "access" && r["request_id"] == id.as_str()))
    });

    let severity = |n: u64, t: &str| if format == "otlp_json" { json!([n, t]) } else { Value::Null };
    let ctx = |method: &str, path: &str, subject: Option<&str>, id: &str| {
        let mut c = json!({"request_id": id, "method": method, "path": path, "client_ip": "127.0.0.0/24"});
        if let Some(s) = subject {
            c["subject"] = json!(pseudonym(s));
            c["roles"] = json!(["employee"]);
        }
        c
    };
    let with = |mut base: Value, extra: Value| {
        tokens::merge(&mut base, extra);
        base
    };

    // config_loaded: the hash of exactly the policy Envoy handed over.
    let loaded: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "config_loaded").collect();
    for rec in &loaded {
        assert_record(
            rec,
            format,
            "config_loaded",
            2555,
            json!({"policy_hash": hex(&hmac_sha256::Hash::hash(policy.as_bytes())),
                   "module_version": CHATGUARD_VERSION,
                   "_severity": severity(9, "INFO")}),
        );
    }

    // 1. data_access (counts, never values) and access.
    let c = ctx("POST", "/api/chat", Some(ALICE), &chat_id);
    assert_record(one(&recs, "data_access", &chat_id), format, "data_access", 2555,
        with(c.clone(), json!({"request_entities": {"EMAIL_ADDRESS": 1}, "redacted": true, "_severity": severity(9, "INFO")})));
    let access = one(&recs, "access", &chat_id);
    assert_record(access, format, "access", 90,
        with(c, json!({"rule": "chat", "status": 200, "decision": "allow", "_severity": severity(9, "INFO")})));
    assert!(access["latency_ms"].as_u64().unwrap() < 5000, "{access}");

    // 2. authn_failure with its reason; no subject (the token was not trusted).
    let c = ctx("GET", "/api/reports/q1", None, &expired_id);
    assert_record(one(&recs, "authn_failure", &expired_id), format, "authn_failure", 365,
        with(c.clone(), json!({"reason": "expired", "_severity": severity(13, "WARN")})));
    assert_record(one(&recs, "access", &expired_id), format, "access", 90,
        with(c, json!({"status": 401, "decision": "deny", "reason": "expired", "_severity": severity(13, "WARN")})));

    // 3. authz_decision denied: rule and missing permission.
    let c = ctx("GET", "/api/reports/q1", Some(ALICE), &denied_id);
    assert_record(one(&recs, "authz_decision", &denied_id), format, "authz_decision", 2555,
        with(c.clone(), json!({"outcome": "denied", "rule": "reports", "missing_permission": "read_reports",
                               "condition": "missing_permission", "_severity": severity(13, "WARN")})));
    assert_record(one(&recs, "access", &denied_id), format, "access", 90,
        with(c, json!({"rule": "reports", "status": 403, "decision": "deny", "reason": "missing_permission",
                       "_severity": severity(13, "WARN")})));
    // Granted decisions are not recorded unless record_granted_authz is set.
    assert!(of_kind(&recs, "authz_decision", &chat_id).is_empty());

    // 4-5. rate_limited names the limit.
    let c = ctx("GET", "/api/ping", Some(BOB), &ping_id);
    assert_record(one(&recs, "access", &ping_id), format, "access", 90,
        with(c, json!({"rule": "ping", "status": 200, "decision": "allow", "_severity": severity(9, "INFO")})));
    let c = ctx("GET", "/api/ping", Some(BOB), &limited_id);
    let limited = one(&recs, "rate_limited", &limited_id);
    assert_record(limited, format, "rate_limited", 90,
        with(c.clone(), json!({"limit": "ping-burst", "_severity": severity(13, "WARN")})));
    assert!(limited["retry_after_s"].as_u64().unwrap() >= 1, "{limited}");
    assert_record(one(&recs, "access", &limited_id), format, "access", 90,
        with(c, json!({"rule": "ping", "status": 429, "decision": "deny", "reason": "rate_limited",
                       "_severity": severity(13, "WARN")})));

    // Nothing else about these requests, and every record id is unique.
    for id in ids {
        let n = recs.iter().filter(|r| r["request_id"] == id.as_str()).count();
        let want = if id == &chat_id || id == &expired_id || id == &denied_id || id == &limited_id { 2 } else { 1 };
        assert_eq!(n, want, "records for request {id}: {recs:#?}");
    }
    let unique: BTreeSet<&str> = recs.iter().map(|r| r["record_id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), recs.len(), "record ids are unique");

    // No PII, token, query or raw subject anywhere in what the collector got.
    let wire: String = collector.attempts().iter().map(|b| b.text() + "\n").collect();
    let forbidden = [
        BODY_EMAIL, "jane.roe", QUERY_SECRET, "QUERYSECRET", "api_key", "?", ALICE, BOB, "alice", "bob",
        &alice, &bob, &expired, "127.0.0.1", "Bearer",
    ];
    for needle in forbidden {
        assert!(!wire.contains(needle), "`{needle}` reached the collector:\n{wire}");
    }
    // Token pieces (header, payload, signature) too.
    for part in alice.split('.').chain(expired.split('.')) {
        assert!(!wire.contains(part), "a token segment reached the collector");
    }
    assert_eq!(envoy.counter("wasmcustom.chatguard.audit_dropped").unwrap_or(0), 0);
    assert!(envoy.counter("wasmcustom.chatguard.audit_sent").unwrap() >= recs.len() as u64 - loaded.len() as u64);
}

#[test]
fn ndjson_records_carry_the_documented_fields_and_no_personal_data() {
    if e2e::skip_without_chatguard("ndjson_records_carry_the_documented_fields_and_no_personal_data") {
        return;
    }
    records_arrive_with_the_right_fields("ndjson");
}

#[test]
fn otlp_json_records_carry_the_documented_fields_and_no_personal_data() {
    if e2e::skip_without_chatguard("otlp_json_records_carry_the_documented_fields_and_no_personal_data") {
        return;
    }
    records_arrive_with_the_right_fields("otlp_json");
}

/// Waits until the collector has accepted everything sent so far: the sent
/// counter equals the records accepted, and stays so past a few flushes.
fn wait_idle(envoy: &Envoy, collector: &Collector, format: &str) -> usize {
    let end = Instant::now() + Duration::from_secs(10);
    let mut stable_since: Option<(usize, Instant)> = None;
    loop {
        let n = flatten(format, &collector.records()).len();
        let sent = envoy.counter("wasmcustom.chatguard.audit_sent").unwrap_or(0) as usize;
        match stable_since {
            Some((m, since)) if m == n && sent == n && since.elapsed() > Duration::from_millis(400) => return n,
            Some((m, _)) if m == n && sent == n => {}
            _ => stable_since = (sent == n && n > 0).then(|| (n, Instant::now())),
        }
        assert!(Instant::now() < end, "collector never caught up: {n} accepted, {sent} counted as sent");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Access records accepted by the collector, by record id (duplicates from
/// at-least-once retries collapse), as request ids.
fn access_by_record_id(collector: &Collector, format: &str) -> BTreeMap<String, String> {
    flatten(format, &collector.records())
        .into_iter()
        .filter(|r| r["kind"] == "access")
        .map(|r| (r["record_id"].as_str().unwrap().to_string(), r["request_id"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_collector_outage_loses_nothing_within_max_queue_and_counts_exactly_the_overflow() {
    if e2e::skip_without_chatguard("a_collector_outage_loses_nothing_within_max_queue_and_counts_exactly_the_overflow") {
        return;
    }
    const MAX_QUEUE: usize = 20;
    let format = "ndjson";
    let up = Upstream::start();
    let collector = Collector::start();
    let envoy = start(&policy(json!({"format": format, "max_batch": 5, "max_queue": MAX_QUEUE}), json!({})), &up, &collector);
    let port = envoy.listener_port();
    let token = bearer(&tokens::rs256("carol", &[]));
    // One access record per request (no RBAC, no PII, no limits configured).
    let send = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let r = http::get(port, "/api/chat", &[("authorization", &token)]);
                assert_eq!(r.status, 200, "user requests are served whatever the collector does");
                up.last_request().unwrap().header("x-request-id").unwrap().to_string()
            })
            .collect()
    };
    let before = wait_idle(&envoy, &collector, format); // config_loaded
    assert!(before >= 1);

    // Phase 1: the collector answers 503 for a while, within the bound.
    collector.set_mode(CollectorMode::Unavailable);
    let first = send(12);
    let end = Instant::now() + Duration::from_secs(5);
    while !collector.attempts().iter().any(|a| a.status == Some(503)) {
        assert!(Instant::now() < end, "no batch was attempted during the 503 phase");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(access_by_record_id(&collector, format).is_empty(), "nothing accepted while failing");
    collector.set_mode(CollectorMode::Accept);
    let end = Instant::now() + Duration::from_secs(10);
    while access_by_record_id(&collector, format).len() < first.len() {
        assert!(Instant::now() < end, "records of the 503 phase did not all arrive");
        std::thread::sleep(Duration::from_millis(50));
    }
    let got: BTreeSet<String> = access_by_record_id(&collector, format).into_values().collect();
    assert_eq!(got, first.iter().cloned().collect::<BTreeSet<_>>(), "every record of the 503 phase arrived");
    assert_eq!(envoy.counter("wasmcustom.chatguard.audit_dropped").unwrap_or(0), 0, "nothing dropped within the bound");
    assert!(envoy.counter("wasmcustom.chatguard.audit_retried").unwrap() >= 1);
    let after_first = wait_idle(&envoy, &collector, format);

    // Phase 2: the collector is down (connection refused) and more records
    // than max_queue are made: the oldest MAX_QUEUE are kept, the rest dropped.
    collector.down();
    let second = send(MAX_QUEUE + 13);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(envoy.counter("wasmcustom.chatguard.audit_dropped"), Some(13), "exactly the overflow is dropped");
    assert!(envoy.wait_for_log("audit queue full (20 records)", Duration::from_secs(3)), "a log line says so");
    collector.up();
    let end = Instant::now() + Duration::from_secs(10);
    while access_by_record_id(&collector, format).len() < first.len() + MAX_QUEUE {
        assert!(Instant::now() < end, "records held during the outage did not all arrive");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500)); // nothing more may come
    let all = access_by_record_id(&collector, format);
    assert_eq!(all.len(), first.len() + MAX_QUEUE, "exactly the records within the bound arrived");
    let got: BTreeSet<String> = all.into_values().collect();
    let want: BTreeSet<String> = first.iter().chain(second[..MAX_QUEUE].iter()).cloned().collect();
    assert_eq!(got, want, "the oldest {MAX_QUEUE} records of the outage were kept (tail drop)");
    assert_eq!(envoy.counter("wasmcustom.chatguard.audit_dropped"), Some(13));
    let total = wait_idle(&envoy, &collector, format);
    assert_eq!(total, after_first + MAX_QUEUE);
    assert!(envoy.wait_for_log("audit collector reachable again", Duration::from_secs(3)));
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn measure(port: u16, token: &str, n: usize) -> Duration {
    let mut conn = http::Connection::open(port).unwrap();
    let samples = (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = conn.request("GET", "/api/chat", &[("authorization", token)], b"").unwrap();
            let took = t.elapsed();
            assert_eq!(r.status, 200);
            took
        })
        .collect();
    p50(samples)
}

#[test]
fn a_hanging_collector_does_not_change_user_latency() {
    if e2e::skip_without_chatguard("a_hanging_collector_does_not_change_user_latency") {
        return;
    }
    let format = "otlp_json";
    let up = Upstream::start();
    let collector = Collector::start();
    let envoy = start(&policy(json!({"format": format, "max_batch": 10, "timeout_ms": 4000}), json!({})), &up, &collector);
    let port = envoy.listener_port();
    let token = bearer(&tokens::rs256("dave", &[]));
    wait_idle(&envoy, &collector, format);
    measure(port, &token, 30); // warm-up: token cache, connections, JIT

    let accepting = measure(port, &token, 100);
    // Hang until every batch slot (max_in_flight, 4 by default) is stuck on the
    // collector: from then on records only pile up in the queue. The batch
    // timeout (4 s) is far longer than the measurement, so none is freed.
    collector.set_mode(CollectorMode::Hang);
    let hung = || collector.attempts().iter().filter(|a| a.status.is_none()).count();
    let end = Instant::now() + Duration::from_secs(5);
    while hung() < 4 {
        let _ = measure(port, &token, 5);
        assert!(Instant::now() < end, "batches did not reach the hanging collector: {} hung", hung());
    }
    let started = Instant::now();
    let hanging = measure(port, &token, 100);
    assert!(started.elapsed() < Duration::from_secs(3), "measured while the batches still hung");
    eprintln!("p50 accepting {accepting:?}, hanging {hanging:?} ({} batches hung)", hung());
    assert_eq!(hung(), 4, "no further batch is sent while all slots hang");
    let allowed = (accepting / 5).max(Duration::from_millis(2));
    assert!(hanging <= accepting + allowed, "p50 with a hanging collector {hanging:?} vs accepting {accepting:?}");

    // The hung batches are retried once the collector answers again: nothing lost.
    collector.set_mode(CollectorMode::Accept);
    collector.drop_connections();
    let sent_requests = up.request_count();
    let end = Instant::now() + Duration::from_secs(15);
    while access_by_record_id(&collector, format).len() < sent_requests {
        assert!(Instant::now() < end, "hung records did not all arrive after recovery");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(access_by_record_id(&collector, format).len(), sent_requests);
    assert_eq!(envoy.counter("wasmcustom.chatguard.audit_dropped").unwrap_or(0), 0);
}
