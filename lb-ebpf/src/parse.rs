//! Bounds-checked header access and the parse policy.
//!
//! Policy (counted in `reason_stats`): traffic other than IPv4 and IPv6, and IP other than TCP
//! is not ours, except IPv4 ICMP errors, which may be about a tracked flow (`icmp`); IPv4
//! fragments and headers with options are not parsed further here: those of a tracked flow are
//! dropped, the others go to the kernel untouched (`main`'s `unparsed`). IPv6 fragments are
//! judged the same way (`v6`); IPv6 with other extension headers goes to the kernel untouched
//! (`ipv6_ext_header`); ICMPv6 errors may be about a tracked flow (`icmp6`), other ICMPv6
//! (neighbour discovery above all) is the kernel's; truncated or inconsistent headers go to the
//! kernel untouched.

use core::mem::size_of;

use aya_ebpf::{helpers::bpf_xdp_get_buff_len, programs::XdpContext};
use lb_common::{FlowKey, FlowKeyOf, V4, V6};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
};

use crate::family::Family;

pub const ETH_LEN: usize = EthHdr::LEN;
pub const IP_OFF: usize = ETH_LEN;
pub const TCP_OFF: usize = ETH_LEN + Ipv4Hdr::LEN;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_FRAGMENT: u8 = 44;

pub enum ParseError {
    NotOurs,
    Malformed,
    Fragment,
    IpOptions,
    /// ICMP in an IPv4 header without options, not a fragment (`icmp`), or an ICMPv6 error
    /// (`icmp6`).
    Icmp,
    /// An IPv6 frame, to the IPv4 program: it goes to `xdplb6`.
    Ipv6,
    /// IPv6 with an extension header (or a fragment): passed, counted.
    ExtHeader,
}

/// The headers of a TCP frame without IP options (IPv4) or extension headers (IPv6).
pub struct Packet<A: Family = V4> {
    pub eth: *mut EthHdr,
    pub ip: *mut A::Ip,
    pub tcp: *mut TcpHdr,
    /// Flag byte of the TCP header (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
    pub tcp_flags: u32,
    /// IP total length, host order: what the byte counters count.
    pub ip_len: u32,
    /// TCP header length in bytes (20..=60; options follow the fixed 20).
    pub tcp_len: u32,
}

/// The only way headers are reached: a pointer to a `T` at `offset`, if it fits in the frame.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ParseError> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(ParseError::Malformed);
    }
    Ok((start + offset) as *mut T)
}

/// The IP header of a TCP frame of family `A`, and the IP packet's length.
pub trait IpParse: Family {
    fn ip(ctx: &XdpContext, ether_type: u16) -> Result<(*mut Self::Ip, usize), ParseError>;
}

#[inline(always)]
pub fn parse<A: IpParse>(ctx: &XdpContext) -> Result<Packet<A>, ParseError> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let (ip, ip_len) = A::ip(ctx, u16::from_be(unsafe { (*eth).ether_type }))?;
    let tcp: *mut TcpHdr = ptr_at(ctx, A::TCP_OFF)?;
    let doff = (unsafe { *(tcp as *const u8).add(12) } >> 4) as usize;
    // The IP length must cover both headers and stay within the frame (trailing padding is fine).
    // A multi-buffer frame (jumbo, `xdp.frags`) goes on past the first buffer: its whole length
    // is asked for only then.
    if doff < 5 || ip_len < A::IP_LEN + doff * 4 {
        return Err(ParseError::Malformed);
    }
    if ETH_LEN + ip_len > ctx.data_end() - ctx.data()
        && ETH_LEN + ip_len > unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize
    {
        return Err(ParseError::Malformed);
    }
    let tcp_flags = unsafe { *(tcp as *const u8).add(13) } as u32;
    Ok(Packet { eth, ip, tcp, tcp_flags, ip_len: ip_len as u32, tcp_len: (doff * 4) as u32 })
}

impl IpParse for V6 {
    #[inline(always)]
    fn ip(ctx: &XdpContext, ether_type: u16) -> Result<(*mut Ipv6Hdr, usize), ParseError> {
        if ether_type != ETH_P_IPV6 {
            return Err(ParseError::NotOurs);
        }
        let ip: *mut Ipv6Hdr = ptr_at(ctx, IP_OFF)?;
        let (vcf, next, payload_len) = unsafe { ((*ip).vcf, (*ip).next_hdr, (*ip).payload_len) };
        if vcf[0] >> 4 != 6 {
            return Err(ParseError::Malformed);
        }
        if next != IPPROTO_TCP {
            // ICMPv6 errors (destination unreachable, packet too big, time exceeded) may be
            // about a tracked flow (`icmp6`); neighbour discovery and every other ICMPv6
            // message is the kernel's. Hop-by-hop, routing, fragment and destination options
            // may stand before a TCP header: not walked, passed and counted. Anything else
            // (UDP, ...) is simply not ours.
            if next == IPPROTO_ICMPV6 {
                let icmp: *const u8 = ptr_at(ctx, IP_OFF + Ipv6Hdr::LEN)?;
                return Err(if matches!(unsafe { *icmp }, 1..=3) { ParseError::Icmp } else { ParseError::NotOurs });
            }
            return Err(match next {
                IPPROTO_FRAGMENT => ParseError::Fragment,
                0 | 43 | 60 => ParseError::ExtHeader,
                _ => ParseError::NotOurs,
            });
        }
        // A payload length of 0 is a jumbogram's (hop-by-hop option): not ours.
        let payload = u16::from_be_bytes(payload_len) as usize;
        if payload == 0 {
            return Err(ParseError::Malformed);
        }
        Ok((ip, Ipv6Hdr::LEN + payload))
    }
}

