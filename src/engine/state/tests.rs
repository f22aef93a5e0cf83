//! Remote state: two workers (each its own engine and host) and one owner
//! answering their queries behave as one Envoy process sharing its store.

use super::*;
use crate::engine::RequestContext;
use crate::host::MemoryHost;
use crate::jwt::tests::{claims, jwks_json, keys, AUD, ISS, NOW};
use jwt_simple::prelude::*;
use serde_json::json;

const T0: u64 = NOW * 1000;

fn policy(extra: serde_json::Value) -> String {
    let mut doc = json!({
        "jwt": {"providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD], "jwks": jwks_json()}]},
        "rate_limits": [{"name": "per-user", "key": "subject", "capacity": 3, "refill_per_minute": 1}],
        "lockout": {"max_failures": 3, "window_seconds": 60, "lock_seconds": 120}
    });
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    doc.to_string()
}

fn engine(doc: &str) -> Engine {
    Engine::from_json(doc.as_bytes()).unwrap()
}

fn head(ip: &str, token: Option<&str>) -> RequestHead {
    let mut headers = Vec::new();
    if let Some(t) = token {
        headers.push(("authorization".to_string(), format!("Bearer {t}")));
    }
    RequestHead {
        method: "GET".into(),
        path: "/api/chat".into(),
        authority: "chat.example.test".into(),
        headers,
        downstream: Some(format!("{ip}:5555")),
        body_follows: false,
    }
}

/// A worker isolate: its own engine and host (clock, counters, store never used).
struct Worker {
    engine: Engine,
    host: MemoryHost,
}

/// The state owner (the Durable Object): its own engine over its own store.
struct Owner {
    engine: Engine,
    host: MemoryHost,
}

impl Worker {
    fn new(doc: &str) -> Worker {
        Worker { engine: engine(doc), host: MemoryHost::at(T0) }
    }

    /// Both passes, with the query carried as bytes as the worker does.
    fn request(&self, owner: Option<&Owner>, head: &RequestHead) -> RequestVerdict {
        let StatePlan::Ask(pending) = self.engine.plan_state(&self.host, head, true) else { panic!("no remote keys here") };
        let answer = match owner {
            _ if pending.query().is_empty() => StateAnswer::default(),
            Some(o) => {
                let query = StateQuery::from_bytes(&pending.query().to_bytes()).unwrap();
                StateAnswer::from_bytes(&o.engine.answer_state(&o.host, &query).to_bytes())
            }
            None => StateAnswer::unavailable(),
        };
        self.engine.resume(&self.host, head, pending, &answer)
    }
}

fn status(v: &RequestVerdict) -> u16 {
    match v {
        RequestVerdict::Forward { .. } => 200,
        RequestVerdict::Respond { reply, .. } => reply.status,
        RequestVerdict::WaitForKeys { .. } => 0,
    }
}

fn reply_of(v: RequestVerdict) -> crate::engine::LocalReply {
    match v {
        RequestVerdict::Respond { reply, .. } => reply,
        other => panic!("expected a reply, got {}", status(&other)),
    }
}

fn bad_token() -> String {
    let mut c = claims();
    c.issuer = Some("https://evil.test".into());
    keys().ed.sign(c).unwrap()
}

#[test]
fn two_workers_share_one_owners_buckets() {
    let doc = policy(json!({}));
    let (a, b) = (Worker::new(&doc), Worker::new(&doc));
    let owner = Owner { engine: engine(&doc), host: MemoryHost::at(T0) };
    let token = keys().ed.sign(claims()).unwrap();
    let statuses: Vec<u16> =
        (0..6).map(|i| status(&[&a, &b][i % 2].request(Some(&owner), &head("192.0.2.1", Some(&token))))).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429], "capacity 3 across both workers");

    // Without the owner each worker would have admitted its own 3.
    let (c, d) = (Engine::from_json(doc.as_bytes()).unwrap(), Engine::from_json(doc.as_bytes()).unwrap());
    let (hc, hd) = (MemoryHost::at(T0), MemoryHost::at(T0));
    let local: Vec<u16> = (0..6)
        .map(|i| {
            let (e, h) = if i % 2 == 0 { (&c, &hc) } else { (&d, &hd) };
            status(&e.on_request_headers(h, &head("192.0.2.1", Some(&token)), true))
        })
        .collect();
    assert_eq!(local, [200; 6]);
}

