//! A namespace in which the real XDP program runs under BPF_PROG_TEST_RUN with maps filled by
//! the agent's own map owner: two veth interfaces (d0 198.18.0.10/24, d1 198.19.0.10/24) and
//! permanent neighbour entries, so that `bpf_fib_lookup` answers for real. Used by the packet
//! fixtures and by the per-packet cost benchmark. [`fixture6`] adds IPv6 (d0 2001:2::10/64, d1
//! 2001:2:1::10/64, the IPv6 servers' neighbours, IPv6 forwarding) for the IPv6 fixtures.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd},
    path::PathBuf,
};

use anyhow::{bail, Result};
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use lb_common::{Event, Flow, FlowKey, FlowKey6, FlowOf, Reason, Settings, TrafficStats, V6};
use lb_user::{
    config::Config,
    dataplane::{self, counters::Counters, flows::FlowTable, maps::MapOwner, LoadOptions},
    host::netif,
    model::{System, Topology},
};

use crate::{
    frames::{Addr, Tcp},
    netns::{unique, veth, NetNs},
};

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const VIP2: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const D0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const D1_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x10];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The etcd frontend (its servers listen on 2379).
pub const ETCD: (Ipv4Addr, u16) = (VIP, 12379);

pub fn server(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 20 + i)
}
pub fn server_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, 0x20 + i]
}

pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
pub const VIP6_2: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 0x10);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
/// The etcd frontend's IPv6 address (`*:12379` covers both families in `CONFIG6`).
pub const ETCD6: (Ipv6Addr, u16) = (VIP6, 12379);

/// The IPv6 servers of `CONFIG6`'s etcd backend: 2001:2::21..23, behind d0.
pub fn server6(i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x20 + u16::from(i))
}
/// Their MACs, not the IPv4 servers' (so a frame shows which family's neighbour it got).
pub fn server6_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x06, 0x20 + i]
}

pub const CONFIG: &str = r#"
[global]
nat_ports = "40000-40999"

[[frontend]]
name = "etcd"
bind = "*:12379"
backend = "etcd"

[[frontend]]
name = "api"
bind = "198.18.0.10:16443"
backend = "down"

[[frontend]]
name = "far"
bind = "198.18.0.10:2000"
backend = "far"

[[frontend]]
name = "unresolved"
bind = "198.18.0.10:3000"
backend = "unresolved"

[[backend]]
name = "etcd"
server = [
  { name = "app1", address = "198.18.0.21:2379" },
  { name = "app2", address = "198.18.0.22:2379" },
  { name = "app3", address = "198.18.0.23:2379" },
]

[[backend]]
name = "down"
server = [ { name = "app1", address = "198.18.0.21:6443" } ]

[[backend]]
name = "far"
server = [ { name = "x", address = "198.19.0.31:2000" } ]

[[backend]]
name = "unresolved"
server = [ { name = "y", address = "198.18.0.24:3000" } ]
"#;

/// `CONFIG` with IPv6 servers in the etcd backend (app1-v6..app3-v6 at `server6(1..=3)`, after
/// its IPv4 ones): the `*:12379` frontend is dual stack, each family served by its own servers.
pub fn config6() -> String {
    CONFIG.replace(
        "  { name = \"app3\", address = \"198.18.0.23:2379\" },\n",
        "  { name = \"app3\", address = \"198.18.0.23:2379\" },\n  \
         { name = \"app1-v6\", address = \"[2001:2::21]:2379\" },\n  \
         { name = \"app2-v6\", address = \"[2001:2::22]:2379\" },\n  \
         { name = \"app3-v6\", address = \"[2001:2::23]:2379\" },\n",
    )
}

pub struct Fixture {
    pub ns: NetNs,
    // The far ends of d0 and d1.
    _peer: NetNs,
    pub pin_dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = dataplane::remove_pins(&self.pin_dir);
    }
}

