//! The seed's cluster in namespaces: three masters, each running a real etcd member (TLS for
//! clients and peers, `--client-cert-auth` as production clusters run) on 2379 and a
//! kube-apiserver stand-in on 6443, and xdplb in front of them with the configuration that
//! `xdplb import-haproxy` makes of the seed's own haproxy.cfg (addresses replaced by the lab's).
//! `cargo xtask run` shows it to a person; the end-to-end tests stand on it.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use lb_user::report::snapshot::{ServerState, ServerStatus, Snapshot};

use crate::{
    agent::{xdplb_bin, Agent},
    ha::{self, Keepalived},
    lab::{backend_addr, backend_addr6, Lab, Names, HA_VIP, LB, LB2, LB6},
    netns::{sh, NetNs},
    pki::Ca,
};

/// The seed's haproxy.cfg, verbatim.
pub const SEED_HAPROXY: &str = include_str!("../fixtures/seed-haproxy.cfg");
/// The seed's master addresses, replaced by the lab's.
const SEED_MASTERS: [&str; 3] = ["10.211.55.9", "10.211.55.10", "10.211.55.11"];
pub const ETCD_FRONT: u16 = 12379;
pub const API_FRONT: u16 = 16443;

pub struct SeedLab {
    pub lab: Lab,
    pub dir: PathBuf,
    /// Started last, once etcd and the stand-ins run.
    agent: Option<Agent>,
    /// The co-located shape (`start_colocated`): one agent on each master, none on `lab.lb`,
    /// their pin directories under this one (removed with the lab).
    node_agents: Vec<Agent>,
    node_pins: Option<PathBuf>,
    pub ca: PathBuf,
    /// etcdctl's client certificate and key.
    pub client: (PathBuf, PathBuf),
    etcd: Vec<Option<Child>>,
    standins: Vec<Child>,
    standin_bin: PathBuf,
    /// The second balancer and keepalived on both (`start_ha`).
    pub ha: Option<HaPart>,
    /// The lab on IPv6 (`start_ipv6`): etcd, the stand-ins and xdplb's servers on the masters'
    /// IPv6 addresses (2001:2::21-23), clients through 2001:2::10.
    pub ipv6: bool,
}

/// Two balancers behind a VIP: the second one's namespace and agent, keepalived on both.
pub struct HaPart {
    pub lb2: NetNs,
    pub agent2: Agent,
    pub keepalived: Vec<Keepalived>,
}

/// The imported configuration made ready for two balancers sharing flows: servers see flows
/// come from the VIP (so their replies follow it), and `[global.sync]` names the peer.
fn ha_toml(toml: &str, node: u32, key: &Path) -> String {
    let mut out = String::new();
    let mut in_backend = false;
    for line in toml.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("[[") || line.starts_with('[') {
            in_backend = line == "[[backend]]";
        } else if in_backend && line.starts_with("name = ") {
            out.push_str(&format!("source = [\"{HA_VIP}\"]\n"));
            in_backend = false;
        }
    }
    let (me, peer) = if node == 1 { (LB, LB2) } else { (LB2, LB) };
    out.push_str(&format!(
        "\n[global.sync]\nnode = {node}\nlisten = \"{me}:{port}\"\npeers = [\"{peer}:{port}\"]\nkey_file = \"{}\"\nfloating = [\"{HA_VIP}\"]\n",
        key.display(),
        port = ha::SYNC_PORT
    ));
    out
}

fn master_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("app{}", i + 1))
}

/// Master `i`'s address in a URL or a `host:port`: `198.18.0.2x`, or `[2001:2::2x]` on IPv6.
fn url_host(i: usize, ipv6: bool) -> String {
    if ipv6 {
        format!("[{}]", backend_addr6(i))
    } else {
        backend_addr(i).to_string()
    }
}

/// The seed's haproxy.cfg for this lab: the lab's addresses, and the checker's client
/// certificate on the etcd servers (the members require one).
pub fn lab_haproxy_cfg(client_pem: &Path) -> String {
    lab_haproxy_cfg_for(client_pem, false)
}

