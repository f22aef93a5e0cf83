//! The transport state machine: when to send a batch, what to do with the answer.
//!
//! Driven by the host adapter from its root context: [`Shipper::on_tick`] from the
//! tick timer, [`Shipper::on_response`] from the HTTP-call callback. The request
//! path only ever calls [`Shipper::push`], which is a bounded `VecDeque` push: a
//! slow, hung or failing collector cannot delay or fail a user request.
//!
//! - A batch is sent when `max_batch` records wait, when `flush_interval_ms` has
//!   passed since the last send, or when a retry is due; up to `max_in_flight`
//!   batches at once.
//! - 2xx: the records are done (`audit_sent`). No answer (call failed or timed
//!   out), 408, 429 or 5xx: the records go back to the front of the queue
//!   (`audit_retried`) and sending pauses for the backoff (`initial_backoff_ms`,
//!   doubling to `max_backoff_ms`); while the collector is failing only one batch
//!   is in flight, as a probe. Any other status is a permanent refusal (a wrong
//!   path or format): retrying cannot help, the records are dropped
//!   (`audit_dropped`) and a log line says so.
//! - A call the host never answers is given up `timeout_ms + 1 s` after sending
//!   and treated as failed; a late answer to it is ignored (the collector
//!   de-duplicates on `record_id`).
//! - Log lines: one when an outage starts and one when it ends, one per queue
//!   overflow episode, one per run of refused batches; never one per record.

use super::encode::{content_type, encode_batch};
use super::metrics;
use super::queue::{Backoff, Item, PushOutcome, RecordQueue};
use crate::config::audit::{AuditConfig, AuditFormat};
use crate::host::{CallError, Host, LogLevel, OutboundRequest};

/// Extra time past `timeout_ms` before an unanswered call is given up.
const ANSWER_GRACE_MS: u64 = 1000;
/// Longest tick period recommended to the adapter.
const MAX_TICK_MS: u64 = 100;

/// How an answer is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accepted,
    Retry,
    Refused(u16),
}

fn classify(status: Option<u16>) -> Answer {
    match status {
        Some(200..=299) => Answer::Accepted,
        None | Some(408) | Some(429) | Some(500..=599) => Answer::Retry,
        Some(other) => Answer::Refused(other),
    }
}

/// Batches queued audit records to the collector.
#[derive(Debug, Clone)]
pub struct Shipper {
    format: AuditFormat,
    upstream: String,
    authority: String,
    path: String,
    timeout_ms: u64,
    flush_interval_ms: u64,
    max_in_flight: usize,
    max_queue: usize,
    queue: RecordQueue,
    backoff: Backoff,
    last_flush_ms: u64,
    retry_due: bool,
    outage_logged: bool,
    refusal_logged: bool,
}

impl Shipper {
    /// A shipper for `config` (already validated).
    pub fn new(config: &AuditConfig) -> Shipper {
        Shipper {
            format: config.format,
            upstream: config.cluster.clone(),
            authority: config.authority().to_string(),
            path: config.path.clone(),
            timeout_ms: config.timeout_ms,
            flush_interval_ms: config.flush_interval_ms,
            max_in_flight: config.max_in_flight.max(1),
            max_queue: config.max_queue,
            queue: RecordQueue::new(config.max_queue, config.max_batch),
            backoff: Backoff::new(config.retry.initial_backoff_ms, config.retry.max_backoff_ms),
            last_flush_ms: 0,
            retry_due: false,
            outage_logged: false,
            refusal_logged: false,
        }
    }

    /// The tick period the adapter should ask the host for: often enough that a
    /// full batch does not wait long, never longer than the flush interval.
    pub fn tick_period_ms(&self) -> u64 {
        self.flush_interval_ms.clamp(1, MAX_TICK_MS)
    }

    /// The queue, for inspection.
    pub fn queue(&self) -> &RecordQueue {
        &self.queue
    }

    /// Whether `call_id` is a batch of this shipper awaiting its answer.
    pub fn is_waiting_for(&self, call_id: u32) -> bool {
        self.queue.is_in_flight(call_id)
    }

