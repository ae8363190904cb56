//! The connection table, seen from the agent: listing flows, and sweeping out the ones that are
//! over (the XDP program records, the agent expires). Two entries make one flow; the sweep
//! always removes both.

use std::{
    collections::HashMap,
    fmt::Debug,
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use aya::{
    maps::{Array, HashMap as BpfHashMap, Map, MapData, MapError},
    Ebpf,
};
use lb_common::{
    names, Flow, FlowEvent, FlowKey, FlowKeyOf, FlowOf, SweepState, FLOW_DIR_CLIENT, FLOW_DIR_SERVER,
    FLOW_EVENT_EXPIRED, FLOW_SEEN_ESTABLISHED, FLOW_SEEN_PEER_FIN, TCP_FIN, V4, V6,
};
use serde::Serialize;

use super::{
    maps::{take, MapsError},
    sys::{lookup_and_delete, lookup_batch},
};

/// Entries one `BPF_MAP_LOOKUP_BATCH` reads.
const BATCH: u32 = 4096;

/// A sweep in progress (`FlowTable::sweep_step`): which table, where in it, what it saw.
#[derive(Debug, Default)]
struct Pass {
    /// 0: the established table, 1: the half-open one; 2 and 3: IPv6's.
    table: u8,
    cursor: Option<u32>,
    result: Sweep,
    /// Steps (`sweep_step`) the pass has taken so far.
    slices: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Duration,
    pub syn: Duration,
    pub linger: Duration,
    /// The servers' TIME_WAIT (see `Flow::port_hold_ns`): a flow whose NAT port must wait that
    /// long lingers that long, so that the data path still sees why the port is held.
    pub time_wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// SYN forwarded, handshake not complete.
    SynSent,
    Established,
    /// One side sent FIN.
    Closing,
    /// RST seen, or FIN both ways: lingering.
    Closed,
}

impl FlowState {
    pub fn of<A: Copy>(client: &FlowOf<A>) -> FlowState {
        if client.is_closed() {
            FlowState::Closed
        } else if client.seen & (TCP_FIN | FLOW_SEEN_PEER_FIN) != 0 {
            FlowState::Closing
        } else if client.seen & FLOW_SEEN_ESTABLISHED != 0 {
            FlowState::Established
        } else {
            FlowState::SynSent
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FlowState::SynSent => "SYN_SENT",
            FlowState::Established => "ESTABLISHED",
            FlowState::Closing => "CLOSING",
            FlowState::Closed => "CLOSED",
        }
    }
}

/// Whether a flow in `state`, created at `created` and last seen at `last` (ns), is over at
/// `now`. A closed flow lingers `linger`, or as long as its NAT port is held (`hold`).
pub fn expired(state: FlowState, created: u64, last: u64, now: u64, t: &Timeouts, hold: Option<Duration>) -> bool {
    let idle = Duration::from_nanos(now.saturating_sub(last));
    match state {
        FlowState::SynSent => Duration::from_nanos(now.saturating_sub(created)) > t.syn,
        FlowState::Established | FlowState::Closing => idle > t.idle,
        FlowState::Closed => idle > t.linger.max(hold.unwrap_or_default()),
    }
}

/// One flow, both directions joined.
#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    pub client: SocketAddr,
    pub frontend: SocketAddr,
    /// The balancer's NAT source towards the server.
    pub source: SocketAddr,
    pub server: SocketAddr,
    pub server_id: u32,
    pub frontend_id: u32,
    pub state: FlowState,
    pub age_ms: u64,
    pub idle_ms: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

/// An address as the connection table holds it (`V4`, `V6`): what the agent needs of either.
pub trait Addr: aya::Pod + Copy + Eq + Hash + Debug + Default + Send + Sync + 'static {
    fn ip(self) -> IpAddr;

    /// The per-connection log's record of a flow the sweep expired (`client_key`, its client
    /// side `client`, its server side `server`): IPv4 flows only, the log's records
    /// (`FlowEvent`) carrying IPv4 entries.
    fn expired_event(
        now: u64,
        client_key: FlowKeyOf<Self>,
        client: &FlowOf<Self>,
        server: &FlowOf<Self>,
    ) -> Option<FlowEvent>;
}