/// `lab_haproxy_cfg` on IPv6 when `ipv6`: the masters' IPv6 addresses (`server app1
/// [2001:2::21]:2379 ...`), and the binds HAProxy's IPv6-only listener (`bind :::12379 v6only`:
/// HAProxy would hand IPv4 clients of `*:12379` to IPv6 servers, which xdplb does not, so the
/// import refuses that); xdplb writes them `*:12379`, serving the families it has servers of.
pub fn lab_haproxy_cfg_for(client_pem: &Path, ipv6: bool) -> String {
    let mut text = SEED_HAPROXY.to_string();
    for (i, seed) in SEED_MASTERS.iter().enumerate() {
        text = text.replace(&format!("{seed}:"), &format!("{}:", url_host(i, ipv6)));
    }
    text.lines()
        .map(|l| {
            if ipv6 && l.trim_start().starts_with("bind *:") {
                format!("{} v6only", l.replacen("bind *:", "bind :::", 1))
            } else if l.contains(":2379 check check-ssl verify none") {
                format!("{l} crt {}", client_pem.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl SeedLab {
    /// Builds everything in `dir` (emptied first) and starts xdplb in `mode`, its maps pinned
    /// under `pin_dir` (a unique one when `None`).
    pub fn start(names: Names, dir: &Path, standin_bin: &Path, mode: &str) -> Result<SeedLab> {
        Self::start_pinned(names, dir, standin_bin, mode, None)
    }

    pub fn start_pinned(
        names: Names,
        dir: &Path,
        standin_bin: &Path,
        mode: &str,
        pin_dir: Option<&Path>,
    ) -> Result<SeedLab> {
        let (me, toml) = Self::build(Lab::one_arm_named(3, names)?, dir, standin_bin, None, false)?;
        me.with_agent(&toml, dir, mode, pin_dir)
    }

    /// Starts the lab's agent on `toml`, pinned under `pin_dir` (a unique one when `None`).
    fn with_agent(mut self, toml: &str, dir: &Path, mode: &str, pin_dir: Option<&Path>) -> Result<SeedLab> {
        let agent = match pin_dir {
            Some(pins) => Agent::start_in(&self.lab.lb, toml, &self.lab.lb_ifaces, mode, &dir.join("agent"), pins)?,
            None => Agent::start(&self.lab.lb, toml, &self.lab.lb_ifaces, mode)?,
        };
        self.agent = Some(agent);
        Ok(self)
    }

    /// The seed's cluster on IPv6: the one-arm lab with its 2001:2::/48 addresses too
    /// (`Lab::dual_stack`), etcd members listening and advertising (client and peer URLs) on
    /// 2001:2::21-23, the stand-ins on [2001:2::2x]:6443, and xdplb's servers those addresses
    /// behind the imported `*:12379` and `*:16443` (both families), checked over IPv6 TLS.
    /// Clients dial [2001:2::10]:12379 (`front`).
    pub fn start_ipv6(
        names: Names,
        dir: &Path,
        standin_bin: &Path,
        mode: &str,
        pin_dir: Option<&Path>,
    ) -> Result<SeedLab> {
        let lab = Lab::one_arm_named(3, names)?;
        lab.dual_stack()?;
        let (me, toml) = Self::build(lab, dir, standin_bin, None, true)?;
        me.with_agent(&toml, dir, mode, pin_dir)
    }

    /// The seed's cluster behind two balancers (198.18.0.10 and .11) sharing the VIP
    /// 198.18.0.100 with real keepalived (the first is master), xdplb on both sharing flows.
    pub fn start_ha(names: Names, dir: &Path, standin_bin: &Path, mode: &str, pin_dir: &Path) -> Result<SeedLab> {
        let (lab, lb2) = Lab::one_arm_ha(3, names)?;
        for ns in [&lab.lb, &lb2] {
            // As HAProxy users run it: the backup binds the VIP it does not hold yet.
            ns.sysctl("net.ipv4.ip_nonlocal_bind", "1")?;
        }
        let (mut me, imported) = Self::build(lab, dir, standin_bin, None, false)?;
        let key = ha::write_key(dir)?;
        let (toml, toml2) = (ha_toml(&imported, 1, &key), ha_toml(&imported, 2, &key));
        fs::write(dir.join("xdplb.toml"), &toml)?;
        fs::write(dir.join("xdplb-2.toml"), &toml2)?;
        let pins2 = PathBuf::from(format!("{}-2", pin_dir.display()));
        let agent2 = Agent::start_in(&lb2, &toml2, &["eth0".to_string()], mode, &dir.join("agent-2"), &pins2)?;
        me.agent = Some(Agent::start_in(&me.lab.lb, &toml, &me.lab.lb_ifaces, mode, &dir.join("agent"), pin_dir)?);
        // keepalived last, once both agents answer: its track script asks them.
        let track = format!("{} status --stats 127.0.0.1:8404", xdplb_bin()?);
        let k1 = Keepalived::start(&me.lab.lb, &dir.join("keepalived-1"), 150, "eth0", HA_VIP, &track)?;
        let k2 = Keepalived::start(&lb2, &dir.join("keepalived-2"), 100, "eth0", HA_VIP, &track)?;
        ha::wait_holds(&me.lab.lb, HA_VIP, Duration::from_secs(15))?;
        me.ha = Some(HaPart { lb2, agent2, keepalived: vec![k1, k2] });
        Ok(me)
    }

    /// The co-located shape (issue 11), as kubeadm's "load balancer on the control-plane nodes"
    /// runs HAProxy: no balancer host; every master runs its etcd member, its apiserver
    /// stand-in and its own xdplb (the same imported configuration, attached to its eth0), and
    /// each stand-in reaches etcd through its own node's `127.0.0.1:12379` (the connect hook),
    /// one of whose servers is the node itself (a local backend). Pins under `pin_dir/appN`.
    pub fn start_colocated(
        names: Names,
        dir: &Path,
        standin_bin: &Path,
        mode: &str,
        pin_dir: &Path,
    ) -> Result<SeedLab> {
        let (mut me, toml) =
            Self::build(Lab::one_arm_named(3, names)?, dir, standin_bin, Some("127.0.0.1:12379"), false)?;
        me.lab.napi_backends()?;
        me.node_pins = Some(pin_dir.to_path_buf());
        for b in &me.lab.backends {
            let pins = pin_dir.join(&b.name);
            let agent =
                Agent::start_in(&b.ns, &toml, &["eth0".into()], mode, &dir.join(format!("agent-{}", b.name)), &pins)?;
            me.node_agents.push(agent);
        }
        Ok(me)
    }

    /// The masters, etcd and the stand-ins running, certificates made, and xdplb's
    /// configuration imported from the seed's haproxy.cfg; no agent yet. `ipv6`: on the
    /// masters' IPv6 addresses (the lab already has them).
    fn build(
        lab: Lab,
        dir: &Path,
        standin_bin: &Path,
        standin_etcd: Option<&str>,
        ipv6: bool,
    ) -> Result<(SeedLab, String)> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir)?;
        let ca = Ca::new("xdplb lab CA")?;
        let ca_path = ca.write(dir)?;
        let client = ca.client("etcdctl")?.write(dir, "etcdctl")?;
        let checker = ca.client("xdplb-health-check")?.write_combined(dir, "xdplb-check")?;
        let (lb, lb2, vip) = (LB.to_string(), LB2.to_string(), HA_VIP.to_string());
        for (i, b) in lab.backends.iter().enumerate() {
            let d = master_dir(dir, i);
            let addr = b.addr.to_string();
            // The balancers' addresses are in every server certificate, as the seed says they must be.
            let mut sans = vec![addr.as_str(), &lb, &lb2, &vip, "127.0.0.1", "localhost"];
            let mut peer_sans = vec![addr.as_str()];
            let (addr6, lb6) = (backend_addr6(i).to_string(), LB6.to_string());
            if ipv6 {
                sans.extend([addr6.as_str(), &lb6, "::1"]);
                peer_sans.push(&addr6);
            }
            ca.server(&b.name, &sans)?.write(&d, "server")?;
            ca.peer(&b.name, &peer_sans)?.write(&d, "peer")?;
        }
        let mut me = SeedLab {
            lab,
            dir: dir.to_path_buf(),
            agent: None,
            node_agents: Vec::new(),
            node_pins: None,
            ha: None,
            ca: ca_path,
            client,
            etcd: (0..3).map(|_| None).collect(),
            standins: Vec::new(),
            standin_bin: standin_bin.to_path_buf(),
            ipv6,
        };
        for i in 0..3 {
            me.etcd_start(i)?;
            me.apiserver_mode(i, "ok")?;
            let d = master_dir(dir, i);
            let b = &me.lab.backends[i];
            let listen = format!("{}:6443", if ipv6 { url_host(i, true) } else { "0.0.0.0".into() });
            let child =
                b.ns.command(standin_bin.to_str().unwrap())
                    .args(["--listen", &listen])
                    .args([
                        "--cert",
                        d.join("server.pem").to_str().unwrap(),
                        "--key",
                        d.join("server-key.pem").to_str().unwrap(),
                    ])
                    .args(["--mode-file", d.join("apiserver.mode").to_str().unwrap(), "--name", &b.name])
                    .args(standin_etcd.map(|e| ["--etcd", e]).into_iter().flatten())
                    .stdin(Stdio::null())
                    .stdout(fs::File::create(d.join("apiserver.log"))?)
                    .stderr(Stdio::inherit())
                    .spawn()
                    .context("starting the apiserver stand-in")?;
            me.standins.push(child);
        }
        let cfg_path = dir.join("haproxy.cfg");
        fs::write(&cfg_path, lab_haproxy_cfg_for(&checker, ipv6))?;
        let out = Command::new(xdplb_bin()?).args(["import-haproxy", cfg_path.to_str().unwrap()]).output()?;
        if !out.status.success() {
            bail!("xdplb import-haproxy failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let toml = String::from_utf8(out.stdout)?;
        fs::write(dir.join("xdplb.toml"), &toml)?;
        fs::write(dir.join("import-notes.txt"), &out.stderr)?;
        Ok((me, toml))
    }

    /// Writes `DIR/lab`, a shell script a person uses to break and mend the masters:
    /// `lab etcd stop|start N`, `lab apiserver ok|fail|hang N`.
    pub fn write_control_script(&self) -> Result<PathBuf> {
        let mut starts = String::new();
        for i in 0..3 {
            let ns = &self.lab.backends[i].ns.name;
            let log = master_dir(&self.dir, i).join("etcd.log");
            starts.push_str(&format!(
                "  {n}) nsenter --net=/run/netns/{ns} -- etcd {args} >>{log} 2>&1 </dev/null & ;;\n",
                n = i + 1,
                args = self.etcd_args(i).join(" "),
                log = log.display()
            ));
        }
        let nss: Vec<String> = self.lab.backends.iter().map(|b| b.ns.name.clone()).collect();
        let script = format!(
            "#!/bin/sh\n# Control the xdplb lab's masters (made by cargo xtask run).\nset -e\nns() {{ case $1 in 1) echo {n1};; 2) echo {n2};; 3) echo {n3};; *) echo \"master $1? use 1, 2 or 3\" >&2; exit 2;; esac; }}\n\
             case \"$1 $2\" in\n\
             \"etcd stop\") for p in $(ip netns pids $(ns $3)); do [ \"$(cat /proc/$p/comm)\" = etcd ] && kill -9 $p; done; echo \"etcd app$3 killed\" ;;\n\
             \"etcd start\") ns $3 >/dev/null; case $3 in\n{starts}  esac; echo \"etcd app$3 started\" ;;\n\
             \"apiserver ok\"|\"apiserver fail\"|\"apiserver hang\") ns $3 >/dev/null; echo $2 > {dir}/app$3/apiserver.mode; echo \"apiserver app$3: $2\" ;;\n\
             *) echo \"usage: $0 etcd stop|start N | apiserver ok|fail|hang N   (N = 1, 2, 3)\" >&2; exit 2 ;;\nesac\n",
            n1 = nss[0], n2 = nss[1], n3 = nss[2], dir = self.dir.display(),
        );
        let script = match &self.ha {
            None => script,
            Some(ha) => self.ha_commands(&script, ha),
        };
        let path = self.dir.join("lab");
        fs::write(&path, script)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }

    /// The control script's commands for two balancers: `lab failover` stops keepalived on the
    /// balancer that holds the VIP (gracefully: it gives the VIP up at once), `lab keepalived
    /// start N` starts it again on balancer N (1 or 2), `lab vip` says who holds it.
    fn ha_commands(&self, script: &str, ha: &HaPart) -> String {
        let nss = [self.lab.lb.name.clone(), ha.lb2.name.clone()];
        let start = |i: usize| {
            let d = self.dir.join(format!("keepalived-{}", i + 1));
            format!(
                "nsenter --net=/run/netns/{} -- keepalived {} >>{}/keepalived.log 2>&1 </dev/null &",
                nss[i],
                Keepalived::args(&d).join(" "),
                d.display()
            )
        };
        let ha_cases = format!(
            "\"vip \") for n in 1 2; do b=$(lb $n); ip -n $b -4 -o addr show | grep -q ' {vip}/' && echo \"balancer $n ($b) holds {vip}\"; done; true ;;\n\
             \"failover \") for n in 1 2; do b=$(lb $n); if ip -n $b -4 -o addr show | grep -q ' {vip}/'; then kill $(cat {dir}/keepalived-$n/keepalived.pid); echo \"keepalived stopped on balancer $n: the VIP moves to the other (lab keepalived start $n brings it back)\"; fi; done ;;\n\
             \"keepalived start\") case $3 in 1) {s1} ;; 2) {s2} ;; *) echo 'balancer 1 or 2' >&2; exit 2 ;; esac; echo \"keepalived started on balancer $3\" ;;\n",
            vip = HA_VIP,
            dir = self.dir.display(),
            s1 = start(0),
            s2 = start(1),
        );
        let lb_fn = format!("lb() {{ case $1 in 1) echo {};; 2) echo {};; esac; }}\n", nss[0], nss[1]);
        script
            .replacen("case \"$1 $2\" in\n", &format!("{lb_fn}case \"$1 $2\" in\n{ha_cases}"), 1)
            .replace("usage: $0 etcd", "usage: $0 vip | failover | keepalived start 1|2 | etcd")
    }

    pub fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("started")
    }

    fn etcd_args(&self, i: usize) -> Vec<String> {
        let d = master_dir(&self.dir, i);
        let f = |n: &str| d.join(n).display().to_string();
        let me = &self.lab.backends[i];
        let cluster: Vec<String> = (0..self.lab.backends.len())
            .map(|j| format!("{}=https://{}:2380", self.lab.backends[j].name, url_host(j, self.ipv6)))
            .collect();
        let ca = self.ca.display().to_string();
        let host = url_host(i, self.ipv6);
        vec![
            format!("--name={}", me.name),
            format!("--data-dir={}", f("data")),
            format!("--listen-client-urls=https://{host}:2379"),
            format!("--advertise-client-urls=https://{host}:2379"),
            format!("--listen-peer-urls=https://{host}:2380"),
            format!("--initial-advertise-peer-urls=https://{host}:2380"),
            format!("--initial-cluster={}", cluster.join(",")),
            "--initial-cluster-token=xdplb-lab".into(),
            "--initial-cluster-state=new".into(),
            "--client-cert-auth".into(),
            format!("--trusted-ca-file={ca}"),
            format!("--cert-file={}", f("server.pem")),
            format!("--key-file={}", f("server-key.pem")),
            "--peer-client-cert-auth".into(),
            format!("--peer-trusted-ca-file={ca}"),
            format!("--peer-cert-file={}", f("peer.pem")),
            format!("--peer-key-file={}", f("peer-key.pem")),
            "--logger=zap".into(),
        ]
    }

    pub fn etcd_start(&mut self, i: usize) -> Result<()> {
        let d = master_dir(&self.dir, i);
        fs::create_dir_all(&d)?;
        let b = &self.lab.backends[i];
        let child =
            b.ns.command("etcd")
                .args(self.etcd_args(i))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::OpenOptions::new().create(true).append(true).open(d.join("etcd.log"))?)
                .spawn()
                .context("starting etcd (Debian package etcd-server)")?;
        self.etcd[i] = Some(child);
        Ok(())
    }

    /// The pid of master `i`'s etcd, while it runs.
    pub fn etcd_pid(&self, i: usize) -> Option<u32> {
        self.etcd[i].as_ref().map(Child::id)
    }

    /// SIGKILLs master `i`'s etcd.
    pub fn etcd_kill(&mut self, i: usize) {
        if let Some(mut c) = self.etcd[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `ok`, `fail` (500) or `hang` (TCP only) for master `i`'s apiserver stand-in.
    pub fn apiserver_mode(&self, i: usize, mode: &str) -> Result<()> {
        let d = master_dir(&self.dir, i);
        fs::create_dir_all(&d)?;
        fs::write(d.join("apiserver.mode"), mode).map_err(Into::into)
    }

    /// etcdctl through the balancer, from the client namespace, with the client certificate.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        self.etcdctl_from(&self.lab.client, &format!("{}:{ETCD_FRONT}", self.front()), args)
    }

    /// The balancer's address as clients dial it, for a `host:port`: `198.18.0.10` (the VIP with
    /// two balancers), or `[2001:2::10]` on IPv6.
    pub fn front(&self) -> String {
        if self.ipv6 {
            format!("[{LB6}]")
        } else {
            self.lab.vip.to_string()
        }
    }

    /// etcdctl from `ns` to `endpoint` (`127.0.0.1:12379` on a co-located master: its own
    /// load-balancer endpoint).
    pub fn etcdctl_from(&self, ns: &NetNs, endpoint: &str, args: &[&str]) -> Result<String> {
        let endpoint = format!("--endpoints=https://{endpoint}");
        let mut c = ns.command("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(endpoint)
            .arg(format!("--cacert={}", self.ca.display()))
            .arg(format!("--cert={}", self.client.0.display()))
            .arg(format!("--key={}", self.client.1.display()))
            .args(["--dial-timeout=2s", "--command-timeout=5s"])
            .args(args);
        sh(&mut c)
    }

    pub fn status(&self) -> Result<Snapshot> {
        self.status_in(&self.lab.lb)
    }

    /// The status page of the agent running in `ns` (a master's, in the co-located shape).
    pub fn status_in(&self, ns: &NetNs) -> Result<Snapshot> {
        ns.enter(|| lb_user::report::http::fetch("127.0.0.1:8404".parse().unwrap())).map_err(anyhow::Error::msg)
    }

    /// The co-located agents, one per master.
    pub fn node_agents(&self) -> &[Agent] {
        &self.node_agents
    }

    pub fn server(&self, backend: &str, server: &str) -> Result<ServerStatus> {
        let snap = self.status()?;
        let b = snap.backends.iter().find(|b| b.name == backend).context("no such backend")?;
        b.servers.iter().find(|s| s.name == server).cloned().context("no such server")
    }

    /// Waits until `backend/server` is in `state`; returns how long it took.
    pub fn wait_state(&self, backend: &str, server: &str, state: ServerState, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let s = self.server(backend, server)?;
            if s.state == state {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                bail!(
                    "{backend}/{server} is {} after {within:?}, not {state:?} (last check {:?})",
                    s.status(),
                    s.last_check
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn master_addr(&self, i: usize) -> Ipv4Addr {
        self.lab.backends[i].addr
    }

    /// Master `i`'s address its etcd and stand-in serve on: IPv6 in the IPv6 lab.
    pub fn master_ip(&self, i: usize) -> IpAddr {
        if self.ipv6 {
            backend_addr6(i).into()
        } else {
            self.lab.backends[i].addr.into()
        }
    }

    pub fn master_ns(&self, i: usize) -> &NetNs {
        &self.lab.backends[i].ns
    }

    pub fn standin_bin(&self) -> &Path {
        &self.standin_bin
    }
}

impl Drop for SeedLab {
    fn drop(&mut self) {
        drop(self.ha.take());
        drop(self.agent.take());
        self.node_agents.clear();
        if let Some(dir) = &self.node_pins {
            let _ = fs::remove_dir(dir);
        }
        for i in 0..3 {
            self.etcd_kill(i);
        }
        for c in &mut self.standins {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
