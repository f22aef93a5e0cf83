//! Who is the client: the downstream address or a trusted X-Forwarded-For entry.
//!
//! Rules (the `client_ip.xff_trusted_hops` setting is `n`):
//! - `n == 0`: the downstream peer address; X-Forwarded-For is ignored, since
//!   anyone can write it.
//! - `n > 0`: the `n`-th entry from the right of X-Forwarded-For (1 = the last
//!   one), because each of the `n` trusted proxies appended the address it saw.
//!   Several X-Forwarded-For header lines are joined with `,` before counting.
//!   If Envoy itself appends (`use_remote_address: true`), count Envoy as a hop.
//! - If the header has fewer than `n` entries, or the chosen entry is not an
//!   IP address, the downstream peer address is used: the request did not come
//!   through the trusted chain (or the chain is misconfigured), and the peer
//!   is the only address nobody could forge. Garbage never becomes a key.
//! - Entries to the left of the chosen one are never looked at.
//!
//! Accepted forms: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`,
//! `[2001:db8::1]:443`, with surrounding spaces or tabs. IPv4-mapped IPv6
//! (`::ffff:1.2.3.4`) becomes the IPv4 address, so one client has one key.
//! Zone ids, host names, `unknown` and obfuscated identifiers are refused.

use std::net::{IpAddr, Ipv6Addr};

/// Longest text accepted as one address (`[` + 45-char IPv6 + `]:65535`).
const MAX_ENTRY_LEN: usize = 54;

/// The client address of a request, or `None` if even the downstream address
/// is missing or unparsable (the caller then keys on a fixed "unknown" value).
pub fn client_ip(downstream: Option<&str>, xff: Option<&str>, trusted_hops: u32) -> Option<IpAddr> {
    let peer = downstream.and_then(parse_address);
    if trusted_hops == 0 {
        return peer;
    }
    let hops = usize::try_from(trusted_hops).unwrap_or(usize::MAX);
    match xff.and_then(|header| header.rsplit(',').nth(hops - 1)) {
        Some(entry) => parse_address(entry).or(peer),
        None => peer,
    }
}

/// Parses one address in any accepted form (see the module docs).
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    if text.is_empty() || text.len() > MAX_ENTRY_LEN {
        return None;
    }
    let ip = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port_suffix(after)) {
            return None;
        }
        IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else {
        // Only IPv4 may carry a bare `:port` (an IPv6 colon would be ambiguous).
        let (host, port) = text.rsplit_once(':')?;
        if !is_port_suffix(&text[host.len()..]) || port.is_empty() {
            return None;
        }
        IpAddr::V4(host.parse().ok()?)
    };
    Some(canonical(ip))
}

