//! The isolate host and body driving, natively.

use super::*;
use crate::engine::RequestVerdict;
use crate::engine::RequestHead;

fn clock() -> u64 {
    1_700_000_000_000
}

fn quiet(_: LogLevel, _: &str) {}

fn call(upstream: &str, path: &str) -> OutboundRequest {
    OutboundRequest {
        upstream: upstream.into(),
        authority: "a".into(),
        method: "POST".into(),
        path: path.into(),
        headers: vec![],
        body: vec![],
        timeout_ms: 1000,
    }
}

#[test]
fn outbound_urls_are_a_base_url_plus_the_path() {
    let cases: [(&str, &str, Option<&str>); 7] = [
        ("https://idp.example.test", "/.well-known/jwks.json", Some("https://idp.example.test/.well-known/jwks.json")),
        ("https://idp.example.test/", "/jwks", Some("https://idp.example.test/jwks")),
        ("http://127.0.0.1:9000", "v1/logs", Some("http://127.0.0.1:9000/v1/logs")),
        ("idp", "/jwks", None),
        ("https://", "/jwks", None),
        ("https://idp.example.test/base", "/jwks", None),
        ("ftp://idp.example.test", "/jwks", None),
    ];
    for (upstream, path, want) in cases {
        assert_eq!(outbound_url(&call(upstream, path)).as_deref(), want, "{upstream} {path}");
    }
}

#[test]
fn request_urls_split_into_authority_and_path() {
    let cases: [(&str, Option<(&str, &str)>); 5] = [
        ("https://chat.example.test/api/chat?x=1#frag", Some(("chat.example.test", "/api/chat?x=1"))),
        ("http://127.0.0.1:8080", Some(("127.0.0.1:8080", "/"))),
        ("http://h?q=1", Some(("h", "/?q=1"))),
        ("/relative", None),
        ("http:///path", None),
    ];
    for (url, want) in cases {
        let got = split_url(url);
        assert_eq!(got.as_ref().map(|(a, p)| (a.as_str(), p.as_str())), want, "{url}");
    }
}

#[test]
fn codings_the_runtime_decoded_are_hidden_from_the_engine() {
    let h = |v: &str| vec![("content-type".to_string(), "text/plain".to_string()), ("content-encoding".to_string(), v.to_string())];
    let (seen, decoded) = runtime_view(&h("gzip"));
    assert_eq!((seen.len(), decoded), (1, true));
    let (_, decoded) = runtime_view(&h("BR"));
    assert!(decoded);
    // Not decoded by the runtime: the engine decodes it or refuses the body.
    let (seen, decoded) = runtime_view(&h("deflate"));
    assert_eq!((seen.len(), decoded), (2, false));
}

#[test]
fn calls_are_queued_with_ids_from_one_refused_without_a_url_and_bounded() {
    let host = IsolateHost::new(clock, quiet);
    assert_eq!(host.http_call(&call("collector", "/v1/logs")), Err(CallError::UnknownUpstream));
    assert_eq!(host.http_call(&call("http://c", "/a")), Ok(1));
    assert_eq!(host.http_call(&call("http://c", "/b")), Ok(2));
    let taken = host.take_calls();
    assert_eq!(taken.iter().map(|(id, r)| (*id, r.path.as_str())).collect::<Vec<_>>(), vec![(1, "/a"), (2, "/b")]);
    assert!(host.take_calls().is_empty());
    for _ in 0..MAX_QUEUED_CALLS {
        assert!(host.http_call(&call("http://c", "/x")).is_ok());
    }
    assert_eq!(host.http_call(&call("http://c", "/x")), Err(CallError::Refused));
    host.count("a", 2);
    host.count("a", 1);
    assert_eq!(host.counters(), vec![("a".to_string(), 3)]);
    assert_eq!(host.now_ms(), clock());
}

