//! The configuration resolved against this host: ids for frontends, pools and servers (stable
//! across reloads by name), the frontend keys a `*:PORT` expands to, and the source address
//! each server's flows leave from, and every setting the later stages need (bind text, check
//! settings, administrative state), so that nothing after this reads the configuration by
//! name. Pure data; `dataplane::maps` writes it to the kernel, `health` checks from it.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use lb_common::{FrontendKey, FrontendKey6, MAX_SERVERS};

use crate::{
    config::{AdminState, BackendCfg, Balance, Bind, CheckCfg, Config, ServerAddr},
    host::netif::{Interface, NetifError},
    problems::Problems,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub frontends: Vec<FrontendEntry>,
    pub pools: Vec<Pool>,
    /// Addresses that move between balancers (`global.sync.floating`): a `*:PORT` frontend
    /// covers them all along, like an explicit bind to a VIP (see `covered`).
    pub floating: Vec<IpAddr>,
    /// `*:PORT` frontends also cover 127.0.0.1 (`global.local_clients`: the connect hook's).
    pub loopback: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FrontendEntry {
    pub name: String,
    pub id: u32,
    /// As written in the configuration (`*:12379`), for the status page.
    pub bind: String,
    /// The backend's name and id. The pool's IPv4 healthy set is `pool_id`, its IPv6 one
    /// `pool_id + lb_common::POOL_V6` (the data path's convention).
    pub backend: String,
    pub pool_id: u32,
    /// The families it serves: those its backend has servers of (IPv4 for a backend without
    /// servers). A `*:PORT` covers the addresses of these families only; an explicit bind is
    /// of one of them (validation says so otherwise).
    pub families: Families,
    /// What the bind asks for; `keys` is what it covers on the host now (see `rebind`).
    pub want: Bind,
    /// The kernel's IPv4 frontend keys (`frontends`): one per IPv4 address the bind covers that
    /// is on the host now.
    pub keys: Vec<FrontendKey>,
    /// The kernel's IPv6 frontend keys (`frontends6`), the same way: global and unique-local
    /// addresses only (never link-local).
    pub keys6: Vec<FrontendKey6>,
    /// Source networks that may open flows (`allow`); empty: every source.
    pub allow: Vec<crate::config::Cidr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub id: u32,
    /// How its servers are checked (`health::plans` turns it into each server's plan).
    pub check: CheckCfg,
    /// Redispatches a new flow may make (0: none; `retries` when `redispatch` is on).
    pub retries: u8,
    /// Refused or unanswered SYNs in a row that make the data path suspect a server.
    pub suspect_after: u8,
    pub balance: Balance,
    /// With no active server UP, every UP backup takes flows (HAProxy's `option allbackups`);
    /// otherwise only the first.
    pub allbackups: bool,
    pub servers: Vec<ServerEntry>,
}

/// The address families a frontend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    /// The families of `servers`' addresses; IPv4 when there are none (as before IPv6).
    pub fn of(servers: impl IntoIterator<Item = SocketAddr>) -> Families {
        let mut f = Families::default();
        for s in servers {
            if s.is_ipv4() {
                f.v4 = true;
            } else {
                f.v6 = true;
            }
        }
        if !f.v4 && !f.v6 {
            f.v4 = true;
        }
        f
    }

    pub fn has(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() {
            self.v4
        } else {
            self.v6
        }
    }
}

impl Pool {
    /// Its servers of one family (`v6`: IPv6), in order: a family's healthy set is made of
    /// these (`backend_set` picks among all; the data path keeps one set per family).
    pub fn servers_of(&self, v6: bool) -> impl Iterator<Item = &ServerEntry> {
        self.servers.iter().filter(move |s| s.addr.is_ipv6() == v6)
    }

