//! xdplb's XDP program: full-NAT TCP load balancing at the driver.
//!
//! Per packet: parse (`parse`, `options`), classify as a frontend packet, a reply of a tracked
//! flow or anything else (`main`), admit a SYN by its frontend's source allowlist (`allow`),
//! open flows on SYN (`balance`, `ports`, `conntrack`), rewrite
//! (`nat`, `timestamps`), and send on (`forward`); a SYN that no server can take is answered with
//! a RST (`reset`). ICMP errors about a tracked flow are translated for its other end (`icmp`).
//! Anything that is not ours goes to the kernel untouched. Counters live in
//! `stats`. Processes on the balancer host itself are balanced at connect() by the cgroup hooks
//! in `sock`, on the same maps; a server on the host itself gets its replies translated back
//! by the tc egress program in `egress`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]
// Keys are passed to map helpers by reference on purpose: no copies on the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod allow;
mod balance;
mod conntrack;
mod egress;
mod family;
mod flow_events;
mod forward;
mod icmp;
mod icmp6;
mod maps;
mod nat;
mod options;
mod parse;
mod ports;
mod redispatch;
mod reset;
mod sock;
mod stats;
mod suspicion;
mod timestamps;
mod v6;

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use lb_common::{
    Event, FlowKeyOf, FlowOf, Frontend, Reason, ServerOf, Settings, FLOW_DIR_CLIENT, FLOW_DIR_SERVER,
    FLOW_EVENT_CLOSED, FLOW_EVENT_ESTABLISHED, FLOW_LOCAL, FLOW_SEEN_ESTABLISHED, FLOW_SYN_SACK, FLOW_SYN_TS,
    FLOW_SYN_WSCALE, PROG_IPV6, SERVER_F_LOCAL, SETTINGS_F_TS_TRANSLATE, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, V4,
};

use crate::{
    conntrack::NotPromoted,
    options::TcpOptions,
    parse::{IpParse, Packet, ParseError},
    ports::Tuple,
};

/// Declared `xdp.frags`: drivers take it on interfaces whose MTU does not fit a frame in one
/// page (jumbo frames), handing it multi-buffer frames; headers are always in the first buffer,
/// which is all the program reads or writes.
#[xdp(frags)]
pub fn xdplb(ctx: XdpContext) -> u32 {
    let (reason, action) = match try_lb::<V4>(&ctx) {
        Ok(result) => result,
        Err(ParseError::NotOurs | ParseError::ExtHeader) => (Reason::Passed, xdp_action::XDP_PASS),
        Err(ParseError::Malformed) => (Reason::Malformed, xdp_action::XDP_PASS),
        // IPv6: the program of its own family (the tail call does not come back); without it
        // (an agent that has not put it there yet), the kernel's.
        Err(ParseError::Ipv6) => {
            unsafe { maps::FAMILY_PROGS.tail_call(&ctx, PROG_IPV6) };
            (Reason::Passed, xdp_action::XDP_PASS)
        }
        // These count their own verdicts: returning a pair from a function of its own costs
        // this frame a slot for it, and this frame is the bottom of every call chain.
        Err(ParseError::Fragment) => return unparsed(ctx.ctx, Reason::Fragment, Reason::FragmentOfFlow),
        Err(ParseError::IpOptions) => return unparsed(ctx.ctx, Reason::IpOptions, Reason::IpOptionsOfFlow),
        Err(ParseError::Icmp) => return icmp::translate(ctx.ctx),
    };
    stats::count(reason);
    if action & icmp::FRAG_NEEDED_ACTION != 0 {
        return icmp::frag_needed(ctx.ctx, action & !icmp::FRAG_NEEDED_ACTION);
    }
    action
}

/// A TCP frame the data path does not rewrite (a fragment, IP options): a tracked flow's is
/// dropped (`of_flow`), since the kernel would find no socket for it and answer RST, which ends
/// the connection; its sender retransmits it (Linux sends without options and with DF). Any
/// other goes to the kernel untouched (`untracked`). Counts the verdict, returns the action.
/// Not inlined, for the stack (see `open_flow`).
#[inline(never)]
fn unparsed(ctx: *mut xdp_md, untracked: Reason, of_flow: Reason) -> u32 {
    // Volatile for the reason given in `icmp::translate`.
    let ctx = &XdpContext::new(unsafe { core::ptr::read_volatile(&ctx) });
    let (reason, action) = match parse::unparsed_key(ctx).and_then(|key| conntrack::lookup(&key)) {
        Some(_) => (of_flow, xdp_action::XDP_DROP),
        None => (untracked, xdp_action::XDP_PASS),
    };
    stats::count(reason);
    action
}

