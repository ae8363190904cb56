//! TCP-level packet fixtures through BPF_PROG_TEST_RUN: timestamp translation both ways (byte
//! for byte, checksums recomputed in full here), odd option layouts, the window checks of exact
//! tracking (out-of-window RST and FIN, spoofed ACKs, SYN|FIN), the SYN retried after a client's
//! RST, and the order NAT ports are handed out in.

use std::net::Ipv4Addr;

use integration::{
    fixture::*,
    frames::{self, Tcp, ACK, FIN, PSH, RST, SYN},
};
use lb_common::{
    tcp::{ts_clock, tuple_hash},
    Event, Reason,
};
use lb_user::dataplane::flows::{monotonic_ns, FlowState};

fn all_up(_: u32) -> bool {
    true
}

/// Linux's SYN options: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
fn syn_options(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o.extend_from_slice(&[1, 3, 3, 7]);
    o
}

/// A data segment's usual options: NOP NOP TS.
fn ts_options(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

/// `opts` with the 8 timestamp bytes at `at` replaced.
fn set_ts(opts: &[u8], at: usize, tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = opts.to_vec();
    o[at..at + 4].copy_from_slice(&tsval.to_be_bytes());
    o[at + 4..at + 8].copy_from_slice(&tsecr.to_be_bytes());
    o
}

const CTS: u32 = 0x1111_1111;
const STS: u32 = 0x5000_0000;

/// An established flow from CLIENT:cport with timestamps: (server, NAT port, offset, client ACK
/// template, server reply template).
struct Established {
    srv: Ipv4Addr,
    nat: u16,
    off: u32,
    client: Tcp,
    server: Tcp,
}

fn establish(l: &mut Loaded, cport: u16) -> Established {
    let mut syn = Tcp::new((CLIENT, cport), (VIP, 12379), SYN);
    syn.tcp_options = syn_options(CTS, 0);
    let before = ts_clock(monotonic_ns());
    let (action, out) = l.run(&syn.frame());
    let after = ts_clock(monotonic_ns());
    assert_eq!(action, XDP_TX);
    assert!(frames::checksums_valid(&out), "rewritten SYN has valid checksums");
    let got = frames::parse(&out).unwrap();
    let (srv, nat) = (got.dst, got.sport);
    let sent = u32::from_be_bytes(got.tcp_options[8..12].try_into().unwrap());
    let off = sent.wrapping_sub(CTS);
    // Everything but the TSval is the NAT rewrite, byte for byte.
    let mut expect = syn.with((VIP, nat), (srv, 2379), D0_MAC, got.dst_mac);
    expect.tcp_options = set_ts(&syn.tcp_options, 8, sent, 0);
    assert_eq!(out, expect.frame(), "SYN: NAT, and the TSval from the tuple's clock");
    // The tuple's clock: milliseconds plus a secret hash of the tuple, never the client's.
    let hash = tuple_hash(VIP.octets(), nat.to_be(), srv.octets(), 2379u16.to_be(), l.settings().ts_secret);
    let clock = sent.wrapping_sub(hash);
    assert!(
        clock.wrapping_sub(before) <= after.wrapping_sub(before),
        "TSval {sent:#x} = clock {clock} + hash, clock in {before}..={after}"
    );

    let mut synack = Tcp::new((srv, 2379), (VIP, nat), SYN | ACK);
    synack.seq = 5000;
    synack.ack = 1001;
    synack.tcp_options = syn_options(STS, sent);
    let (action, out) = l.run(&synack.frame());
    assert_eq!(action, XDP_TX);
    let mut expect = synack.with((VIP, 12379), (CLIENT, cport), D0_MAC, CLIENT_MAC);
    expect.tcp_options = syn_options(STS, CTS);
    assert_eq!(out, expect.frame(), "SYN-ACK: the echo goes back to the client's clock, the server's TSval untouched");

    let mut ack = Tcp::new((CLIENT, cport), (VIP, 12379), ACK);
    ack.seq = 1001;
    ack.ack = 5001;
    ack.tcp_options = ts_options(CTS + 1, STS);
    let (action, out) = l.run(&ack.frame());
    assert_eq!(action, XDP_TX);
    let mut expect = ack.with((VIP, nat), (srv, 2379), D0_MAC, got.dst_mac);
    expect.tcp_options = ts_options(CTS.wrapping_add(1).wrapping_add(off), STS);
    assert_eq!(out, expect.frame(), "ACK: TSval on the tuple's clock, the echo of the server's untouched");
    let c = l.entry(key((CLIENT, cport), (VIP, 12379))).unwrap();
    assert_eq!(FlowState::of(&c), FlowState::Established);
    let mut reply = synack.clone();
    reply.flags = PSH | ACK;
    reply.seq = 5001;
    Established { srv, nat, off, client: ack, server: reply }
}

#[test]
fn timestamps_are_translated_both_ways_byte_for_byte() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let e = establish(&mut l, 61000);
        let c = l.entry(key((CLIENT, 61000), (VIP, 12379))).unwrap();
        let s = l.entry(key((e.srv, 2379), (VIP, e.nat))).unwrap();
        assert_eq!((c.ts_off, s.ts_off), (e.off, e.off), "both halves keep the offset");
        assert_eq!(c.ts_last, CTS.wrapping_add(1).wrapping_add(e.off), "the last TSval sent is kept");

        // Data both ways, payload lengths odd and even.
        for (i, len) in [1usize, 2, 1000, 1447].into_iter().enumerate() {
            let i = i as u32;
            let mut d = e.client.clone();
            d.flags = PSH | ACK;
            d.tcp_options = ts_options(CTS + 10 + i, STS + i);
            d.payload = vec![0x61; len];
            let (action, out) = l.run(&d.frame());
            assert_eq!(action, XDP_TX);
            let mut expect = d.with((VIP, e.nat), (e.srv, 2379), D0_MAC, server_mac(e.srv.octets()[3] - 20));
            expect.tcp_options = ts_options((CTS + 10 + i).wrapping_add(e.off), STS + i);
            assert_eq!(out, expect.frame(), "{len}-byte payload to the server");

            let mut r = e.server.clone();
            r.tcp_options = ts_options(STS + 100 + i, (CTS + 10 + i).wrapping_add(e.off));
            r.payload = vec![0x62; len];
            let (action, out) = l.run(&r.frame());
            assert_eq!(action, XDP_TX);
            let mut expect = r.with((VIP, 12379), (CLIENT, 61000), D0_MAC, CLIENT_MAC);
            expect.tcp_options = ts_options(STS + 100 + i, CTS + 10 + i);
            assert_eq!(out, expect.frame(), "{len}-byte payload to the client");
        }
        assert_eq!(l.event(Event::TsTranslated), 1, "counted once per flow");
    });
}

