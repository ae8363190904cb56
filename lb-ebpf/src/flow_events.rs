//! Flow events for the agent: a flow's establishment and its end, with both of its entries, sent
//! to the `flow_events` ring buffer when the agent asked for them (`SETTINGS_F_FLOW_EVENTS`: the
//! per-connection log; later, flow state sync). Off, a flow pays one flag test at each of the two
//! moments; on, each CPU sends at most `Settings::flow_events_per_s` a second, and what it may
//! not send (over the rate, or the ring full) is counted, never waited for.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{Event, Flow, FlowEvent, FlowOf, FLOW_DIR_CLIENT, SETTINGS_F_FLOW_EVENTS};

use crate::{
    conntrack,
    family::Family,
    maps::{settings, FLOW_EVENTS, FLOW_EVENT_WINDOW},
    stats,
};

/// The flow whose entry `flow` is (either side) just completed its handshake, or ended
/// (`kind`): sent with both entries, the client side's first. Called once per packet at most,
/// after the connection table's work, so that the verifier meets it in few states. IPv4 flows
/// only (`Family::FLOW_EVENTS`).
#[inline(never)]
pub fn flow_changed<A: Family>(kind: u32, flow: *mut FlowOf<A>) {
    if !A::FLOW_EVENTS {
        return;
    }
    // The IPv4 program's entries, the only ones that get here.
    let flow = flow as *mut Flow;
    let Some(s) = settings() else { return };
    if s.flags & SETTINGS_F_FLOW_EVENTS == 0 {
        return;
    }
    let f = unsafe { &*flow };
    let Some((peer, _)) = conntrack::peer_of(f) else { return };
    let peer = unsafe { &*peer };
    if f.direction == FLOW_DIR_CLIENT {
        send(s.flow_events_per_s, kind, f, peer);
    } else {
        send(s.flow_events_per_s, kind, peer, f);
    }
}

/// Sends a `kind` event of the flow whose entries are `client` and `server`.
#[inline(always)]
fn send(per_s: u32, kind: u32, client: &Flow, server: &Flow) {
    let now = unsafe { bpf_ktime_get_ns() };
    if !within_rate(per_s, now) {
        stats::event(Event::FlowEventDropped);
        return;
    }
    let Some(mut entry) = FLOW_EVENTS.reserve_untyped::<FlowEvent>(0) else {
        stats::event(Event::FlowEventDropped);
        return;
    };
    // Written in place in the ring: a FlowEvent is too big for the BPF stack beside the rest.
    let e = entry.as_mut_ptr();
    unsafe {
        (*e).kind = kind;
        (*e)._pad = 0;
        (*e).time_ns = now;
        (*e).client_key = server.peer_key();
        (*e).server_key = client.peer_key();
        (*e).client = *client;
        (*e).server = *server;
    }
    entry.submit(0);
}

/// One more event this second on this CPU, if the rate allows it. The window is per CPU
/// (`[start_ns, sent]`), so no two CPUs touch the same counter.
#[inline(always)]
fn within_rate(per_s: u32, now: u64) -> bool {
    let Some(w) = FLOW_EVENT_WINDOW.get_ptr_mut(0) else { return false };
    let w = unsafe { &mut *w };
    if now.wrapping_sub(w[0]) >= 1_000_000_000 {
        w[0] = now;
        w[1] = 0;
    }
    if w[1] >= u64::from(per_s) {
        return false;
    }
    w[1] += 1;
    true
}
