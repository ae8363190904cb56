//! HAProxy's balance algorithms end to end on the one-arm lab, in the XDP program:
//! `leastconn` gives a server back from DOWN the new flows until it has its share of the
//! long-lived ones; `source` keeps a client address on one server across connections and moves
//! it only when that server goes DOWN (and back when it is UP again), leaving other clients be.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    time::Duration,
};

use integration::{
    agent::Agent,
    lab::{self, Lab},
    netns::NetNs,
    traffic::connect,
};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;
/// Checks every 500 ms, two to change state: DOWN or UP within a couple of seconds.
const INTER: Duration = Duration::from_millis(500);
const FALL_RISE: u32 = 2;

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

fn config(lab: &Lab, balance: &str) -> String {
    lab::config(lab, PORT, BACKEND_PORT, "", &[]).replace(
        "name = \"pool\"\n",
        &format!(
            "name = \"pool\"\nbalance = \"{balance}\"\ncheck = {{ type = \"tcp\", inter = \"500ms\", rise = {FALL_RISE}, fall = {FALL_RISE} }}\n"
        ),
    )
}

/// How long a state change may take: `fall` (or `rise`) checks, each up to its timeout and an
/// interval apart, and a margin of as many again for a loaded machine.
fn state_change() -> Duration {
    INTER * 2 * (FALL_RISE + 1) * 2
}

/// `n` connections from `ns`, held open; the server each landed on.
fn open(ns: &NetNs, vip: SocketAddr, n: usize) -> (Vec<TcpStream>, Vec<String>) {
    ns.enter(|| (0..n).map(|_| connect(vip).unwrap()).unzip())
}

fn tally(names: &[String]) -> BTreeMap<String, usize> {
    names.iter().fold(BTreeMap::new(), |mut m, n| {
        *m.entry(n.clone()).or_default() += 1;
        m
    })
}

#[test]
fn leastconn_gives_a_server_back_from_down_the_new_flows_until_it_has_its_share() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_server(0, &server_bin(), BACKEND_PORT).unwrap();
    lab.start_server(2, &server_bin(), BACKEND_PORT).unwrap();
    let mut agent = Agent::start(&lab.lb, &config(&lab, "leastconn"), &lab.lb_ifaces, "native").unwrap();
    agent.wait_log("Server pool/app2 is DOWN", 1, state_change()).unwrap();
    let vip = SocketAddrV4::new(lab.vip, PORT).into();

    // 20 long-lived connections over the two UP servers: ties go in turn.
    let (streams, names) = open(&lab.client, vip, 20);
    assert_eq!(tally(&names), BTreeMap::from([("app1".into(), 10), ("app3".into(), 10)]));
    let mut held: Vec<(TcpStream, String)> = streams.into_iter().zip(names).collect();

    // app2 comes back (a restarted apiserver): it has none of the open connections, so the
    // next 10 are all its own, and after that the three share in turn.
    lab.start_server(1, &server_bin(), BACKEND_PORT).unwrap();
    agent.wait_log("Server pool/app2 is UP", 1, state_change()).unwrap();
    let (streams, names) = open(&lab.client, vip, 10);
    assert_eq!(tally(&names), BTreeMap::from([("app2".into(), 10)]), "the restarted server takes the new flows");
    held.extend(streams.into_iter().zip(names));
    let (streams, names) = open(&lab.client, vip, 3);
    assert_eq!(
        tally(&names),
        BTreeMap::from([("app1".into(), 1), ("app2".into(), 1), ("app3".into(), 1)]),
        "then every server in turn"
    );
    held.extend(streams.into_iter().zip(names));

    // Connections that end count no more: app1's close, and app1 takes the next ones.
    held.retain(|(_, name)| name != "app1");
    std::thread::sleep(Duration::from_millis(300));
    let (_streams, names) = open(&lab.client, vip, 5);
    assert_eq!(tally(&names), BTreeMap::from([("app1".into(), 5)]), "the server whose flows ended takes the next");
}

#[test]
fn source_keeps_a_client_on_its_server_until_that_server_goes_down() {
    let lab = Lab::one_arm_clients(3, 6).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let mut agent = Agent::start(&lab.lb, &config(&lab, "source"), &lab.lb_ifaces, "native").unwrap();
    agent.wait_log("ready:", 1, Duration::from_secs(10)).unwrap();
    let vip = SocketAddrV4::new(lab.vip, PORT).into();
    let hosts: Vec<&NetNs> = std::iter::once(&lab.client).chain(lab.more_clients.iter().map(|(ns, _)| ns)).collect();

    // Each client host lands on one server, connection after connection (100 for the first).
    let server_of = |ns: &NetNs, n: usize| -> String {
        let names: BTreeSet<String> = (0..n).map(|_| open(ns, vip, 1).1.remove(0)).collect();
        assert_eq!(names.len(), 1, "one client address, one server: {names:?}");
        names.into_iter().next().unwrap()
    };
    let before: Vec<String> =
        hosts.iter().enumerate().map(|(i, ns)| server_of(ns, if i == 0 { 100 } else { 20 })).collect();
    let spread: BTreeSet<&String> = before.iter().collect();
    assert!(spread.len() > 1, "six client addresses all hashed to one server: {before:?}");

    // The first client's server goes DOWN: that client moves; the others on other servers stay.
    let victim = before[0].clone();
    let i = lab.backends.iter().position(|b| b.name == victim).unwrap();
    lab.backends[i].ns.kill_all();
    agent.wait_log(&format!("Server pool/{victim} is DOWN"), 1, state_change()).unwrap();
    let during: Vec<String> = hosts.iter().map(|ns| server_of(ns, 20)).collect();
    for (h, (b, d)) in before.iter().zip(&during).enumerate() {
        if *b == victim {
            assert_ne!(d, &victim, "client {h} still sent to its DOWN server");
        } else {
            assert_eq!(d, b, "client {h} moved though its server {b} stayed UP");
        }
    }

    // UP again: every client is back where it was.
    lab.start_server(i, &server_bin(), BACKEND_PORT).unwrap();
    agent.wait_log(&format!("Server pool/{victim} is UP"), 1, state_change()).unwrap();
    let after: Vec<String> = hosts.iter().map(|ns| server_of(ns, 20)).collect();
    assert_eq!(after, before, "the set is the same again, and so is every client's server");
}
