//! Two balancers and a floating address (issue 17): real keepalived moves the VIP between two
//! xdplb hosts that share their flows; established TLS streams survive the move byte for byte,
//! new connections work again within the VRRP failover time plus 1 s; addresses that come
//! later are served without a reload; bad sync messages are dropped and counted.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use integration::{
    agent::{xdplb_bin, Agent},
    ha::{self, client_config, probe, tls_connect, wait_holds, watch_stream, Keepalived, TlsEcho, TLS_NAME},
    lab::{self, Lab, Names, HA_VIP, LB, LB2},
    netns::{unique, NetNs},
    pki::Ca,
};
use lb_user::{
    report::snapshot::Snapshot,
    sync::wire::{self, Header, Key, Kind},
};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;
const STREAMS: usize = 20;

fn status(ns: &NetNs) -> Snapshot {
    ns.enter(|| lb_user::report::http::fetch("127.0.0.1:8404".parse().unwrap())).expect("status page")
}

fn sync_counter(s: &Snapshot, name: &str) -> u64 {
    s.sync.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v)
}

/// Two balancers with xdplb and keepalived, three TLS servers, the VIP on the first.
struct Pair {
    lab: Lab,
    lb2: NetNs,
    ca: Ca,
    dir: PathBuf,
    a1: Agent,
    a2: Agent,
    /// The master's keepalived (taken by a test that kills it).
    k1: Option<Keepalived>,
    _k2: Keepalived,
    _servers: Vec<TlsEcho>,
}

