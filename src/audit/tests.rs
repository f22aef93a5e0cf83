//! Scenario tests of the whole audit stage against [`MemoryHost`].

use super::*;
use crate::config::audit::{AnomalyConfig, DailyThreshold, SubjectMode, WindowThreshold};
use crate::host::{CallError, Cas, LogLevel, MemoryHost, OutboundRequest, StoreError};
use std::cell::Cell;
use std::collections::BTreeMap;

const KEY: &str = "test-pseudonym-key-0123456789";

fn config(format: AuditFormat) -> AuditConfig {
    let json = format!(
        r#"{{"cluster": "audit_collector", "authority": "collector", "pseudonym_key": "{KEY}",
            "format": "{}"}}"#,
        match format {
            AuditFormat::Ndjson => "ndjson",
            AuditFormat::OtlpJson => "otlp_json",
        }
    );
    serde_json::from_str(&json).unwrap()
}

/// A host whose outbound calls can be refused, around a [`MemoryHost`].
#[derive(Default)]
struct TestHost {
    inner: MemoryHost,
    refuse_calls: Cell<bool>,
}

impl Host for TestHost {
    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.inner.log(level, message)
    }
    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
        self.inner.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
        self.inner.shared_set(key, value, cas)
    }
    fn http_call(&self, request: &OutboundRequest) -> Result<u32, CallError> {
        if self.refuse_calls.get() {
            return Err(CallError::Refused);
        }
        self.inner.http_call(request)
    }
    fn count(&self, metric: &str, by: u64) {
        self.inner.count(metric, by)
    }
}

