//! The one writer of the maps the configuration and the health of servers decide: frontends
//! (and their ports' bitmap), backend sets, servers, settings and redirect ports. The rest of the agent asks this owner.
//! (The connection table is `conntrack`'s; counters are read-only, in `stats`.)

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    hash::Hash,
    net::{IpAddr, SocketAddr},
};

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, DevMapHash, HashMap, MapData, MapError,
    },
    Ebpf,
};
use lb_common::{
    names, AllowKey, AllowKey6, BackendSet, Frontend, FrontendKey, FrontendKey6, FrontendKeyOf, Server, Server6,
    ServerOf, Settings, SuspicionVerdict, FRONTEND_F_ALLOWLIST, FRONTEND_PORT_WORDS, MAX_SOURCES, POOL_V6,
    SERVER_F_LOCAL, SERVER_F_VALID, SETTINGS_F_FLOW_EVENTS, SETTINGS_F_RST_NO_BACKEND, SETTINGS_F_TS_TRANSLATE,
};

use super::flows::Addr;
use crate::{
    config::Global,
    host::netif::Interface,
    model::{frontend_keys, frontend_keys6, FrontendEntry, Pool, ServerEntry, Topology},
};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("map {0} is missing from the XDP object")]
    Missing(&'static str),
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: MapError },
    #[error("map {map}: {source}")]
    Redirect { map: &'static str, source: aya::maps::xdp::XdpMapError },
}

fn at(map: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { map, source }
}

pub(crate) fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, MapsError> {
    let map = ebpf.take_map(name).ok_or(MapsError::Missing(name))?;
    T::try_from(map).map_err(at(name))
}

pub struct MapOwner {
    frontends: HashMap<MapData, FrontendKey, Frontend>,
    frontend_ports: Array<MapData, u64>,
    backend_sets: HashMap<MapData, u32, BackendSet>,
    servers: Array<MapData, Server>,
    settings: Array<MapData, Settings>,
    tx_ports: DevMapHash<MapData>,
    suspicion_verdict: Array<MapData, SuspicionVerdict>,
    allow: LpmTrie<MapData, AllowKey, u32>,
    // IPv6's twins (see lb-common's `names`).
    frontends6: HashMap<MapData, FrontendKey6, Frontend>,
    servers6: Array<MapData, Server6>,
    allow6: LpmTrie<MapData, AllowKey6, u32>,
}

/// What the owner's maps hold, read back whole: what a failed change is rolled back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelState {
    pub frontends: Vec<(FrontendKey, Frontend)>,
    /// The ports whose bit is set in `frontend_ports`, ascending.
    pub frontend_ports: Vec<u16>,
    pub backend_sets: Vec<(u32, BackendSet)>,
    /// Every valid server entry.
    pub servers: Vec<(u32, Server)>,
    pub settings: Settings,
    /// The allowlists' entries: (prefix length, key), sorted.
    pub allow: Vec<(u32, AllowKey)>,
    pub frontends6: Vec<(FrontendKey6, Frontend)>,
    pub servers6: Vec<(u32, Server6)>,
    pub allow6: Vec<(u32, AllowKey6)>,
}

impl MapOwner {
    /// Opens the maps a running data path pinned under `dir` (tests, and tools that must see
    /// what the owner wrote).
    pub fn open_pinned(dir: &std::path::Path) -> Result<Self, MapsError> {
        fn open<T: TryFrom<aya::maps::Map, Error = MapError>>(
            dir: &std::path::Path,
            name: &'static str,
        ) -> Result<T, MapsError> {
            let data = MapData::from_pin(dir.join(name)).map_err(at(name))?;
            let map = aya::maps::Map::from_map_data(data).map_err(at(name))?;
            T::try_from(map).map_err(at(name))
        }
        Ok(Self {
            frontends: open(dir, names::FRONTENDS)?,
            frontend_ports: open(dir, names::FRONTEND_PORTS)?,
            backend_sets: open(dir, names::BACKEND_SETS)?,
            servers: open(dir, names::SERVERS)?,
            settings: open(dir, names::SETTINGS)?,
            tx_ports: open(dir, names::TX_PORTS)?,
            suspicion_verdict: open(dir, names::SUSPICION_VERDICT)?,
            allow: open(dir, names::ALLOW)?,
            frontends6: open(dir, names::FRONTENDS6)?,
            servers6: open(dir, names::SERVERS6)?,
            allow6: open(dir, names::ALLOW6)?,
        })
    }

