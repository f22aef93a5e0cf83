//! Content-type classification and content-encoding decoding.

use std::fmt;
use std::io::Read;

/// How a body is parsed for redaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` and `+json` types: string values only.
    Json,
    /// Other listed types (`text/*`, ...): the bytes as text.
    Text,
    /// `text/event-stream`: per event.
    EventStream,
    /// `application/x-www-form-urlencoded`: decoded values.
    Form,
    /// Not listed in `pii.content_types`: passed untouched (and counted by the caller).
    Other,
}

/// Classifies a `content-type` header value against `listed` (`type/subtype`
/// or `type/*`). Parameters (`; charset=...`) and case are ignored.
pub fn classify(content_type: &str, listed: &[String]) -> BodyKind {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let (ty, sub) = essence.split_once('/').unwrap_or((essence.as_str(), ""));
    let is_listed = listed.iter().any(|l| match l.split_once('/') {
        Some((lt, "*")) => lt == ty,
        _ => *l == essence,
    });
    if !is_listed || sub.is_empty() {
        return BodyKind::Other;
    }
    if essence == "text/event-stream" {
        BodyKind::EventStream
    } else if essence == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else if sub == "json" || sub.ends_with("+json") {
        BodyKind::Json
    } else {
        BodyKind::Text
    }
}

/// Why a compressed body could not be decoded. The caller refuses it (502):
/// a body is never passed on unscanned.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A content-encoding other than identity, gzip, x-gzip or deflate.
    Unsupported(String),
    /// The bytes are not valid for the encoding.
    Corrupt,
    /// Decoded, the body would be larger than the limit (a zip bomb, or simply
    /// too large to buffer).
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Unsupported(e) => write!(f, "content-encoding `{e}` is not supported (identity, gzip, deflate)"),
            DecodeError::Corrupt => f.write_str("compressed body is corrupt"),
            DecodeError::TooLarge { limit } => write!(f, "decoded body is over {limit} bytes"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes a body sent with `content-encoding: enc` (gzip or deflate; deflate
/// as zlib-wrapped, or raw as some servers send), refusing to produce more
/// than `limit` bytes.
pub fn decode_content_encoding(enc: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let enc = enc.trim().to_ascii_lowercase();
    match enc.as_str() {
        "" | "identity" => bounded(body, limit),
        "gzip" | "x-gzip" => read_bounded(flate2::read::MultiGzDecoder::new(body), limit),
        "deflate" => match read_bounded(flate2::read::ZlibDecoder::new(body), limit) {
            Err(DecodeError::Corrupt) => read_bounded(flate2::read::DeflateDecoder::new(body), limit),
            other => other,
        },
        _ => Err(DecodeError::Unsupported(enc)),
    }
}

fn bounded(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    if body.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(body.to_vec())
}

fn read_bounded(r: impl Read, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it".
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap).read_to_end(&mut out).map_err(|_| DecodeError::Corrupt)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}
