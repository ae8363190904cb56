//! The co-located shape end to end (issue 11): no balancer host; every master runs its etcd
//! member, its apiserver stand-in and its own xdplb, and its clients use its own endpoint,
//! `127.0.0.1:12379`, through the connect hook (its own member is one of the servers: a local
//! backend for remote clients). etcdctl puts and gets from each master through its local
//! endpoint, one member SIGKILLed halfway: nothing fails once every agent has it DOWN. 200 per
//! master in the normal run, 1000 with `--long` (XDPLB_LONG_TESTS).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use integration::{lab::Names, netns::unique, seed::SeedLab};
use lb_user::report::snapshot::ServerState;

const ETCD: &str = "etcd-cluster";
/// The seed's check timing: inter 2 s, fall 3 (and the check's own timeout, inter).
const DOWN_WITHIN: Duration = Duration::from_secs(2 * 3 + 2 + 5);
const VICTIM: usize = 1;

fn wait_state(s: &SeedLab, node: usize, server: &str, want: ServerState, within: Duration) {
    let start = Instant::now();
    loop {
        let snap = s.status_in(&s.lab.backends[node].ns).unwrap();
        let got = snap
            .backends
            .iter()
            .find(|b| b.name == ETCD)
            .unwrap()
            .servers
            .iter()
            .find(|x| x.name == server)
            .unwrap()
            .state;
        if got == want {
            return;
        }
        assert!(start.elapsed() < within, "app{}: {server} is {got:?}, not {want:?}, after {within:?}", node + 1);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn colocated_masters_use_their_own_local_endpoint() {
    let per_node: usize = if std::env::var("XDPLB_LONG_TESTS").is_ok() { 1000 } else { 200 };
    let dir = std::env::temp_dir().join(unique("xdplb-colo-"));
    let pins = std::path::PathBuf::from("/sys/fs/bpf").join(unique("xdplb-colo-"));
    let mut s = SeedLab::start_colocated(
        Names::Unique,
        &dir,
        env!("CARGO_BIN_EXE_apiserver-standin").as_ref(),
        "native",
        &pins,
    )
    .unwrap();
    for node in 0..3 {
        for server in ["app1", "app2", "app3"] {
            wait_state(&s, node, server, ServerState::Up, Duration::from_secs(40));
        }
    }
    for a in s.node_agents() {
        assert!(a.log_text().contains("connect hook attached"), "{}", a.log_text());
    }

    // Puts and gets from every master through its own 127.0.0.1:12379; the victim's member is
    // killed when half are done. What fails after every agent has it DOWN is what counts.
    let done = AtomicUsize::new(0);
    let down_at: Mutex<Option<Instant>> = Mutex::new(None);
    let killed = AtomicBool::new(false);
    let (failed_after_down, failed_before): (Vec<String>, Vec<String>) = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..3)
            .map(|node| {
                let (s, done, down_at) = (&s, &done, &down_at);
                sc.spawn(move || {
                    let ns = &s.lab.backends[node].ns;
                    let (mut after, mut before) = (Vec::new(), Vec::new());
                    for i in 0..per_node / 2 {
                        let (k, v) = (format!("/colo/app{node}/k{i}"), format!("v{i}"));
                        let started = Instant::now();
                        let put = s.etcdctl_from(ns, "127.0.0.1:12379", &["put", &k, &v]);
                        let get = s.etcdctl_from(ns, "127.0.0.1:12379", &["get", "--print-value-only", &k]);
                        let result = match (put, get) {
                            (Ok(_), Ok(out)) if out.trim() == v => Ok(()),
                            (p, g) => Err(format!("app{} {k}: put {p:?}, get {g:?}", node + 1)),
                        };
                        done.fetch_add(2, Ordering::Relaxed);
                        if let Err(e) = result {
                            let counted = down_at.lock().unwrap().is_some_and(|d| started > d);
                            if counted {
                                after.push(e)
                            } else {
                                before.push(e)
                            }
                        }
                    }
                    (after, before)
                })
            })
            .collect();
        // Halfway: the victim's member dies; then wait until all three agents have it DOWN.
        while done.load(Ordering::Relaxed) < 3 * per_node / 2 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = s.etcd_pid(VICTIM).expect("the victim's etcd runs");
        // SAFETY: the pid of the etcd this lab started and has not reaped yet.
        unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
        killed.store(true, Ordering::Relaxed);
        for node in 0..3 {
            wait_state(&s, node, &format!("app{}", VICTIM + 1), ServerState::Down, DOWN_WITHIN);
        }
        *down_at.lock().unwrap() = Some(Instant::now());
        workers.into_iter().map(|w| w.join().unwrap()).fold((Vec::new(), Vec::new()), |mut acc, (a, b)| {
            acc.0.extend(a);
            acc.1.extend(b);
            acc
        })
    });
    assert!(killed.load(Ordering::Relaxed));
    eprintln!(
        "{} etcdctl puts and gets from the three masters through 127.0.0.1:12379; {} failed before the member was DOWN everywhere, {} after",
        3 * per_node,
        failed_before.len(),
        failed_after_down.len()
    );
    assert!(failed_after_down.is_empty(), "failed after DOWN: {failed_after_down:#?}");

    // Counted as local connections by each master's agent, and the stand-ins are ready (they
    // reach etcd through their node's own endpoint).
    for node in 0..3 {
        // Each etcdctl dials once; the page is rebuilt every second.
        let start = Instant::now();
        loop {
            let snap = s.status_in(&s.lab.backends[node].ns).unwrap();
            let etcd = snap.frontends.iter().find(|f| f.backend == ETCD).unwrap().traffic;
            if etcd.local_flows >= per_node as u64 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(3), "app{}: {etcd:?}", node + 1);
            std::thread::sleep(Duration::from_millis(100));
        }
        let ready = s.lab.backends[node].ns.exec(&["curl", "-sk", "https://127.0.0.1:6443/readyz"]).unwrap();
        assert_eq!(ready.trim(), "ok", "app{}'s stand-in reaches etcd through 127.0.0.1:12379", node + 1);
    }
    s.etcd_kill(VICTIM);
}