#[inline(always)]
pub(crate) fn try_lb<A: IpParse>(ctx: &XdpContext) -> Result<(Reason, u32), ParseError> {
    let pkt = parse::parse::<A>(ctx)?;
    let settings = maps::settings().ok_or(ParseError::NotOurs)?;
    let key = pkt.flow_key();

    // Replies come back to the balancer's reserved NAT ports; nothing else uses them.
    let dport = u16::from_be(key.dst_port_be) as u32;
    let is_reply = dport.wrapping_sub(settings.reply_port_first) < settings.reply_port_count;
    // Most of a host's traffic is to ports no frontend has: an array read tells, before any
    // hash lookup. Loopback frontends (`127.0.0.1:PORT`, and the loopback key of `*:PORT`) are
    // the connect hook's (`sock`): a frame from a wire addressed to 127/8 is never ours.
    if !is_reply && (key.dst_addr.is_loopback() || !maps::frontend_port(key.dst_port_be)) {
        return Ok((Reason::Passed, xdp_action::XDP_PASS));
    }
    // SYN|FIN and SYN|RST are not connection attempts.
    let is_syn = pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST) == TCP_SYN;
    // The flow first: most packets belong to an established one, which needs no frontend, and
    // only stamps its flow's `last_seen`: the coarse clock does (a tick late at most). The
    // branch returns inside: a flow pointer carried out of it through an `Option` came back to
    // the verifier as a plain number on some paths the compiler merged.
    if !is_reply && !is_syn {
        if let Some(flow) = A::flows().get_ptr_mut(&key) {
            if unsafe { (*flow).direction } == FLOW_DIR_CLIENT {
                let now = unsafe { bpf_ktime_get_coarse_ns() };
                let opts = options::find(ctx, &pkt);
                let ingress = Ingress { ctx: XdpContext::new(ctx.ctx), opts, key, settings, now };
                return Ok(stage::to_server(&ingress, flow, false));
            }
        }
    }
    // Only a miss (or a SYN, which may reuse a tuple) looks the frontend up.
    let frontend = if is_reply { None } else { maps::frontend_on_port(key.dst_addr, key.dst_port_be) };
    if !is_reply && frontend.is_none() {
        return Ok((Reason::Passed, xdp_action::XDP_PASS));
    }
    // The option walk's second (and last) call site: each inlined copy costs the verifier a walk
    // of its own, so replies and the frontend's packets share this one.
    let opts = options::find(ctx, &pkt);
    if is_reply {
        let Some((flow, half_open)) = conntrack::lookup_settled(&key) else { return Ok(no_flow()) };
        if unsafe { (*flow).direction } != FLOW_DIR_SERVER {
            return Ok(no_flow());
        }
        // A half-open flow takes the precise clock (it drives redispatch); an established one's
        // reply only stamps `last_seen`.
        let now = unsafe {
            if half_open {
                bpf_ktime_get_ns()
            } else {
                bpf_ktime_get_coarse_ns()
            }
        };
        let ingress = Ingress { ctx: XdpContext::new(ctx.ctx), opts, key, settings, now };
        // A server refusing a new flow's SYN: the next server gets it, not the client the RST.
        if A::REDISPATCH && half_open && pkt.tcp_flags & TCP_RST != 0 {
            let client = redispatch::refusal(&ingress, flow);
            if !client.is_null() {
                let key = unsafe { (*flow).peer_key() };
                let refusing = unsafe { (*flow).server_id };
                let moved = redispatch::move_flow(&key, unsafe { &*client }, unsafe { &*flow }, settings, now);
                if !moved.is_null() {
                    // Passive layer-4 observation: a refusal, though the client never sees it.
                    stats::syn_rst(refusing);
                    return Ok(redispatch::send_syn(&ingress, moved));
                }
            }
        }
        return Ok(stage::reply(&ingress, flow));
    }
    let Some(frontend) = frontend else { return Ok((Reason::Passed, xdp_action::XDP_PASS)) };
    // SYNs and half-open flows take the precise clock: it drives the timestamp clocks of new
    // tuples, the NAT port holds and redispatch.
    let now = unsafe { bpf_ktime_get_ns() };
    let ingress = Ingress { ctx: XdpContext::new(ctx.ctx), opts, key, settings, now };
    let pkt = &pkt;
    let found = if is_syn { conntrack::lookup(&key) } else { conntrack::lookup_settled(&key) };
    if let Some((flow, half_open)) = found {
        let f = unsafe { &*flow };
        if f.direction == FLOW_DIR_CLIENT {
            if !(is_syn && f.is_closed()) {
                let mut flow = flow;
                // The client's SYN again, and its server never answered: the next server.
                if A::REDISPATCH && is_syn && half_open && pkt.seq() == f.isn && f.seen & FLOW_LOCAL == 0 {
                    let server = redispatch::unanswered(&ingress, flow);
                    let silent = f.server_id;
                    if !server.is_null()
                        && !redispatch::move_flow(&key, f, unsafe { &*server }, settings, now).is_null()
                    {
                        stats::event(Event::RedispatchUnanswered);
                        stats::syn_unanswered(silent);
                        if let Some((moved, _)) = conntrack::lookup(&key) {
                            flow = moved;
                        }
                    }
                }
                return Ok(stage::to_server(&ingress, flow, half_open));
            }
            if f.seen & FLOW_SEEN_ESTABLISHED == 0 && pkt.seq() == f.isn {
                // The same SYN again after the client's RST: same server, same NAT port.
                conntrack::reopen(flow);
                stats::event(Event::SynRetryKept);
                return Ok(stage::to_server(&ingress, flow, half_open));
            }
            // A new connection on the tuple of one that is over (the client reused its port).
            // Its server-side entry keeps holding its NAT port until that may be used again.
            stats::event(Event::TupleReused);
            if !half_open {
                conntrack::remove(&key, false);
            }
        }
    }
    if !is_syn {
        return Ok(no_flow());
    }
    if !allow::admits(frontend, &key) {
        stats::denied(frontend.frontend_id);
        return Ok((Reason::NotAllowed, xdp_action::XDP_DROP));
    }
    Ok(stage::open_flow(&ingress, frontend))
}

