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
    /// Every map the agent pins, in a stable order.
    pub const ALL: [&str; 11] = [
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
    ];
}

/// Frontends (address:port pairs) the program serves.
pub const MAX_FRONTENDS: u32 = 256;
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
/// Default size of the half-open table (entries): flows whose handshake has not completed live
/// apart, so that a SYN flood evicts only other half-open flows, never an established one.
pub const DEFAULT_SYN_FLOW_ENTRIES: u32 = 32_768;
/// How long a flow trusts its cached FIB answer (a changed route or neighbour MAC is picked up
/// within this time; the neighbour entry itself is kept fresh by the kernel).
pub const NEXT_HOP_REFRESH_NS: u64 = 1_000_000_000;
/// A port whose flow is over (RST, or FIN both ways) may be taken by a new flow once the old
/// one has been quiet this long: the table's linger then costs no port under a high rate of
/// short connections (like TIME_WAIT reuse).
pub const NAT_PORT_REUSE_NS: u64 = 1_000_000_000;
/// Tries to find a free NAT source port before a SYN is refused.
pub const NAT_PORT_TRIES: u32 = 8;

/// Key of `frontends`: the destination a client connects to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrontendKey {
    pub addr: [u8; 4],
    /// TCP port, network byte order.
    pub port_be: u16,
    pub _pad: u16,
}

/// Value of `frontends`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frontend {
    /// Index into `frontend_stats`.
    pub frontend_id: u32,
    /// Key of `backend_sets` and index of `rr_cursors`.
    pub pool_id: u32,
}

/// Value of `backend_sets` (key: pool id, `u32`): the servers that may take new flows, as
/// round-robin slots. The agent replaces the whole value in one update, which the kernel's hash
/// map swaps in atomically, so a reader never sees half of an old set and half of a new one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSet {
    /// Number of valid entries in `slots`; 0 means no server may take a new flow.
    pub count: u32,
    pub _pad: u32,
    /// Server ids (indexes of `servers`), repeated by weight and interleaved.
    pub slots: [u32; MAX_SLOTS],
}

impl Default for BackendSet {
    fn default() -> Self {
        Self { count: 0, _pad: 0, slots: [0; MAX_SLOTS] }
    }
}

/// Value of `servers` (an array indexed by server id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Server {
    pub addr: [u8; 4],
    /// TCP port, network byte order.
    pub port_be: u16,
    pub _pad: u16,
    /// The balancer's own address that flows to this server leave from (full NAT source).
    pub snat_addr: [u8; 4],
    /// Pool the server belongs to.
    pub pool_id: u32,
    /// `SERVER_F_*` bits.
    pub flags: u32,
}

/// The entry is in use.
pub const SERVER_F_VALID: u32 = 1;

/// Key of `flows`, the connection table: a TCP 4-tuple as it appears in a received packet.
/// Each flow has two entries: client->frontend and server->balancer (its reply direction).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub src_port_be: u16,
    pub dst_port_be: u16,
}

/// Value of `flows`: how to rewrite a packet with this key, and what has been seen of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Rewritten source and destination (this direction).
    pub new_src_addr: [u8; 4],
    pub new_dst_addr: [u8; 4],
    pub new_src_port_be: u16,
    pub new_dst_port_be: u16,
    /// `FLOW_DIR_*`: which side sends the packets this entry matches.
    pub direction: u32,
    pub server_id: u32,
    pub frontend_id: u32,
    /// Where this direction's packets go: destination and source MAC and egress interface.
    /// Server side (replies): the client's MAC (or its router's), our MAC and the interface the
    /// SYN came in on, recorded at SYN time. Client side: the FIB's answer, cached and asked
    /// again once `next_hop_ns` is older than `NEXT_HOP_REFRESH_NS`; ifindex 0 = not known yet.
    pub next_hop_dst_mac: [u8; 6],
    pub next_hop_src_mac: [u8; 6],
    pub next_hop_ifindex: u32,
    /// TCP flags seen in this direction (`FLOW_SEEN_*`), and the peer's closing flags.
    pub seen: u32,
    /// When the client side's next hop was last looked up (0 for the recorded server side).
    pub next_hop_ns: u64,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

