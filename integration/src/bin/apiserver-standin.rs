//! A kube-apiserver stand-in for the lab and the tests: TLS on a port, `/healthz`, `/readyz` and
//! `/livez` answered with `ok`, and a mode file that makes it misbehave the ways real apiservers
//! do: `ok`, `fail` (500 with "ok" still in the body, as a sick apiserver's healthz reads), or
//! `hang` (accepts TCP, never speaks TLS). The mode is read at every connection.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ServerConfig,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::TlsAcceptor;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: String,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// File holding `ok`, `fail` or `hang`; missing means `ok`.
    #[arg(long)]
    mode_file: PathBuf,
    /// Name reported in every answer.
    #[arg(long, default_value = "apiserver")]
    name: String,
    /// etcd's address as a co-located apiserver is given it (its node's load-balancer endpoint,
    /// `127.0.0.1:12379`): `/readyz` then answers ok only while a connection to it opens.
    #[arg(long)]
    etcd: Option<String>,
}

fn mode(p: &PathBuf) -> String {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_else(|_| "ok".into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let certs = CertificateDer::pem_file_iter(&a.cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&a.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(&a.listen).await?;
    println!("apiserver-standin {} on {}", a.name, a.listen);
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, mode_now, name, etcd) = (acceptor.clone(), mode(&a.mode_file), a.name.clone(), a.etcd.clone());
        tokio::spawn(async move {
            if mode_now == "hang" {
                let _keep = tcp;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            let Ok(mut s) = acceptor.accept(tcp).await else { return };
            let mut buf = vec![0u8; 8192];
            let Ok(n) = s.read(&mut buf).await else { return };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let etcd_ok = match (&etcd, path.as_str()) {
                (Some(addr), "/readyz") => {
                    let dial = tokio::net::TcpStream::connect(addr.as_str());
                    matches!(tokio::time::timeout(Duration::from_secs(1), dial).await, Ok(Ok(_)))
                }
                _ => true,
            };
            let (status, body) = match (mode_now.as_str(), path.as_str()) {
                (_, "/readyz") if !etcd_ok => (500, "[-]etcd failed: no connection\nreadyz check failed\n".to_string()),
                ("fail", "/healthz" | "/readyz" | "/livez") => {
                    (500, "[+]ping ok\n[-]etcd failed: reason withheld\nhealthz check failed: ok\n".to_string())
                }
                (_, "/healthz" | "/readyz" | "/livez") => (200, "ok".to_string()),
                _ => (200, format!("{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"server\":\"{name}\"}}\n")),
            };
            let head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nX-Served-By: {name}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                if status == 200 { "OK" } else { "Internal Server Error" },
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}