#[test]
fn the_429_is_the_one_the_local_store_gives() {
    let doc = policy(json!({}));
    let worker = Worker::new(&doc);
    let owner = Owner { engine: engine(&doc), host: MemoryHost::at(T0) };
    let local = engine(&doc);
    let local_host = MemoryHost::at(T0);
    let token = keys().ed.sign(claims()).unwrap();
    let req = head("192.0.2.1", Some(&token));
    for _ in 0..3 {
        worker.request(Some(&owner), &req);
        local.on_request_headers(&local_host, &req, true);
    }
    let remote = reply_of(worker.request(Some(&owner), &req));
    let here = reply_of(local.on_request_headers(&local_host, &req, true));
    assert_eq!(remote, here);
    assert_eq!(remote.status, 429);
    assert!(remote.headers.iter().any(|(n, v)| n == "retry-after" && v == "60"), "{:?}", remote.headers);
    assert_eq!(worker.host.counter("rate_limited"), 1, "counted where the request was refused");
}

#[test]
fn failures_in_one_worker_lock_the_client_out_in_the_other() {
    let doc = policy(json!({}));
    let (a, b) = (Worker::new(&doc), Worker::new(&doc));
    let owner = Owner { engine: engine(&doc), host: MemoryHost::at(T0) };
    let bad = bad_token();
    for _ in 0..3 {
        assert_eq!(status(&a.request(Some(&owner), &head("192.0.2.9", Some(&bad)))), 401);
    }
    assert_eq!(a.host.counter("security_alerts"), 1, "one alert, in the worker whose failure started the lock");
    let good = keys().ed.sign(claims()).unwrap();
    let reply = reply_of(b.request(Some(&owner), &head("192.0.2.9", Some(&good))));
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers[0], ("retry-after".into(), "120".into()));
    assert_eq!(String::from_utf8_lossy(&reply.body), r#"{"error":"locked_out"}"#);
    // b remembers the lock: the next request is refused without asking the
    // owner and without verifying the token (as a local lockout would).
    let verified = b.host.counter("token_cache_misses");
    let StatePlan::Ask(pending) = b.engine.plan_state(&b.host, &head("192.0.2.9", Some(&bad)), true) else { panic!() };
    assert!(pending.query().is_empty(), "no round trip for a remembered lock: {:?}", pending.query());
    let reply = reply_of(b.engine.resume(&b.host, &head("192.0.2.9", Some(&bad)), pending, &StateAnswer::unavailable()));
    assert_eq!(reply.headers[0], ("retry-after".into(), "120".into()));
    assert_eq!(b.host.counter("token_cache_misses"), verified, "nothing verified while locked");
    assert_eq!(b.host.counter("authn_failures.bad_issuer"), 0);
    assert_eq!(b.host.counter("locked_out"), 2);
    // a learned it from the alert of the failure that started the lock.
    let StatePlan::Ask(pending) = a.engine.plan_state(&a.host, &head("192.0.2.9", Some(&good)), true) else { panic!() };
    assert!(pending.query().is_empty());
    // The lock ends on time in both.
    for w in [&a, &b] {
        w.host.advance_ms(120_000);
    }
    owner.host.advance_ms(120_000);
    assert_eq!(status(&b.request(Some(&owner), &head("192.0.2.9", Some(&good)))), 200, "lock over");
    assert_eq!(status(&b.request(Some(&owner), &head("192.0.2.10", Some(&good)))), 200, "other clients unaffected");
}

