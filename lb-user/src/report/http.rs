//! The status page over HTTP: `/` (HTML), `/status.json`, `/metrics`; and `xdplb status`'s
//! side, which fetches the JSON from a running agent.

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{html, prometheus, snapshot::Snapshot};

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

async fn respond(mut s: TcpStream, shared: &RwLock<Snapshot>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    let read = async {
        while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
            let m = s.read(&mut buf[n..]).await?;
            if m == 0 {
                break;
            }
            n += m;
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let snap = shared.read().unwrap().clone();
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/" | "/stats") => ("200 OK", "text/html; charset=utf-8", html::html(&snap)),
        ("GET", "/status.json") => {
            ("200 OK", "application/json", serde_json::to_string_pretty(&snap).unwrap_or_default())
        }
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", prometheus::prometheus(&snap)),
        ("GET", _) => ("404 Not Found", "text/plain", "not found: try /, /status.json or /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

/// `xdplb status`: fetches `/status.json` from a running agent.
pub fn fetch(addr: SocketAddr) -> Result<Snapshot, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| {
        format!("cannot reach the agent's status page at {addr}: {e}; is `xdplb run` running (global.stats_bind)?")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(s, "GET /status.json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("reading from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).ok_or("no HTTP response")?;
    serde_json::from_str(body).map_err(|e| format!("bad status JSON from {addr}: {e}"))
}