pub struct Loaded {
    pub ebpf: Ebpf,
    /// The map owner that filled the maps (for what the agent writes later, e.g. suspicion).
    pub owner: MapOwner,
    pub pin_dir: PathBuf,
    pub flows: FlowTable,
    pub counters: Counters,
    pub d0: u32,
    pub d1: u32,
    pub topology: Topology,
}

pub fn fixture() -> Fixture {
    let ns = NetNs::new("xfx").unwrap();
    let peer = NetNs::new("xfp").unwrap();
    veth(&ns, "d0", &peer, "p0").unwrap();
    veth(&ns, "d1", &peer, "p1").unwrap();
    ns.ip(&["link", "set", "d0", "address", "02:00:00:00:00:10"]).unwrap();
    ns.ip(&["link", "set", "d1", "address", "02:00:00:00:01:10"]).unwrap();
    ns.ip(&["addr", "add", "198.18.0.10/24", "dev", "d0"]).unwrap();
    ns.ip(&["addr", "add", "198.19.0.10/24", "dev", "d1"]).unwrap();
    for i in 1..=3u8 {
        let mac = server_mac(i).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        ns.ip(&["neigh", "replace", &server(i).to_string(), "lladdr", &mac, "dev", "d0", "nud", "permanent"]).unwrap();
    }
    ns.ip(&["neigh", "replace", "198.19.0.31", "lladdr", "02:00:00:00:01:31", "dev", "d1", "nud", "permanent"])
        .unwrap();
    for d in ["d0", "d1"] {
        ns.sysctl(&format!("net.ipv4.conf.{d}.forwarding"), "1").unwrap();
    }
    Fixture { ns, _peer: peer, pin_dir: PathBuf::from("/sys/fs/bpf").join(unique("xdplb-fx-")) }
}

/// `fixture` with IPv6 too: d0 2001:2::10/64 and d1 2001:2:1::10/64 (no duplicate address
/// detection, usable at once), permanent neighbour entries for the IPv6 servers (`server6`,
/// `server6_mac`) and for 2001:2:1::31 behind d1, and IPv6 forwarding on both interfaces: the
/// kernel's IPv6 FIB lookup answers only on interfaces that forward IPv6.
pub fn fixture6() -> Fixture {
    let fx = fixture();
    let ns = &fx.ns;
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0").unwrap();
    ns.ip(&["-6", "addr", "add", "2001:2::10/64", "dev", "d0", "nodad"]).unwrap();
    ns.ip(&["-6", "addr", "add", "2001:2:1::10/64", "dev", "d1", "nodad"]).unwrap();
    for i in 1..=3u8 {
        let mac = server6_mac(i).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        ns.ip(&["-6", "neigh", "replace", &server6(i).to_string(), "lladdr", &mac, "dev", "d0", "nud", "permanent"])
            .unwrap();
    }
    ns.ip(&["-6", "neigh", "replace", "2001:2:1::31", "lladdr", "02:00:00:00:01:31", "dev", "d1", "nud", "permanent"])
        .unwrap();
    for d in ["d0", "d1"] {
        ns.sysctl(&format!("net.ipv6.conf.{d}.forwarding"), "1").unwrap();
    }
    fx
}

impl Fixture {
    /// Loads the program and fills its maps the way the agent does; `up` says which server
    /// ids are UP. Must run inside the namespace.
    pub fn load(&self, up: &dyn Fn(u32) -> bool) -> Loaded {
        self.load_sized(up, 1024)
    }

    pub fn load_sized(&self, up: &dyn Fn(u32) -> bool, max_flows: u32) -> Loaded {
        self.load_config(up, max_flows, CONFIG)
    }