impl Pair {
    fn new(extra_sync: &str) -> Pair {
        let (lab, lb2) = Lab::one_arm_ha(3, Names::Unique).unwrap();
        // As HAProxy users run it: the backup may bind the VIP it does not hold yet.
        for ns in [&lab.lb, &lb2] {
            ns.sysctl("net.ipv4.ip_nonlocal_bind", "1").unwrap();
        }
        let ca = Ca::new("xdplb ha lab").unwrap();
        let leaf = ca.server(TLS_NAME, &[TLS_NAME]).unwrap();
        let servers =
            lab.backends.iter().map(|b| TlsEcho::start(&b.ns, BACKEND_PORT, &b.name, &leaf).unwrap()).collect();
        let dir = std::env::temp_dir().join(unique("xdplb-ha-"));
        let key = ha::write_key(&dir).unwrap();
        let a1 =
            Agent::start(&lab.lb, &ha::config(&lab, 1, PORT, BACKEND_PORT, &key, extra_sync), &lab.lb_ifaces, "native")
                .unwrap();
        let a2 =
            Agent::start(&lb2, &ha::config(&lab, 2, PORT, BACKEND_PORT, &key, extra_sync), &["eth0".into()], "native")
                .unwrap();
        // A host whose agent does not answer gives the VIP up.
        let track = format!("{} status --stats 127.0.0.1:8404", xdplb_bin().unwrap());
        let k1 = Keepalived::start(&lab.lb, &dir.join("k1"), 150, "eth0", HA_VIP, &track).unwrap();
        let k2 = Keepalived::start(&lb2, &dir.join("k2"), 100, "eth0", HA_VIP, &track).unwrap();
        wait_holds(&lab.lb, HA_VIP, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("{e}\n--- keepalived 1 ---\n{}", k1.log()));
        Pair { lab, lb2, ca, dir, a1, a2, k1: Some(k1), _k2: k2, _servers: servers }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let k1 = self.k1.as_ref().map(Keepalived::log).unwrap_or_default();
            eprintln!("--- keepalived lb1 ---\n{k1}\n--- agent lb2 ---\n{}", self.a2.log_text());
            for (ns, a) in [(&self.lab.lb, &self.a1), (&self.lb2, &self.a2)] {
                let stats = ns.command(&xdplb_bin().unwrap()).arg("stats").arg("--pin-dir").arg(a.pin_dir()).output();
                eprintln!(
                    "--- {} data path ---\n{}",
                    ns.name,
                    stats.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    /// keepalived is SIGKILLed and the VIP taken off the host (a host that died).
    KeepalivedKilled,
    /// The master's link goes down.
    LinkDown,
}

fn failover(how: Failure) {
    let mut p = Pair::new("refresh = \"1s\"");
    let mut k1 = p.k1.take().unwrap();
    let p = p;
    let cfg = client_config(&p.ca).unwrap();
    let vip = SocketAddrV4::new(HA_VIP, PORT);
    let stop = AtomicBool::new(false);
    let stop_probe = AtomicBool::new(false);
    let (streams, probes, t0, t1, installed) = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..STREAMS {
            let (tls, server) = tls_connect(&p.lab.client, vip, &cfg, Duration::from_secs(3)).unwrap();
            let stop = &stop;
            // Watch-like: quiet for most of a second or more, then data.
            let quiet = Duration::from_millis(700 + 30 * i as u64);
            handles.push(s.spawn(move || watch_stream(tls, server, i as u64 + 1, quiet, stop)));
        }
        // The peer knows every stream before the master fails.
        let start = Instant::now();
        let installed = loop {
            let n = sync_counter(&status(&p.lb2), "flows_installed");
            if n >= STREAMS as u64 || start.elapsed() > Duration::from_secs(10) {
                break n;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let prober = s
            .spawn(|| probe(&p.lab.client, vip, &cfg, Duration::from_millis(100), Duration::from_secs(5), &stop_probe));
        std::thread::sleep(Duration::from_secs(1));
        let t0 = Instant::now();
        match how {
            Failure::KeepalivedKilled => {
                k1.kill9();
                p.lab.lb.ip(&["addr", "del", &format!("{HA_VIP}/24"), "dev", "eth0"]).unwrap();
            }
            Failure::LinkDown => {
                p.lab.lb.ip(&["link", "set", "eth0", "down"]).unwrap();
            }
        }
        let t1 = wait_holds(&p.lb2, HA_VIP, Duration::from_secs(10)).unwrap();
        // Every stream exchanges data at least twice more on the new master.
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, Ordering::Relaxed);
        stop_probe.store(true, Ordering::Relaxed);
        let streams: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (streams, prober.join().unwrap(), t0, t1, installed)
    });
    let survived = streams.iter().filter(|r| r.error.is_none()).count();
    let after: Vec<_> = probes.iter().filter(|p| p.done >= t0).collect();
    let failed = after.iter().filter(|p| p.result.is_err()).count();
    // Served: the first new connection that completed on the new master, after the VIP came.
    let served = after.iter().filter(|p| p.result.is_ok() && p.done >= t1).map(|p| p.done.duration_since(t1)).min();
    let vrrp = t1.duration_since(t0);
    println!(
        "{how:?}: flows survived: {survived}/{STREAMS}, new connections failed during failover: {failed} of {}, VIP served after: {} s (VRRP moved it after {:.2} s; the peer had {installed} flows installed; {} bytes verified)",
        after.len(),
        served.map_or("never".into(), |d| format!("{:.3}", d.as_secs_f64())),
        vrrp.as_secs_f64(),
        streams.iter().map(|r| r.bytes_verified).sum::<u64>()
    );
    let errors: Vec<_> =
        streams.iter().filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.server))).collect();
    assert!(errors.is_empty(), "streams that died: {errors:?}");
    assert!(streams.iter().all(|r| r.exchanges >= 4), "{streams:?}");
    // The promise: new connections work again within the VRRP failover time plus 1 s, and
    // none tried after that fails.
    let served = served.expect("no new connection succeeded after the VIP moved");
    assert!(served <= Duration::from_secs(1), "first new connection served {served:?} after the VIP moved");
    let late: Vec<_> = after.iter().filter(|p| p.result.is_err() && p.started > t1 + Duration::from_secs(1)).collect();
    assert!(late.is_empty(), "new connections failed after the VIP moved: {late:?}");
    let s2 = status(&p.lb2);
    assert!(s2.address_changes >= 1, "the VIP's arrival is counted on the new master");
    assert!(p.a2.log_text().contains("arrived on this host"), "{}", p.a2.log_text());
}

#[test]
fn established_streams_survive_when_the_master_s_keepalived_dies() {
    failover(Failure::KeepalivedKilled);
}

#[test]
fn established_streams_survive_when_the_master_s_link_goes_down() {
    failover(Failure::LinkDown);
}