    /// The families its servers have.
    pub fn families(&self) -> Families {
        Families::of(self.servers.iter().map(|s| s.addr))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerEntry {
    pub name: String,
    pub id: u32,
    pub addr: SocketAddr,
    /// The balancer addresses its flows leave from (at least one), all of `addr`'s family.
    pub source: Vec<IpAddr>,
    pub weight: u32,
    /// The weight the configuration gives it (`weight` may be set by hand; `N%` is of this).
    pub initial_weight: u32,
    pub backup: bool,
    /// Health-checked (HAProxy's `check`); unchecked servers count as UP.
    pub check: bool,
    /// The administrative state the configuration gives it (the runtime API may override it).
    pub admin: AdminState,
    /// Its address is one of this host's (a co-located server): its flows are translated on the
    /// destination only, and its replies back on the way out (lb-common's `FLOW_LOCAL`).
    pub local: bool,
}

/// What resolving needs from the host; a trait so tests can describe a host.
pub trait Host {
    /// Every local address of both families (for `bind = "ADDR:PORT"` and `source`).
    fn local_addrs(&self) -> Vec<IpAddr>;
    /// The local address the kernel routes from towards `dst` (of `dst`'s family).
    fn source_for(&self, dst: SocketAddr) -> Result<IpAddr, NetifError>;
    /// `net.ipv4.ip_nonlocal_bind` for an IPv4 `addr`, `net.ipv6.ip_nonlocal_bind` for an
    /// IPv6 one: addresses not (yet) on this host may be bound, as HAProxy users do for a
    /// keepalived VIP on the backup host.
    fn nonlocal_bind(&self, addr: IpAddr) -> bool;
    /// The VLAN devices stacked on `iface`, with their addresses.
    fn vlans_over(&self, _iface: &str) -> Vec<(String, Vec<IpAddr>)> {
        Vec::new()
    }
}

/// The real host.
pub struct System;

impl Host for System {
    fn local_addrs(&self) -> Vec<IpAddr> {
        crate::host::netif::all_local().map(|v| v.into_iter().map(|(_, a)| a).collect()).unwrap_or_default()
    }
    fn source_for(&self, dst: SocketAddr) -> Result<IpAddr, NetifError> {
        crate::host::netif::source_for(dst)
    }
    fn nonlocal_bind(&self, addr: IpAddr) -> bool {
        crate::host::sysctl::read(nonlocal_sysctl(addr)).is_ok_and(|v| v.trim() == "1")
    }
    fn vlans_over(&self, iface: &str) -> Vec<(String, Vec<IpAddr>)> {
        crate::host::netif::vlans_over(iface)
    }
}

/// The sysctl that lets `addr` be bound while it is not on the host (a path under /proc/sys).
fn nonlocal_sysctl(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "net/ipv4/ip_nonlocal_bind"
    } else {
        "net/ipv6/ip_nonlocal_bind"
    }
}

/// The addresses a bind covers on the host now: for `*:PORT` those of the attached interfaces
/// of the families served. `ADDR:PORT` is always keyed, also while a floating ADDR (a
/// keepalived VIP) is on another host: its packets reach this one only once the VIP's ARP (or
/// neighbour advertisement) says so, and then the data path must already know the frontend
/// (keepalived announces the VIP the moment it adds it, before any agent could react), or the
/// kernel would answer them with RST.
fn covered(bind: Bind, families: Families, iface_addrs: &[IpAddr], floating: &[IpAddr], loopback: bool) -> Vec<IpAddr> {
    match bind {
        Bind::Any(_) => {
            let mut all: Vec<IpAddr> = Vec::new();
            for a in iface_addrs.iter().chain(floating) {
                let served = match a {
                    IpAddr::V4(_) => families.v4,
                    IpAddr::V6(v6) => families.v6 && !crate::config::is_link_local6(v6) && !v6.is_loopback(),
                };
                if served && !all.contains(a) {
                    all.push(*a);
                }
            }
            // `*:PORT` covers the loopback address too, as HAProxy's listener on 0.0.0.0 does:
            // local clients dialling 127.0.0.1:PORT are the connect hook's (IPv4 only: ::1 is
            // not served, the hook being IPv4 only).
            if loopback && families.v4 {
                all.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            all
        }
        Bind::Addr(a) => vec![a.ip()],
    }
}

/// The kernel's keys for `addrs` on `port`: IPv4 ones, IPv6 ones.
fn keys_of(port: u16, addrs: &[IpAddr]) -> (Vec<FrontendKey>, Vec<FrontendKey6>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for a in addrs {
        match a {
            IpAddr::V4(a) => v4.push(FrontendKey { addr: a.octets(), port_be: port.to_be(), _pad: 0 }),
            IpAddr::V6(a) => v6.push(FrontendKey6 { addr: a.octets(), port_be: port.to_be(), _pad: 0 }),
        }
    }
    (v4, v6)
}

/// Keeps ids stable by name: an existing name keeps its id, a new one gets the lowest free id.
fn assign<K: Ord + Clone>(prev: &BTreeMap<K, u32>, names: &[K], first: u32) -> BTreeMap<K, u32> {
    let mut out = BTreeMap::new();
    let mut used: Vec<u32> = Vec::new();
    for n in names {
        if let Some(&id) = prev.get(n) {
            out.insert(n.clone(), id);
            used.push(id);
        }
    }
    let mut next = first;
    for n in names {
        if out.contains_key(n) {
            continue;
        }
        while used.contains(&next) {
            next += 1;
        }
        out.insert(n.clone(), next);
        used.push(next);
    }
    out
}

impl Topology {
    /// Resolves `cfg` for `ifaces` on `host`, keeping the ids of `prev` where names match.
    /// Every problem is reported at once.
    #[expect(
        clippy::indexing_slicing,
        reason = "the id maps are made from the same configuration's names, every name in them"
    )]
    pub fn resolve(
        cfg: &Config,
        ifaces: &[Interface],
        host: &dyn Host,
        prev: Option<&Topology>,
    ) -> Result<Topology, Problems> {
        let mut problems = Problems::default();
        let prev_f: BTreeMap<String, u32> =
            prev.map(|t| t.frontends.iter().map(|f| (f.name.clone(), f.id)).collect()).unwrap_or_default();
        let prev_p: BTreeMap<String, u32> =
            prev.map(|t| t.pools.iter().map(|p| (p.name.clone(), p.id)).collect()).unwrap_or_default();
        let prev_s: BTreeMap<(String, String), u32> = prev
            .map(|t| {
                t.pools
                    .iter()
                    .flat_map(|p| p.servers.iter().map(|s| ((p.name.clone(), s.name.clone()), s.id)))
                    .collect()
            })
            .unwrap_or_default();

        let f_ids = assign(&prev_f, &cfg.frontends.iter().map(|f| f.name.clone()).collect::<Vec<_>>(), 0);
        let p_ids = assign(&prev_p, &cfg.backends.iter().map(|b| b.name.clone()).collect::<Vec<_>>(), 0);
        let s_names: Vec<(String, String)> =
            cfg.backends.iter().flat_map(|b| b.servers.iter().map(|s| (b.name.clone(), s.name.clone()))).collect();
        let s_ids = assign(&prev_s, &s_names, 1);

        let iface_addrs: Vec<IpAddr> = ifaces.iter().flat_map(|i| i.addrs.iter().copied()).collect();
        let local = host.local_addrs();
        let floating: Vec<IpAddr> = cfg.global.sync.as_ref().map(|s| s.floating.clone()).unwrap_or_default();
        let loopback = cfg.global.local_clients;
        let mut frontends = Vec::new();
        for f in &cfg.frontends {
            let at = format!("frontend {:?}", f.name);
            let Some(&bind) = f.bind.get() else { continue };
            let families = Families::of(
                cfg.backends
                    .iter()
                    .filter(|b| b.name == f.backend)
                    .flat_map(|b| b.servers.iter().filter_map(|s| s.address.get().map(|a| a.0))),
            );
            match bind {
                Bind::Any(_) if !iface_addrs.iter().any(|a| families.has(*a)) => problems.push(format!(
                    "{at}: bind {:?} means every {} address of the attached interfaces ({}) (the families backend {:?} has servers of), and they have none; add an address or bind to one",
                    f.bind.text(),
                    match (families.v4, families.v6) {
                        (true, true) => "IPv4 or IPv6 (global or unique-local)",
                        (false, true) => "IPv6 (global or unique-local)",
                        _ => "IPv4",
                    },
                    ifaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", "),
                    f.backend
                )),
                // A loopback bind is the connect hook's (the configuration's own check says when not).
                Bind::Addr(a) if !a.ip().is_loopback() && !local.contains(&a.ip()) && !host.nonlocal_bind(a.ip()) => {
                    let (prefix, sysctl) =
                        if a.is_ipv4() { (32, "net.ipv4.ip_nonlocal_bind") } else { (128, "net.ipv6.ip_nonlocal_bind") };
                    problems.push(format!(
                        "{at}: bind address {} is not an address of this host; add it (ip addr add {}/{prefix} dev IFACE), bind to \"*:{}\", or, for a floating address such as a keepalived VIP, set {sysctl}=1 (as for HAProxy): it is then served whenever it is on this host",
                        a.ip(), a.ip(), a.port()
                    ));
                }
                _ => {}
            }
            // XDP on an interface sees the frames of a VLAN stacked on it still tagged (802.1Q),
            // which the data path does not parse: it passes them, and the kernel, which has no
            // listener, answers every SYN with RST.
            if let Bind::Addr(a) = bind {
                for i in ifaces {
                    for (vlan, _) in host.vlans_over(&i.name).iter().filter(|(_, addrs)| addrs.contains(&a.ip())) {
                        problems.push(format!(
                            "{at}: bind address {} is on {vlan}, a VLAN over {}: XDP on {} sees that VLAN's frames tagged (802.1Q) and does not parse them, so nothing would be served; attach to {vlan} instead (global.interfaces, generic mode), or serve the address untagged",
                            a.ip(), i.name, i.name
                        ));
                    }
                }
            }
            let (keys, keys6) = keys_of(bind.port(), &covered(bind, families, &iface_addrs, &floating, loopback));
            frontends.push(FrontendEntry {
                name: f.name.clone(),
                id: f_ids[&f.name],
                bind: f.bind.text().to_owned(),
                backend: f.backend.clone(),
                pool_id: p_ids.get(&f.backend).copied().unwrap_or(0),
                families,
                want: bind,
                keys,
                keys6,
                allow: f.allow.iter().filter_map(|c| c.get().copied()).collect(),
            });
        }

