//! TCP-level packet fixtures through BPF_PROG_TEST_RUN: timestamp translation both ways (byte
//! for byte, checksums recomputed in full here), odd option layouts, the window checks of exact
//! tracking (out-of-window RST and FIN, spoofed ACKs, SYN|FIN), the SYN retried after a client's
//! RST, and the order NAT ports are handed out in.
//!
//! Each test is a table of rows (`integration::table`): a description, the input frame, the
//! expected action, the expected output frame, and the counters and flow states the row must
//! leave. What only the program knows (the server and NAT port it picked, the TSval it sent) is
//! captured by the SYN's row into [`Seen`] and used by the rows after it.

use integration::{
    fixture::*,
    frames::{syn_options, ts_options, Tcp, ACK, FIN, PSH, RST, SYN},
    table::{exact_later, forwarded, later, run, Case, Out, Seen},
};
use lb_common::{tcp::tuple_hash, Event, Reason};
use lb_user::dataplane::flows::FlowState;

fn all_up(_: u32) -> bool {
    true
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

/// What the program adds to the client's TSvals: the tuple's clock minus the client's (from the
/// TSval the SYN left with).
fn off(s: &Seen) -> u32 {
    s.tsval.wrapping_sub(CTS)
}

/// A SYN to the etcd frontend: NAT to the server the program picks from the port it takes and,
/// when it carries Linux's SYN options, its TSval replaced by the tuple's clock (all three seen).
fn open(what: &str, syn: Tcp) -> Case<'static> {
    let input = syn.frame();
    let has_ts = syn.tcp_options.get(6..8) == Some(&[8, 10]);
    Case::new(
        what,
        input.into(),
        XDP_TX,
        exact_later(move |s| {
            let mut e = s.flows.last().unwrap().forward(&syn);
            if has_ts {
                e.tcp_options = set_ts(&syn.tcp_options, 8, s.tsval, 0);
            }
            e.frame()
        }),
    )
    .opens()
}

/// The client's segments once the handshake is done (NOP NOP TS).
fn client_segment(cport: u16, flags: u8, tsval: u32, tsecr: u32) -> Tcp {
    let mut t = Tcp::new((CLIENT, cport), ETCD, flags);
    t.seq = 1001;
    t.ack = 5001;
    t.tcp_options = ts_options(tsval, tsecr);
    t
}

/// The server's segments once the handshake is done, to the NAT port (options left to the row).
fn server_segment(s: &Seen, flags: u8) -> Tcp {
    let mut t = s.flows[0].from_server(flags);
    t.seq = 5001;
    t.ack = 1001;
    t
}

/// The handshake of a flow from CLIENT:cport with timestamps, every frame byte for byte.
fn establish(cport: u16) -> Vec<Case<'static>> {
    let client = (CLIENT, cport);
    let mut syn = Tcp::new(client, ETCD, SYN);
    syn.tcp_options = syn_options(CTS, 0);
    let synack = |s: &Seen| {
        let mut t = s.flows[0].from_server(SYN | ACK);
        t.seq = 5000;
        t.ack = 1001;
        t.tcp_options = syn_options(STS, s.tsval);
        t
    };
    let ack = client_segment(cport, ACK, CTS + 1, STS);
    let ack_frame = ack.frame();
    vec![
        open("SYN: NAT, and the TSval from the tuple's clock", syn).check(|l, s| {
            // The tuple's clock: milliseconds plus a secret hash of the tuple, never the client's.
            let n = s.flows[0];
            let hash = tuple_hash(
                u32::from_ne_bytes(VIP.octets()),
                n.port.to_be(),
                u32::from_ne_bytes(n.server.octets()),
                2379u16.to_be(),
                l.settings().ts_secret,
            );
            s.assert_tuple_clock(hash);
        }),
        Case::new(
            "SYN-ACK: the echo goes back to the client's clock, the server's TSval untouched",
            later(move |s| synack(s).frame()),
            XDP_TX,
            exact_later(move |s| Tcp { tcp_options: syn_options(STS, CTS), ..to_client(&synack(s), client) }.frame()),
        ),
        Case::new(
            "ACK: TSval on the tuple's clock, the echo of the server's untouched",
            ack_frame.into(),
            XDP_TX,
            exact_later(move |s| {
                Tcp {
                    tcp_options: ts_options(CTS.wrapping_add(1).wrapping_add(off(s)), STS),
                    ..s.flows[0].forward(&ack)
                }
                .frame()
            }),
        )
        .flow(key(client, ETCD).into(), FlowState::Established)
        .check(move |l, s| {
            let c = l.entry(key(client, ETCD)).unwrap();
            let srv = l.entry(s.flows[0].server_key()).unwrap();
            assert_eq!((c.ts_off, srv.ts_off), (off(s), off(s)), "both halves keep the offset");
            assert_eq!(c.ts_last, CTS.wrapping_add(1).wrapping_add(off(s)), "the last TSval sent is kept");
        }),
    ]
}