impl TestHost {
    fn at(now_ms: u64) -> TestHost {
        TestHost { inner: MemoryHost::at(now_ms), refuse_calls: Cell::new(false) }
    }
    fn calls(&self) -> usize {
        self.inner.calls.borrow().len()
    }
    fn body(&self, call_id: u32) -> Vec<u8> {
        self.inner.calls.borrow()[call_id as usize - 1].body.clone()
    }
    fn warnings(&self) -> Vec<String> {
        self.inner
            .logs
            .borrow()
            .iter()
            .filter(|(l, _)| *l >= LogLevel::Warn)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

/// Record ids in an NDJSON batch body.
fn ndjson_ids(body: &[u8]) -> Vec<String> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["record_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn access() -> RecordBody {
    RecordBody::Access(Access {
        rule: Some(Name::new("chat")),
        status: 200,
        decision: Decision::Allow,
        reason: None,
        latency_ms: 3,
    })
}

// ---------------------------------------------------------------- no PII

const EMAIL: &str = "alice.smith@example.com";
const CARD: &str = "4111111111111111";
const JWT: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU";
const API_KEY: &str = "sk-live-51HxQ2eZvKYlo2C0123456789";
const FULL_IP: &str = "203.0.113.77";
const FULL_IP6: &str = "2001:db8:abcd:12:9:8:7:6";

fn pii_laden_records(audit: &mut AuditLog, host: &dyn Host) {
    let roles = vec!["analyst".to_string()];
    let paths = [
        format!("/v1/chat/completions?api_key={API_KEY}&email={EMAIL}"),
        format!("/v1/users/{EMAIL}/history"),
        format!("/v1/cards/{CARD}?x=1"),
        format!("/v1/tokens/{JWT}"),
        format!("/v1/chat#access_token={JWT}"),
    ];
    let request_ids = [EMAIL, CARD, JWT, API_KEY, "4111-1111-1111-1111"];
    for (i, path) in paths.iter().enumerate() {
        let client_ip = if i % 2 == 0 { format!("{FULL_IP}:5123") } else { FULL_IP6.to_string() };
        let ctx = audit.context(&RequestFacts {
            request_id: request_ids.get(i).copied(),
            method: "POST",
            path,
            subject: Some(EMAIL),
            roles: &roles,
            client_ip: Some(&client_ip),
        });
        audit.record(host, Some(&ctx), access());
        audit.record(
            host,
            Some(&ctx),
            RecordBody::AuthnFailure(AuthnFailure {
                reason: "expired",
                provider: Some(Name::new("corp")),
            }),
        );
        audit.record(
            host,
            Some(&ctx),
            RecordBody::AuthzDecision(AuthzDecision {
                outcome: AuthzOutcome::Denied,
                rule: Some(Name::new("admin-only")),
                missing_permission: Some(Name::new("admin:write")),
                condition: Some("mfa"),
            }),
        );
        audit.record(
            host,
            Some(&ctx),
            RecordBody::AuthzDecision(AuthzDecision {
                outcome: AuthzOutcome::Granted,
                rule: Some(Name::new("chat")),
                missing_permission: None,
                condition: None,
            }),
        );
        audit.record(
            host,
            Some(&ctx),
            RecordBody::RateLimited(RateLimited { limit: Name::new("per-user"), retry_after_s: 7 }),
        );
        let mut entities = BTreeMap::new();
        entities.insert(Name::new("email"), 2);
        entities.insert(Name::new("credit_card"), 1);
        audit.record(
            host,
            Some(&ctx),
            RecordBody::DataAccess(DataAccess {
                request_entities: entities.clone(),
                response_entities: entities,
                redacted: true,
            }),
        );
        audit.record(
            host,
            Some(&ctx),
            RecordBody::Error(ErrorRecord { stage: "redact", code: "body_too_large" }),
        );
    }
    audit.record(host, None, RecordBody::ConfigLoaded(ConfigLoaded::new(KEY.as_bytes())));
}

fn assert_no_pii(format: AuditFormat) {
    let mut cfg = config(format);
    cfg.record_granted_authz = true;
    cfg.chain = true;
    cfg.anomaly = AnomalyConfig {
        denials_per_subject: Some(WindowThreshold { max: 1, window_seconds: 60 }),
        requests_per_subject_per_day: Some(DailyThreshold { max: 1 }),
        max_tracked_subjects: 10,
    };
    let mut audit = AuditLog::new(&cfg, 7).unwrap();
    let host = TestHost::at(1_700_000_000_000);
    pii_laden_records(&mut audit, &host);
    host.inner.advance_ms(1000);
    audit.on_tick(&host);
    assert_eq!(host.calls(), 1);
    let body = String::from_utf8(host.body(1)).unwrap();

    // Every kind made it into the batch, alerts included.
    for kind in [
        "access",
        "authn_failure",
        "authz_decision",
        "rate_limited",
        "data_access",
        "security_alert",
        "config_loaded",
        "error",
    ] {
        assert!(body.contains(&format!("\"{kind}\"")), "{format:?}: no {kind} record");
    }
    let forbidden = [
        EMAIL,
        "alice.smith",
        "example.com",
        CARD,
        "4111-1111",
        JWT,
        "eyJ",
        API_KEY,
        "sk-live",
        "api_key",
        "access_token",
        FULL_IP,
        "203.0.113.77",
        "2001:db8:abcd:12",
        KEY,
    ];
    for value in forbidden {
        assert!(!body.contains(value), "{format:?}: `{value}` reached the batch:\n{body}");
    }
    // What is kept is the reduced form.
    let pseudonym = audit.subject(EMAIL);
    assert!(body.contains(pseudonym.as_str()));
    assert!(body.contains("203.0.113.0/24") && body.contains("2001:db8:abcd::/48"));
    assert!(body.contains("/v1/users/{email}/history") && body.contains("/v1/cards/{number}"));
}

#[test]
fn no_pii_reaches_an_ndjson_batch() {
    assert_no_pii(AuditFormat::Ndjson);
}

#[test]
fn no_pii_reaches_an_otlp_batch() {
    assert_no_pii(AuditFormat::OtlpJson);
}

// ---------------------------------------------------------------- transport

fn small_queue(max_queue: usize, max_batch: usize, max_in_flight: usize) -> AuditConfig {
    let mut cfg = config(AuditFormat::Ndjson);
    cfg.max_queue = max_queue;
    cfg.max_batch = max_batch;
    cfg.max_in_flight = max_in_flight;
    cfg.flush_interval_ms = 1000;
    cfg.retry.initial_backoff_ms = 200;
    cfg.retry.max_backoff_ms = 1600;
    cfg
}

#[test]
fn recording_never_calls_out() {
    let mut audit = AuditLog::new(&small_queue(100, 10, 4), 1).unwrap();
    let host = TestHost::at(5_000);
    for _ in 0..500 {
        audit.record(&host, None, access());
    }
    assert_eq!(host.calls(), 0);
    assert_eq!(
        audit.stats(),
        AuditStats { pending: 100, in_flight_batches: 0, held: 100, dropped: 400 }
    );
}

#[test]
fn a_full_batch_goes_at_once_a_partial_one_waits_for_the_interval() {
    let mut audit = AuditLog::new(&small_queue(100, 10, 4), 1).unwrap();
    let host = TestHost::at(10_000);
    audit.on_tick(&host); // nothing queued: starts nothing, keeps the interval clock
    for _ in 0..3 {
        audit.record(&host, None, access());
    }
    audit.on_tick(&host);
    assert_eq!(host.calls(), 1, "the interval since start (0) is over: flush");
    audit.on_http_response(&host, 1, Some(200));
    for _ in 0..3 {
        audit.record(&host, None, access());
    }
    host.inner.advance_ms(999);
    audit.on_tick(&host);
    assert_eq!(host.calls(), 1, "partial batch waits for the interval");
    for _ in 0..7 {
        audit.record(&host, None, access());
    }
    audit.on_tick(&host);
    assert_eq!(host.calls(), 2, "a full batch does not wait");
    assert_eq!(ndjson_ids(&host.body(2)).len(), 10);
    let req = host.inner.calls.borrow()[1].clone();
    assert_eq!(
        (req.upstream.as_str(), req.authority.as_str(), req.method.as_str(), req.path.as_str()),
        ("audit_collector", "collector", "POST", "/v1/logs")
    );
    assert_eq!(req.headers, vec![("content-type".to_string(), "application/x-ndjson".to_string())]);
    assert_eq!(req.timeout_ms, 2000);
}

#[test]
fn in_flight_batches_are_capped() {
    let mut audit = AuditLog::new(&small_queue(1000, 10, 3), 1).unwrap();
    let host = TestHost::at(10_000);
    for _ in 0..100 {
        audit.record(&host, None, access());
    }
    audit.on_tick(&host);
    assert_eq!(host.calls(), 3);
    audit.on_http_response(&host, 2, Some(204));
    audit.on_tick(&host);
    assert_eq!(host.calls(), 4);
    assert!(audit.is_own_call(1) && !audit.is_own_call(2) && audit.is_own_call(4));
    assert_eq!(host.inner.counter(metrics::AUDIT_SENT), 10);
}

/// The collector is down for many ticks while records keep coming, then recovers:
/// every record within the bound arrives exactly once, exactly the overflow is
/// counted as dropped, and the overflow is logged once.
#[test]
fn an_outage_loses_nothing_within_the_bound_and_counts_exactly_the_overflow() {
    let (max_queue, total) = (50usize, 80usize);
    let mut audit = AuditLog::new(&small_queue(max_queue, 8, 2), 42).unwrap();
    let host = TestHost::at(1_000_000);
    let mut generated = Vec::new();
    let mut delivered: Vec<String> = Vec::new();
    let mut answered = 0usize;
    let collector_up = |t: u64| t >= 1_060_000;

    let mut next = 0usize;
    while host.now_ms() < 1_120_000 {
        // Two records every 100 ms tick during the first 4 s.
        for _ in 0..2 {
            if next < total {
                audit.record(&host, None, access());
                next += 1;
            }
        }
        audit.on_tick(&host);
        // The collector answers every call started so far, at this tick.
        while answered < host.calls() {
            answered += 1;
            let id = answered as u32;
            if collector_up(host.now_ms()) {
                delivered.extend(ndjson_ids(&host.body(id)));
                audit.on_http_response(&host, id, Some(200));
            } else if answered.is_multiple_of(2) {
                audit.on_http_response(&host, id, Some(503));
            } else {
                audit.on_http_response(&host, id, None);
            }
        }
        host.inner.advance_ms(100);
    }
    // Ids of the records that were accepted into the queue: the first `max_queue`.
    for n in 0..max_queue {
        generated
            .push(format!("{}-{n:x}", ndjson_ids(&host.body(1))[0].split('-').next().unwrap()));
    }
    let mut sorted = delivered.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), delivered.len(), "no record delivered twice");
    let mut expected = generated.clone();
    expected.sort();
    assert_eq!(sorted, expected);
    assert_eq!(host.inner.counter(metrics::AUDIT_DROPPED), (total - max_queue) as u64);
    assert_eq!(host.inner.counter(metrics::AUDIT_SENT), max_queue as u64);
    assert!(host.inner.counter(metrics::AUDIT_RETRIED) > 0);
    assert_eq!(
        audit.stats(),
        AuditStats { pending: 0, in_flight_batches: 0, held: 0, dropped: 30 }
    );
    let warnings = host.warnings();
    assert_eq!(
        warnings.iter().filter(|m| m.starts_with("audit queue full")).count(),
        1,
        "{warnings:?}"
    );
    assert_eq!(warnings.iter().filter(|m| m.starts_with("audit collector unavailable")).count(), 1);
    assert!(host
        .inner
        .logs
        .borrow()
        .iter()
        .any(|(_, m)| m.starts_with("audit collector reachable again")));
}