        let pools = cfg.backends.iter().map(|b| pool(b, p_ids[&b.name], &s_ids, host, &local, &mut problems)).collect();
        let topology = Topology { frontends, pools, floating, loopback };
        problems.extend(topology.fits().iter().map(str::to_owned));
        problems.into_result(topology)
    }

    /// The frontends' keys for the addresses on the attached interfaces now (`*:PORT` covers
    /// an address added later, and no longer one removed), both families. Returns what
    /// changed, as (frontend name, address, added).
    pub fn rebind(&mut self, iface_addrs: &[IpAddr]) -> Vec<(String, SocketAddr, bool)> {
        let mut changes = Vec::new();
        for f in &mut self.frontends {
            let port = f.want.port();
            let (keys, keys6) = keys_of(port, &covered(f.want, f.families, iface_addrs, &self.floating, self.loopback));
            let addr = |k: &FrontendKey| SocketAddr::new(IpAddr::from(k.addr), port);
            let addr6 = |k: &FrontendKey6| SocketAddr::new(IpAddr::from(k.addr), port);
            changes.extend(keys.iter().filter(|k| !f.keys.contains(k)).map(|k| (f.name.clone(), addr(k), true)));
            changes.extend(f.keys.iter().filter(|k| !keys.contains(k)).map(|k| (f.name.clone(), addr(k), false)));
            changes.extend(keys6.iter().filter(|k| !f.keys6.contains(k)).map(|k| (f.name.clone(), addr6(k), true)));
            changes.extend(f.keys6.iter().filter(|k| !keys6.contains(k)).map(|k| (f.name.clone(), addr6(k), false)));
            f.keys = keys;
            f.keys6 = keys6;
        }
        changes
    }

    /// Frontends bound to `addr` explicitly (`bind = "ADDR:PORT"`), by name.
    pub fn bound_to(&self, addr: IpAddr) -> Vec<&str> {
        self.frontends
            .iter()
            .filter(|f| matches!(f.want, Bind::Addr(a) if a.ip() == addr))
            .map(|f| f.name.as_str())
            .collect()
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Every server by id, with its pool.
    pub fn servers(&self) -> impl Iterator<Item = (&Pool, &ServerEntry)> {
        self.pools.iter().flat_map(|p| p.servers.iter().map(move |s| (p, s)))
    }
}

