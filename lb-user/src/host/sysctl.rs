//! The kernel settings the data path relies on, set with a log line each and recorded, so that
//! `xdplb detach` can put back what was there before (`HostChanges`).
//!
//! What the agent changes: `net.ipv4.ip_local_reserved_ports` gains the NAT port range; on each
//! attached interface `forwarding=1`, `accept_local=1` and `send_redirects=0`; on an interface
//! in generic mode, GRO and LRO off.

use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::config::PortRange;

const RESERVED_PORTS: &str = "net/ipv4/ip_local_reserved_ports";

/// Keys are written with `/` (`net/ipv4/conf/eth0.100/forwarding`): interface names may hold dots.
fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key)
}

pub fn read(key: &str) -> io::Result<String> {
    Ok(fs::read_to_string(path(key))?.trim().to_string())
}

/// What one setting was before the agent first changed it, and what it set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub before: String,
    pub set: String,
}

/// Every change the agents of one data path made to this host (kept in `/run/xdplb`, which
/// lives as long as the settings do: until a reboot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub sysctls: BTreeMap<String, Change>,
    /// NAT port ranges added to `ip_local_reserved_ports`.
    pub reserved_ports: Vec<String>,
    /// What `ip_local_reserved_ports` held before the first range was added (those ports stay
    /// reserved when a range is released).
    #[serde(default)]
    pub reserved_before: Option<String>,
    /// Receive offloads turned off on interfaces in generic mode, keyed `IFACE/gro`, `IFACE/lro`,
    /// values `on` / `off`.
    #[serde(default)]
    pub offloads: BTreeMap<String, Change>,
}

/// The host changes of the data path pinned under one directory: made, recorded, undone.
pub struct HostChanges {
    file: PathBuf,
    record: Record,
}

impl HostChanges {
    /// The record of the data path pinned under `pin_dir` (empty if there is none yet).
    pub fn open(pin_dir: &Path) -> HostChanges {
        let file = super::service::run_file(pin_dir, "host-changes", ".json");
        let record = fs::read_to_string(&file).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        HostChanges { file, record }
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    fn save(&self) -> io::Result<()> {
        use std::io::Write as _;
        if let Some(dir) = self.file.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&self.file)?;
        f.write_all(serde_json::to_string_pretty(&self.record)?.as_bytes())
    }

    /// Writes `value` unless it is already set; the value it replaces is recorded first (once:
    /// a restarted agent does not record its own values as the host's).
    pub fn ensure(&mut self, key: &str, value: &str) -> io::Result<bool> {
        let current = read(key)?;
        if current == value {
            return Ok(false);
        }
        self.record.sysctls.entry(key.to_owned()).or_insert(Change { before: current, set: value.to_owned() });
        self.save()?;
        fs::write(path(key), value)?;
        log::info!("sysctl {key} = {value}");
        Ok(true)
    }

    /// Adds `range` to `net.ipv4.ip_local_reserved_ports`, keeping what is there, so that no
    /// local socket is ever given one of the NAT source ports.
    pub fn reserve_ports(&mut self, range: PortRange) -> io::Result<()> {
        let current = read(RESERVED_PORTS)?;
        let ours = format!("{}-{}", range.first, range.last);
        if self.record.reserved_before.is_none() {
            self.record.reserved_before = Some(current.clone());
        }
        if !self.record.reserved_ports.contains(&ours) {
            self.record.reserved_ports.push(ours.clone());
        }
        self.save()?;
        let mut ports = Ports::parse(&current);
        if ports.contains(range) {
            return Ok(());
        }
        ports.set(range, true);
        let value = ports.to_string();
        fs::write(path(RESERVED_PORTS), &value)?;
        log::info!("sysctl {RESERVED_PORTS} = {value}");
        Ok(())
    }

    /// Takes `range` out of `ip_local_reserved_ports` (a reload that moved the NAT ports,
    /// `xdplb detach`), keeping the rest as it is.
    pub fn release_ports(&mut self, range: PortRange) -> io::Result<()> {
        let ours = format!("{}-{}", range.first, range.last);
        self.record.reserved_ports.retain(|r| *r != ours);
        release(range, &self.record)?;
        self.save()
    }

