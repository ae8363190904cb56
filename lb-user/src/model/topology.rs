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
    pub keys: Vec<FrontendKey>,
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
}

/// What resolving needs from the host; a trait so tests can describe a host.
pub trait Host {
    /// Every local IPv4 address (for `bind = "ADDR:PORT"`).
    fn local_addrs(&self) -> Vec<Ipv4Addr>;
    /// The local address the kernel routes from towards `dst`.
    fn source_for(&self, dst: SocketAddrV4) -> Result<Ipv4Addr, NetifError>;
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
        let mut frontends = Vec::new();
        for f in &cfg.frontends {
            let at = format!("frontend {:?}", f.name);
            let Some(&bind) = f.bind.get() else { continue };
            let addrs = match bind {
                Bind::Any(_) => {
                    if iface_addrs.is_empty() {
                        problems.push(format!(
                            "{at}: bind {:?} means every IPv4 address of the attached interfaces ({}), and they have none; add an address or bind to one",
                            f.bind.text(),
                            ifaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
                        ));
                    }
                    iface_addrs.clone()
                }
                Bind::Addr(a) => {
                    if !local.contains(a.ip()) {
                        problems.push(format!(
                            "{at}: bind address {} is not an address of this host; add it (ip addr add {}/32 dev IFACE) or bind to \"*:{}\"",
                            a.ip(), a.ip(), a.port()
                        ));
                    }
                    vec![*a.ip()]
                }
            };
            let keys =
                addrs.iter().map(|a| FrontendKey { addr: a.octets(), port_be: bind.port().to_be(), _pad: 0 }).collect();
            frontends.push(FrontendEntry {
                name: f.name.clone(),
                id: f_ids[&f.name],
                bind: f.bind.text().to_owned(),
                backend: f.backend.clone(),
                pool_id: p_ids.get(&f.backend).copied().unwrap_or(0),
                keys,
            });
        }

        let pools = cfg.backends.iter().map(|b| pool(b, p_ids[&b.name], &s_ids, host, &local, &mut problems)).collect();
        let topology = Topology { frontends, pools };
        problems.extend(topology.fits().iter().map(str::to_owned));
        problems.into_result(topology)
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
pub fn frontend_keys(t: &Topology) -> HashMap<FrontendKey, (u32, u32)> {
    t.frontends.iter().flat_map(|f| f.keys.iter().map(move |k| (*k, (f.id, f.pool_id)))).collect()
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
    problems: &mut Problems,
) -> Pool {
    for src in b.source.iter().filter(|a| !local.contains(a)) {
        problems.push(format!(
            "backend {:?}: source address {src} is not an address of this host; add it (ip addr add {src}/32 dev IFACE) or remove it",
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
            vec![FrontendKey { addr: [198, 18, 0, 10], port_be: 12379u16.to_be(), _pad: 0 }]
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
