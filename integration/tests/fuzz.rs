//! Packet fuzzing through BPF_PROG_TEST_RUN: over a million frames derived from valid frontend
//! and reply frames (truncated at every length, random bytes, every TCP flag combination, IHL
//! 0-15, total lengths too short and too long, fragments, VLAN tags, IPv6, IPv4 options).
//! The promises: never XDP_ABORTED; a frame the program does not rewrite comes back byte for
//! byte unchanged; a rewritten frame made from one with valid checksums has valid checksums;
//! only a SYN to a frontend ever opens a flow.

use std::net::Ipv4Addr;

use integration::{
    fixture::*,
    frames::{self, Tcp, ACK, SYN},
    traffic::Pattern,
};

const XDP_DROP: u32 = 1;
use lb_common::{checksum, Reason};

const XDP_ABORTED: u32 = 0;
const FRAMES: usize = 1_000_000;

/// Recomputes the IPv4 header and TCP checksums of a frame whose headers still parse.
fn fix_checksums(f: &mut [u8]) {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return;
    }
    let ihl = ((f[14] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    if ihl < 20 || f.len() < 14 + ihl {
        return;
    }
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let end = (14 + total).min(f.len());
    if f[23] == 6 && total >= ihl + 20 && 14 + ihl + 18 <= end {
        let (src, dst): ([u8; 4], [u8; 4]) = (f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap());
        let t = 14 + ihl;
        f[t + 16..t + 18].copy_from_slice(&[0, 0]);
        let c = checksum::tcp_ipv4(src, dst, &f[t..end]);
        f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
    }
}

fn valid(f: &[u8]) -> bool {
    frames::checksums_valid(f)
}

/// A SYN (SYN without ACK) of IPv4/TCP without options or fragments, to a frontend.
fn syn_to_frontend(f: &[u8]) -> bool {
    let Some(t) = frames::parse(f) else { return false };
    let frontend =
        (t.dst == VIP && [12379, 16443, 2000, 3000].contains(&t.dport)) || (t.dst == VIP2 && t.dport == 12379);
    frontend && t.flags & (SYN | ACK) == SYN && t.frag & 0x3fff == 0
}

/// A TCP frame the data path does not parse (a first fragment, or IP options) whose ports (after
/// the IP header, whatever its length) name a tracked flow: the data path drops it.
fn unparsed_of_a_flow(l: &Loaded, f: &[u8]) -> bool {
    if f.len() < 34 || u16::from_be_bytes([f[12], f[13]]) != frames::ETH_P_IP || f[14] >> 4 != 4 || f[23] != 6 {
        return false;
    }
    let (ihl, frag) = (((f[14] & 0x0f) as usize) * 4, u16::from_be_bytes([f[20], f[21]]));
    if ihl < 20 || (frag & 0x3fff == 0 && ihl == 20) || frag & 0x1fff != 0 || f.len() < 14 + ihl + 4 {
        return false;
    }
    let p = 14 + ihl;
    let key = lb_common::FlowKey {
        src_addr: f[26..30].try_into().unwrap(),
        dst_addr: f[30..34].try_into().unwrap(),
        src_port_be: u16::from_ne_bytes([f[p], f[p + 1]]),
        dst_port_be: u16::from_ne_bytes([f[p + 2], f[p + 3]]),
    };
    l.entry(key).is_some()
}

#[test]
fn a_million_mutated_frames() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load_sized(&|_| true, 1 << 16);
        // Seeds: a SYN to a frontend, its server's reply, an established data segment, a frame
        // for nobody.
        let mut seeds = Vec::new();
        let mut syn = Tcp::new((CLIENT, 50000), (VIP, 12379), SYN);
        syn.payload = b"hi".to_vec();
        seeds.push(syn.frame());
        let (_, out) = l.run(&syn.frame());
        let nat = frames::parse(&out).unwrap();
        let mut reply = Tcp::new((nat.dst, 2379), (VIP, nat.sport), SYN | ACK);
        reply.dst_mac = D0_MAC;
        seeds.push(reply.frame());
        let mut data = Tcp::new((CLIENT, 50000), (VIP, 12379), ACK);
        data.payload = vec![7; 100];
        seeds.push(data.frame());
        seeds.push(Tcp::new((Ipv4Addr::new(198, 18, 0, 50), 1), (Ipv4Addr::new(198, 18, 0, 51), 2), ACK).frame());

        let mut rng = Pattern::new(0xf022);
        let mut r = || {
            let mut b = [0u8; 8];
            rng.fill(&mut b);
            u64::from_le_bytes(b)
        };
        let (mut aborted, mut changed_unexpectedly, mut bad_checksums, mut stray_flows, mut n) = (0, 0, 0, 0, 0usize);
        let mut not_ours_touched = 0;
        let mut new_flows = l.reason(Reason::NewFlow);
        let mut check = |l: &mut Loaded, frame: Vec<u8>, n: &mut usize| {
            *n += 1;
            let input_valid = valid(&frame);
            let (action, out) = l.run(&frame);
            if action == XDP_ABORTED {
                aborted += 1;
            }
            // Not ours: not plain IPv4/TCP, a fragment, or for an address that is no frontend.
            let ours = frames::parse(&frame).is_some_and(|t| (t.dst == VIP || t.dst == VIP2) && t.frag & 0x3fff == 0);
            let dropped_of_flow = action == XDP_DROP && out == frame && unparsed_of_a_flow(l, &frame);
            if !ours && !dropped_of_flow && (action != XDP_PASS || out != frame) {
                not_ours_touched += 1;
            }
            if out != frame {
                // Rewritten: NAT or the RST for a SYN no server can take.
                if input_valid && !valid(&out) {
                    bad_checksums += 1;
                }
                if action == XDP_PASS && frames::parse(&out).is_none() {
                    changed_unexpectedly += 1;
                }
            }
            // The new-flow counter after every frame pins a stray flow to the frame that made it.
            if !syn_to_frontend(&frame) {
                let now = l.reason(Reason::NewFlow);
                if now != new_flows {
                    stray_flows += 1;
                    new_flows = now;
                }
            } else {
                new_flows = l.reason(Reason::NewFlow);
            }
        };
        while n < FRAMES {
            let seed = seeds[(r() % seeds.len() as u64) as usize].clone();
            let kind = r() % 10;
            let mut f = seed.clone();
            match kind {
                // Truncated at a random length.
                0 => f.truncate(14 + (r() as usize % (seed.len() - 13))),
                // Random bytes over a random stretch (checksums as they fall).
                1 => {
                    let at = r() as usize % f.len();
                    let len = 1 + r() as usize % 8;
                    for i in at..(at + len).min(f.len()) {
                        f[i] = r() as u8;
                    }
                }
                // Every TCP flag combination, with valid checksums.
                2 => {
                    f[14 + 20 + 13] = r() as u8;
                    fix_checksums(&mut f);
                }
                // IHL 0-15.
                3 => {
                    f[14] = 0x40 | (r() as u8 & 0x0f);
                    fix_checksums(&mut f);
                }
                // Total length too short or too long.
                4 => {
                    let tl = (r() % 200) as u16;
                    f[16..18].copy_from_slice(&tl.to_be_bytes());
                    fix_checksums(&mut f);
                }
                // Fragments: MF and/or an offset.
                5 => {
                    let frag = (r() as u16) & 0x3fff | 0x0001;
                    f[20..22].copy_from_slice(&frag.to_be_bytes());
                    fix_checksums(&mut f);
                }
                // A VLAN tag in front of the IP header.
                6 => {
                    f.splice(12..12, [0x81, 0x00, 0x00, (r() % 4095) as u8]);
                }
                // IPv6 ethertype over the same bytes.
                7 => {
                    f[12..14].copy_from_slice(&[0x86, 0xdd]);
                }
                // IPv4 options (NOPs) inserted, lengths fixed.
                8 => {
                    let words = 1 + (r() % 10) as usize;
                    f.splice(34..34, std::iter::repeat_n(1u8, words * 4));
                    f[14] = 0x40 | (5 + words) as u8;
                    let tl = u16::from_be_bytes([f[16], f[17]]) + (words * 4) as u16;
                    f[16..18].copy_from_slice(&tl.to_be_bytes());
                    fix_checksums(&mut f);
                }
                // A valid frame as it is, with new ports (new flows, replies without flows).
                _ => {
                    f[34..36].copy_from_slice(&((1024 + r() % 60000) as u16).to_be_bytes());
                    fix_checksums(&mut f);
                }
            }
            check(&mut l, f, &mut n);
        }
        // Every truncation of every seed, too.
        for s in &seeds {
            for len in 14..s.len() {
                check(&mut l, s[..len].to_vec(), &mut n);
            }
        }
        eprintln!("{n} frames: {aborted} aborted, {not_ours_touched} not ours but not passed untouched, {changed_unexpectedly} changed but passed unparsable, {bad_checksums} rewritten with bad checksums, {stray_flows} flows opened by something else than a SYN to a frontend");
        assert_eq!((aborted, not_ours_touched, changed_unexpectedly, bad_checksums, stray_flows), (0, 0, 0, 0, 0));
        // The mutations reached every verdict they aim at: a program that gave up early (passed
        // everything as not ours, say) would pass the checks above and fail here.
        let reasons: std::collections::HashMap<Reason, u64> = l.reasons().into_iter().collect();
        eprintln!("{reasons:?}");
        for r in [
            Reason::Passed,
            Reason::Forwarded,
            Reason::Replied,
            Reason::NewFlow,
            Reason::NoFlow,
            Reason::Malformed,
            Reason::Fragment,
            Reason::FragmentOfFlow,
            Reason::IpOptions,
        ] {
            assert!(reasons[&r] > 0, "no frame got {r:?}: {reasons:?}");
        }
    });
}
