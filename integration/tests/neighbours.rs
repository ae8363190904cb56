//! What a local neighbour can do to the agent, and what it cannot: hold thousands of idle
//! connections on the status port, trickle a request there byte by byte, hold hundreds of
//! runtime API sessions, take the status address first, knock on a socket above its level.
//! Through all of it the checks go on: a killed server still goes DOWN in time and leaves the
//! kernel's set.

use std::{
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    os::unix::net::UnixStream,
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use integration::{
    agent::{xdplb_bin, Agent},
    lab::{self, Lab},
    netns::NetNs,
    traffic::connect,
};
use lb_common::{names, BackendSet};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;
const INTER_MS: u64 = 300;
const FALL: u64 = 3;
const TIMEOUT_MS: u64 = 300;

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

fn config(lab: &Lab, global: &str) -> String {
    lab::config(lab, PORT, BACKEND_PORT, global, &[]).replace(
        "name = \"pool\"\n",
        &format!(
            "name = \"pool\"\ncheck = {{ type = \"tcp\", inter = \"{INTER_MS}ms\", fall = {FALL}, rise = 2, timeout = \"{TIMEOUT_MS}ms\" }}\n"
        ),
    )
}

/// The server ids in the kernel's set of pool 0.
fn kernel_set(pin_dir: &Path) -> Vec<u32> {
    let map = Map::from_map_data(MapData::from_pin(pin_dir.join(names::BACKEND_SETS)).unwrap()).unwrap();
    let sets: BpfHashMap<MapData, u32, BackendSet> = BpfHashMap::try_from(map).unwrap();
    let set = sets.get(&0, 0).unwrap();
    let mut ids = set.slots[..set.count as usize].to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn raise_own_nofile() {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    l.rlim_cur = l.rlim_max;
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) };
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn idle_and_slow_local_clients_never_stop_the_checks() {
    raise_own_nofile();
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let mut agent = Agent::start(&lab.lb, &config(&lab, ""), &lab.lb_ifaces, "native").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while kernel_set(agent.pin_dir()) != vec![1, 2, 3] {
        assert!(Instant::now() < deadline, "servers not UP: {:?}", kernel_set(agent.pin_dir()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats: SocketAddr = "127.0.0.1:8404".parse().unwrap();
    let stop = AtomicBool::new(false);
    let (slow_cut, slow_rounds) = (AtomicU64::new(0), AtomicU64::new(0));
    let (idle, unix, took, set_after) = std::thread::scope(|sc| {
        // A slowloris client: a request head one byte every 200 ms, again whenever cut off;
        // records the longest any connection of it lived.
        let slowloris = {
            let (ns, stop, cut, rounds) = (lab.lb.handle(), &stop, &slow_cut, &slow_rounds);
            sc.spawn(move || {
                ns.enter(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = TcpStream::connect_timeout(&stats, Duration::from_millis(500)) else {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        };
                        let born = Instant::now();
                        let _ = s.write_all(b"GET / HTTP/1.1\r\n");
                        while !stop.load(Ordering::Relaxed) && s.write_all(b"X").is_ok() {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        cut.fetch_max(born.elapsed().as_millis() as u64, Ordering::Relaxed);
                        rounds.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
        };
        // 2000 idle connections to the status port, 200 to the runtime socket.
        let idle: Vec<TcpStream> = lab.lb.enter(|| {
            (0..2000).filter_map(|_| TcpStream::connect_timeout(&stats, Duration::from_millis(200)).ok()).collect()
        });
        let unix: Vec<UnixStream> = (0..200).filter_map(|_| UnixStream::connect(agent.socket()).ok()).collect();
        eprintln!(
            "{} idle status connections, {} runtime sessions open; agent has {} fds",
            idle.len(),
            unix.len(),
            fd_count(agent.pid())
        );
        std::thread::sleep(Duration::from_millis(500));
        // Now a server dies.
        let victim = &lab.backends[2];
        let killed = Instant::now();
        victim.ns.kill_all();
        let limit = Duration::from_millis(INTER_MS * FALL + TIMEOUT_MS);
        while kernel_set(agent.pin_dir()).contains(&3) {
            assert!(killed.elapsed() < limit * 4, "app3 still in the kernel set {:?} after the kill", killed.elapsed());
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = killed.elapsed();
        let set_after = kernel_set(agent.pin_dir());
        // Keep the pressure on a while longer for the slowloris to be cut.
        std::thread::sleep(Duration::from_secs(6));
        stop.store(true, Ordering::Relaxed);
        slowloris.join().unwrap();
        (idle, unix, took, set_after)
    });
    let limit = Duration::from_millis(INTER_MS * FALL + TIMEOUT_MS);
    eprintln!("app3 out of the kernel set {took:?} after the kill (limit inter*fall+timeout = {limit:?})");
    assert!(took <= limit, "DOWN after {took:?} under local pressure, limit {limit:?}");
    assert_eq!(set_after, vec![1, 2], "the kernel set lost app3 only");
    agent.wait_log("Server pool/app3 is DOWN", 1, Duration::from_secs(1)).unwrap();
    // Slow clients are cut at the head deadline (5 s), however slowly they trickle.
    let longest = Duration::from_millis(slow_cut.load(Ordering::Relaxed));
    assert!(slow_rounds.load(Ordering::Relaxed) >= 1, "the slowloris was cut off at least once");
    assert!(longest < Duration::from_secs(7), "a trickling client held on for {longest:?}");
    // The agent held no more descriptors than its budget allows, and answers again.
    let fds = fd_count(agent.pid());
    assert!(fds < 600, "agent holds {fds} descriptors");
    drop((idle, unix));
    std::thread::sleep(Duration::from_millis(200));
    let snap = lab.lb.enter(|| lb_user::report::http::fetch(stats)).expect("the page answers once the crowd left");
    assert_eq!(snap.pid, agent.pid());
    let spread = lab
        .client
        .enter(|| (0..20).map(|_| connect(SocketAddrV4::new(lab.vip, PORT).into()).unwrap().1).collect::<Vec<_>>());
    assert!(!spread.iter().any(|n| n == "app3"), "{spread:?}");
}

fn runtime(socket: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    writeln!(s, "{line}").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Runs `socat` as uid/gid `ids` (no supplementary groups) against `socket`.
fn runtime_as(ids: (u32, u32), socket: &Path, line: &str) -> (bool, String) {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={}", ids.0),
        &format!("--regid={}", ids.1),
        "--clear-groups",
        "socat",
        "-t",
        "2",
        "stdio",
    ]);
    c.arg(format!("unix-connect:{}", socket.display()));
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    // A refused connect ends socat before it reads its input: the write may then meet a closed
    // pipe. What counts is socat's status and output.
    let _ = writeln!(child.stdin.take().unwrap(), "{line}");
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_read_only_socket_for_a_monitoring_group_and_the_admin_socket_for_root() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-levels-"));
    std::fs::create_dir_all(&dir).unwrap();
    let monitor = dir.join("monitor.sock");
    // nogroup (65534) stands for a monitoring agent's group.
    let global =
        format!("[[global.runtime_sockets]]\npath = \"{}\"\nlevel = \"user\"\ngroup = \"65534\"\n", monitor.display());
    let cfg = config(&lab, "").replace("[global]\n\n", &format!("[global]\n{global}\n"));
    let agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let nobody = (65534, 65534);
    // The monitoring user reads...
    let (ok, out) = runtime_as(nobody, &monitor, "show stat");
    assert!(ok && out.lines().any(|l| l.starts_with("pool,app1,")), "{out}");
    let (_, out) = runtime_as(nobody, &monitor, "show servers state pool");
    assert!(out.contains("app2"), "{out}");
    // ... and changes nothing, whatever it asks.
    for line in
        ["set server pool/app1 state maint", "disable health pool/app1", "reload", "shutdown sessions server pool/app1"]
    {
        let (_, out) = runtime_as(nobody, &monitor, line);
        assert_eq!(out.trim(), "Permission denied", "{line}: {out}");
    }
    // The level is the socket's: root on it cannot change anything either.
    assert_eq!(runtime(&monitor, "set server pool/app1 state drain").trim(), "Permission denied");
    // A user outside the group is turned away by the agent, though the file lets it connect.
    let (_, out) = runtime_as((65534, 100), &monitor, "show stat");
    assert_eq!(out.trim(), "Permission denied", "{out}");
    // The admin socket is root's: the monitoring user cannot even connect.
    let (ok, out) = runtime_as(nobody, &agent.socket(), "show stat");
    assert!(!ok && out.contains("Permission denied"), "{out}");
    assert_eq!(runtime(&agent.socket(), "set server pool/app1 state drain").trim(), "");
    let (_, out) = runtime_as(nobody, &monitor, "show stat");
    assert!(out.lines().any(|l| l.starts_with("pool,app1,") && l.contains(",DRAIN,")), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

fn holder(ns: &NetNs) -> std::process::Child {
    let c = ns.spawn("socat", &["TCP-LISTEN:8404,bind=127.0.0.1,reuseaddr,fork", "SYSTEM:true"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ns.exec(&["ss", "-Htln", "sport = :8404"]).unwrap().trim().is_empty() {
        assert!(Instant::now() < deadline, "socat does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    c
}

#[test]
fn a_taken_status_address_is_named_and_the_agent_runs_without_the_page_until_it_is_free() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let mut squatter = holder(&lab.lb);
    let mut agent = Agent::start(&lab.lb, &config(&lab, ""), &lab.lb_ifaces, "native").unwrap();
    let log = agent.log_text();
    let named = format!(
        "global.stats_bind 127.0.0.1:8404: Address already in use (os error 98), held by pid {} (socat) of user root",
        squatter.id()
    );
    assert!(log.contains(&named), "{log}");
    // The checks run all the same.
    agent.wait_log("first checks done", 1, Duration::from_secs(5)).unwrap();
    let _ = squatter.kill();
    let _ = squatter.wait();
    agent
        .wait_log("status page on http://127.0.0.1:8404/ now that the address is free", 1, Duration::from_secs(5))
        .unwrap();
    let snap = lab.lb.enter(|| lb_user::report::http::fetch("127.0.0.1:8404".parse().unwrap())).unwrap();
    assert_eq!(snap.pid, agent.pid());
    drop(agent);

    // With stats_required, the same is a refusal that names the holder.
    let mut squatter = holder(&lab.lb);
    let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-required-"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("xdplb.toml");
    std::fs::write(&cfg, config(&lab, "stats_required = true")).unwrap();
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/{}", integration::netns::unique("xdplb-required-")));
    let out = lab
        .lb
        .command(&xdplb_bin().unwrap())
        .args(["run", "--config", cfg.to_str().unwrap(), "--iface", "eth0", "--pin-dir"])
        .arg(&pins)
        .arg("--runtime-socket")
        .arg(dir.join("s.sock"))
        .arg("--state-file")
        .arg(dir.join("state.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("held by pid {} (socat)", squatter.id())) && err.contains("stats_required"), "{err}");
    let _ = squatter.kill();
    let _ = squatter.wait();
    integration::agent::remove_data_path(&pins);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_status_page_asks_for_its_password() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let agent =
        Agent::start(&lab.lb, &config(&lab, "stats_auth = \"admin:s3cret\""), &lab.lb_ifaces, "native").unwrap();
    let stats: SocketAddr = "127.0.0.1:8404".parse().unwrap();
    let err = lab.lb.enter(|| lb_user::report::http::fetch(stats)).unwrap_err().to_string();
    assert!(err.contains("wants credentials"), "{err}");
    let err = lab.lb.enter(|| lb_user::report::http::fetch_with(stats, Some("admin:wrong"))).unwrap_err().to_string();
    assert!(err.contains("wants credentials"), "{err}");
    let snap = lab.lb.enter(|| lb_user::report::http::fetch_with(stats, Some("admin:s3cret"))).unwrap();
    assert_eq!(snap.pid, agent.pid());
    let metrics = lab.lb.enter(|| {
        let mut s = TcpStream::connect(stats).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    assert!(metrics.starts_with("HTTP/1.1 401 ") && metrics.contains("WWW-Authenticate: Basic"), "{metrics}");
    assert!(!agent.log_text().contains("s3cret"), "the password is never logged");
}
