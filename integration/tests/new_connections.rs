//! New connections from many clients through xdplb, with servers that close first (and so hold
//! every backend-side tuple in TIME_WAIT): what the kernels count, not how long it took. The
//! backends' `TcpExtPAWSTimewait` is the SYN a server refused on a tuple in TIME_WAIT; the
//! clients' `TcpExtTCPSynRetrans` is what such a refusal costs a client (a second).
//! The kernel counts in `PAWSTimewait` any segment refused in TIME_WAIT by its timestamp, not
//! only SYNs: a client's ACK overtaken by its own FIN counts too. The lab keeps every flow in
//! order (`integration::netns::keep_flow_order`); before it did, 1 run in 8 under load counted one
//! such ACK (captured on the backends: the ACK of the server's data, TSval one below the FIN's,
//! 35 us behind it), with no SYN refused and no client retransmitting.

use std::{
    net::{SocketAddr, SocketAddrV4},
    sync::atomic::AtomicBool,
    time::Duration,
};

use integration::{
    agent::Agent,
    churn::{self, netstat, Load},
    lab::Lab,
    netns::NetNs,
};
use lb_common::{Event, Reason};
use lb_user::dataplane::counters::Counters;

/// The frontend; the backends' `close:` port (the server closes first).
const PORT: u16 = 12380;
const CLOSE_PORT: u16 = 2380;
/// The backends' `ctl:` port: the client says how the connection ends.
const CTL_PORT: u16 = 2382;

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

fn config(lab: &Lab, backend_port: u16, global: &str) -> String {
    integration::lab::config(lab, PORT, backend_port, global, &[])
        .replace("name = \"pool\"\n", "name = \"pool\"\ncheck = { type = \"none\" }\n")
}

fn sum(nss: &[&NetNs], name: &str) -> u64 {
    nss.iter().map(|ns| netstat(ns, name).unwrap()).sum()
}

fn events(c: &Counters) -> std::collections::HashMap<Event, u64> {
    c.events().unwrap().into_iter().collect()
}

fn reason(c: &Counters, r: Reason) -> u64 {
    c.reasons().unwrap().into_iter().find(|(k, _)| *k == r).unwrap().1
}

#[test]
fn four_clients_reuse_tuples_in_time_wait_without_a_single_refused_syn() {
    let lab = Lab::one_arm_clients(3, 4).unwrap();
    lab.start_servers_on(&server_bin(), &[&format!("close:{CLOSE_PORT}")]).unwrap();
    // 12000 NAT ports: every backend-side tuple comes back within seconds, while the server that
    // closed it still holds it in TIME_WAIT (60 s), and long after its hold (2 s).
    let agent =
        Agent::start(&lab.lb, &config(&lab, CLOSE_PORT, "nat_ports = \"40000-51999\""), &lab.lb_ifaces, "native")
            .unwrap();
    let counters = Counters::open_pinned(agent.pin_dir()).unwrap();
    let backends: Vec<&NetNs> = lab.backends.iter().map(|b| &b.ns).collect();
    let clients = lab.clients();
    let (paws0, retrans0) = (sum(&backends, "TcpExtPAWSTimewait"), sum(&clients, "TcpExtTCPSynRetrans"));
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    // At least 10 s, and until 5000 connections took a tuple in TIME_WAIT (at most 40 s, for a
    // slow machine).
    let load = Load { threads: 4, duration: Duration::from_secs(40), rate: None, request: Vec::new() };
    let stop = AtomicBool::new(false);
    let started = std::time::Instant::now();
    let result = std::thread::scope(|sc| {
        let hs: Vec<_> = clients
            .iter()
            .map(|c| {
                let (h, load, stop) = (c.handle(), &load, &stop);
                sc.spawn(move || churn::run(h, &[vip], load, stop))
            })
            .collect();
        while !hs.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(200));
            if started.elapsed() >= Duration::from_secs(10) && events(&counters)[&Event::PortReused] >= 5000 {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        hs.into_iter().map(|h| h.join().unwrap()).fold(churn::Churn::default(), churn::Churn::merge)
    });
    let seconds = started.elapsed().as_secs_f64();
    let paws = sum(&backends, "TcpExtPAWSTimewait") - paws0;
    let retrans = sum(&clients, "TcpExtTCPSynRetrans") - retrans0;
    let c = counters;
    let ev = events(&c);
    eprintln!(
        "4 clients, {seconds:.1} s: {} connections ({:.0}/s), {} failed, connect p50 {:.0} us p99 {:.0} us; backends PAWSTimewait {paws}, clients SynRetrans {retrans}; {ev:?} {:?}",
        result.ok, result.ok as f64 / seconds, result.failed, result.connect_quantile(0.5), result.connect_quantile(0.99), c.reasons().unwrap()
    );
    assert_eq!(result.failed, 0, "{:?}", result.failures);
    // The tuples really came back while in TIME_WAIT: more connections than tuples.
    assert!(ev[&Event::PortReused] >= 5000, "{} connections, {ev:?}", result.ok);
    assert_eq!(ev[&Event::TsTranslated], result.ok, "every connection had its timestamps translated");
    assert_eq!(paws, 0, "a server refused a SYN on a tuple in TIME_WAIT");
    assert_eq!(retrans, 0, "a client had to retransmit a SYN");
    assert_eq!(reason(&c, Reason::NoNatPort), 0);
}