#[test]
fn timestamps_are_translated_both_ways_byte_for_byte() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let mut table = establish(61000);
        // Data both ways, payload lengths odd and even.
        for (i, len) in [1usize, 2, 1000, 1447].into_iter().enumerate() {
            let i = i as u32;
            let d = Tcp { payload: vec![0x61; len], ..client_segment(61000, PSH | ACK, CTS + 10 + i, STS + i) };
            let r = move |s: &Seen| Tcp {
                tcp_options: ts_options(STS + 100 + i, (CTS + 10 + i).wrapping_add(off(s))),
                payload: vec![0x62; len],
                ..server_segment(s, PSH | ACK)
            };
            table.push(Case::new(
                format!("{len}-byte payload to the server: TSval on the tuple's clock"),
                d.frame().into(),
                XDP_TX,
                exact_later(move |s| {
                    let tcp_options = ts_options((CTS + 10 + i).wrapping_add(off(s)), STS + i);
                    Tcp { tcp_options, ..s.flows[0].forward(&d) }.frame()
                }),
            ));
            table.push(Case::new(
                format!("{len}-byte payload to the client: the echo back on the client's clock"),
                later(move |s| r(s).frame()),
                XDP_TX,
                exact_later(move |s| {
                    Tcp { tcp_options: ts_options(STS + 100 + i, CTS + 10 + i), ..to_client(&r(s), (CLIENT, 61000)) }
                        .frame()
                }),
            ));
        }
        run(&mut l, &table);
        assert_eq!(l.event(Event::TsTranslated), 1, "counted once per flow");
    });
}

#[test]
fn odd_option_layouts_leave_every_packet_consistent() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let mut table = establish(61100);
        let sack = [5u8, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0];
        let ts = |v: u32, r: u32| -> Vec<u8> {
            let mut t = vec![8, 10];
            t.extend_from_slice(&v.to_be_bytes());
            t.extend_from_slice(&r.to_be_bytes());
            t
        };
        // A data segment to the server with these options: translated where the timestamp is
        // (if it is valid and reachable), untouched otherwise; the bad layouts counted.
        let layout = |what: &str, opts: Vec<u8>, ts_at: Option<usize>, malformed: u64| {
            assert!(opts.len().is_multiple_of(4), "{what}: options are padded");
            let d = Tcp { payload: b"x".to_vec(), tcp_options: opts, ..client_segment(61100, PSH | ACK, 0, 0) };
            Case::new(
                what,
                d.frame().into(),
                XDP_TX,
                exact_later(move |s| {
                    let mut expect = s.flows[0].forward(&d);
                    if let Some(at) = ts_at {
                        expect.tcp_options = set_ts(&d.tcp_options, at, (CTS + 50).wrapping_add(off(s)), STS);
                    }
                    expect.frame()
                }),
            )
            .counts(Event::TcpOptionsMalformed, malformed)
        };
        table.extend([
            layout("NOP NOP TS (fast path)", ts_options(CTS + 50, STS), Some(4), 0),
            layout("SACK block, then TS", [&[1, 1][..], &sack, &[1, 1], &ts(CTS + 50, STS)].concat(), Some(16), 0),
            layout("TS at an odd offset", [&[1][..], &ts(CTS + 50, STS), &[1]].concat(), Some(3), 0),
            layout("TS first, unpadded", [&ts(CTS + 50, STS)[..], &[1, 1]].concat(), Some(2), 0),
            layout("no timestamp", [&[1, 1][..], &sack].concat(), None, 0),
            layout("EOL before a TS", [&[0, 0][..], &ts(CTS + 50, STS)].concat(), None, 0),
            layout("TS of length 9", [&[1, 1, 8, 9][..], &[0; 8]].concat(), None, 1),
            layout("option of length 0", [&[1, 1, 5, 0][..], &ts(CTS + 50, STS)[..6], &[0, 0]].concat(), None, 1),
            layout("option running past the header", [&[1, 1, 5, 40][..], &[0; 8]].concat(), None, 1),
            layout("TS cut by the header's end", [&[1, 1, 8, 10][..], &[0; 4]].concat(), None, 1),
        ]);
        run(&mut l, &table);
    });
}

