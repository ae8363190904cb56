//! Packet fixtures through BPF_PROG_TEST_RUN: the real XDP program, real maps filled by the
//! agent's own map owner, frames in and frames out compared byte for byte with frames built
//! independently here (checksums computed in full).
//!
//! The namespace and loader are `integration::fixture`.

use std::net::Ipv4Addr;

use aya::programs::{TestRun, TestRunOptions};
use integration::{
    fixture::*,
    frames::{self, Tcp, ACK, FIN, PSH, RST, SYN},
};
use lb_common::Reason;
use lb_user::{dataplane, dataplane::flows::FlowState};

fn all_up(_: u32) -> bool {
    true
}

/// Opens a flow from CLIENT:cport and returns (the server's address, the NAT port).
fn open(l: &mut Loaded, cport: u16) -> (Ipv4Addr, u16, Tcp) {
    let syn = Tcp::new((CLIENT, cport), (VIP, 12379), SYN);
    let (action, out) = l.run(&syn.frame());
    assert_eq!(action, XDP_TX, "a SYN to a frontend is sent on the same interface");
    assert!(frames::checksums_valid(&out), "rewritten SYN has valid checksums");
    let got = frames::parse(&out).expect("rewritten SYN parses");
    (got.dst, got.sport, syn)
}

#[test]
fn full_nat_handshake_data_and_close_byte_for_byte() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let (srv, nat_port, syn) = open(&mut l, 51000);
        assert_eq!(srv, server(1), "round-robin starts at the first server");
        assert!((40000..=40999).contains(&nat_port), "NAT port {nat_port} from the reserved range");
        let i = 1;

        // SYN: exact expected frame.
        let (_, out) = l.run(&syn.frame());
        let expect = syn.with((VIP, nat_port), (server(i), 2379), D0_MAC, server_mac(i));
        assert_eq!(out, expect.frame(), "retransmitted SYN follows the same flow, rewritten exactly");

        // SYN-ACK from the server back to the client.
        let mut synack = Tcp::new((server(i), 2379), (VIP, nat_port), SYN | ACK);
        synack.src_mac = server_mac(i);
        synack.dst_mac = D0_MAC;
        synack.seq = 5000;
        synack.ack = 1001;
        let (action, out) = l.run(&synack.frame());
        assert_eq!(action, XDP_TX);
        assert_eq!(out, synack.with((VIP, 12379), (CLIENT, 51000), D0_MAC, CLIENT_MAC).frame());

        // ACK completes the handshake.
        let mut ack = Tcp::new((CLIENT, 51000), (VIP, 12379), ACK);
        ack.seq = 1001;
        ack.ack = 5001;
        let (action, out) = l.run(&ack.frame());
        assert_eq!(action, XDP_TX);
        assert_eq!(out, ack.with((VIP, nat_port), (server(i), 2379), D0_MAC, server_mac(i)).frame());
        let client_entry = l.entry(key((CLIENT, 51000), (VIP, 12379))).expect("client-side entry");
        assert_eq!(FlowState::of(&client_entry), FlowState::Established);

        // Data both ways, odd lengths included (checksum padding).
        for len in [1usize, 2, 3, 1000, 1459] {
            let mut d = ack.clone();
            d.flags = PSH | ACK;
            d.payload = (0..len).map(|b| b as u8).collect();
            let (action, out) = l.run(&d.frame());
            assert_eq!(action, XDP_TX);
            assert_eq!(
                out,
                d.with((VIP, nat_port), (server(i), 2379), D0_MAC, server_mac(i)).frame(),
                "{len}-byte payload"
            );
            let mut r = synack.clone();
            r.flags = PSH | ACK;
            r.payload = vec![0xa5; len];
            let (action, out) = l.run(&r.frame());
            assert_eq!(action, XDP_TX);
            assert_eq!(out, r.with((VIP, 12379), (CLIENT, 51000), D0_MAC, CLIENT_MAC).frame());
        }

        // FIN from the client, FIN from the server: closed (lingering), both entries agree.
        let mut fin = ack.clone();
        fin.flags = FIN | ACK;
        assert_eq!(l.run(&fin.frame()).0, XDP_TX);
        let c = l.entry(key((CLIENT, 51000), (VIP, 12379))).unwrap();
        assert_eq!(FlowState::of(&c), FlowState::Closing);
        let mut sfin = synack.clone();
        sfin.flags = FIN | ACK;
        assert_eq!(l.run(&sfin.frame()).0, XDP_TX);
        let c = l.entry(key((CLIENT, 51000), (VIP, 12379))).unwrap();
        assert_eq!(FlowState::of(&c), FlowState::Closed);
        let s = l.entry(key((server(i), 2379), (VIP, nat_port))).unwrap();
        assert_eq!(FlowState::of(&s), FlowState::Closed, "the server-side entry knows too");
        // The last ACK still goes through while the flow lingers.
        assert_eq!(l.run(&ack.frame()).0, XDP_TX);

        // A new SYN on the same tuple after close is a new connection: next server.
        let (srv2, nat2, _) = open(&mut l, 51000);
        assert_eq!(srv2, server(2), "port reuse after close opens a new flow on the next server");
        let c = l.entry(key((CLIENT, 51000), (VIP, 12379))).unwrap();
        assert_eq!(
            (c.new_dst_addr, c.new_src_port_be),
            (server(2).octets(), nat2.to_be()),
            "the tuple is the new flow's"
        );
        let old = l.entry(key((server(1), 2379), (VIP, nat_port))).expect("the old server side lingers");
        assert_eq!(FlowState::of(&old), FlowState::Closed, "and holds its NAT port until it may be used again");
        assert_eq!(l.event(lb_common::Event::TupleReused), 1);

        let st = l.server_stats("app1");
        assert_eq!(st.new_flows, 1);
        assert!(st.packets_in >= 9 && st.packets_out >= 7, "{st:?}");
        assert!(l.reason(Reason::NewFlow) == 2 && l.reason(Reason::Forwarded) > 5 && l.reason(Reason::Replied) > 5);
    });
}

