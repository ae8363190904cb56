//! The HTTP/1 that xdplb speaks, in one place: the requests it sends (health checks, `xdplb
//! status`), the response heads the status page writes, and the reading of both sides. Heads
//! are parsed by `httparse`; bodies are framed here (Content-Length, chunked, or to the end).
//!
//! What a peer sends is never trusted: a response is read incrementally (no byte is parsed
//! twice, so a trickling or flooding peer costs linear work), every size is checked against
//! `Limits` before anything is kept, arithmetic on sizes the peer chose is checked, and text
//! quoted from the peer is cut on character boundaries.
#![warn(clippy::arithmetic_side_effects)]

use std::fmt::Write as _;

/// The most of a check response a reader keeps (HAProxy's tune.chksize is 16 KiB): its head, and
/// its body. Beyond either the response is refused (`L7RSP`).
pub const MAX_RESPONSE: usize = 64 * 1024;

/// Headers a head may carry before it is refused.
const MAX_HEADERS: usize = 64;

/// A chunk-size line (size, extensions) longer than this is not one.
const MAX_CHUNK_LINE: usize = 1024;

/// How much of a response a reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The status line and headers, with the blank line that ends them.
    pub head: usize,
    /// The body, after de-chunking.
    pub body: usize,
}

impl Limits {
    /// A health check's response: 64 KiB of head, 64 KiB of body.
    pub const CHECK: Limits = Limits { head: MAX_RESPONSE, body: MAX_RESPONSE };

    /// Bytes on the wire a response within these limits may take: head, body, and chunked
    /// framing (at most as much again as the body, and one size line).
    pub fn wire(self) -> usize {
        self.head.saturating_add(self.body.saturating_mul(2)).saturating_add(MAX_CHUNK_LINE)
    }
}

/// `GET path HTTP/1.1` with `Host`, then `headers`, then `Connection: close`.
pub fn get_request(path: &str, host: &str, headers: &[(&str, &str)]) -> String {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    request
}

/// A response head for a body of `len` bytes, closing the connection after it; `extra` are
/// more header lines, each ending in CRLF.
pub fn response_head(status: &str, content_type: &str, len: usize) -> String {
    response_head_with(status, content_type, len, "")
}

/// `response_head` with more header lines (each ending in CRLF).
pub fn response_head_with(status: &str, content_type: &str, len: usize, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nCache-Control: no-cache\r\n{extra}Connection: close\r\n\r\n"
    )
}

/// A request's method, path and credentials, as far as they arrived.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestLine {
    pub method: String,
    pub path: String,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
    /// The whole head arrived.
    pub complete: bool,
    /// What arrived is not an HTTP/1 request head (and never will be).
    pub invalid: bool,
}

/// Reads a request head from what arrived so far; a malformed one has no method.
pub fn request_line(buf: &[u8]) -> RequestLine {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(buf);
    let complete = matches!(parsed, Ok(httparse::Status::Complete(_)));
    let authorization = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_owned());
    RequestLine {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        authorization,
        complete,
        invalid: parsed.is_err(),
    }
}

