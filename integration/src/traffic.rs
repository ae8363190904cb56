//! Client-side traffic for the end-to-end tests (run inside the client namespace).

use std::{
    collections::hash_map::DefaultHasher,
    hash::Hasher,
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::NetNs;

/// Connects and reads the server's name line.
pub fn connect(addr: SocketAddr) -> Result<(TcpStream, String)> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut name = String::new();
    r.read_line(&mut name).with_context(|| format!("reading the server name from {addr}"))?;
    if name.is_empty() {
        bail!("{addr} closed before naming itself");
    }
    Ok((s, name.trim().to_string()))
}

/// Deterministic test data: xorshift64 from a seed.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern(seed | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Sends `bytes` of patterned data through an echo server and checks that exactly the same
/// bytes come back (hash and length compared). Returns the server's name.
pub fn echo_transfer(addr: SocketAddr, bytes: usize, seed: u64) -> Result<String> {
    let (s, name) = connect(addr)?;
    let mut w = s.try_clone()?;
    let writer = std::thread::spawn(move || -> Result<u64> {
        let mut p = Pattern::new(seed);
        let mut h = DefaultHasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len());
            p.fill(&mut buf[..n]);
            h.write(&buf[..n]);
            w.write_all(&buf[..n])?;
            left -= n;
        }
        w.shutdown(Shutdown::Write)?;
        Ok(h.finish())
    });
    let mut r = s;
    let mut h = DefaultHasher::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).with_context(|| format!("reading echo from {name} after {got} bytes"))?;
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
        got += n;
    }
    let sent = writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    if got != bytes || h.finish() != sent {
        bail!(
            "echo through {name} corrupted: sent {bytes} bytes, got {got}, hashes {}",
            if h.finish() == sent { "equal" } else { "differ" }
        );
    }
    Ok(name)
}

/// Sends a line and expects it back: the connection still works end to end.
pub fn ping(s: &mut TcpStream, msg: &str) -> Result<()> {
    s.write_all(msg.as_bytes())?;
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).context("reading the echo")?;
    if buf != msg.as_bytes() {
        bail!("echo mismatch: sent {msg:?}, got {:?}", String::from_utf8_lossy(&buf));
    }
    Ok(())
}

/// A long-lived connection that keeps echoing patterned data until `stop`, checking every byte
/// that comes back; `progress` counts the bytes verified so far. Returns the total, or the first
/// error (a reset, a timeout, a corrupted byte).
pub fn stream(
    addr: SocketAddr,
    seed: u64,
    stop: &std::sync::atomic::AtomicBool,
    progress: &std::sync::atomic::AtomicU64,
) -> Result<u64> {
    use std::sync::atomic::Ordering;
    let (mut s, name) = connect(addr)?;
    let (mut out, mut back) = (Pattern::new(seed), Pattern::new(seed));
    let (mut buf, mut want, mut got) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) {
        out.fill(&mut buf);
        s.write_all(&buf).with_context(|| format!("writing to {name} after {total} bytes"))?;
        s.read_exact(&mut got).with_context(|| format!("reading from {name} after {total} bytes"))?;
        back.fill(&mut want);
        if got != want {
            bail!("stream through {name} corrupted after {total} bytes");
        }
        total += got.len() as u64;
        progress.fetch_add(got.len() as u64, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
    }
    s.shutdown(Shutdown::Write)?;
    Ok(total)
}

/// Closes `s` with a RST (SO_LINGER with a zero timeout), as an aborting client does.
pub fn reset(s: TcpStream) -> Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket, and a linger struct of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("SO_LINGER: {}", std::io::Error::last_os_error());
    }
    drop(s);
    Ok(())
}

/// Sets its flag when dropped: clients stop also when the code that runs beside them fails.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// When a fault was being put in place (`open_until` classifies failures by it): from `begun`
/// (the kill sent, `ip link set down` run) to `done` (the process gone, the link down).
#[derive(Default, Debug)]
pub struct FaultWindow {
    pub begun: OnceLock<Instant>,
    pub done: OnceLock<Instant>,
}

