//! Timestamp translation (RFC 7323 option), per flow.
//!
//! Full NAT maps many client tuples onto one backend-side tuple (balancer address and NAT port,
//! server). A server that closed first keeps that tuple in TIME_WAIT and accepts a new SYN on it
//! only if the SYN's TSval is newer than the last one it saw; clients' clocks are unrelated
//! (Linux draws a random offset per connection), so without translation every reuse of a tuple
//! is a coin flip, and a lost one costs the client a second. The SYN sent to the server is
//! therefore stamped from the tuple's own clock (`lb_common::tcp::syn_tsval`), and the flow keeps
//! the difference: the client side adds it to every TSval, the server side subtracts it from
//! every TSecr, so both ends see consistent timestamps. The server's own TSvals pass untouched
//! (its SYN cookies live there).

use aya_ebpf::programs::XdpContext;
use lb_common::{checksum, FlowOf};

use crate::{family::Family, parse::ptr_at};

/// The TSval at `ts_at` (see `options::find`).
#[inline(always)]
pub fn tsval(ctx: &XdpContext, ts_at: usize) -> Option<u32> {
    let p = ptr_at::<[u8; 4]>(ctx, ts_at & 0x7f).ok()?;
    Some(u32::from_be_bytes(unsafe { *p }))
}

/// Client -> server: TSval + `flow.ts_off`. Returns the TSval the server gets.
#[inline(always)]
pub fn to_server<A: Family>(ctx: &XdpContext, ts_at: usize, flow: &FlowOf<A>) -> Option<u32> {
    let v = tsval(ctx, ts_at)?;
    let new = v.wrapping_add(flow.ts_off);
    patch::<A>(ctx, ts_at, new)?;
    Some(new)
}

/// Server -> client: TSecr - `flow.ts_off` (the TSecr follows the TSval).
#[inline(always)]
pub fn to_client<A: Family>(ctx: &XdpContext, ts_at: usize, flow: &FlowOf<A>) -> Option<()> {
    let at = (ts_at & 0x7f) + 4;
    let p = ptr_at::<[u8; 4]>(ctx, at).ok()?;
    let old = u32::from_be_bytes(unsafe { *p });
    patch::<A>(ctx, at, old.wrapping_sub(flow.ts_off))
}

/// Writes `value` at frame offset `at` and updates the TCP checksum for it incrementally; the
/// value may start at an odd offset of the segment (an odd number of option bytes before it).
#[inline(always)]
fn patch<A: Family>(ctx: &XdpContext, at: usize, value: u32) -> Option<()> {
    let at = at & 0x7f;
    let field = ptr_at::<[u8; 4]>(ctx, at).ok()?;
    // The TCP checksum field.
    let check = ptr_at::<[u8; 2]>(ctx, A::TCP_OFF + 16).ok()?;
    let (old, new) = (unsafe { *field }, value.to_be_bytes());
    let c = u16::from_be_bytes(unsafe { *check });
    let c = if at & 1 == 0 { checksum::replace32(c, old, new) } else { checksum::replace32_odd(c, old, new) };
    unsafe {
        *field = new;
        *check = c.to_be_bytes();
    }
    Some(())
}
