//! ICMP errors about tracked flows, translated for the flow's other end (what IPVS, DPVS and
//! Katran do): without it path-MTU discovery black-holes through full NAT, since a router's
//! frag-needed goes to the balancer's address, where no socket has the connection.
//!
//! An error (destination unreachable, all codes, or time exceeded) quotes the IPv4 and TCP
//! headers of a packet the balancer sent: to a server (from a NAT tuple) or to a client (from
//! a frontend). The entry that rewrites packets coming back on the quoted tuple is the flow's
//! (its key is the quoted tuple reversed), and its addresses are exactly the translation:
//! - outer source and destination become the entry's new source and destination (the
//!   frontend and the client, or the NAT address and the server);
//! - the quoted packet becomes the one the other end really sent: source and destination the
//!   entry's new destination and source, ports likewise;
//! - every checksum follows incrementally: outer IPv4, quoted IPv4, quoted TCP when the quote
//!   reaches it, and ICMP over all of it. The MTU of a frag-needed is left as it is.
//!
//! It is then sent as the flow's packets to that end go. Errors quoting anything else (or a
//! flow of a server on this host, whose errors the kernel handles) go to the kernel untouched.
//!
//! The data path also sends one ICMP error of its own: frag-needed, for a flow's packet with DF
//! that is bigger than the MTU of the interface it would leave by (`frag_needed`; XDP cannot
//! fragment, and the redirect would drop it without a word).

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    programs::XdpContext,
};
use lb_common::{checksum, FlowKey, Reason, FLOW_DIR_SERVER, FLOW_LOCAL};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    conntrack, forward,
    parse::{ptr_at, ParseError, IP_OFF, TCP_OFF},
    stats,
};

const ICMP_OFF: usize = TCP_OFF;
/// The quoted IPv4 header (without options: a quote with options is not translated).
const QUOTE_IP_OFF: usize = ICMP_OFF + 8;
const QUOTE_L4_OFF: usize = QUOTE_IP_OFF + Ipv4Hdr::LEN;
/// The quoted TCP checksum, translated only when the quote reaches it.
const QUOTE_TCP_CHECK_OFF: usize = QUOTE_L4_OFF + 16;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMP_HEADER_LEN: usize = 8;
/// A frag-needed the data path sends: the new IPv4 and ICMP headers, then the packet's IPv4
/// header and the first 8 bytes of its TCP header (ports and sequence number, what the sender's
/// stack needs to find the connection; RFC 792).
const FRAG_NEEDED_QUOTE: usize = Ipv4Hdr::LEN + 8;
const FRAG_NEEDED_LEN: usize = QUOTE_IP_OFF + FRAG_NEEDED_QUOTE;
const ICMP_TIME_EXCEEDED: u8 = 11;
const IPPROTO_TCP: u8 = 6;

/// Translates an ICMP error about a tracked flow and sends it on; anything else is passed.
/// Counts the verdict, returns the action.
/// Not inlined: its locals get a frame of their own (the BPF stack limit counts the frames
/// along a call chain, and inlined it put the main frame's chains over).
#[inline(never)]
pub fn translate(ctx: *mut xdp_md) -> u32 {
    // Read through a volatile load: otherwise the compiler passes the frame's bounds in the
    // pointer's place, as numbers the verifier no longer takes for packet pointers.
    let ctx = XdpContext::new(unsafe { core::ptr::read_volatile(&ctx) });
    let (reason, action) = try_translate(&ctx).unwrap_or((Reason::Passed, xdp_action::XDP_PASS));
    stats::count(reason);
    action
}

