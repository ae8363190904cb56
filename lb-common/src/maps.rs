//! Map keys, values, names and limits.
//!
//! Map names are the pin names under the pin directory (`/sys/fs/bpf/xdplb/<name>`): they are
//! the interface between the kernel program, the agent and an operator's `bpftool`.

use core::mem::size_of;

/// Pin and map names, one constant each so that no side spells them twice.
pub mod names {
    pub const FRONTENDS: &str = "frontends";
    pub const BACKEND_SETS: &str = "backend_sets";
    pub const SERVERS: &str = "servers";
    pub const RR_CURSORS: &str = "rr_cursors";
    pub const FLOWS: &str = "flows";
    pub const SYN_FLOWS: &str = "syn_flows";
    pub const SETTINGS: &str = "settings";
    pub const TX_PORTS: &str = "tx_ports";
    pub const REASON_STATS: &str = "reason_stats";
    pub const FRONTEND_STATS: &str = "frontend_stats";
    pub const SERVER_STATS: &str = "server_stats";
    pub const EVENT_STATS: &str = "event_stats";
    pub const SWEEP: &str = "sweep";
    pub const PORT_CURSORS: &str = "port_cursors";
    pub const PORT_BLOCKS: &str = "port_blocks";
    pub const NEXT_HOPS: &str = "next_hops";
    pub const SUSPICION: &str = "suspicion";
    pub const SUSPICION_VERDICT: &str = "suspicion_verdict";
    pub const SERVER_FLOWS: &str = "server_flows";
    pub const RST_LIMIT: &str = "rst_limit";
    pub const ALLOW: &str = "allow";
    pub const LOCAL_PEERS: &str = "local_peers";
    /// Bitmap of the ports some frontend listens on (`FRONTEND_PORT_WORDS` words).
    pub const FRONTEND_PORTS: &str = "frontend_ports";
    /// The IPv6 twins of the maps that hold addresses (same keys and values, `V6` addresses).
    pub const FRONTENDS6: &str = "frontends6";
    pub const SERVERS6: &str = "servers6";
    pub const FLOWS6: &str = "flows6";
    pub const SYN_FLOWS6: &str = "syn_flows6";
    pub const NEXT_HOPS6: &str = "next_hops6";
    pub const RST_LIMIT6: &str = "rst_limit6";
    pub const ALLOW6: &str = "allow6";
    pub const LOCAL_PEERS6: &str = "local_peers6";
    /// The program array the XDP program tail-calls IPv6 frames into (slot `PROG_IPV6`): each
    /// family's path gets the whole BPF stack.
    pub const FAMILY_PROGS: &str = "family_progs";
    /// The ring buffer of flow events (`FlowEvent`). Not pinned: each program has its own,
    /// read by the agent that loaded it.
    pub const FLOW_EVENTS: &str = "flow_events";
    /// Every map the agent pins, in a stable order.
    pub const ALL: [&str; 32] = [
        FRONTENDS,
        BACKEND_SETS,
        SERVERS,
        RR_CURSORS,
        FLOWS,
        SYN_FLOWS,
        SETTINGS,
        TX_PORTS,
        REASON_STATS,
        FRONTEND_STATS,
        SERVER_STATS,
        EVENT_STATS,
        SWEEP,
        PORT_CURSORS,
        PORT_BLOCKS,
        NEXT_HOPS,
        SUSPICION,
        SUSPICION_VERDICT,
        SERVER_FLOWS,
        RST_LIMIT,
        ALLOW,
        LOCAL_PEERS,
        FRONTEND_PORTS,
        FRONTENDS6,
        SERVERS6,
        FLOWS6,
        SYN_FLOWS6,
        NEXT_HOPS6,
        RST_LIMIT6,
        ALLOW6,
        LOCAL_PEERS6,
        FAMILY_PROGS,
    ];
}

/// An IPv4 address as it is in a packet (network order).
pub type V4 = [u8; 4];
/// An IPv6 address as it is in a packet (network order).
pub type V6 = [u8; 16];

/// Slots of `family_progs`: the IPv6 program (`xdplb6`), tail-called by `xdplb` for IPv6
/// frames, and its stages, each a program of its own (IPv6's keys and addresses leave no room
/// for a stage's frames on the BPF stack beside the classifier's): `xdplb6` tail-calls the
/// stage a packet needs, `xdplb6_open` hands a new flow to `xdplb6_record`.
pub const PROG_IPV6: u32 = 0;
pub const PROG_IPV6_TO_SERVER: u32 = 1;
pub const PROG_IPV6_REPLY: u32 = 2;
pub const PROG_IPV6_OPEN: u32 = 3;
pub const PROG_IPV6_RECORD: u32 = 4;
/// ICMPv6 errors, which may be about a flow (`xdplb6_icmp`).
pub const PROG_IPV6_ICMP: u32 = 5;
/// Programs in `family_progs`, by slot (the agent loads and puts each there).
pub const FAMILY_PROGRAMS: [(&str, u32); 6] = [
    ("xdplb6", PROG_IPV6),
    ("xdplb6_to_server", PROG_IPV6_TO_SERVER),
    ("xdplb6_reply", PROG_IPV6_REPLY),
    ("xdplb6_open", PROG_IPV6_OPEN),
    ("xdplb6_record", PROG_IPV6_RECORD),
    ("xdplb6_icmp", PROG_IPV6_ICMP),
];

