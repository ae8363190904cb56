//! The configuration resolved against this host: ids for frontends, pools and servers (stable
//! across reloads by name), the frontend keys a `*:PORT` expands to, and the source address
//! each server's flows leave from, and every setting the later stages need (bind text, check
//! settings, administrative state), so that nothing after this reads the configuration by
//! name. Pure data; `dataplane::maps` writes it to the kernel, `health` checks from it.

use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, SocketAddrV4},
};

use lb_common::{FrontendKey, MAX_SERVERS};

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
    pub floating: Vec<Ipv4Addr>,
    /// `*:PORT` frontends also cover 127.0.0.1 (`global.local_clients`: the connect hook's).
    pub loopback: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FrontendEntry {
    pub name: String,
    pub id: u32,
    /// As written in the configuration (`*:12379`), for the status page.
    pub bind: String,
    /// The backend's name and id.
    pub backend: String,
    pub pool_id: u32,
    /// What the bind asks for; `keys` is what it covers on the host now (see `rebind`).
    pub want: Bind,
    /// The kernel's frontend keys: one per address the bind covers that is on the host now.
    /// Empty for a floating address (a keepalived VIP) held by another host.
    pub keys: Vec<FrontendKey>,
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

#[derive(Debug, Clone, PartialEq)]
pub struct ServerEntry {
    pub name: String,
    pub id: u32,
    pub addr: SocketAddrV4,
    /// The balancer addresses its flows leave from (at least one).
    pub source: Vec<Ipv4Addr>,
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
    /// Every local IPv4 address (for `bind = "ADDR:PORT"`).
    fn local_addrs(&self) -> Vec<Ipv4Addr>;
    /// The local address the kernel routes from towards `dst`.
    fn source_for(&self, dst: SocketAddrV4) -> Result<Ipv4Addr, NetifError>;
    /// `net.ipv4.ip_nonlocal_bind`: addresses not (yet) on this host may be bound, as HAProxy
    /// users do for a keepalived VIP on the backup host.
    fn nonlocal_bind(&self) -> bool;
    /// The VLAN devices stacked on `iface`, with their IPv4 addresses.
    fn vlans_over(&self, _iface: &str) -> Vec<(String, Vec<Ipv4Addr>)> {
        Vec::new()
    }
}

/// The real host.
pub struct System;

impl Host for System {
    fn local_addrs(&self) -> Vec<Ipv4Addr> {
        crate::host::netif::all_ipv4().map(|v| v.into_iter().map(|(_, a)| a).collect()).unwrap_or_default()
    }
    fn source_for(&self, dst: SocketAddrV4) -> Result<Ipv4Addr, NetifError> {
        crate::host::netif::source_for(dst)
    }
    fn nonlocal_bind(&self) -> bool {
        crate::host::sysctl::read("net/ipv4/ip_nonlocal_bind").is_ok_and(|v| v.trim() == "1")
    }
    fn vlans_over(&self, iface: &str) -> Vec<(String, Vec<Ipv4Addr>)> {
        crate::host::netif::vlans_over(iface)
    }
}

/// The addresses a bind covers on the host now: for `*:PORT` those of the attached interfaces.
/// `ADDR:PORT` is always keyed, also while a floating ADDR (a keepalived VIP) is on another
/// host: its packets reach this one only once the VIP's ARP says so, and then the data path
/// must already know the frontend (keepalived announces the VIP the moment it adds it, before
/// any agent could react), or the kernel would answer them with RST.
fn covered(bind: Bind, iface_addrs: &[Ipv4Addr], floating: &[Ipv4Addr], loopback: bool) -> Vec<Ipv4Addr> {
    match bind {
        Bind::Any(_) => {
            let mut all = iface_addrs.to_vec();
            all.extend(floating.iter().filter(|a| !iface_addrs.contains(a)));
            // `*:PORT` covers the loopback address too, as HAProxy's listener on 0.0.0.0 does:
            // local clients dialling 127.0.0.1:PORT are the connect hook's.
            if loopback {
                all.push(Ipv4Addr::LOCALHOST);
            }
            all
        }
        Bind::Addr(a) => vec![*a.ip()],
    }
}

fn keys_of(bind: Bind, addrs: &[Ipv4Addr]) -> Vec<FrontendKey> {
    addrs.iter().map(|a| FrontendKey { addr: a.octets(), port_be: bind.port().to_be(), _pad: 0 }).collect()
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

        let iface_addrs: Vec<Ipv4Addr> = ifaces.iter().flat_map(|i| i.addrs.iter().copied()).collect();
        let local = host.local_addrs();
        let nonlocal = host.nonlocal_bind();
        let floating: Vec<Ipv4Addr> = cfg.global.sync.as_ref().map(|s| s.floating.clone()).unwrap_or_default();
        let loopback = cfg.global.local_clients;
        let mut frontends = Vec::new();
        for f in &cfg.frontends {
            let at = format!("frontend {:?}", f.name);
            let Some(&bind) = f.bind.get() else { continue };
            match bind {
                Bind::Any(_) if iface_addrs.is_empty() => problems.push(format!(
                    "{at}: bind {:?} means every IPv4 address of the attached interfaces ({}), and they have none; add an address or bind to one",
                    f.bind.text(),
                    ifaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
                )),
                // A loopback bind is the connect hook's (the configuration's own check says when not).
                Bind::Addr(a) if !a.ip().is_loopback() && !local.contains(a.ip()) && !nonlocal => problems.push(format!(
                    "{at}: bind address {} is not an address of this host; add it (ip addr add {}/32 dev IFACE), bind to \"*:{}\", or, for a floating address such as a keepalived VIP, set net.ipv4.ip_nonlocal_bind=1 (as for HAProxy): it is then served whenever it is on this host",
                    a.ip(), a.ip(), a.port()
                )),
                _ => {}
            }
            // XDP on an interface sees the frames of a VLAN stacked on it still tagged (802.1Q),
            // which the data path does not parse: it passes them, and the kernel, which has no
            // listener, answers every SYN with RST.
            if let Bind::Addr(a) = bind {
                for i in ifaces {
                    for (vlan, _) in host.vlans_over(&i.name).iter().filter(|(_, addrs)| addrs.contains(a.ip())) {
                        problems.push(format!(
                            "{at}: bind address {} is on {vlan}, a VLAN over {}: XDP on {} sees that VLAN's frames tagged (802.1Q) and does not parse them, so nothing would be served; attach to {vlan} instead (global.interfaces, generic mode), or serve the address untagged",
                            a.ip(), i.name, i.name
                        ));
                    }
                }
            }
            let keys = keys_of(bind, &covered(bind, &iface_addrs, &floating, loopback));
            frontends.push(FrontendEntry {
                name: f.name.clone(),
                id: f_ids[&f.name],
                bind: f.bind.text().to_owned(),
                backend: f.backend.clone(),
                pool_id: p_ids.get(&f.backend).copied().unwrap_or(0),
                want: bind,
                keys,
                allow: f.allow.iter().filter_map(|c| c.get().copied()).collect(),
            });
        }

        let pools = cfg
            .backends
            .iter()
            .map(|b| pool(b, p_ids[&b.name], &s_ids, host, &local, nonlocal, &mut problems))
            .collect();
        let topology = Topology { frontends, pools, floating, loopback };
        problems.extend(topology.fits().iter().map(str::to_owned));
        problems.into_result(topology)
    }

    /// The frontends' keys for the addresses on the attached interfaces now (`*:PORT` covers
    /// an address added later, and no longer one removed). Returns what changed, as
    /// (frontend name, address, added).
    pub fn rebind(&mut self, iface_addrs: &[Ipv4Addr]) -> Vec<(String, SocketAddrV4, bool)> {
        let mut changes = Vec::new();
        for f in &mut self.frontends {
            let keys = keys_of(f.want, &covered(f.want, iface_addrs, &self.floating, self.loopback));
            let addr = |k: &FrontendKey| SocketAddrV4::new(k.addr.into(), f.want.port());
            changes.extend(keys.iter().filter(|k| !f.keys.contains(k)).map(|k| (f.name.clone(), addr(k), true)));
            changes.extend(f.keys.iter().filter(|k| !keys.contains(k)).map(|k| (f.name.clone(), addr(k), false)));
            f.keys = keys;
        }
        changes
    }

    /// Frontends bound to `addr` explicitly (`bind = "ADDR:PORT"`), by name.
    pub fn bound_to(&self, addr: Ipv4Addr) -> Vec<&str> {
        self.frontends
            .iter()
            .filter(|f| matches!(f.want, Bind::Addr(a) if *a.ip() == addr))
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

/// Frontend keys of a topology, for diffing against the kernel's map.
pub fn frontend_keys(t: &Topology) -> HashMap<FrontendKey, &FrontendEntry> {
    t.frontends.iter().flat_map(|f| f.keys.iter().map(move |k| (*k, f))).collect()
}

/// The balancer addresses a server's flows leave from: the backend's `source` list, or the
/// address the kernel routes from towards the server (a problem when there is no route).
/// Backend `b` as the pool with id `id`: its servers with their ids and source addresses.
fn pool(
    b: &BackendCfg,
    id: u32,
    s_ids: &BTreeMap<(String, String), u32>,
    host: &dyn Host,
    local: &[Ipv4Addr],
    nonlocal: bool,
    problems: &mut Problems,
) -> Pool {
    for src in b.source.iter().filter(|a| !local.contains(a) && !nonlocal) {
        problems.push(format!(
            "backend {:?}: source address {src} is not an address of this host; add it (ip addr add {src}/32 dev IFACE), remove it, or, for a floating address that moves with a keepalived VIP, set net.ipv4.ip_nonlocal_bind=1",
            b.name
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
            local: local.contains(addr.ip()),
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
    addr: SocketAddrV4,
    host: &dyn Host,
    problems: &mut Problems,
) -> Option<Vec<Ipv4Addr>> {
    if !b.source.is_empty() {
        return Some(b.source.clone());
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

    struct FakeHost;
    impl Host for FakeHost {
        fn local_addrs(&self) -> Vec<Ipv4Addr> {
            vec![Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::LOCALHOST]
        }
        fn source_for(&self, _: SocketAddrV4) -> Result<Ipv4Addr, NetifError> {
            Ok(Ipv4Addr::new(198, 18, 0, 10))
        }
        fn nonlocal_bind(&self) -> bool {
            false
        }
    }

    /// A host with `ip_nonlocal_bind` set, where a VIP may come later.
    struct NonLocalHost;
    impl Host for NonLocalHost {
        fn local_addrs(&self) -> Vec<Ipv4Addr> {
            FakeHost.local_addrs()
        }
        fn source_for(&self, d: SocketAddrV4) -> Result<Ipv4Addr, NetifError> {
            FakeHost.source_for(d)
        }
        fn nonlocal_bind(&self) -> bool {
            true
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
        vec![Interface { name: "eth0".into(), ifindex: 2, addrs: vec![Ipv4Addr::new(198, 18, 0, 10)] }]
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
        fn local_addrs(&self) -> Vec<Ipv4Addr> {
            vec![Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 5, 10)]
        }
        fn source_for(&self, d: SocketAddrV4) -> Result<Ipv4Addr, NetifError> {
            FakeHost.source_for(d)
        }
        fn nonlocal_bind(&self) -> bool {
            false
        }
        fn vlans_over(&self, iface: &str) -> Vec<(String, Vec<Ipv4Addr>)> {
            if iface == "eth0" {
                vec![("eth0.100".into(), vec![Ipv4Addr::new(198, 18, 5, 10)])]
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
        c.backends[0].source = vec![Ipv4Addr::new(198, 18, 0, 99)];
        assert!(Topology::resolve(&c, &eth0(), &FakeHost, None).is_err(), "refused without ip_nonlocal_bind");
        let mut t = Topology::resolve(&c, &eth0(), &NonLocalHost, None).unwrap();
        let vip = FrontendKey { addr: [198, 18, 0, 99], port_be: 12379u16.to_be(), _pad: 0 };
        assert_eq!(t.frontends[0].keys, vec![vip], "keyed while the VIP is elsewhere");
        assert!(
            t.rebind(&[Ipv4Addr::new(198, 18, 0, 10)]).is_empty(),
            "an explicit bind does not follow the interfaces"
        );
        assert_eq!(t.bound_to(Ipv4Addr::new(198, 18, 0, 99)), vec!["f"]);
    }

    #[test]
    fn a_wildcard_bind_covers_an_address_added_later() {
        let c = cfg(r#"{name="s1",address="198.18.0.21:2379"}"#);
        let mut t = Topology::resolve(&c, &eth0(), &FakeHost, None).unwrap();
        let more = [Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 11)];
        let changes = t.rebind(&more);
        assert_eq!(changes, vec![("f".to_owned(), SocketAddrV4::new(more[1], 12379), true)]);
        assert_eq!(t.frontends[0].keys.len(), 3, "both addresses, and 127.0.0.1 for local clients");
        assert_eq!(t.rebind(&more[..1]), vec![("f".to_owned(), SocketAddrV4::new(more[1], 12379), false)]);
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
}
