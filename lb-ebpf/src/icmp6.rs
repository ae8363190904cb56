//! ICMPv6 errors about tracked IPv6 flows, translated for the flow's other end (`icmp` for
//! IPv6), and the data path's own packet-too-big.
//!
//! An error (destination unreachable, packet too big, time exceeded) quotes the IPv6 and TCP
//! headers of a packet the balancer sent. As for IPv4, the entry that rewrites packets coming
//! back on the quoted tuple (its key is that tuple reversed) holds the translation: the outer
//! addresses become the entry's new source and destination, the quote becomes the packet the
//! other end really sent, and the checksums follow: the quoted TCP checksum when the quote
//! reaches it, and the ICMPv6 checksum, which covers the outer addresses too (its
//! pseudo-header). The MTU of a packet-too-big is left as it is. The sums go through the
//! kernel's `bpf_csum_diff` (16-byte addresses word by word would not fit the BPF stack).

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::{bpf_csum_diff, bpf_ktime_get_ns, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    programs::XdpContext,
};
use lb_common::{FlowKey6, Reason, FLOW_DIR_SERVER, FLOW_LOCAL, V6};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

use crate::{
    conntrack, forward,
    parse::{ptr_at, ParseError, IP_OFF},
};

const ICMP_OFF: usize = IP_OFF + Ipv6Hdr::LEN;
const ICMP_HEADER_LEN: usize = 8;
const QUOTE_IP_OFF: usize = ICMP_OFF + ICMP_HEADER_LEN;
const QUOTE_L4_OFF: usize = QUOTE_IP_OFF + Ipv6Hdr::LEN;
/// The quoted TCP checksum, translated only when the quote reaches it.
const QUOTE_TCP_CHECK_OFF: usize = QUOTE_L4_OFF + 16;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ICMPV6: u8 = 58;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// The data path's packet-too-big quotes the packet's IPv6 header and its first 8 TCP bytes
/// (ports and sequence number: what the sender's stack needs to find the connection).
const PTB_QUOTE: usize = Ipv6Hdr::LEN + 8;
const PTB_LEN: usize = QUOTE_IP_OFF + PTB_QUOTE;
/// The smallest MTU an IPv6 link may have (RFC 8200).
const IPV6_MIN_MTU: u32 = 1280;

/// Translates an ICMPv6 error about a tracked flow and sends it on; anything else is passed.
#[inline(always)]
pub fn translate(ctx: &XdpContext) -> (Reason, u32) {
    try_translate(ctx).unwrap_or((Reason::Passed, xdp_action::XDP_PASS))
}

#[inline(always)]
fn try_translate(ctx: &XdpContext) -> Option<(Reason, u32)> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok()?;
    let ip: *mut Ipv6Hdr = ptr_at(ctx, IP_OFF).ok()?;
    let icmp: *mut [u8; 4] = ptr_at(ctx, ICMP_OFF).ok()?;
    let quote: *mut Ipv6Hdr = ptr_at(ctx, QUOTE_IP_OFF).ok()?;
    let ports: *mut [u16; 2] = ptr_at(ctx, QUOTE_L4_OFF).ok()?;
    let (icmp, quote, ports) = unsafe { (&mut *icmp, &mut *quote, &mut *ports) };
    if quote.next_hdr != IPPROTO_TCP {
        return None;
    }
    let key =
        FlowKey6 { src_addr: quote.dst_addr, dst_addr: quote.src_addr, src_port_be: ports[1], dst_port_be: ports[0] };
    let (flow, _) = conntrack::lookup::<V6>(&key)?;
    let flow = unsafe { &mut *flow };
    if flow.seen & FLOW_LOCAL != 0 {
        return None;
    }

    // Every change's sum, from the old bytes, before anything is written. One's complement sums
    // do not depend on byte order: everything here is in the order it lies in the frame.
    let new = unsafe { &*(&raw const flow.new_src_addr as *const [V6; 2]) };
    let quote_addrs = unsafe {
        let d = diff(&raw mut quote.src_addr as *mut u32, 16, &raw const flow.new_dst_addr as *mut u32, 16, 0);
        diff(&raw mut quote.dst_addr as *mut u32, 16, &raw const flow.new_src_addr as *mut u32, 16, d)
    };
    let outer = unsafe { diff(&raw mut (*ip).src_addr as *mut u32, 32, new.as_ptr() as *mut u32, 32, 0) };
    let new_ports = [flow.new_dst_port_be, flow.new_src_port_be];
    let port_sum = u64::from(!ports[0]) + u64::from(new_ports[0]) + u64::from(!ports[1]) + u64::from(new_ports[1]);
    let mut icmp_sum = u64::from(outer) + u64::from(quote_addrs) + port_sum;
    if let Ok(tcp_check) = ptr_at::<u16>(ctx, QUOTE_TCP_CHECK_OFF) {
        let tcp_check = unsafe { &mut *tcp_check };
        let old = *tcp_check;
        let new = apply(old, u64::from(quote_addrs) + port_sum);
        icmp_sum += u64::from(!old) + u64::from(new);
        *tcp_check = new;
    }
    quote.src_addr = new[1];
    quote.dst_addr = new[0];
    *ports = new_ports;
    let check = u16::from_ne_bytes([icmp[2], icmp[3]]);
    [icmp[2], icmp[3]] = apply(check, icmp_sum).to_ne_bytes();
    let outer_ip = unsafe { &mut *ip };
    outer_ip.src_addr = new[0];
    outer_ip.dst_addr = new[1];
    let ip_len = Ipv6Hdr::LEN as u32 + u16::from_be_bytes(outer_ip.payload_len) as u32;

    Some(if flow.direction == FLOW_DIR_SERVER {
        forward::deliver_to_client(ctx, eth, ip, ip_len, flow, Reason::IcmpToClient)
    } else {
        let now = unsafe { bpf_ktime_get_ns() };
        forward::deliver_to_server(ctx, eth, ip, ip_len, flow, now, Reason::IcmpToServer)
    })
}

