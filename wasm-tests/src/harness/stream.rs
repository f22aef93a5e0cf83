//! The test-facing view of one HTTP stream: deliver headers, body chunks and
//! trailers in both directions, then read what passed the filter.

use super::abi::{self, Action, Pairs, StreamType};
use super::sandbox::Sandbox;
use super::state::{Half, Headers, LocalResponse, StreamState};
use super::HarnessError;

/// A handle on stream `id` of a sandbox. Drop it and call
/// [`Sandbox::stream`] to get it back; ids stay valid after `finish`.
#[derive(Debug)]
pub struct Stream<'s> {
    sandbox: &'s mut Sandbox,
    id: u32,
}

/// What the hooks answered for one [`Request`] or [`Response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The headers hook.
    pub headers: Action,
    /// One entry per body chunk, in order.
    pub body: Vec<Action>,
    /// The trailers hook, if the message had trailers.
    pub trailers: Option<Action>,
}

impl Sent {
    /// The last answer given (trailers, else last body chunk, else headers).
    pub fn last(&self) -> Action {
        self.trailers
            .or_else(|| self.body.last().copied())
            .unwrap_or(self.headers)
    }
}

impl<'s> Stream<'s> {
    pub(crate) fn new(sandbox: &'s mut Sandbox, id: u32) -> Self {
        Stream { sandbox, id }
    }

    /// The context id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The sandbox, for sandbox-wide calls while holding the handle.
    pub fn sandbox(&mut self) -> &mut Sandbox {
        self.sandbox
    }

    /// A property only this stream sees, e.g. `(&["request", "id"], b"abc")`.
    pub fn set_property(&mut self, path: &[&str], value: impl Into<Vec<u8>>) -> Result<(), HarnessError> {
        self.sandbox.set_stream_property(self.id, path, value)
    }

    // ---- request -----------------------------------------------------------

    /// `proxy_on_request_headers`. Names are lowercased, as Envoy's codecs do.
    pub fn request_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Result<Action, HarnessError> {
        self.sandbox
            .deliver_fields(self.id, StreamType::HttpRequest, abi::pairs(headers), end_of_stream, false)
    }

    /// `proxy_on_request_body` with one chunk.
    pub fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<Action, HarnessError> {
        self.sandbox.deliver_body(self.id, StreamType::HttpRequest, chunk, end_of_stream)
    }

    /// The body in chunks of `chunk_size` bytes; the last carries
    /// `end_of_stream` (pass false when trailers follow).
    pub fn request_body_chunks(
        &mut self,
        body: &[u8],
        chunk_size: usize,
        end_of_stream: bool,
    ) -> Result<Vec<Action>, HarnessError> {
        let chunks = chunks(body, chunk_size);
        let last = chunks.len().saturating_sub(1);
        let mut actions = Vec::with_capacity(chunks.len());
        for (index, chunk) in chunks.into_iter().enumerate() {
            actions.push(self.request_body(chunk, end_of_stream && index == last)?);
        }
        Ok(actions)
    }

    /// `proxy_on_request_trailers`.
    pub fn request_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<Action, HarnessError> {
        self.sandbox
            .deliver_fields(self.id, StreamType::HttpRequest, abi::pairs(trailers), true, true)
    }

    /// Headers, body chunks and trailers of `request`, as Envoy delivers them.
    pub fn send_request(&mut self, request: &Request) -> Result<Sent, HarnessError> {
        let message = &request.0;
        let no_body = message.body.is_empty() && message.trailers.is_empty();
        let headers = self
            .sandbox
            .deliver_fields(self.id, StreamType::HttpRequest, message.headers.clone(), no_body, false)?;
        let body = if message.body.is_empty() {
            Vec::new()
        } else {
            self.request_body_chunks(&message.body, message.chunk_size, message.trailers.is_empty())?
        };
        let trailers = if message.trailers.is_empty() {
            None
        } else {
            Some(self.sandbox.deliver_fields(
                self.id,
                StreamType::HttpRequest,
                message.trailers.clone(),
                true,
                true,
            )?)
        };
        Ok(Sent {
            headers,
            body,
            trailers,
        })
    }

    // ---- response ----------------------------------------------------------

    /// `proxy_on_response_headers`; an error if the request never reached the
    /// upstream (a test bug: no response could exist).
    pub fn response_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Result<Action, HarnessError> {
        self.sandbox
            .deliver_fields(self.id, StreamType::HttpResponse, abi::pairs(headers), end_of_stream, false)
    }