    /// Reads back everything the owner wrote.
    pub fn state(&self) -> Result<KernelState, MapsError> {
        let mut backend_sets: Vec<(u32, BackendSet)> =
            self.backend_sets.iter().collect::<Result<_, _>>().map_err(at(names::BACKEND_SETS))?;
        backend_sets.sort_by_key(|(k, _)| *k);
        let settings = self.settings.get(&0, 0).map_err(at(names::SETTINGS))?;
        let allow = lpm_entries(&self.allow, names::ALLOW)?;
        let mut frontend_ports = Vec::new();
        for (i, first) in (0..FRONTEND_PORT_WORDS).zip((0..=u16::MAX).step_by(64)) {
            let word = self.frontend_ports.get(&i, 0).map_err(at(names::FRONTEND_PORTS))?;
            frontend_ports.extend((0..64u16).filter(|b| word & (1 << b) != 0).map(|b| first + b));
        }
        Ok(KernelState {
            frontends: frontend_entries(&self.frontends, names::FRONTENDS)?,
            frontend_ports,
            backend_sets,
            servers: server_entries(&self.servers, names::SERVERS)?,
            settings,
            allow,
            frontends6: frontend_entries(&self.frontends6, names::FRONTENDS6)?,
            servers6: server_entries(&self.servers6, names::SERVERS6)?,
            allow6: lpm_entries(&self.allow6, names::ALLOW6)?,
        })
    }

    /// Makes both allowlist maps hold exactly `want`: new entries first, then the stale ones
    /// removed (a frontend's flag is set only once its entries are in, see `apply`).
    fn write_allow(&mut self, want: &AllowEntries) -> Result<(), MapsError> {
        write_lpm(&mut self.allow, &want.v4, names::ALLOW)?;
        write_lpm(&mut self.allow6, &want.v6, names::ALLOW6)
    }

    /// Makes the maps hold `old` again (after a change failed halfway), in the order `apply`
    /// keeps: servers, sets, frontends, then what `old` did not have.
    fn restore(&mut self, old: &KernelState) -> Result<(), MapsError> {
        for (id, s) in &old.servers {
            self.servers.set(*id, *s, 0).map_err(at(names::SERVERS))?;
        }
        for (id, s) in &old.servers6 {
            self.servers6.set(*id, *s, 0).map_err(at(names::SERVERS6))?;
        }
        for (id, set) in &old.backend_sets {
            self.backend_sets.insert(id, set, 0).map_err(at(names::BACKEND_SETS))?;
        }
        self.write_allow(&AllowEntries { v4: old.allow.clone(), v6: old.allow6.clone() })?;
        let old4: StdHashMap<FrontendKey, Frontend> = old.frontends.iter().copied().collect();
        let old6: StdHashMap<FrontendKey6, Frontend> = old.frontends6.iter().copied().collect();
        self.write_frontends(&old4, &old6)?;
        let keep: HashSet<u32> = old.backend_sets.iter().map(|(k, _)| *k).collect();
        let stale: Vec<u32> = self.backend_sets.keys().filter_map(Result::ok).filter(|k| !keep.contains(k)).collect();
        for k in stale {
            self.backend_sets.remove(&k).map_err(at(names::BACKEND_SETS))?;
        }
        clear_servers_but(&mut self.servers, &old.servers.iter().map(|(k, _)| *k).collect(), names::SERVERS)?;
        clear_servers_but(&mut self.servers6, &old.servers6.iter().map(|(k, _)| *k).collect(), names::SERVERS6)?;
        self.settings.set(0, old.settings, 0).map_err(at(names::SETTINGS))
    }

    /// Runs `change` on the maps all or nothing: if it fails, whatever it wrote is rolled back
    /// to what the maps held before, and its error is returned.
    pub fn transaction<T>(&mut self, change: impl FnOnce(&mut Self) -> Result<T, MapsError>) -> Result<T, MapsError> {
        let before = self.state()?;
        match change(self) {
            Ok(v) => Ok(v),
            Err(e) => {
                match self.restore(&before) {
                    Ok(()) => log::warn!("map update failed ({e}); the maps were rolled back to what they held"),
                    Err(r) => log::error!("map update failed ({e}) and rolling it back failed too ({r})"),
                }
                Err(e)
            }
        }
    }

