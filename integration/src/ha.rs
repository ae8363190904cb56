//! Two balancers behind a VIP, as operators run them: real keepalived (VRRP) on each balancer
//! namespace of `Lab::one_arm_ha`, xdplb on both with flow sync, TLS servers behind them, and
//! the clients a failover must not hurt: long-lived watch-like TLS streams that verify every
//! byte, and a prober that opens new connections one after another.

use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener as StdListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, RootCertStore, ServerConfig, StreamOwned,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    lab::{Lab, HA_VIP, LB, LB2},
    netns::NetNs,
    pki::{Ca, Leaf},
    traffic::Pattern,
};

/// VRRP advertisement interval (VRRPv3 takes fractions): a master is declared dead after about
/// three of them, so keepalived moves the VIP in well under a second.
pub const ADVERT_S: f64 = 0.2;
/// keepalived's master-down interval for the backup (3 adverts plus the skew of priority 100).
pub fn vrrp_failover() -> Duration {
    Duration::from_secs_f64(3.0 * ADVERT_S + (256.0 - 100.0) / 256.0 * ADVERT_S)
}
pub const SYNC_PORT: u16 = 7946;
/// The name every backend's certificate carries (the clients verify it).
pub const TLS_NAME: &str = "etcd.lab";

/// keepalived in a balancer namespace, with its own files; killed with the namespace.
pub struct Keepalived {
    child: Child,
    pub dir: PathBuf,
}

impl Keepalived {
    /// VRRP instance on `iface` holding `vip`, `priority` (the higher is master), tracking
    /// `track` (a command: failing, the host gives the VIP up).
    pub fn start(ns: &NetNs, dir: &Path, priority: u8, iface: &str, vip: Ipv4Addr, track: &str) -> Result<Keepalived> {
        fs::create_dir_all(dir)?;
        let conf = dir.join("keepalived.conf");
        fs::write(&conf, keepalived_conf(&ns.name, priority, iface, vip, track))?;
        let log = fs::File::create(dir.join("keepalived.log"))?;
        let child = ns
            .command("keepalived")
            .args(Self::args(dir))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting keepalived (cargo xtask setup installs it)")?;
        Ok(Keepalived { child, dir: dir.to_path_buf() })
    }

    /// keepalived's arguments for the files in `dir`: in the foreground, logging to the console,
    /// VRRP only, pid files of its own (several run on one machine).
    pub fn args(dir: &Path) -> Vec<String> {
        let mut a: Vec<String> =
            ["--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp"].map(String::from).to_vec();
        a.push(format!("--use-file={}", dir.join("keepalived.conf").display()));
        a.push(format!("--pid={}", dir.join("keepalived.pid").display()));
        a.push(format!("--vrrp_pid={}", dir.join("vrrp.pid").display()));
        a.push(format!("--checkers_pid={}", dir.join("checkers.pid").display()));
        a
    }

