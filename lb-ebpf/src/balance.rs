//! Which server takes a new flow: HAProxy's `roundrobin`, `leastconn` and `source` over a
//! pool's healthy set, skipping servers the data path suspects (see `suspicion`) and, when
//! moving a flow, the server it leaves. Also the per-server count of open flows that
//! `leastconn` reads (`opened`, `ended`).

use core::intrinsics::{atomic_xadd, atomic_xsub, AtomicOrdering};

use aya_ebpf::{cty::c_void, helpers::bpf_loop};
use lb_common::{BackendSet, Event, ServerOf, BALANCE_LEASTCONN, BALANCE_SOURCE, MAX_SLOTS, SERVER_F_VALID};

use crate::{
    family::Family,
    maps::{BACKEND_SETS, RR_CURSORS, SERVER_FLOWS},
    stats, suspicion,
};

/// Slots looked at past a skipped server before taking it anyway: a pool whose servers are all
/// suspected still serves (suspicion only steers; health checks decide).
const SKIP_TRIES: u32 = 4;

/// The healthy set of `pool_id`.
#[inline(always)]
pub fn set(pool_id: u32) -> Option<&'static BackendSet> {
    // SAFETY: the agent replaces a set whole (see `BackendSet`).
    unsafe { BACKEND_SETS.get(&pool_id) }
}

/// The server of `pool_id` for a new flow from `client` (its address as in the packet), or
/// `None` when no server may take a flow. A suspected server, or `avoid` (the server a flow is
/// being moved away from), is passed over for the next slot.
#[inline(always)]
pub fn pick<A: Family>(pool_id: u32, avoid: u32, now: u64, client: &A) -> Option<(u32, &'static ServerOf<A>)> {
    let set = set(pool_id)?;
    let count = set.count;
    if count == 0 {
        return None;
    }
    let cursor = RR_CURSORS.get_ptr_mut(pool_id)?;
    // BPF has no core::sync::atomic; the intrinsic compiles to BPF_ATOMIC fetch-add (cpu v3).
    // SeqCst on purpose: LLVM 22 lowers a Relaxed fetch-add to the non-fetching `lock add` and
    // then reads a stale register as its result (seen in the verifier log).
    // The cursor also rotates where leastconn starts, so that ties share the flows in turn.
    let n = unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(cursor, 1) };
    let chosen = match set.balance {
        BALANCE_LEASTCONN => least_loaded(set, n, avoid, now),
        BALANCE_SOURCE => in_turn(set, count, source_hash(client.fold32()), avoid, now),
        _ => in_turn(set, count, n, avoid, now),
    };
    if chosen == 0 {
        return None;
    }
    let server = A::servers().get(chosen)?;
    if server.flags & SERVER_F_VALID == 0 {
        return None;
    }
    Some((chosen, server))
}

/// The slot at `n`, or the next ones past `avoid` and suspected servers; `count` is the set's,
/// read once and not zero.
#[inline(always)]
fn in_turn(set: &BackendSet, count: u32, n: u32, avoid: u32, now: u64) -> u32 {
    let mut chosen = 0;
    for i in 0..SKIP_TRIES {
        // The agent never writes count > MAX_SLOTS, so the mask changes nothing; it gives the
        // verifier the bound it cannot derive from a modulo (and keeps a bad count in bounds).
        let slot = (n.wrapping_add(i) % count) as usize & (MAX_SLOTS - 1);
        let id = set.slots[slot];
        if id == avoid {
            continue;
        }
        if chosen == 0 {
            chosen = id;
        }
        if !suspicion::suspected(id, now) {
            chosen = id;
            break;
        }
        stats::event(Event::SuspectSkipped);
    }
    chosen
}

/// A client address (folded, see `Family::fold32`) spread over 32 bits: neighbouring addresses
/// land on unrelated slots.
#[inline(always)]
fn source_hash(folded: u32) -> u32 {
    // Byte-swapped: an IPv4 address hashes as its big-endian value (BPF is little-endian).
    lb_common::tcp::mix32(folded.swap_bytes())
}

/// The leastconn scan's state, on the caller's stack, handed to `weigh` by `bpf_loop` (its
/// callback is verified once, whatever the pool's size).
#[repr(C)]
struct Scan {
    set: *const BackendSet,
    now: u64,
    start: u32,
    avoid: u32,
    /// The best server so far (0: none), its flows and weight; a suspected one only if no
    /// other is there (`fallback`).
    best: u32,
    best_flows: u32,
    best_weight: u32,
    fallback: u32,
}

/// The server with the fewest open flows for its weight, starting the scan at `start` so that
/// ties go round in turn.
#[inline(always)]
fn least_loaded(set: &BackendSet, start: u32, avoid: u32, now: u64) -> u32 {
    let mut scan = Scan { set, now, start, avoid, best: 0, best_flows: 0, best_weight: 1, fallback: 0 };
    let count = set.count.min(MAX_SLOTS as u32);
    unsafe {
        bpf_loop(count, weigh as *const () as *mut c_void, &mut scan as *mut Scan as *mut c_void, 0);
    }
    if scan.best != 0 {
        scan.best
    } else {
        scan.fallback
    }
}

/// One server of the leastconn scan: 0 (go on) always.
extern "C" fn weigh(index: u64, s: *mut c_void) -> i64 {
    let s = unsafe { &mut *(s as *mut Scan) };
    let set = unsafe { &*s.set };
    let count = set.count;
    if count == 0 {
        return 1;
    }
    let slot = ((s.start as u64 + index) % count as u64) as usize & (MAX_SLOTS - 1);
    let id = set.slots[slot];
    if id == s.avoid || id == 0 {
        return 0;
    }
    if suspicion::suspected(id, s.now) {
        if s.fallback == 0 {
            s.fallback = id;
        }
        stats::event(Event::SuspectSkipped);
        return 0;
    }
    let flows = open_flows(id);
    let weight = (set.weights[slot] as u32).max(1);
    // flows / weight < best_flows / best_weight, without dividing.
    if s.best == 0 || (flows as u64) * (s.best_weight as u64) < (s.best_flows as u64) * (weight as u64) {
        s.best = id;
        s.best_flows = flows;
        s.best_weight = weight;
    }
    0
}

/// Server `id`'s open flows (a count below zero, see `ended`, reads as zero).
#[inline(always)]
fn open_flows(id: u32) -> u32 {
    let n = SERVER_FLOWS.get(id).copied().unwrap_or(0);
    if n > i32::MAX as u32 {
        0
    } else {
        n
    }
}

/// A flow to server `id` opened: one more open flow for leastconn.
#[inline(always)]
pub fn opened(id: u32) {
    if let Some(n) = SERVER_FLOWS.get_ptr_mut(id) {
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(n, 1) };
    }
}

/// A flow to server `id` is over (counted once, see `lb_common::FLOW_OVER`), or moved away.
#[inline(always)]
pub fn ended(id: u32) {
    if let Some(n) = SERVER_FLOWS.get_ptr_mut(id) {
        // May go below zero when the sweep wrote the true count back just before this flow
        // ended: read as zero (`open_flows`) until the next write-back.
        unsafe { atomic_xsub::<u32, u32, { AtomicOrdering::SeqCst }>(n, 1) };
    }
}