    /// Takes the maps out of `ebpf`, so nothing else can write them.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        Ok(Self {
            frontends: take(ebpf, names::FRONTENDS)?,
            frontend_ports: take(ebpf, names::FRONTEND_PORTS)?,
            backend_sets: take(ebpf, names::BACKEND_SETS)?,
            servers: take(ebpf, names::SERVERS)?,
            settings: take(ebpf, names::SETTINGS)?,
            tx_ports: take(ebpf, names::TX_PORTS)?,
            suspicion_verdict: take(ebpf, names::SUSPICION_VERDICT)?,
            allow: take(ebpf, names::ALLOW)?,
            frontends6: take(ebpf, names::FRONTENDS6)?,
            servers6: take(ebpf, names::SERVERS6)?,
            allow6: take(ebpf, names::ALLOW6)?,
        })
    }

    /// A check of server `id` passed after the data path suspected it (at `since_ns`): it takes
    /// new flows again.
    pub fn clear_suspicion(&mut self, id: u32, since_ns: u64) -> Result<(), MapsError> {
        let v = SuspicionVerdict { cleared_ns: since_ns, held_until_ns: 0 };
        self.suspicion_verdict.set(id, v, 0).map_err(at(names::SUSPICION_VERDICT))
    }

    /// Server `id` stays suspected (no new flow) until `until_ns` at least: the agent's checks
    /// have not cleared it yet.
    pub fn hold_suspicion(&mut self, id: u32, until_ns: u64) -> Result<(), MapsError> {
        let mut v = self.suspicion_verdict.get(&id, 0).map_err(at(names::SUSPICION_VERDICT))?;
        v.held_until_ns = until_ns;
        self.suspicion_verdict.set(id, v, 0).map_err(at(names::SUSPICION_VERDICT))
    }

    pub fn write_settings(&mut self, g: &Global) -> Result<(), MapsError> {
        // The timestamp clock's secret is made once and kept in the pinned map: a restarted
        // agent must not move the clock the servers see on a tuple.
        let old = self.settings.get(&0, 0).map_err(at(names::SETTINGS))?;
        let ts_secret = if old.ts_secret == [0, 0] { random_secret() } else { old.ts_secret };
        let mut flags = 0;
        if g.reset_on_no_backend {
            flags |= SETTINGS_F_RST_NO_BACKEND;
        }
        if g.translate_timestamps {
            flags |= SETTINGS_F_TS_TRANSLATE;
        }
        let netns_cookie = if g.local_clients {
            super::sys::netns_cookie().unwrap_or_else(|e| {
                log::warn!(
                    "cannot read this network namespace's cookie ({e}; Linux 5.14+): local clients are not served"
                );
                0
            })
        } else {
            0
        };
        // Flow events feed the per-connection log and the flow sync with peer balancers.
        if g.tcplog || g.sync.is_some() {
            flags |= SETTINGS_F_FLOW_EVENTS;
        }
        let (own_first, own_count, own_no_ts) = g.own_nat_ports();
        let s = Settings {
            nat_port_first: own_first,
            nat_port_count: own_count,
            reply_port_first: u32::from(g.nat_ports.first),
            reply_port_count: g.nat_ports.count(),
            flags,
            no_ts_ports: own_no_ts,
            time_wait_ns: u64::try_from(g.server_time_wait.0.as_nanos()).unwrap_or(u64::MAX),
            ts_secret,
            netns_cookie,
            flow_events_per_s: g.flow_events_per_s(),
            _pad: 0,
        };
        self.settings.set(0, s, 0).map_err(at(names::SETTINGS))
    }

    /// The interfaces the program may redirect to: exactly the attached ones.
    pub fn write_tx_ports(&mut self, ifaces: &[Interface]) -> Result<(), MapsError> {
        let keep: HashSet<u32> = ifaces.iter().map(|i| i.ifindex).collect();
        let stale: Vec<u32> = self.tx_ports.keys().filter_map(Result::ok).filter(|k| !keep.contains(k)).collect();
        for k in stale {
            self.tx_ports.remove(k).map_err(at(names::TX_PORTS))?;
        }
        for i in ifaces {
            self.tx_ports
                .insert(i.ifindex, i.ifindex, None, 0)
                .map_err(|source| MapsError::Redirect { map: names::TX_PORTS, source })?;
        }
        Ok(())
    }

    /// Makes the kernel serve `topo`, with the servers `is_up` says are UP taking new flows.
    /// Order matters: servers before the sets that name them, sets before the frontends that
    /// use them, and removals last, so that no packet ever finds a dangling id.
    pub fn apply(&mut self, topo: &Topology, is_up: &dyn Fn(u32) -> bool) -> Result<(), MapsError> {
        let (mut live4, mut live6) = (HashSet::new(), HashSet::new());
        for (pool, s) in topo.servers() {
            match s.addr.ip() {
                IpAddr::V4(a) => {
                    let v = server_entry(s, pool.id, a.octets(), |a| match a {
                        IpAddr::V4(a) => Some(a.octets()),
                        IpAddr::V6(_) => None,
                    });
                    self.servers.set(s.id, v, 0).map_err(at(names::SERVERS))?;
                    live4.insert(s.id);
                }
                IpAddr::V6(a) => {
                    // An IPv6 server is in its pool's IPv6 set (see `POOL_V6`).
                    let v = server_entry(s, pool.id + POOL_V6, a.octets(), |a| match a {
                        IpAddr::V6(a) => Some(a.octets()),
                        IpAddr::V4(_) => None,
                    });
                    self.servers6.set(s.id, v, 0).map_err(at(names::SERVERS6))?;
                    live6.insert(s.id);
                }
            }
        }
        for pool in &topo.pools {
            self.set_pool(pool, is_up)?;
        }
        self.set_frontends(topo)?;
        let pools: HashSet<u32> = topo.pools.iter().flat_map(|p| [p.id, p.id + POOL_V6]).collect();
        let stale: Vec<u32> = self.backend_sets.keys().filter_map(Result::ok).filter(|k| !pools.contains(k)).collect();
        for k in stale {
            self.backend_sets.remove(&k).map_err(at(names::BACKEND_SETS))?;
        }
        // A server that changed family leaves an entry in the other family's array.
        clear_servers_but(&mut self.servers, &live4, names::SERVERS)?;
        clear_servers_but(&mut self.servers6, &live6, names::SERVERS6)
    }

    /// Makes the kernel's frontend maps hold exactly `topo`'s keys (new ones first, then the
    /// stale removed): what an address that came or went changes.
    pub fn set_frontends(&mut self, topo: &Topology) -> Result<(), MapsError> {
        // Allowlists before the frontends that use them. A frontend that loses its list keeps
        // its entries until its flag is off: its stale entries go after the frontends.
        let mut allow = AllowEntries::default();
        for f in &topo.frontends {
            let id = f.id.to_be();
            for net in &f.allow {
                match net.addr {
                    IpAddr::V4(a) => {
                        allow.v4.push((
                            AllowKey::prefix_len(net.prefix),
                            AllowKey { frontend_id_be: id, addr: a.octets() },
                        ));
                    }
                    IpAddr::V6(a) => {
                        allow.v6.push((32 + u32::from(net.prefix), AllowKey6 { frontend_id_be: id, addr: a.octets() }));
                    }
                }
            }
        }
        for (len, k) in &allow.v4 {
            self.allow.insert(&Key::new(*len, *k), 1, 0).map_err(at(names::ALLOW))?;
        }
        for (len, k) in &allow.v6 {
            self.allow6.insert(&Key::new(*len, *k), 1, 0).map_err(at(names::ALLOW6))?;
        }
        let value = |f: &FrontendEntry, pool_id: u32| Frontend {
            frontend_id: f.id,
            pool_id,
            flags: if f.allow.is_empty() { 0 } else { FRONTEND_F_ALLOWLIST },
        };
        let v4 = frontend_keys(topo).into_iter().map(|(k, f)| (k, value(f, f.pool_id))).collect();
        // IPv6 frontends take their pool's IPv6 set.
        let v6 = frontend_keys6(topo).into_iter().map(|(k, f)| (k, value(f, f.pool_id + POOL_V6))).collect();
        self.write_frontends(&v4, &v6)?;
        self.write_allow(&allow)
    }

    /// Makes both frontend maps hold exactly `v4` and `v6`, the ports' bitmap following: a
    /// port's bit is set before the first frontend on it appears and cleared after the last
    /// one went, so the bitmap never hides one.
    fn write_frontends(
        &mut self,
        v4: &StdHashMap<FrontendKey, Frontend>,
        v6: &StdHashMap<FrontendKey6, Frontend>,
    ) -> Result<(), MapsError> {
        let ports = |v4: &StdHashMap<FrontendKey, Frontend>, v6: &StdHashMap<FrontendKey6, Frontend>| -> Vec<u16> {
            v4.keys().map(|k| k.port_be).chain(v6.keys().map(|k| k.port_be)).collect()
        };
        let mut now: Vec<u16> = ports(v4, v6);
        now.extend(self.frontends.keys().filter_map(Result::ok).map(|k| k.port_be));
        now.extend(self.frontends6.keys().filter_map(Result::ok).map(|k| k.port_be));
        self.write_frontend_ports(now)?;
        sync_frontends(&mut self.frontends, v4, names::FRONTENDS)?;
        sync_frontends(&mut self.frontends6, v6, names::FRONTENDS6)?;
        self.write_frontend_ports(ports(v4, v6))
    }

    /// Makes the `frontend_ports` bitmap hold exactly `ports` (network order); only words that
    /// change are written.
    fn write_frontend_ports(&mut self, ports: impl IntoIterator<Item = u16>) -> Result<(), MapsError> {
        let mut want = [0u64; FRONTEND_PORT_WORDS as usize];
        for port_be in ports {
            let port = u16::from_be(port_be);
            // 65536 ports, 64 to a word: every port has its word.
            if let Some(word) = want.get_mut(usize::from(port / 64)) {
                *word |= 1 << (port % 64);
            }
        }
        for (i, word) in (0..FRONTEND_PORT_WORDS).zip(want) {
            if self.frontend_ports.get(&i, 0).map_err(at(names::FRONTEND_PORTS))? != word {
                self.frontend_ports.set(i, word, 0).map_err(at(names::FRONTEND_PORTS))?;
            }
        }
        Ok(())
    }

    /// The servers (address:port) the kernel lets take new flows now: what a previous agent left,
    /// read before anything is written, so that a restart does not start from scratch.
    pub fn members(&self) -> HashSet<SocketAddr> {
        let mut out = HashSet::new();
        for (pool, set) in self.backend_sets.iter().filter_map(Result::ok) {
            for &id in set.slots.iter().take(set.count as usize) {
                let member = if pool >= POOL_V6 { valid(&self.servers6, id) } else { valid(&self.servers, id) };
                out.extend(member);
            }
        }
        out
    }

    /// Replaces one pool's sets of servers taking new flows (one per family), each in one
    /// atomic map update.
    pub fn set_pool(&mut self, pool: &Pool, is_up: &dyn Fn(u32) -> bool) -> Result<(), MapsError> {
        for (key, v6) in [(pool.id, false), (pool.id + POOL_V6, true)] {
            let set = pool.backend_set_of(v6, is_up);
            self.backend_sets.insert(key, set, 0).map_err(at(names::BACKEND_SETS))?;
        }
        Ok(())
    }
}