#[inline(always)]
fn try_translate(ctx: &XdpContext) -> Option<(Reason, u32)> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok()?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, IP_OFF).ok()?;
    let icmp: *mut [u8; 4] = ptr_at(ctx, ICMP_OFF).ok()?;
    let quote: *mut Ipv4Hdr = ptr_at(ctx, QUOTE_IP_OFF).ok()?;
    let ports: *mut [[u8; 2]; 2] = ptr_at(ctx, QUOTE_L4_OFF).ok()?;
    let (icmp, quote, ports) = unsafe { (&mut *icmp, &mut *quote, &mut *ports) };
    if icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_TIME_EXCEEDED {
        return None;
    }
    if quote.vihl != 0x45 || quote.proto != IPPROTO_TCP {
        return None;
    }
    let key = FlowKey {
        src_addr: quote.dst_addr,
        dst_addr: quote.src_addr,
        src_port_be: u16::from_ne_bytes(ports[1]),
        dst_port_be: u16::from_ne_bytes(ports[0]),
    };
    let (flow, _) = conntrack::lookup(&key)?;
    let flow = unsafe { &mut *flow };
    if flow.seen & FLOW_LOCAL != 0 {
        return None;
    }
    let (new_src, new_dst) = (flow.new_src_addr, flow.new_dst_addr);
    let (new_sport, new_dport) = (flow.new_src_port_be.to_ne_bytes(), flow.new_dst_port_be.to_ne_bytes());

    // The quoted packet, as the other end sent it.
    let mut icmp_check = u16::from_be_bytes([icmp[2], icmp[3]]);
    let old_quote_check = u16::from_be_bytes(quote.check);
    let mut quote_check = checksum::replace32(old_quote_check, quote.src_addr, new_dst);
    quote_check = checksum::replace32(quote_check, quote.dst_addr, new_src);
    icmp_check = checksum::replace32(icmp_check, quote.src_addr, new_dst);
    icmp_check = checksum::replace32(icmp_check, quote.dst_addr, new_src);
    icmp_check = checksum::replace16(icmp_check, old_quote_check, quote_check);
    icmp_check = checksum::replace16(icmp_check, u16::from_be_bytes(ports[0]), u16::from_be_bytes(new_dport));
    icmp_check = checksum::replace16(icmp_check, u16::from_be_bytes(ports[1]), u16::from_be_bytes(new_sport));
    if let Ok(tcp_check) = ptr_at::<[u8; 2]>(ctx, QUOTE_TCP_CHECK_OFF) {
        let tcp_check = unsafe { &mut *tcp_check };
        let old = u16::from_be_bytes(*tcp_check);
        let mut c = checksum::replace32(old, quote.src_addr, new_dst);
        c = checksum::replace32(c, quote.dst_addr, new_src);
        c = checksum::replace16(c, u16::from_be_bytes(ports[0]), u16::from_be_bytes(new_dport));
        c = checksum::replace16(c, u16::from_be_bytes(ports[1]), u16::from_be_bytes(new_sport));
        icmp_check = checksum::replace16(icmp_check, old, c);
        *tcp_check = c.to_be_bytes();
    }
    quote.src_addr = new_dst;
    quote.dst_addr = new_src;
    quote.check = quote_check.to_be_bytes();
    ports[0] = new_dport;
    ports[1] = new_sport;
    [icmp[2], icmp[3]] = icmp_check.to_be_bytes();

    // The error itself, from the balancer's address that end talks to.
    let outer = unsafe { &mut *ip };
    let mut ip_check = u16::from_be_bytes(outer.check);
    ip_check = checksum::replace32(ip_check, outer.src_addr, new_src);
    ip_check = checksum::replace32(ip_check, outer.dst_addr, new_dst);
    outer.src_addr = new_src;
    outer.dst_addr = new_dst;
    outer.check = ip_check.to_be_bytes();
    let ip_len = u16::from_be_bytes(outer.tot_len) as u32;

    Some(if flow.direction == FLOW_DIR_SERVER {
        forward::deliver_to_client(ctx, eth, ip, ip_len, flow, Reason::IcmpToClient)
    } else {
        let now = unsafe { bpf_ktime_get_ns() };
        forward::deliver_to_server(ctx, eth, ip, ip_len, flow, now, Reason::IcmpToServer)
    })
}