impl IpParse for V4 {
    #[inline(always)]
    fn ip(ctx: &XdpContext, ether_type: u16) -> Result<(*mut Ipv4Hdr, usize), ParseError> {
        ipv4(ctx, ether_type)
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, ether_type: u16) -> Result<(*mut Ipv4Hdr, usize), ParseError> {
    if ether_type != ETH_P_IP {
        return Err(if ether_type == ETH_P_IPV6 { ParseError::Ipv6 } else { ParseError::NotOurs });
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, IP_OFF)?;
    let (vihl, proto, frags, tot_len) = unsafe { ((*ip).vihl, (*ip).proto, (*ip).frags, (*ip).tot_len) };
    if proto != IPPROTO_TCP {
        if proto == IPPROTO_ICMP && vihl == 0x45 && u16::from_be_bytes(frags) & 0x3fff == 0 {
            return Err(ParseError::Icmp);
        }
        return Err(ParseError::NotOurs);
    }
    if vihl >> 4 != 4 || vihl & 0x0f < 5 {
        return Err(ParseError::Malformed);
    }
    // MF set or a non-zero offset: a fragment (DF alone is fine).
    if u16::from_be_bytes(frags) & 0x3fff != 0 {
        return Err(ParseError::Fragment);
    }
    if vihl & 0x0f != 5 {
        return Err(ParseError::IpOptions);
    }
    Ok((ip, u16::from_be_bytes(tot_len) as usize))
}

impl<A: Family> Packet<A> {
    #[inline(always)]
    pub fn seq(&self) -> u32 {
        u32::from_be_bytes(unsafe { (*self.tcp).seq })
    }

    #[inline(always)]
    pub fn ack_seq(&self) -> u32 {
        u32::from_be_bytes(unsafe { (*self.tcp).ack_seq })
    }

    /// The advertised window field, unscaled.
    #[inline(always)]
    pub fn window(&self) -> u32 {
        u16::from_be_bytes(unsafe { (*self.tcp).window }) as u32
    }

    /// Where this segment ends in sequence space: payload, and one each for SYN and FIN.
    #[inline(always)]
    pub fn seq_end(&self) -> u32 {
        let payload = self.ip_len.wrapping_sub(A::IP_LEN as u32 + self.tcp_len);
        let syn_fin = (self.tcp_flags & 0x02) >> 1 | (self.tcp_flags & 0x01);
        self.seq().wrapping_add(payload).wrapping_add(syn_fin)
    }

    #[inline(always)]
    pub fn flow_key(&self) -> FlowKeyOf<A> {
        let (src, dst) = A::addrs(self.ip);
        unsafe {
            FlowKeyOf {
                src_addr: *src,
                dst_addr: *dst,
                src_port_be: u16::from_ne_bytes((*self.tcp).source),
                dst_port_be: u16::from_ne_bytes((*self.tcp).dest),
            }
        }
    }
}

/// The flow key of an IPv6 frame whose fragment header comes right after the IPv6 header, if it
/// is the first fragment of a TCP segment (a later one carries no ports); `None` otherwise.
#[inline(always)]
pub fn fragment6_key(ctx: &XdpContext) -> Option<FlowKeyOf<V6>> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, IP_OFF).ok()?;
    // Next header, reserved, offset (13 bits) and flags, identification.
    let frag: *const [u8; 8] = ptr_at(ctx, IP_OFF + Ipv6Hdr::LEN).ok()?;
    let frag = unsafe { *frag };
    if frag[0] != IPPROTO_TCP || u16::from_be_bytes([frag[2], frag[3]]) >> 3 != 0 {
        return None;
    }
    let ports: *const [u16; 2] = ptr_at(ctx, IP_OFF + Ipv6Hdr::LEN + 8).ok()?;
    let [src_port_be, dst_port_be] = unsafe { *ports };
    let (src_addr, dst_addr) = unsafe { ((*ip).src_addr, (*ip).dst_addr) };
    Some(FlowKeyOf { src_addr, dst_addr, src_port_be, dst_port_be })
}

/// The flow key of a TCP frame that `parse` did not take (a fragment, or IP options): its ports
/// follow the IP header, whatever its length; `None` for a later fragment (no TCP header) or a
/// truncated frame.
#[inline(always)]
pub fn unparsed_key(ctx: &XdpContext) -> Option<FlowKey> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, IP_OFF).ok()?;
    let (vihl, frags, src_addr, dst_addr) = unsafe { ((*ip).vihl, (*ip).frags, (*ip).src_addr, (*ip).dst_addr) };
    if u16::from_be_bytes(frags) & 0x1fff != 0 {
        return None;
    }
    let ports: *const [u16; 2] = ptr_at(ctx, ETH_LEN + (vihl & 0x0f) as usize * 4).ok()?;
    let [src_port_be, dst_port_be] = unsafe { *ports };
    Some(FlowKey { src_addr, dst_addr, src_port_be, dst_port_be })
}
