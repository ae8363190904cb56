//! What the host knows about its interfaces: index, MAC, IPv4 and IPv6 addresses, and which
//! local address the kernel would use towards a destination.

use std::{
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    /// Its IPv4 addresses, then its usable IPv6 ones: global scope (global and unique-local),
    /// never link-local, not tentative (DAD still running) nor failed DAD.
    pub addrs: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    #[error("interface {0:?} does not exist (see `ip link`)")]
    NoSuchInterface(String),
    #[error("getifaddrs failed: {0}")]
    GetIfAddrs(io::Error),
    #[error("no route from this host to {dst}: {source}")]
    NoRoute { dst: IpAddr, source: io::Error },
}

pub fn ifindex(name: &str) -> Result<u32, NetifError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| NetifError::NoSuchInterface(name.into()))
}

/// IPv4 addresses of every interface, by interface name.
pub fn all_ipv4() -> Result<Vec<(String, IpAddr)>, NetifError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| NetifError::GetIfAddrs(e.into()))?;
    Ok(addrs
        .filter_map(|ifa| {
            let sin = ifa.address?.as_sockaddr_in().copied()?;
            Some((ifa.interface_name, IpAddr::V4(sin.ip())))
        })
        .collect())
}

/// One line of /proc/net/if_inet6: an IPv6 address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inet6 {
    pub iface: String,
    pub addr: Ipv6Addr,
    /// `IFA_F_*` (linux/if_addr.h).
    pub flags: u32,
    /// `RT_SCOPE_*`'s IPv6 form: 0x00 global, 0x10 host, 0x20 link.
    pub scope: u32,
}

const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;

impl Inet6 {
    /// Served by a `*:PORT`: global scope (global and unique-local addresses), and usable now
    /// (not tentative, DAD not failed). The kernel announces the end of DAD on netlink, so a
    /// tentative address is covered a moment later (`Topology::rebind`).
    pub fn usable(&self) -> bool {
        self.scope == 0 && self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0
    }
}

/// The lines of /proc/net/if_inet6 (`ADDR32HEX IFINDEX PREFIXLEN SCOPE FLAGS NAME`, in hex).
pub fn parse_if_inet6(text: &str) -> Vec<Inet6> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [hex, _, _, scope, flags, name] = cols.as_slice() else { return None };
            let addr = Ipv6Addr::from(u128::from_str_radix(hex, 16).ok()?);
            Some(Inet6 {
                iface: (*name).to_owned(),
                addr,
                flags: u32::from_str_radix(flags, 16).ok()?,
                scope: u32::from_str_radix(scope, 16).ok()?,
            })
        })
        .collect()
}

/// Every IPv6 address of every interface (none when IPv6 is disabled).
///
/// Read from /proc/thread-self: /proc/net is the network namespace of the process's main
/// thread, not necessarily the calling thread's (one that entered another namespace, as the
/// packet fixtures' loader does, would read the main thread's addresses; IPv4's, read through
/// `getifaddrs`'s netlink socket, are the calling thread's). /proc/net when there is no
/// thread-self (before Linux 3.17).
pub fn all_ipv6() -> Vec<Inet6> {
    std::fs::read_to_string("/proc/thread-self/net/if_inet6")
        .or_else(|_| std::fs::read_to_string("/proc/net/if_inet6"))
        .map(|t| parse_if_inet6(&t))
        .unwrap_or_default()
}

/// Every local address of both families, by interface name: IPv4 ones, and IPv6 ones whose
/// DAD did not fail (of any scope: `bind` and `source` are checked against these).
pub fn all_local() -> Result<Vec<(String, IpAddr)>, NetifError> {
    let mut all = all_ipv4()?;
    all.extend(
        all_ipv6().into_iter().filter(|a| a.flags & IFA_F_DADFAILED == 0).map(|a| (a.iface, IpAddr::V6(a.addr))),
    );
    Ok(all)
}

/// The addresses a `*:PORT` serves, by interface name: IPv4 ones and usable IPv6 ones.
fn all_served() -> Result<Vec<(String, IpAddr)>, NetifError> {
    let mut all = all_ipv4()?;
    all.extend(all_ipv6().into_iter().filter(Inet6::usable).map(|a| (a.iface, IpAddr::V6(a.addr))));
    Ok(all)
}

/// The VLAN devices stacked on `iface` (its `upper_*` links in sysfs whose `uevent` says
/// `DEVTYPE=vlan`), each with its addresses.
pub fn vlans_over(iface: &str) -> Vec<(String, Vec<IpAddr>)> {
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
    let addrs = all_local().unwrap_or_default();
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
    let addrs = all_served()?.into_iter().filter(|(n, _)| n == name).map(|(_, a)| a).collect();
    Ok(Interface { name: name.into(), ifindex, addrs })
}

/// The local address the kernel picks for traffic to `dst` (a connected UDP socket sends
/// nothing; it only asks the routing table).
pub fn source_for(dst: SocketAddr) -> Result<IpAddr, NetifError> {
    let route = |source| NetifError::NoRoute { dst: dst.ip(), source };
    let any = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = UdpSocket::bind(any).map_err(route)?;
    sock.connect(dst).map_err(route)?;
    let src = sock.local_addr().map_err(route)?.ip();
    if src.is_ipv4() == dst.is_ipv4() {
        Ok(src)
    } else {
        Err(route(io::Error::other(format!("unexpected {src}"))))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_inet6_lines_are_read_and_only_global_settled_addresses_are_usable() {
        let text = "\
20010db8000000000000000000000010 02 40 00 80       eth0
fe800000000000000000000000000001 02 40 20 80       eth0
00000000000000000000000000000001 01 80 10 80         lo
fd000000000000000000000000000005 02 40 00 c0       eth0
20010db8000000000000000000000011 02 40 00 88       eth0
";
        let all = parse_if_inet6(text);
        assert_eq!(all.len(), 5);
        assert_eq!(
            all[0],
            Inet6 { iface: "eth0".into(), addr: "2001:db8::10".parse().unwrap(), flags: 0x80, scope: 0 }
        );
        let usable: Vec<String> = all.iter().filter(|a| a.usable()).map(|a| a.addr.to_string()).collect();
        // Link-local, loopback, tentative (0x40) and DAD-failed (0x08) are not.
        assert_eq!(usable, vec!["2001:db8::10"]);
    }
}