/// Both families' allowlist entries: (prefix length, key).
#[derive(Default)]
struct AllowEntries {
    v4: Vec<(u32, AllowKey)>,
    v6: Vec<(u32, AllowKey6)>,
}

/// A server's kernel entry: its address, its pool's set (`pool_id`) and the sources of its
/// family (`of_family`) that its flows leave from (none for a server on this host, which takes
/// no NAT tuple: see lb-common's `Server::snat_count`).
fn server_entry<A: Addr>(
    s: &ServerEntry,
    pool_id: u32,
    addr: A,
    of_family: impl Fn(&IpAddr) -> Option<A>,
) -> ServerOf<A> {
    let mut snat_addrs = [A::default(); MAX_SOURCES];
    let mut snat_count = 0;
    let source: &[IpAddr] = if s.local { &[] } else { &s.source };
    for (slot, a) in snat_addrs.iter_mut().zip(source.iter().filter_map(of_family)) {
        *slot = a;
        snat_count += 1;
    }
    ServerOf {
        addr,
        port_be: s.addr.port().to_be(),
        _pad: 0,
        pool_id,
        flags: SERVER_F_VALID | if s.local { SERVER_F_LOCAL } else { 0 },
        snat_count,
        snat_addrs,
    }
}

/// Server `id`'s address, if its entry in `servers` is valid.
fn valid<A: Addr>(servers: &Array<MapData, ServerOf<A>>, id: u32) -> Option<SocketAddr> {
    let s = servers.get(&id, 0).ok().filter(|s| s.flags & SERVER_F_VALID != 0)?;
    Some(SocketAddr::new(s.addr.ip(), u16::from_be(s.port_be)))
}

