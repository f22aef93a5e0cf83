//! Proves the harness against a small fixture plugin written with the Rust
//! proxy-wasm SDK 0.2.5 (wasm-tests/fixture, behaviour listed in its lib.rs).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasm_tests::harness::{
    workspace_root, Action, CallState, Clock, HarnessError, LogLevel, MetricValue, Plugin, Request, Response,
    Sandbox, SharedData, StreamType,
};

/// Builds the fixture once per test binary (cargo caches across runs).
fn fixture() -> Arc<Plugin> {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target/wasm-fixture");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip1", "--manifest-path"])
            .arg(root.join("wasm-tests/fixture/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .env_remove("RUSTFLAGS")
            .status()
            .expect("run cargo to build the fixture");
        assert!(status.success(), "building the fixture failed");
        target_dir.join("wasm32-wasip1/release/harness_fixture.wasm")
    });
    Plugin::cached(path).expect("the fixture compiles and links")
}

fn sandbox() -> Sandbox {
    Sandbox::new(&fixture(), "mode=ok").expect("the fixture starts")
}

fn body_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn starts_configures_and_arms_the_timer() {
    let sb = sandbox();
    assert!(sb.logged("vm start, vm config 0 bytes"));
    assert!(sb.logged("configured with 7 bytes: mode=ok"));
    assert_eq!(sb.tick_period(), Some(Duration::from_secs(1)));
    assert_eq!(sb.metric("fixture_requests_total"), Some(0));
    assert_eq!(sb.metrics().get("fixture_body_size"), Some(&MetricValue::Histogram(vec![])));
    assert!(sb.unimplemented_calls().is_empty());
}

#[test]
fn a_refused_configuration_is_an_error_with_the_reason_logged() {
    match Sandbox::new(&fixture(), "mode=refuse") {
        Err(HarnessError::ConfigureRefused { logs }) => assert_eq!(
            logs.last(),
            Some(&(
                LogLevel::Error,
                "invalid configuration: field `mode` must not be \"refuse\"".to_string()
            ))
        ),
        other => panic!("expected ConfigureRefused, got {other:?}"),
    }
}

#[test]
fn request_headers_are_edited_then_forwarded() {
    let mut sb = sandbox();
    let mut stream = sb.http().unwrap();
    let request = Request::get("/")
        .header("x-replace", "old")
        .add_header("x-replace", "older")
        .header("X-Remove-Me", "gone");
    let sent = stream.send_request(&request).unwrap();
    assert_eq!(sent.headers, Action::Continue);
    let forwarded = stream.forwarded_request_headers().unwrap();
    assert_eq!(forwarded.get(":method"), Some("GET"));
    assert_eq!(forwarded.get(":authority"), Some("api.example.test"));
    assert_eq!(forwarded.get_all("x-replace"), vec!["new"]);
    assert_eq!(forwarded.get("x-fixture"), Some("1"));
    assert!(!forwarded.contains("x-remove-me"));
    let id = stream.id();
    assert!(sb.logged(&format!("ctx {id} request headers n=7 eos=true")));
    assert_eq!(sb.metric("fixture_requests_total"), Some(1));
    assert_eq!(sb.metric("fixture_active_streams"), Some(1));
    sb.finish(id).unwrap();
    assert_eq!(sb.metric("fixture_active_streams"), Some(0));
    assert!(sb.stream(id).deleted());
    assert!(sb.logged(&format!("ctx {id} done, status none")));
}

