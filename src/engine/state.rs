//! Lockout and rate-limit state kept by another process (the edge worker's
//! Durable Object), reached asynchronously.
//!
//! The pipeline's state stages (lockout check, failure count, rate check) are
//! synchronous calls on the host's shared store. A store that can only be
//! reached with an await cannot sit behind that, so a request goes through the
//! pipeline in two passes and the stages run where the state lives:
//!
//! 1. [`Engine::plan_state`]: the pipeline runs with the state stages only
//!    *collecting* what they would ask, with no side effect (no counter, log
//!    or audit record). The result is a [`StateQuery`]: the client address for
//!    the lock, whether an authentication failure is to be counted, the rate
//!    stage's inputs (subject, roles, rule, keyed header values).
//! 2. The state's owner, an engine compiled from the same policy, answers it
//!    with [`Engine::answer_state`]: the *same* `CompiledLockout` /
//!    `CompiledRateLimits` code over its own store, in one synchronous step
//!    (lock check, then the failure count or the rate check).
//! 3. [`Engine::resume`]: the pipeline runs again, for real, taking each state
//!    stage's outcome from the [`StateAnswer`]; the token verified in pass 1 is
//!    reused, so nothing is verified twice.
//!
//! One round trip per request, and only when the policy has a lockout or a
//! rate limit that applies. The one difference from the local order: the token
//! is verified before the lock is known, so the first request of a locked-out
//! client costs a verification (it is refused exactly as before, with nothing
//! counted, logged or audited but the lockout). The worker then remembers the
//! lock in its own store ([`CompiledLockout::remember_lock`]; locks are never
//! shortened, so the memo cannot be wrong) and refuses that client with no
//! round trip and no verification. A missing answer (owner unreachable,
//! policy mismatch) fails closed like a failed shared store: 503.
//!
//! [`CompiledLockout::remember_lock`]: crate::lockout::CompiledLockout::remember_lock

use super::{Engine, RequestHead, RequestVerdict};
use crate::host::{CallError, Cas, Host, LogLevel, OutboundRequest, StoreError};
use crate::jwt::Verification;
use crate::lockout::{LockState, LockoutAlert};
use crate::ratelimit::{RateCaller, RateOutcome, StoreFailure};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What a request asks of the state owner. Carries no token and no claim
/// value besides the subject, roles and rule the rate keys need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// Hash of the asking engine's policy: the owner refuses another policy's query.
    pub policy: String,
    /// The client address (the lockout key, and rate keys falling back to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    /// Check the lock of `client_ip`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub lockout: bool,
    /// Count one authentication failure for `client_ip` (if not locked).
    #[serde(default, skip_serializing_if = "is_false")]
    pub failure: bool,
    /// Decide the rate limits (if not locked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateInputs>,
    /// Charge LLM tokens after a response (sent on its own, answer unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<Charge>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The rate stage's view of a caller ([`RateCaller`] without borrows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateInputs {
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub rule: Option<String>,
    /// Values of the request headers limits key on (only those).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// LLM tokens to charge to a caller's `response_tokens` buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Charge {
    pub caller: RateInputs,
    pub tokens: u64,
}

impl StateQuery {
    /// Whether no stage needs the state: resume without asking anyone.
    pub fn is_empty(&self) -> bool {
        !self.lockout && !self.failure && self.rate.is_none() && self.charge.is_none()
    }

    /// The query as JSON bytes (what the worker carries to the owner).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses [`StateQuery::to_bytes`]; `None` for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<StateQuery> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Why the owner could not answer a stage (wire form of [`StoreFailure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFailure {
    Contention,
    Unavailable,
}

impl From<StoreFailure> for WireFailure {
    fn from(f: StoreFailure) -> Self {
        match f {
            StoreFailure::Contention => WireFailure::Contention,
            StoreFailure::Unavailable => WireFailure::Unavailable,
        }
    }
}

impl From<WireFailure> for StoreFailure {
    fn from(f: WireFailure) -> Self {
        match f {
            WireFailure::Contention => StoreFailure::Contention,
            WireFailure::Unavailable => StoreFailure::Unavailable,
        }
    }
}

/// The lock check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockAnswer {
    Open,
    Locked { retry_after_secs: u64 },
    Failed(WireFailure),
}

/// A lock that the counted failure started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAlert {
    pub failures: u32,
    pub window_seconds: u64,
    pub lock_seconds: u64,
    pub locked_until_ms: u64,
}

/// The failure count's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureAnswer {
    Counted { alert: Option<WireAlert> },
    Failed(WireFailure),
}