/// Clears every valid entry of `servers` whose id is not in `keep`.
fn clear_servers_but<A: Addr>(
    servers: &mut Array<MapData, ServerOf<A>>,
    keep: &HashSet<u32>,
    name: &'static str,
) -> Result<(), MapsError> {
    for id in 1..lb_common::MAX_SERVERS {
        if !keep.contains(&id) && servers.get(&id, 0).map_err(at(name))?.flags & SERVER_F_VALID != 0 {
            servers.set(id, ServerOf::<A>::default(), 0).map_err(at(name))?;
        }
    }
    Ok(())
}

/// Every valid entry of `servers`, by id.
fn server_entries<A: Addr>(
    servers: &Array<MapData, ServerOf<A>>,
    name: &'static str,
) -> Result<Vec<(u32, ServerOf<A>)>, MapsError> {
    let mut out = Vec::new();
    for id in 0..lb_common::MAX_SERVERS {
        let s = servers.get(&id, 0).map_err(at(name))?;
        if s.flags & SERVER_F_VALID != 0 {
            out.push((id, s));
        }
    }
    Ok(out)
}

/// Every entry of a frontend map, sorted by address and port.
fn frontend_entries<A: Addr + Ord>(
    map: &HashMap<MapData, FrontendKeyOf<A>, Frontend>,
    name: &'static str,
) -> Result<Vec<(FrontendKeyOf<A>, Frontend)>, MapsError> {
    let mut out: Vec<(FrontendKeyOf<A>, Frontend)> = map.iter().collect::<Result<_, _>>().map_err(at(name))?;
    out.sort_by_key(|(k, _)| (k.addr, k.port_be));
    Ok(out)
}

