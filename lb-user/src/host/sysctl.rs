//! The kernel settings the data path relies on, set with a log line each.

use std::{fs, io, path::PathBuf};

use crate::config::PortRange;

/// Keys are written with `/` (`net/ipv4/conf/eth0.100/forwarding`): interface names may hold dots.
fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key)
}

pub fn read(key: &str) -> io::Result<String> {
    Ok(fs::read_to_string(path(key))?.trim().to_string())
}

/// Writes `value` unless it is already set; says whether it changed anything.
pub fn ensure(key: &str, value: &str) -> io::Result<bool> {
    if read(key)? == value {
        return Ok(false);
    }
    fs::write(path(key), value)?;
    log::info!("sysctl {key} = {value}");
    Ok(true)
}

/// Adds `range` to `net.ipv4.ip_local_reserved_ports`, keeping what is there, so that no local
/// socket is ever given one of the NAT source ports.
pub fn reserve_ports(range: PortRange) -> io::Result<()> {
    const KEY: &str = "net/ipv4/ip_local_reserved_ports";
    let current = read(KEY)?;
    let ours = format!("{}-{}", range.first, range.last);
    if current.split(',').any(|r| r.trim() == ours) {
        return Ok(());
    }
    let value = if current.is_empty() { ours } else { format!("{current},{ours}") };
    ensure(KEY, &value).map(|_| ())
}

/// Takes `range` out of `net.ipv4.ip_local_reserved_ports` (a reload that moved the NAT ports,
/// `xdplb detach`), keeping the rest as it is.
pub fn release_ports(range: PortRange) -> io::Result<()> {
    const KEY: &str = "net/ipv4/ip_local_reserved_ports";
    let current = read(KEY)?;
    let ours = format!("{}-{}", range.first, range.last);
    let rest: Vec<&str> = current.split(',').map(str::trim).filter(|r| !r.is_empty() && *r != ours).collect();
    if rest.len() == current.split(',').filter(|r| !r.trim().is_empty()).count() {
        return Ok(());
    }
    // The kernel prints single ports as "N" and ranges as "A-B"; an empty write clears it.
    let value = rest.join(",");
    fs::write(path(KEY), if value.is_empty() { "\n".to_owned() } else { value.clone() })?;
    log::info!("sysctl {KEY} = {value:?} ({ours} released)");
    Ok(())
}

/// Per-interface settings for an attached interface:
/// - `forwarding`: `bpf_fib_lookup` answers only for interfaces that forward, and a rewritten
///   packet handed to the kernel (no neighbour entry yet) is forwarded by it;
/// - `accept_local`: such a packet carries our own address as its source;
/// - `send_redirects` off: the kernel must not tell clients to bypass the balancer.
pub fn prepare_interface(iface: &str) -> io::Result<()> {
    for (key, value) in [("forwarding", "1"), ("accept_local", "1"), ("send_redirects", "0")] {
        ensure(&format!("net/ipv4/conf/{iface}/{key}"), value)?;
    }
    Ok(())
}
