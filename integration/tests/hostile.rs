//! Hostile backends: one server answers its health checks with each reply a broken or hostile
//! server may send (a chunk size of 2^64-1, an endless chunked body, a megabyte header line, a
//! status line cut inside a character, bytes that are not UTF-8, a reply trickled a byte every
//! 100 ms). The agent stays up, that server goes DOWN with the code the reply deserves, and the
//! other servers' checks keep their rhythm: none fails, none is skipped.

use std::time::{Duration, Instant};

use integration::{
    agent::Agent,
    hostile::{Endpoint, Reply},
    lab::{self, Lab},
    pki::Ca,
};
use lb_user::report::snapshot::{Code, ServerState, ServerStatus, Snapshot};

const PORT: u16 = 16443;
const BACKEND_PORT: u16 = 6443;
const INTER_MS: u64 = 400;
const TIMEOUT_MS: u64 = 400;

fn status(lab: &Lab) -> Snapshot {
    lab.lb.enter(|| lb_user::report::http::fetch("127.0.0.1:8404".parse().unwrap())).expect("status page")
}

fn server(lab: &Lab, name: &str) -> ServerStatus {
    status(lab).backends[0].servers.iter().find(|s| s.name == name).unwrap().clone()
}

fn wait_state(lab: &Lab, name: &str, want: ServerState, within: Duration) -> ServerStatus {
    let start = Instant::now();
    loop {
        let s = server(lab, name);
        if s.state == want {
            return s;
        }
        assert!(start.elapsed() < within, "{name} not {want:?} after {within:?}: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap()
}

#[test]
fn a_hostile_backend_goes_down_with_the_right_code_and_harms_nothing_else() {
    let lab = Lab::one_arm(3).unwrap();
    let ca = Ca::new("hostile test CA").unwrap();
    let endpoints: Vec<Endpoint> = lab
        .backends
        .iter()
        .map(|b| {
            let leaf = ca.server(&b.name, &[&b.addr.to_string()]).unwrap();
            Endpoint::start(&b.ns, BACKEND_PORT, &leaf).unwrap()
        })
        .collect();
    let check = format!(
        "type = \"https\", path = \"/healthz\", expect_string = \"ok\", verify = \"none\", inter = \"{INTER_MS}ms\", timeout = \"{TIMEOUT_MS}ms\", rise = 1, fall = 1"
    );
    let cfg = lab::config(&lab, PORT, BACKEND_PORT, "", &[])
        .replace("name = \"pool\"\n", &format!("name = \"pool\"\ncheck = {{ {check} }}\n"));
    let mut agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    for b in &lab.backends {
        wait_state(&lab, &b.name, ServerState::Up, Duration::from_secs(5));
    }
    let rss_before = rss_kb(agent.pid());
    let started = Instant::now();
    let victim = &lab.backends[2].name;
    // One failing check takes it DOWN (fall 1): within one interval and one timeout, with room
    // for the status page's polling.
    let within = Duration::from_millis(3 * (INTER_MS + TIMEOUT_MS));
    for reply in Reply::HOSTILE {
        endpoints[2].set(reply);
        let down = wait_state(&lab, victim, ServerState::Down, within + Duration::from_secs(1));
        let check = down.last_check.clone().unwrap();
        let want = if reply == Reply::Trickle { Code::L7Tout } else { Code::L7Rsp };
        eprintln!("{reply:?}: {} {:?}", check.code.name(), check.detail);
        assert_eq!(check.code, want, "{reply:?}: {check:?}");
        assert!(!check.detail.chars().any(char::is_control), "{reply:?}: raw control characters: {:?}", check.detail);
        assert!(check.detail.chars().count() <= 200, "{reply:?}: {:?}", check.detail);
        agent
            .wait_log(
                &format!("Server pool/{victim} is DOWN, reason: {}", want.description()),
                1,
                Duration::from_secs(2),
            )
            .unwrap();
        endpoints[2].set(Reply::Good);
        wait_state(&lab, victim, ServerState::Up, within + Duration::from_secs(1));
    }
    let spent = started.elapsed();
    // The agent is the same process and did not balloon.
    let rss_after = rss_kb(agent.pid());
    assert!(rss_after < rss_before + 16 * 1024, "agent memory {rss_before} -> {rss_after} kB");
    assert_eq!(status(&lab).pid, agent.pid(), "the agent that started is the one answering");
    assert_eq!(agent.log_text().matches("ready:").count(), 1, "no restart");
    // The others never failed a check, and were checked at their pace all along: at least one
    // check per two intervals (a check takes well under one).
    for (i, b) in lab.backends[..2].iter().enumerate() {
        let s = server(&lab, &b.name);
        assert_eq!((s.check_failures, s.down_transitions), (0, 0), "{}: {s:?}", b.name);
        let during = endpoints[i].checks().into_iter().filter(|t| *t >= started).count() as u64;
        let least = spent.as_millis() as u64 / (2 * INTER_MS);
        eprintln!("{}: {during} checks in {spent:?} (at least {least})", b.name);
        assert!(during >= least, "{}: {during} checks in {spent:?}, expected at least {least}", b.name);
    }
}