impl Addr for V4 {
    fn ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }

    fn expired_event(now: u64, client_key: FlowKey, client: &Flow, server: &Flow) -> Option<FlowEvent> {
        Some(FlowEvent {
            kind: FLOW_EVENT_EXPIRED,
            time_ns: now,
            client_key,
            server_key: client.peer_key(),
            client: *client,
            server: *server,
            ..FlowEvent::default()
        })
    }
}

impl Addr for V6 {
    fn ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }

    fn expired_event(_: u64, _: FlowKeyOf<V6>, _: &FlowOf<V6>, _: &FlowOf<V6>) -> Option<FlowEvent> {
        None
    }
}

fn sock<A: Addr>(addr: A, port_be: u16) -> SocketAddr {
    SocketAddr::new(addr.ip(), u16::from_be(port_be))
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default();
    u64::try_from(ts.as_nanos()).unwrap_or(u64::MAX)
}

/// One family's tables: established flows and half-open ones (see the XDP side's `conntrack`).
pub(super) struct Tables<A: Addr> {
    map: FlowMap<A>,
    syn: FlowMap<A>,
}

/// The connection table, both families (IPv6's may be missing from maps pinned by an agent
/// that predates it).
pub struct FlowTable {
    v4: Tables<V4>,
    v6: Option<Tables<V6>>,
    /// Non-zero while entries are being removed (see `lb_common::SweepState`).
    sweeping: Array<MapData, SweepState>,
    /// Open flows per server, for `balance leastconn`: the XDP program counts flows as they
    /// open and end; each sweep writes the true count back (flows that expire or are evicted
    /// end without a packet saying so).
    open_counts: Array<MapData, u32>,
    /// The sweep in progress, when it is done a slice at a time (`sweep_step`).
    pass: Option<Pass>,
    /// Batch reads failed once (a kernel without them): the sweep reads entry by entry.
    no_batch: bool,
    /// Sweeps report the flows they expire (`Sweep::expired`): the per-connection log is on.
    pub report_expired: bool,
}

/// What a sweep saw: flows in the table, flows removed, and per server and frontend the open
/// flows and the SYNs that were never answered (passive layer-4 observation).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    pub flows: usize,
    pub removed: usize,
    pub active_by_server: HashMap<u32, u64>,
    pub active_by_frontend: HashMap<u32, u64>,
    pub unanswered_by_server: HashMap<u32, u64>,
    /// Flows it removed that no packet had ended (`FLOW_EVENT_EXPIRED`), when asked for them
    /// (`FlowTable::report_expired`): the per-connection log's last word on them.
    pub expired: Vec<FlowEvent>,
}

pub(super) type FlowMap<A = V4> = BpfHashMap<MapData, FlowKeyOf<A>, FlowOf<A>>;

impl<A: Addr> Tables<A> {
    /// The entry at `key`, established or half-open.
    fn get(&self, key: &FlowKeyOf<A>) -> Option<FlowOf<A>> {
        self.map.get(key, 0).or_else(|_| self.syn.get(key, 0)).ok()
    }

    /// Every entry (both directions, established and half-open), as the kernel has them now.
    fn entries(&self) -> Vec<(FlowKeyOf<A>, FlowOf<A>)> {
        self.map.iter().chain(self.syn.iter()).filter_map(Result::ok).collect()
    }

    /// The other half of `flow`, if it still belongs to the same flow (both halves are made
    /// with one creation time; a newer flow may have taken either tuple since). Read from the
    /// half-open table first, unless `established_first`: a promotion inserts into the
    /// established table before it removes from the half-open one, so that order cannot miss a
    /// flow being promoted. The sweep, which knows the table `flow` came from, looks there
    /// first: one lookup instead of two for an established flow. That order could miss a peer
    /// promoted at that very instant; the sweep asks only for the peer of an entry that is over
    /// on its own, which a flow completing its handshake is not.
    fn peer(&self, flow: &FlowOf<A>, established_first: bool) -> Option<FlowOf<A>> {
        let key = flow.peer_key();
        let (first, second) = if established_first { (&self.map, &self.syn) } else { (&self.syn, &self.map) };
        first.get(&key, 0).ok().or_else(|| second.get(&key, 0).ok()).filter(|p| p.created_ns == flow.created_ns)
    }

