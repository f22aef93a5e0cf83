//! The request/response pipeline: authn -> lockout -> rbac -> rate -> redact -> audit.
//!
//! An [`Engine`] is compiled once per policy (per wasm VM) and used for every
//! request. Each stage's outcome is returned as data: headers to change, a local
//! reply to send, bytes to put in place of a body, a [`RequestContext`] carried to
//! the later phases. The host adapters only translate these into host calls.

mod body;
mod reply;
pub mod state;

pub use body::{BodyAction, ResponseHeadersVerdict, ResponsePlan};
pub use reply::{internal, json_body, unauthorized, LocalReply};
pub use state::{PendingRequest, StateAnswer, StatePlan, StateQuery};
use state::Stages;

use crate::audit::{self, AuditLog, RecordBody};
use crate::client_ip::client_ip;
use crate::config::{ConfigError, Policy};
use crate::host::{Host, LogLevel};
use crate::jwt::extract::{remove_cookie, remove_query_param, TokenLocation};
use crate::jwt::{AuthnFailure, CacheStatus, TokenVerifier, Verification, VerifiedToken};
use crate::lockout::{CompiledLockout, LockState};
use crate::path::NormalizedPath;
use crate::pii::{BodyKind, Findings, Redactor};
use crate::ratelimit::{CompiledRateLimits, RateCaller, RateOutcome};
use crate::rbac::{CompiledRbac, DenyReason, ResponseFieldFilter};
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

/// The compiled-in default policy (validated by build.rs).
pub const DEFAULT_POLICY: &[u8] = include_bytes!("../../policy/default.json");

/// Header carrying the shadow-mode verdict to the upstream.
pub const SHADOW_HEADER: &str = "x-chatguard-shadow";

/// A request as the adapters see it at the headers phase.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: String,
    /// The raw `:path`, query included.
    pub path: String,
    pub authority: String,
    /// Header names lower-case (as HTTP/2 and Envoy give them).
    pub headers: Vec<(String, String)>,
    /// The downstream peer (`ip:port`), as the host reports it.
    pub downstream: Option<String>,
    /// The headers did not end the stream: a body follows. Needed because a
    /// body need not announce itself: HTTP/2 bodies often have no
    /// `content-length`, and Envoy strips HTTP/1 `transfer-encoding: chunked`.
    pub body_follows: bool,
}

impl RequestHead {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The request id (`x-request-id`, set by Envoy), if any.
    pub fn request_id(&self) -> Option<&str> {
        self.header("x-request-id")
    }

    fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }
}

/// Changes to the request before it goes upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Headers to remove (lower-case names).
    pub remove: Vec<String>,
    /// Headers to set, replacing any value.
    pub set: Vec<(String, String)>,
}

/// What the engine learned about a request, carried to the later phases.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The verified token, when the caller authenticated.
    pub token: Option<Rc<VerifiedToken>>,
    /// Why authentication failed, when it did.
    pub authn_failure: Option<AuthnFailure>,
    /// Whether the token came from the cache (for metrics).
    pub cache: Option<CacheStatus>,
    /// Name of the provider that verified the token.
    pub provider: Option<String>,
    /// Host clock when the request arrived (for latency).
    pub started_ms: u64,
    /// Status of the local reply, when the filter answered itself.
    pub local_status: Option<u16>,
    /// Why the request was refused (a code), when it was.
    pub deny_code: Option<&'static str>,
    /// The matched rule id.
    pub rule: Option<String>,
    /// The caller's roles (RBAC).
    pub roles: Vec<String>,
    /// The client address used for limits and audit.
    pub client_ip: Option<IpAddr>,
    /// Request body handling, when the body is inspected.
    pub request_body: Option<BodyKind>,
    /// The caller holds `pii.exempt_permission`: responses are not redacted.
    pub exempt: bool,
    /// JSON fields to remove from the response (RBAC `response_fields`).
    pub response_fields: Option<ResponseFieldFilter>,
    /// Headers to add to the response (rate-limit quota).
    pub response_headers: Vec<(String, String)>,
    /// Response body handling, decided at the response headers.
    pub response: ResponsePlan,
    /// What redaction found, per direction.
    pub request_findings: Findings,
    pub response_findings: Findings,
    /// LLM tokens the response reported (`usage.total_tokens`).
    pub response_tokens: Option<u64>,
    /// The reduced request facts for audit records.
    pub audit: Option<audit::RequestContext>,
    /// Lockout and rate state live elsewhere ([`state`]): the LLM token
    /// charge goes there too ([`Engine::charge_query`]), not to the host.
    pub remote_state: bool,
}

