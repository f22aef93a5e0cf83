//! PII and secret detection and redaction. (Issue 4.)
