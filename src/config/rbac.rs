//! Schema of the `rbac` section (roles, inheritance, route rules, conditions) and
//! its structural validation.
//!
//! Semantics an operator relies on (the runtime lives in `crate::rbac`):
//! - A caller's permissions are the union over their roles (from `roles_claim` and
//!   from `groups_to_roles`), inheritance followed transitively; `*` grants all.
//! - Every caller, authenticated or not, also holds the permissions of
//!   `anonymous_role`: an authenticated caller is never worse off than an anonymous
//!   one, so a public page does not start failing once someone logs in.
//! - Rules are tried in order, the first match decides; a rule's `permissions` are
//!   all required (an empty list: any authenticated caller, or anyone if
//!   `anonymous`). No match: `default`.
//! - Paths are matched case-sensitively on the normalised path (`crate::path`).
//! - A rule that can never match because an earlier rule matches every request it
//!   would match is refused: first-match order makes it dead code, and a dead rule
//!   usually means the operator expected the opposite order.

use super::rbac_matrix::RbacMatrix;
use super::{indexed, ConfigError};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// The RBAC matrix and route rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbacConfig {
    /// Dotted path into the verified claims holding the caller's roles (an array of
    /// strings or a space-separated string), e.g. `realm_access.roles`.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Dotted path of the claim holding the caller's IdP groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// IdP group name -> roles granted to its members.
    #[serde(default)]
    pub groups_to_roles: OrderedMap<Vec<String>>,
    /// Role held by every caller, including unauthenticated ones on `anonymous` rules.
    #[serde(default)]
    pub anonymous_role: Option<String>,
    /// Optional declaration of every permission name; when present, any other
    /// name in a role, rule or `response_fields.unless` is refused (typo guard).
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    /// Roles in document order (the order `chatguard check` prints them).
    #[serde(default)]
    pub roles: OrderedMap<RoleConfig>,
    /// Route rules, tried in order.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Outcome when no rule matches.
    #[serde(default)]
    pub default: DefaultDecision,
    /// `enforce`, or `shadow` to compute and report decisions without enforcing.
    #[serde(default)]
    pub mode: RbacMode,
    /// What counts as multi-factor authentication for `require_mfa`.
    #[serde(default)]
    pub mfa: MfaConfig,
}

impl Default for RbacConfig {
    fn default() -> Self {
        RbacConfig {
            roles_claim: default_roles_claim(),
            groups_claim: default_groups_claim(),
            groups_to_roles: OrderedMap::default(),
            anonymous_role: None,
            permissions: None,
            roles: OrderedMap::default(),
            rules: Vec::new(),
            default: DefaultDecision::Deny,
            mode: RbacMode::Enforce,
            mfa: MfaConfig::default(),
        }
    }
}

fn default_roles_claim() -> String {
    "roles".to_string()
}

fn default_groups_claim() -> String {
    "groups".to_string()
}

/// One role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Parent roles whose permissions this role also holds (transitively).
    #[serde(default)]
    pub inherits: Vec<String>,
    /// Permissions granted directly; `*` grants every permission.
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// One route rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique id, reported in logs, audit and the shadow header.
    pub id: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// HTTP methods (upper case, as sent); empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Host (`api.example.com` or `*.example.com`); absent: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Path template: literal segments, `{param}` (one segment), `**` (the rest,
    /// possibly nothing) as the last segment.
    pub path: String,
    /// Permissions the caller must all hold.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Unauthenticated callers may match this rule (with `anonymous_role`'s permissions).
    #[serde(default)]
    pub anonymous: bool,
    /// The token must show multi-factor authentication (see `rbac.mfa`).
    #[serde(default)]
    pub require_mfa: bool,
    /// Allowed days and time window.
    #[serde(default)]
    pub hours: Option<HoursConfig>,
    /// The caller's claim must equal a path parameter (own team / region).
    #[serde(default)]
    pub claim_matches_path: Option<ClaimMatchesPath>,
    /// JSON fields removed from responses unless the caller holds a permission.
    #[serde(default)]
    pub response_fields: Option<ResponseFieldsConfig>,
}