/// What `xdplb6_open` leaves `xdplb6_record` (per CPU, `syn_plan6`): the server a new IPv6 flow
/// goes to and its backend-side tuple.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynPlan6 {
    pub server_id: u32,
    /// 1: a finished flow's entry still holds the tuple (`record` removes it); 2: it is in the
    /// half-open table.
    pub previous: u32,
    pub reply_key: FlowKey6,
}
/// Pools have one healthy set per family: a pool's IPv6 set is at `pool_id + POOL_V6`
/// (`backend_sets` and `rr_cursors`), and its IPv6 frontends point there.
pub const POOL_V6: u32 = MAX_POOLS;

/// Frontends (address:port pairs) the program serves.
pub const MAX_FRONTENDS: u32 = 256;
/// Words of the `frontend_ports` bitmap: one bit per TCP port (bit `port % 64` of word
/// `port / 64`). A packet to a port without its bit is not ours, known without a hash lookup.
pub const FRONTEND_PORT_WORDS: u32 = 65536 / 64;
/// Backend pools; a pool's id indexes `backend_sets` and `rr_cursors`.
pub const MAX_POOLS: u32 = 64;
/// Servers over all pools; id 0 means "no server", so ids run 1..MAX_SERVERS.
pub const MAX_SERVERS: u32 = 1024;
/// Round-robin slots in one pool's healthy set (weights expand into slots).
pub const MAX_SLOTS: usize = 256;
const _: () = assert!(MAX_SLOTS.is_power_of_two());
/// Interfaces the program can redirect to.
pub const MAX_TX_PORTS: u32 = 64;
/// Default connection table size (entries; every flow takes two).
pub const DEFAULT_FLOW_ENTRIES: u32 = 131_072;
/// Flows the IPv6 connection tables hold when the configuration the agent started with has no
/// IPv6 server (they are preallocated: sized like IPv4's, they would lock as much memory again
/// for nothing). A reload that adds IPv6 servers needs a restart to size them.
pub const IPV6_IDLE_FLOWS: u32 = 256;
/// Default size of the half-open table (entries): flows whose handshake has not completed live
/// apart, so that a SYN flood evicts only other half-open flows, never an established one.
pub const DEFAULT_SYN_FLOW_ENTRIES: u32 = 32_768;
/// How long a server's cached FIB answer is trusted (a changed route or neighbour MAC is picked
/// up within this time; the neighbour entry itself is kept fresh by the kernel).
pub const NEXT_HOP_REFRESH_NS: u64 = 1_000_000_000;
/// A NAT port whose flow is over may be taken by a new flow once the old one has been quiet this
/// long (late segments in flight have gone), unless the server may still hold the tuple in
/// TIME_WAIT and refuse the next SYN: see `Settings::time_wait_ns`.
pub const NAT_PORT_HOLD_NS: u64 = 2_000_000_000;
/// Candidate NAT ports looked at before a SYN is refused (`no_nat_port`).
pub const NAT_PORT_TRIES: u32 = 8;
/// NAT tuples a CPU takes at once (one atomic operation per block; see lb-ebpf's `ports`).
pub const PORT_BLOCK: u32 = 16;
/// Source addresses a server's flows may leave from (the tuple space multiplies with them).
pub const MAX_SOURCES: usize = 8;
/// RSTs answered to one source address's SYNs that no server can take: a burst of this many,
/// then `RST_PER_SEC` a second; beyond, its SYNs are dropped (`Reason::RstLimited`), so that
/// spoofed SYNs cannot turn the balancer into a RST cannon.
pub const RST_BURST: u32 = 20;
pub const RST_PER_SEC: u64 = 10;
/// Sources whose RST allowance is remembered (an LRU map: the quietest are forgotten first).
pub const RST_LIMIT_SOURCES: u32 = 16384;
/// Local sockets whose dialled frontend is remembered for `getpeername()` (an LRU map keyed by
/// socket cookie: the oldest connections are forgotten first).
pub const LOCAL_PEER_SOCKETS: u32 = 65536;

/// Source networks a frontend's `allow` may list, and all frontends' together (the size of the
/// `allow` LPM trie).
pub const MAX_ALLOW_PER_FRONTEND: u32 = 256;
pub const MAX_ALLOW: u32 = 4096;

/// Key data of `allow`, an LPM trie: the frontend, then a source network. The prefix length of
/// an entry is 32 (the whole frontend id) plus the network's prefix; a lookup uses 64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllowKey {
    /// Big-endian, so that the trie's bit order matches the whole id first.
    pub frontend_id_be: u32,
    pub addr: [u8; 4],
}

impl AllowKey {
    /// Prefix length of an entry for a network of `prefix` bits.
    pub const fn prefix_len(prefix: u8) -> u32 {
        32 + prefix as u32
    }
}

/// Key of `frontends` (`FrontendKey`, IPv4) and `frontends6` (`FrontendKey6`): the destination
/// a client connects to. Generic over the address (`V4`, `V6`) so that each family's maps have
/// one definition and the data path one code.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrontendKeyOf<A> {
    pub addr: A,
    /// TCP port, network byte order.
    pub port_be: u16,
    pub _pad: u16,
}

pub type FrontendKey = FrontendKeyOf<V4>;
pub type FrontendKey6 = FrontendKeyOf<V6>;

/// Value of `frontends` and `frontends6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frontend {
    /// Index into `frontend_stats`.
    pub frontend_id: u32,
    /// Key of `backend_sets` and index of `rr_cursors`.
    pub pool_id: u32,
    /// `FRONTEND_F_*` bits.
    pub flags: u32,
}

/// The frontend has an allowlist in `allow`: a SYN from a source it does not list is dropped
/// (`Reason::NotAllowed`). Without it, no lookup: frontends without `allow` pay nothing.
pub const FRONTEND_F_ALLOWLIST: u32 = 1;

