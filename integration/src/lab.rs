//! Lab topologies on real veth links, addresses from 198.18.0.0/15 only.
//!
//! One-arm (the seed's layout): client, balancer and backends on one L2 segment, a bridge in
//! its own namespace. Routed: the client sits behind a router and the balancer has two
//! interfaces, one towards the router and one on the backends' segment.
//!
//! Two things veth needs that a physical NIC does not:
//! - veth drops frames sent to it by XDP_TX/XDP_REDIRECT unless the receiving end runs NAPI, so
//!   the peer of every interface the balancer attaches to gets a pass-everything XDP program
//!   (`xdp_pass`; GRO alone no longer does it on recent kernels);
//! - a packet made in another namespace on the same machine arrives with a partial checksum
//!   (checksum offload: only the pseudo-header sum is filled in), and XDP_TX/REDIRECT drops the
//!   metadata that would have completed it, so the hosts that send traffic (client, backends)
//!   compute checksums in software (`ethtool -K eth0 tx off`). Packets from a wire are whole.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};

use crate::netns::{veth, NetNs};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const LB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const ROUTED_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const ROUTED_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
/// The balancer's address towards the servers' router in `narrow_paths`.
pub const NARROW_NAT: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 10);
/// Two balancers (`one_arm_ha`): the second one's address, and the VIP keepalived moves.
pub const LB2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
pub const HA_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 21 + i as u8)
}

/// IPv6 addresses of the one-arm lab (`Lab::dual_stack`), from 2001:2::/48 (RFC 5180, the
/// IPv6 benchmarking block, as 198.18.0.0/15 is IPv4's), same last numbers as IPv4's.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
pub const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);

/// The routed labs' IPv6 frontend address and `narrow_paths`'s IPv6 NAT address (see
/// `Lab::narrow_paths_ipv6`).
pub const ROUTED_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 0x10);
pub const NARROW_NAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 3, 0, 0, 0, 0, 0x10);

pub fn backend_addr6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x21 + i as u16)
}

pub struct Backend {
    pub name: String,
    pub ns: NetNs,
    pub addr: Ipv4Addr,
}

pub struct Lab {
    /// The balancer; its interfaces are `lb_ifaces`.
    pub lb: NetNs,
    pub lb_ifaces: Vec<String>,
    pub client: NetNs,
    /// More client hosts on the same segment (`one_arm_clients`), each with its address.
    pub more_clients: Vec<(NetNs, Ipv4Addr)>,
    /// The address a client connects to.
    pub vip: Ipv4Addr,
    pub backends: Vec<Backend>,
    // Kept for their Drop (removed last: they hold the links).
    _infra: Vec<NetNs>,
}

/// Lets the far end of a balancer interface receive XDP_TX/XDP_REDIRECT frames.
fn napi_peer(ns: &NetNs, iface: &str) -> Result<()> {
    crate::xdp_pass::attach(ns, iface)
}

/// How lab namespaces are named: unique per test, or fixed (`cargo xtask run`'s lab, whose next
/// run removes what a crashed one left).
#[derive(Clone, Copy)]
pub enum Names {
    Unique,
    Fixed(&'static str),
}

impl Names {
    fn ns(self, role: &str) -> Result<NetNs> {
        match self {
            Names::Unique => NetNs::new(&format!("x{role}")),
            Names::Fixed(prefix) => NetNs::fixed(&format!("{prefix}-{role}")),
        }
    }
}

/// A bridge namespace with `br0`; hosts plug in with `plug`.
fn switch(names: Names) -> Result<NetNs> {
    let sw = names.ns("sw")?;
    sw.ip(&["link", "add", "br0", "type", "bridge"])?;
    sw.ip(&["link", "set", "br0", "up"])?;
    Ok(sw)
}

fn plug(sw: &NetNs, port: &str, host: &NetNs, iface: &str, cidr: &str) -> Result<()> {
    veth(host, iface, sw, port)?;
    sw.ip(&["link", "set", port, "master", "br0"])?;
    host.ip(&["addr", "add", cidr, "dev", iface])?;
    Ok(())
}

/// Whole checksums on packets this host sends (see the module comment).
fn sw_checksums(ns: &NetNs, iface: &str) -> Result<()> {
    ns.exec(&["ethtool", "-K", iface, "tx", "off"]).map(|_| ())
}

/// The client side of the routed labs: client 198.18.1.1 -> router `rt` -> balancer eth0
/// 198.18.2.10 (its default route via `rt`).
fn client_behind_router(names: Names) -> Result<(NetNs, NetNs, NetNs)> {
    let (client, rt, lb) = (names.ns("cl")?, names.ns("rt")?, names.ns("lb")?);
    veth(&client, "eth0", &rt, "eth0")?;
    client.ip(&["addr", "add", &format!("{ROUTED_CLIENT}/24"), "dev", "eth0"])?;
    sw_checksums(&client, "eth0")?;
    client.ip(&["route", "add", "default", "via", "198.18.1.254"])?;
    rt.ip(&["addr", "add", "198.18.1.254/24", "dev", "eth0"])?;
    veth(&lb, "eth0", &rt, "eth1")?;
    rt.ip(&["addr", "add", "198.18.2.254/24", "dev", "eth1"])?;
    rt.sysctl("net.ipv4.ip_forward", "1")?;
    lb.ip(&["addr", "add", &format!("{ROUTED_VIP}/24"), "dev", "eth0"])?;
    lb.ip(&["route", "add", "default", "via", "198.18.2.254"])?;
    napi_peer(&rt, "eth1")?;
    Ok((client, rt, lb))
}

fn backends(names: Names, sw: &NetNs, n: usize) -> Result<Vec<Backend>> {
    (0..n)
        .map(|i| {
            let ns = names.ns(&format!("app{}", i + 1))?;
            let addr = backend_addr(i);
            plug(sw, &format!("pb{i}"), &ns, "eth0", &format!("{addr}/24"))?;
            sw_checksums(&ns, "eth0")?;
            Ok(Backend { name: format!("app{}", i + 1), ns, addr })
        })
        .collect()
}

impl Lab {
    /// Client, balancer and `n` backends on one segment, 198.18.0.0/24.
    pub fn one_arm(n: usize) -> Result<Lab> {
        Self::one_arm_named(n, Names::Unique)
    }