    /// Queues one encoded record; on overflow counts the drop and logs once per
    /// episode. Never calls out.
    pub fn push(&mut self, item: Item, host: &dyn Host) {
        if let PushOutcome::Dropped { episode_start } = self.queue.push(item) {
            host.count(metrics::AUDIT_DROPPED, 1);
            if episode_start {
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "audit queue full ({} records): dropping new records until the collector catches up; the count is in {}",
                        self.max_queue,
                        metrics::AUDIT_DROPPED
                    ),
                );
            }
        }
    }

    /// Gives up on unanswered calls, then sends what is due.
    pub fn on_tick(&mut self, now_ms: u64, host: &dyn Host) {
        for items in self.queue.expired(now_ms) {
            self.failed(items, now_ms, "no answer", host);
        }
        if now_ms < self.last_flush_ms {
            // The clock went backwards: restart the interval from here.
            self.last_flush_ms = now_ms;
        }
        if !self.backoff.ready(now_ms) {
            return;
        }
        let slots = if self.backoff.failures() > 0 { 1 } else { self.max_in_flight };
        while self.queue.in_flight_batches() < slots && self.queue.pending() > 0 {
            let interval_over = now_ms - self.last_flush_ms >= self.flush_interval_ms;
            if !(self.queue.has_full_batch() || self.retry_due || interval_over) {
                break;
            }
            let items = self.queue.take_batch();
            let request = OutboundRequest {
                upstream: self.upstream.clone(),
                authority: self.authority.clone(),
                method: "POST".to_string(),
                path: self.path.clone(),
                headers: vec![("content-type".to_string(), content_type(self.format).to_string())],
                body: encode_batch(self.format, &items),
                timeout_ms: self.timeout_ms,
            };
            match host.http_call(&request) {
                Ok(call_id) => {
                    let deadline =
                        now_ms.saturating_add(self.timeout_ms).saturating_add(ANSWER_GRACE_MS);
                    self.queue.sent(call_id, items, deadline);
                    self.last_flush_ms = now_ms;
                    self.retry_due = false;
                }
                Err(err) => {
                    let what = match err {
                        CallError::UnknownUpstream => "unknown cluster",
                        CallError::Refused => "call refused",
                    };
                    self.queue.unsend(items);
                    self.fail_attempt(now_ms, what, host);
                    break;
                }
            }
        }
    }

    /// Handles the answer to batch `call_id`: `status` is the HTTP status, `None`
    /// when the call failed or timed out. Unknown ids are ignored.
    pub fn on_response(&mut self, call_id: u32, status: Option<u16>, now_ms: u64, host: &dyn Host) {
        let Some(items) = self.queue.answered(call_id) else {
            return;
        };
        match classify(status) {
            Answer::Accepted => {
                host.count(metrics::AUDIT_SENT, items.len() as u64);
                self.backoff.succeeded();
                self.refusal_logged = false;
                if self.outage_logged {
                    self.outage_logged = false;
                    host.log(
                        LogLevel::Info,
                        "audit collector reachable again: sending queued records",
                    );
                }
            }
            Answer::Retry => {
                let what = match status {
                    Some(code) => format!("status {code}"),
                    None => "no answer".to_string(),
                };
                self.failed(items, now_ms, &what, host);
            }
            Answer::Refused(code) => {
                host.count(metrics::AUDIT_DROPPED, items.len() as u64);
                if !self.refusal_logged {
                    self.refusal_logged = true;
                    host.log(
                        LogLevel::Error,
                        &format!(
                            "audit collector refused a batch with status {code}: {} records dropped; check audit.path and audit.format",
                            items.len()
                        ),
                    );
                }
            }
        }
    }

    /// A batch that was sent failed: its records go back to the queue.
    fn failed(&mut self, items: Vec<Item>, now_ms: u64, what: &str, host: &dyn Host) {
        host.count(metrics::AUDIT_RETRIED, items.len() as u64);
        self.queue.retry(items);
        self.fail_attempt(now_ms, what, host);
    }

    fn fail_attempt(&mut self, now_ms: u64, what: &str, host: &dyn Host) {
        let wait = self.backoff.failed(now_ms);
        self.retry_due = true;
        if !self.outage_logged {
            self.outage_logged = true;
            host.log(
                LogLevel::Warn,
                &format!("audit collector unavailable ({what}): keeping records, next attempt in {wait} ms"),
            );
        }
    }
}