    /// Per-interface settings for an attached interface:
    /// - `forwarding`: `bpf_fib_lookup` answers only for interfaces that forward, and a
    ///   rewritten packet handed to the kernel (no neighbour entry yet) is forwarded by it;
    /// - `accept_local`: such a packet carries our own address as its source;
    /// - `send_redirects` off: the kernel must not tell clients to bypass the balancer.
    pub fn prepare_interface(&mut self, iface: &str) -> io::Result<()> {
        for (key, value) in [("forwarding", "1"), ("accept_local", "1"), ("send_redirects", "0")] {
            self.ensure(&format!("net/ipv4/conf/{iface}/{key}"), value)?;
        }
        Ok(())
    }

    /// The same for IPv6 (a configuration with IPv6 servers): `bpf_fib_lookup` answers IPv6
    /// questions only for an interface that forwards IPv6. A forwarding interface stops taking
    /// router advertisements unless `accept_ra` is 2: a host that learns its IPv6 default route
    /// from them (SLAAC) keeps it.
    pub fn prepare_interface6(&mut self, iface: &str) -> io::Result<()> {
        let accept_ra = format!("net/ipv6/conf/{iface}/accept_ra");
        if read(&accept_ra)? == "1" {
            self.ensure(&accept_ra, "2")?;
        }
        self.ensure(&format!("net/ipv6/conf/{iface}/forwarding"), "1")?;
        Ok(())
    }

    /// An interface in generic (skb) mode: XDP runs there after GRO (and the NIC's LRO), on
    /// merged segments larger than the MTU whose TCP checksum is partial (the pseudo-header's
    /// sum only, completed at transmit). XDP cannot tell, and its incremental rewrite would
    /// corrupt every merged segment, so both are turned off here, recorded, and put back by
    /// `xdplb detach`. Returns what was turned off.
    pub fn unmerge_receive(&mut self, iface: &str) -> io::Result<Vec<&'static str>> {
        let mut off = Vec::new();
        for name in ["gro", "lro"] {
            if !offload(iface, name, None)? {
                continue;
            }
            let key = format!("{iface}/{name}");
            self.record.offloads.entry(key).or_insert(Change { before: "on".into(), set: "off".into() });
            self.save()?;
            if offload(iface, name, Some(false))? {
                return Err(io::Error::other(format!("{name} stays on on {iface} (a fixed feature of its driver)")));
            }
            log::info!("{iface}: {name} off (generic mode sees merged segments otherwise)");
            off.push(if name == "gro" { "GRO" } else { "LRO" });
        }
        Ok(off)
    }

    /// `xdplb detach`: puts back every recorded setting that still has the value the agent set
    /// (one changed since by someone else is left as it is, and said), releases the NAT ports,
    /// and forgets the record. Returns one line per setting.
    pub fn undo(mut self) -> io::Result<Vec<String>> {
        let mut said = Vec::new();
        for (key, change) in std::mem::take(&mut self.record.sysctls) {
            match read(&key) {
                Ok(now) if now == change.set => {
                    fs::write(path(&key), &change.before)?;
                    said.push(format!("sysctl {key} = {} (restored)", change.before));
                }
                Ok(now) => {
                    said.push(format!("sysctl {key} = {now}: changed since xdplb set {}, left as it is", change.set));
                }
                Err(e) => said.push(format!("sysctl {key}: {e} (the interface is gone?), nothing to restore")),
            }
        }
        for (key, change) in std::mem::take(&mut self.record.offloads) {
            let Some((iface, name)) = key.split_once('/') else { continue };
            let on = |v: &str| v == "on";
            match offload(iface, name, None) {
                Ok(now) if now == on(&change.set) => {
                    offload(iface, name, Some(on(&change.before)))?;
                    said.push(format!("{iface}: {name} {} (restored)", change.before));
                }
                Ok(_) => said.push(format!("{iface}: {name} changed since xdplb set it {}, left as it is", change.set)),
                Err(e) => said.push(format!("{iface}: {name}: {e} (the interface is gone?), nothing to restore")),
            }
        }
        for text in std::mem::take(&mut self.record.reserved_ports) {
            if let Ok(range) = text.parse::<PortRange>() {
                release(range, &self.record)?;
                said.push(format!("sysctl {RESERVED_PORTS}: {text} released"));
            }
        }
        match fs::remove_file(&self.file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(said)
    }
}