/// IPv4 frontend keys of a topology, for diffing against the kernel's map.
pub fn frontend_keys(t: &Topology) -> HashMap<FrontendKey, &FrontendEntry> {
    t.frontends.iter().flat_map(|f| f.keys.iter().map(move |k| (*k, f))).collect()
}

/// IPv6 frontend keys of a topology, for diffing against the kernel's `frontends6`.
pub fn frontend_keys6(t: &Topology) -> HashMap<FrontendKey6, &FrontendEntry> {
    t.frontends.iter().flat_map(|f| f.keys6.iter().map(move |k| (*k, f))).collect()
}

/// The balancer addresses a server's flows leave from: the backend's `source` list, or the
/// address the kernel routes from towards the server (a problem when there is no route).
/// Backend `b` as the pool with id `id`: its servers with their ids and source addresses.
fn pool(
    b: &BackendCfg,
    id: u32,
    s_ids: &BTreeMap<(String, String), u32>,
    host: &dyn Host,
    local: &[IpAddr],
    problems: &mut Problems,
) -> Pool {
    for src in b.source.iter().filter(|a| !local.contains(a) && !host.nonlocal_bind(**a)) {
        let prefix = if src.is_ipv4() { 32 } else { 128 };
        problems.push(format!(
            "backend {:?}: source address {src} is not an address of this host; add it (ip addr add {src}/{prefix} dev IFACE), remove it, or, for a floating address that moves with a keepalived VIP, set {}=1",
            b.name,
            nonlocal_sysctl(*src).replace('/', ".")
        ));
    }
    let mut servers = Vec::new();
    for s in &b.servers {
        let Some(&ServerAddr(addr)) = s.address.get() else { continue };
        let Some(source) = sources(b, &s.name, addr, host, problems) else { continue };
        let server_id = s_ids[&(b.name.clone(), s.name.clone())];
        if server_id >= MAX_SERVERS {
            problems.push(format!("backend {:?} server {:?}: more than {} servers", b.name, s.name, MAX_SERVERS - 1));
            continue;
        }
        servers.push(ServerEntry {
            name: s.name.clone(),
            id: server_id,
            addr,
            source,
            weight: s.weight,
            initial_weight: s.weight,
            backup: s.backup,
            check: s.check,
            admin: s.state,
            local: local.contains(&addr.ip()),
        });
    }
    Pool {
        name: b.name.clone(),
        id,
        check: b.check.clone(),
        retries: if b.redispatch { b.retries } else { 0 },
        suspect_after: b.suspect_after,
        balance: b.balance,
        allbackups: b.allbackups,
        servers,
    }
}

