//! Packet fixtures through BPF_PROG_TEST_RUN: the real XDP program, real maps filled by the
//! agent's own map owner, frames in and frames out compared byte for byte with frames built
//! independently here (checksums computed in full).
//!
//! Each test is a table of rows (`integration::table`): a description, the input frame, the
//! expected action, the expected output frame, and the counters and flow states the row must
//! leave. The namespace and loader are `integration::fixture`.

use std::{collections::HashMap, net::Ipv4Addr};

use aya::programs::{TestRun, TestRunOptions};
use integration::{
    fixture::*,
    frames::{self, Tcp, ACK, FIN, PSH, RST, SYN},
    table::{exact, exact_later, forwarded, later, run, Case, Iface, Out, Seen},
};
use lb_common::{Event, Reason};
use lb_user::{dataplane, dataplane::flows::FlowState};

fn all_up(_: u32) -> bool {
    true
}

/// A SYN to the etcd frontend: forwarded to the server the program picks, from the NAT port it
/// takes (both seen, for the rows after it).
fn open<'a>(what: &str, syn: &'a Tcp) -> Case<'a> {
    Case::new(what, syn.frame().into(), XDP_TX, exact_later(|s| s.flows.last().unwrap().forward(syn).frame())).opens()
}

#[test]
fn full_nat_handshake_data_and_close_byte_for_byte() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let client = (CLIENT, 51000);
        let client_key = key(client, ETCD);
        let syn = Tcp::new(client, ETCD, SYN);
        let mut ack = Tcp::new(client, ETCD, ACK);
        ack.seq = 1001;
        ack.ack = 5001;
        // What app1 sends to the NAT port the first row sees: its SYN-ACK, and segments made from
        // it (its MSS option kept).
        let from_app1 = |s: &Seen, flags: u8, payload: &[u8]| {
            let mut t = s.flows[0].from_server(SYN | ACK);
            t.src_mac = server_mac(1);
            t.dst_mac = D0_MAC;
            t.seq = 5000;
            t.ack = 1001;
            t.flags = flags;
            t.payload = payload.to_vec();
            t
        };
        let like_ack = |flags: u8, payload: Vec<u8>| Tcp { flags, payload, ..ack.clone() };
        let fin = like_ack(FIN | ACK, Vec::new());

        let mut table = vec![
            open("SYN: to app1 (round robin starts there), from a port of nat_ports", &syn).check(|_, s| {
                assert_eq!(s.flows[0].server, server(1), "round robin starts at the first server");
                assert!((40000..=40999).contains(&s.flows[0].port), "NAT port {} from the reserved range", s.flows[0].port);
            }),
            Case::new(
                "retransmitted SYN: follows the same flow, rewritten exactly",
                syn.frame().into(),
                XDP_TX,
                forwarded(syn.clone()),
            ),
            Case::new(
                "SYN-ACK from app1: back to the client",
                later(|s| from_app1(s, SYN | ACK, &[]).frame()),
                XDP_TX,
                exact_later(|s| to_client(&from_app1(s, SYN | ACK, &[]), client).frame()),
            ),
            Case::new(
                "ACK: completes the handshake",
                ack.frame().into(),
                XDP_TX,
                forwarded(ack.clone()),
            )
            .flow(client_key.into(), FlowState::Established),
        ];
        // Data both ways, odd lengths included (checksum padding).
        for len in [1usize, 2, 3, 1000, 1459] {
            let d = like_ack(PSH | ACK, (0..len).map(|b| b as u8).collect());
            let r = move |s: &Seen| from_app1(s, PSH | ACK, &vec![0xa5; len]);
            table.push(Case::new(
                format!("{len}-byte payload to app1"),
                d.frame().into(),
                XDP_TX,
                forwarded(d),
            ));
            table.push(Case::new(
                format!("{len}-byte payload from app1"),
                later(move |s| r(s).frame()),
                XDP_TX,
                exact_later(move |s| to_client(&r(s), client).frame()),
            ));
        }
        table.extend([
            Case::new("FIN from the client", fin.frame().into(), XDP_TX, forwarded(fin))
                .flow(client_key.into(), FlowState::Closing),
            Case::new(
                "FIN from app1: closed (lingering), both entries agree",
                later(|s| from_app1(s, FIN | ACK, &[]).frame()),
                XDP_TX,
                exact_later(|s| to_client(&from_app1(s, FIN | ACK, &[]), client).frame()),
            )
            .flow(client_key.into(), FlowState::Closed)
            .flow(later(|s| s.flows[0].server_key()), FlowState::Closed),
            Case::new(
                "the last ACK still goes through while the flow lingers",
                ack.frame().into(),
                XDP_TX,
                forwarded(ack.clone()),
            ),
            open("a new SYN on the same tuple after close: a new flow, on the next server", &syn)
                .counts(Event::TupleReused, 1)
                .check(|l, s| {
                    assert_eq!(s.flows[1].server, server(2), "port reuse after close opens a new flow on the next server");
                    let c = l.entry(client_key).unwrap();
                    assert_eq!(
                        (c.new_dst_addr, c.new_src_port_be),
                        (server(2).octets(), s.flows[1].port.to_be()),
                        "the tuple is the new flow's"
                    );
                })
                // The old server side lingers and holds its NAT port until it may be used again.
                .flow(later(|s| s.flows[0].server_key()), FlowState::Closed),
        ]);
        run(&mut l, &table);

        assert_eq!(l.event(Event::TupleReused), 1);
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
        // Without redispatch (integration/tests/redispatch.rs has it): the RST goes to the client.
        let config = CONFIG.replace("name = \"etcd\"\nserver", "name = \"etcd\"\nredispatch = false\nserver");
        let mut l = fx.load_config(&all_up, 1024, &config);
        let client = (CLIENT, 52000);
        let syn = Tcp::new(client, ETCD, SYN);
        let rst = |s: &Seen| {
            let mut t = s.flows[0].from_server(RST | ACK);
            t.ack = 1001;
            t
        };
        let table = [
            open("SYN: opens a flow", &syn),
            Case::new(
                "RST|ACK from the server: passed on to the client, the flow closed",
                later(|s| rst(s).frame()),
                XDP_TX,
                exact_later(|s| to_client(&rst(s), client).frame()),
            )
            .flow(key(client, ETCD).into(), FlowState::Closed)
            .check(|l, _| assert_eq!(l.server_stats("app1").syn_rst, 1, "a SYN answered by RST is observed (layer 4)")),
        ];
        run(&mut l, &table);
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
        let mut rst = Tcp::new((VIP, 16443), (CLIENT, 53000), RST | ACK);
        rst.dst_mac = CLIENT_MAC;
        rst.src_mac = D0_MAC;
        rst.seq = 0;
        rst.ack = 0xfffffff1;
        rst.window = 0;
        rst.ip_id = 0;
        rst.tcp_options.clear();
        let table = [Case::new(
            "SYN with data to a frontend whose one server is DOWN: a bare RST|ACK acknowledging it, back out \
             of the interface it came in on",
            syn.frame().into(),
            XDP_TX,
            exact(rst.frame()),
        )
        .counts(Reason::NoBackend, 1)];
        run(&mut l, &table);
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
        let syns: Vec<Tcp> = (0..300u16).map(|p| Tcp::new((CLIENT, 20000 + p), ETCD, SYN)).collect();
        let table: Vec<Case> = syns.iter().map(|syn| open(&format!("SYN from port {}", syn.sport), syn)).collect();
        let seen = run(&mut l, &table);
        let mut count = HashMap::new();
        for f in &seen.flows {
            *count.entry(f.server).or_insert(0) += 1;
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
        let far = Ipv4Addr::new(198, 19, 0, 31);
        let syn = Tcp::new((CLIENT, 54000), (VIP, 2000), SYN);
        // The server's reply, to the NAT port the first row captures.
        let reply = |port: u16| {
            let mut r = Tcp::new((far, 2000), (VIP2, port), SYN | ACK);
            r.dst_mac = D1_MAC;
            r
        };
        let table = [
            Case::new(
                "SYN to a server behind d1: redirected through the devmap",
                syn.frame().into(),
                XDP_REDIRECT,
                exact_later(|s| {
                    syn.with((VIP2, s.flows[0].port), (far, 2000), D1_MAC, [0x02, 0, 0, 0, 1, 0x31]).frame()
                }),
            )
            .opens(),
            Case::new(
                "the reply arrives on d1: back to the client's MAC via d0",
                later(|s| reply(s.flows[0].port).frame()),
                XDP_REDIRECT,
                exact_later(|s| reply(s.flows[0].port).with((VIP, 2000), (CLIENT, 54000), D0_MAC, CLIENT_MAC).frame()),
            )
            .on(Iface::D1),
        ];
        run(&mut l, &table);
    });
}

