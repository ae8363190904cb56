//! IPv6: the same stages as IPv4's (generic over the family, see `family`), each in a program
//! of its own. IPv6's 36-byte keys and 16-byte addresses make every frame bigger, and a chain
//! of them (classifier, stage, rewrite, port walk) does not fit the BPF stack's 512 bytes; a
//! tail call starts a program with an empty stack. So `xdplb` hands an IPv6 frame to `xdplb6`,
//! which classifies it as IPv4's `try_lb` does and hands it to the stage it needs
//! (`xdplb6_to_server`, `xdplb6_reply`, `xdplb6_open` then `xdplb6_record`); each stage reads
//! the headers again and looks its flow up again (bounds checks and one hash lookup: what the
//! room costs). An ICMPv6 error goes to `xdplb6_icmp` (`icmp6`). Not for IPv6 yet: redispatch
//! (`Family::REDISPATCH`), flow events.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext};
use lb_common::{Reason, SynPlan6, FLOW_DIR_CLIENT, FLOW_DIR_SERVER, PROG_IPV6_ICMP, V6};

use crate::{
    conntrack, icmp, icmp6, maps, options,
    parse::{self, ParseError},
    ports::Tuple,
    stage::TAIL_CALL,
    stats, Ingress,
};

/// Classifies an IPv6 frame (`try_lb`) and tail-calls the stage it needs; anything else gets
/// its verdict here.
#[xdp(frags)]
pub fn xdplb6(ctx: XdpContext) -> u32 {
    let (reason, action) = match crate::try_lb::<V6>(&ctx) {
        Ok(result) => result,
        Err(ParseError::ExtHeader) => (Reason::Ipv6ExtHeader, xdp_action::XDP_PASS),
        Err(ParseError::Malformed) => (Reason::Malformed, xdp_action::XDP_PASS),
        Err(ParseError::Icmp) => (Reason::Passed, TAIL_CALL | PROG_IPV6_ICMP),
        // As IPv4's: a tracked flow's first fragment is dropped (the kernel would reassemble
        // it, find no socket and answer RST), any other fragment goes to the kernel.
        Err(ParseError::Fragment) => match parse::fragment6_key(&ctx).and_then(|k| conntrack::lookup(&k)) {
            Some(_) => (Reason::FragmentOfFlow, xdp_action::XDP_DROP),
            None => (Reason::Fragment, xdp_action::XDP_PASS),
        },
        Err(_) => (Reason::Passed, xdp_action::XDP_PASS),
    };
    if action & TAIL_CALL != 0 {
        // The stage does not come back; without it (an agent that has not put it there), the
        // kernel's.
        unsafe { maps::FAMILY_PROGS.tail_call(&ctx, action & !TAIL_CALL) };
        return verdict(&ctx, Reason::Passed, xdp_action::XDP_PASS);
    }
    verdict(&ctx, reason, action)
}

/// An ICMPv6 error, which may be about a flow (`icmp6`).
#[xdp(frags)]
pub fn xdplb6_icmp(ctx: XdpContext) -> u32 {
    let (reason, action) = icmp6::translate(&ctx);
    verdict(&ctx, reason, action)
}

/// Client -> server on a flow (`to_server`).
#[xdp(frags)]
pub fn xdplb6_to_server(ctx: XdpContext) -> u32 {
    let (reason, action) = stage(&ctx, |i| match conntrack::lookup_settled(&i.key) {
        Some((flow, half_open)) if unsafe { (*flow).direction } == FLOW_DIR_CLIENT => {
            crate::to_server_here(i, flow, half_open)
        }
        _ => crate::no_flow(),
    });
    verdict(&ctx, reason, action)
}

/// Server -> client on a flow (`reply`).
#[xdp(frags)]
pub fn xdplb6_reply(ctx: XdpContext) -> u32 {
    let (reason, action) = stage(&ctx, |i| match conntrack::lookup_settled(&i.key) {
        Some((flow, _)) if unsafe { (*flow).direction } == FLOW_DIR_SERVER => crate::reply_here(i, flow),
        _ => crate::no_flow(),
    });
    verdict(&ctx, reason, action)
}

