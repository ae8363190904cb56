//! TCP arithmetic of the data path, kept here so host tests exercise the exact code XDP runs:
//! sequence-space comparisons (RFC 1982 serial arithmetic), the window check of exact tracking,
//! and the per-tuple timestamp clock of timestamp translation.

/// `a` comes after `b` in sequence (or timestamp) space.
#[inline(always)]
pub fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The window assumed for a side that has not advertised a larger one yet (its SYN's window is
/// unscaled, and a RST may come before anything else).
pub const MIN_WINDOW: u32 = 65_535;
/// Windows are capped here so that the signed comparison below stays meaningful.
pub const MAX_WINDOW: u32 = 1 << 30;

/// Whether a RST or FIN with sequence number `seq`, from a side whose furthest segment so far
/// ended at `sent_end`, lies within the window its peer advertised (`peer_win`, the largest
/// seen). A side's own RST carries its next sequence number, which is at most `sent_end` and at
/// least what the peer acknowledged, so a real one is always inside; a blind one is not, unless
/// it was guessed to within a window.
#[inline(always)]
pub fn in_window(seq: u32, sent_end: u32, peer_win: u32) -> bool {
    let w = peer_win.clamp(MIN_WINDOW, MAX_WINDOW);
    let d = seq.wrapping_sub(sent_end) as i32;
    d >= -(w as i32) && d <= w as i32
}

/// The timestamp clock: milliseconds of the balancer's monotonic clock. RFC 7323 clients tick at
/// most once a millisecond, so a TSval that started from this clock on a tuple never gets ahead
/// of it; the next SYN on the tuple, stamped from the clock, is newer than anything before.
#[inline(always)]
pub fn ts_clock(now_ns: u64) -> u32 {
    (now_ns / 1_000_000) as u32
}

/// A secret-keyed hash of a backend-side tuple (balancer address and NAT port, server address
/// and port, as on the wire): the per-tuple offset of the timestamp clock, so that servers see
/// unrelated clocks on different tuples and never the balancer's uptime. murmur3's finaliser
/// over the mixed words: cheap, and enough to hide a clock (it is not a MAC).
#[inline(always)]
pub fn tuple_hash(src: u32, src_port_be: u16, dst: u32, dst_port_be: u16, secret: [u32; 2]) -> u32 {
    let mut h = secret[0];
    for w in [src, dst, ((src_port_be as u32) << 16) | dst_port_be as u32, secret[1]] {
        h ^= w.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    mix32(h)
}

/// murmur3's finaliser: every input bit moves about half of the output bits (neighbouring
/// addresses land far apart).
#[inline(always)]
pub fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// What a tuple's previous flow left, when its entries still linger: the TSval of its SYN and
/// when that was sent, and the last TSval it sent if known. Plain numbers (no `Option`): the
/// data path passes it around, and the BPF verifier wants simple stack slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PreviousOnTuple {
    pub syn_tsval: u32,
    pub last_tsval: u32,
    pub syn_ns: u64,
    /// `PREVIOUS_*` bits: what of the above is known.
    pub known: u32,
    pub _pad: u32,
}

/// The tuple had a previous flow (`syn_tsval`, `syn_ns` are its).
pub const PREVIOUS_FLOW: u32 = 1;
/// The previous flow's last TSval is known (its client side still lingers).
pub const PREVIOUS_LAST: u32 = 2;

/// The TSval of a SYN on a backend-side tuple: the tuple's clock (`ts_clock` + `hash`), raised
/// if needed above what the previous flow on the tuple may have sent (its SYN's TSval plus the
/// milliseconds since, and its last TSval + 1 when known), so that a server holding the tuple in
/// TIME_WAIT takes the SYN (RFC 7323 PAWS, Linux's `tcp_timewait_state_process`). Returns the
/// TSval and whether it was raised.
#[inline(always)]
pub fn syn_tsval(now_ns: u64, hash: u32, prev: &PreviousOnTuple) -> (u32, bool) {
    let mut v = ts_clock(now_ns).wrapping_add(hash);
    let mut raised = false;
    if prev.known & PREVIOUS_FLOW != 0 {
        let bound = prev.syn_tsval.wrapping_add(ts_clock(now_ns).wrapping_sub(ts_clock(prev.syn_ns)));
        if after(bound, v) {
            v = bound;
            raised = true;
        }
    }
    if prev.known & PREVIOUS_LAST != 0 && !after(v, prev.last_tsval) {
        v = prev.last_tsval.wrapping_add(1);
        raised = true;
    }
    (v, raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn sequence_space_wraps() {
        assert!(after(1, 0) && after(0, u32::MAX) && after(5, u32::MAX - 5));
        assert!(!after(0, 0) && !after(u32::MAX, 0));
    }

    #[test]
    fn window_check_takes_a_window_either_side_and_wraps() {
        let end = 0xffff_ff00;
        assert!(in_window(end, end, 0));
        assert!(in_window(end.wrapping_add(65_535), end, 0), "the minimum window applies");
        assert!(!in_window(end.wrapping_add(65_536), end, 0));
        assert!(in_window(end.wrapping_sub(65_535), end, 0));
        assert!(in_window(end.wrapping_add(1_000_000), end, 1_000_000));
        assert!(!in_window(end.wrapping_add(1_000_001), end, 1_000_000));
        assert!(!in_window(end.wrapping_add(0x8000_0000), end, u32::MAX), "a huge window is capped");
    }

    #[test]
    fn the_tuple_clock_hides_uptime_and_differs_per_tuple() {
        let secret = [0x1234_5678, 0x9abc_def0];
        let a = tuple_hash(
            u32::from_ne_bytes([198, 18, 0, 10]),
            40000u16.to_be(),
            u32::from_ne_bytes([198, 18, 0, 21]),
            2379u16.to_be(),
            secret,
        );
        let b = tuple_hash(
            u32::from_ne_bytes([198, 18, 0, 10]),
            40001u16.to_be(),
            u32::from_ne_bytes([198, 18, 0, 21]),
            2379u16.to_be(),
            secret,
        );
        let c = tuple_hash(
            u32::from_ne_bytes([198, 18, 0, 10]),
            40000u16.to_be(),
            u32::from_ne_bytes([198, 18, 0, 21]),
            2379u16.to_be(),
            [1, 2],
        );
        assert!(a != b && a != c && b != c);
        assert_eq!(
            a,
            tuple_hash(
                u32::from_ne_bytes([198, 18, 0, 10]),
                40000u16.to_be(),
                u32::from_ne_bytes([198, 18, 0, 21]),
                2379u16.to_be(),
                secret
            )
        );
    }

    #[test]
    fn a_syn_on_a_reused_tuple_is_newer_than_anything_the_previous_flow_sent() {
        let h = 0xdead_beef;
        // First flow at 10 s: the clock.
        let none = PreviousOnTuple::default();
        let (first, raised) = syn_tsval(10_000 * MS, h, &none);
        assert_eq!((first, raised), (10_000u32.wrapping_add(h), false));
        // The client then ticked at 1 kHz for 5 s and the flow closed; the port comes back 2 s later.
        let last = first.wrapping_add(5_000);
        let both = PREVIOUS_FLOW | PREVIOUS_LAST;
        let prev = PreviousOnTuple { syn_tsval: first, syn_ns: 10_000 * MS, last_tsval: last, known: both, _pad: 0 };
        let (next, raised) = syn_tsval(17_000 * MS, h, &prev);
        assert!(after(next, last) && !raised, "the clock alone is ahead");
        // A client that ticked faster than RFC 7323 allows: the last TSval wins.
        let fast = PreviousOnTuple { last_tsval: first.wrapping_add(9_000), ..prev };
        let (next, raised) = syn_tsval(17_000 * MS, h, &fast);
        assert_eq!((next, raised), (first.wrapping_add(9_001), true));
        // A previous SYN that had been raised carries its lead forward.
        let led = PreviousOnTuple { syn_tsval: first.wrapping_add(50_000), known: PREVIOUS_FLOW, ..prev };
        let (next, raised) = syn_tsval(17_000 * MS, h, &led);
        assert_eq!((next, raised), (first.wrapping_add(57_000), true));
        // Wrapping around 2^32 changes nothing.
        let (w, _) = syn_tsval(10_000 * MS, u32::MAX - 5_000, &none);
        let prev = PreviousOnTuple {
            syn_tsval: w,
            syn_ns: 10_000 * MS,
            last_tsval: w.wrapping_add(6_000),
            known: both,
            _pad: 0,
        };
        let (next, _) = syn_tsval(17_000 * MS, u32::MAX - 5_000, &prev);
        assert!(after(next, w.wrapping_add(6_000)));
    }
}
