//! Operating xdplb: restarts and upgrades that lose no connection, and reloads under load.

use std::{
    net::{SocketAddr, SocketAddrV4},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use integration::{
    agent::Agent,
    lab::{self, Lab},
    netns::sh,
    traffic::{connect, stream},
};
use lb_common::Reason;
use lb_user::dataplane::{counters::Counters, flows::FlowTable};

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
    let out = sh(std::process::Command::new("bpftool")
        .args(["-j", "link", "show", "pinned"])
        .arg(pin_dir.join(format!("link_{iface}"))))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["prog_id"].as_u64().unwrap()
}

fn forwarded(c: &Counters) -> u64 {
    c.reasons()
        .unwrap()
        .into_iter()
        .filter(|(r, _)| matches!(r, Reason::Forwarded | Reason::Replied))
        .map(|(_, n)| n)
        .sum()
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
        let table = FlowTable::open_pinned(&pins).unwrap();
        // Waited for, not slept on: every stream connected and its flow is in the table.
        let deadline = Instant::now() + Duration::from_secs(10);
        let flows_before: Vec<_> = loop {
            let mut f: Vec<_> = table.flows().into_iter().map(|f| (f.client, f.server)).collect();
            f.sort();
            if f.len() >= 20 || Instant::now() > deadline {
                break f;
            }
            std::thread::sleep(Duration::from_millis(20));
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
        let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-adopt-"));
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
        let dir3 = std::env::temp_dir().join(integration::netns::unique("xdplb-adopt-"));
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
                            match connect(vip).and_then(|(mut s, _)| integration::traffic::ping(&mut s, "hi\n")) {
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

fn socat(sock: &std::path::Path, line: &str) -> String {
    let mut c = std::process::Command::new("socat");
    c.args(["-t", "2", "stdio"]).arg(format!("unix-connect:{}", sock.display()));
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = c.spawn().expect("socat (Debian package socat)");
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{line}").unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

fn spread(lab: &Lab, vip: SocketAddr, n: usize) -> std::collections::HashMap<String, usize> {
    lab.client.enter(|| {
        let mut m = std::collections::HashMap::new();
        for _ in 0..n {
            *m.entry(connect(vip).unwrap().1).or_insert(0) += 1;
        }
        m
    })
}

#[test]
fn runtime_api_speaks_haproxy_and_hand_set_state_survives_reload_and_restart() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let cfg = config(&lab, &[]);
    let agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    let sock = agent.socket();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600, "root-only socket");
    std::thread::sleep(Duration::from_millis(1500));

    let stat = socat(&sock, "show stat");
    assert!(stat.starts_with("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,"), "{stat}");
    assert!(stat.lines().any(|l| l.starts_with("pool,app1,") && l.contains(",UP,")), "{stat}");
    assert!(socat(&sock, "show info").contains("Name: xdplb"));
    assert!(socat(&sock, "set server pool/nope state drain").contains("No such server."));
    assert!(socat(&sock, "show stat; show info").contains("Name: xdplb"), "commands separated by ';'");

    // Drain by hand: no new flows to app3.
    assert_eq!(socat(&sock, "set server pool/app3 state drain").trim(), "");
    let m = spread(&lab, vip, 30);
    assert!(!m.contains_key("app3"), "{m:?}");
    assert!(
        socat(&sock, "show servers state pool")
            .lines()
            .any(|l| l.contains(" app3 ") && l.split_whitespace().nth(6) == Some("8")),
        "admin state DRAIN (8)"
    );

    // It survives a reload...
    let mut agent = agent;
    agent.reload(&cfg).unwrap();
    assert!(!spread(&lab, vip, 30).contains_key("app3"), "drained across a reload");
    // ... and a restart.
    let pins = agent.stop_keep_pins();
    let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-rt-"));
    let agent = Agent::adopt(&lab.lb, &cfg, &lab.lb_ifaces, "native", &dir, &pins).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!spread(&lab, vip, 30).contains_key("app3"), "drained across a restart");

    // The CLI wraps it.
    let xdplb = integration::agent::xdplb_bin().unwrap();
    let sock = agent.socket();
    sh(std::process::Command::new(&xdplb).args(["server", "enable", "pool/app3", "--socket"]).arg(&sock)).unwrap();
    assert_eq!(spread(&lab, vip, 30).get("app3"), Some(&10), "back in rotation");
    let err = std::process::Command::new(&xdplb)
        .args(["server", "drain", "pool/ghost", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(!err.status.success() && String::from_utf8_lossy(&err.stdout).contains("No such server"));

    // Weight 0 takes a server out of the rotation; health checks can be switched off.
    assert_eq!(socat(&sock, "set server pool/app1 weight 0").trim(), "");
    assert!(!spread(&lab, vip, 20).contains_key("app1"));
    assert_eq!(socat(&sock, "disable health pool/app2").trim(), "");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(socat(&sock, "show stat").lines().any(|l| l.starts_with("pool,app2,") && l.contains(",no check,")));

    // shutdown sessions: the open flow to app2 ends, the one to app3 stays.
    let mut open = lab.client.enter(|| (0..2).map(|_| connect(vip).unwrap()).collect::<Vec<_>>());
    assert_eq!(socat(&sock, "shutdown sessions server pool/app2").trim(), "");
    for (s, name) in open.iter_mut() {
        let r = integration::traffic::ping(s, "x\n");
        assert_eq!(r.is_ok(), name != "app2", "{name}: {r:?}");
    }
    let out = sh(std::process::Command::new(&xdplb).args(["reload", "--socket"]).arg(&sock)).unwrap();
    assert!(out.starts_with("reloaded"), "{out}");
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/xdplb.service")).unwrap();
    let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-unit-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("xdplb.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/xdplb", &integration::agent::xdplb_bin().unwrap())).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Only complaints about this unit count (the host's other units are not ours).
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("xdplb")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify: {text}");
    // What the unit does (its sandbox, readiness, the watchdog, reload's verdict) is tested by
    // running the agent under it: tests/sandbox.rs.
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bpftool_dumps_the_maps_with_named_fields() {
    let lab = Lab::one_arm(3).unwrap();
    let agent = Agent::start(&lab.lb, &config(&lab, &[]), &lab.lb_ifaces, "native").unwrap();
    let out = sh(std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(agent.pin_dir().join("servers")))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let servers: Vec<(Vec<u64>, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        // With BTF, bpftool's JSON has the named fields under "formatted".
        .map(|e| &e["formatted"]["value"])
        .filter(|v| v["flags"].as_u64() == Some(1))
        .map(|v| {
            let addr = v["addr"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            (addr, v["port_be"].as_u64().unwrap())
        })
        .collect();
    let want: Vec<(Vec<u64>, u64)> = (21..=23).map(|i| (vec![198, 18, 0, i], BACKEND_PORT.to_be() as u64)).collect();
    assert_eq!(servers, want, "bpftool shows named fields and the configured servers:\n{}", &out[..out.len().min(600)]);
    let fronts = sh(std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(agent.pin_dir().join("frontends")))
    .unwrap();
    assert!(fronts.contains("\"frontend_id\"") && fronts.contains("\"pool_id\""), "{fronts}");
}

#[test]
fn a_second_agent_is_refused_and_the_first_keeps_running() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let cfg = config(&lab, &[]);
    let mut agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    let xdplb = integration::agent::xdplb_bin().unwrap();
    let cfg_file = std::env::temp_dir().join(integration::netns::unique("xdplb-second-"));
    // Its own status port, so that what refuses it is the data path, not the port.
    std::fs::write(&cfg_file, cfg.replace("[global]\n", "[global]\nstats_bind = \"127.0.0.1:8405\"\n")).unwrap();
    let second = |pins: &std::path::Path| {
        lab.lb
            .command(&xdplb)
            .args(["run", "--config", cfg_file.to_str().unwrap(), "--iface", "eth0", "--pin-dir"])
            .arg(pins)
            .args(["--runtime-socket", "/tmp/xdplb-second.sock", "--state-file", "/tmp/xdplb-second-state.json"])
            .output()
            .unwrap()
    };
    // The same data path: refused by the lock, naming the running agent.
    let out = second(agent.pin_dir());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("another xdplb agent (pid {})", agent.pid())), "{err}");
    // Another pin directory on the same interface: XDP is taken; nothing is left pinned.
    let other = std::path::PathBuf::from("/sys/fs/bpf").join(integration::netns::unique("xdplb-second-"));
    let out = second(&other);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("another XDP program is attached"), "{err}");
    assert!(!other.exists(), "the refused agent removed the pins it made");
    // Its lock and record of host changes are the test's to remove.
    integration::agent::remove_data_path(&other);
    // The first one runs on, untouched.
    assert_eq!(lab.client.enter(|| (0..9).filter(|_| connect(vip).is_ok()).count()), 9);
    assert!(!agent.log_text().contains("ERROR"), "{}", agent.log_text());
    agent.wait_log("ready:", 1, Duration::from_secs(1)).unwrap();
    // Pins are root's alone.
    let dir_mode = std::fs::metadata(agent.pin_dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    for e in std::fs::read_dir(agent.pin_dir()).unwrap() {
        let mode = e.unwrap().metadata().unwrap().permissions().mode() & 0o077;
        assert_eq!(mode, 0, "pins are not readable by others");
    }
    let _ = std::fs::remove_file(cfg_file);
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap()
}

#[test]
fn churn_of_new_connections_fails_nothing_and_leaves_nothing() {
    // Two client hosts churning and a third streaming bulk data beside them: the load under
    // which a live connection once lost its flow (a promotion racing the sweep).
    let lab = Lab::one_arm_clients(3, 3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    // A linger longer than the client's TIME_WAIT reuse delay (1 s), as the default (10 s) is: a
    // reused tuple then replaces its lingering flow in the data path, rather than racing the
    // sweep that expires it.
    let cfg = config(&lab, &[]).replace("[global]\n", "[global]\nclose_linger = \"3s\"\ngc_interval = \"200ms\"\n");
    let agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    let churners: Vec<&integration::netns::NetNs> = lab.clients().into_iter().take(2).collect();
    let bulk = &lab.more_clients[1].0;
    // The clients close first, so their TIME_WAIT sockets would exhaust their own ports in
    // seconds; reusing them is the clients' business (and a new SYN on a closed flow's tuple is ours).
    for c in &churners {
        c.sysctl("net.ipv4.tcp_tw_reuse", "1").unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    let seconds: u64 = if std::env::var("XDPLB_LONG_TESTS").is_ok() { 180 } else { 20 };
    let until = Instant::now() + Duration::from_secs(seconds);
    let stop = AtomicBool::new(false);
    let bulk_bytes = AtomicU64::new(0);
    // Memory is sampled once the churn has warmed the agent up (its sweep buffers grow to the
    // table's working size once), then at the end: flat means no growth in between.
    let mut rss_before = 0;
    let (ok, failed, bulk_result): (u64, Vec<String>, anyhow::Result<u64>) = std::thread::scope(|sc| {
        let streamer = {
            let (ns, stop, bulk_bytes) = (bulk.handle(), &stop, &bulk_bytes);
            sc.spawn(move || ns.enter(|| stream(vip, 7, stop, bulk_bytes)))
        };
        let hs: Vec<_> = churners
            .iter()
            .flat_map(|c| std::iter::repeat_n(c.handle(), 3))
            .map(|ns| {
                sc.spawn(move || {
                    ns.enter(|| {
                        let (mut ok, mut failed) = (0, Vec::new());
                        while Instant::now() < until {
                            match connect(vip).and_then(|(mut s, _)| integration::traffic::ping(&mut s, "churn\n")) {
                                Ok(()) => ok += 1,
                                Err(e) => failed.push(format!("{e:#}")),
                            }
                        }
                        (ok, failed)
                    })
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds / 4));
        rss_before = rss_kb(agent.pid());
        let (ok, failed) = hs.into_iter().map(|h| h.join().unwrap()).fold((0, Vec::new()), |(a, mut f), (o, x)| {
            f.extend(x);
            (a + o, f)
        });
        stop.store(true, Ordering::Relaxed);
        (ok, failed, streamer.join().unwrap())
    });
    let table = FlowTable::open_pinned(agent.pin_dir()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !table.entries().is_empty() {
        assert!(Instant::now() < deadline, "{} entries left after the churn", table.entries().len());
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_after = rss_kb(agent.pid());
    let reasons: std::collections::HashMap<Reason, u64> =
        Counters::open_pinned(agent.pin_dir()).unwrap().reasons().unwrap().into_iter().collect();
    eprintln!(
        "churn: {ok} connections in {seconds} s, {} failed, {} MB streamed beside; table back to 0; agent RSS {rss_before} -> {rss_after} kB; no_flow {}, no_flow_in_sweep {}; {reasons:?}",
        failed.len(),
        bulk_bytes.load(Ordering::Relaxed) >> 20,
        reasons[&Reason::NoFlow],
        reasons[&Reason::NoFlowInSweep]
    );
    assert!(failed.is_empty(), "{:?}", &failed[..failed.len().min(5)]);
    assert!(bulk_result.is_ok(), "the bulk stream: {bulk_result:?}");
    // Not one packet of a live connection went to the kernel (which answers RST) for want of
    // its flow; every connection here was live until both sides closed and the flow lingered.
    assert_eq!(reasons[&Reason::NoFlow], 0, "packets that found no flow");
    assert!(rss_after < rss_before + 4096, "agent memory grew during the churn: {rss_before} -> {rss_after} kB");
}

/// `xdplb status` (keepalived's track script) fails when the agent answers but XDP no longer
/// runs on one of its interfaces (someone detached the link), so the host gives the VIP up; the
/// agent says so in its log once, and the status shows the interface detached.
#[test]
fn status_fails_once_the_data_path_no_longer_runs() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let cfg = lab::config(&lab, PORT, BACKEND_PORT, "", &[]);
    let mut agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    let status = || lab.lb.command(&integration::agent::xdplb_bin().unwrap()).arg("status").output().unwrap();
    let ok = status();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let pin = agent.pin_dir().join("link_eth0");
    // From here: `ip netns exec` mounts a /sys of its own, without the BPF file system.
    sh(std::process::Command::new("bpftool").args(["link", "detach", "pinned"]).arg(&pin)).unwrap();
    // The agent looks at its links when it publishes its status, every second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let failed = loop {
        let out = status();
        if !out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (stdout, stderr) = (String::from_utf8_lossy(&failed.stdout), String::from_utf8_lossy(&failed.stderr));
    assert!(!failed.status.success(), "status still succeeds with XDP detached:\n{stdout}");
    assert!(stderr.contains("XDP no longer runs on eth0"), "{stderr}");
    assert!(stdout.contains("eth0:native (detached)"), "{stdout}");
    agent.wait_log("XDP no longer runs on eth0", 1, Duration::from_secs(2)).unwrap();
    assert_eq!(agent.log_text().matches("XDP no longer runs on eth0").count(), 1, "said once");
}