#[test]
fn body_in_5_byte_chunks_is_buffered_while_paused_then_rewritten() {
    let mut sb = sandbox();
    let mut stream = sb.http().unwrap();
    let body = b"my secret is a secret, ok?";
    let request = Request::post("/chat").body(body.to_vec());
    // Headers first, without end of stream.
    assert_eq!(stream.request_headers(&[(":method", "POST"), (":path", "/chat")], false).unwrap(), Action::Continue);
    let mut actions = Vec::new();
    for (index, chunk) in body.chunks(5).enumerate() {
        let last = (index + 1) * 5 >= body.len();
        actions.push(stream.request_body(chunk, last).unwrap());
        if !last {
            // Envoy holds the chunks and shows the module all of them.
            assert_eq!(stream.buffered_request_body(), body[..(index + 1) * 5].to_vec());
            assert!(stream.forwarded_request_body().is_empty());
            assert!(stream.request_paused());
        }
    }
    assert_eq!(actions.len(), 6);
    assert!(actions[..5].iter().all(|a| *a == Action::Pause));
    assert_eq!(actions[5], Action::Continue);
    assert_eq!(body_of(&stream.forwarded_request_body()), "my ****** is a ******, ok?");
    assert!(stream.buffered_request_body().is_empty());
    assert!(sb.logged("request body 26 bytes"));
    assert_eq!(sb.metrics().get("fixture_body_size"), Some(&MetricValue::Histogram(vec![26])));

    // The same through the Request builder.
    let mut stream = sb.http().unwrap();
    let sent = stream.send_request(&request.chunked(5)).unwrap();
    assert_eq!(sent.body, actions);
    assert_eq!(body_of(&stream.forwarded_request_body()), "my ****** is a ******, ok?");
}

#[test]
fn set_buffer_bytes_past_the_end_appends() {
    let mut sb = sandbox();
    let mut stream = sb.http().unwrap();
    stream.send_request(&Request::post("/append").body("abc").chunked(2)).unwrap();
    assert_eq!(body_of(&stream.forwarded_request_body()), "abc!");
}

#[test]
fn local_reply_from_headers_ends_the_request_and_runs_response_hooks() {
    let mut sb = sandbox();
    let mut stream = sb.http().unwrap();
    let sent = stream
        .send_request(&Request::post("/chat").header("x-deny", "1").body("hello").chunked(2))
        .unwrap();
    assert_eq!(sent.headers, Action::Pause);
    assert_eq!(sent.body, vec![Action::NotDelivered; 3]);
    let reply = stream.local_response().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, b"denied");
    assert_eq!(reply.headers.get("x-denied-by"), Some("fixture"));
    assert_eq!(reply.grpc_status, -1);
    assert_eq!(stream.forwarded_request_headers(), None);
    assert!(stream.forwarded_request_body().is_empty());
    // Envoy runs the local reply through the filter's own response hooks.
    let to_client = stream.forwarded_response_headers().unwrap();
    assert_eq!(to_client.get(":status"), Some("403"));
    assert_eq!(to_client.get("x-denied-by"), Some("fixture"));
    assert_eq!(to_client.get("x-fixture-response"), Some("1"));
    assert_eq!(to_client.get("content-length"), None);
    assert_eq!(body_of(&stream.forwarded_response_body()), "denied\n-- filtered");
    // The upstream never answers a request it never got.
    assert_eq!(stream.response_headers(&[(":status", "200")], true).unwrap(), Action::NotDelivered);
    stream.finish().unwrap();
    assert!(sb.logged("status 403"));
}

#[test]
fn local_reply_can_skip_the_filter_when_asked() {
    let mut sb = Sandbox::builder(&fixture())
        .config("mode=ok")
        .local_reply_through_filter(false)
        .start()
        .unwrap();
    let mut stream = sb.http().unwrap();
    stream.send_request(&Request::get("/").header("x-deny", "1")).unwrap();
    let to_client = stream.forwarded_response_headers().unwrap();
    assert_eq!(to_client.get("x-fixture-response"), None);
    assert_eq!(to_client.get("content-length"), Some("6"));
    assert_eq!(to_client.get("content-type"), Some("text/plain"));
    assert_eq!(stream.forwarded_response_body(), b"denied");
}

#[test]
fn local_reply_from_the_body_hook() {
    let mut sb = sandbox();
    let mut stream = sb.http().unwrap();
    let sent = stream.send_request(&Request::post("/chat").body("please block me").chunked(5)).unwrap();
    assert_eq!(sent.headers, Action::Continue);
    assert_eq!(sent.body, vec![Action::Pause, Action::Pause, Action::Pause]);
    let reply = stream.local_response().unwrap();
    assert_eq!((reply.status, reply.body.as_slice()), (400, b"blocked body".as_slice()));
    // Headers went upstream before the body was judged; the body did not.
    assert!(stream.forwarded_request_headers().is_some());
    assert!(stream.forwarded_request_body().is_empty());
}