#[test]
fn a_rst_or_fin_outside_the_window_does_not_close_a_flow() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let client = (CLIENT, 61200);
        let mut table = establish(61200);
        // Blind RSTs and FINs from either side, far beyond any window: passed on (the ends judge
        // them too), but the flow stays. (from the client?, flags, then RstOutOfWindow and
        // FinOutOfWindow read)
        let blind = [(true, RST, 1, 0), (false, RST | ACK, 2, 0), (true, FIN | ACK, 2, 1), (false, FIN | ACK, 2, 2)];
        for (from_client, flags, rsts, fins) in blind {
            let p = move |s: &Seen| {
                let t = if from_client { client_segment(61200, flags, 0, 0) } else { server_segment(s, flags) };
                Tcp { seq: t.seq.wrapping_add(0x6000_0000), tcp_options: Vec::new(), ..t }
            };
            let side = if from_client { "client" } else { "server" };
            table.push(
                Case::new(
                    format!("flags {flags:#x} from the {side} side, out of the window: passed on, the flow stays"),
                    later(move |s| p(s).frame()),
                    XDP_TX,
                    exact_later(move |s| {
                        if from_client { s.flows[0].forward(&p(s)) } else { to_client(&p(s), client) }.frame()
                    }),
                )
                .total(Event::RstOutOfWindow, rsts)
                .total(Event::FinOutOfWindow, fins)
                .flow(key(client, ETCD).into(), FlowState::Established),
            );
        }
        // Inside the window, a RST closes it.
        let rst = |s: &Seen| server_segment(s, RST | ACK);
        table.push(
            Case::new(
                "RST|ACK from the server inside the window: closes the flow",
                later(move |s| rst(s).frame()),
                XDP_TX,
                exact_later(move |s| to_client(&rst(s), client).frame()),
            )
            .flow(key(client, ETCD).into(), FlowState::Closed),
        );
        run(&mut l, &table);
    });
}

#[test]
fn only_the_ack_of_the_servers_syn_ack_completes_the_handshake() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let client = (CLIENT, 61300);
        let flow = key(client, ETCD);
        let mut ack = Tcp::new(client, ETCD, ACK);
        ack.seq = 1001;
        ack.ack = 5001;
        let wrong = Tcp { ack: 9999, ..ack.clone() };
        let synack = |s: &Seen| Tcp { seq: 5000, ack: 1001, ..s.flows[0].from_server(SYN | ACK) };
        let table = [
            open("SYN", Tcp::new(client, ETCD, SYN)),
            Case::new(
                "an ACK before any SYN-ACK (a spoofed one): passed on to the server, which judges it",
                ack.frame().into(),
                XDP_TX,
                forwarded(ack.clone()),
            )
            .counts(Event::AckNotPromoting, 1)
            .flow(flow.into(), FlowState::SynSent),
            Case::new(
                "the server's SYN-ACK",
                later(move |s| synack(s).frame()),
                XDP_TX,
                exact_later(move |s| to_client(&synack(s), client).frame()),
            ),
            Case::new("an ACK of the wrong number", wrong.frame().into(), XDP_TX, forwarded(wrong))
                .total(Event::AckNotPromoting, 2)
                .flow(flow.into(), FlowState::SynSent),
            Case::new("the ACK of the SYN-ACK: established", ack.frame().into(), XDP_TX, forwarded(ack))
                .flow(flow.into(), FlowState::Established),
        ];
        run(&mut l, &table);
    });
}

