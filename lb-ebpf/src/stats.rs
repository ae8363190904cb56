//! Per-CPU counters: per reason, per frontend and per server. No logging in the hot path.

use lb_common::{Event, Reason, TrafficStats};

use crate::maps::{EVENT_STATS, FRONTEND_STATS, REASON_STATS, SERVER_STATS};

#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(p) = REASON_STATS.get_ptr_mut(reason as u32) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn event(event: Event) {
    if let Some(p) = EVENT_STATS.get_ptr_mut(event as u32) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn traffic(frontend_id: u32, server_id: u32, f: impl Fn(&mut TrafficStats)) {
    if let Some(p) = FRONTEND_STATS.get_ptr_mut(frontend_id) {
        f(unsafe { &mut *p });
    }
    if let Some(p) = SERVER_STATS.get_ptr_mut(server_id) {
        f(unsafe { &mut *p });
    }
}

/// A SYN of `bytes` (IP length) opened a flow: one look at each counter block for both counts.
#[inline(always)]
pub fn new_flow(frontend_id: u32, server_id: u32, bytes: u64) {
    traffic(frontend_id, server_id, |s| {
        s.new_flows += 1;
        s.packets_in += 1;
        s.bytes_in += bytes;
    });
}

/// One packet of `bytes` (IP length) in the client->server ("in") or server->client direction.
#[inline(always)]
pub fn packet(frontend_id: u32, server_id: u32, to_server: bool, bytes: u64) {
    traffic(frontend_id, server_id, |s| {
        if to_server {
            s.packets_in += 1;
            s.bytes_in += bytes;
        } else {
            s.packets_out += 1;
            s.bytes_out += bytes;
        }
    });
}

/// A SYN refused by `frontend_id`'s allow list.
#[inline(always)]
pub fn denied(frontend_id: u32) {
    if let Some(p) = FRONTEND_STATS.get_ptr_mut(frontend_id) {
        unsafe { (*p).denied += 1 };
    }
}

/// The server answered a SYN with RST: passive layer-4 health observation.
#[inline(always)]
pub fn syn_rst(server_id: u32) {
    if let Some(p) = SERVER_STATS.get_ptr_mut(server_id) {
        unsafe { (*p).syn_rst += 1 };
    }
}

/// The server left a SYN unanswered until the client sent it again.
#[inline(always)]
pub fn syn_unanswered(server_id: u32) {
    if let Some(p) = SERVER_STATS.get_ptr_mut(server_id) {
        unsafe { (*p).syn_unanswered += 1 };
    }
}

/// A local connect() to frontend `frontend_id` was sent to server `server_id` (the connect
/// hook): a new flow that XDP never sees.
#[inline(always)]
pub fn local_connection(frontend_id: u32, server_id: u32) {
    traffic(frontend_id, server_id, |s| {
        s.new_flows += 1;
        s.local_connections += 1;
    });
}
