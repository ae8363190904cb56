//! NAT source ports (and source addresses): which backend-side tuple a new flow to a server gets.
//!
//! Each server has a tuple space of `nat_port_count` ports times its source addresses, cut into
//! blocks of `PORT_BLOCK` tuples. A CPU takes the next block of a server from a shared counter
//! (one atomic add per block, not per SYN), then hands out that block's tuples in order with no
//! sharing at all. Blocks are taken in order around the whole space, so the tuple a SYN gets is
//! always about the one used longest ago, which gives the server's TIME_WAIT the most time to
//! end, whichever CPUs the SYNs arrive on and however unevenly. A tuple whose previous flow
//! lingers is taken once the flow is over and its hold has passed (`Flow::port_hold_ns`): a
//! couple of seconds, or the server's whole TIME_WAIT when it closed first without timestamps
//! (translation makes the next SYN acceptable otherwise).

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{cty::c_void, helpers::bpf_loop};
use lb_common::{
    tcp::{syn_tsval, tuple_hash, PreviousOnTuple, PREVIOUS_FLOW, PREVIOUS_LAST},
    Event, FlowKeyOf, FlowOf, PortCursor, ServerOf, Settings, FLOW_SEEN_TS, MAX_SOURCES, NAT_PORT_HOLD_NS,
    NAT_PORT_TRIES, PORT_BLOCK, SERVER_F_LOCAL,
};

use crate::{
    conntrack,
    family::Family,
    maps::{PORT_BLOCKS, PORT_CURSORS},
    stats,
};

/// A backend-side tuple for a new flow to `server`, and the lingering server-side entry of the
/// flow that had it before (null if none; `take` removes it). A plain pointer, not an `Option`:
/// the verifier must see the null check on the pointer itself before it is followed.
pub struct Tuple<A> {
    pub reply_key: FlowKeyOf<A>,
    pub previous: *mut FlowOf<A>,
    pub previous_half_open: bool,
}

impl<A: Family> Tuple<A> {
    /// Takes the tuple for a new flow to `server`: removes the previous flow's lingering entry,
    /// and returns the TSval the new flow's SYN carries on this tuple when its timestamps are
    /// translated (`translated`; 0 otherwise): the tuple's clock, kept above what the previous
    /// flow on it sent (see `lb_common::tcp::syn_tsval`).
    #[inline(always)]
    pub fn take(&self, server: &ServerOf<A>, settings: &Settings, now: u64, translated: bool) -> u32 {
        let mut previous = PreviousOnTuple::default();
        let old = self.previous;
        if !old.is_null() {
            let o = unsafe { &*old };
            previous.syn_tsval = o.ts_last;
            previous.syn_ns = o.created_ns;
            previous.known = PREVIOUS_FLOW;
            // The previous flow's client side knows the last TSval it sent, while it lingers.
            if translated && o.seen & FLOW_SEEN_TS != 0 {
                if let Some((c, _)) = conntrack::peer_of(o) {
                    previous.last_tsval = unsafe { (*c).ts_last };
                    previous.known |= PREVIOUS_LAST;
                }
            }
            conntrack::remove(&self.reply_key, self.previous_half_open);
            stats::event(Event::PortReused);
        }
        if !translated {
            return 0;
        }
        let k = &self.reply_key;
        let hash =
            tuple_hash(k.dst_addr.fold32(), k.dst_port_be, server.addr.fold32(), server.port_be, settings.ts_secret);
        let (v, raised) = syn_tsval(now, hash, &previous);
        if raised {
            stats::event(Event::TsGuarded);
        }
        v
    }
}