/// `hours` condition of a rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursConfig {
    /// Allowed days (`mon` .. `sun`) of the window's start; empty: every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// Start, `HH:MM`, inclusive.
    pub from: String,
    /// End, `HH:MM` (`24:00` allowed), exclusive. Earlier than `from`: the window
    /// runs past midnight.
    pub to: String,
    /// Fixed offset from UTC: `+01:00`, `-05:30` or `Z`.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
}

fn default_utc_offset() -> String {
    "Z".to_string()
}

/// `claim_matches_path` condition of a rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMatchesPath {
    /// Dotted path of the claim (a string, or an array of strings: any may match).
    pub claim: String,
    /// Name of a `{param}` of the rule's path.
    pub param: String,
}

/// `response_fields` of a rule: column-level filtering of JSON responses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseFieldsConfig {
    /// Object keys removed at any depth.
    pub remove: Vec<String>,
    /// Callers holding this permission see the fields; absent: removed for everyone.
    #[serde(default)]
    pub unless: Option<String>,
}

/// What counts as multi-factor authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaConfig {
    /// `amr` values (RFC 8176) any one of which proves MFA.
    #[serde(default = "default_amr")]
    pub amr: Vec<String>,
    /// `acr` values that prove MFA.
    #[serde(default)]
    pub acr: Vec<String>,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig { amr: default_amr(), acr: Vec::new() }
    }
}

fn default_amr() -> Vec<String> {
    ["mfa", "otp", "hwk", "swk"].iter().map(|s| s.to_string()).collect()
}

/// Outcome when no rule matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultDecision {
    /// Fail closed (the default).
    #[default]
    Deny,
    /// Let unmatched requests through.
    Allow,
}

/// Enforcement mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RbacMode {
    /// Denials are enforced.
    #[default]
    Enforce,
    /// Decisions are computed and reported, never enforced.
    Shadow,
}

/// A JSON object kept in document order, refusing duplicate keys (serde_json
/// would silently keep the last one, hiding a role defined twice).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V> OrderedMap<V> {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Entries in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
                    }
                    let value = map.next_value::<V>()?;
                    entries.push((key, value));
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(std::marker::PhantomData))
    }
}

/// One segment of a compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSegment {
    /// Must equal the path segment exactly.
    Literal(String),
    /// Captures one non-empty segment under this name.
    Param(String),
    /// `**`: any rest of the path, possibly empty. Always last.
    Rest,
}

/// Parses a rule's path template. The message says what is wrong.
pub fn parse_path_template(template: &str) -> Result<Vec<TemplateSegment>, String> {
    let body = template
        .strip_prefix('/')
        .ok_or_else(|| "a path template starts with `/`".to_string())?;
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = body.split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    let mut names: HashSet<&str> = HashSet::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if part.is_empty() {
            return Err("empty segment (`//` or a trailing `/`): normalised paths have none".into());
        }
        if *part == "**" {
            if !last {
                return Err("`**` must be the last segment".into());
            }
            out.push(TemplateSegment::Rest);
        } else if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if inner.is_empty()
                || !inner.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!("bad parameter `{part}`: use `{{name}}` with [A-Za-z0-9_-]"));
            }
            if !names.insert(inner) {
                return Err(format!("parameter `{inner}` appears twice"));
            }
            out.push(TemplateSegment::Param(inner.to_string()));
        } else {
            if *part == "." || *part == ".." {
                return Err("`.` and `..` segments never occur in normalised paths".into());
            }
            if let Some(c) = part.chars().find(|c| !is_literal_char(*c)) {
                return Err(format!(
                    "character `{}` is not allowed in a literal segment (no `*`, `{{`, `}}`, `%`, `;`, `\\`, `?`, `#`)",
                    c.escape_default()
                ));
            }
            out.push(TemplateSegment::Literal(part.to_string()));
        }
    }
    Ok(out)
}

/// RFC 3986 pchar minus `%` (literals are compared to decoded paths) and minus
/// `;` (refused by path normalisation), `*`, `{`, `}` (template syntax).
fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()+,=:@".contains(c)
}