/// Whether receive offload `name` (`gro` or `lro`) is on, after setting it to `set` if given.
fn offload(iface: &str, name: &str, set: Option<bool>) -> io::Result<bool> {
    use crate::dataplane::sys::{ethtool, Ethtool, ETH_FLAG_LRO};
    if name == "gro" {
        return Ok(ethtool(iface, Ethtool::Gro, set.map(u32::from))? != 0);
    }
    let flags = ethtool(iface, Ethtool::Flags, None)?;
    let flags = match set {
        Some(on) if on != (flags & ETH_FLAG_LRO != 0) => {
            ethtool(iface, Ethtool::Flags, Some(if on { flags | ETH_FLAG_LRO } else { flags & !ETH_FLAG_LRO }))?
        }
        _ => flags,
    };
    Ok(flags & ETH_FLAG_LRO != 0)
}

/// Takes `range` out of `ip_local_reserved_ports`, but for the ports reserved before xdplb
/// added any and those of the ranges it still holds.
fn release(range: PortRange, record: &Record) -> io::Result<()> {
    let current = read(RESERVED_PORTS)?;
    let mut ports = Ports::parse(&current);
    ports.set(range, false);
    let keep = Ports::parse(record.reserved_before.as_deref().unwrap_or_default());
    for text in &record.reserved_ports {
        if let Ok(r) = text.parse::<PortRange>() {
            ports.set(r, true);
        }
    }
    ports.or(&keep);
    let value = ports.to_string();
    if value == current {
        return Ok(());
    }
    // An empty write clears the list; the kernel wants a line for it.
    fs::write(path(RESERVED_PORTS), if value.is_empty() { "\n" } else { value.as_str() })?;
    log::info!("sysctl {RESERVED_PORTS} = {value:?} ({}-{} released)", range.first, range.last);
    Ok(())
}

/// A set of ports, as `ip_local_reserved_ports` writes it (`8080,40000-59999`): the kernel
/// merges adjacent ranges, so ranges are compared port by port, never as text.
struct Ports(Vec<bool>);

impl Ports {
    fn parse(text: &str) -> Ports {
        let mut p = Ports(vec![false; 65536]);
        for part in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            if let (Ok(first), Ok(last)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                if first <= last {
                    p.set(PortRange { first, last }, true);
                }
            }
        }
        p
    }

    fn set(&mut self, r: PortRange, on: bool) {
        for port in r.first..=r.last {
            if let Some(b) = self.0.get_mut(usize::from(port)) {
                *b = on;
            }
        }
    }

    fn contains(&self, r: PortRange) -> bool {
        (r.first..=r.last).all(|p| self.0.get(usize::from(p)).copied().unwrap_or(false))
    }

    fn or(&mut self, other: &Ports) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= *b;
        }
    }
}

impl std::fmt::Display for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        let mut port = 0usize;
        while port < self.0.len() {
            if !self.0.get(port).copied().unwrap_or(false) {
                port += 1;
                continue;
            }
            let start = port;
            while self.0.get(port + 1).copied().unwrap_or(false) {
                port += 1;
            }
            let sep = if first { "" } else { "," };
            first = false;
            if start == port {
                write!(f, "{sep}{start}")?;
            } else {
                write!(f, "{sep}{start}-{port}")?;
            }
            port += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sets_read_and_write_as_the_kernel_does() {
        let mut p = Ports::parse("8080, 40000-49999,50000-59999");
        assert_eq!(p.to_string(), "8080,40000-59999");
        p.set(PortRange { first: 40000, last: 49999 }, false);
        assert_eq!(p.to_string(), "8080,50000-59999");
        assert!(p.contains(PortRange { first: 50000, last: 50010 }));
        assert_eq!(Ports::parse("").to_string(), "");
    }
}
