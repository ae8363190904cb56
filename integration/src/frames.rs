//! Building and reading Ethernet/IPv4/TCP and Ethernet/IPv6/TCP frames for BPF_PROG_TEST_RUN
//! fixtures. Checksums are computed in full here, independently of the data path's incremental
//! updates.

use std::{
    fmt::Debug,
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lb_common::checksum;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// An address family's address: a [`Tcp`] of `Ipv4Addr`s is an IPv4 segment, one of
/// `Ipv6Addr`s an IPv6 segment.
pub trait Addr: Copy + Debug + Eq + Hash + Into<IpAddr> + 'static {}
impl Addr for Ipv4Addr {}
impl Addr for Ipv6Addr {}

/// A TCP segment in an Ethernet frame, IPv4 (`Tcp`, `Tcp<Ipv4Addr>`) or IPv6
/// (`Tcp<Ipv6Addr>`). `ttl` is IPv6's hop limit; `ip_id`, `frag` and `ip_options` are IPv4's
/// only, `traffic` IPv6's only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tcp<A = Ipv4Addr> {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub ttl: u8,
    pub ip_id: u16,
    /// The IP flags+fragment offset word (0x4000 = DF).
    pub frag: u16,
    pub ip_options: Vec<u8>,
    /// IPv6's traffic class and flow label: the header's first 32 bits after the version.
    pub traffic: u32,
    pub tcp_options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl<A: Addr> Tcp<A> {
    pub fn new(src: (A, u16), dst: (A, u16), flags: u8) -> Tcp<A> {
        Tcp {
            dst_mac: [0x02, 0, 0, 0, 0, 0x10],
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
            seq: 1000,
            ack: 0,
            flags,
            window: 64240,
            ttl: 64,
            ip_id: 0x1234,
            frag: 0x4000,
            ip_options: Vec::new(),
            traffic: 0,
            // A SYN's usual MSS option, so that a RST built from it must drop options.
            tcp_options: if flags & SYN != 0 { vec![2, 4, 0x05, 0xb4] } else { Vec::new() },
            payload: Vec::new(),
        }
    }

    pub fn frame(&self) -> Vec<u8> {
        assert!(self.ip_options.len().is_multiple_of(4) && self.tcp_options.len().is_multiple_of(4));
        let thl = 20 + self.tcp_options.len();
        let tcp_len = thl + self.payload.len();
        let mut f = Vec::with_capacity(14 + 60 + tcp_len);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        let (src, dst) = (self.src.into(), self.dst.into());
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let ihl = 20 + self.ip_options.len();
                let total = ihl + tcp_len;
                f.extend_from_slice(&ETH_P_IP.to_be_bytes());
                let ip_start = f.len();
                f.push(0x40 | (ihl / 4) as u8);
                f.push(0);
                f.extend_from_slice(&(total as u16).to_be_bytes());
                f.extend_from_slice(&self.ip_id.to_be_bytes());
                f.extend_from_slice(&self.frag.to_be_bytes());
                f.push(self.ttl);
                f.push(6);
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                f.extend_from_slice(&self.ip_options);
                let c = checksum::ipv4_header(&f[ip_start..ip_start + ihl]);
                f[ip_start + 10..ip_start + 12].copy_from_slice(&c.to_be_bytes());
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                assert!(self.ip_options.is_empty(), "IPv6 has no header options (see `with_hop_by_hop`)");
                f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                f.extend_from_slice(&(0x6000_0000 | (self.traffic & 0x0fff_ffff)).to_be_bytes());
                f.extend_from_slice(&(tcp_len as u16).to_be_bytes());
                f.push(6);
                f.push(self.ttl);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
            }
            _ => unreachable!("one family per segment"),
        }
        let tcp_start = f.len();
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        f.extend_from_slice(&self.seq.to_be_bytes());
        f.extend_from_slice(&self.ack.to_be_bytes());
        f.push(((thl / 4) as u8) << 4);
        f.push(self.flags);
        f.extend_from_slice(&self.window.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&self.tcp_options);
        f.extend_from_slice(&self.payload);
        let c = match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => checksum::tcp_ipv4(src.octets(), dst.octets(), &f[tcp_start..]),
            (IpAddr::V6(src), IpAddr::V6(dst)) => checksum::tcp_ipv6(src.octets(), dst.octets(), &f[tcp_start..]),
            _ => unreachable!("one family per segment"),
        };
        f[tcp_start + 16..tcp_start + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// The same segment with addresses, ports and MACs replaced (what NAT should produce).
    pub fn with(&self, src: (A, u16), dst: (A, u16), src_mac: [u8; 6], dst_mac: [u8; 6]) -> Tcp<A> {
        Tcp { src: src.0, sport: src.1, dst: dst.0, dport: dst.1, src_mac, dst_mac, ..self.clone() }
    }
}