    /// Removes `key`'s entry if it still belongs to the flow created at `created_ns`. The XDP
    /// program may replace an entry at any moment (a new SYN on the tuple of a flow that is
    /// over), and a check followed by a removal could remove the newer flow's entry that came in
    /// between: that is how a live connection once lost its flow and met a RST. So the removal
    /// itself tells what it removed (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`), and a newer flow's entry
    /// is put back at once; meanwhile `sweeping` is set, so a packet of that flow is dropped (and
    /// retransmitted), never answered with RST by the kernel (see `remove_all`). The check
    /// before it keeps that rare: entries that plainly belong to a newer flow are not touched.
    fn remove_if(map: &mut FlowMap<A>, key: &FlowKeyOf<A>, created_ns: u64) {
        if !map.get(key, 0).is_ok_and(|f| f.created_ns == created_ns) {
            return;
        }
        if let Ok(Some(taken)) = lookup_and_delete(map, key) {
            if taken.created_ns != created_ns {
                // BPF_NOEXIST: if the data path made yet another flow meanwhile, that one stays.
                let _ = map.insert(key, taken, 1);
            }
        }
    }

    /// Removes every `(key, created)` given from both tables.
    fn remove(&mut self, doomed: &[(FlowKeyOf<A>, u64)]) {
        for (k, created) in doomed {
            Self::remove_if(&mut self.syn, k, *created);
            Self::remove_if(&mut self.map, k, *created);
        }
    }

    /// Flows, each with both directions joined (an entry without its peer is skipped).
    fn flows(&self, now: u64) -> Vec<FlowView> {
        self.entries()
            .into_iter()
            .filter(|(_, f)| f.direction == FLOW_DIR_CLIENT)
            .filter_map(|(k, c)| {
                let s = self.peer(&c, false)?;
                let last = c.last_seen_ns.max(s.last_seen_ns);
                Some(FlowView {
                    client: sock(k.src_addr, k.src_port_be),
                    frontend: sock(k.dst_addr, k.dst_port_be),
                    source: sock(c.new_src_addr, c.new_src_port_be),
                    server: sock(c.new_dst_addr, c.new_dst_port_be),
                    server_id: c.server_id,
                    frontend_id: c.frontend_id,
                    state: FlowState::of(&c),
                    age_ms: now.saturating_sub(c.created_ns) / 1_000_000,
                    idle_ms: now.saturating_sub(last) / 1_000_000,
                    packets_in: c.packets,
                    bytes_in: c.bytes,
                    packets_out: s.packets,
                    bytes_out: s.bytes,
                })
            })
            .collect()
    }

    /// Up to `max` entries of the established (`syn` false) or half-open table from `cursor`,
    /// and where the next read starts (`None`: the table's end). `no_batch`: batch reads failed
    /// once (a kernel without them): the table is read whole (aya's iterator), in one step.
    fn read_batch(&self, syn: bool, cursor: Option<u32>, max: u32, no_batch: &mut bool) -> super::sys::Batch<A> {
        let map = if syn { &self.syn } else { &self.map };
        if !*no_batch {
            match lookup_batch(map, cursor, max) {
                Ok(batch) => return batch,
                Err(e) => {
                    log::warn!("conntrack: batch reads failed ({e}); reading entry by entry");
                    *no_batch = true;
                }
            }
        }
        (map.iter().filter_map(Result::ok).collect(), None)
    }

    /// The flows to `server_id`, both entries each (`remove_server_flows`), and how many were open.
    fn server_flows(&self, server_id: u32) -> (Vec<(FlowKeyOf<A>, u64)>, usize) {
        let mut n = 0;
        let mut doomed = Vec::new();
        for (key, flow) in self.entries() {
            if flow.server_id == server_id && flow.direction == FLOW_DIR_CLIENT {
                doomed.push((flow.peer_key(), flow.created_ns));
                doomed.push((key, flow.created_ns));
                n += usize::from(!flow.is_closed());
            }
        }
        (doomed, n)
    }
}