/// The time from `ip addr add` until the kernel's frontend map has the address.
fn wait_frontend(pin_dir: &std::path::Path, addr: Ipv4Addr, port: u16, since: Instant) -> Duration {
    let key = lb_common::FrontendKey { addr: addr.octets(), port_be: port.to_be(), _pad: 0 };
    loop {
        let owner = lb_user::dataplane::maps::MapOwner::open_pinned(pin_dir).unwrap();
        if owner.state().unwrap().frontends.iter().any(|(k, _)| *k == key) {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(5), "{addr}:{port} never became a frontend");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_address_added_after_start_is_served_without_a_reload() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(env!("CARGO_BIN_EXE_lbtest-server"), BACKEND_PORT).unwrap();
    let mut agent =
        Agent::start(&lab.lb, &lab::config(&lab, PORT, BACKEND_PORT, "", &[]), &lab.lb_ifaces, "native").unwrap();
    let added = Ipv4Addr::new(198, 18, 0, 50);
    let at = Instant::now();
    lab.lb.ip(&["addr", "add", &format!("{added}/24"), "dev", "eth0"]).unwrap();
    let took = wait_frontend(agent.pin_dir(), added, PORT, at);
    println!("*:{PORT} covers {added} {:.1} ms after `ip addr add`", took.as_secs_f64() * 1000.0);
    assert!(took < Duration::from_millis(500), "{took:?}");
    let (_, name) = lab.client.enter(|| integration::traffic::connect(SocketAddrV4::new(added, PORT).into())).unwrap();
    assert!(name.starts_with("app"), "{name}");
    agent.wait_log("now serving 198.18.0.50:12379", 1, Duration::from_secs(5)).unwrap();
    // And removed: no longer a frontend.
    lab.lb.ip(&["addr", "del", &format!("{added}/24"), "dev", "eth0"]).unwrap();
    agent.wait_log("no longer serving 198.18.0.50:12379", 1, Duration::from_secs(5)).unwrap();
    assert_eq!(status(&lab.lb).address_changes, 2);
}

#[test]
fn a_vip_bound_before_it_arrives_is_served_the_moment_it_does() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(env!("CARGO_BIN_EXE_lbtest-server"), BACKEND_PORT).unwrap();
    let cfg = lab::config(&lab, PORT, BACKEND_PORT, "", &[]).replace(&format!("*:{PORT}"), &format!("{HA_VIP}:{PORT}"));
    // Without ip_nonlocal_bind the agent refuses, saying how to allow it.
    let refused = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").err().expect("refused");
    assert!(format!("{refused:#}").contains("net.ipv4.ip_nonlocal_bind=1"), "{refused:#}");
    lab.lb.sysctl("net.ipv4.ip_nonlocal_bind", "1").unwrap();
    let mut agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    lab.lb.ip(&["addr", "add", &format!("{HA_VIP}/24"), "dev", "eth0"]).unwrap();
    let (_, name) = lab.client.enter(|| integration::traffic::connect(SocketAddrV4::new(HA_VIP, PORT).into())).unwrap();
    assert!(name.starts_with("app"), "{name}");
    agent.wait_log(&format!("{HA_VIP} arrived on this host"), 1, Duration::from_secs(5)).unwrap();
    assert_eq!(status(&lab.lb).address_changes, 1);
}