/// Value of `backend_sets` (key: pool id, `u32`): the servers that may take new flows, as
/// round-robin slots. The agent replaces the whole value in one update, which the kernel's hash
/// map swaps in atomically, so a reader never sees half of an old set and half of a new one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSet {
    /// Number of valid entries in `slots`; 0 means no server may take a new flow.
    pub count: u32,
    /// How often a new flow may be moved to another server when its server refuses the SYN
    /// (RST) or leaves it unanswered (HAProxy's `retries` with `option redispatch`); 0: never.
    pub retries: u8,
    /// Consecutive refused or unanswered SYNs after which the data path stops giving a server
    /// new flows until the agent's check clears it (0: never).
    pub suspect_after: u8,
    /// `BALANCE_*`: how a new flow's server is chosen among `slots`.
    pub balance: u8,
    pub _pad: u8,
    /// Server ids (indexes of `servers`). Round robin: repeated by weight and interleaved.
    /// Source: every configured server's slots, a DOWN server's replaced by healthy ones, so a
    /// client's hash keeps its server while that server is UP. Leastconn: each server once.
    pub slots: [u32; MAX_SLOTS],
    /// Leastconn: the weight of `slots[i]` (a server with twice the weight takes twice the flows).
    pub weights: [u16; MAX_SLOTS],
}

/// HAProxy's `balance roundrobin`: the next slot for each new flow.
pub const BALANCE_ROUNDROBIN: u8 = 0;
/// `balance leastconn`: the server with the fewest open flows for its weight (`server_flows`).
pub const BALANCE_LEASTCONN: u8 = 1;
/// `balance source`: the slot of a hash of the client's address.
pub const BALANCE_SOURCE: u8 = 2;

impl Default for BackendSet {
    fn default() -> Self {
        Self {
            count: 0,
            retries: 0,
            suspect_after: 0,
            balance: BALANCE_ROUNDROBIN,
            _pad: 0,
            slots: [0; MAX_SLOTS],
            weights: [0; MAX_SLOTS],
        }
    }
}

/// Value of `servers` (IPv4) and `servers6` (IPv6), arrays indexed by server id: a server is of
/// one family, valid (`SERVER_F_VALID`) in that family's array only; its flows are of that
/// family on both sides (no translation between IPv4 and IPv6).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerOf<A> {
    pub addr: A,
    /// TCP port, network byte order.
    pub port_be: u16,
    pub _pad: u16,
    /// Pool the server belongs to: the key of its family's healthy set in `backend_sets` (an
    /// IPv6 server's is its pool's id + `POOL_V6`).
    pub pool_id: u32,
    /// `SERVER_F_*` bits.
    pub flags: u32,
    /// How many of `snat_addrs` are valid (at least 1 for a valid server, but 0 for a server on
    /// this host, `SERVER_F_LOCAL`: it has no NAT tuples, so no flow is ever moved to it).
    pub snat_count: u32,
    /// The balancer's own addresses that flows to this server leave from (full NAT source);
    /// each gives the server a tuple space of its own.
    pub snat_addrs: [A; MAX_SOURCES],
}

pub type Server = ServerOf<V4>;
pub type Server6 = ServerOf<V6>;

/// The entry is in use.
pub const SERVER_F_VALID: u32 = 1;
/// The server's address is one of the balancer host's own (a co-located etcd or apiserver):
/// its flows are translated on the destination only (`FLOW_LOCAL`).
pub const SERVER_F_LOCAL: u32 = 2;

/// Key of `flows`, the connection table (`flows6` for IPv6): a TCP 4-tuple as it appears in a
/// received packet. Each flow has two entries: client->frontend and server->balancer (its reply
/// direction).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyOf<A> {
    pub src_addr: A,
    pub dst_addr: A,
    pub src_port_be: u16,
    pub dst_port_be: u16,
}

pub type FlowKey = FlowKeyOf<V4>;
pub type FlowKey6 = FlowKeyOf<V6>;

/// Value of `flows` (`flows6`): how to rewrite a packet with this key, and what has been seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowOf<A> {
    /// Rewritten source and destination (this direction).
    pub new_src_addr: A,
    pub new_dst_addr: A,
    pub new_src_port_be: u16,
    pub new_dst_port_be: u16,
    /// `FLOW_DIR_*`: which side sends the packets this entry matches.
    pub direction: u32,
    pub server_id: u32,
    pub frontend_id: u32,
    /// Server side (replies): where they go, the client's MAC (or its router's), our MAC and the
    /// interface the SYN came in on. Client side: the same, as the client's packets last came
    /// in; when one comes in from another MAC or interface (its router changed), both sides
    /// take the new way (`Event::ReplyHopMoved`). Packets to a server follow that server's
    /// `NextHop`.
    pub next_hop_dst_mac: [u8; 6],
    pub next_hop_src_mac: [u8; 6],
    pub next_hop_ifindex: u32,
    /// TCP flags seen in this direction (`FLOW_SEEN_*`), and the peer's closing flags.
    pub seen: u32,
    /// TCP tracking of the side that sends this direction's packets, host order: its initial
    /// sequence number (its SYN's), the end of the furthest segment it sent (SYN and FIN count
    /// one), and the largest window it advertised (scaled). RST and FIN count only inside the
    /// window; the handshake completes only with the ACK of the server's SYN-ACK.
    pub isn: u32,
    pub seq_end: u32,
    pub max_win: u32,
    /// The window scale this side announced in its SYN (0 without the option).
    pub wscale: u32,
    /// Timestamp translation (RFC 7323 option): the client side adds it to every TSval it sends,
    /// the server side subtracts it from every TSecr it sends, so the server sees one clock per
    /// backend-side tuple that only goes forward (see `timestamps` in lb-ebpf).
    pub ts_off: u32,
    /// Client side: the last TSval sent to the server (translated). Server side: the TSval of
    /// the SYN the server got. Together they bound what the server last saw on the tuple.
    pub ts_last: u32,
    /// Client side: the MSS its SYN announced (0: none), kept with `isn`, `wscale`, `max_win`
    /// and the `FLOW_SYN_*` bits so the SYN can be sent again to another server (redispatch).
    pub syn_mss: u16,
    /// Client side: how often the flow was moved to another server before its handshake.
    pub redispatches: u8,
    pub _pad: u8,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

