//! New connections as fast as they go (or at a set pace), from inside a client namespace: each
//! connects, optionally sends a request, reads until the server closes, and closes. What is
//! measured is what the kernel counts (`netstat`) and what each connect() took, not a guess.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::netns::{NetNs, NsHandle};

/// What one client host's threads did.
#[derive(Debug, Default, Clone)]
pub struct Churn {
    pub ok: u64,
    /// The first few failures, as text, and how many there were.
    pub failures: Vec<String>,
    pub failed: u64,
    /// How long each successful connect() took, in microseconds.
    pub connect_us: Vec<u32>,
}

impl Churn {
    pub fn merge(mut self, o: Churn) -> Churn {
        self.ok += o.ok;
        self.failed += o.failed;
        self.failures.extend(o.failures.into_iter().take(5usize.saturating_sub(self.failures.len())));
        self.connect_us.extend(o.connect_us);
        self
    }

    /// The `q` quantile (0..=1) of connect() times, in microseconds.
    pub fn connect_quantile(&self, q: f64) -> f64 {
        let mut v = self.connect_us.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_unstable();
        v[((v.len() - 1) as f64 * q).round() as usize] as f64
    }
}

/// How the load runs.
#[derive(Clone)]
pub struct Load {
    /// Threads (connections in flight) per client host.
    pub threads: usize,
    pub duration: Duration,
    /// At most this many connections per second per client host (`None`: as fast as it goes).
    pub rate: Option<f64>,
    /// Sent after connecting (e.g. an HTTP request); nothing when empty.
    pub request: Vec<u8>,
}

fn one(target: SocketAddr, request: &[u8]) -> anyhow::Result<u32> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    let took = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    if !request.is_empty() {
        s.write_all(request)?;
    }
    let mut buf = [0u8; 4096];
    let mut got = 0;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            n => got += n,
        }
    }
    if got == 0 {
        anyhow::bail!("closed before answering");
    }
    Ok(took)
}

/// Runs `load` from `client` against `targets` (thread i uses target i % len) until the
/// duration ends or `stop` is set.
pub fn run(client: NsHandle, targets: &[SocketAddr], load: &Load, stop: &AtomicBool) -> Churn {
    let until = Instant::now() + load.duration;
    let per_thread_gap = load.rate.map(|r| Duration::from_secs_f64(load.threads as f64 / r));
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..load.threads)
            .map(|t| {
                let client = client.clone();
                let target = targets[t % targets.len()];
                let request = &load.request;
                sc.spawn(move || {
                    client.enter(|| {
                        let mut c = Churn::default();
                        let mut next = Instant::now()
                            + per_thread_gap.map(|g| g.mul_f64(t as f64 / load.threads as f64)).unwrap_or_default();
                        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                            if let Some(gap) = per_thread_gap {
                                let now = Instant::now();
                                if next > now {
                                    std::thread::sleep(next - now);
                                }
                                next += gap;
                            }
                            match one(target, request) {
                                Ok(us) => {
                                    c.ok += 1;
                                    c.connect_us.push(us);
                                }
                                Err(e) => {
                                    c.failed += 1;
                                    if c.failures.len() < 5 {
                                        c.failures.push(format!("{target}: {e:#}"));
                                    }
                                }
                            }
                        }
                        c
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).fold(Churn::default(), Churn::merge)
    })
}

/// A counter of the kernel's SNMP tables in `ns` (`/proc/net/netstat` and `/proc/net/snmp`),
/// e.g. `TcpExtPAWSTimewait`, `TcpExtTCPSynRetrans`, `TcpRetransSegs`.
pub fn netstat(ns: &NetNs, name: &str) -> anyhow::Result<u64> {
    let text = ns.exec(&["cat", "/proc/net/netstat", "/proc/net/snmp"])?;
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [head, values] = pair else { continue };
        let (Some((prefix, names)), Some((_, vals))) = (head.split_once(':'), values.split_once(':')) else { continue };
        for (n, v) in names.split_whitespace().zip(vals.split_whitespace()) {
            if format!("{prefix}{n}") == name {
                return Ok(v.parse()?);
            }
        }
    }
    anyhow::bail!("no counter {name} in {}", ns.name)
}
