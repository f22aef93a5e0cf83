//! The response fields of the rate stage.
//!
//! `RateLimit-Policy` and `RateLimit` follow draft-ietf-httpapi-ratelimit-headers
//! (-10/-11): each is a Structured Fields List of String items with parameters.
//! - `RateLimit-Policy: "per-user";q=60;w=60`: `q` is the capacity (the burst a
//!   full bucket allows), `w` the seconds an empty bucket takes to fill again.
//! - `RateLimit: "per-user";r=59;t=1`: `r` the whole tokens left, `t` the
//!   seconds until the next token accrues. On a 429, `t` equals `Retry-After`
//!   of the limit that denied, as the draft asks (Retry-After never earlier
//!   than the end of the effective window).
//!
//! Buckets charged with LLM response tokens add `chatguard-unit="llm-tokens"`
//! (the draft's `qu` only admits registered units). The `pk` partition key is
//! never sent: it would echo the subject or address. Limit names are restricted
//! by the config to `[A-Za-z0-9._-]`, so they need no escaping in a String item
//! nor in the JSON body.

/// `Retry-After`.
pub const RETRY_AFTER: &str = "retry-after";
/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
/// `RateLimit`.
pub const RATELIMIT: &str = "ratelimit";

/// One `RateLimit-Policy` list item; built once per limit at compile time.
pub fn policy_item(name: &str, capacity: u64, window_secs: u64, llm_tokens: bool) -> String {
    let unit = if llm_tokens { ";chatguard-unit=\"llm-tokens\"" } else { "" };
    format!("\"{name}\";q={capacity};w={window_secs}{unit}")
}

/// One `RateLimit` list item.
pub fn limit_item(name: &str, remaining: u64, next_secs: u64) -> String {
    format!("\"{name}\";r={remaining};t={next_secs}")
}

/// The JSON body of a 429 from a bucket.
pub fn limited_body(limit: &str) -> String {
    format!("{{\"error\":\"rate_limited\",\"limit\":\"{limit}\"}}")
}

/// The JSON body of a 429 from a lockout.
pub const LOCKED_OUT_BODY: &str = "{\"error\":\"locked_out\"}";

/// The JSON body of a failure to reach the shared store.
pub const STORE_FAILURE_BODY: &str = "{\"error\":\"rate_limit_unavailable\"}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_field_values() {
        assert_eq!(policy_item("per-user", 60, 60, false), "\"per-user\";q=60;w=60");
        assert_eq!(
            policy_item("llm-tokens", 50_000, 1_500, true),
            "\"llm-tokens\";q=50000;w=1500;chatguard-unit=\"llm-tokens\""
        );
        assert_eq!(limit_item("chat", 19, 3), "\"chat\";r=19;t=3");
        assert_eq!(limited_body("chat"), r#"{"error":"rate_limited","limit":"chat"}"#);
        let parsed: serde_json::Value = serde_json::from_str(&limited_body("a.b_c-1")).unwrap();
        assert_eq!(parsed["limit"], "a.b_c-1");
    }
}