    /// `proxy_on_response_body` with one chunk.
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<Action, HarnessError> {
        self.sandbox.deliver_body(self.id, StreamType::HttpResponse, chunk, end_of_stream)
    }

    /// The response body in chunks of `chunk_size` bytes.
    pub fn response_body_chunks(
        &mut self,
        body: &[u8],
        chunk_size: usize,
        end_of_stream: bool,
    ) -> Result<Vec<Action>, HarnessError> {
        let chunks = chunks(body, chunk_size);
        let last = chunks.len().saturating_sub(1);
        let mut actions = Vec::with_capacity(chunks.len());
        for (index, chunk) in chunks.into_iter().enumerate() {
            actions.push(self.response_body(chunk, end_of_stream && index == last)?);
        }
        Ok(actions)
    }

    /// `proxy_on_response_trailers`.
    pub fn response_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<Action, HarnessError> {
        self.sandbox
            .deliver_fields(self.id, StreamType::HttpResponse, abi::pairs(trailers), true, true)
    }

    /// Headers, body chunks and trailers of `response`.
    pub fn send_response(&mut self, response: &Response) -> Result<Sent, HarnessError> {
        let message = &response.0;
        let no_body = message.body.is_empty() && message.trailers.is_empty();
        let headers = self
            .sandbox
            .deliver_fields(self.id, StreamType::HttpResponse, message.headers.clone(), no_body, false)?;
        let body = if message.body.is_empty() {
            Vec::new()
        } else {
            self.response_body_chunks(&message.body, message.chunk_size, message.trailers.is_empty())?
        };
        let trailers = if message.trailers.is_empty() {
            None
        } else {
            Some(self.sandbox.deliver_fields(
                self.id,
                StreamType::HttpResponse,
                message.trailers.clone(),
                true,
                true,
            )?)
        };
        Ok(Sent {
            headers,
            body,
            trailers,
        })
    }

    /// `proxy_on_log`, `proxy_on_done`, `proxy_on_delete` (see [`Sandbox::finish`]).
    pub fn finish(&mut self) -> Result<(), HarnessError> {
        self.sandbox.finish(self.id)
    }

    // ---- what happened -----------------------------------------------------

    fn state(&self) -> Option<&StreamState> {
        self.sandbox.stream_state(self.id).ok()
    }

    fn half(&self, half: StreamType) -> Option<&Half> {
        let state = self.state()?;
        Some(match half {
            StreamType::HttpResponse => &state.response,
            _ => &state.request,
        })
    }

    /// The first local response the module sent, if any.
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.state()?.local_responses.first().cloned()
    }

    /// Every local response the module tried to send (Envoy honours the first).
    pub fn local_responses(&self) -> Vec<LocalResponse> {
        self.state().map(|s| s.local_responses.clone()).unwrap_or_default()
    }

    /// Request headers as forwarded upstream; `None` while held back.
    pub fn forwarded_request_headers(&self) -> Option<Headers> {
        self.half(StreamType::HttpRequest)?.forwarded_headers.as_ref().map(Headers::from_pairs)
    }

    /// Request body bytes forwarded upstream so far.
    pub fn forwarded_request_body(&self) -> Vec<u8> {
        self.half(StreamType::HttpRequest).map(|h| h.forwarded_body.clone()).unwrap_or_default()
    }

    /// Request trailers as forwarded upstream.
    pub fn forwarded_request_trailers(&self) -> Option<Headers> {
        self.half(StreamType::HttpRequest)?.forwarded_trailers.as_ref().map(Headers::from_pairs)
    }

    /// Response headers as sent to the client (the upstream's after the
    /// filter ran, or the local reply's).
    pub fn forwarded_response_headers(&self) -> Option<Headers> {
        self.half(StreamType::HttpResponse)?.forwarded_headers.as_ref().map(Headers::from_pairs)
    }

    /// Response body bytes sent to the client so far.
    pub fn forwarded_response_body(&self) -> Vec<u8> {
        self.half(StreamType::HttpResponse).map(|h| h.forwarded_body.clone()).unwrap_or_default()
    }

    /// Response trailers as sent to the client.
    pub fn forwarded_response_trailers(&self) -> Option<Headers> {
        self.half(StreamType::HttpResponse)?.forwarded_trailers.as_ref().map(Headers::from_pairs)
    }

    /// The request headers as the module left them (forwarded or not).
    pub fn request_headers_now(&self) -> Headers {
        self.half(StreamType::HttpRequest).map(|h| Headers::from_pairs(&h.headers)).unwrap_or_default()
    }

    /// The request body the host holds for the filter (not yet forwarded).
    pub fn buffered_request_body(&self) -> Vec<u8> {
        self.half(StreamType::HttpRequest).map(|h| h.body.clone()).unwrap_or_default()
    }

    /// The response body the host holds for the filter.
    pub fn buffered_response_body(&self) -> Vec<u8> {
        self.half(StreamType::HttpResponse).map(|h| h.body.clone()).unwrap_or_default()
    }

    /// Whether the request is held at this filter (paused, not resumed).
    pub fn request_paused(&self) -> bool {
        self.half(StreamType::HttpRequest).is_some_and(|h| h.paused)
    }

    /// Whether the response is held at this filter.
    pub fn response_paused(&self) -> bool {
        self.half(StreamType::HttpResponse).is_some_and(|h| h.paused)
    }

    /// Whether the module reset the stream (`proxy_close_stream`).
    pub fn was_reset(&self) -> bool {
        self.state().is_some_and(|s| s.reset)
    }

    /// Whether `proxy_on_delete` ran.
    pub fn deleted(&self) -> bool {
        self.state().is_some_and(|s| s.deleted)
    }

    /// How many times the module resumed this stream's `half`.
    pub fn resume_count(&self, half: StreamType) -> usize {
        self.sandbox
            .resumes()
            .iter()
            .filter(|r| r.context_id == self.id && r.stream_type == half)
            .count()
    }
}