/// Attempts after failures follow the backoff exactly: 200, 400, 800, 1600, 1600
/// ms, and a success resets it.
#[test]
fn retry_backoff_timing() {
    let mut audit = AuditLog::new(&small_queue(100, 10, 4), 1).unwrap();
    let host = TestHost::at(0);
    audit.record(&host, None, access());
    host.inner.set_now_ms(1000);
    let mut attempts = Vec::new();
    let mut answered = 0;
    while host.now_ms() <= 10_000 {
        audit.on_tick(&host);
        while answered < host.calls() {
            answered += 1;
            attempts.push(host.now_ms());
            let status = if attempts.len() < 6 { None } else { Some(200) };
            audit.on_http_response(&host, answered as u32, status);
        }
        host.inner.advance_ms(10);
    }
    assert_eq!(attempts, vec![1000, 1200, 1600, 2400, 4000, 5600]);
    assert_eq!(host.inner.counter(metrics::AUDIT_RETRIED), 5);
    assert_eq!(host.inner.counter(metrics::AUDIT_SENT), 1);

    // After the success, the next failure waits the initial 200 ms again.
    host.inner.set_now_ms(20_000);
    audit.record(&host, None, access());
    audit.on_tick(&host);
    audit.on_http_response(&host, 7, Some(500));
    host.inner.set_now_ms(20_199);
    audit.on_tick(&host);
    assert_eq!(host.calls(), 7);
    host.inner.set_now_ms(20_200);
    audit.on_tick(&host);
    assert_eq!(host.calls(), 8);
}