pub type Flow = FlowOf<V4>;
pub type Flow6 = FlowOf<V6>;

pub const FLOW_DIR_CLIENT: u32 = 0;
pub const FLOW_DIR_SERVER: u32 = 1;

/// `Flow::seen` bits: the low byte is the OR of the TCP flag bytes seen in this direction.
pub const TCP_FIN: u32 = 0x01;
pub const TCP_SYN: u32 = 0x02;
pub const TCP_RST: u32 = 0x04;
pub const TCP_ACK: u32 = 0x10;
/// An ACK without SYN went through in the client direction: the handshake completed.
pub const FLOW_SEEN_ESTABLISHED: u32 = 0x100;
/// This side's SYN (or SYN-ACK) carried the timestamp option. On the server side it means the
/// flow negotiated timestamps: a server only answers with the option when the SYN had it.
pub const FLOW_SEEN_TS: u32 = 0x200;
/// Client side: the flow is over (a RST accepted, or FIN both ways) and no longer counts in its
/// server's `server_flows`; set once, atomically, by whichever packet ends it.
pub const FLOW_OVER: u32 = 0x800;
/// This side sent the flow's first FIN (it closed first: a server that did holds the tuple in
/// TIME_WAIT afterwards).
pub const FLOW_SEEN_CLOSED_FIRST: u32 = 0x400;
/// Client side: what the client's SYN carried besides MSS (see `Flow::syn_mss`).
pub const FLOW_SYN_SACK: u32 = 0x1_0000;
pub const FLOW_SYN_WSCALE: u32 = 0x2_0000;
pub const FLOW_SYN_TS: u32 = 0x4_0000;
/// Both sides: a flow to a server on the balancer host itself. Only the destination is
/// translated (the server sees the client's own address): the kernel delivers the client's
/// packets to the server, and the server's replies leave through the stack, where lb-ebpf's
/// `egress` program gives them the frontend's address back. No NAT port, no timestamp
/// translation, no redispatch.
pub const FLOW_LOCAL: u32 = 0x8_0000;
/// The other direction sent FIN / RST (copied there so that each entry tells the whole state).
pub const FLOW_SEEN_PEER_FIN: u32 = 0x1000;
pub const FLOW_SEEN_PEER_RST: u32 = 0x4000;

impl<A: Copy> FlowOf<A> {
    /// Key of the other direction's entry: the rewritten tuple, seen from the other side.
    #[inline(always)]
    pub fn peer_key(&self) -> FlowKeyOf<A> {
        FlowKeyOf {
            src_addr: self.new_dst_addr,
            dst_addr: self.new_src_addr,
            src_port_be: self.new_dst_port_be,
            dst_port_be: self.new_src_port_be,
        }
    }

    /// RST either way, or FIN both ways: the flow is over and only lingers.
    #[inline(always)]
    pub fn is_closed(&self) -> bool {
        let rst = self.seen & (TCP_RST | FLOW_SEEN_PEER_RST) != 0;
        let fin_both = self.seen & TCP_FIN != 0 && self.seen & FLOW_SEEN_PEER_FIN != 0;
        rst || fin_both
    }

    /// How long after its last packet the NAT port of this flow (read on its server-side entry)
    /// must stay unused, or `None` while the flow is not over. The server keeps the tuple in
    /// TIME_WAIT when it closed first, and refuses a new SYN on it unless the SYN's timestamp is
    /// newer than the last one it saw (or its sequence number is beyond the old one): with
    /// timestamps translated the next SYN's is, without timestamps only TIME_WAIT's end helps.
    #[inline(always)]
    pub fn port_hold_ns(&self, time_wait_ns: u64) -> Option<u64> {
        if !self.is_closed() {
            return None;
        }
        let server_time_wait = self.direction == FLOW_DIR_SERVER
            && self.seen & (TCP_RST | FLOW_SEEN_PEER_RST) == 0
            && self.seen & FLOW_SEEN_CLOSED_FIRST != 0
            && self.seen & FLOW_SEEN_TS == 0;
        Some(if server_time_wait && time_wait_ns > NAT_PORT_HOLD_NS { time_wait_ns } else { NAT_PORT_HOLD_NS })
    }
}

/// Value of `next_hops` (an array indexed by server id): where packets to the server go, the
/// kernel FIB's answer (`bpf_fib_lookup`), kept by the data path for every flow to the server
/// and asked again once `checked_ns` is older than `NEXT_HOP_REFRESH_NS`, or when the server's
/// address is not the one it was asked for (a reload changed it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHopOf<A> {
    pub checked_ns: u64,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Egress interface; 0 = not known yet.
    pub ifindex: u32,
    /// The server address this answer is for.
    pub addr: A,
}

pub type NextHop = NextHopOf<V4>;
pub type NextHop6 = NextHopOf<V6>;