    pub fn one_arm_named(n: usize, names: Names) -> Result<Lab> {
        Self::one_arm_with(n, 1, names)
    }

    /// One-arm with `clients` client hosts: the first at 198.18.0.1 (`client`), the others at
    /// 198.18.0.2, .3, ... (`more_clients`).
    pub fn one_arm_clients(n: usize, clients: usize) -> Result<Lab> {
        Self::one_arm_with(n, clients, Names::Unique)
    }

    fn one_arm_with(n: usize, clients: usize, names: Names) -> Result<Lab> {
        let sw = switch(names)?;
        let client = names.ns("cl")?;
        plug(&sw, "pcl", &client, "eth0", &format!("{CLIENT}/24"))?;
        sw_checksums(&client, "eth0")?;
        let mut more_clients = Vec::new();
        for i in 1..clients {
            let ns = names.ns(&format!("cl{i}"))?;
            let addr = Ipv4Addr::new(198, 18, 0, 1 + i as u8);
            plug(&sw, &format!("pcl{i}"), &ns, "eth0", &format!("{addr}/24"))?;
            sw_checksums(&ns, "eth0")?;
            more_clients.push((ns, addr));
        }
        let lb = names.ns("lb")?;
        plug(&sw, "plb", &lb, "eth0", &format!("{LB}/24"))?;
        napi_peer(&sw, "plb")?;
        let backends = backends(names, &sw, n)?;
        Ok(Lab { lb, lb_ifaces: vec!["eth0".into()], client, more_clients, vip: LB, backends, _infra: vec![sw] })
    }

    /// Gives the one-arm lab's client, balancer and backends their IPv6 addresses too
    /// (`CLIENT6`, `LB6`, `backend_addr6`), usable at once (no duplicate address detection).
    pub fn dual_stack(&self) -> Result<()> {
        let add =
            |ns: &NetNs, addr: Ipv6Addr| ns.ip(&["-6", "addr", "add", &format!("{addr}/64"), "dev", "eth0", "nodad"]);
        add(&self.client, CLIENT6)?;
        add(&self.lb, LB6)?;
        for (i, b) in self.backends.iter().enumerate() {
            add(&b.ns, backend_addr6(i))?;
        }
        Ok(())
    }

    /// Lets every backend receive XDP_TX/XDP_REDIRECT frames (a co-located lab runs xdplb on
    /// the backends themselves): their switch ports get the pass program.
    pub fn napi_backends(&self) -> Result<()> {
        let sw = self._infra.last().ok_or_else(|| anyhow::anyhow!("no switch"))?;
        (0..self.backends.len()).try_for_each(|i| napi_peer(sw, &format!("pb{i}")))
    }