/// Day names accepted in `hours.days`, Monday first.
pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parses `HH:MM` into minutes since midnight (`24:00` only if `allow_24`).
pub fn parse_clock(value: &str, allow_24: bool) -> Option<u32> {
    let (h, m) = value.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    if m > 59 || h > 24 || (h == 24 && (m != 0 || !allow_24)) {
        return None;
    }
    Some(h * 60 + m)
}

/// Parses `+HH:MM`, `-HH:MM` or `Z` into signed minutes (at most 14 hours).
pub fn parse_utc_offset(value: &str) -> Option<i32> {
    if value == "Z" {
        return Some(0);
    }
    let (sign, rest) = match value.as_bytes().first()? {
        b'+' => (1, value.get(1..)?),
        b'-' => (-1, value.get(1..)?),
        _ => return None,
    };
    let minutes = parse_clock(rest, false)?;
    if minutes > 14 * 60 {
        return None;
    }
    Some(sign * minutes as i32)
}

/// True for an RFC 9110 token (HTTP method names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Names used as ids (roles, rules): printable, no spaces, no separators that
/// would confuse headers and logs.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

fn check_claim_path(field: &str, path: &str) -> Result<(), ConfigError> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(ConfigError::invalid(field, "a claim path is non-empty names joined by `.`"));
    }
    Ok(())
}

