//! The Envoy bootstrap for end-to-end tests: one HTTP listener on 127.0.0.1
//! (port chosen by the kernel) -> http_connection_manager -> the filters under
//! test -> router -> cluster `upstream`, plus named static clusters.
//!
//! The bootstrap is rendered as JSON, which is also valid YAML: Envoy reads it
//! from `envoy.yaml`, and serde does all the quoting of the policy text.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which HTTP filters sit before the router.
#[derive(Debug, Clone)]
pub(crate) enum Filters {
    /// Router only.
    None,
    /// The chatguard module in the V8 runtime.
    Chatguard { policy: String, wasm: Option<PathBuf> },
    /// Envoy's own jwt_authn (+ rbac, local_ratelimit when configured).
    Native(NativeBaseline),
}

/// Where the native baseline's jwt_authn gets its keys.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A JWKS JSON document inside the config.
    Inline(String),
    /// Fetched from `path` on static cluster `cluster`, cached `cache_seconds`.
    Remote { cluster: String, path: String, cache_seconds: u64 },
}

/// Envoy's native filters configured like a chatguard policy, as the baseline
/// the benchmarks compare against: jwt_authn with one provider named `corp`,
/// then (when configured) rbac denying path prefixes and local_ratelimit.
#[derive(Debug, Clone)]
pub struct NativeBaseline {
    issuer: String,
    audiences: Vec<String>,
    jwks: JwksSource,
    anonymous_prefixes: Vec<String>,
    deny_prefixes: Vec<String>,
    rate_limit: Option<(u32, u32, Duration)>,
    claim_to_headers: Vec<(String, String)>,
}

impl NativeBaseline {
    /// jwt_authn for `issuer` with an inline JWKS.
    pub fn inline_jwks(issuer: &str, jwks_json: &str) -> Self {
        Self::with(issuer, JwksSource::Inline(jwks_json.to_string()))
    }
    /// jwt_authn for `issuer` fetching keys from `path` on cluster `cluster`
    /// (add the cluster with [`EnvoyConfig::cluster`]); cached 600 s.
    pub fn remote_jwks(issuer: &str, cluster: &str, path: &str) -> Self {
        Self::with(
            issuer,
            JwksSource::Remote { cluster: cluster.to_string(), path: path.to_string(), cache_seconds: 600 },
        )
    }
    fn with(issuer: &str, jwks: JwksSource) -> Self {
        NativeBaseline {
            issuer: issuer.to_string(),
            audiences: Vec::new(),
            jwks,
            anonymous_prefixes: Vec::new(),
            deny_prefixes: Vec::new(),
            rate_limit: None,
            claim_to_headers: Vec::new(),
        }
    }
    /// Requires `aud` to contain `audience` (any of those added).
    pub fn audience(mut self, audience: &str) -> Self {
        self.audiences.push(audience.to_string());
        self
    }
    /// Paths under `prefix` need no token.
    pub fn anonymous_prefix(mut self, prefix: &str) -> Self {
        self.anonymous_prefixes.push(prefix.to_string());
        self
    }
    /// rbac answers 403 for paths under `prefix`.
    pub fn deny_prefix(mut self, prefix: &str) -> Self {
        self.deny_prefixes.push(prefix.to_string());
        self
    }
    /// local_ratelimit: a bucket of `max_tokens`, `tokens_per_fill` added every `fill_interval`.
    pub fn rate_limit(mut self, max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> Self {
        self.rate_limit = Some((max_tokens, tokens_per_fill, fill_interval));
        self
    }
    /// Copies claim `claim` to upstream header `header`.
    pub fn claim_to_header(mut self, claim: &str, header: &str) -> Self {
        self.claim_to_headers.push((claim.to_string(), header.to_string()));
        self
    }

    fn filters(&self) -> Vec<Value> {
        let mut provider = json!({ "issuer": self.issuer, "forward": true });
        if !self.audiences.is_empty() {
            provider["audiences"] = json!(self.audiences);
        }
        match &self.jwks {
            JwksSource::Inline(doc) => provider["local_jwks"] = json!({ "inline_string": doc }),
            JwksSource::Remote { cluster, path, cache_seconds } => {
                provider["remote_jwks"] = json!({
                    "http_uri": { "uri": format!("http://{cluster}{path}"), "cluster": cluster, "timeout": "5s" },
                    "cache_duration": format!("{cache_seconds}s"),
                })
            }
        }
        if !self.claim_to_headers.is_empty() {
            provider["claim_to_headers"] = self
                .claim_to_headers
                .iter()
                .map(|(claim, header)| json!({ "claim_name": claim, "header_name": header }))
                .collect();
        }
        let mut rules: Vec<Value> = self.anonymous_prefixes.iter().map(|p| json!({ "match": { "prefix": p } })).collect();
        rules.push(json!({ "match": { "prefix": "/" }, "requires": { "provider_name": "corp" } }));
        let mut filters = vec![json!({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": { "corp": provider },
                "rules": rules,
            }
        })];
        if !self.deny_prefixes.is_empty() {
            let permissions: Vec<Value> =
                self.deny_prefixes.iter().map(|p| json!({ "url_path": { "path": { "prefix": p } } })).collect();
            filters.push(json!({
                "name": "envoy.filters.http.rbac",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                    "rules": { "action": "DENY", "policies": { "denied-paths": {
                        "permissions": [{ "or_rules": { "rules": permissions } }],
                        "principals": [{ "any": true }],
                    } } }
                }
            }));
        }
        if let Some((max_tokens, per_fill, interval)) = self.rate_limit {
            let all = json!({ "numerator": 100, "denominator": "HUNDRED" });
            filters.push(json!({
                "name": "envoy.filters.http.local_ratelimit",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                    "stat_prefix": "baseline_rate_limit",
                    "token_bucket": { "max_tokens": max_tokens, "tokens_per_fill": per_fill,
                                      "fill_interval": duration(interval) },
                    "filter_enabled": { "runtime_key": "baseline_rl_enabled", "default_value": all },
                    "filter_enforced": { "runtime_key": "baseline_rl_enforced", "default_value": all },
                }
            }));
        }
        filters
    }
}