#[test]
fn while_failing_only_one_probe_batch_is_in_flight() {
    let mut audit = AuditLog::new(&small_queue(1000, 10, 4), 1).unwrap();
    let host = TestHost::at(10_000);
    for _ in 0..100 {
        audit.record(&host, None, access());
    }
    audit.on_tick(&host);
    assert_eq!(host.calls(), 4);
    audit.on_http_response(&host, 1, Some(502));
    for id in 2..=4 {
        audit.on_http_response(&host, id, None);
    }
    // Four failures: 200 + 400 + 800 + 1600 -> the last sets the wait to 1600 ms.
    host.inner.advance_ms(1599);
    audit.on_tick(&host);
    assert_eq!(host.calls(), 4);
    host.inner.advance_ms(1);
    audit.on_tick(&host);
    assert_eq!(host.calls(), 5, "one probe while failing");
    audit.on_tick(&host);
    assert_eq!(host.calls(), 5);
    audit.on_http_response(&host, 5, Some(200));
    audit.on_tick(&host);
    assert_eq!(host.calls(), 9, "back to full concurrency");
}

#[test]
fn an_unanswered_call_is_given_up_and_its_late_answer_ignored() {
    let mut audit = AuditLog::new(&small_queue(100, 10, 1), 1).unwrap();
    let host = TestHost::at(10_000);
    audit.record(&host, None, access());
    audit.on_tick(&host);
    assert_eq!(audit.stats().in_flight_batches, 1);
    host.inner.advance_ms(2000 + 999);
    audit.on_tick(&host);
    assert_eq!(audit.stats().in_flight_batches, 1);
    host.inner.advance_ms(1);
    audit.on_tick(&host);
    assert_eq!(audit.stats(), AuditStats { pending: 1, in_flight_batches: 0, held: 1, dropped: 0 });
    assert_eq!(host.inner.counter(metrics::AUDIT_RETRIED), 1);
    audit.on_http_response(&host, 1, Some(200));
    assert_eq!(host.inner.counter(metrics::AUDIT_SENT), 0, "late answer ignored");
    host.inner.advance_ms(200);
    audit.on_tick(&host);
    audit.on_http_response(&host, 2, Some(200));
    assert_eq!(host.inner.counter(metrics::AUDIT_SENT), 1);
    assert_eq!(ndjson_ids(&host.body(1)), ndjson_ids(&host.body(2)), "same record, same id");
}