/// Reads the fields of an IPv4/TCP frame without IP options (None for anything else).
pub fn parse(f: &[u8]) -> Option<Tcp> {
    if f.len() < 54 || u16::from_be_bytes([f[12], f[13]]) != ETH_P_IP || f[14] != 0x45 || f[23] != 6 {
        return None;
    }
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    let t = 34;
    let thl = ((f[t + 12] >> 4) as usize) * 4;
    if thl < 20 || f.len() < 14 + total || total < 20 + thl {
        return None;
    }
    let b = |i: usize| -> [u8; 4] { f[i..i + 4].try_into().unwrap() };
    Some(Tcp {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        src: Ipv4Addr::from(b(26)),
        dst: Ipv4Addr::from(b(30)),
        sport: u16::from_be_bytes([f[t], f[t + 1]]),
        dport: u16::from_be_bytes([f[t + 2], f[t + 3]]),
        seq: u32::from_be_bytes(b(t + 4)),
        ack: u32::from_be_bytes(b(t + 8)),
        flags: f[t + 13],
        window: u16::from_be_bytes([f[t + 14], f[t + 15]]),
        ttl: f[22],
        ip_id: u16::from_be_bytes([f[18], f[19]]),
        frag: u16::from_be_bytes([f[20], f[21]]),
        ip_options: Vec::new(),
        traffic: 0,
        tcp_options: f[t + 20..t + thl].to_vec(),
        payload: f[t + thl..14 + total].to_vec(),
    })
}

/// Reads the fields of an IPv6/TCP frame whose TCP header follows the IPv6 header (None for
/// anything else: extension headers included).
pub fn parse6(f: &[u8]) -> Option<Tcp<Ipv6Addr>> {
    if f.len() < 74 || u16::from_be_bytes([f[12], f[13]]) != ETH_P_IPV6 || f[14] >> 4 != 6 || f[20] != 6 {
        return None;
    }
    let payload = u16::from_be_bytes([f[18], f[19]]) as usize;
    let t = 54;
    let thl = ((f[t + 12] >> 4) as usize) * 4;
    if thl < 20 || f.len() < t + payload || payload < thl {
        return None;
    }
    let b = |i: usize| -> [u8; 4] { f[i..i + 4].try_into().unwrap() };
    let a = |i: usize| -> [u8; 16] { f[i..i + 16].try_into().unwrap() };
    Some(Tcp {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        src: Ipv6Addr::from(a(22)),
        dst: Ipv6Addr::from(a(38)),
        sport: u16::from_be_bytes([f[t], f[t + 1]]),
        dport: u16::from_be_bytes([f[t + 2], f[t + 3]]),
        seq: u32::from_be_bytes(b(t + 4)),
        ack: u32::from_be_bytes(b(t + 8)),
        flags: f[t + 13],
        window: u16::from_be_bytes([f[t + 14], f[t + 15]]),
        ttl: f[21],
        ip_id: 0,
        frag: 0,
        ip_options: Vec::new(),
        traffic: u32::from_be_bytes(b(14)) & 0x0fff_ffff,
        tcp_options: f[t + 20..t + thl].to_vec(),
        payload: f[t + thl..t + payload].to_vec(),
    })
}

