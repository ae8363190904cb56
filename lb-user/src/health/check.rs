//! One health check against one server, with HAProxy's result codes: connect (layer 4), TLS
//! handshake (layer 6), HTTP/1.1 GET (layer 7). The whole check shares one timeout; the layer at
//! which it runs out names the result (L4TOUT, L6TOUT, L7TOUT).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::{pki_types::ServerName, ClientConfig};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::timeout_at,
};
use tokio_rustls::TlsConnector;

use crate::{config::CheckKind, http1};

/// HAProxy's check status codes (`L7OK` in the JSON too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Code {
    L4Ok,
    L4Tout,
    L4Con,
    L6Ok,
    L6Tout,
    L6Rsp,
    SockErr,
    L7Ok,
    L7Tout,
    L7Rsp,
    L7Sts,
}

impl Code {
    pub fn name(self) -> &'static str {
        match self {
            Code::L4Ok => "L4OK",
            Code::L4Tout => "L4TOUT",
            Code::L4Con => "L4CON",
            Code::L6Ok => "L6OK",
            Code::L6Tout => "L6TOUT",
            Code::L6Rsp => "L6RSP",
            Code::SockErr => "SOCKERR",
            Code::L7Ok => "L7OK",
            Code::L7Tout => "L7TOUT",
            Code::L7Rsp => "L7RSP",
            Code::L7Sts => "L7STS",
        }
    }

    /// HAProxy's wording, used in the transition log line ("reason: Layer6 timeout").
    pub fn description(self) -> &'static str {
        match self {
            Code::L4Ok => "Layer4 check passed",
            Code::L4Tout => "Layer4 timeout",
            Code::L4Con => "Layer4 connection problem",
            Code::L6Ok => "Layer6 check passed",
            Code::L6Tout => "Layer6 timeout",
            Code::L6Rsp => "Layer6 invalid response",
            Code::SockErr => "Socket error",
            Code::L7Ok => "Layer7 check passed",
            Code::L7Tout => "Layer7 timeout",
            Code::L7Rsp => "Layer7 invalid response",
            Code::L7Sts => "Layer7 wrong status",
        }
    }

    pub fn passed(self) -> bool {
        matches!(self, Code::L4Ok | Code::L6Ok | Code::L7Ok)
    }
}

#[derive(Debug, Clone)]
pub struct CheckResult {
    pub code: Code,
    pub http_status: Option<u16>,
    pub duration: Duration,
    /// What went wrong (or right), for the status page.
    pub detail: String,
}

/// Everything one server's check needs, resolved from the configuration.
#[derive(Clone)]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub addr: SocketAddr,
    pub timeout: Duration,
    pub path: String,
    pub host: String,
    pub expect_status: crate::config::ExpectStatus,
    pub expect_string: Option<String>,
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

pub async fn run(spec: &CheckSpec) -> CheckResult {
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + spec.timeout);
    let (code, http_status, detail) = attempt(spec, deadline).await;
    CheckResult { code, http_status, duration: start.elapsed(), detail: clean(&detail) }
}

/// The most of a result's description that is kept (it is shown on the page and logged).
const DETAIL_CHARS: usize = 200;

