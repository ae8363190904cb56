//! The seed's scenario end to end: real etcd members and apiserver stand-ins behind xdplb, with
//! the configuration `xdplb import-haproxy` makes of the seed's haproxy.cfg.

use std::{
    net::{SocketAddr, SocketAddrV4, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use integration::{
    lab::Names,
    seed::{SeedLab, API_FRONT, ETCD_FRONT},
};
use lb_user::report::snapshot::ServerState;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, RootCertStore,
};

const ETCD: &str = "etcd-cluster";
const API: &str = "apiserver-cluster";
/// The seed's check timing (HAProxy's defaults): inter 2 s, rise 2, fall 3.
const INTER: Duration = Duration::from_secs(2);

fn lab() -> SeedLab {
    let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-seed-"));
    SeedLab::start(Names::Unique, &dir, env!("CARGO_BIN_EXE_apiserver-standin").as_ref(), "native").unwrap()
}

fn wait_all_up(s: &SeedLab) {
    for backend in [ETCD, API] {
        for name in ["app1", "app2", "app3"] {
            s.wait_state(backend, name, ServerState::Up, Duration::from_secs(40)).unwrap();
        }
    }
}

/// Total flows each server of `backend` has taken.
fn flows(s: &SeedLab, backend: &str) -> Vec<u64> {
    let snap = s.status().unwrap();
    snap.backends.iter().find(|b| b.name == backend).unwrap().servers.iter().map(|x| x.traffic.total_flows).collect()
}

/// The certificate the client sees through the balancer: etcd's own (TLS end to end).
fn peer_certificate_cn(s: &SeedLab) -> String {
    let vip = SocketAddr::from(SocketAddrV4::new(s.lab.vip, ETCD_FRONT));
    let ca = std::fs::read(&s.ca).unwrap();
    let (cert, key) = (std::fs::read(&s.client.0).unwrap(), std::fs::read(&s.client.1).unwrap());
    s.lab.client.enter(|| {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(&ca).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(&cert).collect::<Result<Vec<_>, _>>().unwrap(),
                PrivateKeyDer::from_pem_slice(&key).unwrap(),
            )
            .unwrap();
        // Verified for the balancer's address: the members' certificates list it.
        let name = ServerName::IpAddress(std::net::IpAddr::V4(s.lab.vip).into());
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut tcp = TcpStream::connect_timeout(&vip, Duration::from_secs(3)).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).unwrap();
        }
        let der = conn.peer_certificates().unwrap()[0].clone();
        // The CommonName of a certificate rcgen made: the member's name, in plain bytes.
        ["app1", "app2", "app3"]
            .iter()
            .find(|n| der.windows(4).any(|w| w == n.as_bytes()))
            .map(|n| n.to_string())
            .unwrap_or_default()
    })
}