/// Both checksums of an IPv4/TCP frame (options allowed) verify; for an ICMP error, all of its
/// (`icmp_checksums_valid`); for an IPv6/TCP frame (no extension headers), its TCP checksum.
pub fn checksums_valid(f: &[u8]) -> bool {
    if f.len() >= 14 && u16::from_be_bytes([f[12], f[13]]) == ETH_P_IPV6 {
        if f.len() >= 54 + 8 && f[20] == 58 {
            return icmp6_checksums_valid(f);
        }
        if f.len() < 54 + 20 || f[20] != 6 {
            return false;
        }
        let payload = u16::from_be_bytes([f[18], f[19]]) as usize;
        if f.len() < 54 + payload || payload < 20 {
            return false;
        }
        let (src, dst): ([u8; 16], [u8; 16]) = (f[22..38].try_into().unwrap(), f[38..54].try_into().unwrap());
        return checksum::tcp_ipv6(src, dst, &f[54..54 + payload]) == 0;
    }
    if f.len() < 34 {
        return false;
    }
    if f[23] == 1 {
        return icmp_checksums_valid(f);
    }
    let ihl = ((f[14] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    if f.len() < 14 + total || total < ihl + 20 {
        return false;
    }
    let src: [u8; 4] = f[26..30].try_into().unwrap();
    let dst: [u8; 4] = f[30..34].try_into().unwrap();
    checksum::ipv4_header(&f[14..14 + ihl]) == 0 && checksum::tcp_ipv4(src, dst, &f[14 + ihl..14 + total]) == 0
}

pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// An IPv4 packet of another protocol (17 UDP, 1 ICMP) with a small payload.
pub fn ipv4_other(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut t = Tcp::new((src, 1), (dst, 2), ACK).frame();
    t.truncate(34);
    t[23] = proto;
    t[16..18].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    t.extend_from_slice(payload);
    t[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header(&t[14..34]);
    t[24..26].copy_from_slice(&c.to_be_bytes());
    t
}

/// An IPv6 TCP SYN to port `dport` (the data path does not serve IPv6).
pub fn ipv6_tcp_syn(dport: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x10, 0x02, 0, 0, 0, 0, 0x01, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
    f.extend_from_slice(
        &[0x20, 0x01, 0x0d, 0xb8].iter().chain([0u8; 11].iter()).chain([1u8].iter()).copied().collect::<Vec<_>>(),
    );
    f.extend_from_slice(
        &[0x20, 0x01, 0x0d, 0xb8].iter().chain([0u8; 11].iter()).chain([2u8].iter()).copied().collect::<Vec<_>>(),
    );
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = SYN;
    f.extend_from_slice(&tcp);
    f
}

/// `frame`, an IPv6 frame (`Tcp<Ipv6Addr>::frame`), with an 8-byte hop-by-hop options header
/// (one PadN option) between its IPv6 header and what followed it. The upper-layer checksum
/// stays valid: its pseudo-header's length is the upper layer's, unchanged.
pub fn with_hop_by_hop(frame: &[u8]) -> Vec<u8> {
    assert_eq!(u16::from_be_bytes([frame[12], frame[13]]), ETH_P_IPV6);
    let mut f = frame[..54].to_vec();
    let next = f[20];
    f[20] = 0;
    let payload = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&payload.to_be_bytes());
    f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    f.extend_from_slice(&frame[54..]);
    f
}

/// An ICMPv6 neighbour solicitation from `src` (`src_mac`) for `target`, to its solicited-node
/// multicast address, with the source link-layer address option; hop limit 255 and the ICMPv6
/// checksum (over the IPv6 pseudo-header) computed in full.
pub fn neighbour_solicitation(src_mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(t[13]), u16::from_be_bytes([t[14], t[15]]));
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&src_mac);
    let len = icmp.len() as u32;
    let pseudo = checksum::sum_words(&src.octets()) + checksum::sum_words(&group.octets()) + len + 58;
    let c = !checksum::fold(pseudo + checksum::sum_words(&icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x33, 0x33, 0xff, t[13], t[14], t[15]];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&group.octets());
    f.extend_from_slice(&icmp);
    f
}

