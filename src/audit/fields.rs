//! The only ways request data gets into an audit record.
//!
//! Every field that comes from the request has its own type whose constructor
//! reduces it first: the subject is pseudonymised, the client IP truncated, the
//! path stripped of its query and of segments that look like personal data, the
//! request id kept only when it looks like an id. Record structs hold these types,
//! so a raw header, claim or body value cannot be put into a record by mistake.

use crate::config::audit::{IpTruncation, SubjectMode};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Hex digits of the subject pseudonym (128 bits of the HMAC).
const PSEUDONYM_HEX_LEN: usize = 32;
/// Longest path kept (bytes); longer paths are cut at a segment boundary.
const MAX_PATH_LEN: usize = 256;
/// Path segments longer than this are opaque values (tokens, blobs), not names.
const MAX_PATH_SEGMENT_LEN: usize = 48;
/// A path segment with this many digits is a number that may identify someone.
const MAX_PATH_SEGMENT_DIGITS: usize = 8;
/// Roles kept per record, and bytes per role.
const MAX_ROLES: usize = 32;
const MAX_ROLE_LEN: usize = 64;
/// Bytes kept of a policy-defined name (rule, limit, permission, provider).
const MAX_NAME_LEN: usize = 128;

/// Writes `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The subject as it may appear in a record: a keyed pseudonym, or the raw value
/// when the policy says `subject_mode: "raw"`. Made only by [`Pseudonymizer`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Subject(String);

impl Subject {
    /// The value written to records.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Turns subjects into record values: HMAC-SHA256 under the policy's key, first
/// 128 bits as hex. The same subject always maps to the same pseudonym under one
/// key (records stay linkable); rotating the key severs the link.
#[derive(Clone)]
pub struct Pseudonymizer {
    mode: SubjectMode,
    key: Vec<u8>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Pseudonymizer").field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl Pseudonymizer {
    /// A pseudonymizer for `mode`; `key` is ignored in raw mode.
    pub fn new(mode: SubjectMode, key: &[u8]) -> Self {
        Pseudonymizer { mode, key: key.to_vec() }
    }

    /// The record value for `subject`.
    pub fn subject(&self, subject: &str) -> Subject {
        match self.mode {
            SubjectMode::Raw => Subject(subject.to_string()),
            SubjectMode::Pseudonym => Subject(self.digest(subject)),
        }
    }

