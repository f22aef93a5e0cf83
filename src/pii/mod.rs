//! PII and secret detection and redaction (issue 4).
//!
//! A [`Redactor`] is compiled once from the `pii` policy section and used for
//! every body: [`Redactor::redact`] for a whole body, [`Redactor::stream`] for a
//! body that arrives in chunks. Findings are counted per entity in
//! [`Findings`], never recorded.
//!
//! The scanner ([`scanner`]) is hand-written: one pass over the bytes with a
//! 256-entry anchor table; detectors (`detectors/`) and their validators
//! ([`validators`]) run only where an anchor is. No regex runs per request.
//!
//! Body kinds ([`BodyKind`]): plain text is scanned as is; JSON has only its
//! string values scanned (escapes decoded first, output re-escaped, still valid
//! JSON); form bodies have their values percent-decoded; `text/event-stream` is
//! redacted event by event. Streaming holds back at most [`MAX_HOLDBACK`] bytes
//! of text (see [`stream`]).

pub(crate) mod detectors;

#[doc(hidden)]
pub mod baseline;
pub mod content;
pub mod entity;
pub mod form;
pub mod json;
pub mod operators;
pub mod scanner;
pub mod sse;
pub mod stream;
pub mod validators;

use std::fmt;
use std::sync::Arc;

pub use self::content::{decode_content_encoding, BodyKind, DecodeError};
pub use self::entity::{Entity, EntitySet, Findings};
pub use self::operators::Operators;
pub use self::scanner::MAX_HOLDBACK;
pub use self::stream::StreamingRedactor;
use crate::config::{ConfigError, PiiConfig};

/// The compiled `pii` section: entity set, operators, content types. Cheap to
/// clone (shared), immutable, used for every request without parsing.
#[derive(Debug, Clone)]
pub struct Redactor {
    inner: Arc<Compiled>,
}

#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) entities: EntitySet,
    pub(crate) operators: Operators,
    pub(crate) content_types: Vec<String>,
    pub(crate) max_body_bytes: usize,
}

/// Why a whole body could not be redacted.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedactError {
    /// The body is larger than `pii.max_body_bytes`: refuse it (413) or stream it.
    TooLarge {
        /// The body's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl fmt::Display for RedactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedactError::TooLarge { size, limit } => write!(
                f,
                "body of {size} bytes is over pii.max_body_bytes ({limit}); refuse it or redact it as a stream"
            ),
        }
    }
}

impl std::error::Error for RedactError {}

impl Redactor {
    /// Compiles the `pii` section (after `PiiConfig::validate`, which it runs again).
    pub fn compile(cfg: &PiiConfig) -> Result<Redactor, ConfigError> {
        cfg.validate()?;
        let mut entities = EntitySet::NONE;
        for name in &cfg.entities {
            if let Some(e) = Entity::from_name(name) {
                entities.insert(e);
            }
        }
        let operators = Operators::compile(cfg)?;
        Ok(Redactor {
            inner: Arc::new(Compiled {
                entities,
                operators,
                content_types: cfg.content_types.clone(),
                max_body_bytes: cfg.max_body_bytes,
            }),
        })
    }

    /// Redacts a whole body of `kind`, adding what it found to `findings`.
    /// [`BodyKind::Other`] comes back unchanged.
    pub fn redact(&self, body: &[u8], kind: BodyKind, findings: &mut Findings) -> Result<Vec<u8>, RedactError> {
        if body.len() > self.inner.max_body_bytes {
            return Err(RedactError::TooLarge { size: body.len(), limit: self.inner.max_body_bytes });
        }
        Ok(self.redact_unbounded(body, kind, findings))
    }

    /// [`Redactor::redact`] without the size limit (the CLI, tests, benchmarks).
    pub fn redact_unbounded(&self, body: &[u8], kind: BodyKind, findings: &mut Findings) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + body.len() / 16);
        let mut s = self.stream(kind);
        s.push_final(body, &mut out);
        findings.merge(s.findings());
        out
    }

    /// A redactor for one body that arrives in chunks.
    pub fn stream(&self, kind: BodyKind) -> StreamingRedactor {
        StreamingRedactor::new(self.inner.clone(), kind)
    }

    /// Classifies a `content-type` header value with this policy's `content_types`.
    pub fn classify(&self, content_type: &str) -> BodyKind {
        content::classify(content_type, &self.inner.content_types)
    }

    /// `pii.max_body_bytes`.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// The entities this policy detects.
    pub fn entities(&self) -> EntitySet {
        self.inner.entities
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod corpus;
