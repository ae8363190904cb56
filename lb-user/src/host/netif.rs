//! What the host knows about its interfaces: index, MAC, IPv4 addresses, and which local address
//! the kernel would use towards a destination.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub addrs: Vec<Ipv4Addr>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    #[error("interface {0:?} does not exist (see `ip link`)")]
    NoSuchInterface(String),
    #[error("getifaddrs failed: {0}")]
    GetIfAddrs(io::Error),
    #[error("no route from this host to {dst}: {source}")]
    NoRoute { dst: Ipv4Addr, source: io::Error },
}

pub fn ifindex(name: &str) -> Result<u32, NetifError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| NetifError::NoSuchInterface(name.into()))
}

/// IPv4 addresses of every interface, by interface name.
pub fn all_ipv4() -> Result<Vec<(String, Ipv4Addr)>, NetifError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| NetifError::GetIfAddrs(e.into()))?;
    Ok(addrs
        .filter_map(|ifa| {
            let sin = ifa.address?.as_sockaddr_in().copied()?;
            Some((ifa.interface_name, sin.ip()))
        })
        .collect())
}

/// The VLAN devices stacked on `iface` (its `upper_*` links in sysfs whose `uevent` says
/// `DEVTYPE=vlan`), each with its IPv4 addresses.
pub fn vlans_over(iface: &str) -> Vec<(String, Vec<Ipv4Addr>)> {
    let Ok(dir) = std::fs::read_dir(format!("/sys/class/net/{iface}")) else { return Vec::new() };
    let uppers: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("upper_").map(str::to_owned))
        .filter(|up| {
            std::fs::read_to_string(format!("/sys/class/net/{up}/uevent"))
                .is_ok_and(|u| u.lines().any(|l| l == "DEVTYPE=vlan"))
        })
        .collect();
    if uppers.is_empty() {
        return Vec::new();
    }
    let addrs = all_ipv4().unwrap_or_default();
    uppers
        .into_iter()
        .map(|up| {
            let mine = addrs.iter().filter(|(n, _)| *n == up).map(|(_, a)| *a).collect();
            (up, mine)
        })
        .collect()
}

pub fn interface(name: &str) -> Result<Interface, NetifError> {
    let ifindex = ifindex(name)?;
    let addrs = all_ipv4()?.into_iter().filter(|(n, _)| n == name).map(|(_, a)| a).collect();
    Ok(Interface { name: name.into(), ifindex, addrs })
}

/// The local address the kernel picks for traffic to `dst` (a connected UDP socket sends
/// nothing; it only asks the routing table).
pub fn source_for(dst: SocketAddrV4) -> Result<Ipv4Addr, NetifError> {
    let route = |source| NetifError::NoRoute { dst: *dst.ip(), source };
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(route)?;
    sock.connect(dst).map_err(route)?;
    match sock.local_addr().map_err(route)? {
        std::net::SocketAddr::V4(a) => Ok(*a.ip()),
        std::net::SocketAddr::V6(other) => Err(route(io::Error::other(format!("unexpected {other}")))),
    }
}

/// The interface of the host's IPv4 default route (`/proc/net/route`), if there is one: where
/// an imported configuration attaches unless told otherwise.
pub fn default_route_interface() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let (iface, dest, mask) = (cols.next()?, cols.next()?, cols.nth(5)?);
        (dest == "00000000" && mask == "00000000").then(|| iface.to_owned())
    })
}