    /// Keyed digest of `value` (first 128 bits of HMAC-SHA256, hex), whatever the
    /// subject mode. In raw mode the key may be empty: the digest then only hides
    /// the value's form, not its identity to someone who can guess it.
    pub fn digest(&self, value: &str) -> String {
        let mac = hmac_sha256::HMAC::mac(value.as_bytes(), &self.key);
        let mut out = hex(&mac);
        out.truncate(PSEUDONYM_HEX_LEN);
        out
    }
}

/// A client address reduced to its network prefix, written in CIDR notation
/// (`203.0.113.0/24`, `2001:db8:ab::/48`). Made only by [`ClientIp::truncated`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ClientIp(String);

impl ClientIp {
    /// Parses `raw` (an address, optionally with a port, as Envoy's
    /// `source.address` gives it) and keeps only the configured prefix.
    /// Anything that is not an IP address gives `None`: a spoofed header cannot
    /// smuggle text into the record.
    pub fn truncated(raw: &str, truncation: &IpTruncation) -> Option<ClientIp> {
        let raw = raw.trim();
        let ip = raw
            .parse::<IpAddr>()
            .ok()
            .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        Some(ClientIp(match ip {
            IpAddr::V4(v4) => {
                let prefix = truncation.v4_prefix.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                format!("{}/{prefix}", Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let prefix = truncation.v6_prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                format!("{}/{prefix}", Ipv6Addr::from(u128::from(v6) & mask))
            }
        }))
    }

    /// The record value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request path fit for a record: no query, no fragment, and no segment that
/// looks like personal data or a secret (`{email}`, `{number}`, `{opaque}` stand in).
/// The engine passes the normalised path; this type still strips what must not go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AuditPath(String);

impl AuditPath {
    /// Reduces `path` (query and fragment removed, suspicious segments replaced).
    pub fn new(path: &str) -> AuditPath {
        let end = path.find(['?', '#', ';']).unwrap_or(path.len());
        let path = path.get(..end).unwrap_or("");
        let mut out = String::with_capacity(path.len().min(MAX_PATH_LEN) + 1);
        for (i, segment) in path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&reduce_segment(segment));
            if out.len() > MAX_PATH_LEN {
                // Segments are ASCII after reduction, so any index is a char boundary.
                out.truncate(MAX_PATH_LEN);
                break;
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        AuditPath(out)
    }

    /// The record value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn reduce_segment(segment: &str) -> String {
    let lower = segment.to_ascii_lowercase();
    if segment.contains('@') || lower.contains("%40") {
        return "{email}".to_string();
    }
    if segment.len() > MAX_PATH_SEGMENT_LEN {
        return "{opaque}".to_string();
    }
    if segment.bytes().filter(u8::is_ascii_digit).count() >= MAX_PATH_SEGMENT_DIGITS {
        return "{number}".to_string();
    }
    segment.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect()
}

/// A request id (`x-request-id`) as records carry it. Clients can set this
/// header, and an id is indistinguishable from a secret by its looks, so only the
/// UUID shape Envoy generates (`8-4-4-4-12` hex digits) is kept as is; any other
/// value is replaced by `h-` and a keyed digest of it, which still lets records
/// of one request be matched with each other but carries nothing of its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// The record form of `raw`; `None` when it is empty.
    pub fn new(raw: &str, pseudonymizer: &Pseudonymizer) -> Option<RequestId> {
        if raw.is_empty() {
            return None;
        }
        if is_uuid(raw) {
            return Some(RequestId(raw.to_ascii_lowercase()));
        }
        Some(RequestId(format!("h-{}", pseudonymizer.digest(raw))))
    }

    /// The record value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_uuid(raw: &str) -> bool {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut parts = raw.split('-');
    GROUPS.iter().all(|len| {
        parts.next().is_some_and(|p| p.len() == *len && p.bytes().all(|b| b.is_ascii_hexdigit()))
    }) && parts.next().is_none()
}

/// The HTTP method, or `OTHER` when it is not a plain method token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Method(String);

impl Method {
    /// Keeps `raw` if it is 1 to 16 ASCII letters (upper-cased), else `OTHER`.
    pub fn new(raw: &str) -> Method {
        if !raw.is_empty() && raw.len() <= 16 && raw.bytes().all(|b| b.is_ascii_alphabetic()) {
            Method(raw.to_ascii_uppercase())
        } else {
            Method("OTHER".to_string())
        }
    }
}

/// A name that comes from the policy (rule, limit, permission, provider, role) or
/// from the engine's closed sets (PII entity types): kept to 128 bytes of
/// `[A-Za-z0-9._:/-]`, other characters become `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    /// Sanitises `raw` as described on the type.
    pub fn new(raw: &str) -> Name {
        Name(sanitize_name(raw, MAX_NAME_LEN))
    }

