//! Two balancers behind a VIP, as operators run them: real keepalived (VRRP) on each balancer
//! namespace of `Lab::one_arm_ha`, xdplb on both with flow sync, TLS servers behind them, and
//! the clients a failover must not hurt: long-lived watch-like TLS streams that verify every
//! byte, and a prober that opens new connections one after another.

use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
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
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    ClientConfig, RootCertStore, StreamOwned,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    agent::{xdplb_bin, Agent},
    lab::{Lab, Names, HA_VIP, LB, LB2},
    netns::{unique, NetNs},
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
/// The VIP's frontend port and the servers' port.
pub const PORT: u16 = 12379;
pub const BACKEND_PORT: u16 = 2379;
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

/// The port of the plain-HTTP frontend the benchmark adds (`XdplbOpts::http`), and the
/// servers' (nginx).
pub const HTTP_PORT: u16 = 8080;

/// One balancer's configuration: the VIP frontend on `port`, servers checked by TCP, flows
/// leaving from the VIP, and (`node` > 0) flow sync with the other balancer.
pub fn config(lab: &Lab, node: u32, port: u16, backend_port: u16, key: &Path, o: &XdplbOpts) -> String {
    let (me, peer) = if node == 2 { (LB2, LB) } else { (LB, LB2) };
    let servers = |port: u16| -> String {
        lab.backends
            .iter()
            .map(|b| format!("  {{ name = \"{}\", address = \"{}:{port}\" }},\n", b.name, b.addr))
            .collect()
    };
    let sync = if o.sync {
        format!(
            "[global.sync]\nnode = {node}\nlisten = \"{me}:{SYNC_PORT}\"\npeers = [\"{peer}:{SYNC_PORT}\"]\nkey_file = \"{}\"\n{}\n",
            key.display(),
            o.extra_sync
        )
    } else {
        String::new()
    };
    let check = "check = { type = \"tcp\", inter = \"500ms\", rise = 1, fall = 2, timeout = \"400ms\" }";
    let http = if o.http {
        format!(
            "[[frontend]]\nname = \"web\"\nbind = \"{HA_VIP}:{HTTP_PORT}\"\nbackend = \"web\"\n\n[[backend]]\nname = \"web\"\nsource = [\"{HA_VIP}\"]\n{check}\nserver = [\n{}]\n",
            servers(80)
        )
    } else {
        String::new()
    };
    format!(
        "[global]\ngc_interval = \"200ms\"\n\n{sync}[[frontend]]\nname = \"etcd\"\nbind = \"{HA_VIP}:{port}\"\nbackend = \"etcd\"\n\n[[backend]]\nname = \"etcd\"\nsource = [\"{HA_VIP}\"]\n{check}\nserver = [\n{}]\n\n{http}",
        servers(backend_port)
    )
}

/// A TLS server that sends its name and a newline, then echoes: the backends of the HA tests
/// (TLS end to end, as etcd; the balancer passes it through).
pub struct TlsEcho {
    runtime: tokio::runtime::Runtime,
}