#[test]
fn no_neighbour_entry_hands_the_rewritten_packet_to_the_kernel() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let syn = Tcp::new((CLIENT, 55000), (VIP, 3000), SYN);
        let unresolved = Ipv4Addr::new(198, 18, 0, 24);
        let table = [Case::new(
            "SYN to a server without a neighbour entry: rewritten for the kernel to forward (MACs untouched)",
            syn.frame().into(),
            XDP_PASS,
            exact_later(|s| syn.with((VIP, s.flows[0].port), (unresolved, 3000), syn.src_mac, syn.dst_mac).frame()),
        )
        .opens()
        .counts(Reason::NoNeighbour, 1)];
        run(&mut l, &table);
        assert_eq!(l.reason(Reason::NoNeighbour), 1);
    });
}

#[test]
fn everything_that_is_not_ours_passes_untouched() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let syn = Tcp::new((CLIENT, 56000), ETCD, SYN);
        let mut opts = syn.clone();
        opts.ip_options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
        let frag = |word: u16| Tcp { frag: word, ..syn.clone() }.frame();
        let good = syn.frame();
        let bad = |at: usize, bytes: &[u8]| {
            let mut f = good.clone();
            f[at..at + bytes.len()].copy_from_slice(bytes);
            f
        };
        // Every row: passed to the kernel unchanged, counted under its reason.
        let untouched = |what: &str, frame: Vec<u8>, reason: Reason| {
            Case::new(format!("{what} ({} bytes)", frame.len()), frame.into(), XDP_PASS, Out::Unchanged)
                .counts(reason, 1)
        };
        let mut table = vec![
            untouched("ARP", frames::arp_request(CLIENT, VIP), Reason::Passed),
            untouched("IPv6 TCP SYN to the frontend port", frames::ipv6_tcp_syn(12379), Reason::Passed),
            untouched(
                "UDP",
                frames::ipv4_other(17, CLIENT, VIP, b"\x30\x39\x30\x39\x00\x0c\x00\x00dns?"),
                Reason::Passed,
            ),
            untouched(
                "ICMP echo",
                frames::ipv4_other(1, CLIENT, VIP, b"\x08\x00\xf7\xff\x00\x00\x00\x00"),
                Reason::Passed,
            ),
            untouched("SSH to the balancer", Tcp::new((CLIENT, 56001), (VIP, 22), SYN).frame(), Reason::Passed),
            untouched(
                "frontend port on another address",
                Tcp::new((CLIENT, 56002), (Ipv4Addr::new(198, 18, 0, 99), 12379), SYN).frame(),
                Reason::Passed,
            ),
            untouched("ACK to a frontend without a flow", Tcp::new((CLIENT, 56003), ETCD, ACK).frame(), Reason::NoFlow),
            untouched(
                "reply to a NAT port without a flow",
                Tcp::new((server(1), 2379), (VIP, 40500), SYN | ACK).frame(),
                Reason::NoFlow,
            ),
            untouched("SYN with IP options", opts.frame(), Reason::IpOptions),
            untouched("first fragment", frag(0x2000), Reason::Fragment), // MF
            untouched("later fragment", frag(0x0010), Reason::Fragment), // offset 128
            untouched("IHL 4", bad(14, &[0x44]), Reason::Malformed),
            untouched("TCP data offset 4", bad(14 + 20 + 12, &[4 << 4]), Reason::Malformed),
            untouched("IP total length beyond the frame", bad(16, &2000u16.to_be_bytes()), Reason::Malformed),
            untouched("IP total length shorter than the headers", bad(16, &30u16.to_be_bytes()), Reason::Malformed),
        ];
        // Truncated at every length the kernel accepts (it refuses frames under 14 bytes).
        for len in 14..good.len() {
            table.push(untouched("truncated SYN", good[..len].to_vec(), Reason::Malformed));
        }
        run(&mut l, &table);
        assert!(l.flows.entries().is_empty(), "none of these opened a flow");
        // Frames under the Ethernet header length never reach the program.
        let mut out = vec![0u8; 64];
        let short = [0u8; 13];
        let r =
            l.prog().test_run(TestRunOptions { data_in: Some(&short), data_out: Some(&mut out), ..Default::default() });
        assert!(r.is_err(), "the kernel refuses a 13-byte frame");
    });
}