/// The rate stage's outcome (wire form of [`RateOutcome`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateAnswer {
    Allowed { headers: Vec<(String, String)> },
    Limited { limit: String, retry_after_secs: u64, headers: Vec<(String, String)>, shadow: bool },
    Failed(WireFailure),
}

impl From<RateOutcome> for RateAnswer {
    fn from(o: RateOutcome) -> Self {
        match o {
            RateOutcome::Allowed { headers } => RateAnswer::Allowed { headers },
            RateOutcome::Limited { limit, retry_after_secs, headers, shadow } => {
                RateAnswer::Limited { limit, retry_after_secs, headers, shadow }
            }
            RateOutcome::StoreFailed(f) => RateAnswer::Failed(f.into()),
        }
    }
}

impl From<RateAnswer> for RateOutcome {
    fn from(a: RateAnswer) -> Self {
        match a {
            RateAnswer::Allowed { headers } => RateOutcome::Allowed { headers },
            RateAnswer::Limited { limit, retry_after_secs, headers, shadow } => {
                RateOutcome::Limited { limit, retry_after_secs, headers, shadow }
            }
            RateAnswer::Failed(f) => RateOutcome::StoreFailed(f.into()),
        }
    }
}

/// The owner's answer. A stage without an answer (the owner could not be
/// reached, or refused the query) fails closed when the pipeline asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockAnswer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureAnswer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateAnswer>,
}

impl StateAnswer {
    /// No answer at all: the owner was unreachable. Every stage fails closed.
    pub fn unavailable() -> StateAnswer {
        StateAnswer::default()
    }

