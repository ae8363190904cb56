//! Refusing a SYN that no server can take: the SYN is turned into a RST|ACK in place and sent
//! back where it came from, so the client fails fast and tries its next endpoint. Each source
//! address gets a burst of RSTs and then a few a second (`rst_limit`); beyond, its SYNs are
//! dropped and counted, so spoofed SYNs cannot make the balancer flood anyone with RSTs.

use aya_ebpf::{
    bindings::{xdp_action, BPF_NOEXIST},
    helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{checksum, Reason, RstBucket, Settings, RST_BURST, SETTINGS_F_RST_NO_BACKEND, TCP_ACK, TCP_RST};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr};

use crate::{
    maps::RST_LIMIT,
    parse::{ptr_at, ParseError, IP_OFF, TCP_OFF},
};

const RST_FRAME_LEN: usize = TCP_OFF + TcpHdr::LEN;

#[inline(always)]
pub fn no_backend(ctx: &XdpContext, settings: &Settings) -> (Reason, u32) {
    if settings.flags & SETTINGS_F_RST_NO_BACKEND == 0 {
        return (Reason::NoBackend, xdp_action::XDP_DROP);
    }
    if !rst_allowed(ctx) {
        return (Reason::RstLimited, xdp_action::XDP_DROP);
    }
    match build_rst(ctx) {
        Ok(()) => (Reason::NoBackend, xdp_action::XDP_TX),
        Err(_) => (Reason::NoBackend, xdp_action::XDP_DROP),
    }
}

/// Whether the SYN's source may be answered with one more RST. A source seen for the first time
/// starts with a full burst; when the map cannot remember it, it is answered (the map is an LRU:
/// that happens only under memory pressure).
#[inline(always)]
fn rst_allowed(ctx: &XdpContext) -> bool {
    let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, IP_OFF) else { return false };
    let src = unsafe { (*ip).src_addr };
    let now = unsafe { bpf_ktime_get_ns() };
    match RST_LIMIT.get_ptr_mut(&src) {
        Some(b) => unsafe { (*b).take(now) },
        None => {
            let fresh = RstBucket { refilled_ns: now, tokens: RST_BURST - 1, _pad: 0 };
            let _ = RST_LIMIT.insert(&src, &fresh, BPF_NOEXIST as u64);
            true
        }
    }
}

#[inline(always)]
fn build_rst(ctx: &XdpContext) -> Result<(), ParseError> {
    // Drop TCP options and payload: a RST is the bare 20-byte header.
    let len = (ctx.data_end() - ctx.data()) as i32;
    let delta = RST_FRAME_LEN as i32 - len;
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(ParseError::Malformed);
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, IP_OFF)?;
    let tcp: *mut TcpHdr = ptr_at(ctx, TCP_OFF)?;
    let (eth, ip, tcp) = unsafe { (&mut *eth, &mut *ip, &mut *tcp) };

    core::mem::swap(&mut eth.dst_addr, &mut eth.src_addr);

    core::mem::swap(&mut ip.src_addr, &mut ip.dst_addr);
    ip.tos = 0;
    ip.tot_len = ((Ipv4Hdr::LEN + TcpHdr::LEN) as u16).to_be_bytes();
    ip.id = [0, 0];
    ip.frags = [0x40, 0]; // DF
    ip.ttl = 64;
    ip.check = [0, 0];
    let ip_bytes = unsafe { &*(ip as *const Ipv4Hdr as *const [u8; Ipv4Hdr::LEN]) };
    ip.check = checksum::ipv4_header(ip_bytes).to_be_bytes();

    // RFC 793: a RST for a SYN carries ACK = SEG.SEQ + 1 (the SYN's own sequence slot).
    let seq = u32::from_be_bytes(tcp.seq);
    core::mem::swap(&mut tcp.source, &mut tcp.dest);
    tcp.ack_seq = seq.wrapping_add(1).to_be_bytes();
    tcp.seq = [0; 4];
    let hdr = unsafe { &mut *(tcp as *mut TcpHdr as *mut [u8; TcpHdr::LEN]) };
    hdr[12] = 5 << 4;
    hdr[13] = (TCP_RST | TCP_ACK) as u8;
    tcp.window = [0, 0];
    tcp.urg_ptr = [0, 0];
    tcp.check = [0, 0];
    let hdr = unsafe { &*(tcp as *const TcpHdr as *const [u8; TcpHdr::LEN]) };
    tcp.check = checksum::tcp_ipv4(ip.src_addr, ip.dst_addr, hdr).to_be_bytes();
    Ok(())
}