impl RequestContext {
    fn subject(&self) -> Option<&str> {
        self.token.as_ref().and_then(|t| t.subject.as_deref())
    }
}

/// The engine's answer at the headers phase.
#[derive(Debug, Clone)]
pub enum RequestVerdict {
    /// Send upstream with these edits.
    Forward { edits: HeaderEdits, ctx: RequestContext },
    /// Answer with this reply; the request goes no further.
    Respond { reply: LocalReply, ctx: RequestContext },
    /// A provider's keys are being fetched: park the request and call
    /// [`Engine::on_request_headers`] again with `may_wait == false` once
    /// [`Engine::jwks_finished`] was called for it (or the wait timed out).
    WaitForKeys { provider: usize },
}

/// Settings of the redaction stage the pipeline needs besides the redactor.
struct PiiStage {
    redactor: Redactor,
    request: bool,
    response: bool,
    exempt_permission: Option<String>,
}

/// The compiled policy plus per-worker state.
pub struct Engine {
    verifier: TokenVerifier,
    rbac: Option<CompiledRbac>,
    rate: CompiledRateLimits,
    lockout: Option<CompiledLockout>,
    pii: Option<PiiStage>,
    xff_trusted_hops: u32,
    audit: Option<RefCell<AuditLog>>,
    policy_hash: String,
    source: Vec<u8>,
    description: Option<String>,
}

impl Engine {
    /// Compiles a policy document (Envoy's plugin configuration or a file).
    pub fn from_json(bytes: &[u8]) -> Result<Engine, ConfigError> {
        let policy = Policy::from_json(bytes)?;
        Engine::compile(&policy, bytes)
    }

    /// The compiled-in default policy.
    pub fn default_policy() -> Result<Engine, ConfigError> {
        Engine::from_json(DEFAULT_POLICY)
    }

    /// Compiles a validated policy; `source` is hashed for `config_loaded` records.
    pub fn compile(policy: &Policy, source: &[u8]) -> Result<Engine, ConfigError> {
        Engine::compile_seeded(policy, source, 0)
    }

    /// Like [`Engine::compile`]; `seed` makes this worker's audit record ids
    /// and slot hashing distinct (the adapter passes clock ^ context id).
    pub fn compile_seeded(policy: &Policy, source: &[u8], seed: u64) -> Result<Engine, ConfigError> {
        let verifier = TokenVerifier::compile(&policy.jwt)?;
        let rbac = match &policy.rbac {
            // The default policy's matrix was flattened at build time.
            Some(_) if source == DEFAULT_POLICY => CompiledRbac::default_policy(),
            Some(cfg) => Some(CompiledRbac::compile(cfg)?),
            None => None,
        };
        let pii = match &policy.pii {
            Some(cfg) => Some(PiiStage {
                redactor: Redactor::compile(cfg)?,
                request: cfg.request,
                response: cfg.response,
                exempt_permission: cfg.exempt_permission.clone(),
            }),
            None => None,
        };
        let audit = match &policy.audit {
            Some(cfg) => Some(RefCell::new(AuditLog::new(cfg, seed)?)),
            None => None,
        };
        let digest = hmac_sha256::Hash::hash(source);
        Ok(Engine {
            verifier,
            rbac,
            rate: CompiledRateLimits::compile(policy)?,
            lockout: CompiledLockout::compile(policy)?,
            pii,
            xff_trusted_hops: policy.client_ip.xff_trusted_hops,
            audit,
            policy_hash: hex(&digest[..8]),
            source: source.to_vec(),
            description: policy.description.clone(),
        })
    }

