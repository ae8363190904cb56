//! TCP options: where the timestamp option sits, and the window scale a SYN announces.
//!
//! Data segments of Linux, BSD and Windows peers carry `NOP NOP TS` first: one 4-byte compare
//! finds it; Linux's SYNs (`MSS SACK_PERM TS NOP WS`) have a layout of their own, compared whole.
//! Anything else (other stacks' SYNs, SACK blocks, odd layouts) takes a bounded walk. Options that do not parse leave the packet as it is (counted); the header
//! length never changes.

use aya_ebpf::{bindings::xdp_md, cty::c_void, helpers::bpf_loop, programs::XdpContext};
use lb_common::Event;

use crate::{
    parse::{ptr_at, Packet, TCP_OFF},
    stats,
};

const EOL: u8 = 0;
const NOP: u8 = 1;
const WSCALE: u8 = 3;
const TIMESTAMP: u8 = 8;
const TIMESTAMP_LEN: u8 = 10;
/// `NOP NOP TS(kind 8, length 10)` as the first option word, read in wire order.
const NOP_NOP_TS: [u8; 4] = [NOP, NOP, TIMESTAMP, TIMESTAMP_LEN];
/// Options looked at before giving up: a SYN has five, a data segment with SACK blocks three.
const MAX_OPTIONS: u32 = 12;

pub struct TcpOptions {
    /// Frame offset of the TSval (the TSecr follows it); 0 when the option is absent.
    pub ts_at: usize,
    /// The window scale shift, when the option is present (SYNs only, by RFC 7323).
    pub wscale: Option<u32>,
}

/// Finds the timestamp option (and, for a SYN, the window scale) of `pkt`.
#[inline(always)]
pub fn find(ctx: &XdpContext, pkt: &Packet) -> TcpOptions {
    let opt_len = pkt.tcp_len as usize - 20;
    if opt_len == 0 {
        return TcpOptions { ts_at: 0, wscale: None };
    }
    // The usual data segment: the timestamp is the first option, word-aligned.
    if let Ok(first) = ptr_at::<[u8; 4]>(ctx, TCP_OFF + 20) {
        if unsafe { *first } == NOP_NOP_TS && opt_len >= 12 && pkt.tcp_flags & 0x02 == 0 {
            return TcpOptions { ts_at: TCP_OFF + 24, wscale: None };
        }
    }
    // Linux's SYN and SYN-ACK: MSS, SACK_PERM (or NOP NOP), TS, NOP, WS.
    if opt_len == 20 {
        if let Ok(o) = ptr_at::<[u8; 20]>(ctx, TCP_OFF + 20) {
            let o = unsafe { &*o };
            if o[0..2] == [2, 4]
                && (o[4..6] == [4, 2] || o[4..6] == [NOP, NOP])
                && o[6..8] == [TIMESTAMP, TIMESTAMP_LEN]
                && o[16..19] == [NOP, WSCALE, 3]
            {
                return TcpOptions { ts_at: TCP_OFF + 28, wscale: Some(if o[19] > 14 { 14 } else { o[19] as u32 }) };
            }
        }
    }
    walk(ctx, opt_len)
}

/// The walk's state, on the caller's stack, handed to `step` by `bpf_loop`.
#[repr(C)]
struct Walk {
    /// The program's context: the frame's bounds are read from it in `step` (passed as plain
    /// numbers they would lose their packet-pointer type for the verifier).
    ctx: *mut xdp_md,
    /// Offset of the next option from the first option byte, and the options' length.
    i: u32,
    opt_len: u32,
    /// Frame offset of the TSval (0: none), the window scale + 1 (0: none), malformed (1).
    ts_at: u32,
    wscale: u32,
    malformed: u32,
}

/// The general case, one option per `bpf_loop` iteration. A loop written out here would make
/// the verifier explore every sequence of option kinds (it went past its million-instruction
/// budget); `bpf_loop`'s callback is verified once. Never inlined: one copy of the call.
#[inline(never)]
fn walk(ctx: &XdpContext, opt_len: usize) -> TcpOptions {
    let mut w = Walk { ctx: ctx.ctx, i: 0, opt_len: opt_len as u32, ts_at: 0, wscale: 0, malformed: 0 };
    unsafe {
        bpf_loop(MAX_OPTIONS, step as *const () as *mut c_void, &mut w as *mut Walk as *mut c_void, 0);
    }
    if w.malformed != 0 {
        stats::event(Event::TcpOptionsMalformed);
        return TcpOptions { ts_at: 0, wscale: None };
    }
    TcpOptions { ts_at: w.ts_at as usize, wscale: if w.wscale == 0 { None } else { Some(w.wscale - 1) } }
}

/// One option: returns 0 to go on, 1 to stop.
extern "C" fn step(_index: u64, w: *mut c_void) -> i64 {
    let w = unsafe { &mut *(w as *mut Walk) };
    if w.i >= w.opt_len {
        return 1;
    }
    // Masked so that the verifier sees the offset bounded (options end before 60 bytes).
    let at = TCP_OFF + 20 + (w.i as usize & 0x3f);
    let ctx = XdpContext::new(w.ctx);
    // Two bytes at once (kind and length): with one, the compiler folds the bounds check into a
    // form the verifier cannot use. A lone last byte can only be NOP or EOL: nothing follows.
    let Ok(head) = ptr_at::<[u8; 2]>(&ctx, at) else { return 1 };
    let [kind, len] = unsafe { *head };
    if kind == EOL {
        return 1;
    }
    if kind == NOP {
        w.i += 1;
        return 0;
    }
    if len < 2 || w.i + len as u32 > w.opt_len {
        w.malformed = 1;
        return 1;
    }
    if kind == TIMESTAMP {
        if len != TIMESTAMP_LEN {
            w.malformed = 1;
            return 1;
        }
        w.ts_at = (at + 2) as u32;
    } else if kind == WSCALE && len == 3 {
        if let Ok(opt) = ptr_at::<[u8; 3]>(&ctx, at) {
            // RFC 7323: a shift above 14 is taken as 14.
            let shift = unsafe { (*opt)[2] };
            w.wscale = if shift > 14 { 15 } else { shift as u32 + 1 };
        }
    }
    w.i += len as u32;
    0
}