/// The backend-side tuple of a new flow whose SYN has `client` as its key: a NAT tuple
/// (`allocate`), or for a server on this host (`SERVER_F_LOCAL`) the client's own, only the
/// destination being translated (see lb-common's `FLOW_LOCAL`).
#[inline(always)]
pub fn tuple<A: Family>(
    server_id: u32,
    server: &ServerOf<A>,
    settings: &Settings,
    now: u64,
    timestamps: bool,
    client: &FlowKeyOf<A>,
) -> Option<Tuple<A>> {
    if server.flags & SERVER_F_LOCAL == 0 {
        return allocate(server_id, server, settings, now, timestamps);
    }
    let reply_key = FlowKeyOf {
        src_addr: server.addr,
        dst_addr: client.src_addr,
        src_port_be: server.port_be,
        dst_port_be: client.src_port_be,
    };
    Some(Tuple { reply_key, previous: core::ptr::null_mut(), previous_half_open: false })
}

/// `timestamps`: the SYN's timestamps are translated; it takes a tuple from the ports for such
/// SYNs, otherwise from the ports for SYNs without (`Settings::no_ts_ports`). A server on this
/// host has none (`None`): see `tuple`.
#[inline(always)]
pub fn allocate<A: Family>(
    server_id: u32,
    server: &ServerOf<A>,
    settings: &Settings,
    now: u64,
    timestamps: bool,
) -> Option<Tuple<A>> {
    let mut reply_key =
        FlowKeyOf { src_addr: server.addr, dst_addr: A::default(), src_port_be: server.port_be, dst_port_be: 0 };
    let id_ts = server_id << 1 | u32::from(timestamps);
    let found = if A::OUTLINE {
        walk(id_ts, server, settings, now, &mut reply_key)
    } else {
        walk_here(id_ts, server, settings, now, &mut reply_key)
    };
    if found == 0 {
        return None;
    }
    // A pointer the callback stored would come back to the verifier as a plain number: the
    // entry it judged is looked up again (it is there, or gone, which is as good).
    let (previous, previous_half_open) = match conntrack::lookup(&reply_key) {
        Some((p, half_open)) if found == FOUND_TAKEN => (p, half_open),
        _ => (core::ptr::null_mut(), false),
    };
    Some(Tuple { reply_key, previous, previous_half_open })
}

/// `walk`'s answers: no tuple, a free one, or one a finished flow's entry still holds.
const FOUND_FREE: u32 = 1;
const FOUND_TAKEN: u32 = 2;

/// Walks the candidate tuples of `server` (see `Walk`), leaving the one chosen in `reply_key`
/// (whose source address and port are the server's): 0 when none is free, else `FOUND_*`.
/// `id_ts`: the server's id, shifted left once, and whether the SYN's timestamps are translated
/// in the low bit (a BPF function takes at most five arguments). Not inlined where the family
/// wants its locals in a frame of their own (`Family::OUTLINE`: IPv6 needs the room; IPv4's
/// chain of frames is deeper, it takes `walk_here`).
#[inline(never)]
fn walk<A: Family>(
    id_ts: u32,
    server: &ServerOf<A>,
    settings: &Settings,
    now: u64,
    reply_key: &mut FlowKeyOf<A>,
) -> u32 {
    walk_here(id_ts, server, settings, now, reply_key)
}

