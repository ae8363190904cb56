//! Redispatch: a new flow whose server refuses the SYN (RST) or leaves it unanswered (the client
//! retransmits it) moves to the next server of its pool, so the client's connection succeeds
//! (HAProxy's `retries` with `option redispatch`, done in the data path).
//!
//! - Refused: the server's RST never reaches the client. The flow keeps what its SYN carried
//!   (sequence number, window, MSS, SACK, window scale, timestamp), so the RST's frame is turned
//!   into that SYN, addressed to the next server, and sent at once.
//! - Unanswered: the client's own retransmission (same sequence number, at least
//!   `UNANSWERED_AFTER_NS` after the first, the server having sent nothing at all) goes to the
//!   next server instead. A server that did answer, even with a stale ACK (the TIME_WAIT case),
//!   is alive: that flow stays where it is.
//!
//! Bounded by the pool's `retries`; every refusal or silence also counts towards suspicion.

use aya_ebpf::{
    bindings::{xdp_action, BPF_NOEXIST},
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    Event, FlowKeyOf, FlowOf, Reason, Settings, FLOW_OVER, FLOW_SYN_SACK, FLOW_SYN_TS, FLOW_SYN_WSCALE, TCP_ACK,
    TCP_RST, TCP_SYN,
};
use network_types::tcp::TcpHdr;

use crate::{
    balance, conntrack,
    family::Family,
    forward,
    parse::{self, ptr_at, IpParse, IP_OFF},
    ports, stats, suspicion, Ingress,
};

/// A retransmitted SYN counts as unanswered only this long after the first: every stack waits
/// at least a second before it retransmits a SYN, so anything sooner is a duplicate.
pub const UNANSWERED_AFTER_NS: u64 = 500_000_000;
/// The SYN rebuilt from a RST: TCP with 20 option bytes (after Ethernet and IP headers).
const SYN_TCP_LEN: usize = TcpHdr::LEN + 20;

/// Moves the half-open flow whose client side is `client` (at `key`) and server side `server`
/// (at `client.peer_key()`) to another server of its pool. The new entries are built in scratch
/// space and inserted (the client side replaced whole, in one update); the old server side is
/// removed. Returns the new client side (the scratch copy), or `None` when the flow may not or
/// cannot move (retries used up, no other server, no tuple), and the caller goes on as before.
/// Not inlined: its locals get a frame of their own (the BPF stack limit counts frames along a
/// call chain; inlined into both callers it put them over).
#[inline(never)]
pub fn move_flow<A: Family>(
    key: &FlowKeyOf<A>,
    client: &FlowOf<A>,
    server: &FlowOf<A>,
    settings: &Settings,
    now: u64,
) -> *mut FlowOf<A> {
    match try_move(key, client, server, settings, now) {
        Some(moved) => moved,
        None => core::ptr::null_mut(),
    }
}

