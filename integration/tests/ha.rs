//! Two balancers and a floating address (issue 17): real keepalived moves the VIP between two
//! xdplb hosts that share their flows; established TLS streams survive the move byte for byte,
//! new connections work again within the VRRP failover time plus 1 s; addresses that come
//! later are served without a reload; bad sync messages are dropped and counted.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

use integration::{
    agent::Agent,
    ha::{self, Balancers, Failure, Pair, BACKEND_PORT, PORT},
    lab::{self, Lab, HA_VIP, LB, LB2},
    netns::NetNs,
};
use lb_user::{
    report::snapshot::Snapshot,
    sync::wire::{self, Header, Key, Kind},
};

const STREAMS: usize = 20;

fn status(ns: &NetNs) -> Snapshot {
    ns.enter(|| lb_user::report::http::fetch("127.0.0.1:8404".parse().unwrap())).expect("status page")
}

fn sync_counter(s: &Snapshot, name: &str) -> u64 {
    s.sync.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v)
}

fn failover(how: Failure) {
    // The default refresh (60 s): the streams reach the peer by the data path's flow events.
    let mut p = Pair::start(&Balancers::xdplb()).unwrap();
    let r = ha::failover(&mut p, how, STREAMS, Duration::from_secs(4)).unwrap();
    println!("{}", r.line(&format!("{how:?}")));
    let report = || p.data_path_report();
    let streams = &r.streams;
    let errors: Vec<_> =
        streams.iter().filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.server))).collect();
    assert!(errors.is_empty(), "streams that died: {errors:?}\n{}", report());
    assert!(streams.iter().all(|r| r.exchanges >= 4), "{streams:?}");
    // The promise: new connections work again within the VRRP failover time plus 1 s, and
    // none tried after that fails.
    let served = r.served().expect("no new connection succeeded after the VIP moved");
    assert!(served <= Duration::from_secs(1), "first new connection served {served:?} after the VIP moved");
    let late: Vec<_> =
        r.after().into_iter().filter(|p| p.result.is_err() && p.started > r.t1 + Duration::from_secs(1)).collect();
    assert!(late.is_empty(), "new connections failed after the VIP moved: {late:?}");
    assert!(p.status(2).unwrap().address_changes >= 1, "the VIP's arrival is counted on the new master");
    assert!(p.agents[1].log_text().contains("arrived on this host"), "{}", p.agents[1].log_text());
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
    let p = Pair::start(&Balancers::xdplb()).unwrap();
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

/// A balancer that comes back with an empty table (its agent restarted and its data path gone)
/// gets every established flow from its peer in one full dump, not only the flows opened after
/// it came back, and takes them over when the master fails: streams opened before it came back
/// survive the move byte for byte.
#[test]
fn a_peer_back_with_an_empty_table_gets_every_flow_by_a_dump_and_keeps_them_on_failover() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const OPEN: usize = 6;
    let mut p = Pair::start(&Balancers::xdplb()).unwrap();
    let tls = ha::client_config(&p.ca).unwrap();
    let vip = SocketAddrV4::new(HA_VIP, PORT);
    let stop = AtomicBool::new(false);
    let (results, installed, dumps) = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..OPEN {
            let (conn, server) = ha::tls_connect(&p.lab.client, vip, &tls, Duration::from_secs(3)).unwrap();
            let stop = &stop;
            let quiet = Duration::from_millis(700 + 30 * i as u64);
            handles.push(s.spawn(move || ha::watch_stream(conn, server, i as u64 + 1, quiet, stop)));
        }
        // The backup's agent goes, and its pins with it: its kernel tables are gone.
        drop(p.agents.remove(1));
        let key = p.dir.join("sync.key");
        let cfg = ha::config(&p.lab, 2, PORT, BACKEND_PORT, &key, &ha::XdplbOpts { sync: true, ..Default::default() });
        p.agents.push(Agent::start(&p.lb2, &cfg, &["eth0".to_string()], "native").unwrap());
        // Its first hello is a new session to the master, which answers with every flow it has.
        let deadline = Instant::now() + Duration::from_secs(10);
        let installed = loop {
            let n = sync_counter(&p.status(2).unwrap(), "flows_installed");
            if n >= OPEN as u64 || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // What the master said when the peer's new session came: the size of its dump.
        let dumps: Vec<u64> = p.agents[0]
            .log_text()
            .lines()
            .filter(|l| l.contains("is here; sending it our"))
            .filter_map(|l| l.split("sending it our ").nth(1)?.split(' ').next()?.parse().ok())
            .collect();
        // The master dies; the streams must go on through the peer that came back.
        p.k1.take().unwrap().kill9();
        p.lab.lb.ip(&["addr", "del", &format!("{HA_VIP}/24"), "dev", "eth0"]).unwrap();
        ha::wait_holds(&p.lb2, HA_VIP, Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (results, installed, dumps)
    });
    println!("back with an empty table: {installed} flows installed; the master's dumps: {dumps:?} flows");
    assert!(dumps.last().is_some_and(|&n| n >= OPEN as u64), "the master's dumps: {dumps:?}\n{}", p.data_path_report());
    assert!(installed >= OPEN as u64, "the peer installed {installed} of {OPEN} flows");
    let errors: Vec<_> =
        results.iter().filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.server))).collect();
    assert!(errors.is_empty(), "streams that died: {errors:?}\n{}", p.data_path_report());
    assert!(results.iter().all(|r| r.exchanges >= 4), "{results:?}");
}