#[test]
fn server_rst_closes_the_flow_and_counts_a_refused_syn() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let (srv, nat_port, _) = open(&mut l, 52000);
        let mut rst = Tcp::new((srv, 2379), (VIP, nat_port), RST | ACK);
        rst.ack = 1001;
        let (action, out) = l.run(&rst.frame());
        assert_eq!(action, XDP_TX, "the RST is passed on to the client");
        assert_eq!(out, rst.with((VIP, 12379), (CLIENT, 52000), D0_MAC, CLIENT_MAC).frame());
        let c = l.entry(key((CLIENT, 52000), (VIP, 12379))).unwrap();
        assert_eq!(FlowState::of(&c), FlowState::Closed);
        assert_eq!(l.server_stats("app1").syn_rst, 1, "a SYN answered by RST is observed (layer 4)");
    });
}

#[test]
fn syn_without_healthy_server_is_answered_with_rst() {
    let fx = fixture();
    fx.ns.enter(|| {
        // Everything UP except the "down" pool's server.
        let l = fx.load(&all_up);
        let down_id = fx_server_id(&l, "down", "app1");
        drop(l);
        let _ = dataplane::remove_pins(&fx.pin_dir);
        let mut l = fx.load(&|id| id != down_id);
        let mut syn = Tcp::new((CLIENT, 53000), (VIP, 16443), SYN);
        syn.seq = 0xfffffff0;
        syn.payload = b"early data".to_vec();
        let (action, out) = l.run(&syn.frame());
        assert_eq!(action, XDP_TX, "the RST goes back out of the interface the SYN came in on");
        assert!(frames::checksums_valid(&out), "RST checksums valid");
        let mut rst = Tcp::new((VIP, 16443), (CLIENT, 53000), RST | ACK);
        rst.dst_mac = CLIENT_MAC;
        rst.src_mac = D0_MAC;
        rst.seq = 0;
        rst.ack = 0xfffffff1;
        rst.window = 0;
        rst.ip_id = 0;
        rst.tcp_options.clear();
        assert_eq!(out, rst.frame(), "a bare RST|ACK acknowledging the SYN");
        assert_eq!(l.reason(Reason::NoBackend), 1);
        assert!(l.flows.entries().is_empty(), "no flow for a refused SYN");
    });
}

fn fx_server_id(l: &Loaded, pool: &str, name: &str) -> u32 {
    l.topology.pool(pool).unwrap().servers.iter().find(|s| s.name == name).unwrap().id
}

#[test]
fn round_robin_splits_300_new_flows_100_100_100() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let mut count = std::collections::HashMap::new();
        for p in 0..300u16 {
            let (srv, _, _) = open(&mut l, 20000 + p);
            *count.entry(srv).or_insert(0) += 1;
        }
        for i in 1..=3 {
            assert_eq!(count.get(&server(i)), Some(&100), "{count:?}");
        }
        assert_eq!(l.flows.entries().len(), 600, "two entries per flow");
    });
}

#[test]
fn next_hop_on_another_interface_is_redirected_and_replies_come_back() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let syn = Tcp::new((CLIENT, 54000), (VIP, 2000), SYN);
        let (action, out) = l.run(&syn.frame());
        assert_eq!(action, XDP_REDIRECT, "server behind d1: redirected through the devmap");
        let got = frames::parse(&out).unwrap();
        let far = Ipv4Addr::new(198, 19, 0, 31);
        assert_eq!(out, syn.with((VIP2, got.sport), (far, 2000), D1_MAC, [0x02, 0, 0, 0, 1, 0x31]).frame());
        // The reply arrives on d1 and goes back to the client's MAC via d0.
        let mut r = Tcp::new((far, 2000), (VIP2, got.sport), SYN | ACK);
        r.dst_mac = D1_MAC;
        let d1 = l.d1;
        let (action, out) = l.run_on(&r.frame(), d1);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(out, r.with((VIP, 2000), (CLIENT, 54000), D0_MAC, CLIENT_MAC).frame());
    });
}