fn sources(
    b: &BackendCfg,
    server: &str,
    addr: SocketAddr,
    host: &dyn Host,
    problems: &mut Problems,
) -> Option<Vec<IpAddr>> {
    if !b.source.is_empty() {
        // Its own family's (validation refuses a backend whose source has none of them).
        let mine: Vec<IpAddr> = b.source.iter().copied().filter(|a| a.is_ipv4() == addr.is_ipv4()).collect();
        if mine.is_empty() {
            problems.push(format!(
                "backend {:?} server {server:?}: source lists no {} address for {addr}; add one",
                b.name,
                crate::config::family(addr.ip())
            ));
            return None;
        }
        return Some(mine);
    }
    match host.source_for(addr) {
        Ok(src) => Some(vec![src]),
        Err(e) => {
            problems.push(format!(
                "backend {:?} server {server:?}: {e}; add a route to {} or set `source` on the backend",
                b.name,
                addr.ip()
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// eth0 with 198.18.0.10, 2001:db8::10 (global), fd00::10 (unique-local) and
    /// fe80::10 (link-local); lo with 127.0.0.1 and ::1.
    struct FakeHost;
    impl Host for FakeHost {
        fn local_addrs(&self) -> Vec<IpAddr> {
            vec![v4(198, 18, 0, 10), v6("2001:db8::10"), v6("fd00::10"), v6("fe80::10"), v4(127, 0, 0, 1), v6("::1")]
        }
        fn source_for(&self, d: SocketAddr) -> Result<IpAddr, NetifError> {
            Ok(if d.is_ipv4() { v4(198, 18, 0, 10) } else { v6("2001:db8::10") })
        }
        fn nonlocal_bind(&self, _: IpAddr) -> bool {
            false
        }
    }

    /// A host with `ip_nonlocal_bind` set, where a VIP may come later.
    struct NonLocalHost;
    impl Host for NonLocalHost {
        fn local_addrs(&self) -> Vec<IpAddr> {
            FakeHost.local_addrs()
        }
        fn source_for(&self, d: SocketAddr) -> Result<IpAddr, NetifError> {
            FakeHost.source_for(d)
        }
        /// IPv4 only: net.ipv6.ip_nonlocal_bind stays 0.
        fn nonlocal_bind(&self, a: IpAddr) -> bool {
            a.is_ipv4()
        }
    }

    fn cfg(servers: &str) -> Config {
        Config::parse(
            &format!(
                "[[frontend]]\nname=\"f\"\nbind=\"*:12379\"\nbackend=\"b\"\n[[backend]]\nname=\"b\"\nserver=[{servers}]\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    fn eth0() -> Vec<Interface> {
        vec![Interface { name: "eth0".into(), ifindex: 2, addrs: vec![v4(198, 18, 0, 10)] }]
    }

    /// eth0 as netif reads it on the dual-stack host (link-local addresses are never read).
    fn eth0_dual() -> Vec<Interface> {
        vec![Interface {
            name: "eth0".into(),
            ifindex: 2,
            addrs: vec![v4(198, 18, 0, 10), v6("2001:db8::10"), v6("fd00::10")],
        }]
    }

    fn key6(s: &str, port: u16) -> FrontendKey6 {
        let IpAddr::V6(a) = v6(s) else { unreachable!() };
        FrontendKey6 { addr: a.octets(), port_be: port.to_be(), _pad: 0 }
    }

    fn key4(addr: [u8; 4], port: u16) -> FrontendKey {
        FrontendKey { addr, port_be: port.to_be(), _pad: 0 }
    }

    #[test]
    fn wildcard_binds_expand_to_interface_addresses_and_ids_survive_reloads() {
        let a = r#"{name="s1",address="198.18.0.21:2379"},{name="s2",address="198.18.0.22:2379"}"#;
        let t1 = Topology::resolve(&cfg(a), &eth0(), &FakeHost, None).unwrap();
        assert_eq!(
            t1.frontends[0].keys,
            vec![
                FrontendKey { addr: [198, 18, 0, 10], port_be: 12379u16.to_be(), _pad: 0 },
                FrontendKey { addr: [127, 0, 0, 1], port_be: 12379u16.to_be(), _pad: 0 },
            ]
        );
        assert_eq!(t1.pools[0].servers.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 2]);
        // s1 removed, s3 added: s2 keeps id 2, s3 takes the free id 1.
        let b = r#"{name="s3",address="198.18.0.23:2379"},{name="s2",address="198.18.0.22:2379"}"#;
        let t2 = Topology::resolve(&cfg(b), &eth0(), &FakeHost, Some(&t1)).unwrap();
        let ids: Vec<_> = t2.pools[0].servers.iter().map(|s| (s.name.as_str(), s.id)).collect();
        assert_eq!(ids, vec![("s3", 1), ("s2", 2)]);
    }

    #[test]
    fn bind_address_not_on_host_is_refused() {
        let mut c = cfg(r#"{name="s1",address="198.18.0.21:2379"}"#);
        c.frontends[0].bind = "198.18.0.99:12379".into();
        let e = Topology::resolve(&c, &eth0(), &FakeHost, None).unwrap_err();
        assert!(e.iter().next().unwrap().contains("not an address of this host"), "{e:?}");
    }

    /// A host whose eth0 carries a VLAN, eth0.100, with 198.18.5.10.
    struct VlanHost;
    impl Host for VlanHost {
        fn local_addrs(&self) -> Vec<IpAddr> {
            vec![v4(198, 18, 0, 10), v4(198, 18, 5, 10)]
        }
        fn source_for(&self, d: SocketAddr) -> Result<IpAddr, NetifError> {
            FakeHost.source_for(d)
        }
        fn nonlocal_bind(&self, _: IpAddr) -> bool {
            false
        }
        fn vlans_over(&self, iface: &str) -> Vec<(String, Vec<IpAddr>)> {
            if iface == "eth0" {
                vec![("eth0.100".into(), vec![v4(198, 18, 5, 10)])]
            } else {
                Vec::new()
            }
        }
    }

    #[test]
    fn a_bind_on_a_vlan_over_an_attached_interface_is_refused_with_the_reason() {
        let mut c = cfg(r#"{name="s1",address="198.18.0.21:2379"}"#);
        c.frontends[0].bind = "198.18.5.10:12379".into();
        let e = Topology::resolve(&c, &eth0(), &VlanHost, None).unwrap_err();
        let said = e.iter().next().unwrap();
        assert!(said.contains("is on eth0.100, a VLAN over eth0") && said.contains("attach to eth0.100"), "{said}");
        // The untagged address of the same host is served as before.
        c.frontends[0].bind = "198.18.0.10:12379".into();
        assert!(Topology::resolve(&c, &eth0(), &VlanHost, None).is_ok());
    }

    #[test]
    fn a_floating_bind_is_accepted_with_nonlocal_bind_and_keyed_before_it_arrives() {
        let mut c = cfg(r#"{name="s1",address="198.18.0.21:2379"}"#);
        c.frontends[0].bind = "198.18.0.99:12379".into();
        c.backends[0].source = vec![v4(198, 18, 0, 99)];
        assert!(Topology::resolve(&c, &eth0(), &FakeHost, None).is_err(), "refused without ip_nonlocal_bind");
        let mut t = Topology::resolve(&c, &eth0(), &NonLocalHost, None).unwrap();
        let vip = FrontendKey { addr: [198, 18, 0, 99], port_be: 12379u16.to_be(), _pad: 0 };
        assert_eq!(t.frontends[0].keys, vec![vip], "keyed while the VIP is elsewhere");
        assert!(t.rebind(&[v4(198, 18, 0, 10)]).is_empty(), "an explicit bind does not follow the interfaces");
        assert_eq!(t.bound_to(v4(198, 18, 0, 99)), vec!["f"]);
    }

    #[test]
    fn a_wildcard_bind_covers_an_address_added_later() {
        let c = cfg(r#"{name="s1",address="198.18.0.21:2379"}"#);
        let mut t = Topology::resolve(&c, &eth0(), &FakeHost, None).unwrap();
        let more = [v4(198, 18, 0, 10), v4(198, 18, 0, 11)];
        let changes = t.rebind(&more);
        assert_eq!(changes, vec![("f".to_owned(), SocketAddr::new(more[1], 12379), true)]);
        assert_eq!(t.frontends[0].keys.len(), 3, "both addresses, and 127.0.0.1 for local clients");
        assert_eq!(t.rebind(&more[..1]), vec![("f".to_owned(), SocketAddr::new(more[1], 12379), false)]);
        // An IPv6 address arriving is not covered: the backend has no IPv6 server.
        assert!(t.rebind(&[more[0], v6("2001:db8::11")]).is_empty());
        assert!(t.frontends[0].keys6.is_empty());
    }

    #[test]
    fn backups_take_flows_only_when_no_active_server_is_up() {
        let c = cfg(
            r#"{name="a",address="198.18.0.21:1"},{name="b",address="198.18.0.22:1"},{name="k",address="198.18.0.23:1",backup=true}"#,
        );
        let t = Topology::resolve(&c, &eth0(), &FakeHost, None).unwrap();
        let set = t.pools[0].backend_set(&|_| true);
        assert_eq!(&set.slots[..set.count as usize], &[1, 2]);
        let set = t.pools[0].backend_set(&|id| id == 3);
        assert_eq!(&set.slots[..set.count as usize], &[3]);
        let set = t.pools[0].backend_set(&|_| false);
        assert_eq!(set.count, 0);
    }

    #[test]
    fn only_the_first_up_backup_takes_flows_unless_allbackups() {
        let mut c = cfg(
            r#"{name="a",address="198.18.0.21:1"},{name="k1",address="198.18.0.22:1",backup=true},{name="k2",address="198.18.0.23:1",backup=true}"#,
        );
        let t = Topology::resolve(&c, &eth0(), &FakeHost, None).unwrap();
        let set = t.pools[0].backend_set(&|id| id != 1);
        assert_eq!(&set.slots[..set.count as usize], &[2], "HAProxy: the first backup only");
        let set = t.pools[0].backend_set(&|id| id == 3);
        assert_eq!(&set.slots[..set.count as usize], &[3], "the first UP backup");
        c.backends[0].allbackups = true;
        let t = Topology::resolve(&c, &eth0(), &FakeHost, None).unwrap();
        let set = t.pools[0].backend_set(&|id| id != 1);
        assert_eq!(&set.slots[..set.count as usize], &[2, 3]);
    }

    const DUAL: &str = r#"{name="s4",address="198.18.0.21:2379"},{name="s6",address="[2001:db8::21]:2379"}"#;

    #[test]
    fn a_wildcard_bind_covers_both_families_for_a_dual_stack_backend() {
        let t = Topology::resolve(&cfg(DUAL), &eth0_dual(), &FakeHost, None).unwrap();
        let f = &t.frontends[0];
        assert_eq!(f.families, Families { v4: true, v6: true });
        assert_eq!(f.keys, vec![key4([198, 18, 0, 10], 12379), key4([127, 0, 0, 1], 12379)]);
        // Global and unique-local; no ::1 (the connect hook is IPv4 only).
        assert_eq!(f.keys6, vec![key6("2001:db8::10", 12379), key6("fd00::10", 12379)]);
        let s6 = &t.pools[0].servers[1];
        assert_eq!(s6.addr, "[2001:db8::21]:2379".parse::<SocketAddr>().unwrap());
        assert_eq!(s6.source, vec![v6("2001:db8::10")], "the kernel's route, of the server's family");
        assert_eq!(t.pools[0].servers_of(true).map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["s6"]);
        assert_eq!(t.pools[0].servers_of(false).map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["s4"]);
        let set4 = t.pools[0].backend_set_of(false, &|_| true);
        let set6 = t.pools[0].backend_set_of(true, &|_| true);
        assert_eq!((&set4.slots[..set4.count as usize], &set6.slots[..set6.count as usize]), (&[1][..], &[2][..]));
        assert_eq!(frontend_keys6(&t).len(), 2);
    }

    #[test]
    fn a_wildcard_bind_covers_only_the_families_of_the_backend() {
        let t = Topology::resolve(&cfg(r#"{name="s6",address="[2001:db8::21]:2379"}"#), &eth0_dual(), &FakeHost, None)
            .unwrap();
        assert!(t.frontends[0].keys.is_empty(), "no IPv4 server: no IPv4 key, not even 127.0.0.1");
        assert_eq!(t.frontends[0].keys6, vec![key6("2001:db8::10", 12379), key6("fd00::10", 12379)]);
        let t = Topology::resolve(&cfg(r#"{name="s4",address="198.18.0.21:2379"}"#), &eth0_dual(), &FakeHost, None)
            .unwrap();
        assert!(t.frontends[0].keys6.is_empty(), "no IPv6 server: no IPv6 key");
        // An IPv6-only backend on an interface without IPv6 addresses serves nothing.
        let e = Topology::resolve(&cfg(r#"{name="s6",address="[2001:db8::21]:2379"}"#), &eth0(), &FakeHost, None)
            .unwrap_err();
        let said = e.iter().next().unwrap();
        assert!(
            said.contains("every IPv6 (global or unique-local) address of the attached interfaces (eth0)"),
            "{said}"
        );
    }

    #[test]
    fn an_explicit_ipv6_bind_is_keyed_and_rebinding_follows_ipv6_addresses() {
        let mut c = cfg(DUAL);
        c.frontends[0].bind = "[2001:db8::10]:12379".into();
        let t = Topology::resolve(&c, &eth0_dual(), &FakeHost, None).unwrap();
        assert!(t.frontends[0].keys.is_empty());
        assert_eq!(t.frontends[0].keys6, vec![key6("2001:db8::10", 12379)]);
        assert_eq!(t.bound_to(v6("2001:db8::10")), vec!["f"]);

        let mut t = Topology::resolve(&cfg(DUAL), &eth0_dual(), &FakeHost, None).unwrap();
        let now = [v4(198, 18, 0, 10), v6("2001:db8::10"), v6("2001:db8::11")];
        let changes = t.rebind(&now);
        assert_eq!(
            changes,
            vec![
                ("f".to_owned(), "[2001:db8::11]:12379".parse().unwrap(), true),
                ("f".to_owned(), "[fd00::10]:12379".parse().unwrap(), false),
            ]
        );
        assert_eq!(t.frontends[0].keys6, vec![key6("2001:db8::10", 12379), key6("2001:db8::11", 12379)]);
        // A link-local address on the interface is never covered.
        assert_eq!(t.rebind(&[now[0], now[1], now[2], v6("fe80::10")]), vec![]);
    }

    #[test]
    fn an_ipv6_bind_not_on_the_host_names_the_ipv6_sysctl() {
        let mut c = cfg(DUAL);
        c.frontends[0].bind = "[2001:db8::99]:12379".into();
        // NonLocalHost has net.ipv4.ip_nonlocal_bind only.
        let e = Topology::resolve(&c, &eth0_dual(), &NonLocalHost, None).unwrap_err();
        let said = e.iter().next().unwrap();
        assert!(
            said.contains("bind address 2001:db8::99 is not an address of this host")
                && said.contains("ip addr add 2001:db8::99/128 dev IFACE")
                && said.contains("net.ipv6.ip_nonlocal_bind=1"),
            "{said}"
        );
    }

    #[test]
    fn a_server_takes_the_source_addresses_of_its_own_family() {
        let mut c = cfg(DUAL);
        c.backends[0].source = vec![v4(198, 18, 0, 10), v6("2001:db8::10")];
        let t = Topology::resolve(&c, &eth0_dual(), &FakeHost, None).unwrap();
        assert_eq!(t.pools[0].servers[0].source, vec![v4(198, 18, 0, 10)]);
        assert_eq!(t.pools[0].servers[1].source, vec![v6("2001:db8::10")]);
        c.backends[0].source = vec![v6("2001:db8::99")];
        let e = Topology::resolve(&c, &eth0_dual(), &FakeHost, None).unwrap_err();
        let all: Vec<&str> = e.iter().collect();
        assert!(
            all.iter().any(|m| m.contains("source address 2001:db8::99 is not an address of this host")
                && m.contains("/128")
                && m.contains("net.ipv6.ip_nonlocal_bind=1")),
            "{all:?}"
        );
        assert!(
            all.iter().any(|m| m.contains("server \"s4\": source lists no IPv4 address for 198.18.0.21:2379")),
            "{all:?}"
        );
    }
}