/// Where a stage runs: in a function of its own (IPv4), or for a family whose frames are bigger
/// (`Family::OUTLINE`, IPv6) in a program of its own, tail-called by the caller's program (see
/// `v6`): then the stage's slot of `family_progs` is returned in place of an action.
mod stage {
    use lb_common::{FlowOf, Frontend, Reason, PROG_IPV6_OPEN, PROG_IPV6_REPLY, PROG_IPV6_TO_SERVER};

    use crate::{family::Family, parse::IpParse, Ingress};

    /// Marks an action that is a `family_progs` slot to tail-call (never an XDP action).
    pub const TAIL_CALL: u32 = 1 << 30;

    #[inline(always)]
    pub fn to_server<A: IpParse>(i: &Ingress<A>, flow: *mut FlowOf<A>, half_open: bool) -> (Reason, u32) {
        if A::OUTLINE {
            return (Reason::Forwarded, TAIL_CALL | PROG_IPV6_TO_SERVER);
        }
        crate::to_server(i, flow, half_open)
    }

    #[inline(always)]
    pub fn reply<A: IpParse>(i: &Ingress<A>, flow: *mut FlowOf<A>) -> (Reason, u32) {
        if A::OUTLINE {
            return (Reason::Replied, TAIL_CALL | PROG_IPV6_REPLY);
        }
        crate::reply(i, flow)
    }

    #[inline(always)]
    pub fn open_flow<A: IpParse>(i: &Ingress<A>, frontend: &Frontend) -> (Reason, u32) {
        if A::OUTLINE {
            return (Reason::NewFlow, TAIL_CALL | PROG_IPV6_OPEN);
        }
        crate::open_flow(i, frontend)
    }
}