impl FlowTable {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        Ok(Self {
            v4: Tables { map: take(ebpf, names::FLOWS)?, syn: take(ebpf, names::SYN_FLOWS)? },
            v6: Some(Tables { map: take(ebpf, names::FLOWS6)?, syn: take(ebpf, names::SYN_FLOWS6)? }),
            sweeping: take(ebpf, names::SWEEP)?,
            open_counts: take(ebpf, names::SERVER_FLOWS)?,
            pass: None,
            no_batch: false,
            report_expired: false,
        })
    }

    /// Opens the table pinned by a running agent (for `xdplb flows` and tests).
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, MapError> {
        let open = |name: &str| -> Result<Map, MapError> { Map::from_map_data(MapData::from_pin(pin_dir.join(name))?) };
        let v6 = || -> Result<Tables<V6>, MapError> {
            Ok(Tables {
                map: BpfHashMap::try_from(open(names::FLOWS6)?)?,
                syn: BpfHashMap::try_from(open(names::SYN_FLOWS6)?)?,
            })
        };
        Ok(Self {
            v4: Tables {
                map: BpfHashMap::try_from(open(names::FLOWS)?)?,
                syn: BpfHashMap::try_from(open(names::SYN_FLOWS)?)?,
            },
            v6: v6().ok(),
            sweeping: Array::try_from(open(names::SWEEP)?)?,
            open_counts: Array::try_from(open(names::SERVER_FLOWS)?)?,
            pass: None,
            no_batch: false,
            report_expired: false,
        })
    }

    /// The IPv4 entry at `key`, established or half-open.
    pub fn get(&self, key: &FlowKey) -> Option<Flow> {
        self.v4.get(key)
    }

    /// The IPv6 entry at `key`, established or half-open.
    pub fn get6(&self, key: &FlowKeyOf<V6>) -> Option<FlowOf<V6>> {
        self.v6.as_ref()?.get(key)
    }

    /// Entries of both families (both directions, established and half-open), as the kernel
    /// has them now.
    pub fn entry_count(&self) -> usize {
        self.v4.entries().len() + self.v6.as_ref().map_or(0, |t| t.entries().len())
    }

    /// Every IPv4 entry (both directions, established and half-open), as the kernel has them.
    pub fn entries(&self) -> Vec<(FlowKey, Flow)> {
        self.v4.entries()
    }

    /// Removes every `(key, created)` given, with `sweeping` set around the removals.
    fn remove_all(&mut self, doomed: &Doomed) {
        if doomed.v4.is_empty() && doomed.v6.is_empty() {
            return;
        }
        let _ = self.sweeping.set(0, 1, 0);
        self.v4.remove(&doomed.v4);
        if let Some(v6) = &mut self.v6 {
            v6.remove(&doomed.v6);
        }
        let _ = self.sweeping.set(0, 0, 0);
    }

    /// Flows of both families, each with both directions joined (an entry without its peer is
    /// skipped).
    pub fn flows(&self) -> Vec<FlowView> {
        let now = monotonic_ns();
        let mut all = self.v4.flows(now);
        all.extend(self.v6.iter().flat_map(|t| t.flows(now)));
        all
    }

    /// Removes flows that are over; returns how many flows there were and how many went.
    ///
    /// A pair (client side with its server side) is judged by its client side, with the later
    /// of the two last-seen times and the server side's port hold. Both only lengthen a flow's
    /// life, so an entry that is not over on its own timeouts is kept without looking its peer
    /// up: a table of live flows costs the sweep its batch reads and no lookup per entry. An
    /// entry over on its own is paired with its peer (one lookup); one whose other half is gone
    /// (evicted, or taken by a newer flow that reused the tuple) goes, after its linger (a server
    /// side keeps holding its NAT port as long as `port_hold_ns` says). A live entry whose other
    /// half was evicted stays until it is over on its own.
    pub fn sweep(&mut self, now: u64, t: &Timeouts) -> Sweep {
        self.pass = None;
        loop {
            if let Some(done) = self.sweep_step(now, t, usize::MAX) {
                return done;
            }
        }
    }

    /// Goes on with the sweep in progress (or starts one) for at most `budget` entries, removing
    /// what they showed to be over; returns the whole sweep's result once it has read every
    /// table (IPv4's, then IPv6's). Entries are read in batches (`BPF_MAP_LOOKUP_BATCH`); each
    /// is judged, and each removal made, exactly as `sweep` describes.
    pub fn sweep_step(&mut self, now: u64, t: &Timeouts, budget: usize) -> Option<Sweep> {
        let mut pass = self.pass.take().unwrap_or_default();
        pass.slices += 1;
        let mut doomed = Doomed::default();
        let mut left = budget;
        let mut finished = false;
        let last_table = if self.v6.is_some() { 3 } else { 1 };
        let report = self.report_expired;
        while left > 0 {
            let max = u32::try_from(left).unwrap_or(u32::MAX).min(BATCH);
            let (syn, cursor) = (pass.table % 2 == 1, pass.cursor);
            let (read, next) = if let (Some(v6), 2 | 3) = (&self.v6, pass.table) {
                let (entries, next) = v6.read_batch(syn, cursor, max, &mut self.no_batch);
                for (key, flow) in &entries {
                    judge(v6, *key, flow, now, t, &mut pass, &mut doomed.v6, false);
                }
                (entries.len(), next)
            } else {
                let (entries, next) = self.v4.read_batch(syn, cursor, max, &mut self.no_batch);
                for (key, flow) in &entries {
                    judge(&self.v4, *key, flow, now, t, &mut pass, &mut doomed.v4, report);
                }
                (entries.len(), next)
            };
            left = left.saturating_sub(read.max(1));
            match next {
                Some(c) => pass.cursor = Some(c),
                None if pass.table < last_table => {
                    pass.table += 1;
                    pass.cursor = None;
                }
                None => {
                    finished = true;
                    break;
                }
            }
        }
        self.remove_all(&doomed);
        if finished {
            // A pass over several slices counted flows at different moments: its counts are
            // no truer than the data path's own, which are left as they are.
            if pass.slices == 1 {
                self.write_open_counts(&pass.result.active_by_server);
            }
            return Some(pass.result);
        }
        self.pass = Some(pass);
        None
    }

    /// Writes each server's open flows as the sweep counted them where the data path's own
    /// count drifted (see `open_counts`).
    fn write_open_counts(&mut self, open: &HashMap<u32, u64>) {
        // All of them in one read (an entry per server id, most of them unused).
        let counts = match super::sys::array_u32_all(&self.open_counts) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("cannot read the servers' open flows: {e}");
                return;
            }
        };
        for (id, &n) in (0u32..).zip(&counts).skip(1) {
            let truth = open.get(&id).map_or(0, |&n| u32::try_from(n).unwrap_or(u32::MAX));
            if n != truth {
                if let Err(e) = self.open_counts.set(id, truth, 0) {
                    log::warn!("cannot write server {id}'s open flows: {e}");
                }
            }
        }
    }
}

