//! Sending a rewritten packet on: towards the server through the kernel's FIB (its answer cached
//! per server, so a new flow costs no FIB lookup), back to the client through the next hop
//! recorded at SYN time (or, for a flow a peer balancer synced, the FIB's answer, once). Same interface:
//! XDP_TX; another: XDP_REDIRECT through `tx_ports`. When the kernel has no neighbour entry yet,
//! the rewritten packet goes to the kernel, which resolves the neighbour and forwards it (the
//! agent enables forwarding and accept_local on the attached interfaces for this).

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        bpf_check_mtu_ret::BPF_MTU_CHK_RET_FRAG_NEEDED, bpf_fib_lookup as FibParams, xdp_action,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::{bpf_check_mtu, bpf_fib_lookup},
    programs::XdpContext,
};
use lb_common::{FlowOf, NextHopOf, Reason, FLOW_LOCAL, NEXT_HOP_REFRESH_NS};
use network_types::eth::EthHdr;

use crate::{
    family::Family,
    icmp,
    maps::{FIB_PARAMS, TX_PORTS},
    nat,
    parse::Packet,
};

const IPPROTO_TCP: u8 = 6;

/// Client -> server: rewrite, then to the FIB's next hop for the server (cached per server,
/// asked again every `NEXT_HOP_REFRESH_NS`).
#[inline(always)]
pub fn to_server<A: Family>(ctx: &XdpContext, pkt: &Packet<A>, flow: *mut FlowOf<A>, now: u64) -> (Reason, u32) {
    let flow = unsafe { &*flow };
    // The way out as last known (a flow's first packet, a SYN, is small enough anyway).
    let egress = match A::next_hops().get(flow.server_id) {
        Some(hop) if flow.seen & FLOW_LOCAL == 0 => hop.ifindex,
        _ => 0,
    };
    if let Some(action) = rewrite_within_mtu(ctx, pkt, flow, egress) {
        return (Reason::TooBig, action);
    }
    deliver_to_server(ctx, pkt.eth, pkt.ip, pkt.ip_len, flow, now, Reason::Forwarded)
}

/// Rewrites the packet as `flow` says if it fits `egress`, its way out: `None`, it goes on.
/// Otherwise the action for it (counted `too_big`): a frag-needed for its sender (DF), or the
/// kernel, which fragments it (rewritten).
#[inline(always)]
fn rewrite_within_mtu<A: Family>(ctx: &XdpContext, pkt: &Packet<A>, flow: &FlowOf<A>, egress: u32) -> Option<u32> {
    match fits(ctx, pkt, egress) {
        Fits::AnswerFragNeeded(mtu) => return Some(icmp::frag_needed_action(mtu)),
        Fits::KernelFragments => {
            nat::rewrite(pkt, flow);
            return Some(xdp_action::XDP_PASS);
        }
        Fits::Yes => nat::rewrite(pkt, flow),
    }
    None
}

/// What a packet bigger than its way out gets (see `fits`).
enum Fits {
    Yes,
    /// DF set (IPv6: always): the sender is told the MTU of the way out (`icmp::frag_needed`,
    /// `icmp6::packet_too_big`).
    AnswerFragNeeded(u32),
    /// DF clear: rewritten and handed to the kernel, which fragments it.
    KernelFragments,
}

/// Whether the packet fits the MTU of `ifindex`, the interface it leaves by; 0 (not known yet)
/// and the interface it came in on (it fitted there) are not asked. XDP cannot fragment, and a
/// redirected frame over the MTU is dropped without a word. IPv6 is never fragmented on the way:
/// its sender gets a packet-too-big (`icmp6::packet_too_big`), as IPv4's with DF a frag-needed.
#[inline(always)]
fn fits<A: Family>(ctx: &XdpContext, pkt: &Packet<A>, ifindex: u32) -> Fits {
    if ifindex == 0 || ifindex == ctx.ingress_ifindex() as u32 {
        return Fits::Yes;
    }
    let mut mtu_len = pkt.ip_len;
    let rc = unsafe { bpf_check_mtu(ctx.ctx as *mut _, ifindex, &mut mtu_len, 0, 0) };
    if rc as u32 != BPF_MTU_CHK_RET_FRAG_NEEDED {
        return Fits::Yes;
    }
    if A::may_fragment(pkt.ip) {
        Fits::KernelFragments
    } else {
        Fits::AnswerFragNeeded(mtu_len)
    }
}

/// A packet (its Ethernet and IP headers, `ip_len` bytes of IP) already addressed to `flow`'s
/// server: its MACs and the way out.
#[inline(always)]
pub fn deliver_to_server<A: Family>(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *const A::Ip,
    ip_len: u32,
    flow: &FlowOf<A>,
    now: u64,
    reason: Reason,
) -> (Reason, u32) {
    // A server on this host: the kernel delivers it (the FIB would say "local", not a hop).
    if flow.seen & FLOW_LOCAL != 0 {
        return (reason, xdp_action::XDP_PASS);
    }
    let Some(hop) = A::next_hops().get_ptr_mut(flow.server_id) else {
        return (Reason::FibFailed, xdp_action::XDP_PASS);
    };
    // Several CPUs may refresh one server's entry at once: they write the same answer.
    let hop = unsafe { &mut *hop };
    if hop.ifindex == 0 || hop.addr != flow.new_dst_addr || stale(now, hop.checked_ns) {
        if let Err(reason) = lookup_next_hop(ctx, ip, ip_len, flow, hop, now) {
            return (reason, xdp_action::XDP_PASS);
        }
    }
    let eth = unsafe { &mut *eth };
    eth.dst_addr = hop.dst_mac;
    eth.src_addr = hop.src_mac;
    send(ctx, hop.ifindex, reason)
}