    /// The answer as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses [`StateAnswer::to_bytes`]; anything else is [`StateAnswer::unavailable`].
    pub fn from_bytes(bytes: &[u8]) -> StateAnswer {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

/// The first pass's outcome.
#[derive(Debug)]
pub enum StatePlan {
    /// Ask the owner [`PendingRequest::query`] (unless it is empty), then
    /// call [`Engine::resume`] with the answer.
    Ask(PendingRequest),
    /// A provider's keys are being fetched: as [`RequestVerdict::WaitForKeys`].
    WaitForKeys { provider: usize },
}

/// A request between its two passes.
#[derive(Debug)]
pub struct PendingRequest {
    query: StateQuery,
    verified: Option<Verification>,
}

impl PendingRequest {
    /// What to ask the state owner.
    pub fn query(&self) -> &StateQuery {
        &self.query
    }
}

/// How the pipeline's state stages reach the state in one pass.
#[derive(Debug)]
pub(crate) enum Stages<'a> {
    /// The host's shared store (Envoy shared data, an isolate's memory).
    Local,
    /// Pass 1: note what would be asked; no side effects.
    Collect { query: StateQuery, verified: Option<Verification> },
    /// Pass 2: outcomes from the owner's answer.
    Answered { answer: &'a StateAnswer, verified: Option<Verification> },
}

impl Stages<'_> {
    /// Whether side effects (audit records) are held back in this pass.
    pub(crate) fn quiet(&self) -> bool {
        matches!(self, Stages::Collect { .. })
    }

    /// Whether the state is somewhere else (the LLM token charge then is too).
    pub(crate) fn remote(&self) -> bool {
        !matches!(self, Stages::Local)
    }

    pub(crate) fn lock_state(
        &mut self,
        engine: &Engine,
        host: &dyn Host,
        client_ip: Option<IpAddr>,
    ) -> Option<Result<LockState, StoreFailure>> {
        let lockout = engine.lockout.as_ref()?;
        if let Stages::Local = self {
            return Some(lockout.check(host, None, client_ip));
        }
        // A lock this worker already learned from the owner (locks are never
        // shortened, so the memo cannot be wrong): refused with no round trip
        // and no verification, as a local lockout would.
        if let Ok(locked @ LockState::Locked { .. }) = lockout.check(host, None, client_ip) {
            return Some(Ok(locked));
        }
        Some(match self {
            Stages::Local => lockout.check(host, None, client_ip),
            Stages::Collect { query, .. } => {
                query.client_ip = client_ip;
                query.lockout = true;
                Ok(LockState::Open)
            }
            Stages::Answered { answer, .. } => match answer.lock {
                Some(LockAnswer::Open) => Ok(LockState::Open),
                Some(LockAnswer::Locked { retry_after_secs }) => {
                    remember(lockout, host, client_ip, retry_after_secs);
                    Ok(LockState::Locked { retry_after_secs })
                }
                Some(LockAnswer::Failed(f)) => Err(f.into()),
                None => Err(StoreFailure::Unavailable),
            },
        })
    }

    pub(crate) fn record_failure(
        &mut self,
        engine: &Engine,
        host: &dyn Host,
        client_ip: Option<IpAddr>,
    ) -> Option<Result<Option<LockoutAlert>, StoreFailure>> {
        let lockout = engine.lockout.as_ref()?;
        Some(match self {
            Stages::Local => lockout.record_failure(host, None, client_ip),
            Stages::Collect { query, .. } => {
                query.client_ip = client_ip;
                query.failure = true;
                Ok(None)
            }
            Stages::Answered { answer, .. } => match answer.failure {
                Some(FailureAnswer::Counted { alert }) => Ok(alert.map(|a| {
                    remember(lockout, host, client_ip, a.lock_seconds);
                    LockoutAlert {
                        key: lockout.key_kind(),
                        failures: a.failures,
                        window_seconds: a.window_seconds,
                        lock_seconds: a.lock_seconds,
                        locked_until_ms: a.locked_until_ms,
                    }
                })),
                Some(FailureAnswer::Failed(f)) => Err(f.into()),
                None => Err(StoreFailure::Unavailable),
            },
        })
    }

    pub(crate) fn rate_check(&mut self, engine: &Engine, host: &dyn Host, caller: &RateCaller<'_>) -> RateOutcome {
        match self {
            Stages::Local => engine.rate.check(host, caller),
            Stages::Collect { query, .. } => {
                query.client_ip = caller.client_ip;
                query.rate = Some(inputs(engine, caller));
                RateOutcome::Allowed { headers: Vec::new() }
            }
            Stages::Answered { answer, .. } => match &answer.rate {
                Some(a) => a.clone().into(),
                None => RateOutcome::StoreFailed(StoreFailure::Unavailable),
            },
        }
    }

    pub(crate) fn verify(
        &mut self,
        engine: &Engine,
        found: &crate::jwt::FoundToken<'_>,
        now_ms: u64,
        may_wait: bool,
    ) -> Verification {
        match self {
            Stages::Local => engine.verifier.verify(found, now_ms, may_wait),
            Stages::Collect { verified, .. } => {
                let v = engine.verifier.verify(found, now_ms, may_wait);
                *verified = Some(v.clone());
                v
            }
            // The token pass 1 verified (or refused); never wait in pass 2.
            Stages::Answered { verified, .. } => match verified.take() {
                Some(v) => v,
                None => engine.verifier.verify(found, now_ms, false),
            },
        }
    }
}

/// Keeps a lock the owner reported in this worker's own store, on this
/// worker's clock (whole seconds, so never shorter than the owner's).
fn remember(lockout: &crate::lockout::CompiledLockout, host: &dyn Host, client_ip: Option<IpAddr>, secs: u64) {
    let until = host.now_ms().saturating_add(secs.saturating_mul(1000));
    if let Err(f) = lockout.remember_lock(host, None, client_ip, until) {
        host.log(LogLevel::Warn, &format!("lock not remembered locally: {f}"));
    }
}

fn inputs(engine: &Engine, caller: &RateCaller<'_>) -> RateInputs {
    RateInputs {
        subject: caller.subject.map(str::to_string),
        roles: caller.roles.iter().map(|r| r.to_string()).collect(),
        rule: caller.rule.map(str::to_string),
        headers: engine
            .rate
            .header_names()
            .iter()
            .filter_map(|n| (caller.header)(n.as_str()).map(|v| (n.clone(), v.to_string())))
            .collect(),
    }
}

/// Runs a callback with a [`RateCaller`] built from wire inputs.
fn with_caller<T>(inputs: &RateInputs, client_ip: Option<IpAddr>, f: impl FnOnce(&RateCaller<'_>) -> T) -> T {
    let roles: Vec<&str> = inputs.roles.iter().map(String::as_str).collect();
    let header = |name: &str| inputs.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let caller = RateCaller {
        subject: inputs.subject.as_deref(),
        client_ip,
        roles: &roles,
        rule: inputs.rule.as_deref(),
        header: &header,
    };
    f(&caller)
}

/// The host of pass 1: the clock and reads of the worker's own store (the
/// locks it remembers). Counters, logs and calls are dropped; writes refused.
struct QuietHost<'a>(&'a dyn Host);

impl Host for QuietHost<'_> {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
    fn log(&self, _: LogLevel, _: &str) {}
    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
        self.0.shared_get(key)
    }
    fn shared_set(&self, _: &str, _: &[u8], _: Option<Cas>) -> Result<(), StoreError> {
        Err(StoreError::Unavailable)
    }
    fn http_call(&self, _: &OutboundRequest) -> Result<u32, CallError> {
        Err(CallError::Refused)
    }
    fn count(&self, _: &str, _: u64) {}
}

