//! Sending a rewritten packet on: towards the server through the kernel's FIB, back to the client
//! through the next hop recorded at SYN time. Same interface: XDP_TX; another: XDP_REDIRECT
//! through `tx_ports`. When the kernel has no neighbour entry yet, the rewritten packet goes to
//! the kernel, which resolves the neighbour and forwards it (the agent enables forwarding and
//! accept_local on the attached interfaces for this).

use core::mem::{size_of, zeroed};

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use lb_common::{Flow, Reason};

use crate::{maps::TX_PORTS, nat, parse::Packet};

const AF_INET: u8 = 2;
const IPPROTO_TCP: u8 = 6;

/// Client -> server: rewrite, then route by the FIB.
#[inline(always)]
pub fn to_server(ctx: &XdpContext, pkt: &Packet, flow: *mut Flow) -> (Reason, u32) {
    let flow = unsafe { &*flow };
    nat::rewrite(pkt, flow);

    let mut fib: FibParams = unsafe { zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = IPPROTO_TCP;
    fib.sport = flow.new_src_port_be;
    fib.dport = flow.new_dst_port_be;
    fib.__bindgen_anon_1.tot_len = pkt.ip_len as u16;
    fib.ifindex = ctx.ingress_ifindex() as u32;
    fib.__bindgen_anon_2.tos = unsafe { (*pkt.ip).tos };
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(flow.new_src_addr);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(flow.new_dst_addr);
    let rc = unsafe {
        bpf_fib_lookup(ctx.ctx as *mut _, &mut fib, size_of::<FibParams>() as i32, 0)
    } as u32;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let eth = unsafe { &mut *pkt.eth };
            eth.dst_addr = fib.dmac;
            eth.src_addr = fib.smac;
            send(ctx, fib.ifindex, Reason::Forwarded)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => (Reason::NoNeighbour, xdp_action::XDP_PASS),
        _ => (Reason::FibFailed, xdp_action::XDP_PASS),
    }
}

/// Server -> client: rewrite, then back to the MAC and interface the SYN came from.
#[inline(always)]
pub fn reply(ctx: &XdpContext, pkt: &Packet, flow: *mut Flow) -> (Reason, u32) {
    let flow = unsafe { &*flow };
    nat::rewrite(pkt, flow);
    let eth = unsafe { &mut *pkt.eth };
    eth.dst_addr = flow.reply_dst_mac;
    eth.src_addr = flow.reply_src_mac;
    send(ctx, flow.reply_ifindex, Reason::Replied)
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
