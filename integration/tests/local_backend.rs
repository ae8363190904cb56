//! A local backend (issue 11): the first server of the pool is the balancer host itself (the
//! co-located etcd member or apiserver). XDP translates its flows' destination only; the
//! server answers the client's own address, through the host's stack, where the tc egress
//! program gives the replies the frontend's address back. A remote client through XDP: 300
//! connections land 100/100/100, 8 parallel 16 MiB transfers arrive intact, the connection
//! table empties, and no server flaps.

use std::{
    net::{SocketAddr, SocketAddrV4},
    time::Duration,
};

use integration::{
    agent::Agent,
    lab::{self, Lab, LB},
    traffic::{parallel_echo, spread, wait_table_empty},
};
use lb_user::report::snapshot::Snapshot;

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

fn status(lab: &Lab) -> Snapshot {
    lab.lb.enter(|| lb_user::report::http::fetch("127.0.0.1:8404".parse().unwrap())).expect("status page")
}

fn local_backend(mode: &str) {
    let lab = Lab::one_arm(3).unwrap();
    // app1's place is taken by a server on the balancer itself.
    for i in 1..3 {
        lab.start_server(i, &server_bin(), BACKEND_PORT).unwrap();
    }
    lab::serve(&lab.lb, "lb", &server_bin(), &[&BACKEND_PORT.to_string()]).unwrap();
    let servers = [
        ("lb".to_string(), LB),
        (lab.backends[1].name.clone(), lab.backends[1].addr),
        (lab.backends[2].name.clone(), lab.backends[2].addr),
    ];
    let list: Vec<String> =
        servers.iter().map(|(n, a)| format!("{{ name = \"{n}\", address = \"{a}:{BACKEND_PORT}\" }}")).collect();
    let config = format!(
        "[global]\nclose_linger = \"1s\"\ngc_interval = \"200ms\"\nlocal_clients = false\n\n[[frontend]]\nname = \"front\"\nbind = \"*:{PORT}\"\nbackend = \"pool\"\n\n[[backend]]\nname = \"pool\"\ncheck = {{ type = \"tcp\", inter = \"300ms\" }}\nserver = [{}]\n",
        list.join(", ")
    );
    let agent = Agent::start(&lab.lb, &config, &lab.lb_ifaces, mode).unwrap();
    assert!(
        agent.log_text().contains("egress translation for servers on this host attached on eth0"),
        "{}",
        agent.log_text()
    );
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();

    let counts = spread(&lab.client, vip, 300);
    for (name, _) in &servers {
        assert_eq!(counts.get(name), Some(&100), "round-robin split with a local server: {counts:?}");
    }

    let names = parallel_echo(&lab.client, vip, 8, 16 << 20, 0x10ca1);
    for n in &names {
        assert!(n.is_ok(), "transfer failed: {n:?}");
    }
    assert!(
        names.iter().any(|n| n.as_deref().ok() == Some("lb")),
        "some transfers went to the local server: {names:?}"
    );

    // Every flow closed, the local ones too (their server's FIN was seen on the way out).
    wait_table_empty(agent.pin_dir(), Duration::from_secs(15)).unwrap();

    // No server flapped: no failed check, no DOWN, and the local server took its share.
    let snap = status(&lab);
    for s in &snap.backends[0].servers {
        assert_eq!((s.check_failures, s.down_transitions), (0, 0), "{} flapped: {s:?}", s.name);
    }
    let lb = snap.backends[0].servers.iter().find(|s| s.name == "lb").unwrap();
    assert!(lb.traffic.total_flows >= 100, "the local server's flows counted: {lb:?}");
    assert!(lb.traffic.bytes_out > 16 << 20, "its replies counted on the way out: {lb:?}");
}

#[test]
fn local_backend_native() {
    local_backend("native");
}
