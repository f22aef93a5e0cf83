//! Request path normalisation, shared by rule matching and audit.
//!
//! Authorization bypasses through path tricks come from the filter and the
//! upstream reading the same bytes differently. So the filter matches only a
//! canonical form and refuses (400) what it cannot canonicalise without guessing:
//! - the query string is split off and never matched;
//! - `%XX` of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded; other
//!   escapes are kept, with upper-case hex (`%3a` and `%3A` are one path);
//! - `%2F` (`/`), `%5C` and raw `\` are refused: upstreams disagree on whether they
//!   separate segments;
//! - `%00`, raw control characters and raw non-ASCII bytes are refused;
//! - malformed escapes (`%`, `%4`, `%zz`) and escapes that do not form valid UTF-8
//!   (overlong forms such as `%C0%AE`) are refused;
//! - `;` is refused: servlet containers strip `;params` from segments, which turns
//!   `/public/..;/admin` into `/admin` upstream;
//! - empty segments (`//`) collapse, `.` segments vanish, `..` removes the previous
//!   segment and is refused when it would climb above the root;
//! - a trailing `/` is kept (the upstream may care) but matching ignores it;
//! - case is kept: paths are case-sensitive (RFC 3986), rules match exactly.

use std::borrow::Cow;
use std::fmt;

/// Why a request path was refused. The engine answers 400.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Does not start with `/` (absolute-form or `*`).
    NotAbsolute,
    /// `%2F`, `%5C` or a raw backslash.
    EncodedSeparator,
    /// `%00`.
    NulByte,
    /// `%` not followed by two hex digits, or escapes that are not valid UTF-8.
    InvalidPercentEncoding,
    /// A control character, space, raw non-ASCII byte, `#` or `;`.
    ForbiddenCharacter,
    /// `..` would leave the root.
    EscapesRoot,
}

impl PathError {
    /// A stable code for logs and audit.
    pub fn as_str(&self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::EncodedSeparator => "path_encoded_separator",
            PathError::NulByte => "path_nul_byte",
            PathError::InvalidPercentEncoding => "path_invalid_percent_encoding",
            PathError::ForbiddenCharacter => "path_forbidden_character",
            PathError::EscapesRoot => "path_escapes_root",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            PathError::NotAbsolute => "request path does not start with `/`",
            PathError::EncodedSeparator => "request path contains an encoded `/` or a `\\`",
            PathError::NulByte => "request path contains %00",
            PathError::InvalidPercentEncoding => "request path has a malformed percent-encoding",
            PathError::ForbiddenCharacter => "request path contains a forbidden character",
            PathError::EscapesRoot => "request path climbs above the root with `..`",
        };
        f.write_str(text)
    }
}

impl std::error::Error for PathError {}

/// A request path in canonical form, with its query split off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    path: Cow<'a, str>,
    query: Option<&'a str>,
}

impl<'a> NormalizedPath<'a> {
    /// Normalises `raw` (`:path` as received, query included).
    pub fn parse(raw: &'a str) -> Result<NormalizedPath<'a>, PathError> {
        let (path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw, None),
        };
        if !path.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        if is_canonical(path)? {
            return Ok(NormalizedPath { path: Cow::Borrowed(path), query });
        }
        let decoded = decode(path)?;
        Ok(NormalizedPath { path: Cow::Owned(remove_dot_segments(&decoded)?), query })
    }

    /// The canonical path (no query).
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The query string as received (never used for matching).
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The path's segments for matching (a trailing `/` yields no empty segment).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        let body = self.path.strip_prefix('/').unwrap_or(&self.path);
        let body = body.strip_suffix('/').unwrap_or(body);
        body.split('/').filter(|s| !s.is_empty())
    }
}

/// Checks characters; true when `path` needs no rewriting at all (the fast path:
/// most real paths borrow).
fn is_canonical(path: &str) -> Result<bool, PathError> {
    let bytes = path.as_bytes();
    let mut canonical = true;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return Err(PathError::EncodedSeparator),
            b'%' => canonical = false,
            b';' | b'#' | b' ' | 0..=0x1f | 0x7f..=0xff => return Err(PathError::ForbiddenCharacter),
            b'/' => {
                let next = bytes.get(i + 1).copied();
                let next2 = bytes.get(i + 2).copied();
                let next3 = bytes.get(i + 3).copied();
                if next == Some(b'/')
                    || (next == Some(b'.') && matches!(next2, None | Some(b'/')))
                    || (next == Some(b'.') && next2 == Some(b'.') && matches!(next3, None | Some(b'/')))
                {
                    canonical = false;
                }
            }
            _ => {}
        }
    }
    Ok(canonical)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes unreserved escapes, upper-cases the others, validates UTF-8 of
/// escaped non-ASCII runs.
fn decode(path: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut run: Vec<u8> = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            check_run(&mut run)?;
            out.push(b as char);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::InvalidPercentEncoding);
        };
        let v = h << 4 | l;
        i += 3;
        match v {
            0 => return Err(PathError::NulByte),
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            _ if is_unreserved(v) => {
                check_run(&mut run)?;
                out.push(v as char);
            }
            _ => {
                if v >= 0x80 {
                    run.push(v);
                } else {
                    check_run(&mut run)?;
                }
                out.push('%');
                out.push(HEX.get(usize::from(v >> 4)).copied().map(char::from).unwrap_or('0'));
                out.push(HEX.get(usize::from(v & 0xf)).copied().map(char::from).unwrap_or('0'));
            }
        }
    }
    check_run(&mut run)?;
    Ok(out)
}

