//! TCP options: where the timestamp option sits, and the window scale a SYN announces.
//!
//! Data segments of Linux, BSD and Windows peers carry `NOP NOP TS` first: one 4-byte compare
//! finds it; Linux's SYNs (`MSS SACK_PERM TS NOP WS`) have a layout of their own, compared whole.
//! Anything else (other stacks' SYNs, SACK blocks, odd layouts) takes a bounded walk. Options that do not parse leave the packet as it is (counted); the header
//! length never changes.

use aya_ebpf::{bindings::xdp_md, cty::c_void, helpers::bpf_loop, programs::XdpContext};
use lb_common::{Event, OptionsFound};

use crate::{
    family::Family,
    maps::OPTIONS_FOUND,
    parse::{ptr_at, Packet},
    stats,
};

const EOL: u8 = 0;
const NOP: u8 = 1;
const MSS: u8 = 2;
const WSCALE: u8 = 3;
const SACK_PERM: u8 = 4;
const TIMESTAMP: u8 = 8;
const TIMESTAMP_LEN: u8 = 10;
/// `NOP NOP TS(kind 8, length 10)` as the first option word, read in wire order.
const NOP_NOP_TS: [u8; 4] = [NOP, NOP, TIMESTAMP, TIMESTAMP_LEN];
/// Options looked at before giving up: a SYN has five, a data segment with SACK blocks three.
const MAX_OPTIONS: u32 = 12;

#[derive(Clone, Copy, Default)]
pub struct TcpOptions {
    /// Frame offset of the TSval (the TSecr follows it); 0 when the option is absent.
    pub ts_at: usize,
    /// The window scale shift, when the option is present (SYNs only, by RFC 7323).
    pub wscale: Option<u32>,
    /// SYNs only: the MSS announced (0: none) and whether SACK is permitted, kept so the SYN can
    /// be sent again to another server.
    pub mss: u16,
    pub sack: bool,
}

/// Finds the timestamp option (and, for a SYN, the window scale) of `pkt`.
///
/// The offset comes back through `OPTIONS_FOUND` (a per-CPU array; the verifier inlines its
/// lookup from Linux 6.10): read from a map it is a number the verifier does not know, where the
/// layouts compared whole give it constants. A constant offset that reaches the translation's
/// packet accesses is one the verifier must keep exact, so every later state of each layout was
/// a state of its own, walked through everything that follows (the stages, the rewrite, the
/// counters): on Linux 6.18 the main program took 659,329 instructions of the verifier's 1M,
/// 328,522 with this (`tests/verifier.rs`). The lookup cannot fail (index 0), but a kernel
/// before 6.14 does not know that and walks the failure too: it gets no timestamp, a constant
/// that stops translation, not a constant offset that would walk it all again. The shape is
/// the compiler's to keep: written as `let Some(f) = .. else { return .. }` it came out as 667,786
/// instructions (`tests/verifier.rs` caught it).
#[inline(always)]
pub fn find<A: Family>(ctx: &XdpContext, pkt: &Packet<A>) -> TcpOptions {
    let mut found = find_here(ctx, pkt);
    // Volatile: the compiler would hand the constant on and skip the read.
    found.ts_at = match OPTIONS_FOUND.get_ptr_mut(0) {
        Some(f) => unsafe {
            core::ptr::write_volatile(&mut (*f).ts_at, found.ts_at as u32);
            core::ptr::read_volatile(&(*f).ts_at) as usize
        },
        None => 0,
    };
    found
}

/// `find`'s work: the usual layouts compared whole, then the walk.
#[inline(always)]
fn find_here<A: Family>(ctx: &XdpContext, pkt: &Packet<A>) -> TcpOptions {
    let opt_len = pkt.tcp_len as usize - 20;
    if opt_len == 0 {
        return TcpOptions::default();
    }
    // The usual data segment: the timestamp is the first option, word-aligned.
    if let Ok(first) = ptr_at::<[u8; 4]>(ctx, A::TCP_OFF + 20) {
        if unsafe { *first } == NOP_NOP_TS && opt_len >= 12 && pkt.tcp_flags & 0x02 == 0 {
            return TcpOptions { ts_at: A::TCP_OFF + 24, ..TcpOptions::default() };
        }
    }
    // Linux's SYN and SYN-ACK: MSS, SACK_PERM (or NOP NOP), TS, NOP, WS.
    if opt_len == 20 {
        if let Ok(o) = ptr_at::<[u8; 20]>(ctx, A::TCP_OFF + 20) {
            let o = unsafe { &*o };
            let sack = o[4..6] == [SACK_PERM, 2];
            if o[0..2] == [MSS, 4]
                && (sack || o[4..6] == [NOP, NOP])
                && o[6..8] == [TIMESTAMP, TIMESTAMP_LEN]
                && o[16..19] == [NOP, WSCALE, 3]
            {
                return TcpOptions {
                    ts_at: A::TCP_OFF + 28,
                    wscale: Some(if o[19] > 14 { 14 } else { o[19] as u32 }),
                    mss: u16::from_be_bytes([o[2], o[3]]),
                    sack,
                };
            }
        }
    }
    walk::<A>(ctx, opt_len)
}

