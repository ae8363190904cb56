//! The HTTP/1 that xdplb speaks, in one place: the requests it sends (health checks, `xdplb
//! status`), the response heads the status page writes, and the reading of both sides. Heads
//! are parsed by `httparse`; bodies are framed here (Content-Length, chunked, or to the end).

use std::fmt::Write as _;

/// The most of a response a reader keeps (HAProxy's tune.chksize is 16 KiB).
pub const MAX_RESPONSE: usize = 64 * 1024;

/// Headers a head may carry before it is refused.
const MAX_HEADERS: usize = 64;

/// `GET path HTTP/1.1` with `Host`, then `headers`, then `Connection: close`.
pub fn get_request(path: &str, host: &str, headers: &[(&str, &str)]) -> String {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    request
}

/// A response head for a body of `len` bytes, closing the connection after it.
pub fn response_head(status: &str, content_type: &str, len: usize) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
    )
}

/// A request's method and path, as far as they arrived.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestLine {
    pub method: String,
    pub path: String,
    /// The whole head arrived.
    pub complete: bool,
}

/// Reads a request head from what arrived so far; a malformed one has no method.
pub fn request_line(buf: &[u8]) -> RequestLine {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let complete = matches!(req.parse(buf), Ok(httparse::Status::Complete(_)));
    RequestLine {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        complete,
    }
}

/// A whole response: its status and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why what arrived is not an HTTP/1 response.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("response headers too long")]
    HeadTooLong,
    #[error("connection closed without a response")]
    Nothing,
    #[error("truncated response headers")]
    TruncatedHead,
    #[error("not an HTTP/1 response: {0:?}")]
    NotHttp1(String),
    #[error("bad status line {0:?}")]
    StatusLine(String),
    #[error("bad response head: {0}")]
    Head(httparse::Error),
    #[error("body shorter than its Content-Length ({got} of {want} bytes)")]
    ShortBody { got: usize, want: usize },
    #[error("truncated chunked body")]
    TruncatedChunked,
    #[error("bad chunk size {0:?}")]
    ChunkSize(String),
    #[error("truncated chunk")]
    TruncatedChunk,
}

/// Reads a response from everything that arrived so far; `eof` says the peer is done sending.
/// `Ok(None)`: more is needed (never at `eof`).
pub fn response(buf: &[u8], eof: bool) -> Result<Option<Response>, Invalid> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE => return Err(Invalid::HeadTooLong),
        Ok(httparse::Status::Partial) if eof && buf.is_empty() => return Err(Invalid::Nothing),
        Ok(httparse::Status::Partial) if eof => return Err(Invalid::TruncatedHead),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => return Err(Invalid::NotHttp1(first_line(buf))),
        Err(httparse::Error::Status) => return Err(Invalid::StatusLine(first_line(buf))),
        Err(e) => return Err(Invalid::Head(e)),
    };
    let status = head.code.unwrap_or_default();
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    let body = &buf[head_len..];
    let done = |body: Vec<u8>| Ok(Some(Response { status, body }));
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return match dechunk(body, eof)? {
            Some(body) => done(body),
            None => Ok(None),
        };
    }
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let want = len.min(MAX_RESPONSE);
        return match body.len() {
            got if got >= want => done(body[..want].to_vec()),
            got if eof => Err(Invalid::ShortBody { got, want }),
            _ => Ok(None),
        };
    }
    if eof || body.len() >= MAX_RESPONSE {
        done(body.to_vec())
    } else {
        Ok(None)
    }
}

/// The body of a chunked response, once its last chunk arrived (or it is past the limit).
fn dechunk(mut raw: &[u8], eof: bool) -> Result<Option<Vec<u8>>, Invalid> {
    let mut body = Vec::new();
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(raw) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) if eof || raw.len() > MAX_RESPONSE => return Err(Invalid::TruncatedChunked),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::InvalidChunkSize) => return Err(Invalid::ChunkSize(first_line(raw))),
        };
        if size == 0 {
            return Ok(Some(body));
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let Some(chunk) = raw.get(size_len..size_len.saturating_add(size).saturating_add(2)) else {
            return if eof { Err(Invalid::TruncatedChunk) } else { Ok(None) };
        };
        body.extend_from_slice(&chunk[..size]);
        raw = &raw[size_len + size + 2..];
        if body.len() > MAX_RESPONSE {
            return Ok(Some(body));
        }
    }
}

/// The first line of `buf`, at most 80 characters, for a message.
fn first_line(buf: &[u8]) -> String {
    let line = buf.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Result<Option<Response>, Invalid> {
        response(text.as_bytes(), true)
    }

    #[test]
    fn bodies_are_framed_by_length_chunks_or_the_end() {
        let ok = |body: &str| Ok(Some(Response { status: 200, body: body.as_bytes().to_vec() }));
        assert_eq!(whole("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"), ok("ok"));
        assert_eq!(
            whole("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3;x=y\r\n!!!\r\n0\r\n\r\n"),
            ok("ok!!!")
        );
        assert_eq!(whole("HTTP/1.0 200 OK\r\n\r\nto the end"), ok("to the end"));
        assert_eq!(response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no", false), Ok(None));
        assert_eq!(response(b"HTTP/1.1 200 OK\r\n", false), Ok(None));
    }

    #[test]
    fn what_is_not_a_response_says_why() {
        assert_eq!(whole(""), Err(Invalid::Nothing));
        assert_eq!(whole("HTTP/1.1 200 OK\r\nContent"), Err(Invalid::TruncatedHead));
        assert_eq!(whole("SSH-2.0-OpenSSH\r\n\r\n"), Err(Invalid::NotHttp1("SSH-2.0-OpenSSH".into())));
        assert!(matches!(whole("HTTP/1.1 abc OK\r\n\r\n"), Err(Invalid::StatusLine(_))));
        assert_eq!(
            whole("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"),
            Err(Invalid::ShortBody { got: 5, want: 9 })
        );
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(whole(&format!("{chunked}zz\r\n")), Err(Invalid::ChunkSize("zz".into())));
        assert_eq!(whole(&format!("{chunked}5\r\nab")), Err(Invalid::TruncatedChunk));
        assert_eq!(whole(&format!("{chunked}5")), Err(Invalid::TruncatedChunked));
    }

    #[test]
    fn requests_and_heads() {
        assert_eq!(
            get_request("/health", "10.0.0.1:2379", &[("Accept", "*/*")]),
            "GET /health HTTP/1.1\r\nHost: 10.0.0.1:2379\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let r = request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((r.method.as_str(), r.path.as_str(), r.complete), ("GET", "/metrics?x=1", true));
        assert!(!request_line(b"GET / HT").complete);
        assert_eq!(request_line(b"\x00\x01 junk").method, "");
    }
}