/// Makes a frontend map hold exactly `want`: new and changed entries first, then the stale
/// ones removed.
fn sync_frontends<A: Addr>(
    map: &mut HashMap<MapData, FrontendKeyOf<A>, Frontend>,
    want: &StdHashMap<FrontendKeyOf<A>, Frontend>,
    name: &'static str,
) -> Result<(), MapsError> {
    for (k, v) in want {
        map.insert(k, v, 0).map_err(at(name))?;
    }
    let stale: Vec<FrontendKeyOf<A>> = map.keys().filter_map(Result::ok).filter(|k| !want.contains_key(k)).collect();
    for k in stale {
        map.remove(&k).map_err(at(name))?;
    }
    Ok(())
}

/// Every entry of an LPM trie: (prefix length, key), sorted.
fn lpm_entries<K: aya::Pod + Ord>(
    trie: &LpmTrie<MapData, K, u32>,
    name: &'static str,
) -> Result<Vec<(u32, K)>, MapsError> {
    let mut out: Vec<(u32, K)> =
        trie.keys().map(|k| k.map(|k| (k.prefix_len(), k.data()))).collect::<Result<_, _>>().map_err(at(name))?;
    out.sort_by(|(la, a), (lb, b)| (a, la).cmp(&(b, lb)));
    Ok(out)
}

/// Makes an LPM trie hold exactly `want`: new entries first, then the stale ones removed.
fn write_lpm<K: aya::Pod + Ord + Eq + Hash>(
    trie: &mut LpmTrie<MapData, K, u32>,
    want: &[(u32, K)],
    name: &'static str,
) -> Result<(), MapsError> {
    for (len, k) in want {
        trie.insert(&Key::new(*len, *k), 1, 0).map_err(at(name))?;
    }
    let keep: HashSet<(u32, K)> = want.iter().copied().collect();
    for (len, k) in lpm_entries(trie, name)? {
        if !keep.contains(&(len, k)) {
            trie.remove(&Key::new(len, k)).map_err(at(name))?;
        }
    }
    Ok(())
}

/// 64 random bits (the timestamp clock's secret): std's hasher keys come from the kernel's
/// random source, fresh for every `RandomState`.
fn random_secret() -> [u32; 2] {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    let high = u32::try_from(bits >> 32).unwrap_or_default();
    let low = u32::try_from(bits & u64::from(u32::MAX)).unwrap_or_default();
    // The low half is made odd so that a secret is never all zero ("unset").
    [high, low | 1]
}