    /// `load_sized` with another configuration (the fixture's interfaces and servers).
    pub fn load_config(&self, up: &dyn Fn(u32) -> bool, max_flows: u32, config: &str) -> Loaded {
        let config = Config::parse(config, "fixture.toml".as_ref()).unwrap();
        let ifaces = vec![netif::interface("d0").unwrap(), netif::interface("d1").unwrap()];
        let topology = Topology::resolve(&config, &ifaces, &System, None).unwrap();
        let mut ebpf = dataplane::load(&LoadOptions {
            pin_dir: Some(self.pin_dir.clone()),
            max_flows,
            max_half_open: max_flows,
            ipv6: true,
        })
        .unwrap();
        let mut owner = MapOwner::take(&mut ebpf).unwrap();
        owner.write_settings(&config.global).unwrap();
        owner.write_tx_ports(&ifaces).unwrap();
        owner.apply(&topology, up).unwrap();
        let flows = FlowTable::take(&mut ebpf).unwrap();
        let counters = Counters::open_pinned(&self.pin_dir).unwrap();
        Loaded {
            ebpf,
            owner,
            pin_dir: self.pin_dir.clone(),
            flows,
            counters,
            d0: ifaces[0].ifindex,
            d1: ifaces[1].ifindex,
            topology,
        }
    }
}

impl Loaded {
    pub fn prog(&mut self) -> &mut Xdp {
        dataplane::program(&mut self.ebpf)
    }

    /// Runs one frame arriving on `ifindex`: (action, frame out).
    pub fn run_on(&mut self, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; 4096];
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let r = self
            .prog()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on a {}-byte frame: {e}", frame.len()));
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let d0 = self.d0;
        self.run_on(frame, d0)
    }

    pub fn reasons(&self) -> Vec<(Reason, u64)> {
        self.counters.reasons().unwrap()
    }

    pub fn reason(&self, r: Reason) -> u64 {
        self.reasons().into_iter().find(|(k, _)| *k == r).unwrap().1
    }

    pub fn suspicion(&self, server_id: u32) -> lb_common::Suspicion {
        self.counters.suspicion(server_id).unwrap()
    }

    pub fn event(&self, e: Event) -> u64 {
        self.counters.events().unwrap().into_iter().find(|(k, _)| *k == e).unwrap().1
    }

    /// What the map owner wrote in `settings` (the timestamp secret among it).
    pub fn settings(&self) -> Settings {
        let map = aya::maps::Map::from_map_data(
            aya::maps::MapData::from_pin(self.pin_dir.join(lb_common::names::SETTINGS)).unwrap(),
        )
        .unwrap();
        aya::maps::Array::<_, Settings>::try_from(map).unwrap().get(&0, 0).unwrap()
    }

    pub fn entry(&self, key: FlowKey) -> Option<Flow> {
        self.flows.get(&key)
    }

    /// The IPv6 entry under `key` (`flows6`).
    pub fn entry6(&self, key: FlowKey6) -> Option<FlowOf<V6>> {
        self.flows.get6(&key)
    }

    pub fn server_stats(&self, name: &str) -> TrafficStats {
        let id = self.topology.pool("etcd").unwrap().servers.iter().find(|s| s.name == name).unwrap().id;
        self.counters.server(id).unwrap()
    }
}

/// What the rewrite of a SYN to the etcd frontend tells: the server the program picked and the
/// NAT port it took (`Nat`: an IPv4 flow's, `Nat<Ipv6Addr>`: an IPv6 flow's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nat<A = Ipv4Addr> {
    pub server: A,
    pub port: u16,
}

impl Default for Nat {
    fn default() -> Self {
        Nat { server: Ipv4Addr::UNSPECIFIED, port: 0 }
    }
}

impl Default for Nat<Ipv6Addr> {
    fn default() -> Self {
        Nat { server: Ipv6Addr::UNSPECIFIED, port: 0 }
    }
}

impl<A: Addr> Nat<A> {
    /// Read from the rewritten SYN.
    pub fn of(rewritten: &Tcp<A>) -> Nat<A> {
        Nat { server: rewritten.dst, port: rewritten.sport }
    }
}

