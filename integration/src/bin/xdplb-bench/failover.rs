//! `failover`: a server dies while clients open new connections, with the seed's check settings
//! (inter 2 s, fall 3, rise 2, TCP checks on both sides), HAProxy beside xdplb in one run. Two
//! faults: the server's process killed (its kernel refuses SYNs) and its link down (SYNs go
//! unanswered). Per contender and fault: how long until the balancer takes the server out of
//! rotation (HAProxy: its `is DOWN` line; xdplb: the data path's suspicion, from its pinned map),
//! and what the clients saw: connections failed, cut in flight, delayed by a SYN retransmission.
//!
//! Each run gets a fresh lab, so no run inherits another's TIME_WAIT or a half-dead server.

use std::{
    fs,
    net::SocketAddrV4,
    path::Path,
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use integration::{
    agent::Agent,
    lab::{self, Lab},
    traffic::{open_until, FaultWindow, Opened, StopOnDrop},
};
use lb_user::dataplane::{counters::Counters, flows::monotonic_ns};
use serde_json::json;

use super::{spawn_haproxy, Args};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;
/// One client opening connections one after another, and one opening 8 side by side.
const CLIENTS: usize = 9;
/// The server that dies (app2, the second in the config: id 2 in xdplb's maps).
const VICTIM: usize = 1;
/// HAProxy retries a failed connect up to `retries` (3) times, each up to `timeout connect`:
/// the clients wait for its verdict that long.
const TIMEOUT_CONNECT_S: u64 = 5;
const CLIENT_PATIENCE: Duration = Duration::from_secs(4 * TIMEOUT_CONNECT_S + 5);

#[derive(Clone, Copy, PartialEq)]
enum Contender {
    /// The seed's haproxy.cfg: `retries` 3 (the default), no `option redispatch`.
    HaproxySeed,
    /// The same with `option redispatch`: a retry goes to another server.
    HaproxyRedispatch,
    Xdplb,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::HaproxySeed => "HAProxy 2.6, the seed's config (retries 3, no redispatch)",
            Contender::HaproxyRedispatch => "HAProxy 2.6, option redispatch, retries 3",
            Contender::Xdplb => "xdplb, native XDP (retries 3, redispatch, suspect_after 3)",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Killed,
    LinkDown,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Killed => "process killed (SYNs refused)",
            Fault::LinkDown => "link down (SYNs unanswered)",
        }
    }
    fn inflict(self, lab: &Lab) -> Result<()> {
        let ns = &lab.backends[VICTIM].ns;
        match self {
            Fault::Killed => ns.kill_all(),
            Fault::LinkDown => {
                ns.ip(&["link", "set", "eth0", "down"])?;
            }
        }
        Ok(())
    }
}

#[derive(serde::Serialize)]
struct Figures {
    /// Seconds from the fault until the server got no new flow; None: not within the run.
    out_after_s: Option<f64>,
    connections: u64,
    failed: usize,
    in_flight_cut: usize,
    /// Connections that took over 900 ms (a SYN retransmission, or a proxy's retry).
    delayed: u64,
    slowest_ms: f64,
    first_failures: Vec<String>,
}

enum Running {
    Haproxy { _child: ChildGuard, log: std::path::PathBuf },
    Xdplb(Agent),
}

/// Kills HAProxy when dropped, also when the run fails.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(c: Contender, lab: &Lab, tmp: &Path) -> Result<Running> {
    Ok(match c {
        Contender::HaproxySeed | Contender::HaproxyRedispatch => {
            let servers: Vec<String> = lab
                .backends
                .iter()
                .map(|b| format!("  server {} {}:{BACKEND_PORT} check inter 2s fall 3 rise 2\n", b.name, b.addr))
                .collect();
            let redispatch = if c == Contender::HaproxyRedispatch { "  option redispatch\n" } else { "" };
            let cfg = tmp.join("haproxy.cfg");
            fs::write(
                &cfg,
                format!(
                    "global\n  nbthread 2\ndefaults\n  mode tcp\n  retries 3\n{redispatch}  timeout connect {TIMEOUT_CONNECT_S}s\n  timeout client 60s\n  timeout server 60s\n\
                     frontend in\n  bind {}:{PORT}\n  default_backend pool\nbackend pool\n  balance roundrobin\n{}",
                    lab.vip,
                    servers.concat()
                ),
            )?;
            let log = tmp.join("haproxy.log");
            let child = spawn_haproxy(lab, &cfg, PORT, &log)?;
            Running::Haproxy { _child: ChildGuard(child), log }
        }
        Contender::Xdplb => {
            let config = lab::config(lab, PORT, BACKEND_PORT, "", &[]).replace(
                "name = \"pool\"\n",
                "name = \"pool\"\ncheck = { type = \"tcp\", inter = \"2s\", rise = 2, fall = 3 }\n",
            );
            let mut agent = Agent::start(&lab.lb, &config, &lab.lb_ifaces, "native")?;
            agent.wait_log("ready:", 1, Duration::from_secs(10))?;
            Running::Xdplb(agent)
        }
    })
}

