//! Audit records, batching queue and encoders. (Issue 6.)