#[test]
fn a_refused_batch_is_dropped_counted_and_logged_once() {
    let mut audit = AuditLog::new(&small_queue(100, 2, 4), 1).unwrap();
    let host = TestHost::at(10_000);
    for _ in 0..6 {
        audit.record(&host, None, access());
    }
    audit.on_tick(&host);
    assert_eq!(host.calls(), 3);
    audit.on_http_response(&host, 1, Some(400));
    audit.on_http_response(&host, 2, Some(404));
    audit.on_http_response(&host, 3, Some(200));
    assert_eq!(host.inner.counter(metrics::AUDIT_DROPPED), 4);
    assert_eq!(host.inner.counter(metrics::AUDIT_SENT), 2);
    assert_eq!(
        host.warnings().iter().filter(|m| m.contains("refused a batch with status 400")).count(),
        1
    );
    assert_eq!(host.warnings().len(), 1, "{:?}", host.warnings());
    assert_eq!(audit.stats().held, 0);
}

#[test]
fn a_call_the_host_refuses_keeps_its_records_and_backs_off() {
    let mut audit = AuditLog::new(&small_queue(100, 10, 4), 1).unwrap();
    let host = TestHost::at(10_000);
    host.refuse_calls.set(true);
    for _ in 0..3 {
        audit.record(&host, None, access());
    }
    audit.on_tick(&host);
    assert_eq!(audit.stats().pending, 3);
    host.refuse_calls.set(false);
    host.inner.advance_ms(199);
    audit.on_tick(&host);
    assert_eq!(host.calls(), 0, "still backing off");
    host.inner.advance_ms(1);
    audit.on_tick(&host);
    assert_eq!(host.calls(), 1);
    assert_eq!(ndjson_ids(&host.body(1)).len(), 3);
    assert!(host.warnings()[0].contains("call refused"), "{:?}", host.warnings());
}

#[test]
fn otlp_batches_carry_the_otlp_content_type_and_parse() {
    let mut audit = AuditLog::new(&config(AuditFormat::OtlpJson), 1).unwrap();
    let host = TestHost::at(10_000);
    audit.record(&host, None, access());
    audit.on_tick(&host);
    let req = host.inner.calls.borrow()[0].clone();
    assert_eq!(req.headers, vec![("content-type".to_string(), "application/json".to_string())]);
    let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        v["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["body"]["stringValue"],
        "access"
    );
}

// ---------------------------------------------------------------- records

#[test]
fn granted_decisions_are_recorded_only_when_configured() {
    let granted = || {
        RecordBody::AuthzDecision(AuthzDecision {
            outcome: AuthzOutcome::Granted,
            rule: None,
            missing_permission: None,
            condition: None,
        })
    };
    let host = TestHost::at(10_000);
    let mut off = AuditLog::new(&config(AuditFormat::Ndjson), 1).unwrap();
    off.record(&host, None, granted());
    assert_eq!(off.stats().pending, 0);
    let mut cfg = config(AuditFormat::Ndjson);
    cfg.record_granted_authz = true;
    let mut on = AuditLog::new(&cfg, 1).unwrap();
    on.record(&host, None, granted());
    assert_eq!(on.stats().pending, 1);
}

#[test]
fn a_denial_burst_raises_one_alert_record_per_window() {
    let mut cfg = config(AuditFormat::Ndjson);
    cfg.anomaly.denials_per_subject = Some(WindowThreshold { max: 2, window_seconds: 10 });
    let mut audit = AuditLog::new(&cfg, 1).unwrap();
    let host = TestHost::at(100_000);
    let ctx = audit.context(&RequestFacts {
        method: "GET",
        path: "/admin",
        subject: Some("mallory"),
        ..Default::default()
    });
    let denied = || {
        RecordBody::AuthzDecision(AuthzDecision {
            outcome: AuthzOutcome::Denied,
            rule: Some(Name::new("admin")),
            missing_permission: Some(Name::new("admin:read")),
            condition: None,
        })
    };
    for _ in 0..6 {
        audit.record(&host, Some(&ctx), denied());
        host.inner.advance_ms(1000);
    }
    host.inner.advance_ms(10_000);
    for _ in 0..3 {
        audit.record(&host, Some(&ctx), denied());
    }
    audit.on_tick(&host);
    let body = String::from_utf8(host.body(1)).unwrap();
    let alerts: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "security_alert")
        .collect();
    assert_eq!(alerts.len(), 2, "one per window");
    assert_eq!(alerts[0]["alert"], "denial_burst");
    assert_eq!(alerts[0]["count"], 3);
    assert_eq!(alerts[0]["subject"], audit.subject("mallory").as_str());
    assert_eq!(alerts[0]["retention_days"], 730);
    assert_eq!(host.inner.counter(metrics::SECURITY_ALERTS), 2);
}