/// An ICMPv6 error from `src` to `dst` (hop limit 64): `icmp_type`, `code`, the 4 bytes after
/// the checksum (a packet-too-big's MTU), then `quote` (the packet it is about, from its IPv6
/// header on); the checksum over the IPv6 pseudo-header computed in full.
pub fn icmp6_error(
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    quote: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![icmp_type, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quote);
    let len = icmp.len() as u32;
    let pseudo = checksum::sum_words(&src.octets()) + checksum::sum_words(&dst.octets()) + len + 58;
    let c = !checksum::fold(checksum::fold(pseudo) as u32 + checksum::fold(checksum::sum_words(&icmp)) as u32);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// Whether every checksum of an ICMPv6 error frame (`icmp6_error`'s shape) holds: the ICMPv6
/// checksum over its pseudo-header, and the quoted TCP segment's when the quote holds all of it.
pub fn icmp6_checksums_valid(f: &[u8]) -> bool {
    let payload = u16::from_be_bytes([f[18], f[19]]) as usize;
    if f.len() < 54 + payload || payload < 8 {
        return false;
    }
    let icmp = &f[54..54 + payload];
    let pseudo = checksum::sum_words(&f[22..54]) + payload as u32 + 58;
    if checksum::fold(checksum::fold(pseudo) as u32 + checksum::fold(checksum::sum_words(icmp)) as u32) != 0xffff {
        return false;
    }
    let quote = &icmp[8..];
    if quote.len() >= 40 + 20 && quote[6] == 6 {
        let inner = u16::from_be_bytes([quote[4], quote[5]]) as usize;
        if quote.len() >= 40 + inner {
            let (src, dst): ([u8; 16], [u8; 16]) =
                (quote[8..24].try_into().unwrap(), quote[24..40].try_into().unwrap());
            return checksum::tcp_ipv6(src, dst, &quote[40..40 + inner]) == 0;
        }
    }
    true
}

/// Linux's SYN options: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
pub fn syn_options(tsval: u32, tsecr: u32) -> Vec<u8> {
    [&[2, 4, 0x05, 0xb4, 4, 2, 8, 10][..], &tsval.to_be_bytes(), &tsecr.to_be_bytes(), &[1, 3, 3, 7]].concat()
}

/// A data segment's usual options: NOP NOP TS.
pub fn ts_options(tsval: u32, tsecr: u32) -> Vec<u8> {
    [&[1, 1, 8, 10][..], &tsval.to_be_bytes(), &tsecr.to_be_bytes()].concat()
}

/// ICMPv6 error types.
pub const ICMP6_DEST_UNREACH: u8 = 1;
pub const ICMP6_PACKET_TOO_BIG: u8 = 2;
pub const ICMP6_TIME_EXCEEDED: u8 = 3;

/// `frame` (an IPv6 TCP frame) as a fragment: an 8-byte fragment header before the TCP header,
/// at `offset` (8-byte units), with more fragments to come (`more`).
pub fn with_fragment_header(frame: &[u8], offset: u16, more: bool) -> Vec<u8> {
    assert_eq!(u16::from_be_bytes([frame[12], frame[13]]), ETH_P_IPV6);
    let mut f = frame[..54].to_vec();
    let next = f[20];
    f[20] = 44;
    let payload = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&payload.to_be_bytes());
    let off = (offset << 3 | u16::from(more)).to_be_bytes();
    f.extend_from_slice(&[next, 0, off[0], off[1], 0x12, 0x34, 0x56, 0x78]);
    f.extend_from_slice(&frame[54..]);
    f
}

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMP_TIME_EXCEEDED: u8 = 11;

/// An ICMP error from `src` to `dst`: `icmp_type`, `code`, the 4 bytes after the checksum
/// (`rest`: a frag-needed's next-hop MTU in the last two) and `quote`, the start of the IPv4
/// packet it is about. Every checksum computed in full.
#[allow(clippy::too_many_arguments)]
pub fn icmp_error(
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    quote: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![icmp_type, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quote);
    let c = !checksum::fold(checksum::sum_words(&icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let mut ip = vec![0x45, 0xc0];
    ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x43, 0x21, 0, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum::ipv4_header(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// Whether every checksum of an ICMP error frame (`icmp_error`'s shape) holds: outer IPv4, ICMP,
/// the quoted IPv4 header, and the quoted TCP segment's when the quote holds all of it.
pub fn icmp_checksums_valid(f: &[u8]) -> bool {
    if f.len() < 14 + 20 + 8 + 20 || checksum::ipv4_header(&f[14..34]) != 0 {
        return false;
    }
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    let icmp = &f[34..14 + total];
    if checksum::fold(checksum::sum_words(icmp)) != 0xffff {
        return false;
    }
    let quote = &icmp[8..];
    if checksum::ipv4_header(&quote[..20]) != 0 {
        return false;
    }
    let quoted_total = u16::from_be_bytes([quote[2], quote[3]]) as usize;
    if quote.len() < quoted_total {
        return true;
    }
    let (src, dst): ([u8; 4], [u8; 4]) = (quote[12..16].try_into().unwrap(), quote[16..20].try_into().unwrap());
    checksum::tcp_ipv4(src, dst, &quote[20..quoted_total]) == 0
}
