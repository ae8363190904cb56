//! xdplb's XDP program: full-NAT TCP load balancing at the driver.
//!
//! Per packet: parse (`parse`), classify as a frontend packet, a reply of a tracked flow or
//! anything else (`main`), open flows on SYN (`balance`, `conntrack`), rewrite (`nat`), and send
//! on (`forward`); a SYN that no server can take is answered with a RST (`reset`). Anything that
//! is not ours goes to the kernel untouched. Counters live in `stats`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]
// Keys are passed to map helpers by reference on purpose: no copies on the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod balance;
mod conntrack;
mod forward;
mod maps;
mod nat;
mod parse;
mod reset;
mod stats;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext};
use lb_common::{FlowKey, Reason, FLOW_DIR_CLIENT, FLOW_DIR_SERVER, TCP_ACK, TCP_RST, TCP_SYN};

use crate::parse::{Packet, ParseError};

#[xdp]
pub fn xdplb(ctx: XdpContext) -> u32 {
    let (reason, action) = match try_lb(&ctx) {
        Ok(result) => result,
        Err(ParseError::NotOurs) => (Reason::Passed, xdp_action::XDP_PASS),
        Err(ParseError::Malformed) => (Reason::Malformed, xdp_action::XDP_PASS),
        Err(ParseError::Fragment) => (Reason::Fragment, xdp_action::XDP_PASS),
        Err(ParseError::IpOptions) => (Reason::IpOptions, xdp_action::XDP_PASS),
    };
    stats::count(reason);
    action
}

#[inline(always)]
fn try_lb(ctx: &XdpContext) -> Result<(Reason, u32), ParseError> {
    let pkt = parse::parse(ctx)?;
    let settings = maps::settings().ok_or(ParseError::NotOurs)?;
    let key = pkt.flow_key();
    let now = unsafe { bpf_ktime_get_ns() };

    // Replies come back to the balancer's reserved NAT ports; nothing else uses them.
    let dport = u16::from_be(key.dst_port_be) as u32;
    if dport.wrapping_sub(settings.nat_port_first) < settings.nat_port_count {
        return Ok(match conntrack::lookup(&key) {
            Some((flow, _)) if unsafe { (*flow).direction } == FLOW_DIR_SERVER => {
                conntrack::observe(flow, &pkt, now);
                forward::reply(ctx, &pkt, flow)
            }
            _ => (Reason::Passed, xdp_action::XDP_PASS),
        });
    }

    let Some(frontend) = maps::frontend(key.dst_addr, key.dst_port_be) else {
        return Ok((Reason::Passed, xdp_action::XDP_PASS));
    };
    let is_syn = pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if let Some((flow, half_open)) = conntrack::lookup(&key) {
        let flow_ref = unsafe { &*flow };
        // A fresh SYN on a tuple whose flow is over is a new connection (port reuse).
        if !(is_syn && flow_ref.is_closed()) && flow_ref.direction == FLOW_DIR_CLIENT {
            // The client's ACK completes the handshake: the flow joins the established table.
            let completes = half_open && pkt.tcp_flags & (TCP_ACK | TCP_SYN | TCP_RST) == TCP_ACK;
            let flow = if completes { conntrack::promote(&key, flow).unwrap_or(flow) } else { flow };
            conntrack::observe(flow, &pkt, now);
            return Ok(forward::to_server(ctx, &pkt, flow, now));
        }
        if is_syn {
            conntrack::remove_pair(&key, flow);
        }
    }
    if !is_syn {
        return Ok((Reason::NoFlow, xdp_action::XDP_PASS));
    }
    Ok(open_flow(ctx, &pkt, &key, frontend, settings, now))
}

/// A SYN to a frontend without a flow: pick a server, record both directions, forward.
#[inline(always)]
fn open_flow(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &FlowKey,
    frontend: &lb_common::Frontend,
    settings: &lb_common::Settings,
    now: u64,
) -> (Reason, u32) {
    let Some((server_id, server)) = balance::pick(frontend.pool_id) else {
        return reset::no_backend(ctx, settings);
    };
    match conntrack::open(ctx, pkt, key, frontend, server_id, server, settings, now) {
        Some(flow) => {
            stats::new_flow(frontend.frontend_id, server_id);
            conntrack::observe(flow, pkt, now);
            let (reason, action) = forward::to_server(ctx, pkt, flow, now);
            // The flow is new whatever the next hop did with its first packet.
            if reason == Reason::Forwarded {
                (Reason::NewFlow, action)
            } else {
                (reason, action)
            }
        }
        None => (Reason::TableFull, xdp_action::XDP_DROP),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
