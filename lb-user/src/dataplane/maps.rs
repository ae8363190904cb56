//! The one writer of the maps the configuration and the health of servers decide: frontends
//! (and their ports' bitmap), backend sets, servers, settings and redirect ports. The rest of the agent asks this owner.
//! (The connection table is `conntrack`'s; counters are read-only, in `stats`.)

use std::collections::HashSet;

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, DevMapHash, HashMap, MapData, MapError,
    },
    Ebpf,
};
use lb_common::{
    names, AllowKey, BackendSet, Frontend, FrontendKey, Server, Settings, SuspicionVerdict, FRONTEND_F_ALLOWLIST,
    FRONTEND_PORT_WORDS, MAX_SOURCES, SERVER_F_LOCAL, SERVER_F_VALID, SETTINGS_F_FLOW_EVENTS,
    SETTINGS_F_RST_NO_BACKEND, SETTINGS_F_TS_TRANSLATE,
};

use crate::{
    config::Global,
    host::netif::Interface,
    model::{frontend_keys, Pool, Topology},
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
        })
    }

    /// Reads back everything the owner wrote.
    pub fn state(&self) -> Result<KernelState, MapsError> {
        let mut frontends: Vec<(FrontendKey, Frontend)> =
            self.frontends.iter().collect::<Result<_, _>>().map_err(at(names::FRONTENDS))?;
        frontends.sort_by_key(|(k, _)| (k.addr, k.port_be));
        let mut backend_sets: Vec<(u32, BackendSet)> =
            self.backend_sets.iter().collect::<Result<_, _>>().map_err(at(names::BACKEND_SETS))?;
        backend_sets.sort_by_key(|(k, _)| *k);
        let mut servers = Vec::new();
        for id in 0..lb_common::MAX_SERVERS {
            let s = self.servers.get(&id, 0).map_err(at(names::SERVERS))?;
            if s.flags & SERVER_F_VALID != 0 {
                servers.push((id, s));
            }
        }
        let settings = self.settings.get(&0, 0).map_err(at(names::SETTINGS))?;
        let allow = self.allow_entries()?;
        let mut frontend_ports = Vec::new();
        for (i, first) in (0..FRONTEND_PORT_WORDS).zip((0..=u16::MAX).step_by(64)) {
            let word = self.frontend_ports.get(&i, 0).map_err(at(names::FRONTEND_PORTS))?;
            frontend_ports.extend((0..64u16).filter(|b| word & (1 << b) != 0).map(|b| first + b));
        }
        Ok(KernelState { frontends, frontend_ports, backend_sets, servers, settings, allow })
    }

    fn allow_entries(&self) -> Result<Vec<(u32, AllowKey)>, MapsError> {
        let mut out: Vec<(u32, AllowKey)> = self
            .allow
            .keys()
            .map(|k| k.map(|k| (k.prefix_len(), k.data())))
            .collect::<Result<_, _>>()
            .map_err(at(names::ALLOW))?;
        out.sort_by_key(|(len, k)| (k.frontend_id_be, k.addr, *len));
        Ok(out)
    }

    /// Makes `allow` hold exactly `want`: new entries first, then the stale ones removed (a
    /// frontend's flag is set only once its entries are in, see `apply`).
    fn write_allow(&mut self, want: &[(u32, AllowKey)]) -> Result<(), MapsError> {
        for (len, k) in want {
            self.allow.insert(&Key::new(*len, *k), 1, 0).map_err(at(names::ALLOW))?;
        }
        let keep: HashSet<(u32, AllowKey)> = want.iter().copied().collect();
        for (len, k) in self.allow_entries()? {
            if !keep.contains(&(len, k)) {
                self.allow.remove(&Key::new(len, k)).map_err(at(names::ALLOW))?;
            }
        }
        Ok(())
    }

    /// Makes the maps hold `old` again (after a change failed halfway), in the order `apply`
    /// keeps: servers, sets, frontends, then what `old` did not have.
    fn restore(&mut self, old: &KernelState) -> Result<(), MapsError> {
        for (id, s) in &old.servers {
            self.servers.set(*id, *s, 0).map_err(at(names::SERVERS))?;
        }
        for (id, set) in &old.backend_sets {
            self.backend_sets.insert(id, set, 0).map_err(at(names::BACKEND_SETS))?;
        }
        self.write_allow(&old.allow)?;
        let old_keys = || old.frontends.iter().map(|(k, _)| *k);
        let current: Vec<FrontendKey> = self.kernel_frontend_keys().collect();
        self.write_frontend_ports(old_keys().chain(current))?;
        for (k, v) in &old.frontends {
            self.frontends.insert(k, v, 0).map_err(at(names::FRONTENDS))?;
        }
        let keep: HashSet<FrontendKey> = old_keys().collect();
        let stale: Vec<FrontendKey> = self.kernel_frontend_keys().filter(|k| !keep.contains(k)).collect();
        for k in stale {
            self.frontends.remove(&k).map_err(at(names::FRONTENDS))?;
        }
        self.write_frontend_ports(old_keys())?;
        let keep: HashSet<u32> = old.backend_sets.iter().map(|(k, _)| *k).collect();
        let stale: Vec<u32> = self.backend_sets.keys().filter_map(Result::ok).filter(|k| !keep.contains(k)).collect();
        for k in stale {
            self.backend_sets.remove(&k).map_err(at(names::BACKEND_SETS))?;
        }
        let keep: HashSet<u32> = old.servers.iter().map(|(k, _)| *k).collect();
        for id in 1..lb_common::MAX_SERVERS {
            if !keep.contains(&id) && self.servers.get(&id, 0).is_ok_and(|s| s.flags & SERVER_F_VALID != 0) {
                self.servers.set(id, Server::default(), 0).map_err(at(names::SERVERS))?;
            }
        }
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
        let mut live_servers = HashSet::new();
        for (pool, s) in topo.servers() {
            let std::net::SocketAddr::V4(addr) = s.addr else {
                // IPv6: written by the dataplane owner (maps6)
                continue;
            };
            let mut snat_addrs = [[0; 4]; MAX_SOURCES];
            let mut snat_count = 0;
            // A server on this host takes no NAT tuple (see lb-common's `Server::snat_count`).
            let source: &[std::net::IpAddr] = if s.local { &[] } else { &s.source };
            let source4 = source.iter().filter_map(|a| match a {
                std::net::IpAddr::V4(a) => Some(a),
                // IPv6: written by the dataplane owner (maps6)
                std::net::IpAddr::V6(_) => None,
            });
            for (slot, a) in snat_addrs.iter_mut().zip(source4) {
                *slot = a.octets();
                snat_count += 1;
            }
            let v = Server {
                addr: addr.ip().octets(),
                port_be: s.addr.port().to_be(),
                _pad: 0,
                pool_id: pool.id,
                flags: SERVER_F_VALID | if s.local { SERVER_F_LOCAL } else { 0 },
                snat_count,
                snat_addrs,
            };
            self.servers.set(s.id, v, 0).map_err(at(names::SERVERS))?;
            live_servers.insert(s.id);
        }
        for pool in &topo.pools {
            self.set_pool(pool, is_up)?;
        }
        self.set_frontends(topo)?;
        let pools: HashSet<u32> = topo.pools.iter().map(|p| p.id).collect();
        let stale: Vec<u32> = self.backend_sets.keys().filter_map(Result::ok).filter(|k| !pools.contains(k)).collect();
        for k in stale {
            self.backend_sets.remove(&k).map_err(at(names::BACKEND_SETS))?;
        }
        for id in 1..lb_common::MAX_SERVERS {
            if live_servers.contains(&id) {
                continue;
            }
            let old = self.servers.get(&id, 0).map_err(at(names::SERVERS))?;
            if old.flags & SERVER_F_VALID != 0 {
                self.servers.set(id, Server::default(), 0).map_err(at(names::SERVERS))?;
            }
        }
        Ok(())
    }

    /// Makes the kernel's frontend map hold exactly `topo`'s keys (new ones first, then the
    /// stale removed): what an address that came or went changes.
    pub fn set_frontends(&mut self, topo: &Topology) -> Result<(), MapsError> {
        // Allowlists before the frontends that use them. A frontend that loses its list keeps
        // its entries until its flag is off: its stale entries go after the frontends.
        let mut allow: Vec<(u32, AllowKey)> = Vec::new();
        for f in &topo.frontends {
            for net in &f.allow {
                let std::net::IpAddr::V4(net_addr) = net.addr else {
                    // IPv6: written by the dataplane owner (maps6)
                    continue;
                };
                let key = AllowKey { frontend_id_be: f.id.to_be(), addr: net_addr.octets() };
                allow.push((AllowKey::prefix_len(net.prefix), key));
            }
        }
        for (len, k) in &allow {
            self.allow.insert(&Key::new(*len, *k), 1, 0).map_err(at(names::ALLOW))?;
        }
        let keys = frontend_keys(topo);
        // A frontend's port bit is set before the frontend appears, and cleared after the last
        // frontend on that port went: the bitmap never hides one.
        let current: Vec<FrontendKey> = self.kernel_frontend_keys().collect();
        self.write_frontend_ports(keys.keys().copied().chain(current))?;
        for (k, f) in &keys {
            let flags = if f.allow.is_empty() { 0 } else { FRONTEND_F_ALLOWLIST };
            let v = Frontend { frontend_id: f.id, pool_id: f.pool_id, flags };
            self.frontends.insert(k, v, 0).map_err(at(names::FRONTENDS))?;
        }
        self.write_allow(&allow)?;
        let stale: Vec<FrontendKey> = self.kernel_frontend_keys().filter(|k| !keys.contains_key(k)).collect();
        for k in stale {
            self.frontends.remove(&k).map_err(at(names::FRONTENDS))?;
        }
        self.write_frontend_ports(keys.keys().copied())
    }

    /// The keys in the kernel's frontend map now.
    fn kernel_frontend_keys(&self) -> impl Iterator<Item = FrontendKey> + '_ {
        self.frontends.keys().filter_map(Result::ok)
    }

    /// Makes the `frontend_ports` bitmap hold exactly the ports of `keys`; only words that
    /// change are written.
    fn write_frontend_ports(&mut self, keys: impl IntoIterator<Item = FrontendKey>) -> Result<(), MapsError> {
        let mut want = [0u64; FRONTEND_PORT_WORDS as usize];
        for k in keys {
            let port = u16::from_be(k.port_be);
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
    pub fn members(&self) -> std::collections::HashSet<std::net::SocketAddr> {
        let mut out = std::collections::HashSet::new();
        for set in self.backend_sets.iter().filter_map(Result::ok).map(|(_, v)| v) {
            for &id in set.slots.iter().take(set.count as usize) {
                if let Ok(s) = self.servers.get(&id, 0) {
                    if s.flags & SERVER_F_VALID != 0 {
                        // IPv6: written by the dataplane owner (maps6)
                        out.insert(std::net::SocketAddrV4::new(s.addr.into(), u16::from_be(s.port_be)).into());
                    }
                }
            }
        }
        out
    }

    /// Replaces one pool's set of servers taking new flows, in one atomic map update.
    pub fn set_pool(&mut self, pool: &Pool, is_up: &dyn Fn(u32) -> bool) -> Result<(), MapsError> {
        // The IPv4 set; IPv6: written by the dataplane owner (maps6), `backend_set_of(true, ..)`
        // at `pool.id + POOL_V6`.
        let set = pool.backend_set_of(false, is_up);
        self.backend_sets.insert(pool.id, set, 0).map_err(at(names::BACKEND_SETS))
    }
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
