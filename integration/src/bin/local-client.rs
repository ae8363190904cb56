//! A client process on the balancer host, for the connect hook's tests, the co-located lab and
//! the benchmark. It first moves itself into a cgroup (`--cgroup DIR`: the hook acts on the
//! sockets of the cgroups it is attached to, fixed when a socket is made), then:
//!
//! - `local-client [--cgroup DIR] ADDR:PORT COUNT`: COUNT connections one after another, each
//!   reading the server's name line; one line each: `ok NAME PEER` (PEER: what getpeername()
//!   said) or `err KIND MICROS MESSAGE` (KIND: `refused` for ECONNREFUSED, else `other`);
//! - `local-client [--cgroup DIR] --rate SECS ADDR:PORT...`: connect() and close as fast as one
//!   thread goes for SECS seconds, to the addresses in turn; prints `connects N SECS`.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

fn usage() -> ! {
    eprintln!(
        "usage: local-client [--cgroup DIR] ADDR:PORT COUNT | local-client [--cgroup DIR] --rate SECS ADDR:PORT..."
    );
    std::process::exit(2);
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--cgroup") {
        let Some(dir) = args.get(1).cloned() else { usage() };
        if let Err(e) = std::fs::write(format!("{dir}/cgroup.procs"), std::process::id().to_string()) {
            eprintln!("local-client: cannot join the cgroup {dir}: {e}");
            std::process::exit(1);
        }
        args.drain(..2);
    }
    if args.first().map(String::as_str) == Some("--rate") {
        let Some(secs) = args.get(1) else { usage() };
        let secs: f64 = secs.parse().unwrap_or_else(|_| usage());
        let addrs: Vec<SocketAddr> = args[2..].iter().map(|a| a.parse().unwrap_or_else(|_| usage())).collect();
        if addrs.is_empty() {
            usage();
        }
        rate(&addrs, Duration::from_secs_f64(secs));
        return;
    }
    let (Some(addr), Some(count)) = (args.first(), args.get(1)) else { usage() };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|_| usage());
    let count: usize = count.parse().unwrap_or_else(|_| usage());
    for _ in 0..count {
        let t0 = Instant::now();
        match once(addr) {
            Ok((name, peer)) => println!("ok {name} {peer}"),
            Err(e) => {
                let kind = if e.kind() == std::io::ErrorKind::ConnectionRefused { "refused" } else { "other" };
                println!("err {kind} {} {e}", t0.elapsed().as_micros());
            }
        }
    }
}

fn once(addr: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    let peer = s.peer_addr()?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut name = String::new();
    BufReader::new(s).read_line(&mut name)?;
    if name.is_empty() {
        return Err(std::io::Error::other("closed before the server named itself"));
    }
    Ok((name.trim().to_string(), peer))
}

fn rate(addrs: &[SocketAddr], secs: Duration) {
    let start = Instant::now();
    let mut n = 0u64;
    for addr in addrs.iter().cycle() {
        if start.elapsed() >= secs {
            break;
        }
        match TcpStream::connect_timeout(addr, Duration::from_secs(5)) {
            Ok(s) => {
                abort(s);
                n += 1;
            }
            Err(e) => {
                eprintln!("local-client: connect {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("connects {n} {:.3}", start.elapsed().as_secs_f64());
}

/// Closes with a RST (SO_LINGER 0): a loop of connect() and close() would otherwise leave a
/// TIME_WAIT per connection and run out of local ports within seconds.
fn abort(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket, and a linger struct of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