/// A whole response: its status and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why what arrived is not an HTTP/1 response, or not one xdplb reads.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("response headers longer than {0} bytes")]
    HeadTooLong(usize),
    #[error("response body longer than {0} bytes")]
    BodyTooLong(usize),
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
    #[error("bad Content-Length {0:?}")]
    ContentLength(String),
    #[error("body shorter than its Content-Length ({got} of {want} bytes)")]
    ShortBody { got: usize, want: usize },
    #[error("truncated chunked body")]
    TruncatedChunked,
    #[error("bad chunk size {0:?}")]
    ChunkSize(String),
    #[error("truncated chunk")]
    TruncatedChunk,
    #[error("chunk not followed by CRLF")]
    ChunkEnd,
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` bytes.
    Length(usize),
    Chunked,
    /// Until the peer closes.
    ToEnd,
    /// None at all (1xx, 204, 304).
    Empty,
}

/// A response read as it arrives: feed it what the peer sends, then `finish` when the peer is
/// done. Work and memory are linear in what arrived and bounded by the `Limits`.
#[derive(Debug)]
pub struct Reader {
    limits: Limits,
    /// Every byte that arrived (at most `limits.wire()`).
    raw: Vec<u8>,
    /// Where the head's parse may resume: it is parsed again only once a new line ended.
    head_scanned: usize,
    /// Status, framing and where the body starts, once the head is complete.
    head: Option<(u16, Framing, usize)>,
    /// Chunked: the decoded body so far, where the next chunk starts in `raw`.
    body: Vec<u8>,
    cursor: usize,
}

impl Reader {
    pub fn new(limits: Limits) -> Self {
        Reader { limits, raw: Vec::new(), head_scanned: 0, head: None, body: Vec::new(), cursor: 0 }
    }

    /// Takes in what arrived; `Some` once the response is complete.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<Response>, Invalid> {
        // What fits is kept and read (a response complete within it stands, whatever follows);
        // if that is not a whole response, the rest is over the limits.
        let room = self.limits.wire().saturating_sub(self.raw.len());
        let kept = data.get(..room).unwrap_or(data);
        self.raw.extend_from_slice(kept);
        match self.step(false)? {
            Some(response) => Ok(Some(response)),
            None if kept.len() < data.len() => Err(match self.head {
                None => Invalid::HeadTooLong(self.limits.head),
                Some(_) => Invalid::BodyTooLong(self.limits.body),
            }),
            None => Ok(None),
        }
    }

    /// The peer closed: the response as it stands, or why it is not one.
    pub fn finish(&mut self) -> Result<Response, Invalid> {
        match self.step(true)? {
            Some(r) => Ok(r),
            None if self.raw.is_empty() => Err(Invalid::Nothing),
            None => Err(Invalid::TruncatedHead),
        }
    }

    fn step(&mut self, eof: bool) -> Result<Option<Response>, Invalid> {
        let (status, framing, start) = match self.head {
            Some(h) => h,
            None => match self.parse_head(eof)? {
                Some(h) => h,
                None => return Ok(None),
            },
        };
        let body = self.raw.get(start..).unwrap_or_default();
        let done = |body: Vec<u8>| Ok(Some(Response { status, body }));
        match framing {
            Framing::Empty => done(Vec::new()),
            Framing::Length(want) => match body.len() {
                got if got >= want => done(body.get(..want).unwrap_or_default().to_vec()),
                got if eof => Err(Invalid::ShortBody { got, want }),
                _ => Ok(None),
            },
            Framing::ToEnd if body.len() > self.limits.body => Err(Invalid::BodyTooLong(self.limits.body)),
            Framing::ToEnd if eof => done(body.to_vec()),
            Framing::Chunked if self.dechunk(eof)? => done(std::mem::take(&mut self.body)),
            Framing::ToEnd | Framing::Chunked => Ok(None),
        }
    }

    /// The head, once its last line arrived; `None` while more is needed.
    fn parse_head(&mut self, eof: bool) -> Result<Option<(u16, Framing, usize)>, Invalid> {
        let fresh = self.raw.get(self.head_scanned..).unwrap_or_default();
        let new_line = fresh.contains(&b'\n');
        self.head_scanned = self.raw.len();
        if !new_line && !eof {
            // No line ended: the head cannot be complete, and may already be too long.
            return if self.raw.len() > self.limits.head {
                Err(Invalid::HeadTooLong(self.limits.head))
            } else {
                Ok(None)
            };
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(&self.raw) {
            Ok(httparse::Status::Complete(n)) if n > self.limits.head => {
                return Err(Invalid::HeadTooLong(self.limits.head))
            }
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.raw.len() > self.limits.head => {
                return Err(Invalid::HeadTooLong(self.limits.head))
            }
            Ok(httparse::Status::Partial) if eof && self.raw.is_empty() => return Err(Invalid::Nothing),
            Ok(httparse::Status::Partial) if eof => return Err(Invalid::TruncatedHead),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::Version) => return Err(Invalid::NotHttp1(first_line(&self.raw))),
            Err(httparse::Error::Status) => return Err(Invalid::StatusLine(first_line(&self.raw))),
            Err(e) => return Err(Invalid::Head(e)),
        };
        let status = head.code.unwrap_or_default();
        let values = |name: &str| {
            head.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
                .collect::<Vec<_>>()
        };
        let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
            Framing::Empty
        } else if values("transfer-encoding").iter().any(|v| v.to_ascii_lowercase().contains("chunked")) {
            Framing::Chunked
        } else {
            match values("content-length").as_slice() {
                [] => Framing::ToEnd,
                [first, rest @ ..] => {
                    // Several Content-Length headers are allowed only when they agree (RFC 9110).
                    let len = first.parse::<usize>().map_err(|_| Invalid::ContentLength(cut(first)))?;
                    if let Some(other) = rest.iter().find(|v| *v != first) {
                        return Err(Invalid::ContentLength(cut(other)));
                    }
                    if len > self.limits.body {
                        return Err(Invalid::BodyTooLong(self.limits.body));
                    }
                    Framing::Length(len)
                }
            }
        };
        self.head = Some((status, framing, head_len));
        self.cursor = head_len;
        Ok(Some((status, framing, head_len)))
    }

    /// Decodes every whole chunk after `cursor`; true once the last (empty) chunk arrived.
    fn dechunk(&mut self, eof: bool) -> Result<bool, Invalid> {
        loop {
            let raw = self.raw.get(self.cursor..).unwrap_or_default();
            let (size_len, size) = match httparse::parse_chunk_size(raw) {
                // The same limit whether the line arrived whole or in pieces.
                Ok(httparse::Status::Complete((n, _))) if n > MAX_CHUNK_LINE => {
                    return Err(Invalid::ChunkSize(first_line(raw)))
                }
                Ok(httparse::Status::Complete(c)) => c,
                Ok(httparse::Status::Partial) if raw.len() > MAX_CHUNK_LINE => {
                    return Err(Invalid::ChunkSize(first_line(raw)))
                }
                Ok(httparse::Status::Partial) if eof => return Err(Invalid::TruncatedChunked),
                Ok(httparse::Status::Partial) => return Ok(false),
                Err(httparse::InvalidChunkSize) => return Err(Invalid::ChunkSize(first_line(raw))),
            };
            if size == 0 {
                // Trailers, if any, are not read: the body is complete.
                return Ok(true);
            }
            // A chunk that would take the body past the limit is refused before it arrives.
            let room = self.limits.body.saturating_sub(self.body.len());
            let size = match usize::try_from(size) {
                Ok(s) if s <= room => s,
                _ => return Err(Invalid::BodyTooLong(self.limits.body)),
            };
            let data_end = size_len.checked_add(size).ok_or(Invalid::BodyTooLong(self.limits.body))?;
            let chunk_end = data_end.checked_add(2).ok_or(Invalid::BodyTooLong(self.limits.body))?;
            let (Some(data), Some(crlf)) = (raw.get(size_len..data_end), raw.get(data_end..chunk_end)) else {
                return if eof { Err(Invalid::TruncatedChunk) } else { Ok(false) };
            };
            if crlf != b"\r\n" {
                return Err(Invalid::ChunkEnd);
            }
            self.body.extend_from_slice(data);
            self.cursor = self.cursor.saturating_add(chunk_end);
        }
    }
}

/// Reads a response from everything that arrived so far; `eof` says the peer is done sending.
/// `Ok(None)`: more is needed (never at `eof`). The check's limits apply.
pub fn response(buf: &[u8], eof: bool) -> Result<Option<Response>, Invalid> {
    response_within(buf, eof, Limits::CHECK)
}

/// `response` with other limits (`xdplb status` reads a bigger body).
pub fn response_within(buf: &[u8], eof: bool, limits: Limits) -> Result<Option<Response>, Invalid> {
    let mut r = Reader::new(limits);
    match r.feed(buf)? {
        Some(response) => Ok(Some(response)),
        None if eof => r.finish().map(Some),
        None => Ok(None),
    }
}

/// How many characters of a peer's text a message quotes.
const QUOTE_CHARS: usize = 80;

/// The first line of `buf`, at most 80 characters (never cut inside one), for a message.
fn first_line(buf: &[u8]) -> String {
    let line = buf.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    // Decoding a bounded prefix is enough: 80 characters take at most 320 bytes.
    let prefix = line.get(..line.len().min(QUOTE_CHARS.saturating_mul(4))).unwrap_or_default();
    cut(&String::from_utf8_lossy(prefix))
}

/// At most 80 characters of `text`, cut on a character boundary.
fn cut(text: &str) -> String {
    text.chars().take(QUOTE_CHARS).collect()
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
        assert_eq!(
            whole("HTTP/1.1 204 No Content\r\n\r\n"),
            Ok(Some(Response { status: 204, body: Vec::new() })),
            "204 has no body"
        );
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
        assert_eq!(whole(&format!("{chunked}2\r\nokXX")), Err(Invalid::ChunkEnd));
        assert_eq!(
            whole("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"),
            Err(Invalid::ContentLength("3".into()))
        );
        assert_eq!(whole("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), Err(Invalid::ContentLength("-1".into())));
    }

    #[test]
    fn hostile_responses_are_refused_within_the_limits() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        // The chunk size that once panicked the agent: refused before a byte of it arrives.
        assert_eq!(
            response(format!("{chunked}ffffffffffffffff\r\n").as_bytes(), false),
            Err(Invalid::BodyTooLong(MAX_RESPONSE))
        );
        assert_eq!(
            response(format!("{chunked}fffffffffffffffffff\r\n").as_bytes(), false),
            Err(Invalid::ChunkSize("fffffffffffffffffff".into())),
            "a size that overflows u64"
        );
        // An endless chunked body: refused once past the limit, not read until the timeout.
        let mut r = Reader::new(Limits::CHECK);
        assert_eq!(r.feed(chunked.as_bytes()), Ok(None));
        let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
        let mut fed = 0;
        let verdict = loop {
            fed += 1;
            match r.feed(chunk.as_bytes()) {
                Ok(None) => {}
                other => break other,
            }
        };
        assert_eq!(verdict, Err(Invalid::BodyTooLong(MAX_RESPONSE)));
        assert_eq!(fed, 65, "64 KiB of body, then refused");
        // A header line of a megabyte.
        let mut r = Reader::new(Limits::CHECK);
        assert_eq!(r.feed(b"HTTP/1.1 200 OK\r\nX-Junk: "), Ok(None));
        let verdict = (0..256).map(|_| r.feed(&[b'a'; 4096])).find(|v| *v != Ok(None));
        assert_eq!(verdict, Some(Err(Invalid::HeadTooLong(MAX_RESPONSE))));
        // A declared body over the limit, refused at once.
        assert_eq!(
            response(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n", false),
            Err(Invalid::BodyTooLong(MAX_RESPONSE))
        );
        // To the end: no more than the limit.
        let long = format!("HTTP/1.0 200 OK\r\n\r\n{}", "y".repeat(MAX_RESPONSE + 1));
        assert_eq!(whole(&long), Err(Invalid::BodyTooLong(MAX_RESPONSE)));
    }

    #[test]
    fn quoted_text_is_cut_on_character_boundaries() {
        // Byte 79 of this line falls inside a two-byte character.
        let line = format!("HTTP/1.1 2x0 {}", "é".repeat(100));
        assert!(!line.is_char_boundary(80));
        let Err(Invalid::StatusLine(quoted)) = whole(&format!("{line}\r\n\r\n")) else { panic!("not refused") };
        assert_eq!(quoted.chars().count(), 80);
        assert!(line.starts_with(&quoted));
        // Bytes that are not UTF-8 are replaced, not trusted.
        let Err(Invalid::NotHttp1(quoted)) = response(b"\xff\xfe\x00junk\r\n\r\n", true) else { panic!() };
        assert!(quoted.starts_with('\u{fffd}'), "{quoted:?}");
    }

    #[test]
    fn fed_in_pieces_or_whole_the_same() {
        let text = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3;x=y\r\n!!!\r\n0\r\n\r\n";
        for split in 0..text.len() {
            let mut r = Reader::new(Limits::CHECK);
            let (a, b) = text.split_at(split);
            let first = r.feed(a).unwrap();
            let got = match first {
                Some(resp) => resp,
                None => r.feed(b).unwrap().unwrap_or_else(|| r.finish().unwrap()),
            };
            assert_eq!(got.body, b"ok!!!", "split at {split}");
        }
    }

    #[test]
    fn requests_and_heads() {
        assert_eq!(
            get_request("/health", "10.0.0.1:2379", &[("Accept", "*/*")]),
            "GET /health HTTP/1.1\r\nHost: 10.0.0.1:2379\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let r = request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Basic eDp5\r\n\r\n");
        assert_eq!((r.method.as_str(), r.path.as_str(), r.complete), ("GET", "/metrics?x=1", true));
        assert_eq!(r.authorization.as_deref(), Some("Basic eDp5"));
        assert!(!request_line(b"GET / HT").complete);
        assert_eq!(request_line(b"\x00\x01 junk").method, "");
        assert!(request_line(b"\x00\x01 junk").invalid);
    }
}
