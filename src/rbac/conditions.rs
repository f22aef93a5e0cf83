//! Context conditions of a rule: MFA, time window, claim equal to a path param.

use super::Claims;
use crate::config::rbac::{parse_clock, parse_utc_offset, HoursConfig, DAY_NAMES};
use serde_json::Value;

/// Outcome of one condition, reported in the decision and by `chatguard explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The rule does not have this condition.
    NotApplicable,
    /// Satisfied.
    Passed,
    /// Not satisfied.
    Failed,
    /// Skipped because the caller holds `*` (`claim_matches_path` only).
    Exempt,
}

impl Check {
    /// Lower-case name for JSON output.
    pub fn as_str(&self) -> &'static str {
        match self {
            Check::NotApplicable => "not_applicable",
            Check::Passed => "passed",
            Check::Failed => "failed",
            Check::Exempt => "exempt",
        }
    }
}

/// Outcomes of a rule's conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditions {
    /// `require_mfa`.
    pub mfa: Check,
    /// `hours`.
    pub hours: Check,
    /// `claim_matches_path`.
    pub claim_matches_path: Check,
}

impl Default for Conditions {
    fn default() -> Self {
        Conditions { mfa: Check::NotApplicable, hours: Check::NotApplicable, claim_matches_path: Check::NotApplicable }
    }
}

/// A claim location: the whole name as a top-level key first (namespaced claims
/// such as `https://example.com/roles` contain dots), then the dotted path.
#[derive(Debug, Clone)]
pub(crate) struct ClaimPath {
    full: String,
    parts: Vec<String>,
}

impl ClaimPath {
    pub(crate) fn new(path: &str) -> Self {
        ClaimPath { full: path.to_string(), parts: path.split('.').map(str::to_string).collect() }
    }

    pub(crate) fn find<'c>(&self, claims: &'c Claims) -> Option<&'c Value> {
        if let Some(v) = claims.get(&self.full) {
            return Some(v);
        }
        if self.parts.len() < 2 {
            return None;
        }
        let mut parts = self.parts.iter();
        let mut cur = claims.get(parts.next()?)?;
        for p in parts {
            cur = cur.as_object()?.get(p)?;
        }
        Some(cur)
    }
}

/// Calls `f` for each name of a claim that is an array of strings or a
/// space-separated string; other shapes hold no names.
pub(crate) fn for_each_name<'c>(value: Option<&'c Value>, mut f: impl FnMut(&'c str)) {
    match value {
        Some(Value::String(s)) => s.split_ascii_whitespace().for_each(f),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(&mut f),
        _ => {}
    }
}

/// The compiled `hours` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hours {
    /// Bit d set: day d (Monday = 0) allowed.
    days: u8,
    from: u32,
    to: u32,
    offset_minutes: i32,
}

impl Hours {
    /// From a validated config (validation guarantees the parses succeed).
    pub(crate) fn compile(cfg: &HoursConfig) -> Option<Hours> {
        let mut days = 0u8;
        for d in &cfg.days {
            let i = DAY_NAMES.iter().position(|n| n == d)?;
            days |= 1 << i;
        }
        if days == 0 {
            days = 0x7f;
        }
        Some(Hours {
            days,
            from: parse_clock(&cfg.from, false)?,
            to: parse_clock(&cfg.to, true)?,
            offset_minutes: parse_utc_offset(&cfg.utc_offset)?,
        })
    }

    /// True when `now_ms` (Unix epoch, UTC) is inside the window. A window past
    /// midnight belongs to the day it starts on.
    pub(crate) fn contains(&self, now_ms: u64) -> bool {
        let local_min = (now_ms / 60_000) as i64 + i64::from(self.offset_minutes);
        let day = local_min.div_euclid(24 * 60);
        let minute = local_min.rem_euclid(24 * 60) as u32;
        // 1970-01-01 was a Thursday (Monday = 0 -> Thursday = 3).
        let weekday = |d: i64| (d + 3).rem_euclid(7) as u8;
        let start_day = if self.from < self.to {
            (self.from <= minute && minute < self.to).then_some(day)
        } else if minute >= self.from {
            Some(day)
        } else if minute < self.to {
            Some(day - 1)
        } else {
            None
        };
        start_day.is_some_and(|d| self.days & (1 << weekday(d)) != 0)
    }
}

