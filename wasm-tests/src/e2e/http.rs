//! A minimal HTTP/1.1 client on `TcpStream` for the end-to-end tests: whole
//! responses, streamed responses with arrival times, and request bodies sent
//! in several delayed writes. Every socket has a read and write timeout.

use super::wire::{self, Framing};
use std::io::{self, BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// Socket timeout used unless [`Connection::set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Header list as tests write it: `&[("authorization", "Bearer x")]`.
pub type Headers<'a> = &'a [(&'a str, &'a str)];

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in arrival order, names lowercased, repeats kept.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked (not decompressed).
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::find_header(&self.headers, name)
    }
    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body parsed as JSON; panics with status and body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response {} is not JSON ({e}): {:?}", self.status, self.text()))
    }
}

/// One piece of a streamed body and when it arrived.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Time since the request was sent.
    pub at: Duration,
    /// The bytes (one transfer-encoding chunk, or one `read` for other framings).
    pub data: Vec<u8>,
}

/// A response whose body was read piece by piece.
#[derive(Debug, Clone)]
pub struct Streamed {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// When the response headers arrived, since the request was sent.
    pub headers_at: Duration,
    /// The body pieces in arrival order.
    pub chunks: Vec<Chunk>,
}

impl Streamed {
    /// First value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::find_header(&self.headers, name)
    }
    /// The whole body.
    pub fn body(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.data.iter().copied()).collect()
    }
    /// The whole body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body()).into_owned()
    }
}

/// A keep-alive connection to 127.0.0.1:`port`.
pub struct Connection {
    port: u16,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    /// Connects with [`DEFAULT_TIMEOUT`] on every operation.
    pub fn open(port: u16) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), DEFAULT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        let mut c = Connection { port, reader: BufReader::new(stream.try_clone()?), writer: stream };
        c.set_timeout(DEFAULT_TIMEOUT)?;
        Ok(c)
    }
    /// Sets the read and write timeout.
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.writer.set_read_timeout(Some(timeout))?;
        self.writer.set_write_timeout(Some(timeout))
    }
    /// Sends a request (Content-Length added unless given) and reads the whole response.
    pub fn request(&mut self, method: &str, path: &str, headers: Headers, body: &[u8]) -> io::Result<Response> {
        self.send(method, path, headers, body)?;
        let (status, headers, _, chunks) = self.read_response(method, Instant::now())?;
        Ok(Response { status, headers, body: chunks.into_iter().flat_map(|c| c.data).collect() })
    }
    /// Sends a request and records each body piece with its arrival time.
    pub fn stream(&mut self, method: &str, path: &str, headers: Headers, body: &[u8]) -> io::Result<Streamed> {
        let sent = Instant::now();
        self.send(method, path, headers, body)?;
        let (status, headers, headers_at, chunks) = self.read_response(method, sent)?;
        Ok(Streamed { status, headers, headers_at, chunks })
    }
    /// Sends the body in `parts`, one write each, `delay` apart. Without a
    /// `content-length` in `headers` each part goes as one chunk of a chunked body.
    pub fn request_in_parts(
        &mut self,
        method: &str,
        path: &str,
        headers: Headers,
        parts: &[&[u8]],
        delay: Duration,
    ) -> io::Result<Response> {
        let has_length = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        let mut head = self.head(method, path, headers);
        if !has_length {
            head.push_str("transfer-encoding: chunked\r\n");
        }
        head.push_str("\r\n");
        self.writer.write_all(head.as_bytes())?;
        self.writer.flush()?;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                thread::sleep(delay);
            }
            let bytes = if has_length { part.to_vec() } else { wire::chunk(part) };
            self.writer.write_all(&bytes)?;
            self.writer.flush()?;
        }
        if !has_length {
            self.writer.write_all(b"0\r\n\r\n")?;
        }
        let (status, headers, _, chunks) = self.read_response(method, Instant::now())?;
        Ok(Response { status, headers, body: chunks.into_iter().flat_map(|c| c.data).collect() })
    }

    fn head(&self, method: &str, path: &str, headers: Headers) -> String {
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("host: 127.0.0.1:{}\r\n", self.port));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head
    }

    fn send(&mut self, method: &str, path: &str, headers: Headers, body: &[u8]) -> io::Result<()> {
        let mut head = self.head(method, path, headers);
        let framed = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding"));
        let body_method = matches!(method.to_ascii_uppercase().as_str(), "POST" | "PUT" | "PATCH");
        if !framed && (!body.is_empty() || body_method) {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        self.writer.write_all(&out)?;
        self.writer.flush()
    }

    #[allow(clippy::type_complexity)]
    fn read_response(
        &mut self,
        method: &str,
        sent: Instant,
    ) -> io::Result<(u16, Vec<(String, String)>, Duration, Vec<Chunk>)> {
        let head = loop {
            let head = wire::read_head(&mut self.reader)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"))?;
            match head.start[1].parse::<u16>() {
                Ok(s) if (100..200).contains(&s) && s != 101 => continue,
                Ok(_) => break head,
                Err(_) => return Err(io::Error::new(io::ErrorKind::InvalidData, "bad status line")),
            }
        };
        let headers_at = sent.elapsed();
        let status = head.start[1].parse().unwrap_or_default();
        let framing = wire::response_framing(&head, method)?;
        let mut chunks = Vec::new();
        wire::read_body(&mut self.reader, framing, |p| chunks.push(Chunk { at: sent.elapsed(), data: p.to_vec() }))?;
        if framing == Framing::UntilClose {
            let _ = self.writer.shutdown(std::net::Shutdown::Both);
        }
        Ok((status, head.headers, headers_at, chunks))
    }
}

