//! Local clients (issue 11): processes on the balancer host connect() to the frontends and the
//! cgroup connect hook balances them with XDP's own sets and cursors. In a lab of the test's
//! own, with a cgroup of the test's own for the hook (so that tests side by side never meet):
//! 300 connections to a loopback bind, to the balancer's address and to a `*:PORT` frontend
//! land 100/100/100, getpeername() says what was dialled, a DOWN server gets none, no server
//! UP refuses at once (ECONNREFUSED), and the hook outlives a kill -9 of the agent and is
//! adopted by the next one.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use integration::{
    agent::Agent,
    cgroup::TestCgroup,
    lab::{Lab, LB},
    netns::sh,
};
use lb_user::{dataplane::counters::Counters, health::state::ServerState, report::snapshot::Snapshot};

const INTER_MS: u64 = 200;
const FALL: u64 = 2;
const TIMEOUT_MS: u64 = 200;

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

fn client_bin() -> String {
    env!("CARGO_BIN_EXE_local-client").to_string()
}

fn config(lab: &Lab, cgroup: &TestCgroup) -> String {
    let check =
        format!("check = {{ type = \"tcp\", inter = \"{INTER_MS}ms\", fall = {FALL}, timeout = \"{TIMEOUT_MS}ms\" }}");
    let servers = |port: u16| {
        lab.backends
            .iter()
            .map(|b| format!("{{ name = \"{}\", address = \"{}:{port}\" }}", b.name, b.addr))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"[global]
local_clients_cgroup = "{cg}"

[[frontend]]
name = "etcd-local"
bind = "127.0.0.1:12379"
backend = "etcd"

[[frontend]]
name = "etcd-host"
bind = "{LB}:12380"
backend = "etcd"

[[frontend]]
name = "apiserver"
bind = "*:16443"
backend = "apiserver"

[[backend]]
name = "etcd"
{check}
server = [{etcd}]

[[backend]]
name = "apiserver"
{check}
server = [{api}]
"#,
        cg = cgroup.path.display(),
        etcd = servers(2379),
        api = servers(6443),
    )
}

/// What each connect() of a local client saw: the server's name and getpeername(), or the
/// error kind and how long the connect took.
#[derive(Debug)]
enum Seen {
    Ok { server: String, peer: SocketAddr },
    Err { kind: String, micros: u64, msg: String },
}

fn local_connects(lab: &Lab, cgroup: &TestCgroup, to: SocketAddr, n: usize) -> Vec<Seen> {
    let out =
        sh(lab.lb.command(&client_bin()).arg("--cgroup").arg(&cgroup.path).arg(to.to_string()).arg(n.to_string()))
            .expect("local-client");
    out.lines()
        .map(|l| {
            let w: Vec<&str> = l.splitn(4, ' ').collect();
            match w.as_slice() {
                ["ok", server, peer] => Seen::Ok { server: (*server).into(), peer: peer.parse().unwrap() },
                ["err", kind, micros, msg] => {
                    Seen::Err { kind: (*kind).into(), micros: micros.parse().unwrap(), msg: (*msg).into() }
                }
                _ => panic!("local-client said {l:?}"),
            }
        })
        .collect()
}

/// Connections per server; every one must have succeeded and named the dialled address.
fn spread(seen: &[Seen], dialled: SocketAddr) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in seen {
        match s {
            Seen::Ok { server, peer } => {
                assert_eq!(*peer, dialled, "getpeername() says what was dialled");
                *m.entry(server.clone()).or_insert(0) += 1;
            }
            Seen::Err { .. } => panic!("a local connection to {dialled} failed: {s:?}"),
        }
    }
    m
}

fn status(lab: &Lab) -> Snapshot {
    lab.lb.enter(|| lb_user::report::http::fetch("127.0.0.1:8404".parse().unwrap())).expect("status page")
}