impl FlowTable {
    /// Removes every flow to `server_id` (HAProxy's `on-marked-down shutdown-sessions`). Their
    /// next packet, either way, reaches the kernel, which has no socket for it and answers RST,
    /// so both ends fail fast. Returns how many open (not already closed) flows went.
    pub fn remove_server_flows(&mut self, server_id: u32) -> usize {
        let (v4, n4) = self.v4.server_flows(server_id);
        let (v6, n6) = self.v6.as_ref().map(|t| t.server_flows(server_id)).unwrap_or_default();
        self.remove_all(&Doomed { v4, v6 });
        n4 + n6
    }
}

/// Entries a sweep step removes, per family: `(key, created)`.
#[derive(Default)]
struct Doomed {
    v4: Vec<(FlowKey, u64)>,
    v6: Vec<(FlowKeyOf<V6>, u64)>,
}

/// Judges one entry of a sweep of `tables`: counted, kept, or doomed. `report`: expired flows
/// go to the per-connection log (`Sweep::expired`; IPv4 records only).
#[expect(clippy::too_many_arguments, reason = "one entry's verdict needs all of it; a struct would only rename them")]
fn judge<A: Addr>(
    tables: &Tables<A>,
    key: FlowKeyOf<A>,
    flow: &FlowOf<A>,
    now: u64,
    t: &Timeouts,
    pass: &mut Pass,
    doomed: &mut Vec<(FlowKeyOf<A>, u64)>,
    report: bool,
) {
    let time_wait = u64::try_from(t.time_wait.as_nanos()).unwrap_or(u64::MAX);
    let hold = |server_side: &FlowOf<A>| server_side.port_hold_ns(time_wait).map(Duration::from_nanos);
    let result = &mut pass.result;
    let state = FlowState::of(flow);
    let own_hold = if flow.direction == FLOW_DIR_SERVER { hold(flow) } else { None };
    if !expired(state, flow.created_ns, flow.last_seen_ns, now, t, own_hold) {
        if flow.direction == FLOW_DIR_CLIENT {
            result.flows += 1;
            if state != FlowState::Closed {
                *result.active_by_server.entry(flow.server_id).or_default() += 1;
                *result.active_by_frontend.entry(flow.frontend_id).or_default() += 1;
            }
        }
        return;
    }
    let Some(peer) = tables.peer(flow, pass.table.is_multiple_of(2)) else {
        result.flows += usize::from(flow.direction == FLOW_DIR_CLIENT);
        doomed.push((key, flow.created_ns));
        result.removed += usize::from(flow.direction == FLOW_DIR_CLIENT);
        return;
    };
    if flow.direction == FLOW_DIR_SERVER {
        return;
    }
    result.flows += 1;
    let last = flow.last_seen_ns.max(peer.last_seen_ns);
    if expired(state, flow.created_ns, last, now, t, hold(&peer)) {
        // Both entries of a flow are made with the same creation time.
        doomed.push((flow.peer_key(), flow.created_ns));
        doomed.push((key, flow.created_ns));
        result.removed += 1;
        if report && state != FlowState::Closed {
            if let Some(event) = A::expired_event(now, key, flow, &peer) {
                result.expired.push(event);
            }
        }
        // A handshake that timed out: the server never answered the SYN.
        if state == FlowState::SynSent && peer.packets == 0 {
            *result.unanswered_by_server.entry(flow.server_id).or_default() += 1;
        }
    } else if state != FlowState::Closed {
        *result.active_by_server.entry(flow.server_id).or_default() += 1;
        *result.active_by_frontend.entry(flow.frontend_id).or_default() += 1;
    }
}

