//! Optional tamper evidence: a hash chain per worker.
//!
//! Each record carries `prev_hash`, the hex SHA-256 of the previous record's
//! canonical bytes ([`AuditRecord::to_json_bytes`], i.e. its NDJSON line without
//! the newline). The first record of a chain carries [`GENESIS`]. A collector that
//! stores NDJSON lines verbatim can check with [`verify`] that no record of a
//! worker's chain was altered, removed or inserted; a chain restarts (at
//! `GENESIS`, under a new record-id prefix) when the worker restarts. Records
//! dropped on queue overflow leave a visible gap, which is the point: the drop is
//! also counted in `audit_dropped`.

use super::fields::hex;
use super::record::AuditRecord;

/// `prev_hash` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The running end of one worker's chain.
#[derive(Debug, Clone)]
pub struct Chain {
    last_hash: String,
}

impl Default for Chain {
    fn default() -> Self {
        Chain { last_hash: GENESIS.to_string() }
    }
}

impl Chain {
    /// A new chain starting at [`GENESIS`].
    pub fn new() -> Chain {
        Chain::default()
    }

    /// Links `record` to the chain and returns its canonical bytes (which the
    /// next record will hash).
    pub fn link(&mut self, record: &mut AuditRecord) -> Vec<u8> {
        record.set_prev_hash(self.last_hash.clone());
        let bytes = record.to_json_bytes();
        self.last_hash = hash_hex(&bytes);
        bytes
    }
}

fn hash_hex(bytes: &[u8]) -> String {
    hex(&hmac_sha256::Hash::hash(bytes))
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// Line `index` is not a JSON object.
    NotJson { index: usize },
    /// Line `index` has no `prev_hash` string.
    MissingPrevHash { index: usize },
    /// Line `index` does not link to the line before it (or, for the first line,
    /// to the expected start).
    Broken { index: usize },
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::NotJson { index } => write!(f, "record {index} is not a JSON object"),
            ChainError::MissingPrevHash { index } => write!(f, "record {index} has no prev_hash"),
            ChainError::Broken { index } => {
                write!(f, "record {index} does not link to the record before it")
            }
        }
    }
}

impl std::error::Error for ChainError {}

/// Checks that `lines` (one worker's records, in order, as received) form a
/// chain whose first `prev_hash` is `start` ([`GENESIS`] for a whole chain, or
/// the hash of the last line already verified).
pub fn verify<B: AsRef<[u8]>>(lines: &[B], start: &str) -> Result<(), ChainError> {
    let mut expected = start.to_string();
    for (index, line) in lines.iter().enumerate() {
        let line = line.as_ref();
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|_| ChainError::NotJson { index })?;
        let prev = value
            .get("prev_hash")
            .and_then(serde_json::Value::as_str)
            .ok_or(ChainError::MissingPrevHash { index })?;
        if prev != expected {
            return Err(ChainError::Broken { index });
        }
        expected = hash_hex(line);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{ErrorRecord, RecordBody};
    use crate::config::audit::RetentionDays;

    fn record(n: u64) -> AuditRecord {
        AuditRecord::new(
            format!("w-{n:x}"),
            1_700_000_000_000 + n,
            &RetentionDays::default(),
            None,
            RecordBody::Error(ErrorRecord { stage: "jwks_fetch", code: "timeout" }),
        )
    }

    fn chained(n: u64) -> Vec<Vec<u8>> {
        let mut chain = Chain::new();
        (0..n).map(|i| chain.link(&mut record(i))).collect()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let lines = chained(5);
        assert_eq!(verify(&lines, GENESIS), Ok(()));
        let first: serde_json::Value = serde_json::from_slice(&lines[0]).unwrap();
        assert_eq!(first["prev_hash"], GENESIS);
        let second: serde_json::Value = serde_json::from_slice(&lines[1]).unwrap();
        assert_eq!(second["prev_hash"], hash_hex(&lines[0]));
    }

    #[test]
    fn a_suffix_verifies_from_the_hash_of_the_line_before_it() {
        let lines = chained(5);
        assert_eq!(verify(&lines[2..], &hash_hex(&lines[1])), Ok(()));
        assert_eq!(verify(&lines[2..], GENESIS), Err(ChainError::Broken { index: 0 }));
    }

    #[test]
    fn altering_a_record_breaks_the_link_after_it() {
        let mut lines = chained(5);
        let text = String::from_utf8(lines[2].clone()).unwrap().replace("timeout", "parse");
        lines[2] = text.into_bytes();
        assert_eq!(verify(&lines, GENESIS), Err(ChainError::Broken { index: 3 }));
    }

    #[test]
    fn removing_inserting_or_reordering_is_detected() {
        let lines = chained(5);
        let mut removed = lines.clone();
        removed.remove(1);
        assert_eq!(verify(&removed, GENESIS), Err(ChainError::Broken { index: 1 }));

        let mut inserted = lines.clone();
        inserted.insert(3, lines[0].clone());
        assert_eq!(verify(&inserted, GENESIS), Err(ChainError::Broken { index: 3 }));

        let mut swapped = lines.clone();
        swapped.swap(3, 4);
        assert_eq!(verify(&swapped, GENESIS), Err(ChainError::Broken { index: 3 }));
    }

    #[test]
    fn malformed_lines_are_named() {
        assert_eq!(verify(&[b"nope".to_vec()], GENESIS), Err(ChainError::NotJson { index: 0 }));
        assert_eq!(
            verify(&[b"{\"kind\":\"error\"}".to_vec()], GENESIS),
            Err(ChainError::MissingPrevHash { index: 0 })
        );
    }
}
