//! The status page over HTTP: `/` (HTML), `/;csv` (HAProxy's CSV export), `/status.json`,
//! `/metrics`, each for GET and HEAD; and `xdplb status`'s side, which fetches the JSON from a
//! running agent.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::timeout,
};

use super::{html, prometheus, snapshot::Snapshot};
use crate::{
    config::StatsAuth,
    host::limits,
    http1,
    runtime::{stat, StatFilter},
};

/// The most a request head may take (HAProxy's default `tune.bufsize` is 16 KiB; a browser's
/// head is well under 2).
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client has this long, from its connection, to send its whole request head: a slowloris
/// client trickling bytes is cut off here, however slowly it goes.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// And this long to take the whole answer.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// How the status page is served: who may see it, and how many clients at once.
#[derive(Debug, Clone)]
pub struct Policy {
    /// HTTP Basic credentials (`global.stats_auth`), if the page asks for them.
    pub auth: Option<StatsAuth>,
    /// Clients served at once; more are closed as they arrive.
    pub max_clients: usize,
}

/// Serves the status page until the process ends: `/` (HTML), `/status.json`, `/metrics`.
/// Clients beyond `policy.max_clients` are closed at once (so that none of them holds a
/// descriptor the checks need), each client has `HEAD_DEADLINE` to send its request, and a
/// failing accept (no descriptor left) pauses the loop instead of spinning it.
pub async fn serve(listener: TcpListener, shared: Arc<RwLock<Snapshot>>, policy: Policy) {
    let slots = Arc::new(Semaphore::new(policy.max_clients));
    let policy = Arc::new(policy);
    let mut turned_away = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::debug!("status page: accept: {e}");
                tokio::time::sleep(limits::accept_pause(&e)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            turned_away = turned_away.wrapping_add(1);
            if turned_away.is_power_of_two() {
                log::warn!(
                    "status page: {} clients at once, {turned_away} turned away so far (latest {peer})",
                    policy.max_clients
                );
            }
            drop(stream);
            continue;
        };
        let (shared, policy) = (shared.clone(), policy.clone());
        tokio::spawn(async move {
            if let Err(e) = respond(stream, &shared, &policy).await {
                log::debug!("status page request from {peer}: {e}");
            }
            drop(slot);
        });
    }
}

async fn read_head(s: &mut TcpStream) -> io::Result<Option<http1::RequestLine>> {
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut n = 0;
    loop {
        let Some(free) = buf.get_mut(n..) else { return Ok(None) };
        if free.is_empty() {
            return Ok(None);
        }
        let m = s.read(free).await?;
        if m == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        n = n.saturating_add(m);
        let request = http1::request_line(buf.get(..n).unwrap_or_default());
        if request.complete || request.invalid {
            return Ok(Some(request));
        }
    }
}

async fn respond(mut s: TcpStream, shared: &RwLock<Snapshot>, policy: &Policy) -> io::Result<()> {
    let request = timeout(HEAD_DEADLINE, read_head(&mut s)).await.map_err(|_| io::ErrorKind::TimedOut)??;
    let head_only = request.as_ref().is_some_and(|r| r.method == "HEAD");
    let (status, ctype, body, extra) = match request {
        None => ("431 Request Header Fields Too Large", "text/plain", "request head too long\n".to_owned(), ""),
        Some(r) if r.invalid || !r.complete => ("400 Bad Request", "text/plain", "not an HTTP/1 request\n".into(), ""),
        Some(r) if !authorized(policy.auth.as_ref(), r.authorization.as_deref()) => (
            "401 Unauthorized",
            "text/plain",
            "credentials needed (global.stats_auth)\n".into(),
            "WWW-Authenticate: Basic realm=\"xdplb\"\r\n",
        ),
        Some(r) => {
            let snap = shared.read().unwrap_or_else(PoisonError::into_inner).clone();
            let (status, ctype, body) = page(&r, &snap);
            (status, ctype, body, "")
        }
    };
    let answer = async {
        s.write_all(http1::response_head_with(status, ctype, body.len(), extra).as_bytes()).await?;
        // HEAD: the same head (and length) as GET, without the body.
        if !head_only {
            s.write_all(body.as_bytes()).await?;
        }
        s.shutdown().await
    };
    timeout(WRITE_DEADLINE, answer).await.map_err(|_| io::ErrorKind::TimedOut)?
}