/// A description fit to log and show: a server's words may hold anything, so control
/// characters (a forged log line, a CSV row) are escaped and the text is cut on a character
/// boundary.
pub fn clean(detail: &str) -> String {
    let mut out = String::with_capacity(detail.len().min(DETAIL_CHARS));
    for c in detail.chars().take(DETAIL_CHARS) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

async fn attempt(spec: &CheckSpec, deadline: tokio::time::Instant) -> (Code, Option<u16>, String) {
    let tcp = match timeout_at(deadline, TcpStream::connect(spec.addr)).await {
        Err(_) => return (Code::L4Tout, None, format!("no answer to connect within {:?}", spec.timeout)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return (Code::L4Con, None, "Connection refused".into())
        }
        Ok(Err(e)) => return (Code::L4Con, None, e.to_string()),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    match (spec.kind, &spec.tls) {
        (CheckKind::Tcp, None) => (Code::L4Ok, None, "connected".into()),
        (CheckKind::Tcp | CheckKind::Tls, Some((config, name))) => match handshake(tcp, config, name, deadline).await {
            Ok(_) => (Code::L6Ok, None, "TLS handshake done".into()),
            Err(e) => e,
        },
        (_, Some((config, name))) => match handshake(tcp, config, name, deadline).await {
            Ok(tls) => http(tls, spec, deadline).await,
            Err(e) => e,
        },
        (_, None) => http(tcp, spec, deadline).await,
    }
}

async fn handshake(
    tcp: TcpStream,
    config: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    deadline: tokio::time::Instant,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, (Code, Option<u16>, String)> {
    let connector = TlsConnector::from(config.clone());
    match timeout_at(deadline, connector.connect(name.clone(), tcp)).await {
        Err(_) => Err((Code::L6Tout, None, "no TLS handshake within the timeout".into())),
        Ok(Err(e)) => Err((Code::L6Rsp, None, format!("TLS handshake failed: {e}"))),
        Ok(Ok(s)) => Ok(s),
    }
}

async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    spec: &CheckSpec,
    deadline: tokio::time::Instant,
) -> (Code, Option<u16>, String) {
    let request =
        http1::get_request(&spec.path, &spec.host, &[("User-Agent", "xdplb-health-check"), ("Accept", "*/*")]);
    match timeout_at(deadline, s.write_all(request.as_bytes())).await {
        Err(_) => return (Code::L7Tout, None, "request not sent within the timeout".into()),
        Ok(Err(e)) => return (Code::SockErr, None, format!("sending the request: {e}")),
        Ok(Ok(())) => {}
    }
    let response = match timeout_at(deadline, read_response(&mut s)).await {
        Err(_) => return (Code::L7Tout, None, "no complete response within the timeout".into()),
        Ok(Err((code, e))) => return (code, None, e),
        Ok(Ok(r)) => r,
    };
    let http1::Response { status, body } = response;
    if !spec.expect_status.accepts(status) {
        return (Code::L7Sts, Some(status), format!("HTTP status {status}, expected {}", spec.expect_status));
    }
    if let Some(want) = &spec.expect_string {
        if !body.windows(want.len().max(1)).any(|w| w == want.as_bytes()) {
            return (Code::L7Rsp, Some(status), format!("body does not contain {want:?}"));
        }
    }
    (Code::L7Ok, Some(status), "OK".into())
}

/// Reads one HTTP/1.x response: status and body (by Content-Length, chunked, or to EOF), within
/// the check's limits (`http1::Limits::CHECK`): beyond them the response is refused (L7RSP)
/// without reading the rest.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> Result<http1::Response, (Code, String)> {
    let mut reader = http1::Reader::new(http1::Limits::CHECK);
    let mut chunk = [0u8; 4096];
    let mut got = 0usize;
    loop {
        let n = read_more(s, &mut chunk, got).await?;
        got = got.saturating_add(n);
        let verdict = match chunk.get(..n) {
            Some(data) if n > 0 => reader.feed(data).transpose(),
            _ => Some(reader.finish()),
        };
        match verdict {
            Some(Ok(response)) => return Ok(response),
            Some(Err(invalid)) => return Err((Code::L7Rsp, invalid.to_string())),
            None => {}
        }
    }
}

/// Reads what is there. A TLS alert (a server that refuses our client certificate says so only
/// after the handshake, at the first read) is a layer-6 problem; a reset is a socket error.
async fn read_more<S: AsyncRead + Unpin>(s: &mut S, chunk: &mut [u8], got: usize) -> Result<usize, (Code, String)> {
    match s.read(chunk).await {
        Ok(n) => Ok(n),
        // A TLS peer that closes without close_notify still sent what it sent.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e)
            if e.get_ref().is_some_and(
                <dyn std::error::Error + std::marker::Send + std::marker::Sync + 'static>::is::<rustls::Error>,
            ) =>
        {
            Err((Code::L6Rsp, format!("TLS error: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Err((Code::SockErr, format!("connection reset while reading the response after {got} bytes")))
        }
        Err(e) => Err((Code::L7Rsp, format!("reading the response: {e}"))),
    }
}
