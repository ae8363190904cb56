//! Round-robin over a pool's healthy set.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use lb_common::{Server, MAX_SLOTS, SERVER_F_VALID};

use crate::maps::{BACKEND_SETS, RR_CURSORS, SERVERS};

/// The next server of `pool_id` in round-robin order, or `None` when no server may take a flow.
/// The cursor is shared by all CPUs and advanced atomically, so N flows over k servers split
/// N/k each whatever CPUs the SYNs arrive on.
#[inline(always)]
pub fn pick(pool_id: u32) -> Option<(u32, &'static Server)> {
    // SAFETY: the agent replaces a set whole (see `BackendSet`).
    let set = unsafe { BACKEND_SETS.get(&pool_id) }?;
    let count = set.count;
    if count == 0 {
        return None;
    }
    let cursor = RR_CURSORS.get_ptr_mut(pool_id)?;
    // BPF has no core::sync::atomic; the intrinsic compiles to BPF_ATOMIC fetch-add (cpu v3).
    // SeqCst on purpose: LLVM 22 lowers a Relaxed fetch-add to the non-fetching `lock add` and
    // then reads a stale register as its result (seen in the verifier log).
    let n = unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(cursor, 1) };
    // The agent never writes count > MAX_SLOTS, so the mask changes nothing; it gives the
    // verifier the bound it cannot derive from a modulo (and keeps a bad count in bounds).
    let slot = (n % count) as usize & (MAX_SLOTS - 1);
    let server_id = set.slots[slot];
    let server = SERVERS.get(server_id)?;
    if server.flags & SERVER_F_VALID == 0 {
        return None;
    }
    Some((server_id, server))
}