#[test]
fn odd_option_layouts_leave_every_packet_consistent() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let e = establish(&mut l, 61100);
        let sack = [5u8, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0];
        let ts = |v: u32, r: u32| -> Vec<u8> {
            let mut t = vec![8, 10];
            t.extend_from_slice(&v.to_be_bytes());
            t.extend_from_slice(&r.to_be_bytes());
            t
        };
        // (what, options, where the timestamp is if it is valid and reachable)
        let layouts: Vec<(&str, Vec<u8>, Option<usize>)> = vec![
            ("NOP NOP TS (fast path)", ts_options(CTS + 50, STS), Some(4)),
            ("SACK block, then TS", [&[1, 1][..], &sack, &[1, 1], &ts(CTS + 50, STS)].concat(), Some(16)),
            ("TS at an odd offset", [&[1][..], &ts(CTS + 50, STS), &[1]].concat(), Some(3)),
            ("TS first, unpadded", [&ts(CTS + 50, STS)[..], &[1, 1]].concat(), Some(2)),
            ("no timestamp", [&[1, 1][..], &sack].concat(), None),
            ("EOL before a TS", [&[0, 0][..], &ts(CTS + 50, STS)].concat(), None),
            ("TS of length 9", [&[1, 1, 8, 9][..], &[0; 8]].concat(), None),
            ("option of length 0", [&[1, 1, 5, 0][..], &ts(CTS + 50, STS)[..6], &[0, 0]].concat(), None),
            ("option running past the header", [&[1, 1, 5, 40][..], &[0; 8]].concat(), None),
            ("TS cut by the header's end", [&[1, 1, 8, 10][..], &[0; 4]].concat(), None),
        ];
        let malformed_before = l.event(Event::TcpOptionsMalformed);
        for (what, opts, ts_at) in &layouts {
            assert!(opts.len() % 4 == 0, "{what}: options are padded");
            let mut d = e.client.clone();
            d.flags = PSH | ACK;
            d.tcp_options = opts.clone();
            d.payload = b"x".to_vec();
            let (action, out) = l.run(&d.frame());
            assert_eq!(action, XDP_TX, "{what}");
            assert!(frames::checksums_valid(&out), "{what}: checksums valid");
            let mut expect = d.with((VIP, e.nat), (e.srv, 2379), D0_MAC, server_mac(e.srv.octets()[3] - 20));
            if let Some(at) = ts_at {
                expect.tcp_options = set_ts(opts, *at, (CTS + 50).wrapping_add(e.off), STS);
            }
            assert_eq!(out, expect.frame(), "{what}: translated where the timestamp is, untouched otherwise");
        }
        assert_eq!(l.event(Event::TcpOptionsMalformed) - malformed_before, 4, "the four bad layouts are counted");
    });
}

