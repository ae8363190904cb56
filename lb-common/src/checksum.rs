//! Internet checksum arithmetic (RFC 1071) and incremental updates (RFC 1624).
//!
//! XDP has no `bpf_l4_csum_replace`, so the data path patches checksums itself with these plain
//! functions; host unit tests check them against a full recompute. All values are 16-bit words
//! as read from the wire (`u16::from_be_bytes`), and a checksum field is handled the same way.

/// Folds a 32-bit one's complement accumulator into 16 bits (not inverted).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') for one 16-bit word changing from `old` to `new`.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check as u32) + (!old as u32) + (new as u32);
    !fold(sum)
}

/// The same for a 32-bit field (an IPv4 address), as two 16-bit words.
#[inline(always)]
pub fn replace32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let sum = (!check as u32)
        + (!u16::from_be_bytes([old[0], old[1]]) as u32)
        + (!u16::from_be_bytes([old[2], old[3]]) as u32)
        + (u16::from_be_bytes([new[0], new[1]]) as u32)
        + (u16::from_be_bytes([new[2], new[3]]) as u32);
    !fold(sum)
}

/// The same for a 32-bit field that starts at an odd byte offset of the checksummed data (a TCP
/// timestamp after an odd number of option bytes). The one's complement sum does not depend on
/// byte order (RFC 1071), so the change computed as if aligned, byte-swapped, is the change.
#[inline(always)]
pub fn replace32_odd(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let delta = (!u16::from_be_bytes([old[0], old[1]]) as u32)
        + (!u16::from_be_bytes([old[2], old[3]]) as u32)
        + (u16::from_be_bytes([new[0], new[1]]) as u32)
        + (u16::from_be_bytes([new[2], new[3]]) as u32);
    !fold((!check as u32) + fold(delta).swap_bytes() as u32)
}

/// Sum of the 16-bit big-endian words of `data` (an odd last byte is padded with zero).
#[inline(always)]
pub fn sum_words(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < data.len() {
        sum += u16::from_be_bytes([data[i], data[i + 1]]) as u32;
        i += 2;
    }
    if i < data.len() {
        sum += (data[i] as u32) << 8;
    }
    sum
}

/// The checksum of an IPv4 header (its checksum field must be zero, or the result is 0 when
/// the header is valid).
pub fn ipv4_header(header: &[u8]) -> u16 {
    !fold(sum_words(header))
}

/// The TCP checksum of `segment` (header and payload) over the IPv4 pseudo-header.
pub fn tcp_ipv4(src: [u8; 4], dst: [u8; 4], segment: &[u8]) -> u16 {
    let pseudo = sum_words(&src) + sum_words(&dst) + 6 + segment.len() as u32;
    !fold(pseudo + fold(sum_words(segment)) as u32)
}

/// The TCP checksum of `segment` over the IPv6 pseudo-header (RFC 8200 8.1).
pub fn tcp_ipv6(src: [u8; 16], dst: [u8; 16], segment: &[u8]) -> u16 {
    let len = segment.len() as u32;
    let pseudo = sum_words(&src) + sum_words(&dst) + (len >> 16) + (len & 0xffff) + 6;
    !fold(fold(pseudo) as u32 + fold(sum_words(segment)) as u32)
}