#[test]
fn no_neighbour_entry_hands_the_rewritten_packet_to_the_kernel() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let syn = Tcp::new((CLIENT, 55000), (VIP, 3000), SYN);
        let (action, out) = l.run(&syn.frame());
        assert_eq!(action, XDP_PASS);
        let got = frames::parse(&out).unwrap();
        assert_eq!(
            (got.src, got.dst, got.dport),
            (VIP, Ipv4Addr::new(198, 18, 0, 24), 3000),
            "rewritten for the kernel to forward"
        );
        assert!(frames::checksums_valid(&out));
        assert_eq!(l.reason(Reason::NoNeighbour), 1);
    });
}

#[test]
fn everything_that_is_not_ours_passes_untouched() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let syn = Tcp::new((CLIENT, 56000), (VIP, 12379), SYN);
        let mut cases: Vec<(&str, Vec<u8>, Option<Reason>)> = vec![
            ("ARP", frames::arp_request(CLIENT, VIP), Some(Reason::Passed)),
            ("IPv6 TCP SYN to the frontend port", frames::ipv6_tcp_syn(12379), Some(Reason::Passed)),
            ("UDP", frames::ipv4_other(17, CLIENT, VIP, b"\x30\x39\x30\x39\x00\x0c\x00\x00dns?"), Some(Reason::Passed)),
            (
                "ICMP echo",
                frames::ipv4_other(1, CLIENT, VIP, b"\x08\x00\xf7\xff\x00\x00\x00\x00"),
                Some(Reason::Passed),
            ),
            ("SSH to the balancer", Tcp::new((CLIENT, 56001), (VIP, 22), SYN).frame(), Some(Reason::Passed)),
            (
                "frontend port on another address",
                Tcp::new((CLIENT, 56002), (Ipv4Addr::new(198, 18, 0, 99), 12379), SYN).frame(),
                Some(Reason::Passed),
            ),
            (
                "ACK to a frontend without a flow",
                Tcp::new((CLIENT, 56003), (VIP, 12379), ACK).frame(),
                Some(Reason::NoFlow),
            ),
            (
                "reply to a NAT port without a flow",
                Tcp::new((server(1), 2379), (VIP, 40500), SYN | ACK).frame(),
                Some(Reason::NoFlow),
            ),
        ];
        let mut opts = syn.clone();
        opts.ip_options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
        cases.push(("SYN with IP options", opts.frame(), Some(Reason::IpOptions)));
        let mut frag = syn.clone();
        frag.frag = 0x2000; // MF
        cases.push(("first fragment", frag.frame(), Some(Reason::Fragment)));
        frag.frag = 0x0010; // offset 128
        cases.push(("later fragment", frag.frame(), Some(Reason::Fragment)));
        let good = syn.frame();
        let mut bad = good.clone();
        bad[14] = 0x44; // IHL 4
        cases.push(("IHL 4", bad, Some(Reason::Malformed)));
        let mut bad = good.clone();
        bad[14 + 20 + 12] = 4 << 4; // doff 4
        cases.push(("TCP data offset 4", bad, Some(Reason::Malformed)));
        let mut bad = good.clone();
        bad[16..18].copy_from_slice(&2000u16.to_be_bytes());
        cases.push(("IP total length beyond the frame", bad, Some(Reason::Malformed)));
        let mut bad = good.clone();
        bad[16..18].copy_from_slice(&30u16.to_be_bytes());
        cases.push(("IP total length shorter than the headers", bad, Some(Reason::Malformed)));
        // Truncated at every length the kernel accepts (it refuses frames under 14 bytes).
        for len in 14..good.len() {
            cases.push(("truncated SYN", good[..len].to_vec(), Some(Reason::Malformed)));
        }
        for (what, frame, reason) in &cases {
            let before = reason.map(|r| l.reason(r));
            let (action, out) = l.run(frame);
            assert_eq!(action, XDP_PASS, "{what} ({} bytes)", frame.len());
            assert_eq!(&out, frame, "{what} ({} bytes) must come back unchanged", frame.len());
            if let (Some(r), Some(b)) = (reason, before) {
                assert_eq!(l.reason(*r), b + 1, "{what} counted as {}", r.name());
            }
        }
        assert!(l.flows.entries().is_empty(), "none of these opened a flow");
        // Frames under the Ethernet header length never reach the program.
        let mut out = vec![0u8; 64];
        let short = [0u8; 13];
        let r =
            l.prog().test_run(TestRunOptions { data_in: Some(&short), data_out: Some(&mut out), ..Default::default() });
        assert!(r.is_err(), "the kernel refuses a 13-byte frame");
    });
}