#[test]
fn a_rst_or_fin_outside_the_window_does_not_close_a_flow() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let e = establish(&mut l, 61200);
        let client_key = key((CLIENT, 61200), (VIP, 12379));
        let state = |l: &Loaded| FlowState::of(&l.entry(client_key).unwrap());
        // Blind RSTs and FINs from either side, far beyond any window: passed on (the ends judge
        // them too), but the flow stays.
        for (from_client, flags) in [(true, RST), (false, RST | ACK), (true, FIN | ACK), (false, FIN | ACK)] {
            let mut p = if from_client { e.client.clone() } else { e.server.clone() };
            p.flags = flags;
            p.seq = p.seq.wrapping_add(0x6000_0000);
            p.tcp_options.clear();
            let (action, _) = l.run(&p.frame());
            assert_eq!(action, XDP_TX, "passed on");
            assert_eq!(
                state(&l),
                FlowState::Established,
                "flags {flags:#x} from the {} side",
                if from_client { "client" } else { "server" }
            );
        }
        assert_eq!((l.event(Event::RstOutOfWindow), l.event(Event::FinOutOfWindow)), (2, 2));
        // Inside the window, a RST closes it.
        let mut rst = e.server.clone();
        rst.flags = RST | ACK;
        rst.tcp_options.clear();
        assert_eq!(l.run(&rst.frame()).0, XDP_TX);
        assert_eq!(state(&l), FlowState::Closed);
    });
}

#[test]
fn only_the_ack_of_the_servers_syn_ack_completes_the_handshake() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let syn = Tcp::new((CLIENT, 61300), (VIP, 12379), SYN);
        let (_, out) = l.run(&syn.frame());
        let got = frames::parse(&out).unwrap();
        let client_key = key((CLIENT, 61300), (VIP, 12379));
        let state = |l: &Loaded| FlowState::of(&l.entry(client_key).unwrap());
        // An ACK before any SYN-ACK: a spoofed one.
        let mut ack = Tcp::new((CLIENT, 61300), (VIP, 12379), ACK);
        ack.seq = 1001;
        ack.ack = 5001;
        assert_eq!(l.run(&ack.frame()).0, XDP_TX, "passed on to the server, which judges it");
        assert_eq!(state(&l), FlowState::SynSent);
        let mut synack = Tcp::new((got.dst, 2379), (VIP, got.sport), SYN | ACK);
        synack.seq = 5000;
        synack.ack = 1001;
        assert_eq!(l.run(&synack.frame()).0, XDP_TX);
        // The wrong acknowledgement number.
        let mut wrong = ack.clone();
        wrong.ack = 9999;
        l.run(&wrong.frame());
        assert_eq!(state(&l), FlowState::SynSent);
        assert_eq!(l.event(Event::AckNotPromoting), 2);
        // The real one.
        l.run(&ack.frame());
        assert_eq!(state(&l), FlowState::Established);
    });
}