pub const FLOW_DIR_CLIENT: u32 = 0;
pub const FLOW_DIR_SERVER: u32 = 1;

/// `Flow::seen` bits: the low byte is the OR of the TCP flag bytes seen in this direction.
pub const TCP_FIN: u32 = 0x01;
pub const TCP_SYN: u32 = 0x02;
pub const TCP_RST: u32 = 0x04;
pub const TCP_ACK: u32 = 0x10;
/// An ACK without SYN went through in the client direction: the handshake completed.
pub const FLOW_SEEN_ESTABLISHED: u32 = 0x100;
/// The other direction sent FIN / RST (copied there so that each entry tells the whole state).
pub const FLOW_SEEN_PEER_FIN: u32 = 0x1000;
pub const FLOW_SEEN_PEER_RST: u32 = 0x4000;

impl Flow {
    /// Key of the other direction's entry: the rewritten tuple, seen from the other side.
    #[inline(always)]
    pub fn peer_key(&self) -> FlowKey {
        FlowKey {
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
    pub _pad: u32,
}

/// Answer a SYN that no server can take with a TCP RST (otherwise drop it).
pub const SETTINGS_F_RST_NO_BACKEND: u32 = 1;

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
}

/// Defines `Reason` once: the enum, its count, every value in order, and each one's name.
macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $value:literal => $name:literal, )*) => {
        /// Why a packet got the action it got: the index of `reason_stats` (per-CPU packet counts).
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $( $(#[$doc])* $variant = $value, )*
        }

        pub const REASON_COUNT: u32 = [$($value),*].len() as u32;

        impl Reason {
            pub const ALL: [Reason; REASON_COUNT as usize] = [$(Reason::$variant),*];

            pub const fn name(self) -> &'static str {
                match self {
                    $( Reason::$variant => $name, )*
                }
            }
        }
    };
}

reasons! {
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
    /// The connection table refused an insert, or no NAT port was free.
    TableFull = 5 => "table_full",
    /// The kernel had no neighbour entry for the next hop: rewritten packet handed to the kernel.
    NoNeighbour = 6 => "no_neighbour",
    /// IPv4 fragment: handed to the kernel untouched.
    Fragment = 7 => "fragment",
    /// IPv4 header with options: handed to the kernel untouched.
    IpOptions = 8 => "ip_options",
    /// Truncated or inconsistent headers: handed to the kernel untouched.
    Malformed = 9 => "malformed",
    /// A non-SYN packet to a frontend without a flow: handed to the kernel.
    NoFlow = 10 => "no_flow",
    /// The FIB lookup failed (no route, forwarding disabled, ...): handed to the kernel.
    FibFailed = 11 => "fib_failed",
    /// Redirect to an interface not in `tx_ports`: the rewritten packet goes to the kernel.
    RedirectFailed = 12 => "redirect_failed",
}

// The values index an array: they must be 0..REASON_COUNT in order.
const _: () = {
    let mut i = 0;
    while i < Reason::ALL.len() {
        assert!(Reason::ALL[i] as usize == i);
        i += 1;
    }
};

// Layouts are part of the kernel/user contract: a change must be deliberate.
const _: () = assert!(size_of::<FrontendKey>() == 8);
const _: () = assert!(size_of::<Frontend>() == 8);
const _: () = assert!(size_of::<BackendSet>() == 8 + 4 * MAX_SLOTS);
const _: () = assert!(size_of::<Server>() == 20);
const _: () = assert!(size_of::<FlowKey>() == 12);
const _: () = assert!(size_of::<Flow>() == 88);
const _: () = assert!(size_of::<Settings>() == 16);
const _: () = assert!(size_of::<TrafficStats>() == 48);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], made of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for FrontendKey {}
    unsafe impl aya::Pod for Frontend {}
    unsafe impl aya::Pod for BackendSet {}
    unsafe impl aya::Pod for Server {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for TrafficStats {}
}