    /// The record value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn sanitize_name(raw: &str, max: usize) -> String {
    raw.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Roles of the subject (at most 32, each at most 64 bytes, sanitised like [`Name`]).
/// Roles are the one claim besides the subject that records carry.
pub fn roles(raw: &[String]) -> Vec<Name> {
    raw.iter().take(MAX_ROLES).map(|r| Name(sanitize_name(r, MAX_ROLE_LEN))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123";

    #[test]
    fn pseudonym_is_keyed_stable_and_short() {
        let p = Pseudonymizer::new(SubjectMode::Pseudonym, KEY);
        let a = p.subject("alice@example.com");
        assert_eq!(a, p.subject("alice@example.com"));
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, p.subject("bob@example.com"));
        let other_key = Pseudonymizer::new(SubjectMode::Pseudonym, b"another-key-0123456");
        assert_ne!(a, other_key.subject("alice@example.com"));
        // The exact value is HMAC-SHA256(key, subject), first 16 bytes.
        let mac = hmac_sha256::HMAC::mac(b"alice@example.com", KEY);
        assert_eq!(a.as_str(), hex(&mac[..16]));
    }

    #[test]
    fn raw_mode_keeps_the_subject() {
        let p = Pseudonymizer::new(SubjectMode::Raw, b"");
        assert_eq!(p.subject("user-42").as_str(), "user-42");
    }

    #[test]
    fn debug_never_prints_the_key() {
        let p = Pseudonymizer::new(SubjectMode::Pseudonym, KEY);
        assert!(!format!("{p:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn client_ip_truncation_table() {
        let t = IpTruncation { v4_prefix: 24, v6_prefix: 48 };
        let cases: &[(&str, Option<&str>)] = &[
            ("203.0.113.77", Some("203.0.113.0/24")),
            ("203.0.113.77:51234", Some("203.0.113.0/24")),
            (" 10.1.2.3 ", Some("10.1.2.0/24")),
            ("2001:db8:abcd:12:1:2:3:4", Some("2001:db8:abcd::/48")),
            ("[2001:db8:abcd:12::1]:443", Some("2001:db8:abcd::/48")),
            ("::ffff:198.51.100.9", Some("198.51.100.0/24")),
            ("alice@example.com", None),
            ("203.0.113.77, 10.0.0.1", None),
            ("", None),
        ];
        for (raw, want) in cases {
            let got = ClientIp::truncated(raw, &t);
            assert_eq!(got.as_ref().map(ClientIp::as_str), *want, "{raw}");
        }
    }

    #[test]
    fn client_ip_prefix_extremes() {
        let zero = IpTruncation { v4_prefix: 0, v6_prefix: 0 };
        assert_eq!(ClientIp::truncated("1.2.3.4", &zero).unwrap().as_str(), "0.0.0.0/0");
        assert_eq!(ClientIp::truncated("2001:db8::1", &zero).unwrap().as_str(), "::/0");
        let full = IpTruncation { v4_prefix: 32, v6_prefix: 128 };
        assert_eq!(ClientIp::truncated("1.2.3.4", &full).unwrap().as_str(), "1.2.3.4/32");
        assert_eq!(ClientIp::truncated("2001:db8::1", &full).unwrap().as_str(), "2001:db8::1/128");
    }

    #[test]
    fn audit_path_table() {
        let long = "x".repeat(49);
        let cases: &[(&str, &str)] = &[
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/v1/chat?api_key=sk-secret&user=alice", "/v1/chat"),
            ("/v1/chat#frag", "/v1/chat"),
            ("/v1/chat;jsessionid=abc", "/v1/chat"),
            ("/users/alice@example.com/history", "/users/{email}/history"),
            ("/users/alice%40example.com", "/users/{email}"),
            ("/cards/4111111111111111", "/cards/{number}"),
            ("/conversations/1234567", "/conversations/1234567"),
            ("", "/"),
            ("?q=1", "/"),
        ];
        for (raw, want) in cases {
            assert_eq!(AuditPath::new(raw).as_str(), *want, "{raw}");
        }
        assert_eq!(AuditPath::new(&format!("/t/{long}/x")).as_str(), "/t/{opaque}/x");
        let many = "/abc".repeat(200);
        assert!(AuditPath::new(&many).as_str().len() <= MAX_PATH_LEN);
    }

    #[test]
    fn request_ids_other_than_uuids_are_digested() {
        let p = Pseudonymizer::new(SubjectMode::Pseudonym, KEY);
        let uuid = "3F2C1A7E-5b1d-4c7a-9a77-1b2c3d4e5f60";
        assert_eq!(RequestId::new(uuid, &p).unwrap().as_str(), uuid.to_ascii_lowercase());
        assert_eq!(RequestId::new("", &p), None);
        let not_ids = [
            "alice@example.com",
            "4111111111111111",
            "sk-live-51HxQ2eZvKYlo2C0123456789",
            "3f2c1a7e-5b1d-4c7a-9a77-1b2c3d4e5f60-extra",
            "3f2c1a7e-5b1d-4c7a-9a77-1b2c3d4e5f6g",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln",
        ];
        for raw in not_ids {
            let id = RequestId::new(raw, &p).unwrap();
            assert_eq!(id.as_str(), format!("h-{}", p.digest(raw)), "{raw}");
            assert_eq!(id.as_str().len(), 34);
        }
        // Same value, same digest: records of one request still match up.
        assert_eq!(RequestId::new("abc", &p), RequestId::new("abc", &p));
    }

    #[test]
    fn method_and_names_are_sanitised() {
        assert_eq!(Method::new("post"), Method("POST".into()));
        assert_eq!(Method::new("GET /x"), Method("OTHER".into()));
        assert_eq!(Name::new("rule one\n").as_str(), "rule_one_");
        let roles = roles(&vec!["admin".to_string(); 40]);
        assert_eq!(roles.len(), 32);
    }
}
