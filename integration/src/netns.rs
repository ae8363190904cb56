//! Network namespaces with unique names, removed (with every process in them) on drop, so a
//! failing test leaves nothing behind and tests can run side by side.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test of this run (or a concurrent run) uses: prefix, pid, counter, and a
/// random tag (runs in other pid namespaces share /run/netns and may have the same pid).
pub fn unique(prefix: &str) -> String {
    use std::hash::BuildHasher;
    static TAG: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    let tag = TAG.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u16);
    format!("{prefix}{}x{}{tag:04x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Runs a command, failing with its stderr when it fails.
pub fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A namespace named `prefix` + something unique to this process and call.
    pub fn new(prefix: &str) -> Result<Self> {
        Self::create(unique(prefix))
    }

    /// A namespace with a fixed name (the lab's), replacing whatever a crashed run left there.
    pub fn fixed(name: &str) -> Result<Self> {
        if sh(Command::new("ip").args(["netns", "list"]))?.split_whitespace().any(|n| n == name) {
            drop(NetNs { name: name.to_string() });
        }
        Self::create(name.to_string())
    }

    fn create(name: String) -> Result<Self> {
        sh(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        sh(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        sh(Command::new("ip").args(["netns", "exec", &self.name]).args(args))
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")]).map(|_| ())
    }

    /// A command that will run inside the namespace (network only: the host's mounts, so
    /// bpffs pins made there are visible to the test).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name)).arg("--").arg(program);
        c
    }

    /// Starts a process in the namespace; the namespace's drop kills it, so a caller may let
    /// the handle go.
    #[must_use = "keep the Child to kill it early; dropping it leaves the process to the namespace"]
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Child> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {program} in {}", self.name))
    }

    /// Runs `f` on a thread that has entered this namespace (setns is per thread).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.handle().enter(f)
    }

    /// A handle that can enter the namespace from other threads (it does not own it).
    pub fn handle(&self) -> NsHandle {
        NsHandle(self.name.clone())
    }
}

#[derive(Clone, Debug)]
pub struct NsHandle(String);

impl NsHandle {
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl NetNs {
    /// A non-blocking TCP listener on `port` of every address of the namespace (for a server
    /// the test process runs itself).
    pub fn tcp_listener(&self, port: u16) -> Result<std::net::TcpListener> {
        let l = self.enter(|| std::net::TcpListener::bind(std::net::SocketAddr::from(([0, 0, 0, 0], port))))?;
        l.set_nonblocking(true)?;
        Ok(l)
    }

    /// SIGKILLs every process in the namespace (and only those).
    /// SIGKILLs every process in the namespace and returns once they are gone from it and no
    /// TCP listener is left (a dying process leaves the namespace before the last close of its
    /// sockets has run: until then its listener still completes handshakes, which it then
    /// resets), or after 5 s.
    pub fn kill_all(&self) {
        let pids = || -> Vec<i32> {
            sh(Command::new("ip").args(["netns", "pids", &self.name]))
                .map(|out| out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
                .unwrap_or_default()
        };
        for pid in pids() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // `/proc/net/tcp` in the namespace: the 4th column is the state, 0A = LISTEN.
        let listening = || {
            self.exec(&["cat", "/proc/net/tcp"])
                .is_ok_and(|t| t.lines().skip(1).any(|l| l.split_whitespace().nth(3) == Some("0A")))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while (!pids().is_empty() || listening()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A veth pair with one end in each namespace, both up.
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> Result<()> {
    sh(Command::new("ip").args([
        "link", "add", "name", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]))?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    keep_flow_order(a, a_if)?;
    keep_flow_order(b, b_if)
}

/// veth hands a frame to a peer without NAPI through the sending CPU's backlog, so two segments
/// of one flow sent from different CPUs can arrive swapped (seen: a client's ACK behind its own
/// FIN, which a server in TIME_WAIT then counts in `TcpExtPAWSTimewait`). RPS queues each flow on
/// one CPU chosen by its hash, as a real NIC's RSS does, and so keeps every flow in order.
/// `XDPLB_LAB_NO_RPS=1` leaves it off (to measure what it costs a benchmark's contenders).
fn keep_flow_order(ns: &NetNs, iface: &str) -> Result<()> {
    if std::env::var_os("XDPLB_LAB_NO_RPS").is_some_and(|v| v == "1") {
        return Ok(());
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).min(32);
    let mask = format!("{:x}", (1u64 << cpus) - 1);
    ns.exec(&["sh", "-c", &format!("echo {mask} > /sys/class/net/{iface}/queues/rx-0/rps_cpus")]).map(|_| ())
}
