//! A TLS health endpoint run by the test process inside a backend's namespace, whose answer can
//! be switched at any time: a good one (`200 ok`), or one of the replies a hostile or broken
//! server sends (a chunk size of 2^64-1, an endless chunked body, a megabyte header line, a
//! status line cut inside a character, bytes that are not UTF-8, a reply trickled a byte every
//! 100 ms). It counts the checks it answers, with their times.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{netns::NetNs, pki::Leaf};

/// What the endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `200` with `ok`.
    Good,
    /// Chunked, with the chunk size `ffffffffffffffff`.
    HugeChunk,
    /// Chunked, 1 KiB chunks without end.
    EndlessChunks,
    /// A header line of 1 MiB.
    MegabyteHeader,
    /// A status line whose 80th byte falls inside a two-byte character.
    CutCharacter,
    /// Bytes that are not UTF-8 (nor HTTP).
    NotUtf8,
    /// A good reply, one byte every 100 ms.
    Trickle,
}

impl Reply {
    /// Every hostile reply, in the order the tests try them.
    pub const HOSTILE: [Reply; 6] = [
        Reply::HugeChunk,
        Reply::EndlessChunks,
        Reply::MegabyteHeader,
        Reply::CutCharacter,
        Reply::NotUtf8,
        Reply::Trickle,
    ];
}

pub struct Endpoint {
    reply: Arc<Mutex<Reply>>,
    checks: Arc<Mutex<Vec<Instant>>>,
    runtime: tokio::runtime::Runtime,
}

impl Endpoint {
    /// Serves TLS with `leaf` on `port` of every address of `ns`.
    pub fn start(ns: &NetNs, port: u16, leaf: &Leaf) -> Result<Endpoint> {
        let listener = ns.tcp_listener(port)?;
        let acceptor = leaf.acceptor()?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let reply = Arc::new(Mutex::new(Reply::Good));
        let checks = Arc::new(Mutex::new(Vec::new()));
        let (r, c) = (reply.clone(), checks.clone());
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, reply, checks) = (acceptor.clone(), r.clone(), c.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else { return };
                    let mut buf = [0u8; 4096];
                    if !matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                        return;
                    }
                    checks.lock().unwrap().push(Instant::now());
                    let now = *reply.lock().unwrap();
                    answer(&mut s, now).await;
                });
            }
        });
        Ok(Endpoint { reply, checks, runtime })
    }

    pub fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    /// When each check arrived.
    pub fn checks(&self) -> Vec<Instant> {
        self.checks.lock().unwrap().clone()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Endless replies stop with the runtime.
        let rt = std::mem::replace(&mut self.runtime, tokio::runtime::Builder::new_current_thread().build().unwrap());
        rt.shutdown_background();
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, reply: Reply) {
    let good = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let _ = match reply {
        Reply::Good => s.write_all(good.as_bytes()).await,
        Reply::HugeChunk => s.write_all(format!("{chunked}ffffffffffffffff\r\nok").as_bytes()).await,
        Reply::EndlessChunks => {
            if s.write_all(chunked.as_bytes()).await.is_err() {
                return;
            }
            let chunk = format!("400\r\n{}\r\n", "ok".repeat(512));
            // Until the checker hangs up (or 1 GiB, far past any limit).
            for _ in 0..(1 << 20) {
                if s.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
            Ok(())
        }
        Reply::MegabyteHeader => {
            let head = format!("HTTP/1.1 200 OK\r\nX-Junk: {}\r\nContent-Length: 2\r\n\r\nok", "a".repeat(1 << 20));
            s.write_all(head.as_bytes()).await
        }
        Reply::CutCharacter => {
            // "HTTP/1.1 2x0 " is 13 bytes, then two-byte characters: byte 79 is the first half of one.
            let line = format!("HTTP/1.1 2x0 {}\r\nContent-Length: 2\r\n\r\nok", "é".repeat(60));
            s.write_all(line.as_bytes()).await
        }
        Reply::NotUtf8 => s.write_all(b"\xff\xfe\xfd\x00\x80\x81HTTP\xc3\x28\r\n\r\n\xa0\xa1").await,
        Reply::Trickle => {
            for b in good.bytes() {
                if s.write_all(&[b]).await.is_err() || s.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        }
    };
    let _ = s.shutdown().await;
}