#[test]
fn allowlist_drops_and_counts_a_syn_from_an_unlisted_source_and_only_for_its_frontend() {
    const XDP_DROP: u32 = 1;
    let fx = fixture();
    fx.ns.enter(|| {
        let config = CONFIG.replace(
            "bind = \"*:12379\"\nbackend = \"etcd\"\n",
            "bind = \"*:12379\"\nbackend = \"etcd\"\nallow = [\"198.18.0.0/30\", \"198.18.5.0/24\"]\n",
        );
        assert_ne!(config, CONFIG);
        let mut l = fx.load_config(&all_up, 1024, &config);
        let listed = Tcp::new((CLIENT, 54000), ETCD, SYN);
        let in_second_net = Tcp::new((Ipv4Addr::new(198, 18, 5, 77), 54001), ETCD, SYN);
        let just_past_the_prefix = Tcp::new((Ipv4Addr::new(198, 18, 0, 4), 54002), ETCD, SYN);
        let unlisted = Tcp::new((Ipv4Addr::new(198, 18, 0, 99), 54003), ETCD, SYN);
        let to_a_frontend_without_a_list = Tcp::new((Ipv4Addr::new(198, 18, 0, 99), 54004), (VIP, 16443), SYN);
        let mut ack_unlisted = Tcp::new((Ipv4Addr::new(198, 18, 0, 99), 54003), ETCD, ACK);
        ack_unlisted.seq = 1001;
        let table = [
            open("SYN from 198.18.0.1, inside 198.18.0.0/30: a flow", &listed),
            open("SYN from 198.18.5.77, inside the second network: a flow", &in_second_net),
            Case::new(
                "SYN from 198.18.0.4, one past the /30: dropped",
                just_past_the_prefix.frame().into(),
                XDP_DROP,
                Out::Unchanged,
            )
            .counts(Reason::NotAllowed, 1)
            .counts(Reason::NewFlow, 0),
            Case::new("SYN from 198.18.0.99: dropped", unlisted.frame().into(), XDP_DROP, Out::Unchanged)
                .counts(Reason::NotAllowed, 1),
            Case::new(
                "its ACK: no flow, so the kernel's as for any stray segment (not counted as not_allowed)",
                ack_unlisted.frame().into(),
                XDP_PASS,
                Out::Unchanged,
            )
            .counts(Reason::NotAllowed, 0)
            .counts(Reason::NoFlow, 1),
            Case::new(
                "the same source to a frontend without a list: a flow, to its server's port",
                to_a_frontend_without_a_list.frame().into(),
                XDP_TX,
                exact_later(|s| {
                    let mut t = s.flows.last().unwrap().forward(&to_a_frontend_without_a_list);
                    t.dport = 6443;
                    t.frame()
                }),
            )
            .opens(),
        ];
        run(&mut l, &table);
        assert_eq!(l.reason(Reason::NotAllowed), 2);
        assert_eq!(l.reason(Reason::NewFlow), 3);
        // Per frontend too (HAProxy's dcon): the etcd frontend's, and none for the other.
        let denied = |name: &str| {
            let id = l.topology.frontends.iter().find(|f| f.name == name).unwrap().id;
            l.counters.frontend(id).unwrap().denied
        };
        assert_eq!((denied("etcd"), denied("api")), (2, 0));
    });
}