impl TlsEcho {
    pub fn start(ns: &NetNs, port: u16, name: &str, leaf: &Leaf) -> Result<TlsEcho> {
        let listener = ns.tcp_listener(port)?;
        let acceptor = leaf.acceptor()?;
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

/// What runs on the two balancers.
pub enum Balancers {
    Xdplb(XdplbOpts),
    /// HAProxy 2.6 in TCP mode on both (the seed's way), `bind VIP:PORT` under ip_nonlocal_bind.
    Haproxy,
}

/// xdplb on the balancers.
#[derive(Default)]
pub struct XdplbOpts {
    /// On both, sharing flows; otherwise on the first only, without `[global.sync]` (the
    /// second's keepalived then gives the VIP up: its agent does not answer).
    pub sync: bool,
    /// More `[global.sync]` keys.
    pub extra_sync: String,
    /// A plain-HTTP frontend on `HTTP_PORT` to the servers' port 80 (the benchmark's nginx).
    pub http: bool,
}

impl Balancers {
    /// xdplb on both balancers, sharing flows.
    pub fn xdplb() -> Balancers {
        Balancers::Xdplb(XdplbOpts { sync: true, ..XdplbOpts::default() })
    }
}

/// Two balancers behind a VIP with keepalived, three TLS servers, the VIP on the first.
pub struct Pair {
    pub lab: Lab,
    pub lb2: NetNs,
    pub ca: Ca,
    pub dir: PathBuf,
    /// xdplb on each balancer (empty with HAProxy).
    pub agents: Vec<Agent>,
    haproxies: Vec<Child>,
    /// The master's keepalived (a failover takes it).
    pub k1: Option<Keepalived>,
    _k2: Keepalived,
    _servers: Vec<TlsEcho>,
}

/// HAProxy in TCP mode in front of the lab's servers, on the VIP, checking them as the tests'
/// xdplb does.
pub fn haproxy_cfg(lab: &Lab) -> String {
    let servers: Vec<String> = lab
        .backends
        .iter()
        .map(|b| format!("    server {} {}:{BACKEND_PORT} check inter 500ms rise 1 fall 2", b.name, b.addr))
        .collect();
    format!(
        "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\nfrontend etcd\n    bind {HA_VIP}:{PORT}\n    default_backend etcd\n\nbackend etcd\n    balance roundrobin\n{}\n",
        servers.join("\n")
    )
}

impl Pair {
    pub fn start(balancers: &Balancers) -> Result<Pair> {
        let (lab, lb2) = Lab::one_arm_ha(3, Names::Unique)?;
        // As HAProxy users run it: the backup binds the VIP it does not hold yet.
        for ns in [&lab.lb, &lb2] {
            ns.sysctl("net.ipv4.ip_nonlocal_bind", "1")?;
        }
        let ca = Ca::new("xdplb ha lab")?;
        let leaf = ca.server(TLS_NAME, &[TLS_NAME])?;
        let servers =
            lab.backends.iter().map(|b| TlsEcho::start(&b.ns, BACKEND_PORT, &b.name, &leaf)).collect::<Result<_>>()?;
        let dir = std::env::temp_dir().join(unique("xdplb-ha-"));
        let key = write_key(&dir)?;
        let (mut agents, mut haproxies) = (Vec::new(), Vec::new());
        let track = match balancers {
            Balancers::Xdplb(o) => {
                let nodes: &[(u32, &NetNs)] = if o.sync { &[(1, &lab.lb), (2, &lb2)] } else { &[(1, &lab.lb)] };
                for &(node, ns) in nodes {
                    let cfg = config(&lab, node, PORT, BACKEND_PORT, &key, o);
                    agents.push(Agent::start(ns, &cfg, &["eth0".to_string()], "native")?);
                }
                // A host whose agent does not answer gives the VIP up.
                format!("{} status --stats 127.0.0.1:8404", xdplb_bin()?)
            }
            Balancers::Haproxy => {
                let cfg = dir.join("haproxy.cfg");
                fs::write(&cfg, haproxy_cfg(&lab))?;
                for ns in [&lab.lb, &lb2] {
                    let log = fs::File::create(dir.join(format!("haproxy-{}.log", ns.name)))?;
                    haproxies.push(
                        ns.command("haproxy")
                            .args(["-db", "-f"])
                            .arg(&cfg)
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(log)
                            .spawn()
                            .context("starting haproxy")?,
                    );
                }
                "/bin/true".to_string()
            }
        };
        let k1 = Keepalived::start(&lab.lb, &dir.join("k1"), 150, "eth0", HA_VIP, &track)?;
        let k2 = Keepalived::start(&lb2, &dir.join("k2"), 100, "eth0", HA_VIP, &track)?;
        wait_holds(&lab.lb, HA_VIP, Duration::from_secs(15)).with_context(|| format!("keepalived:\n{}", k1.log()))?;
        Ok(Pair { lab, lb2, ca, dir, agents, haproxies, k1: Some(k1), _k2: k2, _servers: servers })
    }

    /// The status snapshot of balancer `n` (1 or 2) with xdplb.
    pub fn status(&self, n: usize) -> Result<lb_user::report::snapshot::Snapshot> {
        let ns = if n == 1 { &self.lab.lb } else { &self.lb2 };
        ns.enter(|| lb_user::report::http::fetch("127.0.0.1:8404".parse().expect("an address")))
            .map_err(|e| anyhow::anyhow!("status of balancer {n}: {e}"))
    }

    /// What the data path of each balancer counted (`xdplb stats`), for a failure's report.
    pub fn data_path_report(&self) -> String {
        let mut out = String::new();
        for (ns, a) in [&self.lab.lb, &self.lb2].into_iter().zip(&self.agents) {
            let stats = xdplb_bin()
                .ok()
                .and_then(|bin| ns.command(&bin).arg("stats").arg("--pin-dir").arg(a.pin_dir()).output().ok());
            let text = stats.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            out.push_str(&format!(
                "--- {} data path ---\n{text}\n--- {} agent ---\n{}\n",
                ns.name,
                ns.name,
                a.log_text()
            ));
        }
        out
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for h in &mut self.haproxies {
            let _ = h.kill();
            let _ = h.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// How the master fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// keepalived is SIGKILLed and the VIP taken off the host (a host that died).
    KeepalivedKilled,
    /// The master's link goes down.
    LinkDown,
}

/// What a failover did to the clients.
#[derive(Debug)]
pub struct FailoverResult {
    pub streams: Vec<StreamResult>,
    pub probes: Vec<Probe>,
    /// When the master failed, and when the VIP was on the other balancer.
    pub t0: Instant,
    pub t1: Instant,
    /// Flows the peer had installed before the failure (xdplb).
    pub installed: u64,
}

impl FailoverResult {
    pub fn survived(&self) -> usize {
        self.streams.iter().filter(|r| r.error.is_none()).count()
    }

    /// New connections that ended after the failure.
    pub fn after(&self) -> Vec<&Probe> {
        self.probes.iter().filter(|p| p.done >= self.t0).collect()
    }

    pub fn failed(&self) -> usize {
        self.after().iter().filter(|p| p.result.is_err()).count()
    }

    pub fn vrrp(&self) -> Duration {
        self.t1.duration_since(self.t0)
    }

    /// From the VIP's arrival to the first new connection completed on the new master.
    pub fn served(&self) -> Option<Duration> {
        self.after()
            .iter()
            .filter(|p| p.result.is_ok() && p.done >= self.t1)
            .map(|p| p.done.duration_since(self.t1))
            .min()
    }

    pub fn line(&self, what: &str) -> String {
        format!(
            "{what}: flows survived: {}/{}, new connections failed during failover: {} of {}, VIP served after: {} s (VRRP moved it after {:.2} s; the peer had {} flows installed; {} bytes verified)",
            self.survived(),
            self.streams.len(),
            self.failed(),
            self.after().len(),
            self.served().map_or("never".into(), |d| format!("{:.3}", d.as_secs_f64())),
            self.vrrp().as_secs_f64(),
            self.installed,
            self.streams.iter().map(|r| r.bytes_verified).sum::<u64>()
        )
    }
}

/// `streams` watch-like TLS streams and a stream of new connections through the VIP; the
/// master fails `how`; the VIP moves; everything runs `after` more, then stops.
pub fn failover(p: &mut Pair, how: Failure, streams: usize, after: Duration) -> Result<FailoverResult> {
    let mut k1 = p.k1.take().context("the master's keepalived was taken already")?;
    let p = &*p;
    let cfg = client_config(&p.ca)?;
    let vip = SocketAddrV4::new(HA_VIP, PORT);
    let (stop, stop_probe) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..streams {
            let (tls, server) = tls_connect(&p.lab.client, vip, &cfg, Duration::from_secs(3))?;
            let stop = &stop;
            // Watch-like: quiet for most of a second or more, then data.
            let quiet = Duration::from_millis(700 + 30 * i as u64);
            handles.push(s.spawn(move || watch_stream(tls, server, i as u64 + 1, quiet, stop)));
        }
        // With xdplb, the peer knows every stream before the master fails.
        let start = Instant::now();
        let mut installed = 0;
        while p.agents.len() == 2 && start.elapsed() < Duration::from_secs(10) {
            installed = p.status(2)?.sync.iter().find(|(k, _)| k == "flows_installed").map_or(0, |(_, v)| *v);
            if installed >= streams as u64 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let prober = s
            .spawn(|| probe(&p.lab.client, vip, &cfg, Duration::from_millis(100), Duration::from_secs(5), &stop_probe));
        std::thread::sleep(Duration::from_secs(1));
        let t0 = Instant::now();
        match how {
            Failure::KeepalivedKilled => {
                k1.kill9();
                p.lab.lb.ip(&["addr", "del", &format!("{HA_VIP}/24"), "dev", "eth0"])?;
            }
            Failure::LinkDown => {
                p.lab.lb.ip(&["link", "set", "eth0", "down"])?;
            }
        }
        let t1 = wait_holds(&p.lb2, HA_VIP, Duration::from_secs(10))?;
        std::thread::sleep(after);
        stop.store(true, Ordering::Relaxed);
        stop_probe.store(true, Ordering::Relaxed);
        let streams = handles.into_iter().map(|h| h.join().expect("a stream thread")).collect();
        let probes = prober.join().expect("the prober");
        Ok(FailoverResult { streams, probes, t0, t1, installed })
    })
}
