//! The connection table: two LRU entries per flow (client side and server side), kept up to date
//! per packet. A SYN opens a flow in the half-open table (`syn_flows`); the client's first ACK
//! promotes it to the established table (`flows`). A SYN flood thus only churns half-open
//! flows and can never evict an established one, however quiet. Expiry (idle, half-open, linger
//! after close) is the agent's job: it reads both entries and removes whole flows.

use core::intrinsics::{atomic_or, AtomicOrdering};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_get_prandom_u32,
    programs::XdpContext,
};
use lb_common::{
    Flow, FlowKey, Frontend, Server, Settings, FLOW_DIR_CLIENT, FLOW_DIR_SERVER, FLOW_SEEN_ESTABLISHED,
    FLOW_SEEN_PEER_FIN, FLOW_SEEN_PEER_RST, NAT_PORT_REUSE_NS, NAT_PORT_TRIES, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

use crate::{
    maps::{FLOWS, SYN_FLOWS},
    parse::Packet,
    stats,
};

/// A flow entry and whether it is still half-open.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<(*mut Flow, bool)> {
    match FLOWS.get_ptr_mut(key) {
        Some(f) => Some((f, false)),
        None => SYN_FLOWS.get_ptr_mut(key).map(|f| (f, true)),
    }
}

/// Moves a flow whose handshake just completed from the half-open table to the established
/// one; returns its client-side entry there (or `None`, and the flow stays half-open).
#[inline(always)]
pub fn promote(key: &FlowKey, flow: *mut Flow) -> Option<*mut Flow> {
    let client = unsafe { *flow };
    let peer_key = client.peer_key();
    let server = unsafe { *SYN_FLOWS.get_ptr(&peer_key)? };
    if server.created_ns != client.created_ns {
        return None;
    }
    FLOWS.insert(&peer_key, &server, BPF_ANY as u64).ok()?;
    if FLOWS.insert(key, &client, BPF_ANY as u64).is_err() {
        let _ = FLOWS.remove(&peer_key);
        return None;
    }
    let _ = SYN_FLOWS.remove(&peer_key);
    let _ = SYN_FLOWS.remove(key);
    FLOWS.get_ptr_mut(key)
}

/// Sets `bits` in `seen` atomically: the other direction's CPU may be setting its own bits in
/// the same word at the same time (a plain read-modify-write lost a peer's FIN in testing).
#[inline(always)]
fn mark(seen: *mut u32, bits: u32) {
    // SeqCst for the same reason as the round-robin cursor (see `balance`).
    unsafe { atomic_or::<u32, u32, { AtomicOrdering::SeqCst }>(seen, bits) };
}

/// Records a packet of this entry's direction: flags, time, counters; passes FIN/RST on to the
/// other entry so that either one tells whether the flow is over.
#[inline(always)]
pub fn observe(flow: *mut Flow, pkt: &Packet, now: u64) {
    let f = unsafe { &mut *flow };
    let flags = pkt.tcp_flags & 0xff;
    let mut bits = flags;
    if f.direction == FLOW_DIR_CLIENT && flags & (TCP_ACK | TCP_SYN) == TCP_ACK {
        bits |= FLOW_SEEN_ESTABLISHED;
    }
    // Most packets add nothing new: no atomic operation for them.
    if bits & !f.seen != 0 {
        mark(&mut f.seen, bits);
    }
    if flags & (TCP_FIN | TCP_RST) != 0 {
        // Only this flow's own peer: a late FIN or RST of a finished flow must not mark a newer
        // flow that took over the tuple (both entries of a flow share their creation time).
        if let Some((peer, _)) = lookup(&f.peer_key()).filter(|(p, _)| unsafe { (**p).created_ns } == f.created_ns) {
            let peer = unsafe { &mut *peer };
            mark(&mut peer.seen, (flags & (TCP_FIN | TCP_RST)) << 12);
            // A server that answers the SYN with RST refused the connection (observe layer4).
            if f.direction == FLOW_DIR_SERVER && flags & TCP_RST != 0 && peer.seen & FLOW_SEEN_ESTABLISHED == 0 {
                stats::syn_rst(f.server_id);
            }
        }
    }
    f.last_seen_ns = now;
    f.packets += 1;
    f.bytes += pkt.ip_len as u64;
    stats::packet(f.frontend_id, f.server_id, f.direction == FLOW_DIR_CLIENT, pkt.ip_len as u64);
}