/// True when the token's `amr` holds one of `amr_values` or its `acr` is one of
/// `acr_values`.
pub(crate) fn has_mfa(claims: &Claims, amr_values: &[String], acr_values: &[String]) -> bool {
    let mut found = false;
    for_each_name(claims.get("amr"), |v| found |= amr_values.iter().any(|a| a == v));
    if found {
        return true;
    }
    claims.get("acr").and_then(Value::as_str).is_some_and(|acr| acr_values.iter().any(|a| a == acr))
}

/// True when the claim (a string, or an array: any element) equals `param`.
pub(crate) fn claim_equals(value: Option<&Value>, param: &str) -> bool {
    match value {
        Some(Value::String(s)) => s == param,
        Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(param)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(days: &[&str], from: &str, to: &str, off: &str) -> Hours {
        Hours::compile(&HoursConfig {
            days: days.iter().map(|d| d.to_string()).collect(),
            from: from.into(),
            to: to.into(),
            utc_offset: off.into(),
        })
        .unwrap()
    }

    // 2024-01-01 was a Monday.
    const MON_2024_01_01_UTC: u64 = 1_704_067_200_000;
    const MIN: u64 = 60_000;

    #[test]
    fn office_hours_in_a_fixed_offset() {
        let h = hours(&["mon", "tue", "wed", "thu", "fri"], "09:00", "17:00", "+01:00");
        let at = |min: u64| h.contains(MON_2024_01_01_UTC + min * MIN);
        assert!(!at(7 * 60 + 59), "08:59 local");
        assert!(at(8 * 60), "09:00 local");
        assert!(at(15 * 60 + 59), "16:59 local");
        assert!(!at(16 * 60), "17:00 local is excluded");
        // Saturday 2024-01-06 10:00 local.
        assert!(!at(5 * 24 * 60 + 9 * 60));
        // Sunday 23:30 UTC is Monday 00:30 local: Monday but outside the window.
        assert!(!h.contains(MON_2024_01_01_UTC - 30 * MIN));
    }

    #[test]
    fn negative_offset_moves_the_day() {
        // Monday 03:00 UTC is Sunday 22:00 at -05:00.
        let h = hours(&["sun"], "20:00", "23:00", "-05:00");
        assert!(h.contains(MON_2024_01_01_UTC + 3 * 60 * MIN));
    }

    #[test]
    fn window_past_midnight_belongs_to_its_start_day() {
        let h = hours(&["fri"], "22:00", "06:00", "Z");
        let fri = MON_2024_01_01_UTC + 4 * 24 * 60 * MIN;
        assert!(h.contains(fri + 23 * 60 * MIN));
        assert!(h.contains(fri + (24 + 5) * 60 * MIN), "Saturday 05:00 is Friday's night");
        assert!(!h.contains(fri + 5 * 60 * MIN), "Friday 05:00 is Thursday's night");
        assert!(!h.contains(fri + 12 * 60 * MIN));
    }

    #[test]
    fn to_24_00_covers_the_last_minute() {
        let h = hours(&[], "12:00", "24:00", "Z");
        assert!(h.contains(MON_2024_01_01_UTC + (24 * 60 - 1) * MIN));
        assert!(!h.contains(MON_2024_01_01_UTC));
    }

    #[test]
    fn mfa_from_amr_or_acr() {
        let amr = vec!["mfa".to_string(), "hwk".to_string()];
        let acr = vec!["urn:acr:strong".to_string()];
        let c = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert!(has_mfa(&c(serde_json::json!({"amr": ["pwd", "hwk"]})), &amr, &acr));
        assert!(has_mfa(&c(serde_json::json!({"amr": "pwd mfa"})), &amr, &acr));
        assert!(!has_mfa(&c(serde_json::json!({"amr": ["pwd"]})), &amr, &acr));
        assert!(has_mfa(&c(serde_json::json!({"acr": "urn:acr:strong"})), &amr, &acr));
        assert!(!has_mfa(&c(serde_json::json!({"acr": "urn:acr:weak", "amr": 5})), &amr, &acr));
    }

    #[test]
    fn claim_paths_prefer_the_whole_name() {
        let claims = serde_json::json!({"https://x.test/roles": ["a"], "realm_access": {"roles": ["b"]}});
        let claims = claims.as_object().unwrap();
        assert_eq!(ClaimPath::new("https://x.test/roles").find(claims), Some(&serde_json::json!(["a"])));
        assert_eq!(ClaimPath::new("realm_access.roles").find(claims), Some(&serde_json::json!(["b"])));
        assert_eq!(ClaimPath::new("realm_access.nope").find(claims), None);
    }
}
