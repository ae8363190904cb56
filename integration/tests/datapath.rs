//! End to end on real veth links in network namespaces: a client, the balancer running the
//! real agent and XDP program, and three echo backends; one-arm (native and generic XDP) and
//! routed (client behind a router, two interfaces on the balancer, XDP_REDIRECT between them).

use std::{
    net::{SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use integration::{
    agent::Agent,
    lab::{self, Lab},
    traffic::{connect, parallel_echo, ping, spread, wait_table_empty},
};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;
const GLOBAL: &str = "close_linger = \"1s\"\ngc_interval = \"200ms\"\nsyn_timeout = \"3s\"";

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

fn scenario(lab: &Lab, mode: &str) -> Agent {
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let config = lab::config(lab, PORT, BACKEND_PORT, GLOBAL, &[]);
    let mut agent = Agent::start(&lab.lb, &config, &lab.lb_ifaces, mode).unwrap();
    assert!(agent.log_text().contains(&format!("in {mode} mode")), "attached in {mode} mode:\n{}", agent.log_text());
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();

    // 300 sequential connections land 100/100/100.
    let counts = spread(&lab.client, vip, 300);
    for b in &lab.backends {
        assert_eq!(counts.get(&b.name), Some(&100), "round-robin split: {counts:?}");
    }

    // 32 parallel 16 MiB echo transfers arrive intact.
    let started = Instant::now();
    let names = parallel_echo(&lab.client, vip, 32, 16 << 20, 0x5eed);
    for n in &names {
        assert!(n.is_ok(), "transfer failed: {n:?}");
    }
    eprintln!("32 x 16 MiB echoed through xdplb ({mode}) in {:?}", started.elapsed());

    // Once every connection has closed and the linger passed, the table is empty again.
    wait_table_empty(agent.pin_dir(), Duration::from_secs(15)).unwrap();

    // A server removed from the map gets no new flow; its open flows keep working.
    lab.client.enter(|| {
        let mut open: Vec<_> = (0..3).map(|_| connect(vip).unwrap()).collect();
        let victim = lab.backends[2].name.clone();
        assert!(open.iter().any(|(_, n)| *n == victim), "three new flows reach all three servers");
        agent.reload(&lab::config(lab, PORT, BACKEND_PORT, GLOBAL, &[&victim])).unwrap();
        for _ in 0..30 {
            let (_s, name) = connect(vip).unwrap();
            assert_ne!(name, victim, "no new flow to a removed server");
        }
        for (s, name) in open.iter_mut() {
            ping(s, "still there?\n").unwrap_or_else(|e| panic!("open flow to {name} broke: {e}"));
        }
    });
    agent
}

#[test]
fn one_arm_native() {
    scenario(&Lab::one_arm(3).unwrap(), "native");
}

#[test]
fn one_arm_generic() {
    scenario(&Lab::one_arm(3).unwrap(), "generic");
}

/// Generic mode runs after GRO: on an interface that merges received segments, XDP would see
/// merged segments larger than the MTU with partial checksums (the pseudo-header's only), and
/// rewrite them wrongly. The agent turns GRO off there (said in its log, recorded), traffic flows
/// intact, and `xdplb detach` turns it back on. (veth in this lab did not merge the segments
/// even with GRO on: XDP ran once per wire segment, so the corruption itself is not shown here;
/// the test holds the setting and its undo.)
#[test]
fn one_arm_generic_on_an_interface_with_gro() {
    let lab = Lab::one_arm(3).unwrap();
    let gro = || {
        let k = lab.lb.exec(&["ethtool", "-k", "eth0"]).unwrap();
        k.lines().find_map(|l| l.strip_prefix("generic-receive-offload: ")).unwrap_or_default().to_owned()
    };
    lab.lb.exec(&["ethtool", "-K", "eth0", "gro", "on"]).unwrap();
    assert_eq!(gro(), "on");
    let agent = scenario(&lab, "generic");
    assert_eq!(gro(), "off", "GRO on an interface in generic mode");
    assert!(agent.log_text().contains("eth0 is in generic mode: GRO turned off"), "{}", agent.log_text());
    let pins = agent.stop_keep_pins();
    let out = lab
        .lb
        .command(&integration::agent::xdplb_bin().unwrap())
        .args(["detach", "--pin-dir"])
        .arg(&pins)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("eth0: gro on (restored)"), "{text}");
    assert_eq!(gro(), "on", "detach turned GRO back on");
    integration::agent::remove_data_path(&pins);
}

#[test]
fn routed_two_interfaces_native() {
    scenario(&Lab::routed(3).unwrap(), "native");
}