/// An escaped run of non-ASCII bytes must be valid UTF-8: overlong and truncated
/// forms are how `.` and `/` get smuggled past naive decoders.
fn check_run(run: &mut Vec<u8>) -> Result<(), PathError> {
    if run.is_empty() {
        return Ok(());
    }
    let ok = std::str::from_utf8(run).is_ok();
    run.clear();
    if ok { Ok(()) } else { Err(PathError::InvalidPercentEncoding) }
}

/// Collapses `//`, drops `.`, resolves `..` (refusing to climb above the root).
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut segments: Vec<&str> = Vec::new();
    let body = path.strip_prefix('/').unwrap_or(path);
    let mut trailing = false;
    for seg in body.split('/') {
        trailing = false;
        match seg {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
                trailing = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (raw path, expected canonical path or error).
    const CASES: &[(&str, Result<&str, PathError>)] = &[
        ("/api/hr/x", Ok("/api/hr/x")),
        ("/", Ok("/")),
        ("/api/faq/../hr/x", Ok("/api/hr/x")),
        ("/api/faq/%2e%2e/hr/x", Ok("/api/hr/x")),
        ("/api/faq/%2E%2E/hr/x", Ok("/api/hr/x")),
        ("/api/faq/.%2e/hr/x", Ok("/api/hr/x")),
        ("/api/%2e%2e/hr", Ok("/hr")),
        ("/api/hr%2Fx", Err(PathError::EncodedSeparator)),
        ("/api/hr%2fx", Err(PathError::EncodedSeparator)),
        ("/api/hr%5Cx", Err(PathError::EncodedSeparator)),
        ("/api\\hr", Err(PathError::EncodedSeparator)),
        ("//api//hr", Ok("/api/hr")),
        ("/api/./hr", Ok("/api/hr")),
        ("/api/%2e/hr", Ok("/api/hr")),
        ("/API/hr", Ok("/API/hr")),
        ("/api/hr/", Ok("/api/hr/")),
        ("/api/hr//", Ok("/api/hr/")),
        ("/api/hr/.", Ok("/api/hr/")),
        ("/api/hr/..", Ok("/api/")),
        ("/api/%41pi", Ok("/api/Api")),
        ("/api/%7euser", Ok("/api/~user")),
        ("/api/a%3ab", Ok("/api/a%3Ab")),
        ("/api/caf%C3%A9", Ok("/api/caf%C3%A9")),
        ("/api/hr%00", Err(PathError::NulByte)),
        ("/api/%", Err(PathError::InvalidPercentEncoding)),
        ("/api/%4", Err(PathError::InvalidPercentEncoding)),
        ("/api/%zz", Err(PathError::InvalidPercentEncoding)),
        ("/api/%%32%65", Err(PathError::InvalidPercentEncoding)),
        ("/api/%C0%AE%C0%AE/hr", Err(PathError::InvalidPercentEncoding)),
        ("/api/%C0%AF", Err(PathError::InvalidPercentEncoding)),
        ("/api/%E2%82", Err(PathError::InvalidPercentEncoding)),
        ("/api/%252e%252e/hr", Ok("/api/%252e%252e/hr")),
        ("/..", Err(PathError::EscapesRoot)),
        ("/api/../../hr", Err(PathError::EscapesRoot)),
        ("/%2e%2e/etc", Err(PathError::EscapesRoot)),
        ("/api/faq/..;/hr", Err(PathError::ForbiddenCharacter)),
        ("/api;x=1/hr", Err(PathError::ForbiddenCharacter)),
        ("/api/hr#frag", Err(PathError::ForbiddenCharacter)),
        ("/api/h r", Err(PathError::ForbiddenCharacter)),
        ("/api/\tx", Err(PathError::ForbiddenCharacter)),
        ("/api/caf\u{e9}", Err(PathError::ForbiddenCharacter)),
        ("api/hr", Err(PathError::NotAbsolute)),
        ("*", Err(PathError::NotAbsolute)),
        ("http://evil/api/faq", Err(PathError::NotAbsolute)),
        ("/api/faq?x=/../hr", Ok("/api/faq")),
        ("/api/faq?%2F", Ok("/api/faq")),
        ("/api/hr/.x/..y", Ok("/api/hr/.x/..y")),
    ];

    #[test]
    fn normalisation_table() {
        for (raw, expected) in CASES {
            let got = NormalizedPath::parse(raw).map(|p| p.as_str().to_string());
            assert_eq!(got.as_deref().map_err(|e| *e), *expected, "path {raw:?}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        let p = NormalizedPath::parse("/api/hr/x?y=1").unwrap();
        assert!(matches!(p.path, Cow::Borrowed(_)));
        assert_eq!(p.query(), Some("y=1"));
    }

    #[test]
    fn normalisation_is_idempotent() {
        for (raw, expected) in CASES {
            if let Ok(canonical) = expected {
                let again = NormalizedPath::parse(canonical).unwrap();
                assert_eq!(again.as_str(), *canonical, "from {raw:?}");
            }
        }
    }

    #[test]
    fn segments_ignore_trailing_slash() {
        let p = NormalizedPath::parse("/api/hr/").unwrap();
        assert_eq!(p.segments().collect::<Vec<_>>(), ["api", "hr"]);
        assert_eq!(NormalizedPath::parse("/").unwrap().segments().count(), 0);
    }
}
