//! `chatguard explain --policy P --method M --path PATH [--host H]
//! [--claims JSON | --token T] [--now RFC3339]`: prints the authorization
//! decision as JSON; exit 0 allow, 1 deny, 2 usage or policy error.

use chatguard::path::NormalizedPath;
use chatguard::rbac::{Claims, CompiledRbac};
use serde_json::{json, Value};

/// Runs the command; returns the process exit code.
pub fn run(args: &[String]) -> u8 {
    let (Some(policy_path), Some(method), Some(path)) = (
        crate::flag_value(args, "--policy"),
        crate::flag_value(args, "--method"),
        crate::flag_value(args, "--path"),
    ) else {
        return crate::usage_error("`explain` needs --policy, --method and --path");
    };
    let policy = match crate::load_policy(policy_path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let Some(rbac_cfg) = &policy.rbac else {
        eprintln!("chatguard: the policy has no `rbac` section");
        return 2;
    };
    let rbac = match CompiledRbac::compile(rbac_cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chatguard: {e}");
            return 2;
        }
    };
    let mut claims: Option<Claims> = match crate::flag_value(args, "--claims") {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(map),
            _ => return crate::usage_error("--claims must be a JSON object"),
        },
        None => None,
    };
    let now_ms = match crate::flag_value(args, "--now") {
        Some(t) => match parse_rfc3339_ms(t) {
            Some(ms) => ms,
            None => return crate::usage_error("--now must be RFC 3339, e.g. 2024-01-01T10:00:00+01:00"),
        },
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    if let Some(token) = crate::flag_value(args, "--token") {
        // The same verification as the filter: an invalid token is the 401 the
        // caller would get, before any authorization.
        match crate::token::verify_claims(policy_path, token, crate::flag_value(args, "--jwks"), now_ms / 1000) {
            Ok(Ok(verified)) => claims = Some(verified),
            Ok(Err(reason)) => {
                let report = serde_json::json!({"decision": "deny", "status": 401, "reason": reason, "path": path});
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                return 1;
            }
            Err(code) => return code,
        }
    }
    let host = crate::flag_value(args, "--host").unwrap_or("");
    let (report, allowed) = explain(&rbac, method, host, path, claims.as_ref(), now_ms);
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    if allowed { 0 } else { 1 }
}

/// The decision as JSON, and whether the policy allows the request.
pub fn explain(
    rbac: &CompiledRbac,
    method: &str,
    host: &str,
    raw_path: &str,
    claims: Option<&Claims>,
    now_ms: u64,
) -> (Value, bool) {
    let path = match NormalizedPath::parse(raw_path) {
        Ok(p) => p,
        Err(e) => {
            return (
                json!({ "decision": "deny", "status": 400, "reason": e.as_str(), "rule": null }),
                false,
            )
        }
    };
    let route = rbac.route(method, host, &path);
    let d = rbac.decide(&route, claims, now_ms);
    let status = match d.reason {
        None => 200,
        Some(chatguard::rbac::DenyReason::Unauthenticated) => 401,
        Some(_) => 403,
    };
    let removed: Vec<&str> = rbac
        .response_filter(&d)
        .map(|f| f.fields().iter().map(String::as_str).collect())
        .unwrap_or_default();
    let report = json!({
        "decision": if d.allowed { "allow" } else { "deny" },
        "enforced": d.enforced,
        "status": status,
        "rule": rbac.rule_id(&d),
        "reason": d.reason.map(|r| r.as_str()),
        "path": path.as_str(),
        "authenticated": d.authenticated,
        "roles": rbac.role_names(&d).collect::<Vec<_>>(),
        "permissions": rbac.permission_names(&d).collect::<Vec<_>>(),
        "missing": rbac.missing_permission(&d),
        "conditions": {
            "mfa": d.conditions.mfa.as_str(),
            "hours": d.conditions.hours.as_str(),
            "claim_matches_path": d.conditions.claim_matches_path.as_str(),
        },
        "response_fields_removed": removed,
    });
    (report, d.allowed)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM|-HH:MM]` to Unix milliseconds.
pub fn parse_rfc3339_ms(t: &str) -> Option<u64> {
    let num = |s: &str| -> Option<i64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (date, time) = t.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, mo, da) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let (clock, offset_min) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else {
        let pos = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off.get(1..)?.split_once(':')?;
        (c, sign * (num(oh)? * 60 + num(om)?))
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) => (a, f),
        None => (clock, ""),
    };
    let mut parts = hms.split(':');
    let (h, mi, s) = (num(parts.next()?)?, num(parts.next()?)?, num(parts.next()?)?);
    if parts.next().is_some() || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let ms = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        num(&digits)?
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("2024-01-01T10:00:00+01:00"), Some(1_704_099_600_000));
        assert_eq!(parse_rfc3339_ms("2024-01-01T09:00:00.250Z"), Some(1_704_099_600_250));
        assert_eq!(parse_rfc3339_ms("2024-02-29T00:00:00-05:30"), Some(1_709_184_600_000));
        assert_eq!(parse_rfc3339_ms("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn explain_reports_the_decision_and_why() {
        let rbac = CompiledRbac::default_policy().unwrap();
        let claims = serde_json::json!({"roles": ["hr_specialist"], "amr": ["pwd"]});
        let (report, allowed) = explain(
            &rbac,
            "GET",
            "",
            "/api/faq/../hr/salaries/2024?x=1",
            claims.as_object(),
            parse_rfc3339_ms("2024-01-01T10:00:00+01:00").unwrap(),
        );
        assert!(!allowed);
        assert_eq!(
            report,
            serde_json::json!({
                "decision": "deny", "enforced": true, "status": 403, "rule": "salaries",
                "reason": "mfa_required", "path": "/api/hr/salaries/2024", "authenticated": true,
                "roles": ["public", "hr_specialist"],
                "permissions": ["read_public_faq", "read_public_docs", "read_company_directory",
                                "read_own_data", "read_hr_data", "write_hr_data", "read_pii"],
                "missing": null,
                "conditions": {"mfa": "failed", "hours": "passed", "claim_matches_path": "not_applicable"},
                "response_fields_removed": []
            })
        );
    }

    #[test]
    fn explain_refuses_bad_paths_with_400() {
        let rbac = CompiledRbac::default_policy().unwrap();
        let (report, allowed) = explain(&rbac, "GET", "", "/api/faq/..%2Fhr", None, 0);
        assert!(!allowed);
        assert_eq!(report["status"], 400);
        assert_eq!(report["reason"], "path_encoded_separator");
    }
}