#[test]
fn http_call_holds_the_request_until_the_response_arrives() {
    let mut sb = Sandbox::builder(&fixture()).config("mode=ok").upstreams(&["idp"]).start().unwrap();
    let mut stream = sb.http().unwrap();
    let id = stream.id();
    assert_eq!(stream.send_request(&Request::get("/call")).unwrap().headers, Action::Pause);
    assert_eq!(stream.forwarded_request_headers(), None);
    let calls = sb.calls().to_vec();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.upstream, "idp");
    assert_eq!(call.context_id, id);
    assert_eq!(call.headers.get(":path"), Some("/keys"));
    assert_eq!(call.headers.get("x-trace"), Some("t1"));
    assert_eq!(call.body, b"ping");
    assert_eq!(call.timeout_ms, 5000);
    assert_eq!(call.state, CallState::Pending);

    sb.respond_to_call(call.token, 200, &[("content-type", "application/json")], b"KEYS").unwrap();
    let stream = sb.stream(id);
    assert_eq!(stream.forwarded_request_headers().unwrap().get("x-call-body"), Some("KEYS"));
    assert_eq!(stream.resume_count(StreamType::HttpRequest), 1);
    assert!(!stream.request_paused());
    assert_eq!(sb.calls()[0].state, CallState::Answered);
    assert_eq!(
        sb.respond_to_call(call.token, 200, &[], b""),
        Err(HarnessError::CallNotPending {
            token: call.token,
            state: CallState::Answered
        })
    );
}

#[test]
fn failed_and_non_200_calls() {
    let mut sb = sandbox();
    let failed = sb.http().unwrap().send_request(&Request::get("/call")).map(|_| ()).unwrap();
    let _ = failed;
    let token = sb.calls()[0].token;
    sb.fail_call(token).unwrap();
    let reply = sb.stream(2).local_response().unwrap();
    assert_eq!((reply.status, reply.body.as_slice()), (503, b"call failed".as_slice()));

    let mut stream = sb.http().unwrap();
    let id = stream.id();
    stream.send_request(&Request::get("/call")).unwrap();
    let token = sb.calls()[1].token;
    sb.respond_to_call(token, 404, &[], b"nope").unwrap();
    assert_eq!(sb.stream(id).local_response().map(|r| r.status), Some(502));
}

#[test]
fn calls_of_a_finished_stream_are_cancelled() {
    let mut sb = sandbox();
    let mut stream = sb.http().unwrap();
    stream.send_request(&Request::get("/call")).unwrap();
    stream.finish().unwrap();
    let token = sb.calls()[0].token;
    assert_eq!(
        sb.respond_to_call(token, 200, &[], b""),
        Err(HarnessError::CallNotPending {
            token,
            state: CallState::Cancelled
        })
    );
}

#[test]
fn unknown_cluster_is_refused_like_envoy() {
    let mut sb = Sandbox::builder(&fixture()).config("mode=ok").upstreams(&["other"]).start().unwrap();
    let mut stream = sb.http().unwrap();
    stream.send_request(&Request::get("/call")).unwrap();
    assert_eq!(stream.local_response().map(|r| r.status), Some(500));
    assert!(sb.calls().is_empty());
}

#[test]
fn shared_data_cas_increments_and_retries_on_mismatch() {
    let mut sb = sandbox();
    let hits = |sb: &mut Sandbox| {
        let mut stream = sb.http().unwrap();
        stream.send_request(&Request::get("/shared")).unwrap();
        let headers = stream.forwarded_request_headers();
        let local = stream.local_response().map(|r| r.status);
        (
            headers.as_ref().and_then(|h| h.get("x-hits").map(str::to_string)),
            headers.as_ref().and_then(|h| h.get("x-attempts").map(str::to_string)),
            local,
        )
    };
    assert_eq!(hits(&mut sb), (Some("1".into()), Some("1".into()), None));
    assert_eq!(hits(&mut sb), (Some("2".into()), Some("1".into()), None));
    assert_eq!(sb.shared_data("hits"), Some(b"2".to_vec()));
    sb.force_cas_mismatches(2);
    assert_eq!(hits(&mut sb), (Some("3".into()), Some("3".into()), None));
    assert!(sb.logged("cas mismatch on hits, attempt 2"));
    sb.force_cas_mismatches(5);
    assert_eq!(hits(&mut sb), (None, None, Some(503)));
    assert_eq!(sb.shared_data("hits"), Some(b"3".to_vec()));
    let (_, cas) = sb.shared().get("hits").unwrap();
    assert!(cas > 0);
}

