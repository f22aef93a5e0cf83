//! The audit stage: structured records of every decision, shipped in batches to an
//! external collector, never carrying raw PII. (Issue 6.)
//!
//! One [`AuditLog`] per worker (Envoy: per root context; edge: per isolate). The
//! engine builds a [`RequestContext`] once per request from raw
//! [`RequestFacts`] (that is where the subject is pseudonymised, the IP truncated,
//! the path cut to its normalised form) and calls [`AuditLog::record`] for each
//! event; that only queues. The adapter drives the transport from its root
//! context: [`AuditLog::on_tick`] on the tick timer (period
//! [`AuditLog::tick_period_ms`]) and [`AuditLog::on_http_response`] when a call
//! it started answers ([`AuditLog::is_own_call`] tells audit calls from others).
//!
//! ```text
//! let mut audit = AuditLog::new(&policy_audit_config, seed)?;     // on_configure
//! let ctx = audit.context(&RequestFacts { method, path, subject, .. });
//! audit.record(host, Some(&ctx), RecordBody::Access(Access { .. }));  // on_log
//! audit.on_tick(host);                                             // on_tick
//! audit.on_http_response(host, call_id, status);                   // on_http_call_response
//! ```

pub mod anomaly;
pub mod chain;
pub mod encode;
pub mod fields;
pub mod metrics;
pub mod queue;
pub mod record;
pub mod shipper;
pub mod time;

pub use self::fields::{AuditPath, ClientIp, Method, Name, Pseudonymizer, RequestId, Subject};
pub use self::record::{
    Access, AlertKind, AuditRecord, AuthnFailure, AuthzDecision, AuthzOutcome, Code, ConfigLoaded,
    DataAccess, Decision, ErrorRecord, RateLimited, RecordBody, RecordKind, RequestContext,
    RequestFacts, SecurityAlert,
};

use self::anomaly::AnomalyDetector;
use self::chain::Chain;
use self::record::RecordIds;
use self::shipper::Shipper;
use crate::config::audit::{AuditConfig, AuditFormat, IpTruncation, RetentionDays};
use crate::config::ConfigError;
use crate::host::Host;

/// Queue figures of one worker's audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditStats {
    /// Records waiting to be sent.
    pub pending: usize,
    /// Batches awaiting the collector's answer.
    pub in_flight_batches: usize,
    /// Records held (waiting plus in flight); never more than `max_queue`.
    pub held: usize,
    /// Records dropped on overflow since start.
    pub dropped: u64,
}

/// One worker's audit stage: record building, anomaly detection, optional chain,
/// queue and transport.
#[derive(Debug, Clone)]
pub struct AuditLog {
    format: AuditFormat,
    retention: RetentionDays,
    truncation: IpTruncation,
    record_granted_authz: bool,
    pseudonymizer: Pseudonymizer,
    ids: RecordIds,
    chain: Option<Chain>,
    anomaly: AnomalyDetector,
    shipper: Shipper,
}

impl AuditLog {
    /// The audit stage for `config`. `seed` makes this worker's record ids
    /// distinct from other workers' (e.g. host clock in ns mixed with the root
    /// context id).
    pub fn new(config: &AuditConfig, seed: u64) -> Result<AuditLog, ConfigError> {
        config.validate()?;
        let key = config.pseudonym_key.as_deref().unwrap_or("").as_bytes();
        Ok(AuditLog {
            format: config.format,
            retention: config.retention_days.clone(),
            truncation: config.client_ip_truncation,
            record_granted_authz: config.record_granted_authz,
            pseudonymizer: Pseudonymizer::new(config.subject_mode, key),
            ids: RecordIds::new(seed),
            chain: config.chain.then(Chain::new),
            anomaly: AnomalyDetector::new(&config.anomaly),
            shipper: Shipper::new(config),
        })
    }

    /// Reduces a request's raw facts to the fields records may carry.
    pub fn context(&self, facts: &RequestFacts<'_>) -> RequestContext {
        RequestContext::from_facts(facts, &self.pseudonymizer, &self.truncation)
    }

    /// The record value of a subject (pseudonym, or raw in raw mode).
    pub fn subject(&self, raw: &str) -> Subject {
        self.pseudonymizer.subject(raw)
    }

    /// Records an event at the host's current time. Also feeds the anomaly
    /// detectors (an `access` counts a request, a denied `authz_decision` a
    /// denial, for the context's subject) and queues the `security_alert`s they
    /// raise. Granted authorization decisions are counted but only recorded when
    /// `record_granted_authz` is set. Only queues: never calls out.
    pub fn record(&mut self, host: &dyn Host, context: Option<&RequestContext>, body: RecordBody) {
        let now_ms = host.now_ms();
        let subject = context.and_then(|c| c.subject.as_ref());
        let alert = match (&body, subject) {
            (RecordBody::Access(_), Some(s)) => self.anomaly.on_request(s, now_ms),
            (RecordBody::AuthzDecision(d), Some(s)) if d.outcome == AuthzOutcome::Denied => {
                self.anomaly.on_denial(s, now_ms)
            }
            _ => None,
        };
        let skip = matches!(&body, RecordBody::AuthzDecision(d)
            if d.outcome == AuthzOutcome::Granted && !self.record_granted_authz);
        if !skip {
            self.push(host, now_ms, context.cloned(), body);
        }
        if let Some(alert) = alert {
            self.push(host, now_ms, context.cloned(), RecordBody::SecurityAlert(alert));
        }
    }

    fn push(
        &mut self,
        host: &dyn Host,
        now_ms: u64,
        context: Option<RequestContext>,
        body: RecordBody,
    ) {
        if body.kind() == RecordKind::SecurityAlert {
            host.count(metrics::SECURITY_ALERTS, 1);
        }
        let mut record =
            AuditRecord::new(self.ids.next_id(), now_ms, &self.retention, context, body);
        let canonical = self.chain.as_mut().map(|chain| chain.link(&mut record));
        let item = encode::encode_record(self.format, &record, canonical);
        self.shipper.push(item, host);
    }

    /// Tick: gives up on unanswered batches and sends what is due.
    pub fn on_tick(&mut self, host: &dyn Host) {
        self.shipper.on_tick(host.now_ms(), host);
    }

    /// The answer to an audit batch (`status` `None`: the call failed or timed out).
    pub fn on_http_response(&mut self, host: &dyn Host, call_id: u32, status: Option<u16>) {
        self.shipper.on_response(call_id, status, host.now_ms(), host);
    }

    /// Whether `call_id` is an audit batch awaiting its answer (route the
    /// callback here) rather than another call (JWKS).
    pub fn is_own_call(&self, call_id: u32) -> bool {
        self.shipper.is_waiting_for(call_id)
    }

    /// The tick period to ask the host for.
    pub fn tick_period_ms(&self) -> u64 {
        self.shipper.tick_period_ms()
    }

    /// Queue figures.
    pub fn stats(&self) -> AuditStats {
        let q = self.shipper.queue();
        AuditStats {
            pending: q.pending(),
            in_flight_batches: q.in_flight_batches(),
            held: q.held(),
            dropped: q.dropped(),
        }
    }
}

#[cfg(test)]
mod tests;