impl Engine {
    /// Pass 1 of a request whose lockout and rate state live elsewhere.
    pub fn plan_state(&self, host: &dyn Host, head: &RequestHead, may_wait: bool) -> StatePlan {
        let mut stages = Stages::Collect {
            query: StateQuery { policy: self.policy_hash.clone(), ..StateQuery::default() },
            verified: None,
        };
        let verdict = self.run_request(&QuietHost(host), head, may_wait, &mut stages);
        if let RequestVerdict::WaitForKeys { provider } = verdict {
            return StatePlan::WaitForKeys { provider };
        }
        match stages {
            Stages::Collect { query, verified } => StatePlan::Ask(PendingRequest { query, verified }),
            // Unreachable: the stages were built as Collect above.
            _ => StatePlan::Ask(PendingRequest { query: StateQuery::default(), verified: None }),
        }
    }

    /// Pass 2: the request's real evaluation with the owner's answer
    /// ([`StateAnswer::unavailable`] when it could not be asked: fails closed).
    /// Never answers [`RequestVerdict::WaitForKeys`].
    pub fn resume(&self, host: &dyn Host, head: &RequestHead, pending: PendingRequest, answer: &StateAnswer) -> RequestVerdict {
        let mut stages = Stages::Answered { answer, verified: pending.verified };
        match self.run_request(host, head, false, &mut stages) {
            // Cannot happen (no verification waits in pass 2); fail closed if it does.
            RequestVerdict::WaitForKeys { .. } => RequestVerdict::Respond {
                reply: super::reply::unavailable(503, head.request_id()),
                ctx: super::RequestContext::default(),
            },
            verdict => verdict,
        }
    }

    /// At the state owner: answers a query with this engine's lockout and rate
    /// stages over `host`'s store, in one synchronous step.
    pub fn answer_state(&self, host: &dyn Host, query: &StateQuery) -> StateAnswer {
        let mut answer = StateAnswer::default();
        if query.policy != self.policy_hash {
            host.count("state_policy_mismatch", 1);
            host.log(
                LogLevel::Error,
                &format!("state query refused: asked under policy {}, this store holds policy {}", query.policy, self.policy_hash),
            );
            return answer;
        }
        if let Some(charge) = &query.charge {
            let result = with_caller(&charge.caller, query.client_ip, |c| self.rate.charge(host, c, charge.tokens));
            if let Err(f) = result {
                host.log(LogLevel::Warn, &format!("cannot charge {} LLM tokens: {f}", charge.tokens));
            }
        }
        if query.lockout {
            if let Some(lockout) = &self.lockout {
                let lock = match lockout.check(host, None, query.client_ip) {
                    Ok(LockState::Open) => LockAnswer::Open,
                    Ok(LockState::Locked { retry_after_secs }) => LockAnswer::Locked { retry_after_secs },
                    Err(f) => LockAnswer::Failed(f.into()),
                };
                answer.lock = Some(lock);
                if lock != LockAnswer::Open {
                    return answer;
                }
            }
        }
        if query.failure {
            if let Some(lockout) = &self.lockout {
                answer.failure = Some(match lockout.record_failure(host, None, query.client_ip) {
                    Ok(alert) => FailureAnswer::Counted {
                        alert: alert.map(|a| WireAlert {
                            failures: a.failures,
                            window_seconds: a.window_seconds,
                            lock_seconds: a.lock_seconds,
                            locked_until_ms: a.locked_until_ms,
                        }),
                    },
                    Err(f) => FailureAnswer::Failed(f.into()),
                });
            }
        }
        if let Some(rate) = &query.rate {
            answer.rate = Some(with_caller(rate, query.client_ip, |c| self.rate.check(host, c)).into());
        }
        answer
    }

    /// With remote state, the LLM token charge of a finished request (see
    /// [`Engine::on_log`]): send it to the owner; its answer is not needed.
    pub fn charge_query(&self, ctx: &super::RequestContext) -> Option<StateQuery> {
        if !ctx.remote_state {
            return None;
        }
        let tokens = ctx.response_tokens.filter(|t| *t > 0)?;
        ctx.token.as_ref()?;
        Some(StateQuery {
            policy: self.policy_hash.clone(),
            client_ip: ctx.client_ip,
            charge: Some(Charge {
                caller: RateInputs {
                    subject: ctx.subject().map(str::to_string),
                    roles: ctx.roles.clone(),
                    rule: ctx.rule.clone(),
                    headers: Vec::new(),
                },
                tokens,
            }),
            ..StateQuery::default()
        })
    }
}

#[cfg(test)]
mod tests;