#[test]
fn an_unreachable_owner_fails_closed_with_503() {
    let doc = policy(json!({}));
    let worker = Worker::new(&doc);
    let token = keys().ed.sign(claims()).unwrap();
    let reply = reply_of(worker.request(None, &head("192.0.2.1", Some(&token))));
    assert_eq!(reply.status, 503);
    assert!(reply.headers.contains(&("retry-after".into(), "1".into())));

    // Rate limits only: the rate stage fails closed the same way.
    let no_lockout = json!({"jwt": {"providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD], "jwks": jwks_json()}]},
        "rate_limits": [{"name": "per-user", "key": "subject", "capacity": 3, "refill_per_minute": 1}]})
    .to_string();
    let worker = Worker::new(&no_lockout);
    assert_eq!(status(&worker.request(None, &head("192.0.2.1", Some(&token)))), 503);
}

#[test]
fn an_owner_with_another_policy_answers_nothing() {
    let doc = policy(json!({}));
    let other = policy(json!({"lockout": {"max_failures": 9, "window_seconds": 60, "lock_seconds": 120}}));
    let worker = Worker::new(&doc);
    let owner = Owner { engine: engine(&other), host: MemoryHost::at(T0) };
    let token = keys().ed.sign(claims()).unwrap();
    assert_eq!(status(&worker.request(Some(&owner), &head("192.0.2.1", Some(&token)))), 503);
    assert_eq!(owner.host.counter("state_policy_mismatch"), 1);
}

#[test]
fn pass_one_has_no_side_effects_and_pass_two_verifies_nothing_again() {
    let doc = policy(json!({}));
    let worker = Worker::new(&doc);
    let token = keys().ed.sign(claims()).unwrap();
    let StatePlan::Ask(pending) = worker.engine.plan_state(&worker.host, &head("192.0.2.1", Some(&token)), true) else {
        panic!()
    };
    assert!(worker.host.counters.borrow().is_empty(), "{:?}", worker.host.counters.borrow());
    assert!(worker.host.logs.borrow().is_empty());
    let q = pending.query();
    assert!(q.lockout && !q.failure);
    let rate = q.rate.as_ref().unwrap();
    assert_eq!(rate.subject.as_deref(), Some("alice"));
    assert_eq!(q.client_ip, Some("192.0.2.1".parse().unwrap()));
    assert!(!String::from_utf8_lossy(&q.to_bytes()).contains(&token[..20]), "no token in the query");

    let owner = Owner { engine: engine(&doc), host: MemoryHost::at(T0) };
    let answer = owner.engine.answer_state(&owner.host, q);
    let RequestVerdict::Forward { ctx, .. } = worker.engine.resume(&worker.host, &head("192.0.2.1", Some(&token)), pending, &answer)
    else {
        panic!()
    };
    assert!(ctx.remote_state);
    assert_eq!(worker.host.counter("requests_total"), 1);
    assert_eq!(worker.host.counter("token_cache_misses"), 1, "pass 1's verification is reused");
    assert_eq!(worker.host.counter("token_cache_hits"), 0);
}

#[test]
fn a_policy_without_state_stages_needs_no_round_trip() {
    let doc = json!({"jwt": {"providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD], "jwks": jwks_json()}]}}).to_string();
    let worker = Worker::new(&doc);
    let token = keys().ed.sign(claims()).unwrap();
    let StatePlan::Ask(pending) = worker.engine.plan_state(&worker.host, &head("192.0.2.1", Some(&token)), true) else {
        panic!()
    };
    assert!(pending.query().is_empty());
}

#[test]
fn wire_forms_round_trip_and_garbage_is_no_answer() {
    let q = StateQuery {
        policy: "abc".into(),
        client_ip: Some("2001:db8::1".parse().unwrap()),
        lockout: true,
        rate: Some(RateInputs { subject: Some("s".into()), roles: vec!["r".into()], rule: None, headers: vec![("x-k".into(), "v".into())] }),
        ..StateQuery::default()
    };
    assert_eq!(StateQuery::from_bytes(&q.to_bytes()), Some(q));
    assert_eq!(StateQuery::from_bytes(b"{\"policy\":\"a\",\"extra\":1}"), None);
    let a = StateAnswer {
        lock: Some(LockAnswer::Open),
        failure: Some(FailureAnswer::Counted { alert: None }),
        rate: Some(RateAnswer::Limited { limit: "l".into(), retry_after_secs: 3, headers: vec![], shadow: false }),
    };
    assert_eq!(StateAnswer::from_bytes(&a.to_bytes()), a);
    assert_eq!(StateAnswer::from_bytes(b"<html>502</html>"), StateAnswer::unavailable());
}

#[test]
fn response_tokens_are_charged_at_the_owner() {
    let doc = policy(json!({"rate_limits": [
        {"name": "llm", "key": "subject", "cost": "response_tokens", "capacity": 100, "refill_per_minute": 1}]}));
    let worker = Worker::new(&doc);
    let owner = Owner { engine: engine(&doc), host: MemoryHost::at(T0) };
    let token = keys().ed.sign(claims()).unwrap();
    let req = head("192.0.2.1", Some(&token));
    let RequestVerdict::Forward { mut ctx, .. } = worker.request(Some(&owner), &req) else { panic!() };
    ctx.response_tokens = Some(150);
    worker.engine.on_log(&worker.host, &ctx, 200);
    let charge = worker.engine.charge_query(&ctx).expect("a charge for the owner");
    assert_eq!(charge.charge.as_ref().map(|c| c.tokens), Some(150));
    owner.engine.answer_state(&owner.host, &StateQuery::from_bytes(&charge.to_bytes()).unwrap());
    assert_eq!(status(&worker.request(Some(&owner), &req)), 429, "the budget is in debt at the owner");
    assert_eq!(worker.engine.charge_query(&RequestContext::default()), None);
}