impl RbacConfig {
    /// Structural checks; also flattens the matrix (cycles, unknown roles and
    /// permissions are found there).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.build_matrix().map(|_| ())
    }

    /// Validates and flattens the role inheritance into permission bitsets.
    pub fn build_matrix(&self) -> Result<RbacMatrix, ConfigError> {
        check_claim_path("rbac.roles_claim", &self.roles_claim)?;
        check_claim_path("rbac.groups_claim", &self.groups_claim)?;
        if let Some(declared) = &self.permissions {
            let mut seen = HashSet::new();
            for (i, p) in declared.iter().enumerate() {
                let field = indexed("rbac.permissions", i);
                if p.is_empty() || p == "*" || p.chars().any(char::is_whitespace) {
                    return Err(ConfigError::invalid(
                        field,
                        "a permission name is non-empty, has no spaces and is not `*` (`*` is implicit)",
                    ));
                }
                if !seen.insert(p.as_str()) {
                    return Err(ConfigError::invalid(field, format!("`{p}` is declared twice")));
                }
            }
        }
        for (name, _) in self.roles.iter() {
            if !is_name(name) {
                return Err(ConfigError::invalid(
                    format!("rbac.roles.{name}"),
                    "a role name uses only [A-Za-z0-9_.:-]",
                ));
            }
        }
        let matrix = RbacMatrix::build(self)?;
        if let Some(anon) = &self.anonymous_role {
            if self.roles.get(anon).is_none() {
                return Err(ConfigError::invalid(
                    "rbac.anonymous_role",
                    format!("unknown role `{anon}`"),
                ));
            }
        }
        for (group, roles) in self.groups_to_roles.iter() {
            for (i, role) in roles.iter().enumerate() {
                if self.roles.get(role).is_none() {
                    return Err(ConfigError::invalid(
                        indexed(&format!("rbac.groups_to_roles.{group}"), i),
                        format!("unknown role `{role}`"),
                    ));
                }
            }
        }
        self.check_mfa()?;
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut templates = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let base = indexed("rbac.rules", i);
            if !is_name(&rule.id) {
                return Err(ConfigError::invalid(
                    format!("{base}.id"),
                    "a rule id is non-empty and uses only [A-Za-z0-9_.:-]",
                ));
            }
            if let Some(first) = ids.insert(rule.id.as_str(), i) {
                return Err(ConfigError::invalid(
                    format!("{base}.id"),
                    format!("duplicate rule id `{}` (also rbac.rules[{first}])", rule.id),
                ));
            }
            let template = parse_path_template(&rule.path)
                .map_err(|m| ConfigError::invalid(format!("{base}.path"), m))?;
            self.check_rule(&base, rule, &template, &matrix)?;
            templates.push(template);
        }
        check_unreachable_rules(&self.rules, &templates)?;
        Ok(matrix)
    }

    fn check_mfa(&self) -> Result<(), ConfigError> {
        for (i, v) in self.mfa.amr.iter().enumerate() {
            if v.is_empty() {
                return Err(ConfigError::invalid(indexed("rbac.mfa.amr", i), "empty value"));
            }
        }
        for (i, v) in self.mfa.acr.iter().enumerate() {
            if v.is_empty() {
                return Err(ConfigError::invalid(indexed("rbac.mfa.acr", i), "empty value"));
            }
        }
        let needs_mfa = self.rules.iter().any(|r| r.require_mfa);
        if needs_mfa && self.mfa.amr.is_empty() && self.mfa.acr.is_empty() {
            return Err(ConfigError::invalid(
                "rbac.mfa",
                "rules require MFA but neither `amr` nor `acr` values are configured: nobody could pass",
            ));
        }
        Ok(())
    }

    fn check_permission_name(
        &self,
        field: String,
        name: &str,
        matrix: &RbacMatrix,
    ) -> Result<(), ConfigError> {
        if name.is_empty() {
            return Err(ConfigError::invalid(field, "empty permission name"));
        }
        if self.permissions.is_some() && matrix.permission_index(name).is_none() {
            return Err(ConfigError::invalid(
                field,
                format!("unknown permission `{name}`: not in rbac.permissions"),
            ));
        }
        Ok(())
    }

    fn check_rule(
        &self,
        base: &str,
        rule: &RuleConfig,
        template: &[TemplateSegment],
        matrix: &RbacMatrix,
    ) -> Result<(), ConfigError> {
        let mut methods = HashSet::new();
        for (j, m) in rule.methods.iter().enumerate() {
            let field = indexed(&format!("{base}.methods"), j);
            if !is_token(m) || m.bytes().any(|b| b.is_ascii_lowercase()) {
                return Err(ConfigError::invalid(
                    field,
                    "a method is an upper-case HTTP token such as GET (methods are case-sensitive)",
                ));
            }
            if !methods.insert(m.as_str()) {
                return Err(ConfigError::invalid(field, format!("`{m}` is listed twice")));
            }
        }
        if let Some(host) = &rule.host {
            let name = host.strip_prefix("*.").unwrap_or(host);
            let ok = !name.is_empty()
                && name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(ConfigError::invalid(
                    format!("{base}.host"),
                    "a host is a DNS name (`api.example.com`) or `*.example.com`, without port",
                ));
            }
        }
        for (j, p) in rule.permissions.iter().enumerate() {
            self.check_permission_name(indexed(&format!("{base}.permissions"), j), p, matrix)?;
        }
        if rule.anonymous {
            if rule.require_mfa {
                return Err(ConfigError::invalid(
                    format!("{base}.require_mfa"),
                    "an anonymous rule cannot require MFA: unauthenticated callers have no token",
                ));
            }
            if rule.claim_matches_path.is_some() {
                return Err(ConfigError::invalid(
                    format!("{base}.claim_matches_path"),
                    "an anonymous rule cannot match claims: unauthenticated callers have none",
                ));
            }
            if !rule.permissions.is_empty() {
                let Some(anon) = &self.anonymous_role else {
                    return Err(ConfigError::invalid(
                        format!("{base}.anonymous"),
                        "the rule requires permissions but rbac.anonymous_role is not set: unauthenticated callers would always be denied",
                    ));
                };
                for p in &rule.permissions {
                    if !matrix.role_grants(anon, p) {
                        return Err(ConfigError::invalid(
                            format!("{base}.anonymous"),
                            format!("anonymous_role `{anon}` does not hold `{p}`: unauthenticated callers would always be denied"),
                        ));
                    }
                }
            }
        }
        if let Some(hours) = &rule.hours {
            let field = format!("{base}.hours");
            let mut days = HashSet::new();
            for (j, d) in hours.days.iter().enumerate() {
                let f = indexed(&format!("{field}.days"), j);
                if !DAY_NAMES.contains(&d.as_str()) {
                    return Err(ConfigError::invalid(f, "a day is one of mon tue wed thu fri sat sun"));
                }
                if !days.insert(d.as_str()) {
                    return Err(ConfigError::invalid(f, format!("`{d}` is listed twice")));
                }
            }
            let from = parse_clock(&hours.from, false).ok_or_else(|| {
                ConfigError::invalid(format!("{field}.from"), "a time is HH:MM, 00:00 to 23:59")
            })?;
            let to = parse_clock(&hours.to, true).ok_or_else(|| {
                ConfigError::invalid(format!("{field}.to"), "a time is HH:MM, 00:00 to 24:00")
            })?;
            if from == to % (24 * 60) {
                return Err(ConfigError::invalid(
                    format!("{field}.to"),
                    "`from` and `to` are equal: the window is empty (omit `hours` for all day)",
                ));
            }
            if parse_utc_offset(&hours.utc_offset).is_none() {
                return Err(ConfigError::invalid(
                    format!("{field}.utc_offset"),
                    "an offset is `+HH:MM`, `-HH:MM` or `Z`, at most 14:00",
                ));
            }
        }
        if let Some(cm) = &rule.claim_matches_path {
            check_claim_path(&format!("{base}.claim_matches_path.claim"), &cm.claim)?;
            let known = template.iter().any(|s| matches!(s, TemplateSegment::Param(p) if *p == cm.param));
            if !known {
                return Err(ConfigError::invalid(
                    format!("{base}.claim_matches_path.param"),
                    format!("`{}` is not a `{{param}}` of {base}.path", cm.param),
                ));
            }
        }
        if let Some(rf) = &rule.response_fields {
            if rf.remove.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{base}.response_fields.remove"),
                    "list at least one field",
                ));
            }
            for (j, f) in rf.remove.iter().enumerate() {
                if f.is_empty() {
                    return Err(ConfigError::invalid(
                        indexed(&format!("{base}.response_fields.remove"), j),
                        "empty field name",
                    ));
                }
            }
            if let Some(unless) = &rf.unless {
                self.check_permission_name(format!("{base}.response_fields.unless"), unless, matrix)?;
            }
        }
        Ok(())
    }
}