#[test]
fn bad_sync_messages_are_dropped_and_counted_and_the_agent_keeps_running() {
    let p = Pair::new("");
    let key = Key::new(b"lab-secret-0123456789abcdef");
    let wrong_key = Key::new(b"not-the-lab-secret-at-all");
    let header = Header { kind: Kind::Hello, node: 2, session: 7, seq: 1, fingerprint: 0 };
    let good = wire::encode(&key, &header, &[]);
    let mut wrong_version = good[..good.len() - wire::MAC].to_vec();
    wrong_version[4] = wire::VERSION + 1;
    let datagrams: Vec<(&str, Vec<u8>)> = vec![
        ("bad_mac", wire::encode(&wrong_key, &header, &[])),
        ("bad_version", wire::seal(&key, wrong_version)),
        ("truncated", good[..wire::HEADER].to_vec()),
        ("oversized", vec![0xa5; wire::MAX_DATAGRAM + 100]),
    ];
    let before = status(&p.lab.lb);
    // From the peer's address (another port): the first check is the sender's address.
    p.lb2.enter(|| {
        let sock = UdpSocket::bind(SocketAddrV4::new(LB2, 0)).unwrap();
        for (_, d) in &datagrams {
            sock.send_to(d, SocketAddrV4::new(LB, ha::SYNC_PORT)).unwrap();
        }
    });
    // And from an address that is no peer.
    p.lab.client.enter(|| {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.send_to(&good, SocketAddrV4::new(LB, ha::SYNC_PORT)).unwrap();
    });
    let start = Instant::now();
    let after = loop {
        let s = status(&p.lab.lb);
        if sync_counter(&s, "dropped_unknown_peer") > sync_counter(&before, "dropped_unknown_peer")
            || start.elapsed() > Duration::from_secs(5)
        {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for (what, _) in datagrams.iter().map(|(w, d)| (*w, d)).chain([("unknown_peer", &good)]) {
        let name = format!("dropped_{what}");
        assert_eq!(sync_counter(&after, &name) - sync_counter(&before, &name), 1, "{name}: {:?}", after.sync);
    }
    // Still running, still syncing with its real peer.
    std::thread::sleep(Duration::from_millis(1500));
    let s = status(&p.lab.lb);
    assert_eq!(s.sync_peers_up, 1, "{:?}", s.sync);
    assert!(sync_counter(&s, "messages_received") > sync_counter(&after, "messages_received"));
    let _ = &p.a1;
}

/// A flow a peer balancer synced, under BPF_PROG_TEST_RUN: installed without the peer's way back
/// to the client, its replies go out by the FIB's answer (once, then kept in the entry), and
/// both directions are rewritten as on the host that opened it.
#[test]
fn a_synced_flow_is_forwarded_both_ways_by_the_host_that_takes_it_over() {
    use integration::{
        fixture::{fixture, server_mac, to_client, Nat, CLIENT, CLIENT_MAC, D0_MAC, ETCD, XDP_TX},
        frames::{self, Tcp, ACK, PSH, SYN},
    };
    let fx = fixture();
    let mac = CLIENT_MAC.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    fx.ns.ip(&["neigh", "replace", &CLIENT.to_string(), "lladdr", &mac, "dev", "d0", "nud", "permanent"]).unwrap();
    fx.ns.enter(|| {
        let mut l = fx.load(&|_| true);
        let client = (CLIENT, 51000);
        // The flow as the other balancer opened it.
        let syn = Tcp::new(client, ETCD, SYN);
        let (action, out) = l.run(&syn.frame());
        assert_eq!(action, XDP_TX);
        let nat = Nat::of(&frames::parse(&out).unwrap());
        let mut synack = nat.from_server(SYN | ACK);
        synack.src_mac = server_mac(nat.server.octets()[3] - 20);
        synack.dst_mac = D0_MAC;
        synack.seq = 5000;
        synack.ack = 1001;
        assert_eq!(l.run(&synack.frame()).0, XDP_TX);
        let mut ack = Tcp::new(client, ETCD, ACK);
        ack.seq = 1001;
        ack.ack = 5001;
        assert_eq!(l.run(&ack.frame()).0, XDP_TX);
        let pairs = l.flows.established_pairs();
        assert_eq!(pairs.len(), 1, "the handshake is complete: one established flow to share");
        // This host knew nothing of it; then the peer's message arrives.
        assert_eq!(l.flows.remove_pairs(&pairs), 1);
        assert!(l.entry(nat.server_key()).is_none());
        let now = lb_user::dataplane::flows::monotonic_ns();
        let installed = l.flows.install(&pairs, now);
        assert_eq!((installed.new, installed.refreshed, installed.failed), (1, 0, 0));
        assert_eq!(l.entry(nat.server_key()).unwrap().next_hop_ifindex, 0, "no way back recorded yet");
        // The server's data: back to the client through the FIB's next hop.
        let mut data = synack.clone();
        data.flags = ACK | PSH;
        data.seq = 5001;
        data.ack = 1001;
        data.payload = b"hello from app".to_vec();
        let (action, out) = l.run(&data.frame());
        assert_eq!(action, XDP_TX, "{:?}", l.reasons());
        assert_eq!(out, to_client(&data, client).frame());
        let entry = l.entry(nat.server_key()).unwrap();
        assert_eq!((entry.next_hop_ifindex, entry.next_hop_dst_mac), (l.d0, CLIENT_MAC), "kept for the next reply");
        // And the client's data to the server.
        let mut more = ack.clone();
        more.flags = ACK | PSH;
        more.payload = b"hello from client".to_vec();
        let (action, out) = l.run(&more.frame());
        assert_eq!(action, XDP_TX);
        assert_eq!(out, nat.forward(&more).frame());
        // The same message again only keeps it from expiring.
        let again = l.flows.install(&pairs, now);
        assert_eq!((again.new, again.refreshed), (0, 1));
    });
}