/// A router on the server's side (towards app1) and one on the client's side send ICMP errors
/// about the flow's packets to the balancer's addresses: each reaches the flow's other end, its
/// quote translated back to what that end really sent, byte for byte, with every checksum whole
/// (outer, ICMP, quoted IPv4 and TCP). Errors about no flow, and other ICMP, pass untouched;
/// fragments and IP options of a tracked flow are dropped (the kernel would answer RST).
#[test]
fn icmp_errors_about_a_flow_reach_its_other_end_translated() {
    const XDP_DROP: u32 = 1;
    use frames::{icmp_checksums_valid, icmp_error, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_TIME_EXCEEDED};
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let client = (CLIENT, 51100);
        let syn = Tcp::new(client, ETCD, SYN);
        let mut ack = Tcp::new(client, ETCD, ACK);
        (ack.seq, ack.ack) = (1001, 5001);
        let router = Ipv4Addr::new(198, 18, 0, 254);
        let router_mac = [0x02, 0, 0, 0, 0, 0xfe];
        // A frag-needed's next-hop MTU (1280), left as it is.
        let mtu = [0, 0, 0x05, 0x00];
        let synack = |s: &Seen| {
            let mut t = s.flows[0].from_server(SYN | ACK);
            (t.src_mac, t.dst_mac, t.seq, t.ack) = (server_mac(1), D0_MAC, 5000, 1001);
            t
        };
        let ip = |t: &Tcp| t.frame()[14..].to_vec();
        let frag = |word: u16| Tcp { frag: word, payload: vec![7; 64], ..ack.clone() }.frame();
        let with_options = Tcp { ip_options: vec![1, 1, 1, 0], ..ack.clone() }.frame();
        let table = vec![
            open("SYN: opens the flow to app1", &syn),
            Case::new(
                "frag-needed from a router towards app1 about the SYN as the balancer sent it: to the client, about the SYN as the client sent it",
                later(|s| icmp_error((router_mac, D0_MAC), router, VIP, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu, &ip(&s.flows[0].forward(&syn)))),
                XDP_TX,
                exact(icmp_error((D0_MAC, CLIENT_MAC), VIP, CLIENT, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu, &ip(&syn))),
            )
            .counts(Reason::IcmpToClient, 1),
            Case::new(
                "the same with the quote cut after 8 bytes of TCP (no TCP checksum in it)",
                later(|s| icmp_error((router_mac, D0_MAC), router, VIP, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu, &ip(&s.flows[0].forward(&syn))[..28])),
                XDP_TX,
                exact(icmp_error((D0_MAC, CLIENT_MAC), VIP, CLIENT, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu, &ip(&syn)[..28])),
            )
            .counts(Reason::IcmpToClient, 1),
            Case::new(
                "SYN-ACK from app1: back to the client",
                later(|s| synack(s).frame()),
                XDP_TX,
                exact_later(|s| to_client(&synack(s), client).frame()),
            ),
            Case::new(
                "time exceeded from a router on the client's side about the SYN-ACK as the balancer sent it: to app1, about the SYN-ACK as app1 sent it",
                later(|s| icmp_error((router_mac, D0_MAC), router, VIP, ICMP_TIME_EXCEEDED, 0, [0; 4], &ip(&to_client(&synack(s), client)))),
                XDP_TX,
                exact_later(|s| icmp_error((D0_MAC, server_mac(1)), VIP, server(1), ICMP_TIME_EXCEEDED, 0, [0; 4], &ip(&synack(s)))),
            )
            .counts(Reason::IcmpToServer, 1),
            Case::new(
                "ACK: completes the handshake; errors find the established flow too",
                ack.frame().into(),
                XDP_TX,
                forwarded(ack.clone()),
            ),
            Case::new(
                "port unreachable from app1 itself about the ACK: to the client",
                later(|s| icmp_error((server_mac(1), D0_MAC), server(1), VIP, ICMP_DEST_UNREACH, 3, [0; 4], &ip(&s.flows[0].forward(&ack)))),
                XDP_TX,
                exact(icmp_error((D0_MAC, CLIENT_MAC), VIP, CLIENT, ICMP_DEST_UNREACH, 3, [0; 4], &ip(&ack))),
            )
            .counts(Reason::IcmpToClient, 1)
            .check(|l, _| assert!(l.reason(Reason::IcmpToClient) == 3)),
            Case::new(
                "frag-needed about a tuple no flow has: the kernel's, untouched",
                icmp_error((router_mac, D0_MAC), router, VIP, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu, &ip(&Tcp::new((VIP, 40999), (server(2), 2379), SYN))).into(),
                XDP_PASS,
                Out::Unchanged,
            )
            .counts(Reason::Passed, 1),
            Case::new(
                "an ICMP redirect about the flow (not an error xdplb translates): untouched",
                later(|s| icmp_error((router_mac, D0_MAC), router, VIP, 5, 1, [198, 18, 0, 253], &ip(&s.flows[0].forward(&syn)))),
                XDP_PASS,
                Out::Unchanged,
            )
            .counts(Reason::Passed, 1),
            Case::new("the client's first fragment on the flow: dropped", frag(0x2000).into(), XDP_DROP, Out::Unchanged)
                .counts(Reason::FragmentOfFlow, 1),
            Case::new(
                "a later fragment (no ports in it): the kernel's, untouched",
                frag(0x0010).into(),
                XDP_PASS,
                Out::Unchanged,
            )
            .counts(Reason::Fragment, 1),
            Case::new("the client's segment with IP options: dropped", with_options.into(), XDP_DROP, Out::Unchanged)
                .counts(Reason::IpOptionsOfFlow, 1),
            Case::new(
                "app1's first fragment on the flow: dropped",
                later(|s| Tcp { frag: 0x2000, payload: vec![9; 64], ..synack(s) }.frame()),
                XDP_DROP,
                Out::Unchanged,
            )
            .counts(Reason::FragmentOfFlow, 1),
        ];
        run(&mut l, &table);
        // The builders compute every checksum in full; the check of the checker itself:
        let good = icmp_error((router_mac, D0_MAC), router, VIP, 3, 4, mtu, &ip(&syn));
        assert!(icmp_checksums_valid(&good));
        let mut bad = good.clone();
        bad[14 + 20 + 8 + 20 + 16] ^= 1;
        assert!(!icmp_checksums_valid(&bad), "a corrupted quote is seen");
    });
}

