//! The HTTP/1.1 server under the kit's upstream, collector and JWKS server:
//! thread per connection, keep-alive, every request recorded, and a switch to
//! go down (stop listening, drop open connections) and come back on the same port.

use super::wire::{self, Head};
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a server connection may sit idle before the server closes it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A request as one of the kit's servers received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Request target as sent, query string included.
    pub path: String,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The whole body, de-chunked.
    pub body: Vec<u8>,
    /// Status the server answered, `None` if it hung or closed instead.
    pub status: Option<u16>,
    /// When the request was fully read.
    pub at: Instant,
}

impl Received {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::find_header(&self.headers, name)
    }
    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body parsed as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// What a server sends back for one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Body,
    pub(crate) after: Duration,
    pub(crate) close: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// Sent with Content-Length.
    Fixed(Vec<u8>),
    /// Sent with chunked transfer encoding, one flushed chunk per piece, with
    /// `delay` between pieces.
    Streamed { pieces: Vec<Vec<u8>>, delay: Duration },
}

impl Reply {
    /// A reply with `status` and an empty body.
    pub fn new(status: u16) -> Self {
        Reply { status, headers: Vec::new(), body: Body::Fixed(Vec::new()), after: Duration::ZERO, close: false }
    }
    /// A JSON reply.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Reply::new(status).header("content-type", "application/json").body(value.to_string())
    }
    /// A plain-text reply.
    pub fn text(status: u16, text: &str) -> Self {
        Reply::new(status).header("content-type", "text/plain").body(text)
    }
    /// `plain` gzip-compressed, with `content-encoding: gzip` and `content_type`.
    pub fn gzip(status: u16, content_type: &str, plain: &[u8]) -> Self {
        use flate2::{write::GzEncoder, Compression};
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(plain);
        let gz = enc.finish().unwrap_or_default();
        Reply::new(status).header("content-type", content_type).header("content-encoding", "gzip").body(gz)
    }
    /// A chunked response whose `pieces` are written and flushed one by one,
    /// sleeping `delay` between them.
    pub fn stream(status: u16, content_type: &str, pieces: Vec<Vec<u8>>, delay: Duration) -> Self {
        let mut r = Reply::new(status).header("content-type", content_type);
        r.body = Body::Streamed { pieces, delay };
        r
    }
    /// A `text/event-stream` 200 carrying `body` cut into pieces of
    /// `chunk_bytes` bytes, `delay` apart (values in it get split across chunks).
    pub fn sse(body: &str, chunk_bytes: usize, delay: Duration) -> Self {
        let pieces = body.as_bytes().chunks(chunk_bytes.max(1)).map(<[u8]>::to_vec).collect();
        Reply::stream(200, "text/event-stream", pieces, delay).header("cache-control", "no-cache")
    }
    /// An OpenAI-style chat completion (200 JSON) reporting `usage.total_tokens`.
    pub fn usage(total_tokens: u64) -> Self {
        let prompt = total_tokens / 2;
        Reply::json(
            200,
            &serde_json::json!({
                "id": "chatcmpl-e2e", "object": "chat.completion", "model": "e2e",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": total_tokens - prompt,
                          "total_tokens": total_tokens}
            }),
        )
    }
    /// The default reply: 200 JSON echoing method, path, headers and body.
    pub fn echo(req: &Received) -> Self {
        let mut headers = serde_json::Map::new();
        for (k, v) in &req.headers {
            let joined = match headers.get(k).and_then(|p| p.as_str()) {
                Some(prev) => format!("{prev}, {v}"),
                None => v.clone(),
            };
            headers.insert(k.clone(), joined.into());
        }
        Reply::json(
            200,
            &serde_json::json!({"method": req.method, "path": req.path,
                                "headers": headers, "body": req.text()}),
        )
    }
    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
    /// Replaces the body (sent with Content-Length).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Fixed(body.into());
        self
    }
    /// Waits `delay` before answering.
    pub fn after(mut self, delay: Duration) -> Self {
        self.after = delay;
        self
    }
    /// Closes the connection after this reply (`connection: close`).
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    fn write_to(&self, w: &mut TcpStream, stop: impl Fn() -> bool) -> io::Result<()> {
        if !self.after.is_zero() {
            sleep_unless(self.after, &stop);
        }
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.close {
            head.push_str("connection: close\r\n");
        }
        match &self.body {
            Body::Fixed(body) => {
                if !self.headers.iter().any(|(k, _)| k == "content-length") {
                    head.push_str(&format!("content-length: {}\r\n", body.len()));
                }
                head.push_str("\r\n");
                let mut out = head.into_bytes();
                out.extend_from_slice(body);
                w.write_all(&out)?;
            }
            Body::Streamed { pieces, delay } => {
                head.push_str("transfer-encoding: chunked\r\n\r\n");
                w.write_all(head.as_bytes())?;
                w.flush()?;
                for (i, piece) in pieces.iter().enumerate() {
                    if i > 0 && !delay.is_zero() {
                        sleep_unless(*delay, &stop);
                    }
                    w.write_all(&wire::chunk(piece))?;
                    w.flush()?;
                }
                w.write_all(b"0\r\n\r\n")?;
            }
        }
        w.flush()
    }
}