/// Value of `suspicion` (an array indexed by server id), written by the data path: a server that
/// refused (RST) or left unanswered `BackendSet::suspect_after` SYNs in a row gets no new flow
/// until the agent's check clears it (`suspicion_verdict`); without a word from the agent, for
/// at most `SUSPECT_HOLD_NS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Suspicion {
    /// Refused or unanswered SYNs in a row; a SYN-ACK from the server resets it.
    pub fails: u32,
    /// How often the server became suspected (the agent checks it at once when this moves).
    pub count: u32,
    /// When it last became suspected (monotonic ns; 0: never).
    pub since_ns: u64,
}

/// How long a suspicion holds without the agent's word (an agent that is not running cannot
/// confirm it; the server then gets new flows again, and may be suspected again).
pub const SUSPECT_HOLD_NS: u64 = 10_000_000_000;

/// Value of `suspicion_verdict` (an array indexed by server id), written by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SuspicionVerdict {
    /// The `Suspicion::since_ns` a passing check answered: that suspicion is over.
    pub cleared_ns: u64,
    /// The agent keeps an open suspicion until this (monotonic ns), renewing it while its checks
    /// have not cleared the server (which then goes DOWN by HAProxy's rules, or is cleared).
    pub held_until_ns: u64,
}

/// Scratch space of the data path's TCP option walk (per CPU, never read by the agent): the
/// TSval's frame offset (0: none), window scale + 1 (0: none), MSS (0: none), SACK permitted
/// and malformed (1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionsFound {
    pub ts_at: u32,
    pub wscale: u32,
    pub mss: u32,
    pub sack: u32,
    pub malformed: u32,
}

/// Value of `settings` (an array with one entry), written by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// First NAT source port (host byte order) and how many follow it.
    pub nat_port_first: u32,
    pub nat_port_count: u32,
    /// `SETTINGS_F_*` bits.
    pub flags: u32,
    /// The last this-many NAT ports are for SYNs without (translated) timestamps, the others for
    /// SYNs with them: a server that closed first keeps a tuple in TIME_WAIT, and a SYN without
    /// timestamps on it is taken only if its sequence number happens to be beyond the old one,
    /// so such SYNs must not meet tuples others used within TIME_WAIT, which only their own
    /// region's holds guarantee. 0: one region for all.
    pub no_ts_ports: u32,
    /// How long a server holds a tuple in TIME_WAIT (Linux: 60 s): a NAT port whose server
    /// closed first without timestamps waits this long before its next SYN.
    pub time_wait_ns: u64,
    /// Secret of the per-tuple timestamp clock (random, made once and kept in the pinned map):
    /// servers see `clock + hash(tuple, secret)`, never the balancer's uptime.
    pub ts_secret: [u32; 2],
    /// The agent's network namespace (`SO_NETNS_COOKIE`): the connect hook, attached to a
    /// cgroup whose processes may live in any namespace, acts only on sockets of this one.
    /// 0: local clients are not served.
    pub netns_cookie: u64,
    /// Where replies come back: every NAT port of the balancers that share flows (this one
    /// allocates only from `nat_port_first`.., its share; a peer's flows taken over after a
    /// failover come back on the peer's share). Without peers, the same as this one's.
    pub reply_port_first: u32,
    pub reply_port_count: u32,
    /// Flow events (`SETTINGS_F_FLOW_EVENTS`) each CPU may send per second; beyond, they are
    /// dropped and counted (`Event::FlowEventDropped`).
    pub flow_events_per_s: u32,
    pub _pad: u32,
}

/// Value of `port_cursors` (per CPU, per server): the next NAT tuple (index into the server's
/// tuple space) this CPU hands out, and how many are left in its block (0: take a new block).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCursor {
    pub next: u32,
    pub left: u32,
}

/// Value of `rst_limit` (an LRU hash keyed by the SYN's source address, `[u8; 4]`): the RSTs
/// that source may still be answered with, and when the allowance was last topped up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RstBucket {
    pub refilled_ns: u64,
    pub tokens: u32,
    pub _pad: u32,
}

impl RstBucket {
    /// Nanoseconds that earn one more RST.
    pub const NS_PER_TOKEN: u64 = 1_000_000_000 / RST_PER_SEC;