/// One flow as peers share it: both entries, as the kernel holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowPair {
    pub client_key: FlowKey,
    pub client: Flow,
    pub server_key: FlowKey,
    pub server: Flow,
}

impl FlowPair {
    /// The flow made anew on this host: one creation time for both halves (how the sweep pairs
    /// them), this host's clock, and no way back to the client recorded yet (the data path asks
    /// the FIB at its first reply, or takes the way the client's first packet here came in: the
    /// peer's MACs and interface mean nothing here).
    fn here(&self, now: u64) -> (Flow, Flow) {
        let (mut c, mut s) = (self.client, self.server);
        for f in [&mut c, &mut s] {
            f.created_ns = now;
            f.last_seen_ns = now;
        }
        for f in [&mut c, &mut s] {
            f.next_hop_dst_mac = [0; 6];
            f.next_hop_src_mac = [0; 6];
            f.next_hop_ifindex = 0;
        }
        (c, s)
    }

    /// Whether `local` (this host's entry under one of the pair's keys) is the same flow: the
    /// same rewrite, so not a newer flow that took the tuple since.
    fn same(&self, local: &Flow) -> bool {
        let f = if local.direction == FLOW_DIR_CLIENT { &self.client } else { &self.server };
        local.new_src_addr == f.new_src_addr
            && local.new_dst_addr == f.new_dst_addr
            && local.new_src_port_be == f.new_src_port_be
            && local.new_dst_port_be == f.new_dst_port_be
    }
}

/// What installing a peer's flows did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    pub new: usize,
    /// Already known here: only kept from expiring (this host's own state of it is newer).
    pub refreshed: usize,
    pub failed: usize,
}

impl FlowTable {
    /// Every established flow that is not over, both halves (what a peer needs to take over).
    pub fn established_pairs(&self) -> Vec<FlowPair> {
        let entries: HashMap<FlowKey, Flow> = self.v4.map.iter().filter_map(Result::ok).collect();
        entries
            .iter()
            .filter(|(_, c)| c.direction == FLOW_DIR_CLIENT && c.seen & FLOW_SEEN_ESTABLISHED != 0 && !c.is_closed())
            .filter_map(|(k, c)| {
                let server_key = c.peer_key();
                let s = entries.get(&server_key).filter(|s| s.created_ns == c.created_ns)?;
                Some(FlowPair { client_key: *k, client: *c, server_key, server: *s })
            })
            .collect()
    }

