//! The program's maps. Keys and values are `lb_common`'s; the agent owns every write except the
//! connection table's entries and the counters, which this program keeps.

use aya_ebpf::{
    btf_maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    macros::btf_map,
};
use lb_common::{
    AllowKey, AllowKey6, BackendSet, Flow, Flow6, FlowKey, FlowKey6, Frontend, FrontendKey, FrontendKey6, LocalPeer,
    NextHop, NextHop6, OptionsFound, PortCursor, RstBucket, Server, Server6, Settings, Suspicion, SuspicionVerdict,
    SweepState, TrafficStats, DEFAULT_FLOW_ENTRIES, DEFAULT_SYN_FLOW_ENTRIES, EVENT_COUNT, FLOW_EVENTS_RING_BYTES,
    FRONTEND_PORT_WORDS, LOCAL_PEER_SOCKETS, MAX_ALLOW, MAX_FRONTENDS, MAX_POOLS, MAX_SERVERS, MAX_TX_PORTS,
    REASON_COUNT, RST_LIMIT_SOURCES,
};

/// Per frontend with an `allow` list: the source networks it admits (see `allow`).
#[btf_map(name = "allow")]
pub static ALLOW: LpmTrie<AllowKey, u32, { MAX_ALLOW as usize }> = LpmTrie::new();

#[btf_map(name = "frontends")]
pub static FRONTENDS: HashMap<FrontendKey, Frontend, { MAX_FRONTENDS as usize }> = HashMap::new();

/// The ports some frontend listens on, one bit each (see `frontend_port`).
#[btf_map(name = "frontend_ports")]
pub static FRONTEND_PORTS: Array<u64, { FRONTEND_PORT_WORDS as usize }> = Array::new();

/// Healthy set per pool and family (IPv6 at `pool_id + POOL_V6`); replaced whole by the agent
/// (hash map updates swap atomically).
#[btf_map(name = "backend_sets")]
pub static BACKEND_SETS: HashMap<u32, BackendSet, { 2 * MAX_POOLS as usize }> = HashMap::new();

#[btf_map(name = "servers")]
pub static SERVERS: Array<Server, { MAX_SERVERS as usize }> = Array::new();

/// Round-robin position per pool and family (as `backend_sets`), advanced atomically by every CPU.
#[btf_map(name = "rr_cursors")]
pub static RR_CURSORS: Array<u32, { 2 * MAX_POOLS as usize }> = Array::new();

/// The connection table of established flows: two entries per flow. Sized by the agent.
#[btf_map(name = "flows")]
pub static FLOWS: LruHashMap<FlowKey, Flow, { DEFAULT_FLOW_ENTRIES as usize }> = LruHashMap::new();

/// Flows whose handshake has not completed, apart from the established ones (see
/// `DEFAULT_SYN_FLOW_ENTRIES`); promoted to `flows` by the client's first ACK.
#[btf_map(name = "syn_flows")]
pub static SYN_FLOWS: LruHashMap<FlowKey, Flow, { DEFAULT_SYN_FLOW_ENTRIES as usize }> = LruHashMap::new();

/// `bpf_fib_lookup`'s parameters (see `forward`): per CPU, filled for every lookup.
#[btf_map(name = "fib_params")]
pub static FIB_PARAMS: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup, 1> = PerCpuArray::new();

/// What the TCP option walk found (see `options`): per CPU, overwritten by every walk.
#[btf_map(name = "options_found")]
pub static OPTIONS_FOUND: PerCpuArray<OptionsFound, 1> = PerCpuArray::new();

/// Room to build a new flow's two entries in: a `Flow` is too big to have two of on the 512-byte
/// BPF stack beside everything else.
#[btf_map(name = "scratch")]
pub static SCRATCH: PerCpuArray<Flow, 2> = PerCpuArray::new();

/// Per server: refused or unanswered SYNs in a row, and suspicion (`suspicion`).
#[btf_map(name = "suspicion")]
pub static SUSPICION: Array<Suspicion, { MAX_SERVERS as usize }> = Array::new();

