//! NAT source ports (and source addresses): which backend-side tuple a new flow to a server gets.
//!
//! Each server has a tuple space of `nat_port_count` ports times its source addresses. Every
//! CPU owns an interleaved share of it (index = k * nr_cpus + cpu) and walks its share in order
//! with a per-CPU cursor per server: no cursor is shared between CPUs, two CPUs never race for
//! one tuple, and the tuple handed out is always the one this CPU used longest ago, which gives
//! a server's TIME_WAIT the most time to end. A tuple whose previous flow lingers is taken once
//! the flow is over and its hold has passed (`Flow::port_hold_ns`): a couple of seconds, or the
//! server's whole TIME_WAIT when it closed first without timestamps (translation makes the next
//! SYN acceptable otherwise).

use aya_ebpf::helpers::bpf_get_smp_processor_id;
use lb_common::{Event, Flow, FlowKey, Server, Settings, MAX_SOURCES, NAT_PORT_HOLD_NS, NAT_PORT_TRIES};

use crate::{conntrack, maps::PORT_CURSORS, stats};

/// A backend-side tuple for a new flow to `server`, and the lingering server-side entry of the
/// flow that had it before (if any: the caller replaces it).
pub struct Tuple {
    pub reply_key: FlowKey,
    pub previous: Option<(*mut Flow, bool)>,
}

#[inline(always)]
pub fn allocate(server_id: u32, server: &Server, settings: &Settings, now: u64) -> Option<Tuple> {
    let sources = server.snat_count;
    if settings.nat_port_count == 0 || sources == 0 || sources as usize > MAX_SOURCES {
        return None;
    }
    let total = settings.nat_port_count * sources;
    let (cpu, cpus) = {
        let cpus = settings.nr_cpus;
        let cpu = unsafe { bpf_get_smp_processor_id() };
        // Too few tuples to share out (or an unknown CPU count): one share, walked by all.
        if cpus == 0 || cpu >= cpus || total < cpus {
            (0, 1)
        } else {
            (cpu, cpus)
        }
    };
    let share = if cpus > 1 { total / cpus } else { total };
    if share == 0 {
        return None;
    }
    let cursor = PORT_CURSORS.get_ptr_mut(server_id)?;
    let start = unsafe { *cursor };
    let mut reply_key = FlowKey { src_addr: server.addr, dst_addr: [0; 4], src_port_be: server.port_be, dst_port_be: 0 };
    for t in 0..NAT_PORT_TRIES {
        let k = start.wrapping_add(t) % share;
        let index = k * cpus + cpu;
        // Consecutive indexes alternate source addresses, so each address's ports go in turn.
        let (source, port) = if sources == 1 {
            (0, index)
        } else {
            ((index % sources) as usize & (MAX_SOURCES - 1), index / sources)
        };
        let port = settings.nat_port_first + port;
        reply_key.dst_addr = server.snat_addrs[source];
        reply_key.dst_port_be = (port as u16).to_be();
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
        unsafe { *cursor = k.wrapping_add(1) };
        return Some(Tuple { reply_key, previous });
    }
    // Start the next SYN past the ones looked at, so that busy tuples do not block a share.
    unsafe { *cursor = start.wrapping_add(NAT_PORT_TRIES) % share };
    None
}