    /// Short hash of the policy document (first 8 bytes of SHA-256, hex).
    pub fn policy_hash(&self) -> &str {
        &self.policy_hash
    }

    /// The policy's description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The JWT stage (for JWKS scheduling by the adapter, and the CLI).
    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// The RBAC stage, if configured.
    pub fn rbac(&self) -> Option<&CompiledRbac> {
        self.rbac.as_ref()
    }

    /// Records `config_loaded` (call once after the policy is in use).
    pub fn announce(&self, host: &dyn Host) {
        self.record(host, None, RecordBody::ConfigLoaded(audit::ConfigLoaded::new(&self.source)));
    }

    fn record(&self, host: &dyn Host, ctx: Option<&audit::RequestContext>, body: RecordBody) {
        if let Some(a) = &self.audit {
            a.borrow_mut().record(host, ctx, body);
        }
    }

    /// [`Engine::record`], held back in a quiet pass ([`state`]).
    fn record_in(&self, stages: &Stages<'_>, host: &dyn Host, ctx: Option<&audit::RequestContext>, body: RecordBody) {
        if !stages.quiet() {
            self.record(host, ctx, body);
        }
    }

    /// Runs the request-headers phase. `may_wait == false` is the second
    /// evaluation of a parked request (and the CLI).
    pub fn on_request_headers(&self, host: &dyn Host, head: &RequestHead, may_wait: bool) -> RequestVerdict {
        self.run_request(host, head, may_wait, &mut Stages::Local)
    }

