//! Finding the token in a request: headers (with a scheme prefix), query
//! parameters and cookies, as configured per provider.

use crate::config::jwt::{HeaderSource, JwtProvider};

/// Where one provider looks for its token. Header names are lower-case.
#[derive(Debug, Clone)]
pub struct TokenSources {
    headers: Vec<(String, Option<String>)>,
    params: Vec<String>,
    cookies: Vec<String>,
}

/// Where a token was found: the engine removes it from there unless `forward`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    Header(String),
    Param(String),
    Cookie(String),
}

impl TokenSources {
    /// Sources of `provider`, defaulting to `Authorization: Bearer <token>`.
    pub fn of(provider: &JwtProvider) -> Self {
        let default = [HeaderSource { name: "authorization".into(), value_prefix: Some("Bearer ".into()) }];
        let headers = provider.from_headers.as_deref().unwrap_or(&default);
        TokenSources {
            headers: headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value_prefix.clone()))
                .collect(),
            params: provider.from_params.clone(),
            cookies: provider.from_cookies.clone(),
        }
    }

    /// Header names this provider reads (lower-case).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|(n, _)| n.as_str())
    }

    /// The first token found, in the order headers, params, cookies.
    /// `headers` names must be lower-case; `query` excludes the `?`.
    pub fn find<'r>(
        &self,
        headers: &'r [(String, String)],
        query: Option<&'r str>,
    ) -> Option<(&'r str, TokenLocation)> {
        for (name, prefix) in &self.headers {
            for (_, value) in headers.iter().filter(|(n, _)| n == name) {
                if let Some(token) = strip_prefix(value, prefix.as_deref()) {
                    return Some((token, TokenLocation::Header(name.clone())));
                }
            }
        }
        if let Some(query) = query {
            for param in &self.params {
                if let Some(v) = query_param(query, param) {
                    return Some((v, TokenLocation::Param(param.clone())));
                }
            }
        }
        if !self.cookies.is_empty() {
            for (_, value) in headers.iter().filter(|(n, _)| n == "cookie") {
                for cookie in &self.cookies {
                    if let Some(v) = cookie_value(value, cookie) {
                        return Some((v, TokenLocation::Cookie(cookie.clone())));
                    }
                }
            }
        }
        None
    }
}

/// Strips the scheme prefix; the scheme is matched case-insensitively (RFC 7235
/// auth schemes are case-insensitive: `bearer`, `BEARER` are the same scheme).
fn strip_prefix<'a>(value: &'a str, prefix: Option<&str>) -> Option<&'a str> {
    let rest = match prefix {
        None => value,
        Some(p) => {
            let head = value.get(..p.len())?;
            if !head.eq_ignore_ascii_case(p) {
                return None;
            }
            value.get(p.len()..)?
        }
    };
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// The raw value of `name` in a query string (tokens are base64url: no decoding).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then_some(v)
    })
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then_some(v.trim_matches('"'))
    })
}

/// `query` with parameter `name` removed (used when the token must not be forwarded).
pub fn remove_query_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| pair.split_once('=').map(|(k, _)| k).unwrap_or(pair) != name)
        .collect::<Vec<_>>()
        .join("&")
}

/// A `Cookie` header with cookie `name` removed.
pub fn remove_cookie(header: &str, name: &str) -> String {
    header
        .split(';')
        .map(str::trim)
        .filter(|pair| pair.split_once('=').map(|(k, _)| k).unwrap_or(pair) != name)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(json: &str) -> JwtProvider {
        serde_json::from_str(json).unwrap()
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let s = TokenSources::of(&provider(r#"{"name":"p","jwks":{"keys":[]}}"#));
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "BeArEr   abc  "] {
            let headers = h(&[("authorization", v)]);
            assert_eq!(s.find(&headers, None).map(|t| t.0), Some("abc"), "{v}");
        }
        let headers = h(&[("authorization", "Basic abc")]);
        assert_eq!(s.find(&headers, None), None);
        let headers = h(&[("authorization", "Bearer ")]);
        assert_eq!(s.find(&headers, None), None);
    }

    #[test]
    fn params_and_cookies_are_sources_when_configured() {
        let s = TokenSources::of(&provider(
            r#"{"name":"p","jwks":{"keys":[]},"from_params":["access_token"],"from_cookies":["session"]}"#,
        ));
        assert_eq!(
            s.find(&[], Some("a=1&access_token=tok&b=2")),
            Some(("tok", TokenLocation::Param("access_token".into())))
        );
        let headers = h(&[("cookie", "theme=dark; session=ck; x=y")]);
        assert_eq!(s.find(&headers, None), Some(("ck", TokenLocation::Cookie("session".into()))));
    }

    #[test]
    fn removing_a_source_keeps_the_rest() {
        assert_eq!(remove_query_param("a=1&access_token=t&b=2", "access_token"), "a=1&b=2");
        assert_eq!(remove_cookie("theme=dark; session=ck; x=y", "session"), "theme=dark; x=y");
    }
}