/// The walk's position, on the caller's stack, handed to `step` by `bpf_loop`. What the walk
/// finds goes to per-CPU scratch space (`OPTIONS_FOUND`): the verifier checks a `bpf_loop`
/// callback for any number of iterations, until the states it sees repeat, and values kept on
/// the stack (found or not, which option) multiply those states past its budget; values in a
/// map it does not follow.
#[repr(C)]
struct Walk {
    /// The program's context: the frame's bounds are read from it in `step` (passed as plain
    /// numbers they would lose their packet-pointer type for the verifier).
    ctx: *mut xdp_md,
    /// Offset of the next option from the first option byte, and the options' length.
    i: u32,
    opt_len: u32,
}

/// The general case, one option per `bpf_loop` iteration. A loop written out here would make
/// the verifier explore every sequence of option kinds (it went past its million-instruction
/// budget). Never inlined: one copy of the call.
#[inline(never)]
fn walk<A: Family>(ctx: &XdpContext, opt_len: usize) -> TcpOptions {
    let Some(found) = OPTIONS_FOUND.get_ptr_mut(0) else { return TcpOptions::default() };
    unsafe { *found = OptionsFound::default() };
    let mut w = Walk { ctx: ctx.ctx, i: 0, opt_len: opt_len as u32 };
    unsafe {
        bpf_loop(MAX_OPTIONS, step::<A> as *const () as *mut c_void, &mut w as *mut Walk as *mut c_void, 0);
    }
    let f = unsafe { &*found };
    if f.malformed != 0 {
        stats::event(Event::TcpOptionsMalformed);
        return TcpOptions::default();
    }
    TcpOptions {
        ts_at: f.ts_at as usize,
        wscale: if f.wscale == 0 { None } else { Some(f.wscale - 1) },
        mss: f.mss as u16,
        sack: f.sack != 0,
    }
}

/// One option: returns 0 to go on, 1 to stop.
extern "C" fn step<A: Family>(_index: u64, w: *mut c_void) -> i64 {
    let w = unsafe { &mut *(w as *mut Walk) };
    let Some(found) = OPTIONS_FOUND.get_ptr_mut(0) else { return 1 };
    let found = unsafe { &mut *found };
    if w.i >= w.opt_len {
        return 1;
    }
    // Masked so that the verifier sees the offset bounded (options end before 60 bytes).
    let at = A::TCP_OFF + 20 + (w.i as usize & 0x3f);
    let ctx = XdpContext::new(w.ctx);
    // Two bytes at once (kind and length): with one, the compiler folds the bounds check into a
    // form the verifier cannot use. A lone last byte can only be NOP or EOL: nothing follows.
    let Ok(head) = ptr_at::<[u8; 2]>(&ctx, at) else { return 1 };
    let [kind, len] = unsafe { *head };
    if kind == EOL {
        return 1;
    }
    if kind == NOP {
        w.i = next_offset(w.i, 1);
        return 0;
    }
    if len < 2 || w.i + len as u32 > w.opt_len {
        found.malformed = 1;
        return 1;
    }
    if kind == TIMESTAMP {
        if len != TIMESTAMP_LEN {
            found.malformed = 1;
            return 1;
        }
        found.ts_at = (at + 2) as u32;
    } else if kind == WSCALE && len == 3 {
        if let Ok(opt) = ptr_at::<[u8; 3]>(&ctx, at) {
            // RFC 7323: a shift above 14 is taken as 14.
            let shift = unsafe { (*opt)[2] };
            found.wscale = if shift > 14 { 15 } else { shift as u32 + 1 };
        }
    } else if kind == MSS && len == 4 {
        if let Ok(opt) = ptr_at::<[u8; 4]>(&ctx, at) {
            let o = unsafe { *opt };
            found.mss = u16::from_be_bytes([o[2], o[3]]) as u32;
        }
    } else if kind == SACK_PERM && len == 2 {
        found.sack = 1;
    }
    w.i = next_offset(w.i, len as u32);
    0
}

/// The next option's offset, kept within the options' 40 bytes: the verifier then sees a bounded
/// offset from one iteration to the next, and its states converge (checked for every possible
/// number of iterations since Linux 6.7, an unbounded offset never does).
#[inline(always)]
fn next_offset(i: u32, len: u32) -> u32 {
    let next = i + len;
    if next > 40 {
        40
    } else {
        next
    }
}