#[inline(always)]
fn walk_here<A: Family>(
    id_ts: u32,
    server: &ServerOf<A>,
    settings: &Settings,
    now: u64,
    reply_key: &mut FlowKeyOf<A>,
) -> u32 {
    let (server_id, timestamps) = (id_ts >> 1, id_ts & 1 != 0);
    let sources = server.snat_count;
    // No upper bound is checked here on purpose: the compiler would then know `index % sources`
    // is below MAX_SOURCES and drop the mask below, which the verifier needs to see. The agent
    // never writes more than MAX_SOURCES; the mask keeps a bad count in bounds.
    if sources == 0 || settings.no_ts_ports >= settings.nat_port_count && settings.no_ts_ports != 0 {
        return 0;
    }
    let (first_port, ports, region) = if settings.no_ts_ports == 0 {
        (settings.nat_port_first, settings.nat_port_count, 0)
    } else if timestamps {
        (settings.nat_port_first, settings.nat_port_count - settings.no_ts_ports, 0)
    } else {
        (settings.nat_port_first + settings.nat_port_count - settings.no_ts_ports, settings.no_ts_ports, 1)
    };
    let total = ports * sources;
    let blocks = total.div_ceil(PORT_BLOCK);
    if blocks == 0 {
        return 0;
    }
    let slot = server_id * 2 + region;
    let (Some(cursor), Some(next_block)) = (PORT_CURSORS.get_ptr_mut(slot), PORT_BLOCKS.get_ptr_mut(slot)) else {
        return 0;
    };
    let mut walk = Walk {
        server,
        settings,
        cursor,
        next_block,
        now,
        first_port,
        total,
        blocks,
        sources,
        found: 0,
        previous: 0,
        reply_key: *reply_key,
    };
    unsafe {
        bpf_loop(
            NAT_PORT_TRIES,
            try_tuple::<A> as *const () as *mut c_void,
            &mut walk as *mut Walk<A> as *mut c_void,
            0,
        );
    }
    if walk.found == 0 {
        return 0;
    }
    *reply_key = walk.reply_key;
    if walk.previous != 0 {
        FOUND_TAKEN
    } else {
        FOUND_FREE
    }
}

/// The candidates' walk, on the caller's stack, handed to `try_tuple` by `bpf_loop`: a loop
/// written out here, inlined wherever a flow needs a tuple, made the verifier explore every
/// sequence of busy and held candidates (past its million-instruction budget); `bpf_loop`'s
/// callback is verified once.
#[repr(C)]
struct Walk<A> {
    server: *const ServerOf<A>,
    settings: *const Settings,
    cursor: *mut PortCursor,
    next_block: *mut u32,
    now: u64,
    first_port: u32,
    total: u32,
    blocks: u32,
    sources: u32,
    /// 1 once a tuple is chosen; then `reply_key`, and whether a finished flow's entry holds it.
    found: u32,
    previous: u32,
    reply_key: FlowKeyOf<A>,
}

/// One candidate tuple: returns 1 (stop) when it is free, 0 to look at the next.
extern "C" fn try_tuple<A: Family>(_index: u64, w: *mut c_void) -> i64 {
    let w = unsafe { &mut *(w as *mut Walk<A>) };
    let (server, settings, cursor) = unsafe { (&*w.server, &*w.settings, &mut *w.cursor) };
    if cursor.left == 0 {
        // SeqCst for the reason given in `balance`.
        let n = unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(w.next_block, 1) };
        if w.blocks == 0 {
            return 1;
        }
        cursor.next = (n % w.blocks) * PORT_BLOCK;
        cursor.left = PORT_BLOCK;
    }
    let index = cursor.next;
    cursor.next += 1;
    cursor.left -= 1;
    if index >= w.total {
        // The last block is cut short by the end of the space: take the next one now.
        cursor.left = 0;
        return 0;
    }
    // Consecutive indexes alternate source addresses, so each address's ports go in turn.
    let sources = w.sources;
    if sources == 0 {
        return 1;
    }
    let (source, port) =
        if sources == 1 { (0, index) } else { ((index % sources) as usize & (MAX_SOURCES - 1), index / sources) };
    A::copy(&mut w.reply_key.dst_addr, &server.snat_addrs[source]);
    w.reply_key.dst_port_be = ((w.first_port + port) as u16).to_be();
    match conntrack::lookup(&w.reply_key) {
        None => {
            w.found = 1;
            1
        }
        Some((old, _)) => {
            let f = unsafe { &*old };
            match f.port_hold_ns(settings.time_wait_ns) {
                Some(hold) if w.now.wrapping_sub(f.last_seen_ns) > hold => {
                    w.found = 1;
                    w.previous = 1;
                    1
                }
                Some(hold) if hold > NAT_PORT_HOLD_NS => {
                    stats::event(Event::PortHeld);
                    0
                }
                _ => {
                    stats::event(Event::PortBusy);
                    0
                }
            }
        }
    }
}