/// The action a stage returns for "answer this packet with a frag-needed carrying `mtu`": above
/// XDP's own actions, so that `frag_needed` runs from the program's first frame (the BPF stack
/// limit counts the frames along a call chain, and the stages that find a packet too big are
/// deep in theirs).
#[inline(always)]
pub fn frag_needed_action(mtu: u32) -> u32 {
    FRAG_NEEDED_ACTION | mtu.min(u16::MAX as u32)
}

/// See `frag_needed_action`.
pub const FRAG_NEEDED_ACTION: u32 = 1 << 16;

/// Turns the frame (a flow's packet, not rewritten, with DF, too big for its way out) into a
/// frag-needed to its sender, from the address it was sent to, carrying `mtu`, and returns the
/// action that sends it back (XDP_TX), or XDP_DROP if the frame cannot be reshaped (if the TX
/// fails, the sender's retransmission asks again). Not inlined, for the stack (see
/// `translate`).
#[inline(never)]
pub fn frag_needed(ctx: *mut xdp_md, mtu: u32) -> u32 {
    // Volatile for the reason given in `translate`.
    let ctx = XdpContext::new(unsafe { core::ptr::read_volatile(&ctx) });
    match build_frag_needed(&ctx, mtu) {
        Ok(()) => xdp_action::XDP_TX,
        Err(_) => xdp_action::XDP_DROP,
    }
}

#[inline(always)]
fn build_frag_needed(ctx: &XdpContext, mtu: u32) -> Result<(), ParseError> {
    // Built in place, nothing kept across a helper call: the packet's IPv4 header and first 8
    // TCP bytes move back to become the quote (the frame is far longer: it was too big), the
    // new headers go where they were, and the frame is cut after the quote.
    let quote: *mut [u8; FRAG_NEEDED_QUOTE] = ptr_at(ctx, QUOTE_IP_OFF)?;
    let packet: *const [u8; FRAG_NEEDED_QUOTE] = ptr_at(ctx, IP_OFF)?;
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, IP_OFF)?;
    let icmp: *mut [u8; ICMP_HEADER_LEN + FRAG_NEEDED_QUOTE] = ptr_at(ctx, ICMP_OFF)?;
    let quoted: *const Ipv4Hdr = ptr_at(ctx, QUOTE_IP_OFF)?;
    unsafe {
        core::ptr::copy_nonoverlapping(packet, quote, 1);
        let (eth, ip, icmp, quoted) = (&mut *eth, &mut *ip, &mut *icmp, &*quoted);
        core::mem::swap(&mut eth.dst_addr, &mut eth.src_addr);
        ip.vihl = 0x45;
        ip.tos = 0xc0;
        ip.tot_len = ((Ipv4Hdr::LEN + ICMP_HEADER_LEN + FRAG_NEEDED_QUOTE) as u16).to_be_bytes();
        ip.id = [0, 0];
        ip.frags = [0, 0];
        ip.ttl = 64;
        ip.proto = 1;
        ip.check = [0, 0];
        ip.src_addr = quoted.dst_addr;
        ip.dst_addr = quoted.src_addr;
        let header = &*(ip as *const Ipv4Hdr as *const [u8; Ipv4Hdr::LEN]);
        ip.check = checksum::ipv4_header(header).to_be_bytes();
        let mtu = (mtu as u16).to_be_bytes();
        icmp[..ICMP_HEADER_LEN].copy_from_slice(&[ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, 0, 0, mtu[0], mtu[1]]);
        let c = !checksum::fold(checksum::sum_words(icmp));
        [icmp[2], icmp[3]] = c.to_be_bytes();
    }
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i32;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, FRAG_NEEDED_LEN as i32 - len) } != 0 {
        return Err(ParseError::Malformed);
    }
    Ok(())
}
