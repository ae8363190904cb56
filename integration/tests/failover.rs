//! A server dies while clients open new connections, with the seed's check settings (inter 2 s,
//! fall 3, rise 2): no new connection fails. A killed process refuses SYNs (RST), which the data path
//! turns into SYNs to the next server; a server whose link is down leaves SYNs unanswered, and
//! the client's retransmission goes to the next server. After `suspect_after` such SYNs in a row
//! the server gets no new flow at all, until the agent's checks confirm it DOWN (or clear it).

use std::{
    net::SocketAddrV4,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use integration::{
    agent::Agent,
    lab::{self, Lab},
    traffic::{connect, open_until, FaultWindow, StopOnDrop},
};
use lb_user::dataplane::counters::Counters;

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;
/// The seed's settings, imported from its haproxy.cfg.
const INTER: Duration = Duration::from_secs(2);
const FALL: u32 = 3;
/// One client opening connections one after another, and one opening 8 side by side.
const CLIENTS: usize = 9;

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

fn config(lab: &Lab) -> String {
    lab::config(lab, PORT, BACKEND_PORT, "", &[]).replace(
        "name = \"pool\"\n",
        "name = \"pool\"\ncheck = { type = \"tcp\", inter = \"2s\", rise = 2, fall = 3 }\n",
    )
}

fn new_flows(agent: &Agent, lab: &Lab, name: &str) -> u64 {
    let id = (1..=lab.backends.len() as u32)
        .find(|&id| lab.backends[(id - 1) as usize].name == name)
        .expect("ids follow the config's order");
    Counters::open_pinned(agent.pin_dir()).unwrap().server(id).unwrap().new_flows
}

/// `fault` breaks app2 at some point while the clients run; the data path must take it out of
/// rotation within `skipped_within` and fail no connection.
fn no_connection_fails(fault: &str, skipped_within: Duration, break_it: impl FnOnce(&Lab), repair: impl FnOnce(&Lab)) {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let mut agent = Agent::start(&lab.lb, &config(&lab), &lab.lb_ifaces, "native").unwrap();
    agent.wait_log("ready:", 1, Duration::from_secs(10)).unwrap();
    let stop = AtomicBool::new(false);
    let window = FaultWindow::default();
    let vip = SocketAddrV4::new(lab.vip, PORT).into();
    let (seen, skipped_after, app2_after_kill) = std::thread::scope(|sc| {
        // The clients stop when this scope ends, also when an assertion in it fails.
        let _stop = StopOnDrop(&stop);
        let runner = sc.spawn(|| open_until(&lab.client, vip, CLIENTS, Duration::from_secs(5), &stop, &window));
        std::thread::sleep(Duration::from_secs(2));
        // The fault counts from when it is in place: a connection under way while the process
        // was being killed (accepted, not yet answered) or `ip` was still taking the link down is
        // in flight when it breaks, not an attempt after the fault.
        window.begun.get_or_init(Instant::now);
        break_it(&lab);
        let broken_at = *window.done.get_or_init(Instant::now);
        // Skipped for new flows in time: app2's count of new flows stops moving.
        std::thread::sleep(skipped_within);
        let at_1s = new_flows(&agent, &lab, "app2");
        let skipped_after = broken_at.elapsed();
        // The agent confirms it DOWN within HAProxy's time for it: `fall` failed checks, each
        // up to its timeout (`inter`) and an interval apart, plus one.
        agent.wait_log("Server pool/app2 is DOWN", 1, 2 * INTER * (FALL + 1)).unwrap();
        let app2_after = new_flows(&agent, &lab, "app2") - at_1s;
        stop.store(true, Ordering::Relaxed);
        (runner.join().unwrap(), skipped_after, app2_after)
    });
    eprintln!(
        "{fault}: {seen:?}; app2 got {app2_after_kill} new flow(s) from {skipped_after:?} after the fault until DOWN"
    );
    assert!(
        seen.failed.is_empty(),
        "{fault}: {} failed: {:?}",
        seen.failed.len(),
        &seen.failed[..seen.failed.len().min(5)]
    );
    assert!(seen.in_flight.len() <= CLIENTS, "{fault}: more cut in flight than clients: {:?}", seen.in_flight);
    assert_eq!(app2_after_kill, 0, "{fault}: app2 still got new flows {skipped_within:?} after the fault");
    assert!(seen.ok > 100, "{fault}: the clients ran ({seen:?})");
    // Back: UP after `rise` passing checks, and flows again.
    repair(&lab);
    agent.wait_log("Server pool/app2 is UP", 1, INTER * 4).unwrap();
    let before = new_flows(&agent, &lab, "app2");
    lab.client.enter(|| {
        for _ in 0..9 {
            connect(SocketAddrV4::new(lab.vip, PORT).into()).unwrap();
        }
    });
    assert_eq!(new_flows(&agent, &lab, "app2") - before, 3, "{fault}: app2 takes its share again");
    if fault == "link down" {
        // Unanswered SYNs cost a client one retransmission at most, and only the first few.
        assert!(seen.slowest < Duration::from_millis(2500), "{fault}: a client waited {:?}", seen.slowest);
    }
}

#[test]
fn a_killed_server_fails_no_connection_with_the_seeds_settings() {
    // A refusal is seen at once: three of them (every third connection) in a few milliseconds.
    no_connection_fails(
        "killed",
        Duration::from_secs(1),
        |lab| lab.backends[1].ns.kill_all(),
        |lab| lab.start_server(1, &server_bin(), BACKEND_PORT).unwrap(),
    );
}

#[test]
fn a_server_whose_link_goes_down_fails_no_connection_and_delays_a_client_once_at_most() {
    // Silence is seen when the clients retransmit their SYNs, a second later.
    no_connection_fails(
        "link down",
        Duration::from_secs(2),
        |lab| {
            lab.backends[1].ns.ip(&["link", "set", "eth0", "down"]).unwrap();
        },
        |lab| {
            lab.backends[1].ns.ip(&["link", "set", "eth0", "up"]).unwrap();
            lab.backends[1]
                .ns
                .ip(&["addr", "replace", &format!("{}/24", lab.backends[1].addr), "dev", "eth0"])
                .unwrap();
        },
    );
}