fn pii_engine() -> Engine {
    Engine::from_json(br#"{"pii": {"max_body_bytes": 64}}"#).unwrap()
}

fn exchange(engine: &Engine, host: &IsolateHost, headers: &[(&str, &str)]) -> Exchange {
    let head = RequestHead {
        method: "POST".into(),
        path: "/api/chat".into(),
        authority: "chat.example.test".into(),
        headers: headers.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        downstream: Some("192.0.2.1".into()),
        body_follows: true,
    };
    match engine.on_request_headers(host, &head, true) {
        RequestVerdict::Forward { ctx, .. } => Exchange::new(ctx),
        other => panic!("expected forward, got {other:?}"),
    }
}

fn emitted(c: Chunk) -> Vec<u8> {
    match c {
        Chunk::Emit(b) => b,
        Chunk::Reply(r) => panic!("unexpected reply {}", r.status),
    }
}

#[test]
fn request_bodies_are_held_until_the_end_then_redacted_whole() {
    let (engine, host) = (pii_engine(), IsolateHost::new(clock, quiet));
    let mut ex = exchange(&engine, &host, &[("content-type", "text/plain"), ("content-length", "30")]);
    assert!(ex.inspects_request_body());
    assert_eq!(emitted(ex.request_chunk(&engine, &host, b"mail jane.d", false)), b"");
    let out = emitted(ex.request_chunk(&engine, &host, b"oe@example.com now", true));
    assert!(!String::from_utf8_lossy(&out).contains("jane.doe@example.com"), "{}", String::from_utf8_lossy(&out));
    assert!(out.starts_with(b"mail ") && out.ends_with(b" now"));
}

#[test]
fn an_oversized_request_body_gets_the_engines_413() {
    let (engine, host) = (pii_engine(), IsolateHost::new(clock, quiet));
    let mut ex = exchange(&engine, &host, &[("content-type", "text/plain"), ("transfer-encoding", "chunked")]);
    match ex.request_chunk(&engine, &host, &[b'a'; 65], false) {
        Chunk::Reply(r) => assert_eq!(r.status, 413),
        Chunk::Emit(_) => panic!("expected 413"),
    }
    // Later chunks go nowhere.
    assert_eq!(emitted(ex.request_chunk(&engine, &host, b"more", true)), b"");
}

#[test]
fn event_streams_are_redacted_chunk_by_chunk_and_gzip_is_not_decoded_twice() {
    let (engine, host) = (pii_engine(), IsolateHost::new(clock, quiet));
    let mut ex = exchange(&engine, &host, &[]);
    let headers = [("content-type".to_string(), "text/event-stream".to_string()), ("content-encoding".to_string(), "gzip".to_string())];
    let (verdict, mode) = ex.response_headers(&engine, &host, 200, &headers);
    assert_eq!(mode, ResponseMode::Stream);
    assert!(verdict.edits.remove.contains(&"content-encoding".to_string()));
    let stream = b"data: write to jane.doe@example.com\n\ndata: [DONE]\n\n";
    let mut out = Vec::new();
    for (i, piece) in stream.chunks(5).enumerate() {
        out.extend(emitted(ex.response_chunk(&engine, &host, piece, false)));
        assert!(out.len() <= (i + 1) * 5, "never more out than in");
    }
    out.extend(emitted(ex.response_chunk(&engine, &host, b"", true)));
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("jane.doe"), "{text}");
    assert!(text.starts_with("data: write to ") && text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[test]
fn responses_the_engine_does_not_inspect_pass() {
    let (engine, host) = (pii_engine(), IsolateHost::new(clock, quiet));
    let mut ex = exchange(&engine, &host, &[]);
    let (_, mode) = ex.response_headers(&engine, &host, 200, &[("content-type".into(), "image/png".into())]);
    assert_eq!(mode, ResponseMode::Pass);
    ex.log(&engine, &host, 200);
    ex.log(&engine, &host, 200);
}

#[test]
fn with_remote_state_the_exchange_hands_back_the_token_charge_once() {
    use crate::engine::{StateAnswer, StatePlan, StateQuery};
    use crate::jwt::tests::{claims, jwks_json, keys, AUD, ISS};
    use jwt_simple::prelude::*;
    let doc = serde_json::json!({
        "jwt": {"providers": [{"name": "corp", "issuer": ISS, "audiences": [AUD], "jwks": jwks_json()}]},
        "rate_limits": [{"name": "llm", "key": "subject", "cost": "response_tokens", "capacity": 1000, "refill_per_minute": 10}]
    })
    .to_string();
    let now = || crate::jwt::tests::NOW * 1000;
    let (engine, host) = (Engine::from_json(doc.as_bytes()).unwrap(), IsolateHost::new(now, quiet));
    let (owner, owner_host) = (Engine::from_json(doc.as_bytes()).unwrap(), IsolateHost::new(now, quiet));
    let auth = format!("Bearer {}", keys().ed.sign(claims()).unwrap());
    let head = RequestHead {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        authority: "a".into(),
        headers: vec![("authorization".into(), auth)],
        downstream: Some("192.0.2.1".into()),
        body_follows: false,
    };
    let StatePlan::Ask(pending) = engine.plan_state(&host, &head, true) else { panic!("no wait expected") };
    let answer = owner.answer_state(&owner_host, pending.query());
    let RequestVerdict::Forward { ctx, .. } = engine.resume(&host, &head, pending, &answer) else { panic!("expected forward") };
    let mut ex = Exchange::new(ctx);
    ex.response_headers(&engine, &host, 200, &[("content-type".into(), "application/json".into())]);
    let _ = ex.response_chunk(&engine, &host, br#"{"usage":{"total_tokens":42}}"#, true);
    let charge = ex.log(&engine, &host, 200).expect("a charge for the state object");
    let query = StateQuery::from_bytes(&charge).unwrap();
    assert_eq!(query.charge.as_ref().map(|c| c.tokens), Some(42));
    assert_eq!(owner.answer_state(&owner_host, &query), StateAnswer::default(), "a charge needs no answer");
    assert_eq!(ex.log(&engine, &host, 200), None, "only once");
}