/// Removes a finished flow's two entries so that a new SYN on the same tuple starts afresh.
/// Each key goes only while it still holds this flow: the peer's tuple may already belong to a
/// newer flow (a client reusing its port while the old flow lingers), which must stay.
#[inline(always)]
pub fn remove_pair(key: &FlowKey, flow: *mut Flow) {
    let (peer, created) = unsafe { ((*flow).peer_key(), (*flow).created_ns) };
    for k in [&peer, key] {
        if let Some((f, half_open)) = lookup(k) {
            if unsafe { (*f).created_ns } == created {
                let _ = if half_open { SYN_FLOWS.remove(k) } else { FLOWS.remove(k) };
            }
        }
    }
}

/// A lingering flow whose port a new flow may take (see `NAT_PORT_REUSE_NS`).
#[inline(always)]
fn reusable(flow: *mut Flow, now: u64) -> bool {
    let f = unsafe { &*flow };
    f.is_closed() && now.wrapping_sub(f.last_seen_ns) > NAT_PORT_REUSE_NS
}

/// Opens a flow for a SYN: a free NAT source port towards `server`, the server-side entry
/// (with the client's next hop for the replies), then the client-side entry.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn open(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &FlowKey,
    frontend: &Frontend,
    server_id: u32,
    server: &Server,
    settings: &Settings,
    now: u64,
) -> Option<*mut Flow> {
    if settings.nat_port_count == 0 {
        return None;
    }
    // Random start, linear probe: no shared cursor to contend on, bounded tries.
    let start = unsafe { bpf_get_prandom_u32() } % settings.nat_port_count;
    let mut reply_key =
        FlowKey { src_addr: server.addr, dst_addr: server.snat_addr, src_port_be: server.port_be, dst_port_be: 0 };
    let mut found = false;
    for i in 0..NAT_PORT_TRIES {
        let port = settings.nat_port_first + (start + i) % settings.nat_port_count;
        reply_key.dst_port_be = (port as u16).to_be();
        match lookup(&reply_key) {
            None => {
                found = true;
                break;
            }
            Some((old, _)) if reusable(old, now) => {
                remove_pair(&reply_key, old);
                found = true;
                break;
            }
            Some(_) => {}
        }
    }
    if !found {
        return None;
    }

    let (client_mac, our_mac) = unsafe { ((*pkt.eth).src_addr, (*pkt.eth).dst_addr) };
    let reply = Flow {
        new_src_addr: key.dst_addr,
        new_dst_addr: key.src_addr,
        new_src_port_be: key.dst_port_be,
        new_dst_port_be: key.src_port_be,
        direction: FLOW_DIR_SERVER,
        server_id,
        frontend_id: frontend.frontend_id,
        next_hop_dst_mac: client_mac,
        next_hop_src_mac: our_mac,
        next_hop_ifindex: ctx.ingress_ifindex() as u32,
        created_ns: now,
        last_seen_ns: now,
        ..Flow::default()
    };
    SYN_FLOWS.insert(&reply_key, &reply, BPF_NOEXIST as u64).ok()?;
    let forward = Flow {
        new_src_addr: server.snat_addr,
        new_dst_addr: server.addr,
        new_src_port_be: reply_key.dst_port_be,
        new_dst_port_be: server.port_be,
        direction: FLOW_DIR_CLIENT,
        server_id,
        frontend_id: frontend.frontend_id,
        created_ns: now,
        last_seen_ns: now,
        ..Flow::default()
    };
    if SYN_FLOWS.insert(key, &forward, BPF_ANY as u64).is_err() {
        let _ = SYN_FLOWS.remove(&reply_key);
        return None;
    }
    SYN_FLOWS.get_ptr_mut(key)
}

// The flag values are the TCP header's; `seen` keeps the peer's at bit 12 and up.
const _: () = assert!(FLOW_SEEN_PEER_FIN == TCP_FIN << 12 && FLOW_SEEN_PEER_RST == TCP_RST << 12);
