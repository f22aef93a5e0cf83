//! HTTP/1.1 framing shared by the kit's servers and its client: reading a
//! start line and headers, and reading bodies framed by Content-Length,
//! chunked transfer encoding or the connection closing.

use std::io::{self, BufRead};

/// A parsed start line plus headers (names lowercased, order and repeats kept).
#[derive(Debug, Clone)]
pub(crate) struct Head {
    /// The three parts of the start line: `GET /p HTTP/1.1` or `HTTP/1.1 200 OK`.
    pub start: [String; 3],
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// First value of `name` (case-insensitive) in a header list.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads one line without its CRLF. `Ok(None)` on EOF before any byte.
fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "line cut by EOF"));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Reads a start line and headers. `Ok(None)` when the peer closed cleanly
/// before sending anything (the end of a keep-alive connection).
pub(crate) fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let Some(line) = read_line(r)? else { return Ok(None) };
    let mut parts = line.splitn(3, ' ');
    let start = [
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    ];
    if start[1].is_empty() {
        return Err(invalid(format!("bad start line {line:?}")));
    }
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| invalid("EOF in headers"))?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| invalid(format!("bad header {line:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Some(Head { start, headers }))
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Framing of a request body (no body unless announced).
pub(crate) fn request_framing(head: &Head) -> io::Result<Framing> {
    message_framing(head, Framing::None)
}

/// Framing of a response body to a request with `method`.
pub(crate) fn response_framing(head: &Head, method: &str) -> io::Result<Framing> {
    let status: u16 = head.start[1].parse().map_err(|_| invalid("bad status"))?;
    if method.eq_ignore_ascii_case("HEAD") || status < 200 || status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    message_framing(head, Framing::UntilClose)
}

fn message_framing(head: &Head, otherwise: Framing) -> io::Result<Framing> {
    if let Some(te) = head.header("transfer-encoding") {
        if te.to_ascii_lowercase().contains("chunked") {
            return Ok(Framing::Chunked);
        }
    }
    match head.header("content-length") {
        Some(v) => v.trim().parse().map(Framing::Length).map_err(|_| invalid("bad content-length")),
        None => Ok(otherwise),
    }
}

/// Reads a body, handing each piece to `on_piece` as soon as it is read:
/// one call per chunk for chunked bodies, one per `read` otherwise.
pub(crate) fn read_body(
    r: &mut impl BufRead,
    framing: Framing,
    mut on_piece: impl FnMut(&[u8]),
) -> io::Result<()> {
    match framing {
        Framing::None => Ok(()),
        Framing::Length(mut left) => {
            let mut buf = [0u8; 16384];
            while left > 0 {
                let want = left.min(buf.len());
                let n = r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body shorter than content-length"));
                }
                on_piece(&buf[..n]);
                left -= n;
            }
            Ok(())
        }
        Framing::UntilClose => {
            let mut buf = [0u8; 16384];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                on_piece(&buf[..n]);
            }
        }
        Framing::Chunked => loop {
            let line = read_line(r)?.ok_or_else(|| invalid("EOF before chunk size"))?;
            let size_hex = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while let Some(l) = read_line(r)? {
                    if l.is_empty() {
                        break;
                    }
                }
                return Ok(());
            }
            let mut chunk = vec![0u8; size];
            r.read_exact(&mut chunk)?;
            on_piece(&chunk);
            let crlf = read_line(r)?.unwrap_or_default();
            if !crlf.is_empty() {
                return Err(invalid("missing CRLF after chunk"));
            }
        },
    }
}

/// Reads a whole body into memory.
pub(crate) fn read_body_vec(r: &mut impl BufRead, framing: Framing) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    read_body(r, framing, |p| body.extend_from_slice(p))?;
    Ok(body)
}

/// One chunk in chunked transfer encoding.
pub(crate) fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_chunked_body_piece_by_piece() {
        let mut r = Cursor::new(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-t: 1\r\n\r\n".to_vec());
        let mut pieces = Vec::new();
        read_body(&mut r, Framing::Chunked, |p| pieces.push(p.to_vec())).unwrap();
        assert_eq!(pieces, vec![b"abc".to_vec(), b"de".to_vec()]);
    }

    #[test]
    fn parses_head_with_lowercased_repeated_headers() {
        let mut r = Cursor::new(b"HTTP/1.1 200 OK\r\nSet-Cookie: a\r\nset-cookie: b\r\nContent-Length: 2\r\n\r\nok".to_vec());
        let head = read_head(&mut r).unwrap().unwrap();
        assert_eq!(head.start[1], "200");
        assert_eq!(head.headers[0], ("set-cookie".into(), "a".into()));
        assert_eq!(head.headers[1], ("set-cookie".into(), "b".into()));
        assert_eq!(response_framing(&head, "GET").unwrap(), Framing::Length(2));
        assert_eq!(read_body_vec(&mut r, Framing::Length(2)).unwrap(), b"ok");
    }
}