fn page(request: &http1::RequestLine, snap: &Snapshot) -> (&'static str, &'static str, String) {
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return ("405 Method Not Allowed", "text/plain", "GET or HEAD only\n".into());
    }
    let path = request.path.split('?').next().unwrap_or("");
    // HAProxy's stats page takes options after `;` (`/;csv`, `/stats;csv;norefresh`).
    let (page, options) = path.split_once(';').unwrap_or((path, ""));
    let csv = options.split(';').any(|o| o == "csv");
    match page {
        "/" | "/stats" if csv => ("200 OK", "text/plain", stat::csv(snap, &StatFilter::ALL)),
        "/" | "/stats" => ("200 OK", "text/html; charset=utf-8", html::html(snap)),
        "/status.json" => ("200 OK", "application/json", serde_json::to_string_pretty(snap).unwrap_or_default()),
        "/metrics" => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", prometheus::prometheus(snap)),
        _ => ("404 Not Found", "text/plain", "not found: try /, /;csv, /status.json or /metrics\n".into()),
    }
}

/// Whether `header` (an `Authorization` value) carries the configured credentials; anything
/// goes when none are configured. The comparison takes the same time wherever they differ.
fn authorized(auth: Option<&StatsAuth>, header: Option<&str>) -> bool {
    let Some(auth) = auth else { return true };
    let Some((user, password)) = header.and_then(basic_credentials) else { return false };
    let same = |a: &[u8], b: &[u8]| a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    same(user.as_bytes(), auth.user.as_bytes()) & same(password.as_bytes(), auth.password.as_bytes())
}

/// `Basic BASE64(user:password)`, decoded.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Standard base64 with padding (RFC 4648), the alphabet of HTTP Basic.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c.checked_sub(b'A')?,
            b'a'..=b'z' => c.checked_sub(b'a')?.checked_add(26)?,
            b'0'..=b'9' => c.checked_sub(b'0')?.checked_add(52)?,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 2);
    for group in bytes.chunks(4) {
        let mut word = 0u32;
        for (i, &c) in group.iter().enumerate() {
            word |= value(c)? << (18 - 6 * i);
        }
        let [_, a, b, c] = word.to_be_bytes();
        match group.len() {
            4 => out.extend_from_slice(&[a, b, c]),
            3 => out.extend_from_slice(&[a, b]),
            2 => out.push(a),
            _ => return None,
        }
    }
    Some(out)
}

/// `xdplb status` could not get the agent's snapshot.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach the agent's status page at {addr}: {source}; is `xdplb run` running (global.stats_bind)?")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("reading from {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("no HTTP response from {addr}: {source}")]
    Http { addr: SocketAddr, source: http1::Invalid },
    #[error("the status page at {addr} wants credentials: pass --auth USER:PASSWORD (global.stats_auth)")]
    Unauthorized { addr: SocketAddr },
    #[error("bad status JSON from {addr}: {source}")]
    Json { addr: SocketAddr, source: serde_json::Error },
}

/// What `xdplb status` reads of the status JSON (a thousand servers take about a megabyte).
const STATUS_LIMITS: http1::Limits = http1::Limits { head: 64 * 1024, body: 64 << 20 };

/// `xdplb status`: fetches `/status.json` from a running agent.
pub fn fetch(addr: SocketAddr) -> Result<Snapshot, FetchError> {
    fetch_with(addr, None)
}