#[test]
fn two_sandboxes_share_data_and_metrics_like_two_workers() {
    let shared = SharedData::new();
    let mut a = Sandbox::new_with_shared(&fixture(), "mode=ok", shared.clone()).unwrap();
    let mut b = Sandbox::new_with_shared(&fixture(), "mode=ok", shared.clone()).unwrap();
    a.http().unwrap().send_request(&Request::get("/shared")).unwrap();
    b.http().unwrap().send_request(&Request::get("/shared")).unwrap();
    a.http().unwrap().send_request(&Request::get("/shared")).unwrap();
    let mut last = b.http().unwrap();
    last.send_request(&Request::get("/shared")).unwrap();
    assert_eq!(last.forwarded_request_headers().unwrap().get("x-hits"), Some("4"));
    assert_eq!(shared.value("hits"), Some(b"4".to_vec()));
    assert_eq!(a.metric("fixture_requests_total"), Some(4));
    assert_eq!(b.metric("fixture_requests_total"), Some(4));
}

#[test]
fn tick_runs_on_tick_and_the_clock_is_settable() {
    let mut sb = sandbox();
    sb.tick().unwrap();
    assert_eq!(sb.shared_data("ticks"), Some(b"1".to_vec()));
    let start = sb.now();
    assert_eq!(sb.advance_ticking(Duration::from_millis(3500)).unwrap(), 3);
    assert_eq!(sb.shared_data("ticks"), Some(b"4".to_vec()));
    assert_eq!(sb.now().duration_since(start).unwrap(), Duration::from_millis(3500));
    assert!(sb.logged("tick 4"));

    let mut stream = sb.http().unwrap();
    stream.send_request(&Request::get("/time")).unwrap();
    let expected = (Clock::DEFAULT_START_SECS + 3).to_string();
    assert_eq!(stream.forwarded_request_headers().unwrap().get("x-now-secs"), Some(expected.as_str()));
}

#[test]
fn tick_without_a_timer_is_an_error() {
    let mut sb = Sandbox::builder(&fixture()).instantiate().unwrap();
    assert_eq!(sb.tick(), Err(HarnessError::TickNotArmed));
}

#[test]
fn properties_come_from_sandbox_and_stream() {
    let mut sb = Sandbox::builder(&fixture())
        .config("mode=ok")
        .plugin_name("chatguard")
        .property(&["source", "address"], "10.0.0.7:5555")
        .start()
        .unwrap();
    let mut stream = sb.http().unwrap();
    stream.set_property(&["request", "id"], "req-42").unwrap();
    stream.send_request(&Request::get("/props")).unwrap();
    let headers = stream.forwarded_request_headers().unwrap();
    assert_eq!(headers.get("x-source"), Some("10.0.0.7:5555"));
    assert_eq!(headers.get("x-request-id"), Some("req-42"));
    assert_eq!(headers.get("x-plugin-name"), Some("chatguard"));

    let mut other = sb.http().unwrap();
    other.send_request(&Request::get("/props")).unwrap();
    assert_eq!(other.forwarded_request_headers().unwrap().get("x-request-id"), Some("none"));
}

#[test]
fn whole_map_get_and_set() {
    let mut sb = sandbox();
    let mut stream = sb.http().unwrap();
    stream.send_request(&Request::get("/map").header("a", "1")).unwrap();
    let headers = stream.forwarded_request_headers().unwrap();
    let names: Vec<&str> = headers.iter().map(|(k, _)| k).collect();
    // Fixture edits (x-fixture, x-replace) come before the reversal.
    assert_eq!(
        names,
        vec!["x-replace", "x-fixture", "a", ":scheme", ":authority", ":path", ":method", "x-count"]
    );
    assert_eq!(headers.get("x-count"), Some("7"));
}

#[test]
fn response_body_is_buffered_and_appended() {
    let mut sb = sandbox();
    let mut stream = sb.http().unwrap();
    stream.send_request(&Request::get("/")).unwrap();
    let sent = stream.send_response(&Response::new(200).body("hello").chunked(2)).unwrap();
    assert_eq!(sent.headers, Action::Continue);
    assert_eq!(sent.body, vec![Action::Pause, Action::Pause, Action::Continue]);
    let to_client = stream.forwarded_response_headers().unwrap();
    assert_eq!(to_client.get("x-fixture-response"), Some("1"));
    assert_eq!(to_client.get("content-length"), None);
    assert_eq!(body_of(&stream.forwarded_response_body()), "hello\n-- filtered");
    stream.finish().unwrap();
    assert!(sb.logged("status 200"));
}