fn fail(port: u16, method: &str, path: &str, e: io::Error) -> ! {
    panic!("HTTP {method} 127.0.0.1:{port}{path} failed: {e}")
}

/// One request on a fresh connection; I/O errors returned.
pub fn try_request(port: u16, method: &str, path: &str, headers: Headers, body: &[u8]) -> io::Result<Response> {
    Connection::open(port)?.request(method, path, headers, body)
}

/// One request on a fresh connection; panics (naming the request) on I/O errors.
pub fn request(port: u16, method: &str, path: &str, headers: Headers, body: &[u8]) -> Response {
    try_request(port, method, path, headers, body).unwrap_or_else(|e| fail(port, method, path, e))
}

/// `GET path`.
pub fn get(port: u16, path: &str, headers: Headers) -> Response {
    request(port, "GET", path, headers, b"")
}

/// `POST path` with `body`.
pub fn post(port: u16, path: &str, headers: Headers, body: &[u8]) -> Response {
    request(port, "POST", path, headers, body)
}

/// `POST path` with a JSON body (content-type added).
pub fn post_json(port: u16, path: &str, headers: Headers, body: &serde_json::Value) -> Response {
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    h.push(("content-type", "application/json"));
    request(port, "POST", path, &h, body.to_string().as_bytes())
}

/// A request whose response body is recorded piece by piece with arrival times.
pub fn stream(port: u16, method: &str, path: &str, headers: Headers, body: &[u8]) -> Streamed {
    Connection::open(port)
        .and_then(|mut c| c.stream(method, path, headers, body))
        .unwrap_or_else(|e| fail(port, method, path, e))
}

/// A request whose body goes out in `parts`, `delay` apart (see
/// [`Connection::request_in_parts`]).
pub fn request_in_parts(
    port: u16,
    method: &str,
    path: &str,
    headers: Headers,
    parts: &[&[u8]],
    delay: Duration,
) -> Response {
    Connection::open(port)
        .and_then(|mut c| c.request_in_parts(method, path, headers, parts, delay))
        .unwrap_or_else(|e| fail(port, method, path, e))
}