    /// Takes one RST from the allowance at `now` (refilled at `RST_PER_SEC`, at most
    /// `RST_BURST`); false when there is none left.
    #[inline(always)]
    pub fn take(&mut self, now: u64) -> bool {
        let earned = now.saturating_sub(self.refilled_ns) / Self::NS_PER_TOKEN;
        if earned > 0 {
            let tokens = (self.tokens as u64).saturating_add(earned);
            self.tokens = if tokens > RST_BURST as u64 { RST_BURST } else { tokens as u32 };
            self.refilled_ns = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Answer a SYN that no server can take with a TCP RST (otherwise drop it).
pub const SETTINGS_F_RST_NO_BACKEND: u32 = 1;
/// Translate TCP timestamps per flow (see `Flow::ts_off`); off, they pass untouched.
pub const SETTINGS_F_TS_TRANSLATE: u32 = 2;
/// Send flow events (`FlowEvent`) to the `flow_events` ring buffer; off, the data path pays
/// one flag test per flow opened or closed.
pub const SETTINGS_F_FLOW_EVENTS: u32 = 4;

/// `FlowEvent::kind`: the handshake completed (the client acknowledged the server's SYN-ACK).
pub const FLOW_EVENT_ESTABLISHED: u32 = 1;
/// A packet ended the flow: a RST either way, or the second FIN.
pub const FLOW_EVENT_CLOSED: u32 = 2;
/// The agent's sweep removed a flow no packet ended (idle, or its handshake never completed):
/// made by the agent, never sent by the data path.
pub const FLOW_EVENT_EXPIRED: u32 = 3;
/// Bytes of the `flow_events` ring buffer (a power of two, whole pages): about a thousand
/// events between two reads of the agent.
pub const FLOW_EVENTS_RING_BYTES: u32 = 256 * 1024;

/// One record of the `flow_events` ring buffer: a flow's two entries as the connection table
/// has them at the event, with their keys, so that a reader can log the flow (per-connection
/// log) or install it as is in another balancer's table (flow state sync).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// `FLOW_EVENT_*`.
    pub kind: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns` at the event (`CLOCK_MONOTONIC`).
    pub time_ns: u64,
    /// The client side's key (client -> frontend) and the server side's (server -> NAT source).
    pub client_key: FlowKey,
    pub server_key: FlowKey,
    pub client: Flow,
    pub server: Flow,
}

/// Value of `sweep` (an array with one entry), written by the connection table's owner: non-zero
/// while it removes flows. A packet that then finds no flow may belong to one the sweep is putting
/// back (it removes, then re-inserts what a new flow had just taken): it is dropped, so the
/// sender retransmits, rather than handed to the kernel, which would answer RST.
pub type SweepState = u32;

/// Key data of `allow6`, the IPv6 twin of `allow` (`AllowKey`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllowKey6 {
    pub frontend_id_be: u32,
    pub addr: [u8; 16],
}

/// Per-CPU traffic counters per frontend (`frontend_stats`) and per server (`server_stats`).
/// "in" is client->server, "out" is server->client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub new_flows: u64,
    /// SYNs the server answered with RST (passive layer-4 observation).
    pub syn_rst: u64,
    /// SYNs the server left unanswered until the client sent them again (a redispatch moved
    /// the flow; passive layer-4 observation, too).
    pub syn_unanswered: u64,
    /// Frontends: SYNs dropped by the `allow` list (HAProxy's denied connections, `dcon`).
    pub denied: u64,
    /// Connections from processes on the balancer host that the connect hook sent to a server
    /// (also counted in `new_flows`; no packet of theirs meets XDP).
    pub local_connections: u64,
}

/// Value of `local_peers` (an LRU hash keyed by socket cookie, `u64`): what a local socket
/// dialled and the server the connect hook gave it, so that `getpeername()` says the former.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalPeer {
    pub frontend_addr: [u8; 4],
    pub server_addr: [u8; 4],
    /// Ports, network byte order.
    pub frontend_port_be: u16,
    pub server_port_be: u16,
}

/// Value of `local_peers6` (an LRU hash keyed by socket cookie): `LocalPeer` for IPv6 sockets
/// (an IPv4 frontend and server dialled through a dual-stack socket are IPv4-mapped here).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalPeer6 {
    pub frontend_addr: [u8; 16],
    pub server_addr: [u8; 16],
    pub frontend_port_be: u16,
    pub server_port_be: u16,
}

/// Defines a counter index enum once: the enum, its count, every value in order, each one's
/// name, and a compile-time check that the values are 0..COUNT in order (they index an array).
macro_rules! counters {
    ($(#[$edoc:meta])* $enum:ident, $count:ident,
     $( $(#[$doc:meta])* $variant:ident = $value:literal => $name:literal, )*) => {
        $(#[$edoc])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $enum {
            $( $(#[$doc])* $variant = $value, )*
        }

        pub const $count: u32 = [$($value),*].len() as u32;

        impl $enum {
            pub const ALL: [$enum; $count as usize] = [$($enum::$variant),*];

            pub const fn name(self) -> &'static str {
                match self {
                    $( $enum::$variant => $name, )*
                }
            }
        }

        const _: () = {
            let mut i = 0;
            while i < $enum::ALL.len() {
                assert!($enum::ALL[i] as usize == i);
                i += 1;
            }
        };
    };
}

counters! {
    /// Why a packet got the action it got: the index of `reason_stats` (per-CPU packet counts).
    /// Every packet counts exactly once.
    Reason, REASON_COUNT,
    /// Not for a frontend nor a tracked flow: handed to the kernel untouched.
    Passed = 0 => "passed",
    /// Client->server packet rewritten and sent on.
    Forwarded = 1 => "forwarded",
    /// Server->client packet rewritten and sent back.
    Replied = 2 => "replied",
    /// A SYN opened a flow.
    NewFlow = 3 => "new_flow",
    /// A SYN found no server UP: answered with RST (or dropped).
    NoBackend = 4 => "no_backend",
    /// The connection table refused an insert: the SYN is dropped (the client retries).
    TableFull = 5 => "table_full",
    /// The kernel had no neighbour entry for the next hop: rewritten packet handed to the kernel.
    NoNeighbour = 6 => "no_neighbour",
    /// IPv4 fragment (or IPv6 fragment header) of no tracked flow (or a later fragment, which
    /// carries no ports): handed to the kernel untouched.
    Fragment = 7 => "fragment",
    /// IPv4 header with options, of no tracked flow: handed to the kernel untouched.
    IpOptions = 8 => "ip_options",
    /// Truncated or inconsistent headers: handed to the kernel untouched.
    Malformed = 9 => "malformed",
    /// A non-SYN packet to a frontend without a flow: handed to the kernel.
    NoFlow = 10 => "no_flow",
    /// The FIB lookup failed (no route, forwarding disabled, ...): handed to the kernel.
    FibFailed = 11 => "fib_failed",
    /// Redirect to an interface not in `tx_ports`: the rewritten packet goes to the kernel.
    RedirectFailed = 12 => "redirect_failed",
    /// A SYN found no NAT port free towards its server (every candidate in use, or held while
    /// the server may keep the old tuple in TIME_WAIT): dropped, the client retries.
    NoNatPort = 13 => "no_nat_port",
    /// A non-SYN packet without a flow while the agent was removing flows: dropped (the sender
    /// retransmits) rather than handed to the kernel, which would answer RST (see `SweepState`).
    NoFlowInSweep = 14 => "no_flow_in_sweep",
    /// A server answered a SYN with RST: the client's SYN was sent to the next server instead,
    /// and the RST never reached the client.
    Redispatched = 15 => "redispatched",
    /// A SYN found no server UP, and its source had used up its RSTs (`RST_BURST`, then
    /// `RST_PER_SEC`): dropped instead of answered.
    RstLimited = 16 => "rst_limited",
    /// A SYN to a frontend with an `allow` list from a source it does not list: dropped.
    NotAllowed = 17 => "not_allowed",
    /// An ICMP error (destination unreachable, frag-needed included, or time exceeded) about a
    /// packet the balancer sent to a server: translated to what the client sent and sent to
    /// the client, as its flow's replies go.
    IcmpToClient = 18 => "icmp_to_client",
    /// An ICMP error about a packet the balancer sent to a client: translated to what the
    /// server sent and sent to the server.
    IcmpToServer = 19 => "icmp_to_server",
    /// The first fragment of a tracked flow's packet: dropped (the kernel would reassemble it,
    /// find no socket and answer RST, killing the connection); its sender retransmits.
    FragmentOfFlow = 20 => "fragment_of_flow",
    /// A tracked flow's packet with IP options: dropped, for the same reason.
    IpOptionsOfFlow = 21 => "ip_options_of_flow",
    /// A flow's packet bigger than the MTU of the interface it would leave by: with DF
    /// answered with frag-needed from the address it was sent to (its sender lowers its path
    /// MTU and sends again); without DF rewritten and handed to the kernel, which fragments it.
    TooBig = 22 => "too_big",
    /// An IPv6 TCP packet with extension headers (hop-by-hop, routing, fragment, destination
    /// options) before its TCP header: not walked, handed to the kernel untouched.
    Ipv6ExtHeader = 23 => "ipv6_ext_header",
}

counters! {
    /// What the data path did besides a packet's verdict: the index of `event_stats` (per-CPU).
    Event, EVENT_COUNT,
    /// A new flow carries TCP timestamps: its client's clock is translated to the tuple's.
    TsTranslated = 0 => "ts_translated",
    /// A SYN's translated TSval was raised to stay above the last one sent on its tuple.
    TsGuarded = 1 => "ts_guarded",
    /// A NAT port whose flow was over was taken by a new flow (its lingering entries replaced).
    PortReused = 2 => "port_reused",
    /// A candidate NAT port was skipped: its flow is over, but the server may still hold the
    /// tuple in TIME_WAIT and refuse a new SYN (closed first, no timestamps).
    PortHeld = 3 => "port_held",
    /// A candidate NAT port was skipped: its flow is open, or over less than a moment ago.
    PortBusy = 4 => "port_busy",
    /// A RST outside the window of its flow: passed on (the peer judges it) but the flow stays.
    RstOutOfWindow = 5 => "rst_out_of_window",
    /// A FIN outside the window of its flow: passed on, the flow is not marked closing.
    FinOutOfWindow = 6 => "fin_out_of_window",
    /// A client ACK in a half-open flow that does not acknowledge the server's SYN-ACK: passed
    /// on, the flow stays half-open.
    AckNotPromoting = 7 => "ack_not_promoting",
    /// A client retransmitted its SYN (same sequence number) after its own RST to a stale
    /// answer of the server: the flow keeps its server and NAT port.
    SynRetryKept = 8 => "syn_retry_kept",
    /// TCP options that do not parse (bad lengths): the packet goes on with its options as
    /// they were (no timestamp translation for it).
    TcpOptionsMalformed = 9 => "tcp_options_malformed",
    /// A SYN on a tuple whose flow was over opened a new flow (the client reused its port).
    TupleReused = 10 => "tuple_reused",
    /// The client retransmitted a SYN its server never answered: the flow moved to the next
    /// server and the SYN went there.
    RedispatchUnanswered = 11 => "redispatch_unanswered",
    /// A refused or unanswered SYN would have been redispatched, but the flow had used its
    /// `retries` (or no other server could take it): the RST went to the client.
    RedispatchExhausted = 12 => "redispatch_exhausted",
    /// A server became suspected (refused or left unanswered `suspect_after` SYNs in a row).
    ServerSuspected = 13 => "server_suspected",
    /// A new flow's round-robin pick was a suspected server: the next one took it.
    SuspectSkipped = 14 => "suspect_skipped",
    /// A local connect() to a frontend found no server to take it: refused (ECONNREFUSED).
    LocalRefused = 15 => "local_refused",
    /// A flow event was not sent: over the rate (`Settings::flow_events_per_s`) or the ring
    /// buffer full (the agent reads too slowly).
    FlowEventDropped = 16 => "flow_event_dropped",
    /// A client's packet came in from another MAC or interface than the flow's last (its router
    /// changed: a VRRP failover on the client's side, a replaced router): the flow's replies go
    /// that way from now on, instead of to a MAC that is gone.
    ReplyHopMoved = 17 => "reply_hop_moved",
}

// Layouts are part of the kernel/user contract: a change must be deliberate.
const _: () = assert!(size_of::<FrontendKey>() == 8);
const _: () = assert!(size_of::<Frontend>() == 12);
const _: () = assert!(size_of::<AllowKey>() == 8);
const _: () = assert!(size_of::<BackendSet>() == 8 + 6 * MAX_SLOTS);
const _: () = assert!(size_of::<Server>() == 20 + 4 * MAX_SOURCES);
const _: () = assert!(size_of::<FlowKey>() == 12);
const _: () = assert!(size_of::<Flow>() == 104);
const _: () = assert!(size_of::<NextHop>() == 32);
const _: () = assert!(size_of::<NextHop6>() == 40);
const _: () = assert!(size_of::<FrontendKey6>() == 20);
const _: () = assert!(size_of::<FlowKey6>() == 36);
const _: () = assert!(size_of::<Flow6>() == 128);
// The rewrite reads a flow's two new addresses as one array (see lb-ebpf's `nat`).
const _: () = assert!(core::mem::offset_of!(Flow6, new_dst_addr) == 16);
const _: () = assert!(core::mem::offset_of!(Flow, new_dst_addr) == 4);
const _: () = assert!(size_of::<Server6>() == 32 + 16 * MAX_SOURCES);
const _: () = assert!(size_of::<AllowKey6>() == 20);
const _: () = assert!(size_of::<Suspicion>() == 16);
const _: () = assert!(size_of::<SuspicionVerdict>() == 16);
const _: () = assert!(size_of::<Settings>() == 56);
const _: () = assert!(size_of::<FlowEvent>() == 16 + 2 * 12 + 2 * 104);
const _: () = assert!(size_of::<PortCursor>() == 8);
const _: () = assert!(size_of::<TrafficStats>() == 72);
const _: () = assert!(size_of::<LocalPeer>() == 12);
const _: () = assert!(size_of::<LocalPeer6>() == 36);
const _: () = assert!(size_of::<RstBucket>() == 16);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], made of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is a valid value.
    unsafe impl<A: aya::Pod> aya::Pod for FrontendKeyOf<A> {}
    unsafe impl aya::Pod for AllowKey6 {}
    unsafe impl aya::Pod for Frontend {}
    unsafe impl aya::Pod for AllowKey {}
    unsafe impl aya::Pod for BackendSet {}
    unsafe impl<A: aya::Pod> aya::Pod for ServerOf<A> {}
    unsafe impl<A: aya::Pod> aya::Pod for FlowKeyOf<A> {}
    unsafe impl<A: aya::Pod> aya::Pod for FlowOf<A> {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for PortCursor {}
    unsafe impl<A: aya::Pod> aya::Pod for NextHopOf<A> {}
    unsafe impl aya::Pod for Suspicion {}
    unsafe impl aya::Pod for SuspicionVerdict {}
    unsafe impl aya::Pod for TrafficStats {}
    unsafe impl aya::Pod for RstBucket {}
    unsafe impl aya::Pod for LocalPeer {}
    unsafe impl aya::Pod for LocalPeer6 {}
    unsafe impl aya::Pod for FlowEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_are_unique_across_reasons_and_events() {
        // `xdplb stats --json` puts both in one object.
        let mut names: [&str; (REASON_COUNT + EVENT_COUNT) as usize] = [""; (REASON_COUNT + EVENT_COUNT) as usize];
        for (i, r) in Reason::ALL.iter().enumerate() {
            names[i] = r.name();
        }
        for (i, e) in Event::ALL.iter().enumerate() {
            names[REASON_COUNT as usize + i] = e.name();
        }
        names.sort_unstable();
        assert!(names.windows(2).all(|w| w[0] != w[1]), "{names:?}");
    }

    #[test]
    fn a_source_gets_a_burst_of_rsts_then_a_few_a_second() {
        let mut b = RstBucket { refilled_ns: 0, tokens: RST_BURST, _pad: 0 };
        let now = 5_000_000_000;
        assert_eq!((0..100).filter(|_| b.take(now)).count(), RST_BURST as usize, "a burst");
        assert!(!b.take(now + RstBucket::NS_PER_TOKEN - 1), "nothing earned yet");
        assert!(b.take(now + RstBucket::NS_PER_TOKEN), "one earned");
        assert!(!b.take(now + RstBucket::NS_PER_TOKEN));
        let later = now + 3600 * 1_000_000_000;
        assert_eq!((0..100).filter(|_| b.take(later)).count(), RST_BURST as usize, "never more than a burst");
    }

    #[test]
    fn a_port_is_held_a_whole_time_wait_only_after_a_server_closed_first_without_timestamps() {
        let tw = 60_000_000_000;
        let server = |seen: u32| Flow { direction: FLOW_DIR_SERVER, seen, ..Flow::default() };
        let fin_both = TCP_FIN | FLOW_SEEN_PEER_FIN;
        assert_eq!(server(TCP_ACK).port_hold_ns(tw), None, "open: busy");
        assert_eq!(server(fin_both | FLOW_SEEN_CLOSED_FIRST).port_hold_ns(tw), Some(tw), "server first, no timestamps");
        let short = Some(NAT_PORT_HOLD_NS);
        assert_eq!(server(fin_both | FLOW_SEEN_CLOSED_FIRST | FLOW_SEEN_TS).port_hold_ns(tw), short, "translated");
        assert_eq!(server(fin_both).port_hold_ns(tw), short, "the client closed first");
        assert_eq!(server(TCP_RST | FLOW_SEEN_CLOSED_FIRST).port_hold_ns(tw), short, "reset");
        assert_eq!(server(FLOW_SEEN_PEER_RST).port_hold_ns(tw), short, "reset by the client");
    }
}