/// When the contender stopped giving the victim new flows, in monotonic ns; None: not yet.
fn out_of_rotation_ns(r: &Running, victim: &str) -> Option<u64> {
    match r {
        Running::Haproxy { log, .. } => {
            fs::read_to_string(log).ok()?.contains(&format!("pool/{victim} is DOWN")).then(monotonic_ns)
        }
        Running::Xdplb(agent) => {
            let id = u32::try_from(VICTIM + 1).ok()?;
            let s = Counters::open_pinned(agent.pin_dir()).ok()?.suspicion(id).ok()?;
            if s.since_ns > 0 {
                Some(s.since_ns)
            } else {
                agent.log_text().contains(&format!("pool/{victim} is DOWN")).then(monotonic_ns)
            }
        }
    }
}

fn run_once(c: Contender, fault: Fault, server_bin: &str) -> Result<Figures> {
    let lab = Lab::one_arm(3)?;
    lab.start_servers(server_bin, BACKEND_PORT)?;
    let tmp = std::env::temp_dir().join(integration::netns::unique("xdplb-bench-failover-"));
    fs::create_dir_all(&tmp)?;
    let running = start(c, &lab, &tmp)?;
    let victim = lab.backends[VICTIM].name.clone();
    let stop = AtomicBool::new(false);
    let window = FaultWindow::default();
    let vip = SocketAddrV4::new(lab.vip, PORT).into();
    let result = std::thread::scope(|sc| -> Result<(Opened, Option<f64>)> {
        let _stop = StopOnDrop(&stop);
        let clients = sc.spawn(|| open_until(&lab.client, vip, CLIENTS, CLIENT_PATIENCE, &stop, &window));
        std::thread::sleep(Duration::from_secs(2));
        let fault_ns = monotonic_ns();
        // Every contender is judged alike: an attempt started once the fault began counts.
        let began = *window.begun.get_or_init(Instant::now);
        window.done.get_or_init(|| began);
        fault.inflict(&lab)?;
        // HAProxy needs `fall` failed checks (up to 3 x 2 s, plus the first check's wait):
        // give every contender the same 15 s.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut out = None;
        while out.is_none() && Instant::now() < deadline {
            out = out_of_rotation_ns(&running, &victim);
            std::thread::sleep(Duration::from_millis(20));
        }
        // A second more of clients after it, then they finish what they started.
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = clients.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        #[allow(clippy::cast_precision_loss)]
        Ok((seen, out.map(|o| o.saturating_sub(fault_ns) as f64 / 1e9)))
    });
    drop(running);
    let _ = fs::remove_dir_all(&tmp);
    let (seen, out_after_s) = result?;
    if seen.ok < 50 {
        bail!("{}: the clients barely ran ({seen:?})", c.name());
    }
    Ok(Figures {
        out_after_s,
        connections: seen.ok + (seen.failed.len() + seen.in_flight.len()) as u64,
        failed: seen.failed.len(),
        in_flight_cut: seen.in_flight.len(),
        delayed: seen.slow,
        slowest_ms: seen.slowest.as_secs_f64() * 1e3,
        first_failures: seen.failed.iter().take(3).cloned().collect(),
    })
}

pub fn bench(args: &Args) -> Result<serde_json::Value> {
    let server_bin = std::env::current_exe()?
        .parent()
        .context("the benchmark's directory")?
        .join("lbtest-server")
        .to_string_lossy()
        .into_owned();
    // The quick run keeps one fault and the two contenders that matter, so that it cannot rot.
    let faults: &[Fault] = if args.quick { &[Fault::Killed] } else { &[Fault::Killed, Fault::LinkDown] };
    let contenders: &[Contender] = if args.quick {
        &[Contender::HaproxySeed, Contender::Xdplb]
    } else {
        &[Contender::HaproxySeed, Contender::HaproxyRedispatch, Contender::Xdplb]
    };
    println!(
        "\n### A server dies under {CLIENTS} clients opening connections (1 one after another, 8 side by side), inter 2 s, fall 3, rise 2\n"
    );
    println!("| fault | contender | out of rotation after | connections | failed | cut in flight | delayed > 0.9 s | slowest |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut out = serde_json::Map::new();
    for &fault in faults {
        for &c in contenders {
            eprintln!("failover: {} / {}", fault.name(), c.name());
            let f = run_once(c, fault, &server_bin).with_context(|| format!("{} / {}", fault.name(), c.name()))?;
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} ms |",
                fault.name(),
                c.name(),
                f.out_after_s.map_or_else(|| "not within 15 s".to_string(), |s| format!("{s:.2} s")),
                f.connections,
                f.failed,
                f.in_flight_cut,
                f.delayed,
                f.slowest_ms
            );
            out.insert(format!("{} / {}", fault.name(), c.name()), json!(f));
        }
    }
    println!("\nfailed: attempts started after the fault that got no answer; cut in flight: connections already under way when their server died (no balancer saves those).");
    Ok(serde_json::Value::Object(out))
}
