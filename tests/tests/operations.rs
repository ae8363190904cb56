//! Operating xdplb: restarts and upgrades that lose no connection, and reloads under load.

use std::{
    net::{SocketAddr, SocketAddrV4},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use lb_common::Reason;
use lb_user::{conntrack::FlowTable, stats::Counters};
use tests::{
    agent::Agent,
    lab::{self, Lab},
    netns::sh,
    traffic::{connect, stream},
};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

fn config(lab: &Lab, exclude: &[&str]) -> String {
    lab::config(lab, PORT, BACKEND_PORT, "", exclude)
        .replace("name = \"pool\"\n", "name = \"pool\"\ncheck = { type = \"tcp\", inter = \"300ms\" }\n")
}

/// The program attached through the pinned link on `iface`.
fn link_prog_id(pin_dir: &std::path::Path, iface: &str) -> u64 {
    let out = sh(std::process::Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(pin_dir.join(format!("link_{iface}")))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["prog_id"].as_u64().unwrap()
}

fn forwarded(c: &Counters) -> u64 {
    c.reasons().unwrap().into_iter().filter(|(r, _)| matches!(r, Reason::Forwarded | Reason::Replied)).map(|(_, n)| n).sum()
}

#[test]
fn kill_9_restart_and_upgrade_lose_no_connection() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let cfg = config(&lab, &[]);
    let mut agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    let pins = agent.pin_dir().to_path_buf();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    let (stop, progress) = (AtomicBool::new(false), AtomicU64::new(0));

    std::thread::scope(|sc| {
        let streams: Vec<_> = (0..20u64)
            .map(|i| {
                let (ns, stop, progress) = (lab.client.handle(), &stop, &progress);
                sc.spawn(move || ns.enter(|| stream(vip, 0xabc + i, stop, progress)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(800));
        let table = FlowTable::open_pinned(&pins).unwrap();
        let flows_before: Vec<_> = {
            let mut f: Vec<_> = table.flows().into_iter().map(|f| (f.client, f.server)).collect();
            f.sort();
            f
        };
        assert_eq!(flows_before.len(), 20, "20 streams, 20 flows");
        let counters = Counters::open_pinned(&pins).unwrap();
        let prog_before = link_prog_id(&pins, "eth0");

        // The agent dies: the pinned link keeps XDP attached and the streams keep flowing.
        agent.kill9();
        let at_kill = progress.load(Ordering::Relaxed);
        let counted_at_kill = forwarded(&counters);
        std::thread::sleep(Duration::from_secs(2));
        let during = progress.load(Ordering::Relaxed) - at_kill;
        assert!(during > 1 << 20, "the streams kept flowing without an agent: {during} bytes in 2 s");

        // A new agent adopts the pins: the program is replaced atomically on the link.
        let dir = std::env::temp_dir().join(tests::netns::unique("xdplb-adopt-"));
        let mut agent2 = Agent::adopt(&lab.lb, &cfg, &lab.lb_ifaces, "native", &dir, &pins).unwrap();
        agent2.wait_log("adopted from", 1, Duration::from_secs(5)).unwrap();
        let prog_after = link_prog_id(&pins, "eth0");
        assert_ne!(prog_before, prog_after, "a new program on the same link");
        std::thread::sleep(Duration::from_secs(1));
        let mut flows_after: Vec<_> = table.flows().into_iter().map(|f| (f.client, f.server)).collect();
        flows_after.sort();
        assert_eq!(flows_before, flows_after, "the connection table is unchanged");
        assert!(forwarded(&counters) > counted_at_kill, "counters kept and counting");

        // And a graceful restart (SIGTERM, as systemctl restart does), then an upgrade-style adoption again.
        let pins_kept = agent2.stop_keep_pins();
        let at_stop = progress.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
        assert!(progress.load(Ordering::Relaxed) > at_stop, "flowing while stopped");
        let dir3 = std::env::temp_dir().join(tests::netns::unique("xdplb-adopt-"));
        let mut agent3 = Agent::adopt(&lab.lb, &cfg, &lab.lb_ifaces, "native", &dir3, &pins_kept).unwrap();
        agent3.wait_log("adopted from", 1, Duration::from_secs(5)).unwrap();
        assert!(!agent3.log_text().contains("is DOWN"), "no server was taken out by the restart");
        std::thread::sleep(Duration::from_secs(1));

        stop.store(true, Ordering::Relaxed);
        let results: Vec<_> = streams.into_iter().map(|h| h.join().unwrap()).collect();
        let bytes: u64 = results.iter().map(|r| *r.as_ref().unwrap_or_else(|e| panic!("a stream broke: {e:#}"))).sum();
        eprintln!("20 streams, {bytes} bytes echoed and verified across kill -9, adoption and restart; {during} bytes while no agent ran");
        agent = agent3;
    });
    drop(agent);
}

#[test]
fn twenty_reloads_under_load_fail_no_request() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let mut agent = Agent::start(&lab.lb, &config(&lab, &[]), &lab.lb_ifaces, "native").unwrap();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    let stop = AtomicBool::new(false);
    let (ok, failed) = std::thread::scope(|sc| {
        let load: Vec<_> = (0..4)
            .map(|_| {
                let (ns, stop) = (lab.client.handle(), &stop);
                sc.spawn(move || {
                    ns.enter(|| {
                        let (mut ok, mut failed) = (0u64, Vec::new());
                        while !stop.load(Ordering::Relaxed) {
                            match connect(vip).and_then(|(mut s, _)| tests::traffic::ping(&mut s, "hi\n")) {
                                Ok(()) => ok += 1,
                                Err(e) => failed.push(format!("{e:#}")),
                            }
                        }
                        (ok, failed)
                    })
                })
            })
            .collect();
        let started = Instant::now();
        for i in 0..20 {
            // Remove a server, add it back, change check settings: each applied as a difference.
            let cfg = match i % 3 {
                0 => config(&lab, &["app3"]),
                1 => config(&lab, &[]),
                _ => config(&lab, &[]).replace("inter = \"300ms\"", "inter = \"250ms\""),
            };
            agent.reload(&cfg).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        // An invalid configuration changes nothing and is reported; the agent runs on.
        agent.reload_expect_refusal("[[frontend]]\nname = \"f\"\n").unwrap();
        eprintln!("20 reloads in {:?}", started.elapsed());
        stop.store(true, Ordering::Relaxed);
        load.into_iter().map(|h| h.join().unwrap()).fold((0, Vec::new()), |(a, mut f), (o, x)| {
            f.extend(x);
            (a + o, f)
        })
    });
    eprintln!("{ok} requests during 20 reloads, {} failed", failed.len());
    assert!(failed.is_empty(), "failed requests: {:?}", &failed[..failed.len().min(5)]);
    assert!(ok > 100);
}