/// What every stage of a packet's handling reads, bundled: a stage that is a function of its own
/// (for the stack, see `open_flow`) takes it as one argument (BPF functions take at most five).
/// Packet pointers are not in it: read back from another frame's stack they are plain numbers to
/// the verifier, so each stage parses the headers again from the context (bounds checks only).
pub struct Ingress<A> {
    pub ctx: XdpContext,
    pub opts: TcpOptions,
    pub key: FlowKeyOf<A>,
    pub settings: &'static Settings,
    pub now: u64,
}

impl<A: IpParse> Ingress<A> {
    /// The context, read so that the compiler cannot pass the frame's bounds to a stage function
    /// in its place (it did: as 32-bit numbers, which the verifier no longer takes for packet
    /// pointers).
    #[inline(always)]
    pub fn ctx(&self) -> XdpContext {
        XdpContext::new(unsafe { core::ptr::read_volatile(&self.ctx.ctx) })
    }

    #[inline(always)]
    pub fn packet(&self, ctx: &XdpContext) -> Result<Packet<A>, ParseError> {
        parse::parse::<A>(ctx)
    }
}

/// A packet that should belong to a flow and does not: the kernel answers it (RST, as for any
/// segment of an unknown connection), unless the agent is removing flows right now, when it may
/// be one the agent is putting back: then it is dropped and the sender retransmits.
#[inline(always)]
fn no_flow() -> (Reason, u32) {
    if maps::sweeping() {
        (Reason::NoFlowInSweep, xdp_action::XDP_DROP)
    } else {
        (Reason::NoFlow, xdp_action::XDP_PASS)
    }
}

/// Client -> server on a flow: completes the handshake when this is the ACK of the server's
/// SYN-ACK, records, translates timestamps, rewrites and sends. Not inlined, for the stack (see
/// `open_flow`).
#[inline(never)]
fn to_server<A: IpParse>(i: &Ingress<A>, flow: *mut FlowOf<A>, half_open: bool) -> (Reason, u32) {
    to_server_here(i, flow, half_open)
}

/// `to_server` in the caller's frame (IPv6's stage program, whose frame is its own).
#[inline(always)]
fn to_server_here<A: IpParse>(i: &Ingress<A>, flow: *mut FlowOf<A>, half_open: bool) -> (Reason, u32) {
    let ctx = &i.ctx();
    let Ok(pkt) = i.packet(ctx) else { return (Reason::Malformed, xdp_action::XDP_PASS) };
    let (pkt, opts, key, now) = (&pkt, &i.opts, &i.key, i.now);
    let mut flow = flow;
    if half_open && pkt.tcp_flags & (TCP_ACK | TCP_SYN | TCP_RST) == TCP_ACK {
        match conntrack::promote(key, flow, pkt) {
            Ok(f) => {
                flow = f;
                flow_events::flow_changed(FLOW_EVENT_ESTABLISHED, f);
            }
            Err(NotPromoted::NotAcked) => stats::event(Event::AckNotPromoting),
            Err(NotPromoted::Table) => {}
        }
    }
    let f = unsafe { &mut *flow };
    // The way back follows the way in: replies go where the client's packets now come from.
    let ifindex = ctx.ingress_ifindex() as u32;
    if unsafe { (*pkt.eth).src_addr } != f.next_hop_dst_mac || ifindex != f.next_hop_ifindex {
        conntrack::way_in_moved(f, unsafe { &*pkt.eth }, ifindex);
    }
    let translate = f.ts_off != 0 && opts.ts_at != 0;
    if conntrack::observe(flow, pkt, opts.wscale, translate, now) {
        flow_events::flow_changed(FLOW_EVENT_CLOSED, flow);
    }
    if translate {
        if let Some(sent) = timestamps::to_server(ctx, opts.ts_at, f) {
            f.ts_last = sent;
        }
    }
    forward::to_server(ctx, pkt, flow, now)
}

/// Server -> client on a flow: records, translates the timestamp echo, rewrites and sends. Not
/// inlined, for the stack (see `open_flow`).
#[inline(never)]
fn reply<A: IpParse>(i: &Ingress<A>, flow: *mut FlowOf<A>) -> (Reason, u32) {
    reply_here(i, flow)
}