    /// Installs flows a peer balancer handles, so that this host's data path knows them when a
    /// floating address moves here. A flow already known is only kept from expiring: this
    /// host's state of it (after a failover, the live one) is never overwritten.
    pub fn install(&mut self, pairs: &[FlowPair], now: u64) -> Installed {
        let mut out = Installed::default();
        for p in pairs {
            match self.v4.map.get(&p.client_key, 0) {
                Ok(local) if p.same(&local) => {
                    for key in [p.client_key, p.server_key] {
                        if let Ok(mut f) = self.v4.map.get(&key, 0) {
                            f.last_seen_ns = f.last_seen_ns.max(now);
                            let _ = self.v4.map.insert(key, f, 2); // BPF_EXIST
                        }
                    }
                    out.refreshed += 1;
                    continue;
                }
                _ => {}
            }
            let (c, s) = p.here(now);
            // The reply half first: a packet that finds the client half can always go back.
            let ok = self.v4.map.insert(p.server_key, s, 0).is_ok() && self.v4.map.insert(p.client_key, c, 0).is_ok();
            if ok {
                out.new += 1;
            } else {
                let _ = self.v4.map.remove(&p.server_key);
                out.failed += 1;
            }
        }
        out
    }

    /// Removes flows a peer saw end, where this host holds the same flow (not a newer one on
    /// the tuple). Returns how many went.
    pub fn remove_pairs(&mut self, pairs: &[FlowPair]) -> usize {
        let mut doomed = Vec::new();
        for p in pairs {
            if let Ok(local) = self.v4.map.get(&p.client_key, 0) {
                if p.same(&local) {
                    doomed.push((p.client_key, local.created_ns));
                    doomed.push((p.server_key, local.created_ns));
                }
            }
        }
        let n = doomed.len() / 2;
        self.remove_all(&Doomed { v4: doomed, v6: Vec::new() });
        n
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{FLOW_SEEN_PEER_RST, TCP_RST};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn t() -> Timeouts {
        Timeouts {
            idle: Duration::from_secs(100),
            syn: Duration::from_secs(5),
            linger: Duration::from_secs(2),
            time_wait: Duration::from_mins(1),
        }
    }

    fn flow(seen: u32) -> Flow {
        Flow { seen, ..Flow::default() }
    }

    #[test]
    fn states_follow_the_flags_both_ways() {
        assert_eq!(FlowState::of(&flow(0x02)), FlowState::SynSent);
        assert_eq!(FlowState::of(&flow(0x12 | FLOW_SEEN_ESTABLISHED)), FlowState::Established);
        assert_eq!(FlowState::of(&flow(0x11 | FLOW_SEEN_ESTABLISHED)), FlowState::Closing);
        assert_eq!(FlowState::of(&flow(FLOW_SEEN_PEER_FIN | FLOW_SEEN_ESTABLISHED)), FlowState::Closing);
        assert_eq!(FlowState::of(&flow(TCP_FIN | FLOW_SEEN_PEER_FIN)), FlowState::Closed);
        assert_eq!(FlowState::of(&flow(TCP_RST)), FlowState::Closed);
        assert_eq!(FlowState::of(&flow(FLOW_SEEN_PEER_RST)), FlowState::Closed);
    }

    #[test]
    fn each_state_has_its_timeout() {
        let t = t();
        // Half-open: by age since creation, even if packets keep coming (SYN retransmits).
        assert!(!expired(FlowState::SynSent, 0, 4 * S, 4 * S, &t, None));
        assert!(expired(FlowState::SynSent, 0, 6 * S, 6 * S, &t, None));
        // Established: by idle time.
        assert!(!expired(FlowState::Established, 0, 50 * S, 149 * S, &t, None));
        assert!(expired(FlowState::Established, 0, 50 * S, 151 * S, &t, None));
        // Closed: a short linger...
        assert!(!expired(FlowState::Closed, 0, 10 * S, 11 * S, &t, None));
        assert!(expired(FlowState::Closed, 0, 10 * S, 13 * S, &t, None));
        // ...or as long as the NAT port is held.
        assert!(!expired(FlowState::Closed, 0, 10 * S, 13 * S, &t, Some(Duration::from_mins(1))));
        assert!(expired(FlowState::Closed, 0, 10 * S, 71 * S, &t, Some(Duration::from_mins(1))));
    }
}