impl FaultWindow {
    /// A failure of an attempt started at `t0`, seen now: in flight (true) when the attempt was
    /// under way before the fault was complete and failed once it had begun; a failure before
    /// the fault began, or of an attempt started after it was complete, is not.
    fn in_flight(&self, t0: Instant) -> bool {
        match (self.begun.get(), self.done.get()) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(done)) => t0 < *done,
        }
    }
}

/// What clients opening connections one after another saw (`open_until`).
#[derive(Default, Debug, Clone)]
pub struct Opened {
    pub ok: u64,
    /// Attempts started after the fault (or with no fault) that failed: connect() failed, or
    /// the server's name never came. What a balancer is there to prevent.
    pub failed: Vec<String>,
    /// Attempts already under way at the fault that failed: a connection whose server dies
    /// under it. No balancer saves those, and there is at most one per client.
    pub in_flight: Vec<String>,
    /// The slowest successful attempt, and how many took over 900 ms (a SYN retransmission).
    pub slowest: Duration,
    pub slow: u64,
}

impl Opened {
    fn merge(mut self, o: Opened) -> Opened {
        self.ok += o.ok;
        self.failed.extend(o.failed);
        self.in_flight.extend(o.in_flight);
        self.slowest = self.slowest.max(o.slowest);
        self.slow += o.slow;
        self
    }
}

/// `clients` clients in `ns`, each connecting to `addr`, reading the server's name and closing,
/// 20 ms apart, until `stop`. `read_timeout` bounds the wait for the name (a proxy accepts at
/// once and connects to its server afterwards, so its failures show there).
pub fn open_until(
    ns: &NetNs,
    addr: SocketAddr,
    clients: usize,
    read_timeout: Duration,
    stop: &AtomicBool,
    fault: &FaultWindow,
) -> Opened {
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..clients)
            .map(|_| {
                let ns = ns.handle();
                sc.spawn(move || {
                    ns.enter(|| {
                        let mut seen = Opened::default();
                        while !stop.load(Ordering::Relaxed) {
                            let t0 = Instant::now();
                            match open_once(addr, read_timeout) {
                                Ok(()) => {
                                    seen.ok += 1;
                                    let took = t0.elapsed();
                                    seen.slowest = seen.slowest.max(took);
                                    seen.slow += u64::from(took > Duration::from_millis(900));
                                }
                                Err(e) if fault.in_flight(t0) => seen.in_flight.push(format!("{e:#}")),
                                Err(e) => seen.failed.push(format!("{e:#}")),
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        seen
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).fold(Opened::default(), Opened::merge)
    })
}

fn open_once(addr: SocketAddr, read_timeout: Duration) -> Result<()> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(read_timeout))?;
    let mut name = String::new();
    BufReader::new(s).read_line(&mut name).with_context(|| format!("reading the server name from {addr}"))?;
    if name.is_empty() {
        bail!("{addr} closed before naming itself");
    }
    Ok(())
}

/// `n` connections from `ns` to `addr`, one after another: how many each server took.
pub fn spread(ns: &NetNs, addr: SocketAddr, n: usize) -> std::collections::HashMap<String, usize> {
    ns.enter(|| {
        let mut counts = std::collections::HashMap::new();
        for _ in 0..n {
            let (_s, name) = connect(addr).expect("connect through the balancer");
            *counts.entry(name).or_default() += 1;
        }
        counts
    })
}

/// `n` parallel echo transfers of `bytes` each from `ns` to `addr` (seeds from `seed`): each
/// one's server, or its error.
pub fn parallel_echo(ns: &NetNs, addr: SocketAddr, n: u64, bytes: usize, seed: u64) -> Vec<Result<String>> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let ns = ns.handle();
            std::thread::spawn(move || ns.enter(|| echo_transfer(addr, bytes, seed + i)))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("transfer thread panicked")))).collect()
}

/// Waits until the connection table pinned under `pin_dir` is empty (every flow closed and its
/// linger passed); fails with what is left after `within`.
pub fn wait_table_empty(pin_dir: &std::path::Path, within: Duration) -> Result<()> {
    let flows = lb_user::dataplane::flows::FlowTable::open_pinned(pin_dir)?;
    let deadline = Instant::now() + within;
    loop {
        let n = flows.entry_count();
        if n == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{n} connection table entries left: {:?}", flows.flows());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