/// `reply` in the caller's frame (IPv6's stage program).
#[inline(always)]
fn reply_here<A: IpParse>(i: &Ingress<A>, flow: *mut FlowOf<A>) -> (Reason, u32) {
    let ctx = &i.ctx();
    let Ok(pkt) = i.packet(ctx) else { return (Reason::Malformed, xdp_action::XDP_PASS) };
    let (pkt, opts, now) = (&pkt, &i.opts, i.now);
    let f = unsafe { &*flow };
    let translate = f.ts_off != 0 && opts.ts_at != 0;
    if conntrack::observe(flow, pkt, opts.wscale, translate, now) {
        flow_events::flow_changed(FLOW_EVENT_CLOSED, flow);
    }
    if translate {
        timestamps::to_client(ctx, opts.ts_at, f);
    }
    forward::reply(ctx, pkt, flow)
}

/// A SYN to a frontend without a flow: pick a server and a backend-side tuple for it, stamp
/// the SYN from the tuple's timestamp clock, record both directions, forward. A function of its
/// own (not inlined): its locals get a stack frame of their own, and the BPF stack limit counts
/// frames along a call chain, not every path of the program in one frame.
#[inline(never)]
fn open_flow<A: IpParse>(i: &Ingress<A>, frontend: &Frontend) -> (Reason, u32) {
    match choose(i, frontend) {
        Ok((server_id, server, tuple)) => open_with(i, frontend, server_id, server, &tuple),
        Err(verdict) => verdict,
    }
}

/// The first half of `open_flow`: a server and a backend-side tuple for the new flow (`Err`: the
/// verdict, a RST when no server can take it).
#[inline(always)]
fn choose<A: IpParse>(
    i: &Ingress<A>,
    frontend: &Frontend,
) -> Result<(u32, &'static ServerOf<A>, Tuple<A>), (Reason, u32)> {
    let ctx = &i.ctx();
    let (key, settings, now) = (&i.key, i.settings, i.now);
    let Some((server_id, server)) = balance::pick(frontend.pool_id, 0, now, &key.src_addr) else {
        return Err(reset::no_backend::<A>(ctx, settings));
    };
    let Some(tuple) = ports::tuple(server_id, server, settings, now, translating(i, server), key) else {
        return Err((Reason::NoNatPort, xdp_action::XDP_DROP));
    };
    Ok((server_id, server, tuple))
}

/// Whether a new flow to `server` gets its timestamps translated (when its SYN has them). A
/// server on this host: the client's own tuple (`ports::tuple`), no timestamp translation, the
/// destination translated only (`FLOW_LOCAL`).
#[inline(always)]
fn translating<A>(i: &Ingress<A>, server: &ServerOf<A>) -> bool {
    i.settings.flags & SETTINGS_F_TS_TRANSLATE != 0 && i.opts.ts_at != 0 && server.flags & SERVER_F_LOCAL == 0
}