    /// The headers phase with the state stages reached through `stages`.
    fn run_request(&self, host: &dyn Host, head: &RequestHead, may_wait: bool, stages: &mut Stages<'_>) -> RequestVerdict {
        let now_ms = host.now_ms();
        let request_id = head.request_id();
        let mut ctx = RequestContext { started_ms: now_ms, remote_state: stages.remote(), ..RequestContext::default() };
        let mut edits = HeaderEdits::default();
        // Headers the filter sets for upstream must never come from the client.
        for name in self.verifier.claim_header_names() {
            edits.remove.push(name.to_ascii_lowercase());
        }
        edits.remove.push(SHADOW_HEADER.into());
        // Once per request: a parked request's retry, and pass 1 of remote
        // state (quiet), do not count; pass 2 does.
        if may_wait || matches!(stages, Stages::Answered { .. }) {
            host.count("requests_total", 1);
        }

        let path = match NormalizedPath::parse(&head.path) {
            Ok(p) => p,
            Err(e) => {
                host.count("bad_path", 1);
                host.log(LogLevel::Info, &format!("refused path: {} request_id={}", e.as_str(), request_id.unwrap_or("-")));
                return Self::refuse(ctx, reply::bad_path(e.as_str(), request_id), e.as_str());
            }
        };
        ctx.client_ip = client_ip(head.downstream.as_deref(), head.header("x-forwarded-for"), self.xff_trusted_hops);
        ctx.audit = self.audit.as_ref().map(|a| {
            a.borrow().context(&audit::RequestFacts {
                request_id,
                method: &head.method,
                path: path.as_str(),
                subject: None,
                roles: &[],
                client_ip: head.downstream.as_deref(),
            })
        });

        // Lockout first: a locked client costs one shared-data read, no crypto
        // (with remote state the token is verified in pass 1: see `state`).
        match stages.lock_state(self, host, ctx.client_ip) {
            None | Some(Ok(LockState::Open)) => {}
            Some(Ok(LockState::Locked { retry_after_secs })) => {
                host.count("locked_out", 1);
                return Self::refuse(ctx, reply::locked_out(retry_after_secs, request_id), "locked_out");
            }
            Some(Err(f)) => {
                host.log(LogLevel::Warn, &format!("lockout state unavailable: {f}; refusing"));
                return Self::refuse(ctx, reply::unavailable(f.status(), request_id), "state_unavailable");
            }
        }

        let route = self.rbac.as_ref().map(|r| r.route(&head.method, &head.authority, &path));
        let needs_token = match &route {
            Some(r) => r.requires_authentication(),
            None => self.verifier.provider_count() > 0,
        };
        match self.verifier.find_token(&head.headers, head.query()) {
            None if needs_token => return self.deny_authn(host, head, ctx, AuthnFailure::Missing, stages),
            None => {}
            Some(found) => match stages.verify(self, &found, now_ms, may_wait) {
                Verification::NeedKeys { provider } => return RequestVerdict::WaitForKeys { provider },
                Verification::Failed(reason) => return self.deny_authn(host, head, ctx, reason, stages),
                Verification::Verified(token, cache) => {
                    host.count(
                        match cache {
                            CacheStatus::Hit => "token_cache_hits",
                            CacheStatus::Miss => "token_cache_misses",
                        },
                        1,
                    );
                    self.add_claim_headers(&token, &mut edits);
                    if !self.verifier.forwards(token.provider) {
                        strip_token(head, &found.location, &mut edits);
                    }
                    ctx.provider = Some(self.verifier.provider_name(token.provider).to_string());
                    ctx.cache = Some(cache);
                    ctx.token = Some(token);
                }
            },
        }

        if let (Some(rbac), Some(route)) = (&self.rbac, &route) {
            let decision = rbac.decide(route, ctx.token.as_ref().map(|t| &t.claims), now_ms);
            ctx.rule = rbac.rule_id(&decision).map(str::to_string);
            ctx.roles = rbac.role_names(&decision).map(str::to_string).collect();
            if let (Some(a), Some(audit_ctx)) = (&self.audit, ctx.audit.as_mut()) {
                let roles = ctx.roles.clone();
                *audit_ctx = a.borrow().context(&audit::RequestFacts {
                    request_id,
                    method: &head.method,
                    path: path.as_str(),
                    subject: ctx.token.as_ref().and_then(|t| t.subject.as_deref()),
                    roles: &roles,
                    client_ip: head.downstream.as_deref(),
                });
            }
            let missing = rbac.missing_permission(&decision).map(str::to_string);
            self.record_in(
                stages,
                host,
                ctx.audit.as_ref(),
                RecordBody::AuthzDecision(audit::AuthzDecision {
                    outcome: if decision.allowed { audit::AuthzOutcome::Granted } else { audit::AuthzOutcome::Denied },
                    rule: ctx.rule.as_deref().map(audit::Name::new),
                    missing_permission: missing.as_deref().map(audit::Name::new),
                    condition: decision.reason.map(|r| r.as_str()),
                }),
            );
            if !decision.allowed {
                let reason = decision.reason.unwrap_or(DenyReason::NoRule);
                host.log(
                    LogLevel::Info,
                    &format!(
                        "authz {}: reason={} rule={} missing={} request_id={}",
                        if decision.enforced { "denied" } else { "would deny (shadow)" },
                        reason.as_str(),
                        ctx.rule.as_deref().unwrap_or("-"),
                        missing.as_deref().unwrap_or("-"),
                        request_id.unwrap_or("-")
                    ),
                );
                if !decision.enforced {
                    host.count("authz_shadow_denied", 1);
                    edits.set.push((SHADOW_HEADER.into(), rbac.shadow_header(&decision)));
                } else if reason == DenyReason::Unauthenticated {
                    return self.deny_authn(host, head, ctx, AuthnFailure::Missing, stages);
                } else {
                    host.count("authz_denied", 1);
                    return Self::refuse(ctx, reply::forbidden(reason, request_id), reason.as_str());
                }
            }
            if let Some(pii) = &self.pii {
                ctx.exempt = pii.exempt_permission.as_deref().is_some_and(|p| rbac.holds(&decision, p));
            }
            ctx.response_fields = rbac.response_filter(&decision).cloned();
        }

        if !self.rate.is_empty() {
            // Every caller holds the anonymous role's permissions, but a limit
            // narrowed to that role is meant for callers without a token.
            let anonymous = self.rbac.as_ref().and_then(|r| r.anonymous_role_name());
            let roles: Vec<&str> = ctx
                .roles
                .iter()
                .map(String::as_str)
                .filter(|r| ctx.token.is_none() || Some(*r) != anonymous)
                .collect();
            let header = |name: &str| head.header(name);
            let caller = RateCaller {
                subject: ctx.subject(),
                client_ip: ctx.client_ip,
                roles: &roles,
                rule: ctx.rule.as_deref(),
                header: &header,
            };
            match stages.rate_check(self, host, &caller) {
                RateOutcome::Allowed { headers } => ctx.response_headers.extend(headers),
                RateOutcome::Limited { limit, retry_after_secs, headers, shadow } => {
                    self.record_in(
                        stages,
                        host,
                        ctx.audit.as_ref(),
                        RecordBody::RateLimited(audit::RateLimited {
                            limit: audit::Name::new(&limit),
                            retry_after_s: retry_after_secs,
                        }),
                    );
                    if !shadow {
                        host.count("rate_limited", 1);
                        return Self::refuse(ctx, reply::rate_limited(&limit, headers, request_id), "rate_limited");
                    }
                }
                RateOutcome::StoreFailed(f) => {
                    host.log(LogLevel::Warn, &format!("rate limit state unavailable: {f}; refusing"));
                    return Self::refuse(ctx, reply::unavailable(f.status(), request_id), "state_unavailable");
                }
            }
        }

        if let Some(reply) = self.plan_request_body(host, head, &mut ctx, &mut edits) {
            let code = if reply.status == 413 {
                host.count("body_too_large", 1);
                "body_too_large"
            } else {
                "uninspectable_body"
            };
            return Self::refuse(ctx, reply, code);
        }
        RequestVerdict::Forward { edits, ctx }
    }