#[test]
fn syn_fin_and_syn_rst_open_no_flow() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        for (i, flags) in [SYN | FIN, SYN | RST, SYN | FIN | ACK].into_iter().enumerate() {
            let p = Tcp::new((CLIENT, 61400 + i as u16), (VIP, 12379), flags);
            let (action, out) = l.run(&p.frame());
            assert_eq!((action, &out), (XDP_PASS, &p.frame()), "flags {flags:#x}: untouched, to the kernel");
        }
        assert_eq!(l.reason(Reason::NoFlow), 3);
        assert!(l.flows.entries().is_empty());
    });
}

#[test]
fn a_syn_retried_after_the_clients_rst_keeps_its_server_and_port() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let syn = Tcp::new((CLIENT, 61500), (VIP, 12379), SYN);
        let (_, out) = l.run(&syn.frame());
        let first = frames::parse(&out).unwrap();
        // A server in TIME_WAIT refusing the SYN answers with an ACK of the old connection...
        let mut stale = Tcp::new((first.dst, 2379), (VIP, first.sport), ACK);
        stale.seq = 777_777;
        stale.ack = 424_242;
        assert_eq!(l.run(&stale.frame()).0, XDP_TX);
        // ...which the client answers with a RST carrying that ACK's number: outside the window.
        let mut rst = Tcp::new((CLIENT, 61500), (VIP, 12379), RST);
        rst.seq = 424_242;
        assert_eq!(l.run(&rst.frame()).0, XDP_TX, "the RST reaches the server and clears its TIME_WAIT");
        assert_eq!(l.event(Event::RstOutOfWindow), 1);
        // The client's retransmitted SYN: the same server, the same NAT port.
        let (_, out) = l.run(&syn.frame());
        let again = frames::parse(&out).unwrap();
        assert_eq!((again.dst, again.sport), (first.dst, first.sport));

        // The same with a RST inside the window (the flow closed): the same SYN reopens it.
        let mut rst = Tcp::new((CLIENT, 61500), (VIP, 12379), RST);
        rst.seq = 1001;
        l.run(&rst.frame());
        assert_eq!(FlowState::of(&l.entry(key((CLIENT, 61500), (VIP, 12379))).unwrap()), FlowState::Closed);
        let (_, out) = l.run(&syn.frame());
        let again = frames::parse(&out).unwrap();
        assert_eq!((again.dst, again.sport), (first.dst, first.sport));
        assert_eq!(l.event(Event::SynRetryKept), 1);
        assert_eq!(FlowState::of(&l.entry(key((CLIENT, 61500), (VIP, 12379))).unwrap()), FlowState::SynSent);
        // A SYN with another sequence number after a RST is a new connection: the next server.
        l.run(&rst.frame());
        let mut other = syn.clone();
        other.seq = 90_000;
        let (_, out) = l.run(&other.frame());
        assert_ne!(frames::parse(&out).unwrap().dst, first.dst);
    });
}

#[test]
fn nat_ports_are_handed_out_in_order_around_the_range() {
    let fx = fixture();
    fx.ns.enter(|| {
        // One CPU, so that one cursor is used.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(0, &mut set) };
        assert_eq!(unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) }, 0);
        let mut l = fx.load(&all_up);
        // Every third SYN goes to app1 (round robin): its ports follow each other from the
        // start of its range, 16 to a block. SYNs with timestamps take the first three quarters
        // of nat_ports (the fixture's is 40000-40999), SYNs without the last quarter (from 40750).
        let mut ports = (Vec::new(), Vec::new());
        for p in 0..120u16 {
            let mut syn = Tcp::new((CLIENT, 61600 + p), (VIP, 12379), SYN);
            let with_ts = p % 2 == 0;
            if with_ts {
                syn.tcp_options = syn_options(CTS, 0);
            }
            let (_, out) = l.run(&syn.frame());
            let got = frames::parse(&out).unwrap();
            if got.dst == server(1) {
                if with_ts { &mut ports.0 } else { &mut ports.1 }.push(got.sport);
            }
        }
        assert_eq!(ports.0, (40000..40020).collect::<Vec<u16>>(), "with timestamps");
        assert_eq!(ports.1, (40750..40770).collect::<Vec<u16>>(), "without timestamps");
    });
}