#[inline(always)]
fn try_move<A: Family>(
    key: &FlowKeyOf<A>,
    client: &FlowOf<A>,
    server: &FlowOf<A>,
    settings: &Settings,
    now: u64,
) -> Option<&'static mut FlowOf<A>> {
    let old_id = client.server_id;
    let pool = A::servers().get(old_id)?.pool_id;
    let set = balance::set(pool)?;
    suspicion::failed(old_id, set.suspect_after, now);
    if client.redispatches >= set.retries {
        stats::event(Event::RedispatchExhausted);
        return None;
    }
    let Some((new_id, new_server)) = balance::pick::<A>(pool, old_id, now, &key.src_addr) else {
        stats::event(Event::RedispatchExhausted);
        return None;
    };
    let translated = client.ts_off != 0;
    let tuple = ports::allocate(new_id, new_server, settings, now, translated)?;
    let reply_key = tuple.reply_key;
    let scratch = A::scratch();
    let (r, c) = (scratch.get_ptr_mut(0)?, scratch.get_ptr_mut(1)?);
    let (reply_entry, client_entry) = unsafe { (&mut *r, &mut *c) };
    unsafe {
        core::ptr::copy_nonoverlapping(server, reply_entry, 1);
        core::ptr::copy_nonoverlapping(client, client_entry, 1);
    }

    // Timestamps: the new tuple has its own clock; the client has seen no answer yet, so the
    // offset may change (its SYN's own TSval is what it last sent, minus the old offset).
    let tuple_ts = tuple.take(new_server, settings, now, translated);
    if translated {
        let raw = client.ts_last.wrapping_sub(client.ts_off);
        reply_entry.ts_off = tuple_ts.wrapping_sub(raw);
        reply_entry.ts_last = tuple_ts;
        client_entry.ts_off = tuple_ts.wrapping_sub(raw);
        client_entry.ts_last = tuple_ts;
    }

    // The server side: as before (the client's address and next hop), towards the new server.
    reply_entry.server_id = new_id;
    reply_entry.seen = 0;
    reply_entry.isn = 0;
    reply_entry.seq_end = 0;
    reply_entry.max_win = 0;
    reply_entry.wscale = 0;
    reply_entry.packets = 0;
    reply_entry.bytes = 0;
    reply_entry.last_seen_ns = now;
    // The client side: the same client, a new backend-side tuple.
    client_entry.new_src_addr = reply_key.dst_addr;
    client_entry.new_src_port_be = reply_key.dst_port_be;
    client_entry.new_dst_addr = new_server.addr;
    client_entry.new_dst_port_be = new_server.port_be;
    client_entry.server_id = new_id;
    client_entry.redispatches = client.redispatches + 1;
    // Open on the new server (a refusal the old one sent never reached `conntrack::over`).
    let was_over = client.seen & FLOW_OVER != 0;
    client_entry.seen &= !FLOW_OVER;
    client_entry.last_seen_ns = now;

    // `client` and `server` point into the table: what is still needed of them is read before
    // the updates below replace them.
    let old_reply_key = client.peer_key();
    let syn_flows = A::syn_flows();
    syn_flows.insert(&reply_key, &*reply_entry, BPF_NOEXIST as u64).ok()?;
    // One update replaces the client side whole: a lookup on another CPU sees old or new.
    if syn_flows.insert(key, &*client_entry, 0).is_err() {
        let _ = syn_flows.remove(&reply_key);
        return None;
    }
    conntrack::remove(&old_reply_key, true);
    stats::new_flow(client_entry.frontend_id, new_id, 0);
    if !was_over {
        balance::ended(old_id);
    }
    balance::opened(new_id);
    Some(client_entry)
}

/// A RST from the server of a half-open flow (`server` is its server side): its client side if
/// the RST refuses the client's SYN (it acknowledges it, RFC 793, and the server sent no
/// SYN-ACK), so that `move_flow` and `send_syn` send the SYN to the next server in its place;
/// null: the RST goes on as usual. The three steps are functions of their own, called one after
/// the other: nested, their frames went past the BPF stack's 512 bytes.
#[inline(never)]
pub fn refusal<A: IpParse>(i: &Ingress<A>, server: *mut FlowOf<A>) -> *mut FlowOf<A> {
    let no = core::ptr::null_mut();
    let Ok(pkt) = i.packet(&i.ctx()) else { return no };
    let s = unsafe { &*server };
    if s.seen & TCP_SYN != 0 || pkt.tcp_flags & (TCP_RST | TCP_ACK) != TCP_RST | TCP_ACK {
        return no;
    }
    let Some((client, half_open)) = conntrack::peer_of(s) else { return no };
    if !half_open || pkt.ack_seq() != unsafe { (*client).seq_end } {
        return no;
    }
    client
}

/// The frame (the refusing server's RST) becomes the client's SYN to the flow's new server
/// (`moved`, its new client side). The frame changes size here and the old headers are gone:
/// whatever fails drops it (the flow has moved; the client's retransmitted SYN goes the new way).
#[inline(never)]
pub fn send_syn<A: IpParse>(i: &Ingress<A>, moved: *mut FlowOf<A>) -> (Reason, u32) {
    let dropped = (Reason::Redispatched, xdp_action::XDP_DROP);
    let moved = unsafe { &*moved };
    let ctx = &i.ctx();
    if build_syn(ctx, moved).is_err() {
        return dropped;
    }
    let Ok(pkt) = parse::parse::<A>(ctx) else { return dropped };
    forward::deliver_to_server(ctx, pkt.eth, pkt.ip, pkt.ip_len, moved, i.now, Reason::Redispatched)
}