#[test]
fn syn_fin_and_syn_rst_open_no_flow() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let table: Vec<Case> = [SYN | FIN, SYN | RST, SYN | FIN | ACK]
            .into_iter()
            .zip(61400..)
            .map(|(flags, cport)| {
                let p = Tcp::new((CLIENT, cport), ETCD, flags);
                Case::new(
                    format!("flags {flags:#x}: untouched, to the kernel"),
                    p.frame().into(),
                    XDP_PASS,
                    Out::Unchanged,
                )
                .counts(Reason::NoFlow, 1)
            })
            .collect();
        run(&mut l, &table);
        assert_eq!(l.reason(Reason::NoFlow), 3);
        assert!(l.flows.entries().is_empty());
    });
}

#[test]
fn a_syn_retried_after_the_clients_rst_keeps_its_server_and_port() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let client = (CLIENT, 61500);
        let flow = key(client, ETCD);
        let syn = Tcp::new(client, ETCD, SYN);
        let stale = |s: &Seen| Tcp { seq: 777_777, ack: 424_242, ..s.flows[0].from_server(ACK) };
        let rst = |seq: u32| Tcp { seq, ..Tcp::new(client, ETCD, RST) };
        // A frame from the client, forwarded on the first flow: its server, its NAT port.
        let on_first_flow = |what: &str, t: Tcp| Case::new(what, t.frame().into(), XDP_TX, forwarded(t));
        let table = [
            open("SYN", syn.clone()),
            Case::new(
                "a server in TIME_WAIT refusing the SYN answers with an ACK of the old connection...",
                later(move |s| stale(s).frame()),
                XDP_TX,
                exact_later(move |s| to_client(&stale(s), client).frame()),
            ),
            on_first_flow(
                "...which the client answers with a RST carrying that ACK's number, outside the window: it \
                 reaches the server and clears its TIME_WAIT",
                rst(424_242),
            )
            .total(Event::RstOutOfWindow, 1),
            on_first_flow("the client's retransmitted SYN: the same server, the same NAT port", syn.clone()),
            on_first_flow("a RST inside the window: the flow closed", rst(1001)).flow(flow.into(), FlowState::Closed),
            on_first_flow("the same SYN again: reopens it, with the same server and NAT port", syn.clone())
                .total(Event::SynRetryKept, 1)
                .flow(flow.into(), FlowState::SynSent),
            on_first_flow("a RST inside the window again", rst(1001)),
            open("a SYN with another sequence number after a RST: a new connection", Tcp { seq: 90_000, ..syn })
                .check(|_, s| assert_ne!(s.flows[1].server, s.flows[0].server, "the next server")),
        ];
        run(&mut l, &table);
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
        let with_ts = |p: u16| p.is_multiple_of(2);
        let table: Vec<Case> = (0..120u16)
            .map(|p| {
                let mut syn = Tcp::new((CLIENT, 61600 + p), ETCD, SYN);
                if with_ts(p) {
                    syn.tcp_options = syn_options(CTS, 0);
                }
                let what = format!("SYN {p}, {} timestamps", if with_ts(p) { "with" } else { "without" });
                open(&what, syn)
            })
            .collect();
        let seen = run(&mut l, &table);
        let mut ports = (Vec::new(), Vec::new());
        for (p, nat) in (0..).zip(&seen.flows) {
            if nat.server == server(1) {
                if with_ts(p) { &mut ports.0 } else { &mut ports.1 }.push(nat.port);
            }
        }
        assert_eq!(ports.0, (40000..40020).collect::<Vec<u16>>(), "with timestamps");
        assert_eq!(ports.1, (40750..40770).collect::<Vec<u16>>(), "without timestamps");
    });
}