#[test]
fn the_seeds_cluster_behind_xdplb() {
    let mut s = lab();
    let started = Instant::now();
    wait_all_up(&s);
    eprintln!("all six servers UP {:?} after start", started.elapsed());

    // TLS is end to end: the client verifies an etcd member's certificate, not the balancer's.
    let cn = peer_certificate_cn(&s);
    assert!(["app1", "app2", "app3"].contains(&cn.as_str()), "peer certificate {cn:?}");

    // 1. 1000 puts and gets through the balancer with etcdctl and the client certificate.
    let t = Instant::now();
    let errors: usize = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let s = &s;
                sc.spawn(move || {
                    let mut errors = 0;
                    for i in (w..500).step_by(4) {
                        let (k, v) = (format!("/xdplb/k{i}"), format!("v{i}"));
                        if s.etcdctl(&["put", &k, &v]).is_err() {
                            errors += 1;
                        }
                        match s.etcdctl(&["get", "--print-value-only", &k]) {
                            Ok(out) if out.trim() == v => {}
                            _ => errors += 1,
                        }
                    }
                    errors
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    eprintln!("1000 etcdctl puts and gets through xdplb in {:?}, {errors} failed", t.elapsed());
    assert_eq!(errors, 0);
    let etcd_flows = flows(&s, ETCD);
    assert!(etcd_flows.iter().all(|&n| n > 0), "every member took flows: {etcd_flows:?}");

    // 6. Round robin: 300 new connections over three UP apiservers land 100/100/100.
    let before = flows(&s, API);
    let api = SocketAddr::from(SocketAddrV4::new(s.lab.vip, API_FRONT));
    s.lab.client.enter(|| {
        for _ in 0..300 {
            drop(TcpStream::connect_timeout(&api, Duration::from_secs(3)).unwrap());
        }
    });
    std::thread::sleep(Duration::from_millis(1200));
    let after = flows(&s, API);
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(delta, vec![100, 100, 100]);

    // 2. SIGKILL one etcd member: DOWN within inter * fall + 1 s, etcdctl keeps working.
    s.etcd_kill(1);
    let killed = Instant::now();
    let (mut ops, mut failed) = (0, 0);
    while s.server(ETCD, "app2").unwrap().state != ServerState::Down {
        assert!(
            killed.elapsed() < INTER * 3 + Duration::from_secs(1),
            "app2 not DOWN {:?} after the kill",
            killed.elapsed()
        );
        ops += 1;
        if s.etcdctl(&["put", "/xdplb/during", "x"]).is_err() {
            failed += 1;
        }
    }
    let to_down = killed.elapsed();
    eprintln!("etcd app2 killed: DOWN after {to_down:?}; {failed} of {ops} etcdctl puts failed meanwhile");
    let frozen = flows(&s, ETCD)[1];
    for i in 0..30 {
        s.etcdctl(&["put", &format!("/xdplb/after{i}"), "y"]).expect("etcdctl works with a member DOWN");
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(flows(&s, ETCD)[1], frozen, "no new connection to the DOWN member");

    // 3. Restart it: UP after `rise` passing checks, and it takes connections again.
    s.etcd_start(1).unwrap();
    let t = s.wait_state(ETCD, "app2", ServerState::Up, Duration::from_secs(20)).unwrap();
    eprintln!("etcd app2 restarted: UP after {t:?}");
    for i in 0..30 {
        s.etcdctl(&["get", &format!("/xdplb/after{i}")]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert!(flows(&s, ETCD)[1] > frozen, "the member is back in rotation");

    // 4. Apiserver stand-ins: TCP without TLS times out (L6TOUT, not a hung checker); a 500
    // with "ok" in its body fails (L7STS), where HAProxy's `expect string ok` would pass it.
    // A hanging server costs each check its whole timeout (= inter): up to inter for the next
    // check, then fall checks of `timeout` each with fastinter (= inter) between them.
    let hang_limit = INTER + INTER * 3 + INTER * 2 + Duration::from_secs(2);
    s.apiserver_mode(0, "hang").unwrap();
    s.apiserver_mode(1, "fail").unwrap();
    s.wait_state(API, "app1", ServerState::Down, hang_limit).unwrap();
    s.wait_state(API, "app2", ServerState::Down, INTER * 4 + Duration::from_secs(2)).unwrap();
    assert_eq!(s.server(API, "app1").unwrap().last_check.unwrap().code.name(), "L6TOUT");
    let app2 = s.server(API, "app2").unwrap().last_check.unwrap();
    assert_eq!((app2.code.name(), app2.http_status), ("L7STS", Some(500)));
    assert_eq!(s.server(API, "app3").unwrap().state, ServerState::Up, "app3's checks went on undisturbed");

    // 5. All three apiservers down: a new connection to 16443 is refused at once.
    s.apiserver_mode(2, "fail").unwrap();
    s.wait_state(API, "app3", ServerState::Down, INTER * 4 + Duration::from_secs(3)).unwrap();
    // Counted, not timed: the data path answered the client's first SYN with its RST (one
    // no_backend, no SYN retransmitted), so the client was refused without waiting.
    let counters = lb_user::dataplane::counters::Counters::open_pinned(s.agent().pin_dir()).unwrap();
    let no_backend = |c: &lb_user::dataplane::counters::Counters| {
        c.reasons().unwrap().into_iter().find(|(r, _)| *r == lb_common::Reason::NoBackend).unwrap().1
    };
    let (rst_before, retrans_before) = (no_backend(&counters), syn_retransmits(&s.lab.client));
    let r = s.lab.client.enter(|| TcpStream::connect_timeout(&api, Duration::from_secs(3)));
    let err = r.expect_err("no apiserver is UP");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(no_backend(&counters) - rst_before, 1, "the data path refused the one SYN");
    assert_eq!(syn_retransmits(&s.lab.client) - retrans_before, 0, "refused at the first SYN, not after a retry");
    s.agent().wait_log("backend 'apiserver-cluster' has no server available!", 1, Duration::from_secs(1)).unwrap();

    // And back.
    for i in 0..3 {
        s.apiserver_mode(i, "ok").unwrap();
    }
    for name in ["app1", "app2", "app3"] {
        s.wait_state(API, name, ServerState::Up, Duration::from_secs(20)).unwrap();
    }
    // Secrets stay secret: no key material in the log or on the status page.
    let log = s.agent().log_text();
    let status = serde_json::to_string(&s.status().unwrap()).unwrap();
    for text in [&log, &status] {
        assert!(!text.contains("PRIVATE KEY") && !text.contains("BEGIN"), "key material leaked");
    }
    let dir = s.dir.clone();
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// The client's SYN retransmissions so far (TcpExt TCPSynRetrans of its namespace).
fn syn_retransmits(ns: &integration::netns::NetNs) -> u64 {
    let text = ns.exec(&["cat", "/proc/net/netstat"]).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (names, values) = (lines[0].split_whitespace(), lines[1].split_whitespace());
    names.zip(values).find(|(n, _)| *n == "TCPSynRetrans").unwrap().1.parse().unwrap()
}

/// `cargo xtask run -- --ipv6`: the seed's cluster on IPv6. Every server xdplb balances is a
/// master's IPv6 address, passes its TLS check over IPv6, and etcdctl reaches the cluster at
/// https://[2001:2::10]:12379 through the XDP IPv6 data path.
#[test]
fn the_seeds_cluster_on_ipv6() {
    use integration::lab::{backend_addr6, CLIENT6, LB6};
    use lb_common::Reason;
    use lb_user::dataplane::{counters::Counters, flows::FlowTable};
    use std::net::{IpAddr, SocketAddrV6};

    let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-seed6-"));
    let standin = env!("CARGO_BIN_EXE_apiserver-standin");
    let started = Instant::now();
    let mut s = SeedLab::start_ipv6(Names::Unique, &dir, standin.as_ref(), "native", None).unwrap();
    wait_all_up(&s);
    eprintln!("all six IPv6 servers UP {:?} after start", started.elapsed());

    // Each server is its master's IPv6 address, UP by a passing TLS + HTTP check over IPv6.
    let masters: Vec<IpAddr> = (0..3).map(|i| IpAddr::V6(backend_addr6(i))).collect();
    for backend in [ETCD, API] {
        for (i, name) in ["app1", "app2", "app3"].iter().enumerate() {
            let x = s.server(backend, name).unwrap();
            assert_eq!(x.address.ip(), masters[i], "{backend}/{name}");
            let check = x.last_check.expect("checked");
            assert_eq!((check.code.name(), check.http_status), ("L7OK", Some(200)), "{backend}/{name}");
        }
    }
    assert_eq!(s.front(), format!("[{LB6}]"));

    // etcdctl through [2001:2::10]:12379: what it puts, it reads back, and every member served.
    let counters = Counters::open_pinned(s.agent().pin_dir()).unwrap();
    let new_flows = |c: &Counters| c.reasons().unwrap().into_iter().find(|(r, _)| *r == Reason::NewFlow).unwrap().1;
    let (flows_before, opened_before) = (flows(&s, ETCD), new_flows(&counters));
    let t = Instant::now();
    for i in 0..6 {
        let (k, v) = (format!("/xdplb/v6/k{i}"), format!("over IPv6 {i}"));
        s.etcdctl(&["put", &k, &v]).unwrap();
        assert_eq!(s.etcdctl(&["get", "--print-value-only", &k]).unwrap().trim(), v);
    }
    eprintln!("12 etcdctl commands through https://[{LB6}]:12379 in {:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(1200));
    let delta: Vec<u64> = flows(&s, ETCD).iter().zip(&flows_before).map(|(a, b)| a - b).collect();
    assert!(delta.iter().all(|&n| n > 0), "every IPv6 member took etcdctl's flows: {delta:?}");
    // Flows the data path opened (the servers are IPv6 only: the IPv6 path's), at least one per
    // etcdctl run.
    let opened = new_flows(&counters) - opened_before;
    assert!(opened >= 12, "the data path opened {opened} flows for 12 etcdctl runs");

    // An open connection to the front is an IPv6 flow in the table: client to [2001:2::10]:12379,
    // the balancer's IPv6 address to a master's [..]:2379.
    let front = SocketAddr::from(SocketAddrV6::new(LB6, ETCD_FRONT, 0, 0));
    let table = FlowTable::open_pinned(s.agent().pin_dir()).unwrap();
    s.lab.client.enter(|| {
        let tcp = TcpStream::connect_timeout(&front, Duration::from_secs(3)).unwrap();
        // This connection's flow (etcdctl's still linger beside it).
        let me = tcp.local_addr().unwrap();
        assert_eq!(me.ip(), IpAddr::V6(CLIENT6));
        let flows = table.flows();
        let f = flows
            .iter()
            .find(|f| f.frontend == front && f.client == me)
            .unwrap_or_else(|| panic!("no IPv6 flow from {me} to {front} in {flows:?}"));
        assert_eq!(f.source.ip(), IpAddr::V6(LB6), "full NAT from the balancer's IPv6 address");
        assert!(masters.contains(&f.server.ip()) && f.server.port() == 2379, "server {}", f.server);
    });

    // And the apiserver stand-ins answer on IPv6 through [2001:2::10]:16443, round robin.
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let url = format!("https://[{LB6}]:{API_FRONT}/healthz");
        let out = s.lab.client.exec(&["curl", "-sk", "-D", "-", "--max-time", "3", &url]).unwrap();
        assert!(out.ends_with("ok"), "{url}: {out}");
        let by = out.lines().find_map(|l| l.strip_prefix("X-Served-By: ")).map(|n| n.trim().to_string());
        answered.insert(by.unwrap_or_else(|| panic!("no X-Served-By in {out}")));
    }
    assert_eq!(answered.into_iter().collect::<Vec<_>>(), ["app1", "app2", "app3"], "one stand-in each");
    eprintln!("IPv6 seed lab test done in {:?}", started.elapsed());
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}