/// `fetch` with the page's credentials (`user:password`), when it asks for them.
pub fn fetch_with(addr: SocketAddr, auth: Option<&str>) -> Result<Snapshot, FetchError> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|source| FetchError::Connect { addr, source })?;
    let io = |source| FetchError::Io { addr, source };
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
    let credentials = auth.map(|a| format!("Basic {}", base64_encode(a.as_bytes())));
    let headers: Vec<(&str, &str)> = credentials.iter().map(|c| ("Authorization", c.as_str())).collect();
    s.write_all(http1::get_request("/status.json", &addr.to_string(), &headers).as_bytes()).map_err(io)?;
    // Whatever answers on that port is read within limits: it may not be the agent.
    let mut raw = Vec::new();
    let most = u64::try_from(STATUS_LIMITS.wire()).unwrap_or(u64::MAX);
    s.take(most).read_to_end(&mut raw).map_err(io)?;
    let response = http1::response_within(&raw, true, STATUS_LIMITS)
        .and_then(|r| r.ok_or(http1::Invalid::TruncatedHead))
        .map_err(|source| FetchError::Http { addr, source })?;
    if response.status == 401 {
        return Err(FetchError::Unauthorized { addr });
    }
    serde_json::from_slice(&response.body).map_err(|source| FetchError::Json { addr, source })
}

/// Standard base64 with padding (RFC 4648).
fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in data.chunks(3) {
        let mut word = [0u8; 4];
        for (i, b) in group.iter().enumerate() {
            if let Some(w) = word.get_mut(i + 1) {
                *w = *b;
            }
        }
        let n = u32::from_be_bytes(word);
        for i in 0..4 {
            let c = if i <= group.len() { ALPHABET.get(((n >> (18 - 6 * i)) & 63) as usize) } else { None };
            out.push(c.map_or('=', |&c| char::from(c)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(method: &str, path: &str) -> (&'static str, &'static str, String) {
        let r = http1::RequestLine { method: method.into(), path: path.into(), complete: true, ..Default::default() };
        page(&r, &crate::report::sample::snapshot())
    }

    #[test]
    fn csv_export_and_head() {
        for path in ["/;csv", "/stats;csv", "/;csv;norefresh", "/stats;norefresh;csv?x=1"] {
            let (status, ctype, body) = get("GET", path);
            assert_eq!((status, ctype), ("200 OK", "text/plain"), "{path}");
            assert!(body.starts_with("# pxname,svname,qcur,"), "{path}: {body}");
            assert!(!body.ends_with("\n\n"), "no CLI end-of-answer line on the page");
        }
        assert_eq!(get("HEAD", "/metrics").0, "200 OK");
        assert_eq!(get("HEAD", "/").1, "text/html; charset=utf-8");
        assert_eq!(get("POST", "/").0, "405 Method Not Allowed");
        assert_eq!(get("GET", "/;json").1, "text/html; charset=utf-8", "unknown options: the page");
    }

    #[test]
    fn basic_credentials_round_trip_and_are_checked() {
        for text in ["a", "ab", "abc", "admin:s3cret", "user:pass:with:colons"] {
            assert_eq!(base64_decode(&base64_encode(text.as_bytes())).as_deref(), Some(text.as_bytes()), "{text}");
        }
        assert_eq!(base64_encode(b"admin:s3cret"), "YWRtaW46czNjcmV0");
        let auth = StatsAuth { user: "admin".into(), password: "s3cret".into() };
        assert!(authorized(Some(&auth), Some("Basic YWRtaW46czNjcmV0")));
        assert!(!authorized(Some(&auth), Some("Basic YWRtaW46czNjcmV1")));
        assert!(!authorized(Some(&auth), Some("Bearer YWRtaW46czNjcmV0")));
        assert!(!authorized(Some(&auth), Some("Basic !!!")));
        assert!(!authorized(Some(&auth), None));
        assert!(authorized(None, None));
    }
}