#[test]
fn trailers_end_the_body_without_end_of_stream() {
    let mut sb = sandbox();
    let mut stream = sb.http().unwrap();
    let request = Request::post("/chat").body("a secret").trailer("grpc-status", "0").chunked(4);
    let sent = stream.send_request(&request).unwrap();
    // The fixture waits for end_of_stream in the body hook, which never comes
    // when trailers follow: the trailers hook's Continue releases the body
    // unmasked. (A real filter must finish body processing in on_trailers.)
    assert_eq!(sent.body, vec![Action::Pause, Action::Pause]);
    assert_eq!(sent.trailers, Some(Action::Continue));
    assert_eq!(body_of(&stream.forwarded_request_body()), "a secret");
    let trailers = stream.forwarded_request_trailers().unwrap();
    assert_eq!(trailers.get("x-fixture-trailer"), Some("1"));
}

#[test]
fn response_hooks_before_the_request_went_upstream_are_a_test_bug() {
    let mut sb = sandbox();
    let mut stream = sb.http().unwrap();
    stream.send_request(&Request::get("/call")).unwrap();
    let id = stream.id();
    assert_eq!(
        stream.response_headers(&[(":status", "200")], true),
        Err(HarnessError::ResponseBeforeRequest(id))
    );
}

#[test]
fn fixture_imports_only_what_envoy_provides() {
    let plugin = fixture();
    for import in plugin.imports() {
        assert!(
            import.starts_with("env.proxy_") || import.starts_with("wasi_snapshot_preview1."),
            "{import}"
        );
    }
}

// ---- hand-assembled modules for the linker's edge cases -------------------

fn section(id: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![id, content.len() as u8];
    out.extend_from_slice(content);
    out
}

fn name(s: &str) -> Vec<u8> {
    let mut out = vec![s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// A module importing `module.field: () -> i32`; with `abi`, it also exports
/// `proxy_abi_version_0_2_1` and an `_initialize` that calls the import.
fn module_importing(module: &str, field: &str, abi: bool) -> Vec<u8> {
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    wasm.extend(section(1, &[2, 0x60, 0, 1, 0x7f, 0x60, 0, 0]));
    let mut import = vec![1];
    import.extend(name(module));
    import.extend(name(field));
    import.extend([0, 0]);
    wasm.extend(section(2, &import));
    if abi {
        wasm.extend(section(3, &[2, 1, 1]));
        let mut exports = vec![2];
        exports.extend(name("proxy_abi_version_0_2_1"));
        exports.extend([0, 1]);
        exports.extend(name("_initialize"));
        exports.extend([0, 2]);
        wasm.extend(section(7, &exports));
        wasm.extend(section(10, &[2, 2, 0, 0x0b, 5, 0, 0x10, 0, 0x1a, 0x0b]));
    }
    wasm
}

#[test]
fn an_import_from_an_unknown_module_fails_loudly() {
    match Plugin::from_bytes("handmade.wasm", &module_importing("foo", "bar", false)) {
        Err(HarnessError::Link { message, .. }) => assert!(message.contains("`foo.bar`"), "{message}"),
        other => panic!("expected a link error, got {other:?}"),
    }
}

#[test]
fn unknown_proxy_functions_are_stubbed_as_unimplemented() {
    let plugin = Plugin::from_bytes("handmade.wasm", &module_importing("env", "proxy_from_the_future", true)).unwrap();
    let sb = Sandbox::builder(&plugin).instantiate().unwrap();
    assert_eq!(sb.unimplemented_calls(), ["proxy_from_the_future".to_string()]);
}

#[test]
fn a_module_without_the_abi_marker_is_refused() {
    let plugin = Plugin::from_bytes("handmade.wasm", &module_importing("env", "proxy_log_x", false)).unwrap();
    assert_eq!(
        Sandbox::builder(&plugin).instantiate().map(|_| ()),
        Err(HarnessError::AbiVersion { found: vec![] })
    );
}
