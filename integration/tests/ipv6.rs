//! IPv6 and dual stack end to end on the one-arm lab with IPv6 addresses from 2001:2::/48: one
//! `*:PORT` frontend serves IPv4 clients from the backend's IPv4 servers and IPv6 clients from
//! its IPv6 servers (no translation between families), through the real IPv6 data path
//! (`xdplb6` and its stage programs), with health checks over both families.

use std::{
    net::{SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream},
    time::Duration,
};

use integration::{
    agent::Agent,
    lab::{self, Lab},
    traffic::{connect, parallel_echo, ping, spread, wait_table_empty},
};
use lb_common::Reason;
use lb_user::dataplane::{counters::Counters, flows::FlowTable};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;
const INTER: Duration = Duration::from_millis(300);

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

/// One `*:PORT` frontend; its backend has each lab server twice, once per family (the same
/// process answers both, and names itself).
fn config(lab: &Lab) -> String {
    let mut servers = Vec::new();
    for (i, b) in lab.backends.iter().enumerate() {
        servers.push(format!("  {{ name = \"{}\", address = \"{}:{BACKEND_PORT}\" }},", b.name, b.addr));
        servers.push(format!(
            "  {{ name = \"{}-v6\", address = \"[{}]:{BACKEND_PORT}\" }},",
            b.name,
            lab::backend_addr6(i)
        ));
    }
    format!(
        "[global]\nclose_linger = \"1s\"\ngc_interval = \"200ms\"\nsyn_timeout = \"3s\"\n\n[[frontend]]\nname = \"front\"\nbind = \"*:{PORT}\"\nbackend = \"pool\"\n\n[[backend]]\nname = \"pool\"\ncheck = {{ type = \"tcp\", inter = \"300ms\", rise = 1, fall = 1 }}\nserver = [\n{}\n]\n",
        servers.join("\n")
    )
}

fn reason(c: &Counters, r: Reason) -> u64 {
    c.reasons().unwrap().into_iter().find(|(x, _)| *x == r).map_or(0, |(_, n)| n)
}

#[test]
fn a_dual_stack_frontend_serves_each_family_from_its_servers() {
    let lab = Lab::one_arm(3).unwrap();
    lab.dual_stack().unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let agent = Agent::start(&lab.lb, &config(&lab), &lab.lb_ifaces, "native").unwrap();
    let v4: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    let v6: SocketAddr = SocketAddrV6::new(lab::LB6, PORT, 0, 0).into();
    let counters = Counters::open_pinned(agent.pin_dir()).unwrap();
    let new_flows = reason(&counters, Reason::NewFlow);

    // 300 sequential connections per family land 100/100/100 on that family's servers.
    for (family, vip) in [("IPv4", v4), ("IPv6", v6)] {
        let counts = spread(&lab.client, vip, 300);
        for b in &lab.backends {
            assert_eq!(counts.get(&b.name), Some(&100), "{family} round robin: {counts:?}");
        }
    }
    // Every one of them was a flow the data path opened (not the kernel's: nothing listens on
    // the balancer's port), 600 in all.
    assert_eq!(reason(&counters, Reason::NewFlow) - new_flows, 600);

    // 8 parallel 16 MiB echo transfers per family arrive intact (each byte checked).
    for (family, vip, seed) in [("IPv4", v4, 0x4444), ("IPv6", v6, 0x6666)] {
        for r in parallel_echo(&lab.client, vip, 8, 16 << 20, seed) {
            assert!(r.is_ok(), "{family} transfer failed: {r:?}");
        }
    }

    // An open IPv6 flow is in the IPv6 table, client to frontend, NAT source to server.
    lab.client.enter(|| {
        let (mut s, name) = connect(v6).unwrap();
        let flows = FlowTable::open_pinned(agent.pin_dir()).unwrap().flows();
        // This connection's flow (the echo transfers' may still linger beside it).
        let me = s.local_addr().unwrap();
        let f = flows
            .iter()
            .find(|f| f.frontend == v6 && f.client == me)
            .unwrap_or_else(|| panic!("no IPv6 flow from {me} in {flows:?}"));
        assert_eq!(f.client.ip(), std::net::IpAddr::V6(lab::CLIENT6));
        assert_eq!(f.source.ip(), std::net::IpAddr::V6(lab::LB6), "full NAT: the balancer's IPv6 address");
        let i = lab.backends.iter().position(|b| b.name == name).unwrap();
        assert_eq!(f.server, SocketAddrV6::new(lab::backend_addr6(i), BACKEND_PORT, 0, 0).into());
        ping(&mut s, "dual stack\n").unwrap();
    });

    // Both families' tables empty again once the connections closed and lingered.
    wait_table_empty(agent.pin_dir(), Duration::from_secs(15)).unwrap();
}

#[test]
fn an_ipv6_syn_with_no_server_up_is_refused_by_the_data_path() {
    let lab = Lab::one_arm(3).unwrap();
    lab.dual_stack().unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let mut agent = Agent::start(&lab.lb, &config(&lab), &lab.lb_ifaces, "native").unwrap();
    let v6: SocketAddr = SocketAddrV6::new(lab::LB6, PORT, 0, 0).into();
    assert_eq!(spread(&lab.client, v6, 3).len(), 3, "served while its servers are UP");

    for b in &lab.backends {
        b.ns.kill_all();
    }
    // Every check fails once (fall = 1): each server goes DOWN within two intervals and a
    // connect timeout; a margin of as much again for a loaded machine.
    for b in &lab.backends {
        agent.wait_log(&format!("Server pool/{}-v6 is DOWN", b.name), 1, INTER * 8 + Duration::from_secs(4)).unwrap();
    }
    let counters = Counters::open_pinned(agent.pin_dir()).unwrap();
    let before = reason(&counters, Reason::NoBackend);
    let r = lab.client.enter(|| TcpStream::connect_timeout(&v6, Duration::from_secs(3)));
    let err = r.expect_err("no IPv6 server is UP");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(reason(&counters, Reason::NoBackend) - before, 1, "the IPv6 data path answered the SYN with RST");
}
