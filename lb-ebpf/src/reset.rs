//! Refusing a SYN that no server can take: the SYN is turned into a RST|ACK in place and sent
//! back where it came from, so the client fails fast and tries its next endpoint. Each source
//! address gets a burst of RSTs and then a few a second (`rst_limit`, `rst_limit6`); beyond, its
//! SYNs are dropped and counted, so spoofed SYNs cannot make the balancer flood anyone with RSTs.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use lb_common::{Reason, Settings, SETTINGS_F_RST_NO_BACKEND, TCP_ACK, TCP_RST};
use network_types::{eth::EthHdr, tcp::TcpHdr};

use crate::{
    family::Family,
    parse::{ptr_at, ParseError, IP_OFF},
};

#[inline(always)]
pub fn no_backend<A: Family>(ctx: &XdpContext, settings: &Settings) -> (Reason, u32) {
    if settings.flags & SETTINGS_F_RST_NO_BACKEND == 0 {
        return (Reason::NoBackend, xdp_action::XDP_DROP);
    }
    let Ok(ip) = ptr_at::<A::Ip>(ctx, IP_OFF) else { return (Reason::NoBackend, xdp_action::XDP_DROP) };
    let (src, _) = A::addrs(ip);
    if !A::rst_allowed(unsafe { &*src }) {
        return (Reason::RstLimited, xdp_action::XDP_DROP);
    }
    match build_rst::<A>(ctx) {
        Ok(()) => (Reason::NoBackend, xdp_action::XDP_TX),
        Err(_) => (Reason::NoBackend, xdp_action::XDP_DROP),
    }
}

#[inline(always)]
fn build_rst<A: Family>(ctx: &XdpContext) -> Result<(), ParseError> {
    // Drop TCP options and payload: a RST is the bare 20-byte header.
    let len = (ctx.data_end() - ctx.data()) as i32;
    let delta = (A::TCP_OFF + TcpHdr::LEN) as i32 - len;
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(ParseError::Malformed);
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let ip: *mut A::Ip = ptr_at(ctx, IP_OFF)?;
    let tcp: *mut TcpHdr = ptr_at(ctx, A::TCP_OFF)?;
    let (eth, tcp) = unsafe { (&mut *eth, &mut *tcp) };

    core::mem::swap(&mut eth.dst_addr, &mut eth.src_addr);
    let (src, dst) = A::addrs(ip);
    let (src, dst) = unsafe { (*src, *dst) };
    A::write_header(ip, dst, src, TcpHdr::LEN);

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
    tcp.check = A::tcp_checksum(ip, hdr).to_be_bytes();
    Ok(())
}