    /// One-arm with a second balancer `lb2` at 198.18.0.11 on the same segment, and `vip` set to
    /// 198.18.0.100, which neither holds yet (keepalived moves it; see `ha`). Both balancers
    /// send their sync and VRRP packets with whole checksums (they cross the other's XDP).
    pub fn one_arm_ha(n: usize, names: Names) -> Result<(Lab, NetNs)> {
        let mut lab = Self::one_arm_with(n, 1, names)?;
        let lb2 = names.ns("lb2")?;
        let sw = lab._infra.first().context("the switch")?;
        plug(sw, "plb2", &lb2, "eth0", &format!("{LB2}/24"))?;
        napi_peer(sw, "plb2")?;
        sw_checksums(&lab.lb, "eth0")?;
        sw_checksums(&lb2, "eth0")?;
        lab.vip = HA_VIP;
        Ok((lab, lb2))
    }

    /// The namespaces that are neither client, balancer nor backend (routers first, then the
    /// switch).
    pub fn infra(&self) -> &[NetNs] {
        &self._infra
    }

    /// Every client host: `client` first, then `more_clients`.
    pub fn clients(&self) -> Vec<&NetNs> {
        std::iter::once(&self.client).chain(self.more_clients.iter().map(|(ns, _)| ns)).collect()
    }

    /// A routed lab (`client_behind_router`): the balancer serves on eth0 and eth1.
    fn behind_router(client: NetNs, lb: NetNs, backends: Vec<Backend>, infra: Vec<NetNs>) -> Lab {
        let lb_ifaces = vec!["eth0".into(), "eth1".into()];
        Lab { lb, lb_ifaces, client, more_clients: Vec::new(), vip: ROUTED_VIP, backends, _infra: infra }
    }

    /// client 198.18.1.1 -> router -> balancer eth0 198.18.2.10 | eth1 198.18.0.10 -> backends.
    pub fn routed(n: usize) -> Result<Lab> {
        let names = Names::Unique;
        let sw = switch(names)?;
        let (client, rt, lb) = client_behind_router(names)?;
        plug(&sw, "plb", &lb, "eth1", &format!("{LB}/24"))?;
        napi_peer(&sw, "plb")?;
        let backends = backends(names, &sw, n)?;
        Ok(Lab::behind_router(client, lb, backends, vec![rt, sw]))
    }

    /// `routed`, with a router on the servers' side too: client 198.18.1.1 -> `rt` -> balancer
    /// eth0 198.18.2.10 | eth1 198.18.3.10 -> `rt2` -> backends on 198.18.0.0/24. Each router's
    /// route onwards (towards the client, towards the servers) is held to `mtu` bytes while
    /// every link stays at 1500: the narrow middle hop of a VPN or a cloud peering, where only
    /// path-MTU discovery (the routers' frag-needed, through the balancer) keeps transfers
    /// going.
    pub fn narrow_paths(n: usize, mtu: u32) -> Result<Lab> {
        let names = Names::Unique;
        let sw = switch(names)?;
        let (client, rt, lb) = client_behind_router(names)?;
        let rt2 = names.ns("rt2")?;
        veth(&lb, "eth1", &rt2, "eth0")?;
        lb.ip(&["addr", "add", &format!("{NARROW_NAT}/24"), "dev", "eth1"])?;
        rt2.ip(&["addr", "add", "198.18.3.254/24", "dev", "eth0"])?;
        lb.ip(&["route", "add", "198.18.0.0/24", "via", "198.18.3.254"])?;
        napi_peer(&rt2, "eth0")?;
        plug(&sw, "prt2", &rt2, "eth1", "198.18.0.254/24")?;
        let backends = backends(names, &sw, n)?;
        for b in &backends {
            b.ns.ip(&["route", "add", "default", "via", "198.18.0.254"])?;
        }
        rt2.sysctl("net.ipv4.ip_forward", "1")?;
        let mtu = mtu.to_string();
        rt.ip(&["route", "replace", "198.18.1.0/24", "dev", "eth0", "src", "198.18.1.254", "mtu", "lock", &mtu])?;
        rt2.ip(&["route", "replace", "198.18.0.0/24", "dev", "eth1", "src", "198.18.0.254", "mtu", "lock", &mtu])?;
        Ok(Lab::behind_router(client, lb, backends, vec![rt, rt2, sw]))
    }