impl Nat<Ipv6Addr> {
    /// `t`, from a client to the etcd frontend's IPv6 address, as the program sends it on to
    /// this flow's server (one of `server6(1..=3)`, behind d0), from the balancer's IPv6 address.
    pub fn forward(self, t: &Tcp<Ipv6Addr>) -> Tcp<Ipv6Addr> {
        t.with((VIP6, self.port), (self.server, 2379), D0_MAC, server6_mac(self.server.octets()[15] - 0x20))
    }

    /// A segment with `flags` from this flow's server to its NAT tuple (`Tcp::new`'s defaults).
    pub fn from_server(self, flags: u8) -> Tcp<Ipv6Addr> {
        Tcp::new((self.server, 2379), (VIP6, self.port), flags)
    }

    /// The flow's server-side key.
    pub fn server_key(self) -> FlowKey6 {
        key6((self.server, 2379), (VIP6, self.port))
    }
}

impl Nat {
    /// `t`, from a client to the etcd frontend, as the program sends it on to this flow's server
    /// (one of `server(1..=3)`, behind d0).
    pub fn forward(self, t: &Tcp) -> Tcp {
        t.with((VIP, self.port), (self.server, 2379), D0_MAC, server_mac(self.server.octets()[3] - 20))
    }

    /// A segment with `flags` from this flow's server to its NAT tuple (`Tcp::new`'s defaults).
    pub fn from_server(self, flags: u8) -> Tcp {
        Tcp::new((self.server, 2379), (VIP, self.port), flags)
    }

    /// The flow's server-side key.
    pub fn server_key(self) -> FlowKey {
        key((self.server, 2379), (VIP, self.port))
    }
}

/// `t`, from an etcd server, as the program hands it back to `client` (same interface).
pub fn to_client(t: &Tcp, client: (Ipv4Addr, u16)) -> Tcp {
    t.with(ETCD, client, D0_MAC, CLIENT_MAC)
}

/// `t`, from an IPv6 etcd server, as the program hands it back to the IPv6 `client`.
pub fn to_client6(t: &Tcp<Ipv6Addr>, client: (Ipv6Addr, u16)) -> Tcp<Ipv6Addr> {
    t.with(ETCD6, client, D0_MAC, CLIENT_MAC)
}

pub fn key6(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16)) -> FlowKey6 {
    FlowKey6 {
        src_addr: src.0.octets(),
        dst_addr: dst.0.octets(),
        src_port_be: src.1.to_be(),
        dst_port_be: dst.1.to_be(),
    }
}

pub fn key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> FlowKey {
    FlowKey {
        src_addr: src.0.octets(),
        dst_addr: dst.0.octets(),
        src_port_be: src.1.to_be(),
        dst_port_be: dst.1.to_be(),
    }
}

/// One BPF_PROG_TEST_RUN of `prog_fd` on `frame` arriving on `ifindex` (repeat 1, so every run
/// sees a fresh copy of the frame): (action, kernel-measured ns).
pub fn timed_run(prog_fd: i32, frame: &[u8], ifindex: u32) -> Result<(u32, u32)> {
    let mut out = vec![0u8; 4096];
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut attr = [0u8; 80];
    attr[0..4].copy_from_slice(&(prog_fd as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    attr[12..16].copy_from_slice(&(out.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
    attr[24..32].copy_from_slice(&(out.as_mut_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&1u32.to_ne_bytes());
    attr[40..44].copy_from_slice(&(ctx.len() as u32).to_ne_bytes());
    attr[48..56].copy_from_slice(&(ctx.as_ptr() as u64).to_ne_bytes());
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        bail!("BPF_PROG_TEST_RUN: {}", std::io::Error::last_os_error());
    }
    let retval = u32::from_ne_bytes(attr[4..8].try_into().unwrap());
    let duration = u32::from_ne_bytes(attr[36..40].try_into().unwrap());
    Ok((retval, duration))
}

impl Loaded {
    pub fn prog_fd(&mut self) -> i32 {
        self.prog().fd().unwrap().as_fd().as_raw_fd()
    }
}