/// A flow's packet bigger than the MTU of the interface it would leave by (d1 and then d0 held
/// to 1280 bytes): with DF it is answered with a frag-needed to its sender (from the address
/// it was sent to, quoting its IPv4 header and 8 TCP bytes, carrying 1280), byte for byte;
/// without DF it is rewritten and handed to the kernel, which fragments it. Before, the redirect
/// dropped it without a word and the connection black-holed.
#[test]
fn a_packet_too_big_for_its_way_out_is_answered_with_frag_needed() {
    use frames::{icmp_error, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED};
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        fx.ns.ip(&["link", "set", "d1", "mtu", "1280"]).unwrap();
        let far = Ipv4Addr::new(198, 19, 0, 31);
        let far_mac = [0x02, 0, 0, 0, 1, 0x31];
        let client = (CLIENT, 54100);
        let syn = Tcp::new(client, (VIP, 2000), SYN);
        let big = |frag: u16, len: usize| {
            let mut t = Tcp::new(client, (VIP, 2000), ACK | PSH);
            (t.seq, t.ack, t.frag, t.payload) = (1001, 5001, frag, vec![0x5a; len]);
            t
        };
        let reply = |port: u16, len: usize| {
            let mut r = Tcp::new((far, 2000), (VIP2, port), ACK | PSH);
            (r.dst_mac, r.src_mac, r.seq, r.ack, r.payload) = (D1_MAC, far_mac, 5001, 1001, vec![0x6b; len]);
            r
        };
        // The data path's own frag-needed: what `icmp_error` builds, with IP id 0.
        let frag_needed = |macs, from, to, packet: &Tcp| {
            let mut f = icmp_error(
                macs,
                from,
                to,
                ICMP_DEST_UNREACH,
                ICMP_FRAG_NEEDED,
                [0, 0, 0x05, 0x00],
                &packet.frame()[14..42],
            );
            f[18..20].copy_from_slice(&[0, 0]);
            f[24..26].copy_from_slice(&[0, 0]);
            let c = lb_common::checksum::ipv4_header(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            f
        };
        let table = [
            Case::new(
                "SYN to the server behind d1: redirected",
                syn.frame().into(),
                XDP_REDIRECT,
                exact_later(|s| syn.with((VIP2, s.flows[0].port), (far, 2000), D1_MAC, far_mac).frame()),
            )
            .opens(),
            Case::new(
                "1200 bytes with DF: fit d1's 1280, redirected",
                big(0x4000, 1160).frame().into(),
                XDP_REDIRECT,
                exact_later(|s| big(0x4000, 1160).with((VIP2, s.flows[0].port), (far, 2000), D1_MAC, far_mac).frame()),
            )
            .counts(Reason::Forwarded, 1),
            Case::new(
                "1400 bytes with DF: frag-needed to the client from the frontend, MTU 1280",
                big(0x4000, 1360).frame().into(),
                XDP_TX,
                exact(frag_needed((D0_MAC, CLIENT_MAC), VIP, CLIENT, &big(0x4000, 1360))),
            )
            .counts(Reason::TooBig, 1),
            Case::new(
                "1400 bytes without DF: rewritten, for the kernel to fragment (MACs untouched)",
                big(0, 1360).frame().into(),
                XDP_PASS,
                exact_later(|s| {
                    let b = big(0, 1360);
                    b.with((VIP2, s.flows[0].port), (far, 2000), b.src_mac, b.dst_mac).frame()
                }),
            )
            .counts(Reason::TooBig, 1),
            Case::new(
                "1400 bytes from the server, d0 held to 1280 too: frag-needed back to it from the NAT address",
                later(|s| reply(s.flows[0].port, 1360).frame()),
                XDP_TX,
                exact_later(|s| frag_needed((D1_MAC, far_mac), VIP2, far, &reply(s.flows[0].port, 1360))),
            )
            .on(Iface::D1)
            .before(|_| {
                fx.ns.ip(&["link", "set", "d0", "mtu", "1280"]).unwrap();
            })
            .counts(Reason::TooBig, 1),
        ];
        run(&mut l, &table);
    });
}