    /// SIGKILL to keepalived and its VRRP process, as a crash: no goodbye advert, the VIP stays
    /// configured (the test removes it, as a dead host would no longer answer for it).
    pub fn kill9(&mut self) {
        if let Ok(pid) = fs::read_to_string(self.dir.join("vrrp.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("keepalived.log")).unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A keepalived.conf for one balancer of the pair (the same shape as packaging's example).
pub fn keepalived_conf(router_id: &str, priority: u8, iface: &str, vip: Ipv4Addr, track: &str) -> String {
    format!(
        r#"global_defs {{
    router_id {router_id}
    enable_script_security
    script_user root
    vrrp_garp_master_repeat 3
    vrrp_garp_master_delay 1
    vrrp_garp_master_refresh 1
}}

vrrp_script chk_xdplb {{
    script "{track}"
    interval 1
    timeout 2
    fall 2
    rise 1
}}

vrrp_instance xdplb {{
    state BACKUP
    interface {iface}
    virtual_router_id 51
    version 3
    priority {priority}
    advert_int {ADVERT_S}
    virtual_ipaddress {{
        {vip}/24 dev {iface}
    }}
    track_script {{
        chk_xdplb
    }}
}}
"#
    )
}

/// Whether `ns` holds `addr` now.
pub fn holds(ns: &NetNs, addr: Ipv4Addr) -> bool {
    ns.ip(&["-4", "-o", "addr", "show"]).is_ok_and(|out| out.contains(&format!(" {addr}/")))
}

/// Waits until `ns` holds `addr`; returns when it did.
pub fn wait_holds(ns: &NetNs, addr: Ipv4Addr, within: Duration) -> Result<Instant> {
    let start = Instant::now();
    while start.elapsed() < within {
        if holds(ns, addr) {
            return Ok(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("{} did not get {addr} within {within:?}", ns.name)
}

/// The shared sync key, owner-only readable, in `dir`.
pub fn write_key(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join("sync.key");
    fs::write(&path, "lab-secret-0123456789abcdef")?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// One balancer's configuration: the VIP frontend on `port`, servers checked by TCP, flows
/// leaving from the VIP, and flow sync with the other balancer.
pub fn config(lab: &Lab, node: u32, port: u16, backend_port: u16, key: &Path, extra_sync: &str) -> String {
    let (me, peer) = if node == 1 { (LB, LB2) } else { (LB2, LB) };
    let servers: Vec<String> = lab
        .backends
        .iter()
        .map(|b| format!("  {{ name = \"{}\", address = \"{}:{backend_port}\" }},", b.name, b.addr))
        .collect();
    format!(
        r#"[global]
gc_interval = "200ms"

[global.sync]
node = {node}
listen = "{me}:{SYNC_PORT}"
peers = ["{peer}:{SYNC_PORT}"]
key_file = "{key}"
{extra_sync}

[[frontend]]
name = "etcd"
bind = "{HA_VIP}:{port}"
backend = "etcd"

[[backend]]
name = "etcd"
source = ["{HA_VIP}"]
check = {{ type = "tcp", inter = "500ms", rise = 1, fall = 2, timeout = "400ms" }}
server = [
{}
]
"#,
        servers.join("\n"),
        key = key.display()
    )
}

/// A TLS server that sends its name and a newline, then echoes: the backends of the HA tests
/// (TLS end to end, as etcd; the balancer passes it through).
pub struct TlsEcho {
    runtime: tokio::runtime::Runtime,
}

impl TlsEcho {
    pub fn start(ns: &NetNs, port: u16, name: &str, leaf: &Leaf) -> Result<TlsEcho> {
        let listener = ns.enter(|| StdListener::bind(SocketAddr::from(([0, 0, 0, 0], port))))?;
        listener.set_nonblocking(true)?;
        let certs = CertificateDer::pem_slice_iter(leaf.cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let name = format!("{name}\n");
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, name) = (acceptor.clone(), name.clone());
                tokio::spawn(async move {
                    // A plain TCP check connects and goes: no handshake, nothing to do.
                    let Ok(mut s) = acceptor.accept(tcp).await else { return };
                    if s.write_all(name.as_bytes()).await.is_err() || s.flush().await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() || s.flush().await.is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
        Ok(TlsEcho { runtime })
    }
}

impl Drop for TlsEcho {
    fn drop(&mut self) {
        let rt = std::mem::replace(
            &mut self.runtime,
            tokio::runtime::Builder::new_current_thread().build().expect("a runtime"),
        );
        rt.shutdown_background();
    }
}

/// The clients' TLS settings: the lab CA, the backends' common name.
pub fn client_config(ca: &Ca) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

pub type Tls = StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection from `client` to `addr` (connect within `connect_timeout`), and the name
/// line the server sent.
pub fn tls_connect(
    client: &NetNs,
    addr: SocketAddrV4,
    cfg: &Arc<ClientConfig>,
    connect_timeout: Duration,
) -> Result<(Tls, String)> {
    let tcp = client.enter(|| TcpStream::connect_timeout(&SocketAddr::V4(addr), connect_timeout))?;
    tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(15)))?;
    let name = ServerName::try_from(TLS_NAME)?.to_owned();
    let conn = rustls::ClientConnection::new(cfg.clone(), name)?;
    let mut tls = StreamOwned::new(conn, tcp);
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while tls.read(&mut b)? == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    Ok((tls, String::from_utf8_lossy(&line).into_owned()))
}

/// What a watch-like stream did.
#[derive(Debug, Default, Clone)]
pub struct StreamResult {
    pub server: String,
    pub bytes_verified: u64,
    pub exchanges: u64,
    pub error: Option<String>,
}

/// A watch-like TLS stream: quiet for `quiet`, then a burst of patterned data that must come
/// back byte for byte, until `stop`.
pub fn watch_stream(mut tls: Tls, server: String, seed: u64, quiet: Duration, stop: &AtomicBool) -> StreamResult {
    let mut r = StreamResult { server, ..StreamResult::default() };
    let (mut out, mut back) = (Pattern::new(seed), Pattern::new(seed));
    let (mut buf, mut want, mut got) = (vec![0u8; 4096], vec![0u8; 4096], vec![0u8; 4096]);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(quiet);
        out.fill(&mut buf);
        let step = tls.write_all(&buf).and_then(|()| tls.flush()).and_then(|()| tls.read_exact(&mut got));
        if let Err(e) = step {
            r.error = Some(format!("after {} bytes: {e}", r.bytes_verified));
            return r;
        }
        back.fill(&mut want);
        if got != want {
            r.error = Some(format!("corrupted after {} bytes", r.bytes_verified));
            return r;
        }
        r.bytes_verified += got.len() as u64;
        r.exchanges += 1;
    }
    r
}

/// One new connection: when it was tried, when it was done, and the server that answered or
/// the error.
#[derive(Debug)]
pub struct Probe {
    pub started: Instant,
    pub done: Instant,
    pub result: Result<String, String>,
}

/// New connections one after another until `stop`, one every `every`, each with a client's
/// patience (`connect_timeout`: the SYN is sent again meanwhile).
pub fn probe(
    client: &NetNs,
    addr: SocketAddrV4,
    cfg: &Arc<ClientConfig>,
    every: Duration,
    connect_timeout: Duration,
    stop: &AtomicBool,
) -> Vec<Probe> {
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result =
            tls_connect(client, addr, cfg, connect_timeout).map(|(_, name)| name).map_err(|e| format!("{e:#}"));
        out.push(Probe { started, done: Instant::now(), result });
        std::thread::sleep(every);
    }
    out
}