#[test]
fn a_client_without_timestamps_within_its_port_budget_never_retransmits_and_beyond_it_is_counted() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers_on(&server_bin(), &[&format!("close:{CLOSE_PORT}")]).unwrap();
    lab.client.sysctl("net.ipv4.tcp_timestamps", "0").unwrap();
    // 40 ports for SYNs without timestamps x 3 servers, each held a whole TIME_WAIT (60 s) after
    // its server closed first: a budget of 2 connections a second.
    let global = "nat_ports = \"40000-40079\"\nno_timestamp_ports = 40";
    let agent = Agent::start(&lab.lb, &config(&lab, CLOSE_PORT, global), &lab.lb_ifaces, "native").unwrap();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    let retrans0 = netstat(&lab.client, "TcpExtTCPSynRetrans").unwrap();
    let stop = AtomicBool::new(false);
    let within = Load { threads: 1, duration: Duration::from_secs(5), rate: Some(2.0), request: Vec::new() };
    let r = churn::run(lab.client.handle(), &[vip], &within, &stop);
    let retrans = netstat(&lab.client, "TcpExtTCPSynRetrans").unwrap() - retrans0;
    let c = Counters::open_pinned(agent.pin_dir()).unwrap();
    eprintln!("within the budget: {} connections, {} failed, SynRetrans {retrans}, {:?}", r.ok, r.failed, events(&c));
    assert!(r.ok >= 8 && r.failed == 0, "{r:?}");
    assert_eq!(retrans, 0);
    assert_eq!(events(&c)[&Event::TsTranslated], 0, "nothing to translate");

    // Far beyond it: the held ports are counted, and so are the SYNs that found none.
    let beyond = Load { threads: 4, duration: Duration::from_secs(4), rate: None, request: Vec::new() };
    let r = churn::run(lab.client.handle(), &[vip], &beyond, &stop);
    let ev = events(&c);
    eprintln!(
        "beyond the budget: {} connections, {} failed, no_nat_port {}, {ev:?}",
        r.ok,
        r.failed,
        reason(&c, Reason::NoNatPort)
    );
    assert!(r.ok <= 120, "at most one connection per tuple within TIME_WAIT: {}", r.ok);
    assert!(ev[&Event::PortHeld] > 0 && reason(&c, Reason::NoNatPort) > 0, "{ev:?}");
}

/// How a connection through the one tuple ends.
#[derive(Clone, Copy, Debug)]
enum Close {
    ServerFirst,
    ClientFirst,
    ServerResets,
    ClientResets,
}

fn through_the_one_tuple(lab: &Lab, close: Close) {
    use std::io::{Read, Write};
    let addr: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    lab.client.enter(|| {
        let (mut s, _) = integration::traffic::connect(addr).unwrap();
        let mut rest = Vec::new();
        match close {
            Close::ServerFirst | Close::ServerResets => {
                s.write_all(if matches!(close, Close::ServerFirst) { b"close\n" } else { b"rst\n" }).unwrap();
                let _ = s.read_to_end(&mut rest);
            }
            Close::ClientFirst => {
                s.write_all(b"echo\n").unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                s.read_to_end(&mut rest).unwrap();
            }
            Close::ClientResets => {
                s.write_all(b"echo\nbye\n").unwrap();
                let mut b = [0u8; 4];
                s.read_exact(&mut b).unwrap();
                integration::traffic::reset(s).unwrap();
            }
        }
    });
}

#[test]
fn a_tuple_reused_after_each_kind_of_close_gets_a_syn_the_server_takes() {
    let lab = Lab::one_arm(1).unwrap();
    lab.start_servers_on(&server_bin(), &[&format!("ctl:{CTL_PORT}")]).unwrap();
    // One NAT port: every connection takes the same backend-side tuple.
    let agent = Agent::start(&lab.lb, &config(&lab, CTL_PORT, "nat_ports = \"40000-40000\""), &lab.lb_ifaces, "native")
        .unwrap();
    let c = Counters::open_pinned(agent.pin_dir()).unwrap();
    let backend = &lab.backends[0].ns;
    let (paws0, retrans0) =
        (netstat(backend, "TcpExtPAWSTimewait").unwrap(), netstat(&lab.client, "TcpExtTCPSynRetrans").unwrap());
    // Each close order, then the next connection on the same tuple once its hold (2 s) passed.
    let orders = [
        Close::ServerFirst,
        Close::ClientFirst,
        Close::ServerResets,
        Close::ClientResets,
        Close::ServerFirst,
        Close::ServerFirst,
    ];

    for (i, close) in orders.into_iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(2300));
        }
        through_the_one_tuple(&lab, close);
    }
    let ev = events(&c);
    let paws = netstat(backend, "TcpExtPAWSTimewait").unwrap() - paws0;
    let retrans = netstat(&lab.client, "TcpExtTCPSynRetrans").unwrap() - retrans0;
    eprintln!("PAWSTimewait {paws}, SynRetrans {retrans}, {ev:?} {:?}", c.reasons().unwrap());

    assert_eq!(
        ev[&Event::PortReused],
        orders.len() as u64 - 1,
        "every connection after the first took the one tuple again"
    );
    assert_eq!((paws, retrans), (0, 0), "the server took every SYN at once");
    assert_eq!(reason(&c, Reason::NoNatPort), 0);
}