/// Refuses a rule that an earlier rule always pre-empts.
fn check_unreachable_rules(
    rules: &[RuleConfig],
    templates: &[Vec<TemplateSegment>],
) -> Result<(), ConfigError> {
    for (j, (later, later_t)) in rules.iter().zip(templates).enumerate() {
        for (i, (earlier, earlier_t)) in rules.iter().zip(templates).enumerate().take(j) {
            if rule_covers(earlier, earlier_t, later, later_t) {
                return Err(ConfigError::invalid(
                    indexed("rbac.rules", j),
                    format!(
                        "rule `{}` is never reached: rule `{}` (rbac.rules[{i}]) comes first and matches every request it matches; put the more specific rule first",
                        later.id, earlier.id
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// True when every request matching `b` also matches `a`.
fn rule_covers(a: &RuleConfig, at: &[TemplateSegment], b: &RuleConfig, bt: &[TemplateSegment]) -> bool {
    let methods = a.methods.is_empty() || (!b.methods.is_empty() && b.methods.iter().all(|m| a.methods.contains(m)));
    let host = match (&a.host, &b.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ah), Some(bh)) => {
            ah.eq_ignore_ascii_case(bh)
                || ah.strip_prefix("*.").is_some_and(|suffix| {
                    let bname = bh.strip_prefix("*.").unwrap_or(bh);
                    bname.len() > suffix.len()
                        && bname.to_ascii_lowercase().ends_with(&format!(".{}", suffix.to_ascii_lowercase()))
                })
        }
    };
    methods && host && template_covers(at, bt)
}

/// True when every path matching template `b` also matches template `a`.
fn template_covers(a: &[TemplateSegment], b: &[TemplateSegment]) -> bool {
    use TemplateSegment::*;
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            (Some(Rest), _) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(_), Some(Rest)) => return false,
            (Some(Literal(x)), Some(Literal(y))) if x == y => {}
            (Some(Literal(_)), Some(_)) => return false,
            (Some(Param(_)), Some(_)) => {}
        }
        i += 1;
    }
}

#[cfg(test)]
#[path = "rbac_tests.rs"]
mod tests;