/// The kernel's sum of `to` minus `from` (`size` bytes each, a multiple of 4) plus `seed`.
#[inline(always)]
unsafe fn diff(from: *mut u32, from_size: u32, to: *mut u32, to_size: u32, seed: u32) -> u32 {
    unsafe { bpf_csum_diff(from, from_size, to, to_size, seed) as u32 }
}

/// A checksum field (as it lies in the frame) after adding `sum` to what it covers (RFC 1624:
/// HC' = ~(~HC + sum)).
#[inline(always)]
fn apply(check: u16, sum: u64) -> u16 {
    let mut s = u64::from(!check) + sum;
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Turns the frame (an IPv6 flow's packet, not rewritten, too big for its way out) into a
/// packet-too-big to its sender, from the address it was sent to, carrying `mtu` (at least
/// 1280), and returns the action that sends it back (XDP_TX), or XDP_DROP if the frame cannot
/// be reshaped. Not inlined, for the stack.
#[inline(never)]
pub fn packet_too_big(ctx: *mut xdp_md, mtu: u32) -> u32 {
    // Volatile for the reason given in `icmp::translate`.
    let ctx = XdpContext::new(unsafe { core::ptr::read_volatile(&ctx) });
    match build_packet_too_big(&ctx, mtu.max(IPV6_MIN_MTU)) {
        Ok(()) => xdp_action::XDP_TX,
        Err(_) => xdp_action::XDP_DROP,
    }
}

#[inline(always)]
fn build_packet_too_big(ctx: &XdpContext, mtu: u32) -> Result<(), ParseError> {
    // Built in place: the packet's IPv6 header and first 8 TCP bytes move back to become the
    // quote (the frame is far longer: it was too big), the new headers go where they were, and
    // the frame is cut after the quote.
    let quote: *mut [u8; PTB_QUOTE] = ptr_at(ctx, QUOTE_IP_OFF)?;
    let packet: *const [u8; PTB_QUOTE] = ptr_at(ctx, IP_OFF)?;
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let ip: *mut Ipv6Hdr = ptr_at(ctx, IP_OFF)?;
    let icmp: *mut [u8; ICMP_HEADER_LEN + PTB_QUOTE] = ptr_at(ctx, ICMP_OFF)?;
    let quoted: *const Ipv6Hdr = ptr_at(ctx, QUOTE_IP_OFF)?;
    let len = (ICMP_HEADER_LEN + PTB_QUOTE) as u32;
    unsafe {
        core::ptr::copy_nonoverlapping(packet, quote, 1);
        let (eth, ip, icmp, quoted) = (&mut *eth, &mut *ip, &mut *icmp, &*quoted);
        core::mem::swap(&mut eth.dst_addr, &mut eth.src_addr);
        ip.vcf = [0x60, 0, 0, 0];
        ip.payload_len = (len as u16).to_be_bytes();
        ip.next_hdr = IPPROTO_ICMPV6;
        ip.hop_limit = 64;
        ip.src_addr = quoted.dst_addr;
        ip.dst_addr = quoted.src_addr;
        let mtu = mtu.to_be_bytes();
        icmp[..ICMP_HEADER_LEN].copy_from_slice(&[ICMPV6_PACKET_TOO_BIG, 0, 0, 0, mtu[0], mtu[1], mtu[2], mtu[3]]);
        // The pseudo-header (addresses, length, next header) and the message.
        let mut tail = [0u8; 8];
        tail[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        tail[7] = IPPROTO_ICMPV6;
        let empty = core::ptr::null_mut();
        let sum = diff(empty, 0, &raw mut ip.src_addr as *mut u32, 32, 0);
        let sum = diff(empty, 0, tail.as_mut_ptr() as *mut u32, 8, sum);
        let sum = diff(empty, 0, icmp.as_mut_ptr() as *mut u32, len, sum);
        [icmp[2], icmp[3]] = apply(0xffff, u64::from(sum)).to_ne_bytes();
    }
    let frame = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i32;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, PTB_LEN as i32 - frame) } != 0 {
        return Err(ParseError::Malformed);
    }
    Ok(())
}
