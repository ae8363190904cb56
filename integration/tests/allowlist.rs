//! A frontend's `allow` list end to end: a client from a listed network connects, one from
//! another address of the lab does not (its SYNs are dropped in XDP and counted as
//! `not_allowed`), and a reload that removes the list lets it in.

use std::{
    net::{SocketAddr, SocketAddrV4, TcpStream},
    time::Duration,
};

use integration::{
    agent::Agent,
    lab::{self, Lab},
    traffic::connect,
};
use lb_common::Reason;
use lb_user::dataplane::counters::Counters;

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;

fn reason(agent: &Agent, which: Reason) -> u64 {
    let counters = Counters::open_pinned(agent.pin_dir()).unwrap();
    counters.reasons().unwrap().into_iter().find(|(r, _)| *r == which).map_or(0, |(_, n)| n)
}

/// The agent's `/metrics` (the lab's status page on its default address).
fn metrics() -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect("127.0.0.1:8404").unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn allowlist_admits_listed_sources_and_drops_and_counts_the_rest() {
    let lab = Lab::one_arm_clients(2, 2).unwrap();
    lab.start_servers(env!("CARGO_BIN_EXE_lbtest-server"), BACKEND_PORT).unwrap();
    let (other, other_addr) = &lab.more_clients[0];
    let open = lab::config(&lab, PORT, BACKEND_PORT, "", &[]);
    // The first client's address only (198.18.0.1), as a /32 beside a network the lab is not in.
    let listed = open.replace(
        "backend = \"pool\"\n\n[[backend]]",
        "backend = \"pool\"\nallow = [\"198.18.0.1/32\", \"10.0.0.0/8\"]\n\n[[backend]]",
    );
    assert_ne!(listed, open, "the allow list is in the configuration");
    let mut agent = Agent::start(&lab.lb, &listed, &lab.lb_ifaces, "native").unwrap();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();

    let flows_before = reason(&agent, Reason::NewFlow);
    for _ in 0..5 {
        let (_s, name) = lab.client.enter(|| connect(vip)).unwrap();
        assert!(name.starts_with("app"), "{name}");
    }
    assert_eq!(reason(&agent, Reason::NewFlow) - flows_before, 5, "the listed client's five connections");

    // The other client (198.18.0.2): its SYN and the kernel's retransmits go unanswered.
    let dropped_before = reason(&agent, Reason::NotAllowed);
    let refused = other.enter(|| TcpStream::connect_timeout(&vip, Duration::from_millis(2500)));
    assert!(refused.is_err(), "{other_addr} is not listed, yet connected");
    let dropped = reason(&agent, Reason::NotAllowed) - dropped_before;
    // The first SYN and its retransmission after 1 s, within the 2.5 s timeout.
    assert!((1..=3).contains(&dropped), "{dropped} SYNs counted as not_allowed");
    assert_eq!(reason(&agent, Reason::NewFlow) - flows_before, 5, "no flow for the unlisted client");
    // The frontend counts them too (the lab's one frontend), and /metrics says so in HAProxy's
    // name once its next snapshot is taken.
    let counters = Counters::open_pinned(agent.pin_dir()).unwrap();
    let per_frontend: u64 = (0..lb_common::MAX_FRONTENDS).map(|id| counters.frontend(id).unwrap().denied).sum();
    assert_eq!(per_frontend, dropped, "per frontend as per reason");
    let want = format!("haproxy_frontend_denied_connections_total{{proxy=\"front\"}} {dropped}\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut shown = lab.lb.enter(metrics);
    while !shown.contains(&want) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        shown = lab.lb.enter(metrics);
    }
    assert!(shown.contains(&want), "missing {want:?} in:\n{shown}");

    // The listed client still connects; then the list goes, and the other client gets in.
    lab.client.enter(|| connect(vip)).unwrap();
    agent.reload(&open).unwrap();
    let (_s, name) = other.enter(|| connect(vip)).unwrap();
    assert!(name.starts_with("app"), "{name}");
    assert_eq!(reason(&agent, Reason::NotAllowed) - dropped_before, dropped, "nothing dropped once the list is gone");
}