    /// Decides whether the request body is inspected; drops `content-length`
    /// when it may change, and asks the upstream not to compress the response.
    fn plan_request_body(&self, host: &dyn Host, head: &RequestHead, ctx: &mut RequestContext, edits: &mut HeaderEdits) -> Option<LocalReply> {
        let pii = self.pii.as_ref()?;
        if pii.response && !ctx.exempt {
            edits.set.push(("accept-encoding".into(), "identity".into()));
        }
        if !pii.request {
            return None;
        }
        let has_body = head.body_follows
            || head.header("content-length").is_some_and(|l| l != "0")
            || head.header("transfer-encoding").is_some();
        if !has_body {
            return None;
        }
        let kind = pii.redactor.classify(head.header("content-type").unwrap_or(""));
        if kind == BodyKind::Other {
            host.count("pii_unlisted_content_type.request", 1);
            return None;
        }
        if head.header("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
            return Some(reply::unsupported_media(head.request_id()));
        }
        if head.header("content-length").and_then(|l| l.parse::<usize>().ok()).is_some_and(|l| l > pii.redactor.max_body_bytes()) {
            return Some(reply::too_large(head.request_id()));
        }
        edits.remove.push("content-length".into());
        ctx.request_body = Some(kind);
        None
    }

    /// A local reply; the status and code go to the access record at `on_log`.
    fn refuse(mut ctx: RequestContext, reply: LocalReply, code: &'static str) -> RequestVerdict {
        ctx.local_status = Some(reply.status);
        ctx.deny_code = Some(code);
        RequestVerdict::Respond { reply, ctx }
    }

