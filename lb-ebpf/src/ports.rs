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

use lb_common::{
    Event, Flow, FlowKey, PortCursor, Server, Settings, MAX_SOURCES, NAT_PORT_HOLD_NS, NAT_PORT_TRIES, PORT_BLOCK,
};

use crate::{
    conntrack,
    maps::{PORT_BLOCKS, PORT_CURSORS},
    stats,
};

/// A backend-side tuple for a new flow to `server`, and the lingering server-side entry of the
/// flow that had it before (if any: the caller replaces it).
pub struct Tuple {
    pub reply_key: FlowKey,
    pub previous: Option<(*mut Flow, bool)>,
}

/// `timestamps`: the SYN's timestamps are translated; it takes a tuple from the ports for such
/// SYNs, otherwise from the ports for SYNs without (`Settings::no_ts_ports`).
#[inline(always)]
pub fn allocate(server_id: u32, server: &Server, settings: &Settings, now: u64, timestamps: bool) -> Option<Tuple> {
    let sources = server.snat_count;
    // No upper bound is checked here on purpose: the compiler would then know `index % sources`
    // is below MAX_SOURCES and drop the mask below, which the verifier needs to see. The agent
    // never writes more than MAX_SOURCES; the mask keeps a bad count in bounds.
    if sources == 0 || settings.no_ts_ports >= settings.nat_port_count && settings.no_ts_ports != 0 {
        return None;
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
        return None;
    }
    let slot = server_id * 2 + region;
    let cursor = unsafe { &mut *PORT_CURSORS.get_ptr_mut(slot)? };
    let next_block = PORT_BLOCKS.get_ptr_mut(slot)?;
    let mut reply_key =
        FlowKey { src_addr: server.addr, dst_addr: [0; 4], src_port_be: server.port_be, dst_port_be: 0 };
    for _ in 0..NAT_PORT_TRIES {
        if cursor.left == 0 {
            // SeqCst for the reason given in `balance`.
            let n = unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(next_block, 1) };
            cursor.next = (n % blocks) * PORT_BLOCK;
            cursor.left = PORT_BLOCK;
        }
        let index = cursor.next;
        cursor.next += 1;
        cursor.left -= 1;
        if index >= total {
            // The last block is cut short by the end of the space: take the next one now.
            cursor.left = 0;
            continue;
        }
        // Consecutive indexes alternate source addresses, so each address's ports go in turn.
        let (source, port) =
            if sources == 1 { (0, index) } else { ((index % sources) as usize & (MAX_SOURCES - 1), index / sources) };
        reply_key.dst_addr = server.snat_addrs[source];
        reply_key.dst_port_be = ((first_port + port) as u16).to_be();
        let previous = match conntrack::lookup(&reply_key) {
            None => None,
            Some((old, half_open)) => {
                let f = unsafe { &*old };
                match f.port_hold_ns(settings.time_wait_ns) {
                    Some(hold) if now.wrapping_sub(f.last_seen_ns) > hold => Some((old, half_open)),
                    Some(hold) if hold > NAT_PORT_HOLD_NS => {
                        stats::event(Event::PortHeld);
                        continue;
                    }
                    _ => {
                        stats::event(Event::PortBusy);
                        continue;
                    }
                }
            }
        };
        return Some(Tuple { reply_key, previous });
    }
    None
}
