//! Replies of a server on the balancer host itself (`FLOW_LOCAL`). XDP gave the client's
//! packets to the kernel with only the destination translated (frontend -> server), so the
//! server answers the client's own address, and its packets leave through the host's stack:
//! they never meet XDP. This tc egress program, on the interfaces XDP is attached to, finds
//! them by the flow's server-side entry (the same connection table), gives them the frontend's
//! address and port back as their source, and records them as XDP's `reply` records a remote
//! server's (TCP state, counters, the SYN-ACK that the client's ACK must acknowledge).
//!
//! Packets here may be GSO super-packets with a partial checksum: the rewrite goes through the
//! kernel's checksum helpers, which know how to update either kind.

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_ktime_get_ns, macros::classifier, programs::TcContext};
use lb_common::{FLOW_DIR_SERVER, FLOW_LOCAL};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr};

use crate::{
    conntrack,
    parse::{Packet, IP_OFF, TCP_OFF},
};

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
/// `bpf_l4_csum_replace`: the field is part of the pseudo-header (an address).
const BPF_F_PSEUDO_HDR: u64 = 0x10;
const IP_CHECK_OFF: usize = IP_OFF + 10;
const IP_SRC_OFF: usize = IP_OFF + 12;
const TCP_SPORT_OFF: usize = TCP_OFF;
const TCP_CHECK_OFF: usize = TCP_OFF + 16;

#[classifier]
pub fn xdplb_egress(ctx: TcContext) -> i32 {
    egress(&ctx);
    // Whatever happened, the packet goes on: only a local flow's is changed.
    TC_ACT_OK as i32
}

#[inline(always)]
fn egress(ctx: &TcContext) {
    let Some(pkt) = parse(ctx) else { return };
    let key = pkt.flow_key();
    let Some((flow, _)) = conntrack::lookup_settled(&key) else { return };
    let f = unsafe { &*flow };
    if f.direction != FLOW_DIR_SERVER || f.seen & FLOW_LOCAL == 0 {
        return;
    }
    let (new_addr, new_port) = (f.new_src_addr, f.new_src_port_be);
    let now = unsafe { bpf_ktime_get_ns() };
    // Timestamps are never translated on a local flow: its tuple is the client's own.
    conntrack::observe(flow, &pkt, None, false, now);
    // The helpers below may move the packet: nothing read through `pkt` after them.
    let (old_addr, old_port) = (key.src_addr, key.src_port_be);
    let (old_a, new_a) = (u32::from_ne_bytes(old_addr) as u64, u32::from_ne_bytes(new_addr) as u64);
    let (old_p, new_p) = (old_port as u64, new_port as u64);
    let _ = ctx.l3_csum_replace(IP_CHECK_OFF, old_a, new_a, 4);
    let _ = ctx.l4_csum_replace(TCP_CHECK_OFF, old_a, new_a, BPF_F_PSEUDO_HDR | 4);
    let _ = ctx.l4_csum_replace(TCP_CHECK_OFF, old_p, new_p, 2);
    let _ = ctx.store(IP_SRC_OFF, &new_addr, 0);
    let _ = ctx.store(TCP_SPORT_OFF, &new_port, 0);
}

/// The headers of an IPv4/TCP packet without IP options, bounds-checked against the linear
/// part of the buffer (the headers a host stack writes are always there). Unlike XDP's, the IP
/// length may exceed the buffer: a GSO packet is cut into segments after this.
#[inline(always)]
fn parse(ctx: &TcContext) -> Option<Packet> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + TCP_OFF + TcpHdr::LEN > end {
        return None;
    }
    let eth = start as *mut EthHdr;
    let ip = (start + IP_OFF) as *mut Ipv4Hdr;
    let tcp = (start + TCP_OFF) as *mut TcpHdr;
    let (ether_type, vihl, proto, frags, tot_len) =
        unsafe { ((*eth).ether_type, (*ip).vihl, (*ip).proto, (*ip).frags, (*ip).tot_len) };
    if u16::from_be(ether_type) != ETH_P_IP || proto != IPPROTO_TCP || vihl != 0x45 {
        return None;
    }
    if u16::from_be_bytes(frags) & 0x3fff != 0 {
        return None;
    }
    let doff = (unsafe { *(tcp as *const u8).add(12) } >> 4) as u32;
    let ip_len = u16::from_be_bytes(tot_len) as u32;
    if doff < 5 || ip_len < Ipv4Hdr::LEN as u32 + doff * 4 {
        return None;
    }
    let tcp_flags = unsafe { *(tcp as *const u8).add(13) } as u32;
    Some(Packet { eth, ip, tcp, tcp_flags, ip_len, tcp_len: doff * 4 })
}
