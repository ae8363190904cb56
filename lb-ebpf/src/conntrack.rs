//! The connection table: two LRU entries per flow (client side and server side), kept up to date
//! per packet. A SYN opens a flow in the half-open table (`syn_flows`); the client's ACK of the
//! server's SYN-ACK promotes it to the established table (`flows`). A SYN flood thus only churns
//! half-open flows and can never evict an established one, however quiet. Expiry (idle,
//! half-open, linger after close) is the agent's job: it reads both entries and removes flows.
//!
//! TCP is tracked exactly enough to trust what closes a flow: each side's sequence space and
//! largest window, so that a RST or FIN counts only inside the window (a blind RST does not
//! close a live etcd watch), and who closed first (a server that did holds the tuple in
//! TIME_WAIT, which decides when its NAT port may be used again, see `ports`).

use core::intrinsics::{atomic_and, atomic_or, AtomicOrdering};

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use lb_common::{
    tcp::{after, in_window, MAX_WINDOW},
    Event, FlowKeyOf, FlowOf, FLOW_DIR_CLIENT, FLOW_DIR_SERVER, FLOW_OVER, FLOW_SEEN_CLOSED_FIRST,
    FLOW_SEEN_ESTABLISHED, FLOW_SEEN_PEER_FIN, FLOW_SEEN_PEER_RST, FLOW_SEEN_TS, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

use network_types::eth::EthHdr;

use crate::{balance, family::Family, parse::Packet, stats, suspicion};

/// A flow entry and whether it is still half-open.
#[inline(always)]
pub fn lookup<A: Family>(key: &FlowKeyOf<A>) -> Option<(*mut FlowOf<A>, bool)> {
    match A::flows().get_ptr_mut(key) {
        Some(f) => Some((f, false)),
        None => A::syn_flows().get_ptr_mut(key).map(|f| (f, true)),
    }
}

/// `lookup` for a packet that should have a flow. A promotion on another CPU inserts the flow
/// into `flows` before it removes it from `syn_flows`, so a packet that looked in `flows` just
/// before and in `syn_flows` just after finds it in neither: one more look in `flows` closes
/// that window (it costs nothing on the hit path).
#[inline(always)]
pub fn lookup_settled<A: Family>(key: &FlowKeyOf<A>) -> Option<(*mut FlowOf<A>, bool)> {
    lookup(key).or_else(|| A::flows().get_ptr_mut(key).map(|f| (f, false)))
}

/// The other direction's entry of `f`, if it still belongs to `f`'s flow (both entries of a
/// flow share their creation time; a newer flow may have taken either tuple since).
#[inline(always)]
pub fn peer_of<A: Family>(f: &FlowOf<A>) -> Option<(*mut FlowOf<A>, bool)> {
    lookup(&f.peer_key()).filter(|(p, _)| unsafe { (**p).created_ns } == f.created_ns)
}

/// Why a client ACK did not complete the handshake.
pub enum NotPromoted {
    /// It does not acknowledge the server's SYN-ACK (or none was seen): a spoofed or stray ACK.
    NotAcked,
    /// The table refused the move; the flow stays half-open and the next ACK tries again.
    Table,
}

/// Moves a flow whose handshake just completed (`pkt` acknowledges the server's SYN-ACK) from
/// the half-open table to the established one; returns its client-side entry there. Not
/// inlined: once per flow, and its keys (IPv6's are 36 bytes) get a frame of their own.
#[inline(never)]
pub fn promote<A: Family>(
    key: &FlowKeyOf<A>,
    flow: *mut FlowOf<A>,
    pkt: &Packet<A>,
) -> Result<*mut FlowOf<A>, NotPromoted> {
    let client = unsafe { &mut *flow };
    let peer_key = client.peer_key();
    let server = A::syn_flows().get_ptr_mut(&peer_key).ok_or(NotPromoted::NotAcked)?;
    let server = unsafe { &mut *server };
    if server.created_ns != client.created_ns
        || server.seen & (TCP_SYN | TCP_ACK) != TCP_SYN | TCP_ACK
        || pkt.ack_seq() != server.seq_end
    {
        return Err(NotPromoted::NotAcked);
    }
    mark(&mut client.seen, FLOW_SEEN_ESTABLISHED);
    mark(&mut server.seen, FLOW_SEEN_ESTABLISHED);
    // Insert before remove: a lookup on another CPU finds the flow in one table or the other.
    // The values are copied by the helper straight from the half-open entries.
    let (flows, syn_flows) = (A::flows(), A::syn_flows());
    flows.insert(&peer_key, &*server, BPF_ANY as u64).map_err(|_| NotPromoted::Table)?;
    if flows.insert(key, &*client, BPF_ANY as u64).is_err() {
        let _ = flows.remove(&peer_key);
        return Err(NotPromoted::Table);
    }
    let _ = syn_flows.remove(&peer_key);
    let _ = syn_flows.remove(key);
    flows.get_ptr_mut(key).ok_or(NotPromoted::Table)
}

/// Sets `bits` in `seen` atomically: the other direction's CPU may be setting its own bits in
/// the same word at the same time (a plain read-modify-write lost a peer's FIN in testing).
#[inline(always)]
fn mark(seen: *mut u32, bits: u32) {
    // SeqCst for the same reason as the round-robin cursor (see `balance`).
    unsafe { atomic_or::<u32, u32, { AtomicOrdering::SeqCst }>(seen, bits) };
}

#[inline(always)]
fn unmark(seen: *mut u32, bits: u32) {
    unsafe { atomic_and::<u32, u32, { AtomicOrdering::SeqCst }>(seen, !bits) };
}

/// Records a packet of this entry's direction: sequence space, window, flags, time, counters.
/// A FIN or RST counts only inside the window the peer advertised; it is then passed on to the
/// peer's entry too, so that either entry tells whether the flow is over. `wscale` is the
/// option of a SYN (see `options`), `ts` whether the packet carries timestamps that are being
/// translated. True when this packet ended the flow (the first to: see `over`).
#[inline(always)]
pub fn observe<A: Family>(flow: *mut FlowOf<A>, pkt: &Packet<A>, wscale: Option<u32>, ts: bool, now: u64) -> bool {
    let f = unsafe { &mut *flow };
    let flags = pkt.tcp_flags & 0xff;
    let mut bits = flags & !(TCP_FIN | TCP_RST);
    let seq = pkt.seq();
    let first_syn = flags & TCP_SYN != 0 && f.seen & TCP_SYN == 0;
    // A RST carries no data, and a FIN outside the window is not believed: neither moves the
    // sequence space.
    let mut moves = flags & TCP_RST == 0;
    let mut ended = false;
    if flags & (TCP_FIN | TCP_RST) != 0 {
        let accepted = judge_close(f, pkt.ack_seq(), seq, flags);
        ended = accepted & ENDED != 0;
        moves &= flags & TCP_FIN == 0 || accepted & TCP_FIN != 0;
        bits |= accepted & !ENDED;
    }
    // This side's sequence space: its SYN starts it; later segments push its end forward (by
    // at most a plausible amount, so that one injected segment cannot move the window away).
    let end = pkt.seq_end();
    if !moves {
    } else if first_syn {
        f.isn = seq;
        f.seq_end = end;
        f.wscale = wscale.unwrap_or(0);
        if f.direction == FLOW_DIR_SERVER {
            if ts {
                bits |= FLOW_SEEN_TS;
            }
            // The server answered a SYN: no longer a streak of refusals or silence.
            suspicion::answered(f.server_id);
        }
    } else if after(end, f.seq_end) && end.wrapping_sub(f.seq_end) <= MAX_WINDOW {
        f.seq_end = end;
    }
    // A SYN's window is never scaled (RFC 7323).
    let shift = if flags & TCP_SYN != 0 { 0 } else { f.wscale & 0x0f };
    let win = pkt.window() << shift;
    if win > f.max_win {
        f.max_win = win;
    }
    // Most packets add no flag: no atomic operation for them.
    if bits & !f.seen != 0 {
        mark(&mut f.seen, bits);
    }
    f.last_seen_ns = now;
    f.packets += 1;
    f.bytes += pkt.ip_len as u64;
    stats::packet(f.frontend_id, f.server_id, f.direction == FLOW_DIR_CLIENT, pkt.ip_len as u64);
    ended
}

/// Whether this FIN/RST (sequence number `seq`, acknowledging `ack_seq`) closes (half of) the
/// flow: the `seen` bits to record for it. Marks the peer's entry when it does. Not inlined:
/// only FIN and RST get here, and its peer lookup gets a frame of its own (IPv6's stages need
/// the room). Scalars only: packet pointers do not survive a call on the stack.
#[inline(never)]
fn judge_close<A: Family>(f: &mut FlowOf<A>, ack_seq: u32, seq: u32, flags: u32) -> u32 {
    // Only this flow's own peer: a late FIN or RST of a finished flow must not mark a newer
    // flow that took over the tuple.
    let Some((peer, _)) = peer_of(f) else { return flags & (TCP_FIN | TCP_RST) };
    let peer = unsafe { &mut *peer };
    let mut accepted = 0;
    if flags & TCP_RST != 0 {
        let ok = if f.direction == FLOW_DIR_SERVER && f.seen & TCP_SYN == 0 {
            // The server refuses our SYN: RFC 793 takes the RST if it acknowledges the SYN.
            flags & TCP_ACK != 0 && ack_seq == peer.seq_end
        } else {
            in_window(seq, f.seq_end, peer.max_win)
        };
        if ok {
            accepted |= TCP_RST;
            // A server that answers the SYN with RST refused the connection (observe layer4).
            if f.direction == FLOW_DIR_SERVER && peer.seen & FLOW_SEEN_ESTABLISHED == 0 {
                stats::syn_rst(f.server_id);
            }
        } else {
            stats::event(Event::RstOutOfWindow);
        }
    }
    if flags & TCP_FIN != 0 {
        if in_window(seq, f.seq_end, peer.max_win) {
            accepted |= TCP_FIN;
            if peer.seen & TCP_FIN == 0 && f.seen & FLOW_SEEN_PEER_FIN == 0 {
                accepted |= FLOW_SEEN_CLOSED_FIRST;
            }
        } else {
            stats::event(Event::FinOutOfWindow);
        }
    }
    if accepted & (TCP_FIN | TCP_RST) != 0 {
        mark(&mut peer.seen, (accepted & (TCP_FIN | TCP_RST)) << 12);
    }
    // Over: a RST, or this FIN after the peer's.
    if accepted & TCP_RST != 0 || (accepted & TCP_FIN != 0 && f.seen & FLOW_SEEN_PEER_FIN != 0) {
        let client = if f.direction == FLOW_DIR_CLIENT { f } else { peer };
        if over(client) {
            accepted |= ENDED;
        }
    }
    accepted
}

/// In `judge_close`'s answer (never a `seen` bit): this packet ended the flow.
const ENDED: u32 = 1 << 31;

/// The flow whose client side is `client` is over: its server has one open flow less, counted
/// once whichever packet (on whichever CPU) gets here first. Whether this one did.
#[inline(always)]
fn over<A>(client: &mut FlowOf<A>) -> bool {
    let before = unsafe { atomic_or::<u32, u32, { AtomicOrdering::SeqCst }>(&mut client.seen, FLOW_OVER) };
    if before & FLOW_OVER == 0 {
        balance::ended(client.server_id);
        return true;
    }
    false
}

/// A client retransmitting the SYN of a half-open flow after its own RST (it answered a stale
/// ACK of the server's, the PAWS case): the flow is opened again as it was, same server and NAT
/// port, which the RST just cleaned on the server.
#[inline(always)]
pub fn reopen<A: Family>(flow: *mut FlowOf<A>) {
    let f = unsafe { &mut *flow };
    if let Some((peer, _)) = peer_of(f) {
        unmark(unsafe { &mut (*peer).seen }, TCP_RST | FLOW_SEEN_PEER_RST);
    }
    let before = unsafe {
        atomic_and::<u32, u32, { AtomicOrdering::SeqCst }>(&mut f.seen, !(TCP_RST | FLOW_SEEN_PEER_RST | FLOW_OVER))
    };
    // The client's RST ended it (see `over`): open again.
    if before & FLOW_OVER != 0 {
        balance::opened(f.server_id);
    }
}

/// The client side `client` of a flow saw a packet come in from another MAC (`eth`'s source)
/// or interface than its last: both sides record the new way, so that replies take it.
#[inline(always)]
pub fn way_in_moved<A: Family>(client: &mut FlowOf<A>, eth: &EthHdr, ifindex: u32) {
    let (from, ours) = (eth.src_addr, eth.dst_addr);
    (client.next_hop_dst_mac, client.next_hop_src_mac, client.next_hop_ifindex) = (from, ours, ifindex);
    if let Some((server, _)) = peer_of(client) {
        let s = unsafe { &mut *server };
        (s.next_hop_dst_mac, s.next_hop_src_mac, s.next_hop_ifindex) = (from, ours, ifindex);
    }
    stats::event(Event::ReplyHopMoved);
}

/// Removes an entry from whichever table holds it (a newer flow is about to take its key).
#[inline(always)]
pub fn remove<A: Family>(key: &FlowKeyOf<A>, half_open: bool) {
    let _ = if half_open { A::syn_flows().remove(key) } else { A::flows().remove(key) };
}

/// Inserts a new flow's two entries into the half-open table; false if the table refused.
/// `reply` goes first: once the client side is visible, the reply path works.
#[inline(always)]
pub fn insert<A: Family>(reply_key: &FlowKeyOf<A>, reply: &FlowOf<A>, key: &FlowKeyOf<A>, forward: &FlowOf<A>) -> bool {
    let syn_flows = A::syn_flows();
    if syn_flows.insert(reply_key, reply, BPF_NOEXIST as u64).is_err() {
        return false;
    }
    if syn_flows.insert(key, forward, BPF_ANY as u64).is_err() {
        let _ = syn_flows.remove(reply_key);
        return false;
    }
    true
}

// The flag values are the TCP header's; `seen` keeps the peer's at bit 12 and up.
const _: () = assert!(FLOW_SEEN_PEER_FIN == TCP_FIN << 12 && FLOW_SEEN_PEER_RST == TCP_RST << 12);