    fn deny_authn(
        &self,
        host: &dyn Host,
        head: &RequestHead,
        mut ctx: RequestContext,
        reason: AuthnFailure,
        stages: &mut Stages<'_>,
    ) -> RequestVerdict {
        host.count(&format!("authn_failures.{}", reason.code()), 1);
        host.log(
            LogLevel::Info,
            &format!("authn denied: reason={} request_id={}", reason.code(), head.request_id().unwrap_or("-")),
        );
        self.record_in(
            stages,
            host,
            ctx.audit.as_ref(),
            RecordBody::AuthnFailure(audit::AuthnFailure { reason: reason.code(), provider: None }),
        );
        // A missing token is not a guess; a wrong one is.
        if reason != AuthnFailure::Missing {
            if let Some(outcome) = stages.record_failure(self, host, ctx.client_ip) {
                match outcome {
                    Ok(Some(alert)) => {
                        host.count("security_alerts", 1);
                        host.log(
                            LogLevel::Warn,
                            &format!(
                                "lockout: {} failures within {}s; locked for {}s",
                                alert.failures, alert.window_seconds, alert.lock_seconds
                            ),
                        );
                        self.record_in(
                            stages,
                            host,
                            ctx.audit.as_ref(),
                            RecordBody::SecurityAlert(audit::SecurityAlert {
                                alert: audit::AlertKind::Lockout,
                                count: u64::from(alert.failures),
                                threshold: u64::from(alert.failures),
                                window_seconds: alert.window_seconds,
                            }),
                        );
                    }
                    Ok(None) => {}
                    Err(f) => host.log(LogLevel::Warn, &format!("lockout state unavailable: {f}")),
                }
            }
        }
        ctx.authn_failure = Some(reason);
        let reply = unauthorized(reason, head.request_id());
        Self::refuse(ctx, reply, reason.code())
    }

    fn add_claim_headers(&self, token: &VerifiedToken, edits: &mut HeaderEdits) {
        for mapping in self.verifier.claim_to_headers(token.provider) {
            if let Some(value) = token.claim(&mapping.claim).and_then(header_value) {
                edits.set.push((mapping.header.to_ascii_lowercase(), value));
            }
        }
    }

    /// The end of a request (Envoy: `on_log`): the access record, what was
    /// redacted, and the LLM token charge. `status` is the response status.
    pub fn on_log(&self, host: &dyn Host, ctx: &RequestContext, status: u16) {
        let now = host.now_ms();
        let status = ctx.local_status.unwrap_or(status);
        // With remote state the adapter sends `charge_query` instead.
        if let (Some(tokens), Some(_), false) = (ctx.response_tokens, ctx.token.as_ref(), ctx.remote_state) {
            let roles: Vec<&str> = ctx.roles.iter().map(String::as_str).collect();
            let none = |_: &str| None;
            let caller = RateCaller {
                subject: ctx.subject(),
                client_ip: ctx.client_ip,
                roles: &roles,
                rule: ctx.rule.as_deref(),
                header: &none,
            };
            if let Err(f) = self.rate.charge(host, &caller, tokens) {
                host.log(LogLevel::Warn, &format!("cannot charge {tokens} LLM tokens: {f}"));
            }
        }
        if !ctx.request_findings.is_empty() || !ctx.response_findings.is_empty() {
            self.record(
                host,
                ctx.audit.as_ref(),
                RecordBody::DataAccess(audit::DataAccess {
                    request_entities: findings_map(&ctx.request_findings),
                    response_entities: findings_map(&ctx.response_findings),
                    redacted: true,
                }),
            );
        }
        self.record(
            host,
            ctx.audit.as_ref(),
            RecordBody::Access(audit::Access {
                rule: ctx.rule.as_deref().map(audit::Name::new),
                status,
                decision: if ctx.local_status.is_some() { audit::Decision::Deny } else { audit::Decision::Allow },
                reason: ctx.deny_code,
                latency_ms: now.saturating_sub(ctx.started_ms),
            }),
        );
    }

    /// Background work on the host's tick: audit batches.
    pub fn on_tick(&self, host: &dyn Host) {
        if let Some(a) = &self.audit {
            a.borrow_mut().on_tick(host);
        }
    }