/// The second half of `open_flow`: the flow on the tuple `choose` found, recorded both ways,
/// and its SYN sent.
#[inline(always)]
fn open_with<A: IpParse>(
    i: &Ingress<A>,
    frontend: &Frontend,
    server_id: u32,
    server: &ServerOf<A>,
    tuple: &Tuple<A>,
) -> (Reason, u32) {
    let ctx = &i.ctx();
    let Ok(pkt) = i.packet(ctx) else { return (Reason::Malformed, xdp_action::XDP_PASS) };
    let (pkt, opts, key, settings, now) = (&pkt, &i.opts, &i.key, i.settings, i.now);
    let translating = translating(i, server);
    let reply_key = tuple.reply_key;
    // Timestamp translation: the SYN the server gets is stamped from the tuple's clock. The
    // TSval the server gets is kept (untranslated, the client's own) for a redispatch.
    // Plain numbers, no `Option`: the compiler may spill an `Option`'s undefined payload, which
    // the verifier refuses to read.
    let mut client_ts = 0;
    let mut has_ts = false;
    if opts.ts_at != 0 {
        if let Some(c) = timestamps::tsval(ctx, opts.ts_at) {
            client_ts = c;
            has_ts = true;
        }
    }
    let translating = translating && has_ts;
    let tuple_ts = tuple.take(server, settings, now, translating);
    let (ts_off, syn_ts) = if translating {
        stats::event(Event::TsTranslated);
        (tuple_ts.wrapping_sub(client_ts), tuple_ts)
    } else {
        (0, client_ts)
    };

    // Both entries are built in per-CPU scratch space (see `maps::SCRATCH`), zeroed first.
    let scratch = A::scratch();
    let (Some(r), Some(c)) = (scratch.get_ptr_mut(0), scratch.get_ptr_mut(1)) else {
        return (Reason::TableFull, xdp_action::XDP_DROP);
    };
    let (reply_entry, forward_entry) = unsafe {
        core::ptr::write_bytes(r, 0, 1);
        core::ptr::write_bytes(c, 0, 1);
        (&mut *r, &mut *c)
    };
    let (client_mac, our_mac) = unsafe { ((*pkt.eth).src_addr, (*pkt.eth).dst_addr) };
    reply_entry.new_src_addr = key.dst_addr;
    reply_entry.new_dst_addr = key.src_addr;
    reply_entry.new_src_port_be = key.dst_port_be;
    reply_entry.new_dst_port_be = key.src_port_be;
    reply_entry.direction = FLOW_DIR_SERVER;
    reply_entry.server_id = server_id;
    reply_entry.frontend_id = frontend.frontend_id;
    reply_entry.next_hop_dst_mac = client_mac;
    reply_entry.next_hop_src_mac = our_mac;
    reply_entry.next_hop_ifindex = ctx.ingress_ifindex() as u32;
    reply_entry.ts_off = ts_off;
    reply_entry.ts_last = syn_ts;
    if server.flags & SERVER_F_LOCAL != 0 {
        reply_entry.seen = FLOW_LOCAL;
    }
    reply_entry.created_ns = now;
    reply_entry.last_seen_ns = now;
    forward_entry.new_src_addr = reply_key.dst_addr;
    forward_entry.new_dst_addr = server.addr;
    forward_entry.new_src_port_be = reply_key.dst_port_be;
    forward_entry.new_dst_port_be = server.port_be;
    forward_entry.direction = FLOW_DIR_CLIENT;
    forward_entry.server_id = server_id;
    forward_entry.frontend_id = frontend.frontend_id;
    forward_entry.ts_off = ts_off;
    forward_entry.ts_last = syn_ts;
    forward_entry.next_hop_dst_mac = client_mac;
    forward_entry.next_hop_src_mac = our_mac;
    forward_entry.next_hop_ifindex = reply_entry.next_hop_ifindex;
    forward_entry.created_ns = now;
    forward_entry.last_seen_ns = now;
    // What `conntrack::observe` records of a client's first SYN, written before the insert: no
    // lookup of the new entry afterwards.
    // What its SYN carried, for a redispatch to send it again (see `redispatch`).
    forward_entry.seen = pkt.tcp_flags & 0xff
        | if opts.sack { FLOW_SYN_SACK } else { 0 }
        | if opts.wscale.is_some() { FLOW_SYN_WSCALE } else { 0 }
        | if opts.ts_at != 0 { FLOW_SYN_TS } else { 0 }
        | reply_entry.seen & FLOW_LOCAL;
    forward_entry.syn_mss = opts.mss;
    forward_entry.isn = pkt.seq();
    forward_entry.seq_end = pkt.seq_end();
    forward_entry.wscale = opts.wscale.unwrap_or(0);
    forward_entry.max_win = pkt.window();
    forward_entry.packets = 1;
    forward_entry.bytes = pkt.ip_len as u64;
    if !conntrack::insert(&reply_key, reply_entry, key, forward_entry) {
        return (Reason::TableFull, xdp_action::XDP_DROP);
    }
    stats::new_flow(frontend.frontend_id, server_id, pkt.ip_len as u64);
    balance::opened(server_id);
    if ts_off != 0 {
        timestamps::to_server(ctx, opts.ts_at, forward_entry);
    }
    // The packet goes out as the new entry says; the copy in scratch space is the same.
    let (reason, action) = forward::to_server(ctx, pkt, forward_entry, now);
    // The flow is new whatever the next hop did with its first packet.
    if reason == Reason::Forwarded {
        (Reason::NewFlow, action)
    } else {
        (reason, action)
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