/// The client's side changes routers mid-flow (a VRRP failover, a replaced router: a new MAC):
/// its next packet comes in from the new MAC, and from then on the flow's replies go to it, not
/// to the MAC recorded at SYN time, which is gone. Counted once.
#[test]
fn replies_follow_the_way_the_client_now_comes_in() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let client = (CLIENT, 51200);
        let new_router = [0x02, 0, 0, 0, 0, 0x77];
        let syn = Tcp::new(client, ETCD, SYN);
        let mut ack = Tcp::new(client, ETCD, ACK);
        (ack.seq, ack.ack) = (1001, 5001);
        let via_new = Tcp { src_mac: new_router, ..ack.clone() };
        let from_app1 = |s: &Seen, flags: u8| {
            let mut t = s.flows[0].from_server(flags);
            (t.src_mac, t.dst_mac, t.seq, t.ack) = (server_mac(1), D0_MAC, 5000 + u32::from(flags & SYN == 0), 1001);
            t
        };
        let table = [
            open("SYN from the client's first router", &syn),
            Case::new(
                "SYN-ACK: to the MAC the SYN came from",
                later(|s| from_app1(s, SYN | ACK).frame()),
                XDP_TX,
                exact_later(|s| to_client(&from_app1(s, SYN | ACK), client).frame()),
            ),
            Case::new("ACK from the same router: no change", ack.frame().into(), XDP_TX, forwarded(ack.clone()))
                .counts(Event::ReplyHopMoved, 0),
            Case::new(
                "the next segment comes in from a new router's MAC: forwarded as ever",
                via_new.frame().into(),
                XDP_TX,
                forwarded(via_new.clone()),
            )
            .counts(Event::ReplyHopMoved, 1),
            Case::new(
                "app1's data: to the new router",
                later(|s| Tcp { payload: b"etcd".to_vec(), ..from_app1(s, ACK | PSH) }.frame()),
                XDP_TX,
                exact_later(|s| {
                    let t = to_client(&Tcp { payload: b"etcd".to_vec(), ..from_app1(s, ACK | PSH) }, client);
                    Tcp { dst_mac: new_router, ..t }.frame()
                }),
            ),
            Case::new(
                "another segment via the new router: nothing moves",
                via_new.frame().into(),
                XDP_TX,
                forwarded(via_new.clone()),
            )
            .counts(Event::ReplyHopMoved, 0),
        ];
        run(&mut l, &table);
    });
}

