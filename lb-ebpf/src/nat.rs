//! Full-NAT rewrite of addresses and ports with incremental checksum updates (RFC 1624).

use lb_common::{checksum, Flow};

use crate::parse::Packet;

/// Rewrites source and destination address and port as `flow` says, fixing the IP and TCP
/// checksums (the TCP pseudo-header covers the addresses too).
#[inline(always)]
pub fn rewrite(pkt: &Packet, flow: &Flow) {
    let ip = unsafe { &mut *pkt.ip };
    let tcp = unsafe { &mut *pkt.tcp };

    let ip_check = u16::from_be_bytes(ip.check);
    let ip_check = checksum::replace32(ip_check, ip.src_addr, flow.new_src_addr);
    let ip_check = checksum::replace32(ip_check, ip.dst_addr, flow.new_dst_addr);

    let new_sport = flow.new_src_port_be.to_ne_bytes();
    let new_dport = flow.new_dst_port_be.to_ne_bytes();
    let mut tcp_check = u16::from_be_bytes(tcp.check);
    tcp_check = checksum::replace32(tcp_check, ip.src_addr, flow.new_src_addr);
    tcp_check = checksum::replace32(tcp_check, ip.dst_addr, flow.new_dst_addr);
    tcp_check = checksum::replace16(tcp_check, u16::from_be_bytes(tcp.source), u16::from_be_bytes(new_sport));
    tcp_check = checksum::replace16(tcp_check, u16::from_be_bytes(tcp.dest), u16::from_be_bytes(new_dport));

    ip.src_addr = flow.new_src_addr;
    ip.dst_addr = flow.new_dst_addr;
    ip.check = ip_check.to_be_bytes();
    tcp.source = new_sport;
    tcp.dest = new_dport;
    tcp.check = tcp_check.to_be_bytes();
}