/// A new flow's first half (`choose`): its server and tuple, left in `syn_plan6` for
/// `xdplb6_record`.
#[xdp(frags)]
pub fn xdplb6_open(ctx: XdpContext) -> u32 {
    let (reason, action) = stage(&ctx, |i| {
        let Some(frontend) = maps::frontend(i.key.dst_addr, i.key.dst_port_be) else {
            return (Reason::Passed, xdp_action::XDP_PASS);
        };
        let (server_id, tuple) = match crate::choose(i, frontend) {
            Ok((id, _, tuple)) => (id, tuple),
            Err(verdict) => return verdict,
        };
        let Some(plan) = maps::SYN_PLAN6.get_ptr_mut(0) else { return (Reason::TableFull, xdp_action::XDP_DROP) };
        unsafe {
            (*plan).server_id = server_id;
            (*plan).previous = match (tuple.previous.is_null(), tuple.previous_half_open) {
                (true, _) => 0,
                (false, false) => 1,
                (false, true) => 2,
            };
            (*plan).reply_key = tuple.reply_key;
        }
        (Reason::NewFlow, TAIL_CALL | lb_common::PROG_IPV6_RECORD)
    });
    if action & TAIL_CALL != 0 {
        unsafe { maps::FAMILY_PROGS.tail_call(&ctx, action & !TAIL_CALL) };
        return verdict(&ctx, Reason::TableFull, xdp_action::XDP_DROP);
    }
    verdict(&ctx, reason, action)
}

/// A new flow's second half (`open_with`), on the plan `xdplb6_open` left.
#[xdp(frags)]
pub fn xdplb6_record(ctx: XdpContext) -> u32 {
    let (reason, action) = stage(&ctx, |i| {
        let (Some(frontend), Some(plan)) =
            (maps::frontend(i.key.dst_addr, i.key.dst_port_be), maps::SYN_PLAN6.get_ptr_mut(0))
        else {
            return (Reason::Passed, xdp_action::XDP_PASS);
        };
        let plan: &SynPlan6 = unsafe { &*plan };
        let Some(server) = maps::SERVERS6.get(plan.server_id) else { return (Reason::TableFull, xdp_action::XDP_DROP) };
        // The entry that held the tuple, looked up again (a pointer does not survive the call).
        let previous = match conntrack::lookup(&plan.reply_key) {
            Some((p, _)) if plan.previous != 0 => p,
            _ => core::ptr::null_mut(),
        };
        let tuple = Tuple { reply_key: plan.reply_key, previous, previous_half_open: plan.previous == 2 };
        crate::open_with(i, frontend, plan.server_id, server, &tuple)
    });
    verdict(&ctx, reason, action)
}

/// A stage's common start: the headers, the settings, the flow key, the options, the time; the
/// stage's verdict (`Malformed`, passed, when the frame no longer parses).
#[inline(always)]
fn stage(ctx: &XdpContext, run: impl FnOnce(&Ingress<V6>) -> (Reason, u32)) -> (Reason, u32) {
    let Ok(pkt) = parse::parse::<V6>(ctx) else { return (Reason::Malformed, xdp_action::XDP_PASS) };
    let Some(settings) = maps::settings() else { return (Reason::Passed, xdp_action::XDP_PASS) };
    let now = unsafe { bpf_ktime_get_ns() };
    let opts = options::find(ctx, &pkt);
    let ingress = Ingress { ctx: XdpContext::new(ctx.ctx), opts, key: pkt.flow_key(), settings, now };
    run(&ingress)
}

/// Counts an IPv6 verdict and returns its action: for a packet too big for its way out (see
/// `forward::fits`), its sender's packet-too-big.
#[inline(always)]
fn verdict(ctx: &XdpContext, reason: Reason, action: u32) -> u32 {
    stats::count(reason);
    if action & icmp::FRAG_NEEDED_ACTION != 0 {
        return icmp6::packet_too_big(ctx.ctx, action & !icmp::FRAG_NEEDED_ACTION);
    }
    action
}