/// Per server: its open flows (opened, not yet over), for `balance leastconn`. Counted here as
/// flows open and end; the agent's sweep writes the true count back each pass (flows that
/// expire or are evicted end without a packet saying so).
#[btf_map(name = "server_flows")]
pub static SERVER_FLOWS: Array<u32, { MAX_SERVERS as usize }> = Array::new();

/// Per server: what the agent said of its suspicion (written by the agent).
#[btf_map(name = "suspicion_verdict")]
pub static SUSPICION_VERDICT: Array<SuspicionVerdict, { MAX_SERVERS as usize }> = Array::new();

/// Per server: where its packets go (`forward`).
#[btf_map(name = "next_hops")]
pub static NEXT_HOPS: Array<NextHop, { MAX_SERVERS as usize }> = Array::new();

/// Per CPU and server: the block of NAT tuples this CPU hands out, and how far it got (`ports`).
/// Index: server id * 2 + region (0: SYNs with timestamps, 1: without; see `Settings::no_ts_ports`).
#[btf_map(name = "port_cursors")]
pub static PORT_CURSORS: PerCpuArray<PortCursor, { 2 * MAX_SERVERS as usize }> = PerCpuArray::new();

/// Per server and region: the next block of NAT tuples a CPU takes, counted up atomically.
#[btf_map(name = "port_blocks")]
pub static PORT_BLOCKS: Array<u32, { 2 * MAX_SERVERS as usize }> = Array::new();

#[btf_map(name = "settings")]
pub static SETTINGS: Array<Settings, 1> = Array::new();

/// Written by the agent's sweep (see `lb_common::SweepState`).
#[btf_map(name = "sweep")]
pub static SWEEP: Array<SweepState, 1> = Array::new();

/// Interfaces the program may redirect to (key and value: ifindex).
#[btf_map(name = "tx_ports")]
pub static TX_PORTS: DevMapHash<{ MAX_TX_PORTS as usize }> = DevMapHash::new();

/// Per source address: the RSTs it may still be answered with (see `reset`).
#[btf_map(name = "rst_limit")]
pub static RST_LIMIT: LruHashMap<[u8; 4], RstBucket, { RST_LIMIT_SOURCES as usize }> = LruHashMap::new();

/// Per local socket (cookie): the frontend it dialled, for `getpeername()` (see `sock`).
#[btf_map(name = "local_peers")]
pub static LOCAL_PEERS: LruHashMap<u64, LocalPeer, { LOCAL_PEER_SOCKETS as usize }> = LruHashMap::new();

/// Flow events for the agent (`FlowEvent`s), when it asked for them. Declared with a value of
/// no size: a ring buffer has none, and libbpf (bpftool) refuses one whose BTF value type has a
/// size; records are reserved as `FlowEvent`s (`flow_events`).
#[btf_map(name = "flow_events")]
pub static FLOW_EVENTS: RingBuf<[u8; 0], { FLOW_EVENTS_RING_BYTES as usize }> = RingBuf::new();

/// Per CPU: the second flow events are being counted in (its start) and how many were sent.
#[btf_map(name = "flow_event_window")]
pub static FLOW_EVENT_WINDOW: PerCpuArray<[u64; 2], 1> = PerCpuArray::new();

#[btf_map(name = "reason_stats")]
pub static REASON_STATS: PerCpuArray<u64, { REASON_COUNT as usize }> = PerCpuArray::new();

#[btf_map(name = "frontend_stats")]
pub static FRONTEND_STATS: PerCpuArray<TrafficStats, { MAX_FRONTENDS as usize }> = PerCpuArray::new();

#[btf_map(name = "server_stats")]
pub static SERVER_STATS: PerCpuArray<TrafficStats, { MAX_SERVERS as usize }> = PerCpuArray::new();