/// `:` followed by 1 to 5 digits.
fn is_port_suffix(text: &str) -> bool {
    match text.strip_prefix(':') {
        Some(port) => (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// IPv4-mapped IPv6 addresses are the IPv4 client they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The bytes a limit keys on: the IPv4 address, or the /64 prefix of an IPv6
/// address, because one IPv6 host usually holds a whole /64 and could
/// otherwise rotate through 2^64 keys to escape its bucket.
pub fn bucket_bytes(ip: &IpAddr) -> ([u8; 8], usize) {
    let mut out = [0u8; 8];
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            out[..4].copy_from_slice(&o);
            (out, 4)
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            out.copy_from_slice(&o[..8]);
            (out, 8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn address_forms() {
        let cases: &[(&str, Option<IpAddr>)] = &[
            ("1.2.3.4", ip("1.2.3.4")),
            ("1.2.3.4:8080", ip("1.2.3.4")),
            (" \t1.2.3.4 ", ip("1.2.3.4")),
            ("2001:db8::1", ip("2001:db8::1")),
            ("[2001:db8::1]", ip("2001:db8::1")),
            ("[2001:db8::1]:443", ip("2001:db8::1")),
            ("::ffff:10.0.0.1", ip("10.0.0.1")),
            ("[::ffff:10.0.0.1]:1", ip("10.0.0.1")),
            ("", None),
            ("unknown", None),
            ("example.com", None),
            ("example.com:80", None),
            ("1.2.3.4:", None),
            ("1.2.3.4:123456", None),
            ("1.2.3.4:80a", None),
            ("1.2.3.4.5", None),
            ("01.2.3.4", None),
            ("256.1.1.1", None),
            ("2001:db8::1:443x", None),
            ("[2001:db8::1", None),
            ("[2001:db8::1]x", None),
            ("[1.2.3.4]", None),
            ("fe80::1%eth0", None),
            ("_hidden", None),
            ("1.2.3.4 5.6.7.8", None),
            ("\u{661}.2.3.4", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_address(text), *want, "{text:?}");
        }
        let long = format!("[{}1]", "0:".repeat(30));
        assert_eq!(parse_address(&long), None);
        // Padding is trimmed before the length check.
        assert_eq!(parse_address(&format!("{}1.2.3.4", " ".repeat(60))), ip("1.2.3.4"));
    }

    #[test]
    fn choosing_the_client() {
        let peer = Some("10.0.0.9:5555");
        let cases: &[(Option<&str>, Option<&str>, u32, Option<IpAddr>)] = &[
            // Hops 0: XFF is ignored whatever it says.
            (peer, Some("6.6.6.6"), 0, ip("10.0.0.9")),
            (peer, None, 0, ip("10.0.0.9")),
            (Some("[2001:db8::7]:443"), None, 0, ip("2001:db8::7")),
            // Counted from the right.
            (peer, Some("1.1.1.1, 2.2.2.2, 3.3.3.3"), 1, ip("3.3.3.3")),
            (peer, Some("1.1.1.1, 2.2.2.2, 3.3.3.3"), 2, ip("2.2.2.2")),
            (peer, Some("1.1.1.1,2.2.2.2,3.3.3.3"), 3, ip("1.1.1.1")),
            // A spoofed prefix left of the trusted entries is never reached.
            (peer, Some("garbage, 6.6.6.6, 3.3.3.3"), 1, ip("3.3.3.3")),
            // Too few entries: the peer.
            (peer, Some("3.3.3.3"), 2, ip("10.0.0.9")),
            (peer, Some(""), 1, ip("10.0.0.9")),
            (peer, None, 1, ip("10.0.0.9")),
            // Garbage at the chosen position: the peer, never the garbage.
            (peer, Some("1.1.1.1, nonsense"), 1, ip("10.0.0.9")),
            (peer, Some("1.1.1.1,,"), 1, ip("10.0.0.9")),
            (peer, Some("1.1.1.1, ,3.3.3.3"), 2, ip("10.0.0.9")),
            (peer, Some("\u{0}\u{ff}"), 1, ip("10.0.0.9")),
            // IPv6 and ports inside XFF.
            (peer, Some("[2001:db8::5]:80"), 1, ip("2001:db8::5")),
            (peer, Some("4.4.4.4:1234"), 1, ip("4.4.4.4")),
            // Huge hop counts do not panic.
            (peer, Some("1.1.1.1"), u32::MAX, ip("10.0.0.9")),
            // No usable address at all.
            (None, None, 0, None),
            (Some("pipe:/tmp/x"), Some("junk"), 1, None),
        ];
        for (downstream, xff, hops, want) in cases {
            assert_eq!(client_ip(*downstream, *xff, *hops), *want, "{downstream:?} {xff:?} {hops}");
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_on_their_64_prefix() {
        let a = ip("2001:db8:1:2:aaaa::1").unwrap();
        let b = ip("2001:db8:1:2:bbbb::2").unwrap();
        let c = ip("2001:db8:1:3::1").unwrap();
        assert_eq!(bucket_bytes(&a), bucket_bytes(&b));
        assert_ne!(bucket_bytes(&a), bucket_bytes(&c));
        assert_eq!(bucket_bytes(&ip("1.2.3.4").unwrap()), ([1, 2, 3, 4, 0, 0, 0, 0], 4));
    }
}
