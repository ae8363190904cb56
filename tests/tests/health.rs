//! Health checks end to end: the real agent checking real servers in namespaces; a server that
//! dies goes DOWN in time and gets no new flow, comes back UP after `rise` passes and gets flows
//! again, and the kernel's set follows each decision within 10 ms.

use std::{
    collections::HashMap,
    net::{SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use lb_user::snapshot::{ServerState, Snapshot};
use tests::{agent::Agent, lab::{self, Lab}, traffic::connect};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;
const INTER_MS: u64 = 300;
const FALL: u64 = 3;
const RISE: u64 = 2;
const TIMEOUT_MS: u64 = 300;

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

fn config(lab: &Lab) -> String {
    lab::config(lab, PORT, BACKEND_PORT, "close_linger = \"1s\"\ngc_interval = \"200ms\"", &[]).replace(
        "name = \"pool\"\n",
        &format!(
            "name = \"pool\"\ncheck = {{ type = \"tcp\", inter = \"{INTER_MS}ms\", rise = {RISE}, fall = {FALL}, timeout = \"{TIMEOUT_MS}ms\", initial_state = \"down\" }}\n"
        ),
    )
}

fn status(lab: &Lab) -> Snapshot {
    lab.lb.enter(|| lb_user::status::fetch("127.0.0.1:8404".parse().unwrap())).expect("status page")
}

fn server_state(lab: &Lab, name: &str) -> ServerState {
    status(lab).backends[0].servers.iter().find(|s| s.name == name).unwrap().state
}

fn wait_state(lab: &Lab, name: &str, want: ServerState, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if server_state(lab, name) == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{name} not {want:?} after {within:?}: {:?}", status(lab).backends[0].servers);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spread(lab: &Lab, vip: SocketAddr, n: usize) -> HashMap<String, usize> {
    lab.client.enter(|| {
        let mut m = HashMap::new();
        for _ in 0..n {
            let (_s, name) = connect(vip).expect("connect through the balancer");
            *m.entry(name).or_insert(0) += 1;
        }
        m
    })
}

/// Microseconds from each decision to the kernel update, from the agent's log.
fn map_latencies(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split("Kernel set updated ").nth(1))
        .filter_map(|r| r.split("us").next()?.parse().ok())
        .collect()
}

#[test]
fn a_dead_server_goes_down_in_time_and_comes_back() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let mut agent = Agent::start(&lab.lb, &config(&lab), &lab.lb_ifaces, "native").unwrap();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();

    // initial_state = "down": UP only after `rise` passing checks.
    for b in &lab.backends {
        wait_state(&lab, &b.name, ServerState::Up, Duration::from_millis(RISE * INTER_MS + 2000));
    }
    let all = spread(&lab, vip, 30);
    assert_eq!(all.values().copied().collect::<Vec<_>>(), vec![10, 10, 10], "{all:?}");

    // Kill app3's server: DOWN within inter * fall plus one timeout.
    let victim = &lab.backends[2];
    let killed = Instant::now();
    victim.ns.kill_all();
    let limit = Duration::from_millis(INTER_MS * FALL + TIMEOUT_MS);
    let took = wait_state(&lab, &victim.name, ServerState::Down, limit + Duration::from_millis(500));
    eprintln!("{} DOWN {:?} after the kill (limit inter*fall+timeout = {limit:?})", victim.name, killed.elapsed());
    assert!(took <= limit + Duration::from_millis(100), "DOWN after {took:?}, limit {limit:?}");
    agent.wait_log(&format!("Server pool/{} is DOWN, reason: Layer4 connection problem", victim.name), 1, Duration::from_secs(2)).unwrap();
    let after_down = spread(&lab, vip, 30);
    assert!(!after_down.contains_key(&victim.name), "no new flow to a DOWN server: {after_down:?}");
    assert_eq!(after_down.values().sum::<usize>(), 30);

    // Back: UP after `rise` passes, and it takes flows again.
    lab.start_server(2, &server_bin(), BACKEND_PORT).unwrap();
    let took = wait_state(&lab, &victim.name, ServerState::Up, Duration::from_millis(RISE * INTER_MS * 2 + 1000));
    eprintln!("{} UP {took:?} after its restart", victim.name);
    agent.wait_log(&format!("Server pool/{} is UP", victim.name), 1, Duration::from_secs(2)).unwrap();
    let back = spread(&lab, vip, 30);
    assert_eq!(back.get(&victim.name), Some(&10), "{back:?}");

    // Every decision reached the kernel within 10 ms.
    let lat = map_latencies(&agent.log_text());
    assert!(lat.len() >= 5, "3 initial UPs, one DOWN, one UP logged: {lat:?}");
    assert!(lat.iter().all(|&us| us < 10_000), "decision to kernel: {lat:?} us");
    eprintln!("decision -> kernel set update: {lat:?} us");

    // The status page, the metrics and `xdplb status` tell the story.
    let snap = status(&lab);
    let s3 = snap.backends[0].servers.iter().find(|s| s.name == victim.name).unwrap();
    assert_eq!((s3.down_transitions, s3.status.as_str()), (1, "UP"));
    assert!(s3.check_failures >= FALL);
    let metrics = lab.lb.enter(|| http_get("/metrics"));
    assert!(metrics.contains(&format!("haproxy_server_status{{proxy=\"pool\",server=\"{}\",state=\"UP\"}} 1", victim.name)), "{metrics}");
    let table = tests::netns::sh(lab.lb.command(&tests::agent::xdplb_bin().unwrap()).arg("status")).unwrap();
    assert!(table.contains(&victim.name) && table.contains("L4OK"), "{table}");
}

fn http_get(path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect("127.0.0.1:8404").unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