/// Builder for the Envoy bootstrap used by [`super::Envoy::start`].
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    pub(crate) filters: Filters,
    upstream_port: Option<u16>,
    clusters: Vec<(String, u16)>,
    pub(crate) concurrency: u32,
    vm_id: String,
    route_timeout: Duration,
    connect_timeout: Duration,
    pub(crate) log_level: String,
    pub(crate) component_log_level: Option<String>,
    pub(crate) start_timeout: Duration,
}

impl EnvoyConfig {
    fn with(filters: Filters) -> Self {
        EnvoyConfig {
            filters,
            upstream_port: None,
            clusters: Vec::new(),
            concurrency: 1,
            vm_id: "chatguard".to_string(),
            route_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            log_level: "info".to_string(),
            component_log_level: None,
            start_timeout: Duration::from_secs(20),
        }
    }
    /// Router only.
    pub fn no_filter() -> Self {
        Self::with(Filters::None)
    }
    /// The chatguard wasm filter with `policy_json` as its plugin configuration
    /// (an empty string sends none: the compiled-in default policy applies).
    /// The module is `$CHATGUARD_WASM` (see [`super::chatguard_wasm`]) unless
    /// [`EnvoyConfig::wasm_module`] names another.
    pub fn chatguard(policy_json: &str) -> Self {
        Self::with(Filters::Chatguard { policy: policy_json.to_string(), wasm: super::chatguard_wasm() })
    }
    /// Envoy's native filters, see [`NativeBaseline`].
    pub fn native_baseline(baseline: NativeBaseline) -> Self {
        Self::with(Filters::Native(baseline))
    }
    /// The port of the `upstream` cluster every route goes to (required).
    pub fn upstream(mut self, port: u16) -> Self {
        self.upstream_port = Some(port);
        self
    }
    /// Adds static cluster `name` -> 127.0.0.1:`port` (e.g. `idp`, `audit_collector`).
    pub fn cluster(mut self, name: &str, port: u16) -> Self {
        self.clusters.push((name.to_string(), port));
        self
    }
    /// Worker threads (`--concurrency`), 1 by default.
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }
    /// Loads this module instead of `$CHATGUARD_WASM` (chatguard config only).
    pub fn wasm_module(mut self, path: impl Into<PathBuf>) -> Self {
        if let Filters::Chatguard { wasm, .. } = &mut self.filters {
            *wasm = Some(path.into());
        }
        self
    }
    /// The wasm `vm_id` ("chatguard" by default).
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.vm_id = vm_id.to_string();
        self
    }
    /// Route timeout for the whole upstream response (30 s by default).
    pub fn route_timeout(mut self, timeout: Duration) -> Self {
        self.route_timeout = timeout;
        self
    }
    /// Envoy's `-l` level ("info" by default).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_string();
        self
    }
    /// Envoy's `--component-log-level`, e.g. `"wasm:debug,jwt:debug"`.
    pub fn component_log_level(mut self, levels: &str) -> Self {
        self.component_log_level = Some(levels.to_string());
        self
    }
    /// How long [`super::Envoy::start`] waits for `/ready` (20 s by default).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// The bootstrap as JSON (valid YAML), with the access log written to `access_log`.
    pub fn render(&self, access_log: &Path) -> Result<String, String> {
        let upstream = self.upstream_port.ok_or("EnvoyConfig: call .upstream(port) to set the upstream cluster")?;
        let mut http_filters = match &self.filters {
            Filters::None => Vec::new(),
            Filters::Chatguard { policy, wasm } => {
                let wasm = wasm.as_ref().ok_or(
                    "no chatguard module: set CHATGUARD_WASM or run `make wasm` (or use EnvoyConfig::wasm_module)",
                )?;
                vec![self.wasm_filter(policy, wasm)]
            }
            Filters::Native(b) => b.filters(),
        };
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
        }));
        let hcm = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "ingress",
            "codec_type": "AUTO",
            "generate_request_id": true,
            "use_remote_address": true,
            "access_log": [{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": access_log.to_string_lossy(),
                }
            }],
            "route_config": { "name": "local", "virtual_hosts": [{
                "name": "all", "domains": ["*"],
                "routes": [{ "match": { "prefix": "/" },
                             "route": { "cluster": "upstream", "timeout": duration(self.route_timeout) } }],
            }] },
            "http_filters": http_filters,
        });
        let mut clusters = vec![self.cluster_json("upstream", upstream)];
        clusters.extend(self.clusters.iter().map(|(n, p)| self.cluster_json(n, *p)));
        let bootstrap = json!({
            "admin": { "address": socket(0) },
            "static_resources": {
                "listeners": [{
                    "name": "ingress",
                    "address": socket(0),
                    "filter_chains": [{ "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": hcm,
                    }] }],
                }],
                "clusters": clusters,
            }
        });
        serde_json::to_string_pretty(&bootstrap).map_err(|e| e.to_string())
    }

    fn wasm_filter(&self, policy: &str, wasm: &Path) -> Value {
        let mut plugin = json!({
            "name": "chatguard",
            "root_id": "chatguard",
            "fail_open": false,
            "vm_config": {
                "vm_id": self.vm_id,
                "runtime": "envoy.wasm.runtime.v8",
                "code": { "local": { "filename": wasm.to_string_lossy() } },
            },
        });
        if !policy.is_empty() {
            plugin["configuration"] = json!({ "@type": "type.googleapis.com/google.protobuf.StringValue", "value": policy });
        }
        json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": plugin }
        })
    }

    fn cluster_json(&self, name: &str, port: u16) -> Value {
        json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": duration(self.connect_timeout),
            "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [
                { "endpoint": { "address": socket(port) } }
            ] }] },
        })
    }
}

fn socket(port: u16) -> Value {
    json!({ "socket_address": { "address": "127.0.0.1", "port_value": port } })
}

/// A protobuf Duration in its JSON form, e.g. `"1.5s"`.
fn duration(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}
