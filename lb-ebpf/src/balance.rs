//! Round-robin over a pool's healthy set, skipping servers the data path suspects (see
//! `suspicion`) and, when moving a flow, the server it leaves.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use lb_common::{BackendSet, Event, Server, MAX_SLOTS, SERVER_F_VALID};

use crate::{
    maps::{BACKEND_SETS, RR_CURSORS, SERVERS},
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

/// The next server of `pool_id` in round-robin order, or `None` when no server may take a flow.
/// The cursor is shared by all CPUs and advanced atomically, so N flows over k servers split
/// N/k each whatever CPUs the SYNs arrive on. A suspected server, or `avoid` (the server a flow
/// is being moved away from), is passed over for the next slot.
#[inline(always)]
pub fn pick(pool_id: u32, avoid: u32, now: u64) -> Option<(u32, &'static Server)> {
    let set = set(pool_id)?;
    let count = set.count;
    if count == 0 {
        return None;
    }
    let cursor = RR_CURSORS.get_ptr_mut(pool_id)?;
    // BPF has no core::sync::atomic; the intrinsic compiles to BPF_ATOMIC fetch-add (cpu v3).
    // SeqCst on purpose: LLVM 22 lowers a Relaxed fetch-add to the non-fetching `lock add` and
    // then reads a stale register as its result (seen in the verifier log).
    let n = unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(cursor, 1) };
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
    if chosen == 0 {
        return None;
    }
    let server = SERVERS.get(chosen)?;
    if server.flags & SERVER_F_VALID == 0 {
        return None;
    }
    Some((chosen, server))
}