    /// Tick period the engine wants (audit flush granularity), if any.
    pub fn tick_period_ms(&self) -> Option<u64> {
        self.audit.as_ref().map(|a| a.borrow().tick_period_ms())
    }

    /// Queue figures of the audit stage, if configured (the edge worker keeps
    /// ticking while records are pending, having no timer of its own).
    pub fn audit_stats(&self) -> Option<audit::AuditStats> {
        self.audit.as_ref().map(|a| a.borrow().stats())
    }

    /// Whether an outbound call id belongs to the audit shipper.
    pub fn is_audit_call(&self, call_id: u32) -> bool {
        self.audit.as_ref().is_some_and(|a| a.borrow().is_own_call(call_id))
    }

    /// The answer to an audit batch (`None`: no answer).
    pub fn audit_call_finished(&self, host: &dyn Host, call_id: u32, status: Option<u16>) {
        if let Some(a) = &self.audit {
            a.borrow_mut().on_http_response(host, call_id, status);
        }
    }

    /// Remote JWKS fetches due now (adapters call this on tick).
    pub fn jwks_due(&self, now_ms: u64) -> Vec<(usize, crate::host::OutboundRequest)> {
        self.verifier.jwks_due(now_ms)
    }

    /// Hands a JWKS answer to the verifier, logging and counting the outcome.
    pub fn jwks_finished(&self, host: &dyn Host, provider: usize, status: Option<u16>, body: &[u8]) {
        use crate::jwt::remote::FetchOutcome;
        let name = self.verifier.provider_name(provider).to_string();
        match self.verifier.jwks_finished(provider, host.now_ms(), status, body) {
            Some(FetchOutcome::Updated { keys, skipped }) => {
                host.count("jwks_fetches.ok", 1);
                host.log(LogLevel::Info, &format!("jwks updated: provider={name} keys={keys} skipped={}", skipped.len()));
                for (i, why) in skipped {
                    host.log(LogLevel::Warn, &format!("jwks key skipped: provider={name} index={i}: {why}"));
                }
            }
            Some(FetchOutcome::Failed(why)) => {
                host.count("jwks_fetches.failed", 1);
                host.log(LogLevel::Warn, &format!("jwks fetch failed: provider={name}: {why:?}; keeping the last good set"));
            }
            None => {}
        }
    }
}

fn findings_map(f: &Findings) -> std::collections::BTreeMap<audit::Name, u64> {
    crate::pii::Entity::ALL
        .iter()
        .filter(|e| f.count(**e) > 0)
        .map(|e| (audit::Name::new(e.name()), u64::from(f.count(*e))))
        .collect()
}

/// A claim rendered as a header value: strings as is, numbers and booleans in
/// JSON form, arrays of scalars comma-joined; objects and control characters
/// are not rendered (a header must stay one line).
fn header_value(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => {
            let parts: Option<Vec<String>> =
                items.iter().map(|i| if i.is_array() { None } else { header_value(i) }).collect();
            parts?.join(",")
        }
        _ => return None,
    };
    (!s.bytes().any(|b| b.is_ascii_control())).then_some(s)
}

fn strip_token(head: &RequestHead, location: &TokenLocation, edits: &mut HeaderEdits) {
    match location {
        TokenLocation::Header(name) => edits.remove.push(name.clone()),
        TokenLocation::Param(name) => {
            if let Some((path, query)) = head.path.split_once('?') {
                let rest = remove_query_param(query, name);
                let new_path = if rest.is_empty() { path.to_string() } else { format!("{path}?{rest}") };
                edits.set.push((":path".into(), new_path));
            }
        }
        TokenLocation::Cookie(name) => {
            if let Some(cookie) = head.header("cookie") {
                let rest = remove_cookie(cookie, name);
                if rest.is_empty() {
                    edits.remove.push("cookie".into());
                } else {
                    edits.set.push(("cookie".into(), rest));
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
