//! The shipped systemd unit: hardened (its `systemd-analyze security` exposure asserted), and
//! the agent really runs under it. systemd is not PID 1 on the machines the tests run on, so the
//! unit's restrictions are applied by `xdplb-sandbox`, which reads them from the unit file
//! itself (capability bounding set, no new privileges, the system call allow list expanded by
//! systemd-analyze, address families, W^X, a read-only system and /proc/sys, writable only
//! where ReadWritePaths says, the file limits). Under them the agent attaches, checks, serves
//! its page and its socket, reloads, tells systemd it is ready and pings the watchdog.

use std::{
    net::SocketAddrV4,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration::{
    agent::xdplb_bin,
    lab::{self, Lab},
    netns::unique,
    traffic::connect,
};
use lb_user::report::snapshot::ServerState;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/xdplb.service");
/// What the shipped unit must score at most (0 is best, 10 is no sandbox at all).
const MAX_EXPOSURE: f64 = 2.5;

fn sandbox() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xdplb-sandbox"));
    c.args(["--unit", UNIT]);
    c
}

#[test]
fn the_unit_verifies_and_its_exposure_is_at_most_2_5() {
    let dir = std::env::temp_dir().join(unique("xdplb-unit-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("xdplb.service");
    let unit = std::fs::read_to_string(UNIT).unwrap();
    std::fs::write(&path, unit.replace("/usr/local/bin/xdplb", &xdplb_bin().unwrap())).unwrap();
    let out = Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for xdplb.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{text}{}", String::from_utf8_lossy(&out.stderr)));
    eprintln!("systemd-analyze security: {score}");
    assert!(score <= MAX_EXPOSURE, "exposure {score} > {MAX_EXPOSURE}:\n{text}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `sh -c script` under the unit's sandbox; (success, stdout+stderr).
fn sh_in_sandbox(script: &str) -> (bool, String) {
    let out = sandbox().args(["--", "sh", "-c", script]).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_sandbox_is_in_force() {
    // Capabilities: exactly the three.
    let (_, status) = sh_in_sandbox("grep CapBnd /proc/self/status");
    assert!(status.contains("CapBnd:\t000000c000001000"), "CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF only: {status}");
    // /proc/sys is read-only but for what the unit allows.
    let (ok, out) = sh_in_sandbox("echo 4096 > /proc/sys/net/core/somaxconn");
    assert!(!ok && out.contains("Read-only file system"), "{out}");
    let (ok, out) =
        sh_in_sandbox("cat /proc/sys/net/ipv4/ip_local_reserved_ports > /proc/sys/net/ipv4/ip_local_reserved_ports");
    assert!(ok, "the NAT port reservation is writable: {out}");
    // The system is read-only.
    let (ok, out) = sh_in_sandbox("touch /usr/xdplb-sandbox-test");
    assert!(!ok && out.contains("Read-only file system"), "{out}");
    // A system call outside @system-service fails with EPERM (any process may make it unfiltered).
    let out = sandbox().args(["--", "@probe"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ptrace: Operation not permitted"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let (_, out) = sh_in_sandbox("grep Seccomp: /proc/self/status");
    assert!(out.contains("Seccomp:\t2"), "a filter is in force: {out}");
    // No new privileges.
    let (_, out) = sh_in_sandbox("grep NoNewPrivs /proc/self/status");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
}

/// Waits for `want` on the notify socket; returns every message seen.
fn wait_notify(
    sock: &UnixDatagram,
    want: &str,
    within: Duration,
    agent: &mut std::process::Child,
    log: &Path,
) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while start.elapsed() < within {
        if let Ok(Some(status)) = agent.try_wait() {
            panic!("the sandboxed agent exited ({status}):\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = m == want;
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want} within {within:?}: {seen:?}");
}

#[test]
fn the_agent_attaches_checks_serves_and_reloads_under_the_units_restrictions() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(env!("CARGO_BIN_EXE_lbtest-server"), 2379).unwrap();
    let dir = std::env::temp_dir().join(unique("xdplb-sandboxed-"));
    std::fs::create_dir_all(&dir).unwrap();
    let pins = PathBuf::from("/sys/fs/bpf").join(unique("xdplb-sandboxed-"));
    let cfg = dir.join("xdplb.toml");
    let text = lab::config(&lab, 12379, 2379, "", &[])
        .replace("name = \"pool\"\n", "name = \"pool\"\ncheck = { type = \"tcp\", inter = \"300ms\" }\n");
    std::fs::write(&cfg, &text).unwrap();
    let notify = UnixDatagram::bind(dir.join("notify.sock")).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let sock = dir.join("xdplb.sock");
    let log = dir.join("agent.log");
    let mut agent = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.lb.name))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_xdplb-sandbox"))
        .args(["--unit", UNIT, "--rw"])
        .arg(&dir)
        .arg("--")
        .arg(xdplb_bin().unwrap())
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--iface", "eth0", "--xdp-mode", "native", "--pin-dir"])
        .arg(&pins)
        .arg("--runtime-socket")
        .arg(&sock)
        .arg("--state-file")
        .arg(dir.join("state.json"))
        .env("NOTIFY_SOCKET", dir.join("notify.sock"))
        .env("WATCHDOG_USEC", "600000")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // READY once attached and checked, then the watchdog every 300 ms.
    let seen = wait_notify(&notify, "READY=1", Duration::from_secs(30), &mut agent, &log);
    let guard = Cleanup { child: &mut agent, pins: &pins, dir: &dir, log: &log };
    assert!(seen.iter().all(|m| m != "STOPPING=1"), "{seen:?}");
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let mut buf = [0u8; 64];
        if let Ok(n) = notify.recv(&mut buf) {
            pings += usize::from(&buf[..n] == b"WATCHDOG=1");
        }
    }
    assert!(pings >= 3, "{pings} watchdog pings in 1.5 s at WatchdogSec=600ms");
    let agent_log = std::fs::read_to_string(&log).unwrap();
    assert!(agent_log.contains("XDP attached to eth0") && !agent_log.contains("ERROR"), "{agent_log}");
    // Checks: every server UP, on the status page.
    let snap = lab.lb.enter(|| lb_user::report::http::fetch("127.0.0.1:8404".parse().unwrap())).unwrap();
    let states: Vec<ServerState> = snap.backends[0].servers.iter().map(|s| s.state).collect();
    assert_eq!(states, [ServerState::Up; 3], "{snap:?}");
    assert!(snap.backends[0].servers.iter().all(|s| s.last_check.as_ref().is_some_and(|c| c.code.passed())));
    // The data path forwards.
    let vip = SocketAddrV4::new(lab.vip, 12379).into();
    let names: Vec<String> = lab.client.enter(|| (0..6).map(|_| connect(vip).unwrap().1).collect());
    assert_eq!(names.iter().filter(|n| *n == "app1").count(), 2, "{names:?}");
    // The runtime socket answers, and a reload (what ExecReload runs) applies.
    let out =
        Command::new(xdplb_bin().unwrap()).args(["runtime", "show", "info", "--socket"]).arg(&sock).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Name: xdplb"));
    std::fs::write(&cfg, text.replace("inter = \"300ms\"", "inter = \"250ms\"")).unwrap();
    let out = Command::new(xdplb_bin().unwrap()).args(["reload", "--socket"]).arg(&sock).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // It wrote the sysctls the unit lets it write, and nothing refused it.
    assert_eq!(lab.lb.exec(&["sysctl", "-n", "net.ipv4.conf.eth0.forwarding"]).unwrap().trim(), "1");
    let agent_log = std::fs::read_to_string(&log).unwrap();
    assert!(!agent_log.contains("Operation not permitted") && !agent_log.contains("Read-only"), "{agent_log}");
    drop(guard);
}

struct Cleanup<'a> {
    child: &'a mut std::process::Child,
    pins: &'a Path,
    dir: &'a Path,
    log: &'a Path,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", std::fs::read_to_string(self.log).unwrap_or_default());
        }
        integration::agent::remove_data_path(self.pins);
        let _ = std::fs::remove_dir_all(self.dir);
    }
}