/// Whether an answer from `checked_ns` is due for asking again at `now`. Signed: `now` may be
/// the coarse clock, a tick behind the precise one an answer was stamped with.
#[inline(always)]
fn stale(now: u64, checked_ns: u64) -> bool {
    now.wrapping_sub(checked_ns) as i64 > NEXT_HOP_REFRESH_NS as i64
}

/// Asks the kernel's FIB (and neighbour table) where the server is; records it for the server.
#[inline(always)]
fn lookup_next_hop<A: Family>(
    ctx: &XdpContext,
    ip: *const A::Ip,
    ip_len: u32,
    flow: &FlowOf<A>,
    hop: &mut NextHopOf<A>,
    now: u64,
) -> Result<(), Reason> {
    let fib = fib_lookup(ctx, ip, ip_len, flow)?;
    hop.dst_mac = fib.dmac;
    hop.src_mac = fib.smac;
    hop.ifindex = fib.ifindex;
    hop.addr = flow.new_dst_addr;
    hop.checked_ns = now;
    Ok(())
}

/// The kernel's FIB (and neighbour table) answer for a packet (its IP header) rewritten by
/// `flow`. The helper's 64-byte parameters live in per-CPU scratch space, not on the 512-byte
/// stack.
#[inline(always)]
fn fib_lookup<A: Family>(
    ctx: &XdpContext,
    ip: *const A::Ip,
    ip_len: u32,
    flow: &FlowOf<A>,
) -> Result<&'static FibParams, Reason> {
    let fib = FIB_PARAMS.get_ptr_mut(0).ok_or(Reason::FibFailed)?;
    let fib = unsafe {
        core::ptr::write_bytes(fib, 0, 1);
        &mut *fib
    };
    fib.l4_protocol = IPPROTO_TCP;
    fib.sport = flow.new_src_port_be;
    fib.dport = flow.new_dst_port_be;
    fib.ifindex = ctx.ingress_ifindex() as u32;
    A::fib(fib, ip, ip_len, &flow.new_src_addr, &flow.new_dst_addr);
    let rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, fib, size_of::<FibParams>() as i32, 0) } as u32;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(fib),
        // The kernel forwards the rewritten packet and resolves the neighbour meanwhile.
        BPF_FIB_LKUP_RET_NO_NEIGH => Err(Reason::NoNeighbour),
        _ => Err(Reason::FibFailed),
    }
}

/// Server -> client: rewrite, then back to the MAC and interface the SYN came from.
#[inline(always)]
pub fn reply<A: Family>(ctx: &XdpContext, pkt: &Packet<A>, flow: *mut FlowOf<A>) -> (Reason, u32) {
    let flow = unsafe { &mut *flow };
    let egress = flow.next_hop_ifindex;
    if let Some(action) = rewrite_within_mtu(ctx, pkt, flow, egress) {
        return (Reason::TooBig, action);
    }
    deliver_to_client(ctx, pkt.eth, pkt.ip, pkt.ip_len, flow, Reason::Replied)
}

/// A packet (its Ethernet and IPv4 headers) already addressed to the client of `flow` (its
/// server side): the MACs and interface its SYN came from. A flow a peer balancer synced has
/// no way back recorded on this host yet: the FIB's, once.
#[inline(always)]
pub fn deliver_to_client<A: Family>(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *const A::Ip,
    ip_len: u32,
    flow: &mut FlowOf<A>,
    reason: Reason,
) -> (Reason, u32) {
    if flow.next_hop_ifindex == 0 {
        match fib_lookup(ctx, ip, ip_len, flow) {
            Ok(fib) => {
                flow.next_hop_dst_mac = fib.dmac;
                flow.next_hop_src_mac = fib.smac;
                flow.next_hop_ifindex = fib.ifindex;
            }
            Err(reason) => return (reason, xdp_action::XDP_PASS),
        }
    }
    let eth = unsafe { &mut *eth };
    eth.dst_addr = flow.next_hop_dst_mac;
    eth.src_addr = flow.next_hop_src_mac;
    send(ctx, flow.next_hop_ifindex, reason)
}

#[inline(always)]
fn send(ctx: &XdpContext, ifindex: u32, reason: Reason) -> (Reason, u32) {
    if ifindex == ctx.ingress_ifindex() as u32 {
        return (reason, xdp_action::XDP_TX);
    }
    match TX_PORTS.redirect(ifindex, 0) {
        Ok(action) => (reason, action),
        // Not an interface we may redirect to: let the kernel forward the rewritten packet.
        Err(_) => (Reason::RedirectFailed, xdp_action::XDP_PASS),
    }
}
