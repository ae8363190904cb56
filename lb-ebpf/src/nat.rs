//! Full-NAT rewrite of addresses and ports with incremental checksum updates (RFC 1624).

use lb_common::{checksum, FlowOf};

use crate::{family::Family, parse::Packet};

/// Rewrites source and destination address and port as `flow` says, fixing the TCP checksum
/// (its pseudo-header covers the addresses too) and IPv4's header checksum.
#[inline(always)]
pub fn rewrite<A: Family>(pkt: &Packet<A>, flow: &FlowOf<A>) {
    let tcp = unsafe { &mut *pkt.tcp };
    // The entry's two addresses are adjacent (`#[repr(C)]`, asserted in lb-common).
    let new = unsafe { &*(&raw const flow.new_src_addr as *const [A; 2]) };
    let mut tcp_check = A::translate(pkt.ip, u16::from_be_bytes(tcp.check), new);

    let new_sport = flow.new_src_port_be.to_ne_bytes();
    let new_dport = flow.new_dst_port_be.to_ne_bytes();
    tcp_check = checksum::replace16(tcp_check, u16::from_be_bytes(tcp.source), u16::from_be_bytes(new_sport));
    tcp_check = checksum::replace16(tcp_check, u16::from_be_bytes(tcp.dest), u16::from_be_bytes(new_dport));

    tcp.source = new_sport;
    tcp.dest = new_dport;
    tcp.check = tcp_check.to_be_bytes();
}