/// The client retransmitted the SYN of a flow (`client`, its client side) its server never
/// answered: returns the flow's server side, for `move_flow` to move the flow to the next
/// server; null: it stays.
#[inline(never)]
pub fn unanswered<A: Family>(i: &Ingress<A>, client: *mut FlowOf<A>) -> *mut FlowOf<A> {
    let stays = core::ptr::null_mut();
    let c = unsafe { &*client };
    if i.now.wrapping_sub(c.created_ns) < UNANSWERED_AFTER_NS {
        return stays;
    }
    let Some((server, _)) = conntrack::peer_of(c) else { return stays };
    if unsafe { (*server).packets } != 0 {
        // It answered something (a stale ACK from TIME_WAIT, say): alive, the flow stays.
        return stays;
    }
    server
}

/// Turns the frame (a RST from the refusing server) into the client's SYN as `flow` now sends
/// it: headers written whole, checksums computed in full.
#[inline(always)]
fn build_syn<A: Family>(ctx: &XdpContext, flow: &FlowOf<A>) -> Result<(), parse::ParseError> {
    // A RST is shorter than the SYN: the room comes from the headroom in front (XDP guarantees
    // 256 bytes there; the tailroom of a small frame may be none, on veth for one). Every header
    // is written anew, so where the old bytes end up does not matter. Anything longer is cut at
    // the tail.
    let len = (ctx.data_end() - ctx.data()) as i32;
    let delta = (A::TCP_OFF + SYN_TCP_LEN) as i32 - len;
    let rc = if delta > 0 {
        unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) }
    } else if delta < 0 {
        unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) }
    } else {
        0
    };
    if rc != 0 {
        return Err(parse::ParseError::Malformed);
    }
    // The Ethernet header too: its type, and the MACs `forward` sets.
    let eth: *mut [u8; 14] = ptr_at(ctx, 0)?;
    let eth = unsafe { &mut *eth };
    eth[12..14].copy_from_slice(&A::ETHERTYPE.to_be_bytes());
    let ip: *mut A::Ip = ptr_at(ctx, IP_OFF)?;
    let tcp: *mut [u8; SYN_TCP_LEN] = ptr_at(ctx, A::TCP_OFF)?;
    let tcp = unsafe { &mut *tcp };
    A::write_header(ip, flow.new_src_addr, flow.new_dst_addr, SYN_TCP_LEN);

    tcp[0..2].copy_from_slice(&flow.new_src_port_be.to_ne_bytes());
    tcp[2..4].copy_from_slice(&flow.new_dst_port_be.to_ne_bytes());
    tcp[4..8].copy_from_slice(&flow.isn.to_be_bytes());
    tcp[8..12].copy_from_slice(&[0; 4]);
    tcp[12] = 10 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&(flow.max_win as u16).to_be_bytes());
    tcp[16..20].copy_from_slice(&[0; 4]);
    // Linux's SYN layout; options the client's SYN did not carry become NOPs.
    const NOP: u8 = 1;
    if flow.syn_mss != 0 {
        let m = flow.syn_mss.to_be_bytes();
        tcp[20..24].copy_from_slice(&[2, 4, m[0], m[1]]);
    } else {
        tcp[20..24].copy_from_slice(&[NOP; 4]);
    }
    tcp[24..26].copy_from_slice(if flow.seen & FLOW_SYN_SACK != 0 { &[4, 2] } else { &[NOP, NOP] });
    if flow.seen & FLOW_SYN_TS != 0 {
        tcp[26..28].copy_from_slice(&[8, 10]);
        tcp[28..32].copy_from_slice(&flow.ts_last.to_be_bytes());
        tcp[32..36].copy_from_slice(&[0; 4]);
    } else {
        tcp[26..36].copy_from_slice(&[NOP; 10]);
    }
    tcp[36] = NOP;
    if flow.seen & FLOW_SYN_WSCALE != 0 {
        tcp[37..40].copy_from_slice(&[3, 3, flow.wscale as u8]);
    } else {
        tcp[37..40].copy_from_slice(&[NOP; 3]);
    }
    let c = A::tcp_checksum(ip, tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    Ok(())
}