#[test]
fn a_chained_ndjson_stream_verifies_end_to_end() {
    let mut cfg = small_queue(100, 4, 4);
    cfg.chain = true;
    let mut audit = AuditLog::new(&cfg, 9).unwrap();
    let host = TestHost::at(50_000);
    for _ in 0..12 {
        audit.record(&host, None, access());
    }
    audit.on_tick(&host);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for id in 1..=3 {
        lines.extend(
            host.body(id).split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec),
        );
    }
    assert_eq!(lines.len(), 12);
    assert_eq!(chain::verify(&lines, chain::GENESIS), Ok(()));
    lines.remove(6);
    assert_eq!(chain::verify(&lines, chain::GENESIS), Err(chain::ChainError::Broken { index: 6 }));
}

#[test]
fn raw_mode_keeps_the_subject_and_new_refuses_bad_config() {
    let mut cfg = config(AuditFormat::Ndjson);
    cfg.subject_mode = SubjectMode::Raw;
    let audit = AuditLog::new(&cfg, 1).unwrap();
    assert_eq!(audit.subject("user-1").as_str(), "user-1");
    cfg.max_batch = 0;
    assert_eq!(AuditLog::new(&cfg, 1).unwrap_err().field(), "audit.max_batch");
}

#[test]
fn tick_period_follows_the_flush_interval() {
    let mut cfg = config(AuditFormat::Ndjson);
    assert_eq!(AuditLog::new(&cfg, 1).unwrap().tick_period_ms(), 100);
    cfg.flush_interval_ms = 40;
    assert_eq!(AuditLog::new(&cfg, 1).unwrap().tick_period_ms(), 40);
}

#[test]
fn the_default_policy_audit_section_builds() {
    let policy =
        crate::config::Policy::from_json(include_bytes!("../../policy/default.json")).unwrap();
    let cfg = policy.audit.expect("default policy has an audit section");
    assert_eq!(
        (cfg.cluster.as_str(), cfg.authority(), cfg.path.as_str()),
        ("audit_collector", "collector", "/v1/logs")
    );
    assert_eq!(cfg.format, AuditFormat::OtlpJson);
    AuditLog::new(&cfg, 1).unwrap();
}

/// Cost of `record` (build, reduce, encode, queue) and of batch encoding, per
/// record. Run by hand (with the crate optimised: CARGO_PROFILE_DEV_OPT_LEVEL=3):
/// `cargo test -p chatguard --lib audit::tests::timing -- --ignored --nocapture`.
#[test]
#[ignore = "timing, run by hand"]
fn timing() {
    let roles = vec!["user".to_string(), "analyst".to_string()];
    for (format, chain) in
        [(AuditFormat::Ndjson, false), (AuditFormat::OtlpJson, false), (AuditFormat::Ndjson, true)]
    {
        let mut cfg = small_queue(200_000, 200, 1000);
        cfg.format = format;
        cfg.chain = chain;
        let mut audit = AuditLog::new(&cfg, 1).unwrap();
        let host = TestHost::at(1_700_000_000_000);
        let n = 50_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let ctx = audit.context(&RequestFacts {
                request_id: Some("3f2c1a7e-5b1d-4c7a-9a77-1b2c3d4e5f60"),
                method: "POST",
                path: "/v1/chat/completions",
                subject: Some("alice@example.com"),
                roles: &roles,
                client_ip: Some("203.0.113.77:5555"),
            });
            audit.record(&host, Some(&ctx), access());
        }
        let per_record = start.elapsed() / n;
        host.inner.advance_ms(1000);
        let start = std::time::Instant::now();
        audit.on_tick(&host);
        let batches = host.calls();
        let per_batch = start.elapsed() / batches.max(1) as u32;
        let bytes = host.body(1).len();
        println!("{format:?} chain={chain}: record {per_record:?}/record, batch of 200 {per_batch:?} ({bytes} bytes)");
    }
}