/// The data path looks an established flow up before the frontend: a flow whose frontend entry
/// is gone (a reload removed it, the port still served by another) keeps its server, while a
/// new SYN and a segment of no flow to that address are the kernel's. With the frontend looked
/// up first, the flow's data would have gone to the kernel (which answers RST).
#[test]
fn an_established_flow_is_forwarded_without_its_frontend_entry() {
    use aya::maps::{HashMap as BpfHashMap, Map, MapData};
    use lb_common::{names, Frontend, FrontendKey};

    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let client = (CLIENT, 51500);
        let (action, out) = l.run(&Tcp::new(client, ETCD, SYN).frame());
        assert_eq!(action, XDP_TX, "the SYN opens a flow");
        let nat = frames::parse(&out).expect("the SYN, rewritten");
        let mut synack = Tcp::new((nat.dst, nat.dport), (VIP, nat.sport), SYN | ACK);
        (synack.seq, synack.ack, synack.src_mac, synack.dst_mac) = (5000, 1001, server_mac(1), D0_MAC);
        assert_eq!(l.run(&synack.frame()).0, XDP_TX, "the SYN-ACK goes back to the client");
        let mut ack = Tcp::new(client, ETCD, ACK);
        (ack.seq, ack.ack) = (1001, 5001);
        assert_eq!(l.run(&ack.frame()).0, XDP_TX, "the ACK completes the handshake");
        let data = Tcp { flags: PSH | ACK, payload: b"put k v".to_vec(), ..ack.clone() }.frame();
        let (action, before) = l.run(&data);
        assert_eq!(action, XDP_TX);

        // What a reload that drops this address's frontend leaves: no entry, the port still on.
        let map = Map::from_map_data(MapData::from_pin(l.pin_dir.join(names::FRONTENDS)).unwrap()).unwrap();
        let mut fronts: BpfHashMap<MapData, FrontendKey, Frontend> = BpfHashMap::try_from(map).unwrap();
        let gone = fronts
            .keys()
            .map(Result::unwrap)
            .filter(|k| k.addr == VIP.octets() && u16::from_be(k.port_be) == ETCD.1)
            .collect::<Vec<_>>();
        assert_eq!(gone.len(), 1, "one entry for {VIP}:{}", ETCD.1);
        fronts.remove(&gone[0]).unwrap();

        let (forwarded, passed, no_flow) =
            (l.reason(Reason::Forwarded), l.reason(Reason::Passed), l.reason(Reason::NoFlow));
        let (action, after) = l.run(&data);
        assert_eq!(action, XDP_TX, "the established flow's data is still forwarded");
        assert_eq!(after, before, "byte for byte as before the frontend went");
        assert_eq!(l.reason(Reason::Forwarded), forwarded + 1);
        assert_eq!(l.run(&Tcp::new((CLIENT, 51501), ETCD, SYN).frame()).0, XDP_PASS, "a new SYN: no frontend");
        let mut stray = Tcp::new((CLIENT, 51502), ETCD, ACK);
        (stray.seq, stray.ack) = (1, 1);
        assert_eq!(l.run(&stray.frame()).0, XDP_PASS, "a segment of no flow");
        assert_eq!(l.reason(Reason::Passed), passed + 2, "both passed as not ours");
        assert_eq!(l.reason(Reason::NoFlow), no_flow, "neither counted as a lost flow's");
    });
}