fn chunks(body: &[u8], chunk_size: usize) -> Vec<&[u8]> {
    if body.is_empty() {
        return vec![body];
    }
    body.chunks(chunk_size.max(1)).collect()
}

#[derive(Debug, Clone, Default)]
struct Message {
    headers: Pairs,
    body: Vec<u8>,
    trailers: Pairs,
    chunk_size: usize,
}

impl Message {
    fn set(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        match self.headers.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value.as_bytes().to_vec(),
            None => self.headers.push((name, value.as_bytes().to_vec())),
        }
    }
}

/// A request as a client sends it; body delivered whole unless `chunked`.
#[derive(Debug, Clone)]
pub struct Request(Message);

impl Request {
    /// `:method`, `:path`, `:authority: api.example.test`, `:scheme: https`.
    pub fn new(method: &str, path: &str) -> Self {
        let mut message = Message {
            chunk_size: usize::MAX,
            ..Message::default()
        };
        message.set(":method", method);
        message.set(":path", path);
        message.set(":authority", "api.example.test");
        message.set(":scheme", "https");
        Request(message)
    }

    /// A GET.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A POST.
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    /// Sets (replaces) a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0.set(name, value);
        self
    }

    /// Appends a header even if one of that name exists.
    pub fn add_header(mut self, name: &str, value: &str) -> Self {
        self.0.headers.push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// `authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// The body, with a matching `content-length`.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.0.body = body.into();
        let len = self.0.body.len().to_string();
        self.0.set("content-length", &len);
        self
    }

    /// A JSON body with `content-type: application/json`.
    pub fn json(self, body: &str) -> Self {
        self.header("content-type", "application/json").body(body.as_bytes().to_vec())
    }

    /// A trailer (the body then ends without `end_of_stream`, as in HTTP/2).
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.0.trailers.push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// Delivers the body in chunks of `size` bytes.
    pub fn chunked(mut self, size: usize) -> Self {
        self.0.chunk_size = size.max(1);
        self
    }
}

/// A response as the upstream sends it.
#[derive(Debug, Clone)]
pub struct Response(Message);

impl Response {
    /// `:status` only.
    pub fn new(status: u16) -> Self {
        let mut message = Message {
            chunk_size: usize::MAX,
            ..Message::default()
        };
        message.set(":status", &status.to_string());
        Response(message)
    }

    /// Sets (replaces) a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0.set(name, value);
        self
    }

    /// The body, with a matching `content-length`.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.0.body = body.into();
        let len = self.0.body.len().to_string();
        self.0.set("content-length", &len);
        self
    }

    /// A JSON body with `content-type: application/json`.
    pub fn json(self, body: &str) -> Self {
        self.header("content-type", "application/json").body(body.as_bytes().to_vec())
    }

    /// A trailer.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.0.trailers.push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// Delivers the body in chunks of `size` bytes.
    pub fn chunked(mut self, size: usize) -> Self {
        self.0.chunk_size = size.max(1);
        self
    }
}