#[btf_map(name = "event_stats")]
pub static EVENT_STATS: PerCpuArray<u64, { EVENT_COUNT as usize }> = PerCpuArray::new();

// The IPv6 twins of the maps that hold addresses (see `family`).

#[btf_map(name = "frontends6")]
pub static FRONTENDS6: HashMap<FrontendKey6, Frontend, { MAX_FRONTENDS as usize }> = HashMap::new();

#[btf_map(name = "servers6")]
pub static SERVERS6: Array<Server6, { MAX_SERVERS as usize }> = Array::new();

#[btf_map(name = "flows6")]
pub static FLOWS6: LruHashMap<FlowKey6, Flow6, { DEFAULT_FLOW_ENTRIES as usize }> = LruHashMap::new();

#[btf_map(name = "syn_flows6")]
pub static SYN_FLOWS6: LruHashMap<FlowKey6, Flow6, { DEFAULT_SYN_FLOW_ENTRIES as usize }> = LruHashMap::new();

#[btf_map(name = "next_hops6")]
pub static NEXT_HOPS6: Array<NextHop6, { MAX_SERVERS as usize }> = Array::new();

#[btf_map(name = "scratch6")]
pub static SCRATCH6: PerCpuArray<Flow6, 2> = PerCpuArray::new();

/// Per local IPv6 socket (cookie): what it dialled, for `getpeername()` (see `sock`).
#[btf_map(name = "local_peers6")]
pub static LOCAL_PEERS6: LruHashMap<u64, lb_common::LocalPeer6, { LOCAL_PEER_SOCKETS as usize }> = LruHashMap::new();

#[btf_map(name = "rst_limit6")]
pub static RST_LIMIT6: LruHashMap<[u8; 16], RstBucket, { RST_LIMIT_SOURCES as usize }> = LruHashMap::new();

#[btf_map(name = "allow6")]
pub static ALLOW6: LpmTrie<AllowKey6, u32, { MAX_ALLOW as usize }> = LpmTrie::new();

/// The IPv6 programs (`lb_common::FAMILY_PROGRAMS`), tail-called: a program of its own gets a
/// stack of its own (the BPF stack limit counts frames along a call chain).
#[btf_map(name = "family_progs")]
pub static FAMILY_PROGS: ProgramArray<{ lb_common::FAMILY_PROGRAMS.len() }> = ProgramArray::new();

/// Per CPU: the new IPv6 flow's server and tuple, from `xdplb6_open` to `xdplb6_record`.
#[btf_map(name = "syn_plan6")]
pub static SYN_PLAN6: PerCpuArray<lb_common::SynPlan6, 1> = PerCpuArray::new();

#[inline(always)]
pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get(0)
}

/// The agent is removing flows right now.
#[inline(always)]
pub fn sweeping() -> bool {
    SWEEP.get(0).is_some_and(|s| *s != 0)
}

#[inline(always)]
pub fn frontend<A: crate::family::Family>(addr: A, port_be: u16) -> Option<&'static Frontend> {
    // Most of a host's traffic (etcd peers, kubelet, ssh) is to ports no frontend has: an array
    // read tells, before the hash lookup does.
    if !frontend_port(port_be) {
        return None;
    }
    frontend_on_port(addr, port_be)
}

/// `frontend` where `frontend_port` already said some frontend has the port (`try_lb` asks it
/// first, for every packet): the hash lookup alone.
#[inline(always)]
pub fn frontend_on_port<A: crate::family::Family>(addr: A, port_be: u16) -> Option<&'static Frontend> {
    A::frontend(&lb_common::FrontendKeyOf { addr, port_be, _pad: 0 })
}

/// Whether some frontend listens on `port_be` (network order), from the `frontend_ports`
/// bitmap the agent keeps.
#[inline(always)]
pub fn frontend_port(port_be: u16) -> bool {
    let port = u16::from_be(port_be) as u32;
    FRONTEND_PORTS.get(port >> 6).is_some_and(|w| w & (1u64 << (port & 63)) != 0)
}
