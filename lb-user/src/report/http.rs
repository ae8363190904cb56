//! The status page over HTTP: `/` (HTML), `/status.json`, `/metrics`; and `xdplb status`'s
//! side, which fetches the JSON from a running agent.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{html, prometheus, snapshot::Snapshot};
use crate::http1;

/// Serves the status page until the process ends: `/` (HTML), `/status.json`, `/metrics`.
pub async fn serve(listener: TcpListener, shared: Arc<RwLock<Snapshot>>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = respond(stream, &shared).await {
                log::debug!("status page request from {peer}: {e}");
            }
        });
    }
}

async fn respond(mut s: TcpStream, shared: &RwLock<Snapshot>) -> io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    let read = async {
        while n < buf.len() && !http1::request_line(&buf[..n]).complete {
            let m = s.read(&mut buf[n..]).await?;
            if m == 0 {
                break;
            }
            n += m;
        }
        Ok::<_, io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.map_err(|_| io::ErrorKind::TimedOut)??;
    let request = http1::request_line(&buf[..n]);
    let snap = shared.read().unwrap().clone();
    let (status, ctype, body) = match (request.method.as_str(), request.path.split('?').next().unwrap_or("")) {
        ("GET", "/" | "/stats") => ("200 OK", "text/html; charset=utf-8", html::html(&snap)),
        ("GET", "/status.json") => {
            ("200 OK", "application/json", serde_json::to_string_pretty(&snap).unwrap_or_default())
        }
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", prometheus::prometheus(&snap)),
        ("GET", _) => ("404 Not Found", "text/plain", "not found: try /, /status.json or /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    s.write_all(http1::response_head(status, ctype, body.len()).as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
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
    #[error("bad status JSON from {addr}: {source}")]
    Json { addr: SocketAddr, source: serde_json::Error },
}

/// What `xdplb status` reads of the status JSON (a thousand servers take about a megabyte).
const STATUS_LIMITS: http1::Limits = http1::Limits { head: 64 * 1024, body: 64 << 20 };

/// `xdplb status`: fetches `/status.json` from a running agent.
pub fn fetch(addr: SocketAddr) -> Result<Snapshot, FetchError> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|source| FetchError::Connect { addr, source })?;
    let io = |source| FetchError::Io { addr, source };
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
    s.write_all(http1::get_request("/status.json", &addr.to_string(), &[]).as_bytes()).map_err(io)?;
    // Whatever answers on that port is read within limits: it may not be the agent.
    let mut raw = Vec::new();
    let most = u64::try_from(STATUS_LIMITS.wire()).unwrap_or(u64::MAX);
    s.take(most).read_to_end(&mut raw).map_err(io)?;
    let response = http1::response_within(&raw, true, STATUS_LIMITS)
        .and_then(|r| r.ok_or(http1::Invalid::TruncatedHead))
        .map_err(|source| FetchError::Http { addr, source })?;
    serde_json::from_slice(&response.body).map_err(|source| FetchError::Json { addr, source })
}