/// `replace32` for an IPv6 address (eight 16-bit words).
#[inline(always)]
pub fn replace128(check: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    let mut sum = !check as u32;
    let mut i = 0;
    while i < 16 {
        sum += (!u16::from_be_bytes([old[i], old[i + 1]]) as u32) + (u16::from_be_bytes([new[i], new[i + 1]]) as u32);
        i += 2;
    }
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_address_rewrite_updates_like_a_full_recompute() {
        let src = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        let mut seg = segment();
        let check = tcp_ipv6(src, dst, &seg);
        seg[16..18].copy_from_slice(&check.to_be_bytes());
        assert_eq!(tcp_ipv6(src, dst, &seg), 0, "a valid segment sums to zero");
        let nsrc = [0x20, 0x01, 0, 2, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe];
        let ndst = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x21];
        let mut c = replace128(check, &src, &nsrc);
        c = replace128(c, &dst, &ndst);
        c = replace16(c, 40000, 61000);
        seg[0..2].copy_from_slice(&61000u16.to_be_bytes());
        seg[16..18].copy_from_slice(&[0, 0]);
        assert_eq!(c, tcp_ipv6(nsrc, ndst, &seg));
    }

    // A SYN from 198.18.0.1:40000 to 198.18.0.10:12379 with an MSS option and two payload bytes.
    fn segment() -> [u8; 26] {
        let mut s = [0u8; 26];
        s[0..2].copy_from_slice(&40000u16.to_be_bytes());
        s[2..4].copy_from_slice(&12379u16.to_be_bytes());
        s[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        s[12] = 6 << 4;
        s[13] = 0x02;
        s[14..16].copy_from_slice(&64240u16.to_be_bytes());
        s[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        s[24..26].copy_from_slice(&[0xab, 0xcd]);
        s
    }

    #[test]
    fn incremental_matches_full_recompute_for_address_and_port_rewrites() {
        let (src, dst) = ([198, 18, 0, 1], [198, 18, 0, 10]);
        let mut seg = segment();
        let check = tcp_ipv4(src, dst, &seg);
        seg[16..18].copy_from_slice(&check.to_be_bytes());
        assert_eq!(tcp_ipv4(src, dst, &seg), 0, "a valid segment sums to zero");

        // Full NAT: both addresses and both ports change.
        let (nsrc, ndst) = ([198, 18, 0, 10], [198, 18, 0, 21]);
        let mut c = replace32(check, src, nsrc);
        c = replace32(c, dst, ndst);
        c = replace16(c, 40000, 61000);
        c = replace16(c, 12379, 2379);
        seg[0..2].copy_from_slice(&61000u16.to_be_bytes());
        seg[2..4].copy_from_slice(&2379u16.to_be_bytes());
        seg[16..18].copy_from_slice(&[0, 0]);
        assert_eq!(c, tcp_ipv4(nsrc, ndst, &seg));
    }

    #[test]
    fn a_32_bit_field_at_either_alignment_updates_like_a_full_recompute() {
        let (src, dst) = ([198, 18, 0, 1], [198, 18, 0, 10]);
        // TCP header with 20 option bytes; a 4-byte value patched at every offset in them.
        let mut base = [0u8; 40];
        base[12] = 10 << 4;
        for (i, b) in base[20..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        for at in 20..36 {
            for new in [[0u8, 0, 0, 0], [0xff; 4], [0x12, 0x34, 0x56, 0x78], [0x80, 0, 0, 1]] {
                let mut seg = base;
                let check = tcp_ipv4(src, dst, &seg);
                let old: [u8; 4] = seg[at..at + 4].try_into().unwrap();
                let c = if at % 2 == 0 { replace32(check, old, new) } else { replace32_odd(check, old, new) };
                seg[at..at + 4].copy_from_slice(&new);
                assert_eq!(c, tcp_ipv4(src, dst, &seg), "offset {at}, new {new:?}");
            }
        }
    }

    #[test]
    fn incremental_ip_header_update_matches_full_recompute() {
        let mut h = [0x45, 0, 0, 60, 0x1c, 0x46, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 10];
        let check = ipv4_header(&h);
        h[10..12].copy_from_slice(&check.to_be_bytes());
        assert_eq!(ipv4_header(&h), 0);
        let c = replace32(replace32(check, [198, 18, 0, 1], [198, 18, 0, 10]), [198, 18, 0, 10], [10, 255, 255, 255]);
        h[12..20].copy_from_slice(&[198, 18, 0, 10, 10, 255, 255, 255]);
        h[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(c, ipv4_header(&h));
    }

    #[test]
    fn incremental_update_never_produces_negative_zero_mismatch() {
        // Exhaustive over one word: the updated checksum must verify for every old/new pair
        // drawn from edge values.
        let edges = [0u16, 1, 0x7fff, 0x8000, 0xfffe, 0xffff];
        for &old in &edges {
            for &new in &edges {
                for &other in &edges {
                    let data = [old.to_be_bytes(), other.to_be_bytes()].concat();
                    let check = !fold(sum_words(&data));
                    let updated = replace16(check, old, new);
                    let data2 = [new.to_be_bytes(), other.to_be_bytes()].concat();
                    let verify = fold(sum_words(&data2) + updated as u32);
                    assert!(verify == 0xffff || verify == 0, "old={old:#x} new={new:#x} other={other:#x}");
                }
            }
        }
    }
}