    /// Gives a `narrow_paths` lab its IPv6 side, from 2001:2::/48: client 2001:2:1::1 behind
    /// `rt` (2001:2:1::fe | 2001:2:2::fe), the balancer's eth0 `ROUTED_VIP6`, its eth1
    /// `NARROW_NAT6` towards `rt2` (2001:2:3::fe | 2001:2::fe on the servers' segment), the
    /// backends at `backend_addr6`; both routers forward IPv6 and hold their onward route to
    /// `mtu` bytes, as for IPv4.
    pub fn narrow_paths_ipv6(&self, mtu: u32) -> Result<()> {
        let add = |ns: &NetNs, iface: &str, cidr: &str| ns.ip(&["-6", "addr", "add", cidr, "dev", iface, "nodad"]);
        let route = |ns: &NetNs, args: &[&str]| {
            let mut a = vec!["-6", "route", "add"];
            a.extend_from_slice(args);
            ns.ip(&a)
        };
        let (rt, rt2) = (&self._infra[0], &self._infra[1]);
        add(&self.client, "eth0", "2001:2:1::1/64")?;
        route(&self.client, &["default", "via", "2001:2:1::fe"])?;
        add(rt, "eth0", "2001:2:1::fe/64")?;
        add(rt, "eth1", "2001:2:2::fe/64")?;
        add(&self.lb, "eth0", &format!("{ROUTED_VIP6}/64"))?;
        route(&self.lb, &["default", "via", "2001:2:2::fe"])?;
        add(&self.lb, "eth1", &format!("{NARROW_NAT6}/64"))?;
        add(rt2, "eth0", "2001:2:3::fe/64")?;
        add(rt2, "eth1", "2001:2::fe/64")?;
        route(&self.lb, &["2001:2::/64", "via", "2001:2:3::fe"])?;
        for (i, b) in self.backends.iter().enumerate() {
            add(&b.ns, "eth0", &format!("{}/64", backend_addr6(i)))?;
            route(&b.ns, &["default", "via", "2001:2::fe"])?;
        }
        rt.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        rt2.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        let mtu = mtu.to_string();
        // Metric 256: the connected route's own, which `replace` must match (IPv6 routes of
        // another metric stand beside it).
        rt.ip(&["-6", "route", "replace", "2001:2:1::/64", "dev", "eth0", "metric", "256", "mtu", "lock", &mtu])?;
        rt2.ip(&["-6", "route", "replace", "2001:2::/64", "dev", "eth1", "metric", "256", "mtu", "lock", &mtu])?;
        Ok(())
    }

    /// Starts `lbtest-server NAME PORT` on every backend.
    pub fn start_servers(&self, server_bin: &str, port: u16) -> Result<()> {
        for i in 0..self.backends.len() {
            self.start_server(i, server_bin, port)?;
        }
        Ok(())
    }

    /// Starts `lbtest-server NAME PORT` on backend `i` and waits until it listens.
    pub fn start_server(&self, i: usize, server_bin: &str, port: u16) -> Result<()> {
        self.start_server_on(i, server_bin, &[&port.to_string()])
    }

    /// Starts `lbtest-server NAME PORTS...` on every backend (ports as lbtest-server takes them:
    /// `2379`, `close:2380`, `rst:2381`) and waits until each listens.
    pub fn start_servers_on(&self, server_bin: &str, ports: &[&str]) -> Result<()> {
        (0..self.backends.len()).try_for_each(|i| self.start_server_on(i, server_bin, ports))
    }

    fn start_server_on(&self, i: usize, server_bin: &str, ports: &[&str]) -> Result<()> {
        let b = &self.backends[i];
        serve(&b.ns, &b.name, server_bin, ports)
    }
}

/// Starts `lbtest-server NAME PORTS...` in `ns` (a backend, or the balancer itself for a
/// co-located server) and waits until it listens on each port.
pub fn serve(ns: &NetNs, name: &str, server_bin: &str, ports: &[&str]) -> Result<()> {
    let mut args = vec![name];
    args.extend_from_slice(ports);
    // Reaped with the namespace (NetNs::drop kills what runs in it).
    let mut c = ns.spawn(server_bin, &args)?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    if let Ok(Some(status)) = c.try_wait() {
        anyhow::bail!("lbtest-server {name} in {} exited: {status}", ns.name);
    }
    for p in ports {
        let port = p.rsplit(':').next().unwrap_or(p).parse()?;
        wait_listening(ns, port)?;
    }
    Ok(())
}

fn wait_listening(ns: &NetNs, port: u16) -> Result<()> {
    for _ in 0..100 {
        let out = ns.exec(&["ss", "-Htln", &format!("sport = :{port}")])?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    anyhow::bail!("nothing listens on port {port} in {}", ns.name)
}

/// The config for a lab: one frontend on `*:port` with every backend at `backend_port`.
pub fn config(lab: &Lab, port: u16, backend_port: u16, global: &str, exclude: &[&str]) -> String {
    let servers: Vec<String> = lab
        .backends
        .iter()
        .filter(|b| !exclude.contains(&b.name.as_str()))
        .map(|b| format!("  {{ name = \"{}\", address = \"{}:{backend_port}\" }},", b.name, b.addr))
        .collect();
    format!(
        "[global]\n{global}\n\n[[frontend]]\nname = \"front\"\nbind = \"*:{port}\"\nbackend = \"pool\"\n\n[[backend]]\nname = \"pool\"\nserver = [\n{}\n]\n",
        servers.join("\n")
    )
}
