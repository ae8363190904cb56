//! Health checks end to end: the real agent checking real servers in namespaces; a server that
//! dies goes DOWN in time and gets no new flow, comes back UP after `rise` passes and gets flows
//! again, and the kernel's set follows each decision within 10 ms.

use std::{
    collections::HashMap,
    net::{SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use integration::{
    agent::Agent,
    lab::{self, Lab},
    traffic::connect,
};
use lb_user::report::snapshot::{ServerState, Snapshot};

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
    lab.lb.enter(|| lb_user::report::http::fetch("127.0.0.1:8404".parse().unwrap())).expect("status page")
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
        assert!(
            start.elapsed() < within,
            "{name} not {want:?} after {within:?}: {:?}",
            status(lab).backends[0].servers
        );
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

/// Microseconds from each decision to the kernel update, and of those the agent's own (from
/// taking the result to the map written), from the agent's log.
fn map_latencies(log: &str) -> Vec<(u64, u64)> {
    log.lines()
        .filter_map(|l| l.split("Kernel set updated ").nth(1))
        .filter_map(|r| {
            let total = r.split("us").next()?.parse().ok()?;
            let apply = r.split(" (").nth(1)?.split("us").next()?.parse().ok()?;
            Some((total, apply))
        })
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
    agent
        .wait_log(
            &format!("Server pool/{} is DOWN, reason: Layer4 connection problem", victim.name),
            1,
            Duration::from_secs(2),
        )
        .unwrap();
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

    // Every decision reached the kernel: the agent's own part (result taken to map written)
    // within 10 ms, and the whole way (the result queued behind nothing the agent does, only the
    // scheduler of a loaded machine) well within one interval, before the next check decides.
    let lat = map_latencies(&agent.log_text());
    assert!(lat.len() >= 5, "3 initial UPs, one DOWN, one UP logged: {lat:?}");
    assert!(lat.iter().all(|&(_, apply)| apply < 10_000), "result to kernel: {lat:?} us");
    assert!(lat.iter().all(|&(total, _)| total < INTER_MS * 1000 / 2), "decision to kernel: {lat:?} us");
    eprintln!("decision -> kernel set update (applying): {lat:?} us");

    // The status page, the metrics and `xdplb status` tell the story.
    let snap = status(&lab);
    let s3 = snap.backends[0].servers.iter().find(|s| s.name == victim.name).unwrap();
    assert_eq!((s3.down_transitions, s3.status().as_str()), (1, "UP"));
    assert!(s3.check_failures >= FALL);
    let metrics = lab.lb.enter(|| http_get("/metrics"));
    assert!(
        metrics.contains(&format!("haproxy_server_status{{proxy=\"pool\",server=\"{}\",state=\"UP\"}} 1", victim.name)),
        "{metrics}"
    );
    let table =
        integration::netns::sh(lab.lb.command(&integration::agent::xdplb_bin().unwrap()).arg("status")).unwrap();
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

/// The lab's config with `check` as the pool's check settings.
fn config_with(lab: &Lab, check: &str) -> String {
    lab::config(lab, PORT, BACKEND_PORT, "close_linger = \"1s\"\ngc_interval = \"200ms\"\nsyn_timeout = \"2s\"", &[])
        .replace("name = \"pool\"\n", &format!("name = \"pool\"\ncheck = {{ {check} }}\n"))
}

/// A one-arm lab with its servers and the agent checking them with `check`, once every server
/// is UP; the lab's frontend address.
fn started_with(check: &str) -> (Lab, Agent, SocketAddr) {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let agent = Agent::start(&lab.lb, &config_with(&lab, check), &lab.lb_ifaces, "native").unwrap();
    for b in &lab.backends {
        wait_state(&lab, &b.name, ServerState::Up, Duration::from_secs(3));
    }
    let vip = SocketAddrV4::new(lab.vip, PORT).into();
    (lab, agent, vip)
}

#[test]
fn passive_observation_takes_a_dead_server_out_long_before_inter_times_fall() {
    // inter 10 s: active checks alone would need about 30 s to see a death.
    let check = "type = \"tcp\", inter = \"10s\", fastinter = \"100ms\", timeout = \"100ms\", rise = 2, fall = 3, error_limit = 3";
    let (lab, _agent, vip) = started_with(check);
    let victim = &lab.backends[2];
    victim.ns.kill_all();
    let killed = Instant::now();
    // Clients keep connecting; every third SYN reaches the dead server, whose kernel answers RST.
    let mut refused = 0;
    while server_state(&lab, &victim.name) != ServerState::Down {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "still not DOWN after 5 s: {:?}",
            status(&lab).backends[0].servers
        );
        refused += lab.client.enter(|| (0..3).filter(|_| connect(vip).is_err()).count());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = killed.elapsed();
    eprintln!("DOWN {took:?} after the kill with inter 10 s ({refused} connections refused meanwhile)");
    let s3 = status(&lab).backends[0].servers.iter().find(|s| s.name == victim.name).unwrap().clone();
    assert!(s3.observed_errors >= 3, "{s3:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let after = spread(&lab, vip, 20);
    assert_eq!(after.values().sum::<usize>(), 20, "every new connection works again: {after:?}");
}

#[test]
fn open_flows_stay_by_default_and_are_shut_down_with_shutdown_sessions() {
    use integration::traffic::ping;
    let lab = Lab::one_arm(3).unwrap();
    // Data on 2379, health on 2380 in a second process: killing it fails the checks only.
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let health_port = 2380;
    let start_health = || lab.backends[2].ns.spawn(&server_bin(), &["health", &health_port.to_string()]).unwrap();
    let mut others: Vec<_> = lab.backends[..2]
        .iter()
        .map(|b| b.ns.spawn(&server_bin(), &["health", &health_port.to_string()]).unwrap())
        .collect();
    let mut health3 = start_health();
    let check = |mode: &str| {
        format!("type = \"tcp\", port = {health_port}, inter = \"200ms\", timeout = \"200ms\", rise = 1, fall = 2, on_marked_down = \"{mode}\"")
    };
    let mut agent = Agent::start(&lab.lb, &config_with(&lab, &check("none")), &lab.lb_ifaces, "native").unwrap();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    for b in &lab.backends {
        wait_state(&lab, &b.name, ServerState::Up, Duration::from_secs(3));
    }
    let victim = lab.backends[2].name.clone();
    let open3 = |lab: &Lab| lab.client.enter(|| (0..3).map(|_| connect(vip).unwrap()).collect::<Vec<_>>());

    // HAProxy's default: a server marked DOWN keeps its open flows.
    let mut conns = open3(&lab);
    let _ = health3.kill();
    let _ = health3.wait();
    wait_state(&lab, &victim, ServerState::Down, Duration::from_secs(3));
    for (s, name) in conns.iter_mut() {
        ping(s, "still here\n")
            .unwrap_or_else(|e| panic!("open flow to {name} broke under on_marked_down = none: {e}"));
    }
    drop(conns);

    // shutdown-sessions: the DOWN server's flows are removed; the next packet of either side
    // meets the kernel, which resets it. The other servers' flows are untouched.
    health3 = start_health();
    wait_state(&lab, &victim, ServerState::Up, Duration::from_secs(3));
    agent.reload(&config_with(&lab, &check("shutdown-sessions"))).unwrap();
    let mut conns = open3(&lab);
    assert!(conns.iter().any(|(_, n)| *n == victim));
    let _ = health3.kill();
    let _ = health3.wait();
    wait_state(&lab, &victim, ServerState::Down, Duration::from_secs(3));
    agent.wait_log(&format!("Server pool/{victim}: 1 flow(s) shut down"), 1, Duration::from_secs(2)).unwrap();
    for (s, name) in conns.iter_mut() {
        let r = ping(s, "still here\n");
        if *name == victim {
            assert!(r.is_err(), "the flow to the DOWN server must be shut down");
        } else {
            r.unwrap_or_else(|e| panic!("flow to {name} broke: {e}"));
        }
    }
    for c in others.iter_mut().chain([&mut health3]) {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn drain_and_maint_take_no_new_flows_and_maint_is_not_checked() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let check = "type = \"tcp\", inter = \"200ms\", rise = 1, fall = 1";
    let with_states = |s2: &str, s3: &str| {
        config_with(&lab, check)
            .replace(
                "name = \"app2\", address = \"198.18.0.22:2379\"",
                &format!("name = \"app2\", address = \"198.18.0.22:2379\", state = \"{s2}\""),
            )
            .replace(
                "name = \"app3\", address = \"198.18.0.23:2379\"",
                &format!("name = \"app3\", address = \"198.18.0.23:2379\", state = \"{s3}\""),
            )
    };
    let mut agent = Agent::start(&lab.lb, &with_states("drain", "maint"), &lab.lb_ifaces, "native").unwrap();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    wait_state(&lab, "app1", ServerState::Up, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(500));
    let snap = status(&lab);
    let by = |n: &str| snap.backends[0].servers.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!((by("app2").state, by("app2").status().as_str()), (ServerState::Drain, "DRAIN"));
    assert_eq!((by("app3").state, by("app3").status().as_str()), (ServerState::Maint, "MAINT"));
    assert!(by("app2").last_check.is_some(), "a draining server is still checked");
    assert!(by("app3").last_check.is_none(), "a server in maintenance is not checked");
    assert_eq!(spread(&lab, vip, 12), HashMap::from([("app1".to_string(), 12)]));
    agent.reload(&with_states("ready", "ready")).unwrap();
    wait_state(&lab, "app3", ServerState::Up, Duration::from_secs(3));
    let all = spread(&lab, vip, 30);
    assert_eq!(all.len(), 3, "all three take flows again: {all:?}");
}

#[test]
fn a_flapping_server_makes_exactly_the_transitions_hysteresis_allows() {
    // Health on its own port, flapping three times: down until the server is DOWN and has failed
    // three more checks (more failures make no more transitions), then up until it is UP and has
    // passed three more. Counted checks, not seconds: one DOWN per down phase, no more.
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let check = "type = \"tcp\", port = 2380, inter = \"150ms\", timeout = \"100ms\", rise = 2, fall = 3, initial_state = \"down\"";
    let mut steady: Vec<_> =
        lab.backends[..2].iter().map(|b| b.ns.spawn(&server_bin(), &["health", "2380"]).unwrap()).collect();
    let _agent = Agent::start(&lab.lb, &config_with(&lab, check), &lab.lb_ifaces, "native").unwrap();
    let flapper = &lab.backends[2];
    let mut health = flapper.ns.spawn(&server_bin(), &["health", "2380"]).unwrap();
    let server = |lab: &Lab| status(lab).backends[0].servers.iter().find(|s| s.name == flapper.name).unwrap().clone();
    // Waits until the server is `state` and `more` checks have been made since (failures while
    // down, passes while up: the failure counter then holds still).
    let settle = |state: ServerState, more: u64| {
        wait_state(&lab, &flapper.name, state, Duration::from_secs(5));
        let at = server(&lab);
        let start = Instant::now();
        loop {
            let s = server(&lab);
            let checks = if state == ServerState::Down {
                s.check_failures - at.check_failures
            } else {
                // Passing checks are not counted: three intervals' worth of them, counted by
                // the failure counter not moving while time passes.
                let due = Duration::from_millis(150 * more);
                assert_eq!(s.check_failures, at.check_failures, "a check failed while the server was up: {s:?}");
                if start.elapsed() >= due {
                    more
                } else {
                    0
                }
            };
            if checks >= more {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "{more} more checks not seen: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    settle(ServerState::Up, 3);
    for _ in 0..3 {
        let _ = health.kill();
        let _ = health.wait();
        settle(ServerState::Down, 3);
        health = flapper.ns.spawn(&server_bin(), &["health", "2380"]).unwrap();
        settle(ServerState::Up, 3);
    }
    let s = server(&lab);
    eprintln!(
        "flapping {}: {} DOWN transitions, {} failed checks, now {}",
        s.name,
        s.down_transitions,
        s.check_failures,
        s.status()
    );
    assert_eq!(s.down_transitions, 3, "one DOWN per down phase, no more: {s:?}");
    assert!(s.check_failures >= 3 * (FALL + 3), "each down phase failed fall + 3 checks: {s:?}");
    for c in steady.iter_mut().chain([&mut health]) {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A server that refuses `suspect_after` SYNs in a row is suspected by the data path (no new
/// flow) before any check has taken it DOWN, and the page, the JSON and `/metrics` say so.
#[test]
fn a_suspected_server_is_shown_as_such_before_it_is_down() {
    // Slow checks: with fall 3 at 10 s, the server stays UP (but suspected) for 20 s or more.
    let check = "type = \"tcp\", inter = \"10s\", fastinter = \"10s\", timeout = \"1s\", rise = 2, fall = 3";
    let (lab, _agent, vip) = started_with(check);
    let victim = &lab.backends[2];
    victim.ns.kill_all();
    // Every third new flow is refused by the victim and redispatched: 12 connections give it 4.
    let got = spread(&lab, vip, 12);
    assert_eq!(got.values().sum::<usize>(), 12, "no connection failed: {got:?}");
    assert!(!got.contains_key(&victim.name), "{got:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    let s3 = loop {
        let snap = status(&lab);
        let s3 = snap.backends[0].servers.iter().find(|s| s.name == victim.name).unwrap().clone();
        if s3.suspected || Instant::now() > deadline {
            break s3;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(s3.suspected, "suspected in /status.json: {s3:?}");
    assert_eq!(s3.status().as_str(), "UP", "not DOWN yet (fall 3 at 10 s)");
    let page = lab.lb.enter(|| http_get("/"));
    assert!(page.contains("(suspected)"), "the HTML page marks it");
    let metrics = lab.lb.enter(|| http_get("/metrics"));
    let line = format!("xdplb_server_suspected{{proxy=\"pool\",server=\"{}\"}} 1", victim.name);
    assert!(
        metrics.contains(&line),
        "{line} in:\n{}",
        metrics.lines().filter(|l| l.contains("suspected")).collect::<Vec<_>>().join("\n")
    );
    for other in &lab.backends[..2] {
        let line = format!("xdplb_server_suspected{{proxy=\"pool\",server=\"{}\"}} 0", other.name);
        assert!(metrics.contains(&line), "{line}");
    }
}