/// Sleeps `d`, waking early when `stop` turns true.
fn sleep_unless(d: Duration, stop: &impl Fn() -> bool) {
    let end = Instant::now() + d;
    while !stop() {
        let now = Instant::now();
        if now >= end {
            return;
        }
        thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// What a handler decides for a request.
pub(crate) enum Action {
    Reply(Reply),
    /// Read the request, never answer; the connection stays open until the
    /// server goes down or is dropped.
    Hang,
}

pub(crate) type Handler = Arc<dyn Fn(&Received) -> Action + Send + Sync>;

struct Shared {
    port: u16,
    handler: Handler,
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
    stop: AtomicBool,
    down: AtomicBool,
    listening: AtomicBool,
    /// Open connections by id, so going down can reset them.
    conns: Mutex<Vec<(u64, TcpStream)>>,
    next_conn: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn halted(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.down.load(Ordering::SeqCst)
    }
    fn drop_connections(&self) {
        for (_, c) in lock(&self.conns).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
    /// Unblocks the accept loop so it sees a flag change.
    fn wake(&self) {
        let _ = TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_millis(200));
    }
}

/// A running server; stops (and closes every connection) on drop.
pub(crate) struct Server {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds 127.0.0.1:0 and serves with `handler`.
    pub fn start(handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("local_addr: {e}"));
        let shared = Arc::new(Shared {
            port,
            handler,
            received: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
            down: AtomicBool::new(false),
            listening: AtomicBool::new(true),
            conns: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name(format!("e2e-server-{port}"))
            .spawn(move || accept_loop(s, listener))
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        Server { shared, accept: Some(accept) }
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    pub fn clear(&self) {
        lock(&self.shared.received).clear();
    }

    /// Waits until at least `n` requests matching `pred` arrived; returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration, pred: impl Fn(&Received) -> bool) -> Vec<Received> {
        let end = Instant::now() + timeout;
        let mut got = lock(&self.shared.received);
        loop {
            let matching: Vec<Received> = got.iter().filter(|r| pred(r)).cloned().collect();
            let now = Instant::now();
            if matching.len() >= n || now >= end {
                return matching;
            }
            got = self.shared.arrived.wait_timeout(got, end - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Stops listening and drops open connections: clients get refused or reset.
    pub fn down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        self.shared.wake();
        let end = Instant::now() + Duration::from_secs(5);
        while self.shared.listening.load(Ordering::SeqCst) && Instant::now() < end {
            thread::sleep(Duration::from_millis(2));
        }
        self.shared.drop_connections();
    }

    /// Listens again on the same port.
    pub fn up(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(5);
        while !self.shared.listening.load(Ordering::SeqCst) {
            assert!(Instant::now() < end, "server could not listen again on port {}", self.shared.port);
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Closes every open connection (e.g. to release hung requests).
    pub fn drop_connections(&self) {
        self.shared.drop_connections();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        self.shared.drop_connections();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut listener = Some(listener);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if shared.down.load(Ordering::SeqCst) {
            listener = None;
            shared.listening.store(false, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(("127.0.0.1", shared.port)) {
                Ok(l) => {
                    shared.listening.store(true, Ordering::SeqCst);
                    listener.insert(l)
                }
                Err(_) => {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        match l.accept() {
            Ok((stream, _)) => {
                if shared.halted() {
                    continue; // a wake-up connection, or we just went down
                }
                let s = shared.clone();
                let _ = thread::Builder::new().name("e2e-conn".into()).spawn(move || {
                    let id = s.next_conn.fetch_add(1, Ordering::SeqCst);
                    if let Ok(clone) = stream.try_clone() {
                        lock(&s.conns).push((id, clone));
                    }
                    let _ = serve_connection(&s, stream);
                    lock(&s.conns).retain(|(i, _)| *i != id);
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve_connection(shared: &Shared, stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let Some(head) = wire::read_head(&mut reader)? else { return Ok(()) };
        if head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let framing = wire::request_framing(&head)?;
        let body = wire::read_body_vec(&mut reader, framing)?;
        let client_closes = wants_close(&head);
        let Head { start: [method, path, _], headers } = head;
        let mut req = Received { method, path, headers, body, status: None, at: Instant::now() };
        let action = (shared.handler)(&req);
        if let Action::Reply(r) = &action {
            req.status = Some(r.status);
        }
        lock(&shared.received).push(req);
        shared.arrived.notify_all();
        match action {
            Action::Reply(r) => {
                r.write_to(&mut writer, || shared.halted())?;
                if r.close || client_closes {
                    let _ = writer.shutdown(Shutdown::Both);
                    return Ok(());
                }
            }
            Action::Hang => {
                while !shared.halted() {
                    thread::sleep(Duration::from_millis(20));
                }
                return Ok(());
            }
        }
    }
}

fn wants_close(head: &Head) -> bool {
    let conn = head.header("connection").unwrap_or_default().to_ascii_lowercase();
    conn.contains("close") || (head.start[2] == "HTTP/1.0" && !conn.contains("keep-alive"))
}
