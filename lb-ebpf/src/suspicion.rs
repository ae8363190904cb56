//! Suspicion: a server that refused (RST) or left unanswered `suspect_after` SYNs in a row is
//! skipped for new flows at once, before the agent has done anything; the agent sees the count
//! move, checks the server at once, and clears the suspicion when the check passes, or holds it
//! while HAProxy's state machine takes the server DOWN. A SYN-ACK from the server ends the
//! streak. Without an agent's word a suspicion lapses after `SUSPECT_HOLD_NS`.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use lb_common::{Event, SUSPECT_HOLD_NS};

use crate::{
    maps::{SUSPICION, SUSPICION_VERDICT},
    stats,
};

/// Whether server `id` is suspected now: since its streak, not cleared by the agent, and within
/// the hold (or the agent's renewal of it).
#[inline(always)]
pub fn suspected(id: u32, now: u64) -> bool {
    let Some(s) = SUSPICION.get(id) else { return false };
    let since = s.since_ns;
    if since == 0 {
        return false;
    }
    let Some(v) = SUSPICION_VERDICT.get(id) else { return now.wrapping_sub(since) <= SUSPECT_HOLD_NS };
    v.cleared_ns < since && (now.wrapping_sub(since) <= SUSPECT_HOLD_NS || now < v.held_until_ns)
}

/// Server `id` refused a SYN or left it unanswered; `threshold` is its pool's `suspect_after`.
/// The streak suspects it when it reaches the threshold, and again at every later failure while
/// it is not suspected (a lapsed or cleared suspicion, the server still failing).
#[inline(always)]
pub fn failed(id: u32, threshold: u8, now: u64) {
    let Some(s) = SUSPICION.get_ptr_mut(id) else { return };
    // SeqCst for the reason given in `balance`.
    let fails = unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(&mut (*s).fails, 1) } + 1;
    if threshold != 0 && fails >= threshold as u32 && !suspected(id, now) {
        let s = unsafe { &mut *s };
        s.since_ns = now;
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(&mut s.count, 1) };
        stats::event(Event::ServerSuspected);
    }
}

/// Server `id` answered a SYN: the streak is over.
#[inline(always)]
pub fn answered(id: u32) {
    if let Some(s) = SUSPICION.get_ptr_mut(id) {
        // Most answers find no streak: no write for them.
        if unsafe { (*s).fails } != 0 {
            unsafe { (*s).fails = 0 };
        }
    }
}