fn wait_down(lab: &Lab, server: &str) {
    // FALL failed checks INTER_MS apart, each at most TIMEOUT_MS, and a margin for the load.
    let within = Duration::from_millis(INTER_MS * FALL + TIMEOUT_MS + 2000);
    let start = Instant::now();
    loop {
        let snap = status(lab);
        let down = snap
            .backends
            .iter()
            .all(|b| b.servers.iter().filter(|s| s.name == server).all(|s| s.state == ServerState::Down));
        if down {
            return;
        }
        assert!(start.elapsed() < within, "{server} not DOWN within {within:?}: {:?}", snap.backends);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn local_connections(c: &Counters, ids: &[u32]) -> u64 {
    ids.iter().map(|&id| c.server(id).unwrap().local_connections).sum()
}

/// The pinned link's id and the program it runs.
fn link_ids(pin: &std::path::Path) -> (u64, u64) {
    let out = sh(std::process::Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(pin)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (v["id"].as_u64().unwrap(), v["prog_id"].as_u64().unwrap())
}

#[test]
fn local_clients_are_balanced_by_the_connect_hook() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers_on(&server_bin(), &["2379", "6443"]).unwrap();
    let cgroup = TestCgroup::new().unwrap();
    let mut agent = Agent::start(&lab.lb, &config(&lab, &cgroup), &lab.lb_ifaces, "native").unwrap();
    assert!(agent.log_text().contains("connect hook attached on cgroup"), "{}", agent.log_text());
    let loopback: SocketAddr = "127.0.0.1:12379".parse().unwrap();
    let host: SocketAddr = SocketAddrV4::new(LB, 12380).into();
    let wildcard: SocketAddr = SocketAddrV4::new(LB, 16443).into();
    let wildcard_lo: SocketAddr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 16443).into();

    // 300 to each frontend land 100/100/100 on the real servers.
    for to in [loopback, host, wildcard, wildcard_lo] {
        let counts = spread(&local_connects(&lab, &cgroup, to, 300), to);
        for b in &lab.backends {
            assert_eq!(counts.get(&b.name), Some(&100), "{to}: {counts:?}");
        }
    }
    // Counted per server, as local connections (and nothing crossed XDP for them).
    let counters = Counters::open_pinned(agent.pin_dir()).unwrap();
    let ids: Vec<u32> = (1..=6).collect();
    assert_eq!(local_connections(&counters, &ids), 1200);
    // And shown per frontend on the status page (rebuilt every second).
    let want = [("etcd-local", 300), ("etcd-host", 300), ("apiserver", 600)];
    let start = Instant::now();
    loop {
        let snap = status(&lab);
        let got: Vec<(String, u64)> = snap.frontends.iter().map(|f| (f.name.clone(), f.traffic.local_flows)).collect();
        if want.iter().all(|(n, c)| got.contains(&((*n).to_string(), *c))) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "local connections on the page: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A client outside the hook's cgroup is not balanced: nothing listens on the frontend.
    let outside = sh(lab.lb.command(&client_bin()).arg(loopback.to_string()).arg("1")).unwrap();
    assert!(outside.starts_with("err refused"), "outside the cgroup: {outside}");

    // The hook outlives the agent: kill -9, local clients still balanced, the next agent
    // takes the pinned links over (same link, its own program).
    let pin = agent.pin_dir().join("link_connect4");
    let (link, prog) = link_ids(&pin);
    agent.kill9();
    let counts = spread(&local_connects(&lab, &cgroup, loopback, 30), loopback);
    assert_eq!(counts.values().sum::<usize>(), 30, "without an agent: {counts:?}");
    assert!(counts.values().all(|&n| n == 10), "without an agent: {counts:?}");
    let (dir, pin_dir) = (agent.dir.clone(), agent.pin_dir().to_path_buf());
    let cfg = std::fs::read_to_string(&agent.config).unwrap();
    std::mem::forget(agent);
    let agent = Agent::adopt(&lab.lb, &cfg, &lab.lb_ifaces, "native", &dir, &pin_dir).unwrap();
    assert!(agent.log_text().contains("connect hook adopted on cgroup"), "{}", agent.log_text());
    let (link2, prog2) = link_ids(&pin);
    assert_eq!(link2, link, "the pinned link is kept");
    assert_ne!(prog2, prog, "and runs the new agent's program");
    let counts = spread(&local_connects(&lab, &cgroup, host, 30), host);
    assert!(counts.values().all(|&n| n == 10) && counts.len() == 3, "after adoption: {counts:?}");

    // A DOWN server gets none.
    lab.backends[0].ns.kill_all();
    wait_down(&lab, &lab.backends[0].name);
    let counts = spread(&local_connects(&lab, &cgroup, loopback, 200), loopback);
    assert_eq!(counts.get(&lab.backends[0].name), None, "a DOWN server gets none: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 200);

    // No server UP: refused at once, ECONNREFUSED (a SYN sent nowhere would take a second
    // for its first retransmission; EPERM would be the hook's refusal without its errno).
    for b in &lab.backends[1..] {
        b.ns.kill_all();
    }
    for b in &lab.backends[1..] {
        wait_down(&lab, &b.name);
    }
    for to in [loopback, host, wildcard] {
        for s in local_connects(&lab, &cgroup, to, 20) {
            match s {
                Seen::Err { kind, micros, msg } => {
                    assert_eq!(kind, "refused", "{to}: {msg}");
                    assert!(micros < 200_000, "{to}: refused after {micros} us");
                }
                Seen::Ok { .. } => panic!("{to}: a connection with no server UP: {s:?}"),
            }
        }
    }
    let refused: u64 = counters
        .events()
        .unwrap()
        .into_iter()
        .filter(|(e, _)| *e == lb_common::Event::LocalRefused)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(refused, 60, "every refusal counted");
    drop(agent);
}

/// IPv6 sockets take the `connect6` hook: 300 connections to the balancer's IPv6 address land
/// 100/100/100 on the backend's IPv6 servers, and a dual-stack socket dialling the IPv4
/// frontend through an IPv4-mapped address (`::ffff:198.18.0.10`) goes to an IPv4 server,
/// mapped too; getpeername() says what was dialled, every time.
#[test]
fn ipv6_local_clients_are_balanced_by_connect6() {
    let lab = Lab::one_arm(3).unwrap();
    lab.dual_stack().unwrap();
    lab.start_servers(&server_bin(), 2379).unwrap();
    let cgroup = TestCgroup::new().unwrap();
    let check =
        format!("check = {{ type = \"tcp\", inter = \"{INTER_MS}ms\", fall = {FALL}, timeout = \"{TIMEOUT_MS}ms\" }}");
    let mut servers = Vec::new();
    for (i, b) in lab.backends.iter().enumerate() {
        servers.push(format!("{{ name = \"{}\", address = \"{}:2379\" }}", b.name, b.addr));
        servers.push(format!(
            "{{ name = \"{}-v6\", address = \"[{}]:2379\" }}",
            b.name,
            integration::lab::backend_addr6(i)
        ));
    }
    let config = format!(
        "[global]\nlocal_clients_cgroup = \"{}\"\n\n[[frontend]]\nname = \"etcd\"\nbind = \"*:12380\"\nbackend = \"etcd\"\n\n[[backend]]\nname = \"etcd\"\n{check}\nserver = [{}]\n",
        cgroup.path.display(),
        servers.join(", ")
    );
    let agent = Agent::start(&lab.lb, &config, &lab.lb_ifaces, "native").unwrap();
    let v6: SocketAddr = std::net::SocketAddrV6::new(integration::lab::LB6, 12380, 0, 0).into();
    let counts = spread(&local_connects(&lab, &cgroup, v6, 300), v6);
    for b in &lab.backends {
        assert_eq!(counts.get(&b.name), Some(&100), "{v6}: {counts:?}");
    }
    let mapped: SocketAddr = std::net::SocketAddrV6::new(LB.to_ipv6_mapped(), 12380, 0, 0).into();
    let counts = spread(&local_connects(&lab, &cgroup, mapped, 30), mapped);
    for b in &lab.backends {
        assert_eq!(counts.get(&b.name), Some(&10), "{mapped}: {counts:?}");
    }
    // Every one a local connection the hook made (none crossed XDP).
    let counters = Counters::open_pinned(agent.pin_dir()).unwrap();
    assert_eq!(local_connections(&counters, &(1..=6).collect::<Vec<u32>>()), 330);
}
