//! IPv6 packet fixtures through BPF_PROG_TEST_RUN: the real XDP program (`xdplb`, which
//! tail-calls `xdplb6` and its stages for IPv6 frames), real maps filled by the agent's own map
//! owner from a configuration whose `*:12379` frontend is dual stack (three IPv4 and three IPv6
//! servers), frames in and frames out compared byte for byte with frames built independently
//! here (the TCP checksum over the IPv6 pseudo-header computed in full).
//!
//! Each test is a table of rows (`integration::table`), as in fixtures.rs: a description, the
//! input frame, the expected action, the expected output frame, and the counters and flow states
//! the row must leave. The namespace (`fixture6`: IPv6 addresses, neighbours and forwarding on
//! the fixture's interfaces) and loader are `integration::fixture`. Addresses: 2001:2::/48 and
//! 198.18.0.0/15 (benchmarking blocks).

use std::{
    collections::{HashMap, HashSet},
    net::Ipv6Addr,
};

use integration::{
    fixture::*,
    frames::{self, syn_options, ts_options, Tcp, ACK, FIN, PSH, RST, SYN},
    table::{exact, exact_later, forwarded, forwarded6, later, run, Case, Out, Seen},
};
use lb_common::{tcp::tuple_hash, Event, Reason};
use lb_user::{dataplane, dataplane::flows::FlowState};

fn all_up(_: u32) -> bool {
    true
}

/// An IPv6 SYN to the etcd frontend: forwarded to the IPv6 server the program picks, from the
/// balancer's IPv6 address and the NAT port it takes (both seen, for the rows after it).
fn open6<'a>(what: &str, syn: &'a Tcp<Ipv6Addr>) -> Case<'a> {
    Case::new(what, syn.frame().into(), XDP_TX, exact_later(|s| s.flows6.last().unwrap().forward(syn).frame())).opens6()
}

/// An IPv4 SYN to the same frontend: forwarded as fixtures.rs's are.
fn open4<'a>(what: &str, syn: &'a Tcp) -> Case<'a> {
    Case::new(what, syn.frame().into(), XDP_TX, exact_later(|s| s.flows.last().unwrap().forward(syn).frame())).opens()
}

/// What the IPv6 server of the first IPv6 flow sends to its NAT tuple: its SYN-ACK (seq 5000,
/// ack 1001, its MSS option kept), and segments made from it.
fn from_server6(s: &Seen, flags: u8, payload: &[u8]) -> Tcp<Ipv6Addr> {
    let mut t = s.flows6[0].from_server(SYN | ACK);
    t.src_mac = server6_mac(s.flows6[0].server.octets()[15] - 0x20);
    t.dst_mac = D0_MAC;
    t.seq = if flags & SYN != 0 { 5000 } else { 5001 };
    t.ack = 1001;
    t.flags = flags;
    t.payload = payload.to_vec();
    t
}

/// The client's segment after its SYN (seq 1001, ack 5001, no options).
fn client_segment(client: (Ipv6Addr, u16), flags: u8, payload: Vec<u8>) -> Tcp<Ipv6Addr> {
    let mut t = Tcp::new(client, ETCD6, flags);
    (t.seq, t.ack, t.payload) = (1001, 5001, payload);
    t
}

fn server_id(l: &Loaded, name: &str) -> u32 {
    l.topology.pool("etcd").unwrap().servers.iter().find(|s| s.name == name).unwrap().id
}

#[test]
fn ipv6_full_nat_handshake_data_and_close_byte_for_byte() {
    let fx = fixture6();
    fx.ns.enter(|| {
        let mut l = fx.load_config(&all_up, 1024, &config6());
        let client = (CLIENT6, 51000);
        let client_key = key6(client, ETCD6);
        // A flow label and traffic class, which the rewrite leaves as they are.
        let syn = Tcp { traffic: 0x0b8_1234, ..Tcp::new(client, ETCD6, SYN) };
        let ack = client_segment(client, ACK, Vec::new());
        let fin = client_segment(client, FIN | ACK, Vec::new());
        let syn4 = Tcp::new((CLIENT, 51000), ETCD, SYN);

        let mut table = vec![
            open6(
                "IPv6 SYN: to app1-v6 (the IPv6 round robin starts there), from the balancer's IPv6 address \
                 and a port of nat_ports, MACs from the IPv6 neighbour table",
                &syn,
            )
            .counts(Reason::NewFlow, 1)
            .flow6(client_key.into(), FlowState::SynSent)
            .check(|_, s| {
                assert_eq!(s.flows6[0].server, server6(1), "round robin starts at the first IPv6 server");
                assert!(
                    (40000..=40999).contains(&s.flows6[0].port),
                    "NAT port {} from the reserved range",
                    s.flows6[0].port
                );
            }),
            Case::new(
                "retransmitted IPv6 SYN: follows the same flow, rewritten exactly",
                syn.frame().into(),
                XDP_TX,
                forwarded6(syn.clone()),
            ),
            open4("an IPv4 SYN to the same dual-stack frontend: to app1, the IPv4 servers' own round robin", &syn4)
                .check(|l, s| {
                    assert_eq!(s.flows[0].server, server(1), "the IPv4 round robin is the IPv4 servers'");
                    assert!(l.entry(key((CLIENT, 51000), ETCD)).is_some(), "in the IPv4 table");
                }),
            Case::new(
                "SYN-ACK from app1-v6: back to the client, from the frontend's IPv6 address",
                later(|s| from_server6(s, SYN | ACK, &[]).frame()),
                XDP_TX,
                exact_later(|s| to_client6(&from_server6(s, SYN | ACK, &[]), client).frame()),
            )
            .counts(Reason::Replied, 1),
            Case::new("ACK: completes the handshake", ack.frame().into(), XDP_TX, forwarded6(ack.clone()))
                .counts(Reason::Forwarded, 1)
                .flow6(client_key.into(), FlowState::Established)
                .flow6(later(|s| s.flows6[0].server_key()), FlowState::Established),
        ];
        // Data both ways, odd lengths included (checksum padding).
        for len in [1usize, 2, 3, 1000, 1439] {
            let d = client_segment(client, PSH | ACK, (0..len).map(|b| b as u8).collect());
            let r = move |s: &Seen| from_server6(s, PSH | ACK, &vec![0xa5; len]);
            table.push(Case::new(format!("{len}-byte payload to app1-v6"), d.frame().into(), XDP_TX, forwarded6(d)));
            table.push(Case::new(
                format!("{len}-byte payload from app1-v6"),
                later(move |s| r(s).frame()),
                XDP_TX,
                exact_later(move |s| to_client6(&r(s), client).frame()),
            ));
        }
        table.extend([
            Case::new("FIN from the client", fin.frame().into(), XDP_TX, forwarded6(fin))
                .flow6(client_key.into(), FlowState::Closing),
            Case::new(
                "FIN from app1-v6: closed (lingering), both entries agree",
                later(|s| from_server6(s, FIN | ACK, &[]).frame()),
                XDP_TX,
                exact_later(|s| to_client6(&from_server6(s, FIN | ACK, &[]), client).frame()),
            )
            .flow6(client_key.into(), FlowState::Closed)
            .flow6(later(|s| s.flows6[0].server_key()), FlowState::Closed),
            Case::new(
                "the last ACK still goes through while the flow lingers",
                ack.frame().into(),
                XDP_TX,
                forwarded6(ack.clone()),
            ),
            open6("a new SYN on the same tuple after close: a new flow, on the next IPv6 server", &syn)
                .counts(Event::TupleReused, 1)
                .check(|l, s| {
                    assert_eq!(
                        s.flows6[1].server,
                        server6(2),
                        "port reuse after close opens a new flow on the next server"
                    );
                    let c = l.entry6(client_key).unwrap();
                    assert_eq!(
                        (c.new_dst_addr, c.new_src_port_be),
                        (server6(2).octets(), s.flows6[1].port.to_be()),
                        "the tuple is the new flow's"
                    );
                })
                .flow6(later(|s| s.flows6[0].server_key()), FlowState::Closed),
        ]);
        run(&mut l, &table);

        let st = l.server_stats("app1-v6");
        assert_eq!(st.new_flows, 1);
        assert!(st.packets_in >= 9 && st.packets_out >= 7, "{st:?}");
        assert_eq!(l.server_stats("app1").new_flows, 1, "the IPv4 flow is app1's");
    });
}

#[test]
fn ipv6_rst_inside_the_window_closes_the_flow() {
    let fx = fixture6();
    fx.ns.enter(|| {
        let mut l = fx.load_config(&all_up, 1024, &config6());
        let client = (CLIENT6, 52000);
        let client_key = key6(client, ETCD6);
        let syn = Tcp::new(client, ETCD6, SYN);
        let ack = client_segment(client, ACK, Vec::new());
        let rst = client_segment(client, RST, Vec::new());
        let table = [
            open6("SYN: opens a flow", &syn),
            Case::new(
                "SYN-ACK from the server: back to the client",
                later(|s| from_server6(s, SYN | ACK, &[]).frame()),
                XDP_TX,
                exact_later(|s| to_client6(&from_server6(s, SYN | ACK, &[]), client).frame()),
            ),
            Case::new("ACK: established", ack.frame().into(), XDP_TX, forwarded6(ack.clone()))
                .flow6(client_key.into(), FlowState::Established),
            Case::new(
                "RST from the client inside the window: passed on to the server, the flow closed",
                rst.frame().into(),
                XDP_TX,
                forwarded6(rst.clone()),
            )
            .counts(Event::RstOutOfWindow, 0)
            .flow6(client_key.into(), FlowState::Closed)
            .flow6(later(|s| s.flows6[0].server_key()), FlowState::Closed),
        ];
        run(&mut l, &table);
    });
}

#[test]
fn ipv6_round_robin_splits_30_new_flows_10_10_10() {
    let fx = fixture6();
    fx.ns.enter(|| {
        let mut l = fx.load_config(&all_up, 1024, &config6());
        let syns: Vec<Tcp<Ipv6Addr>> = (0..30u16).map(|p| Tcp::new((CLIENT6, 20000 + p), ETCD6, SYN)).collect();
        let table: Vec<Case> = syns.iter().map(|syn| open6(&format!("SYN from port {}", syn.sport), syn)).collect();
        let seen = run(&mut l, &table);
        let mut count = HashMap::new();
        for f in &seen.flows6 {
            *count.entry(f.server).or_insert(0) += 1;
        }
        for i in 1..=3 {
            assert_eq!(count.get(&server6(i)), Some(&10), "{count:?}");
        }
        // A NAT tuple each (a port may serve flows to different servers).
        let tuples: HashSet<(Ipv6Addr, u16)> = seen.flows6.iter().map(|f| (f.server, f.port)).collect();
        assert_eq!(tuples.len(), 30, "a NAT tuple each");
        assert!(l.flows.entries().is_empty(), "no IPv4 entry");
        assert_eq!(l.flows.entry_count(), 60, "two IPv6 entries per flow");
    });
}

#[test]
fn ipv6_syn_without_a_healthy_ipv6_server_is_answered_with_rst_and_ipv4_still_served() {
    let fx = fixture6();
    fx.ns.enter(|| {
        // Every IPv6 server DOWN, the IPv4 ones UP.
        let l = fx.load_config(&all_up, 1024, &config6());
        let v6: Vec<u32> = ["app1-v6", "app2-v6", "app3-v6"].iter().map(|n| server_id(&l, n)).collect();
        drop(l);
        let _ = dataplane::remove_pins(&fx.pin_dir);
        let mut l = fx.load_config(&|id| !v6.contains(&id), 1024, &config6());
        let client = (CLIENT6, 53000);
        let mut syn = Tcp { traffic: 0x0b8_1234, ..Tcp::new(client, ETCD6, SYN) };
        syn.seq = 0xffff_fff0;
        syn.ttl = 57;
        syn.payload = b"early data".to_vec();
        // A bare RST|ACK from the frontend: ports swapped, ack = seq + 1, hop limit 64, traffic
        // class and flow label 0, no options, no data.
        let mut rst = Tcp::new(ETCD6, client, RST | ACK);
        (rst.dst_mac, rst.src_mac) = (CLIENT_MAC, D0_MAC);
        (rst.seq, rst.ack, rst.window, rst.ttl) = (0, 0xffff_fff1, 0, 64);
        rst.tcp_options.clear();
        let syn4 = Tcp::new((CLIENT, 53000), ETCD, SYN);
        let table = [
            Case::new(
                "IPv6 SYN with data to the dual-stack frontend, no IPv6 server UP: a bare RST|ACK acknowledging \
                 it, back out of the interface it came in on",
                syn.frame().into(),
                XDP_TX,
                exact(rst.frame()),
            )
            .counts(Reason::NoBackend, 1)
            .counts(Reason::NewFlow, 0)
            .check(move |l, _| assert!(l.entry6(key6(client, ETCD6)).is_none(), "no flow for a refused SYN")),
            open4("an IPv4 SYN to the same frontend: its IPv4 servers are UP, forwarded", &syn4)
                .counts(Reason::NoBackend, 0)
                .counts(Reason::NewFlow, 1)
                .check(|_, s| assert_eq!(s.flows[0].server, server(1))),
        ];
        run(&mut l, &table);
        assert_eq!(l.reason(Reason::NoBackend), 1);
        assert_eq!(l.flows.entry_count(), 2, "the IPv4 flow's two entries only");
    });
}

#[test]
fn ipv6_that_is_not_ours_passes_untouched() {
    let fx = fixture6();
    fx.ns.enter(|| {
        let mut l = fx.load_config(&all_up, 1024, &config6());
        let syn = Tcp::new((CLIENT6, 56000), ETCD6, SYN);
        let untouched = |what: &str, frame: Vec<u8>, reason: Reason| {
            Case::new(format!("{what} ({} bytes)", frame.len()), frame.into(), XDP_PASS, Out::Unchanged)
                .counts(reason, 1)
                .counts(Reason::NewFlow, 0)
        };
        let table = [
            untouched(
                "IPv6 TCP SYN to the frontend with a hop-by-hop options header before TCP",
                frames::with_hop_by_hop(&syn.frame()),
                Reason::Ipv6ExtHeader,
            ),
            untouched(
                "ICMPv6 neighbour solicitation for the balancer's address",
                frames::neighbour_solicitation(CLIENT_MAC, CLIENT6, VIP6),
                Reason::Passed,
            ),
            untouched("IPv6 SSH to the balancer", Tcp::new((CLIENT6, 56001), (VIP6, 22), SYN).frame(), Reason::Passed),
            untouched(
                "IPv6 ACK to the frontend without a flow",
                Tcp::new((CLIENT6, 56002), ETCD6, ACK).frame(),
                Reason::NoFlow,
            ),
        ];
        run(&mut l, &table);
        assert_eq!(l.flows.entry_count(), 0, "none of these opened a flow");
        // The builders themselves: the frames they make verify.
        assert!(frames::checksums_valid(&syn.frame()));
        let mut bad = syn.frame();
        bad[60] ^= 1;
        assert!(!frames::checksums_valid(&bad), "a corrupted IPv6 segment is seen");
    });
}

/// An IPv6 address folded into the tuple hash's 32 bits: its four native-order words XORed.
fn fold32(a: Ipv6Addr) -> u32 {
    a.octets().chunks(4).map(|w| u32::from_ne_bytes(w.try_into().unwrap())).fold(0, |x, w| x ^ w)
}

/// Timestamps are translated on IPv6 flows as on IPv4's (tcp_fixtures.rs): the SYN's TSval
/// replaced by the tuple's clock, the echo translated back for the client, the client's later
/// TSvals moved by the same offset; every frame byte for byte.
#[test]
fn ipv6_timestamps_are_translated_byte_for_byte() {
    const CTS: u32 = 0x1111_1111;
    const STS: u32 = 0x5000_0000;
    let fx = fixture6();
    fx.ns.enter(|| {
        let mut l = fx.load_config(&all_up, 1024, &config6());
        let client = (CLIENT6, 58000);
        let syn = Tcp { tcp_options: syn_options(CTS, 0), ..Tcp::new(client, ETCD6, SYN) };
        let synack = |s: &Seen| Tcp { tcp_options: syn_options(STS, s.tsval), ..from_server6(s, SYN | ACK, &[]) };
        let ack = Tcp { tcp_options: ts_options(CTS + 1, STS), ..client_segment(client, ACK, Vec::new()) };
        let off = |s: &Seen| s.tsval.wrapping_sub(CTS);
        let table = [
            Case::new(
                "SYN: NAT, and the TSval from the tuple's clock",
                syn.frame().into(),
                XDP_TX,
                exact_later(|s| Tcp { tcp_options: syn_options(s.tsval, 0), ..s.flows6[0].forward(&syn) }.frame()),
            )
            .opens6()
            .check(|l, s| {
                let n = s.flows6[0];
                let hash =
                    tuple_hash(fold32(VIP6), n.port.to_be(), fold32(n.server), 2379u16.to_be(), l.settings().ts_secret);
                s.assert_tuple_clock(hash);
            }),
            Case::new(
                "SYN-ACK: the echo goes back to the client's clock, the server's TSval untouched",
                later(|s| synack(s).frame()),
                XDP_TX,
                exact_later(|s| Tcp { tcp_options: syn_options(STS, CTS), ..to_client6(&synack(s), client) }.frame()),
            ),
            Case::new(
                "ACK: TSval on the tuple's clock, the echo of the server's untouched",
                ack.frame().into(),
                XDP_TX,
                exact_later(|s| {
                    Tcp { tcp_options: ts_options((CTS + 1).wrapping_add(off(s)), STS), ..s.flows6[0].forward(&ack) }
                        .frame()
                }),
            )
            .flow6(key6(client, ETCD6).into(), FlowState::Established)
            .check(|l, s| {
                let c = l.entry6(key6(client, ETCD6)).unwrap();
                let srv = l.entry6(s.flows6[0].server_key()).unwrap();
                assert_eq!((c.ts_off, srv.ts_off), (off(s), off(s)), "both halves keep the offset");
            }),
        ];
        run(&mut l, &table);
    });
}

/// The IPv4 path of the dual-stack configuration: a whole frame through, byte for byte, and the
/// reply (the families share the program, not their tables).
#[test]
fn ipv4_through_the_dual_stack_frontend_byte_for_byte() {
    let fx = fixture6();
    fx.ns.enter(|| {
        let mut l = fx.load_config(&all_up, 1024, &config6());
        let client = (CLIENT, 57000);
        let syn = Tcp::new(client, ETCD, SYN);
        let synack = |s: &Seen| {
            let mut t = s.flows[0].from_server(SYN | ACK);
            (t.src_mac, t.dst_mac, t.seq, t.ack) = (server_mac(1), D0_MAC, 5000, 1001);
            t
        };
        let mut ack = Tcp::new(client, ETCD, ACK);
        (ack.seq, ack.ack) = (1001, 5001);
        let table = [
            open4("IPv4 SYN: to app1", &syn).check(|_, s| assert_eq!(s.flows[0].server, server(1))),
            Case::new(
                "SYN-ACK from app1: back to the client",
                later(|s| synack(s).frame()),
                XDP_TX,
                exact_later(|s| to_client(&synack(s), client).frame()),
            ),
            Case::new("ACK: established", ack.frame().into(), XDP_TX, forwarded(ack.clone()))
                .flow(key(client, ETCD).into(), FlowState::Established),
        ];
        run(&mut l, &table);
        assert_eq!(l.flows.entry_count(), 2, "IPv4 entries only");
    });
}

/// ICMPv6 errors about an IPv6 flow, translated for its other end (`xdplb6_icmp`): outer
/// addresses, the quote back to what that end sent (addresses, ports, quoted TCP checksum), the
/// ICMPv6 checksum over its pseudo-header; compared byte for byte with errors built whole here.
/// An error about no tracked flow passes untouched; a tracked flow's first fragment is dropped,
/// any other fragment passes.
#[test]
fn ipv6_icmp_errors_and_fragments_of_a_flow() {
    use frames::{icmp6_error, with_fragment_header, ICMP6_DEST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED};
    const XDP_DROP: u32 = 1;
    let fx = fixture6();
    fx.ns.enter(|| {
        let mut l = fx.load_config(&all_up, 1024, &config6());
        let client = (CLIENT6, 51100);
        let syn = Tcp::new(client, ETCD6, SYN);
        let router = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0xfe);
        let router_mac = [0x02, 0, 0, 0, 0, 0xfe];
        let mtu = [0, 0, 0x05, 0x00];
        let synack = |s: &Seen| from_server6(s, SYN | ACK, &[]);
        let ip = |t: &Tcp<Ipv6Addr>| t.frame()[14..].to_vec();
        let server_of = |s: &Seen| s.flows6[0].server;
        let server_mac_of = |s: &Seen| server6_mac(s.flows6[0].server.octets()[15] - 0x20);
        let data = client_segment(client, ACK | PSH, vec![7; 64]);
        let table = vec![
            open6("SYN: opens the flow", &syn),
            Case::new(
                "packet too big from a router towards the server about the SYN as the balancer sent it: to the client, about the SYN as the client sent it, the MTU as it was",
                later(|s| icmp6_error((router_mac, D0_MAC), router, VIP6, ICMP6_PACKET_TOO_BIG, 0, mtu, &ip(&s.flows6[0].forward(&syn)))),
                XDP_TX,
                exact(icmp6_error((D0_MAC, CLIENT_MAC), VIP6, CLIENT6, ICMP6_PACKET_TOO_BIG, 0, mtu, &ip(&syn))),
            )
            .counts(Reason::IcmpToClient, 1),
            Case::new(
                "the same with the quote cut after 8 bytes of TCP (no TCP checksum in it)",
                later(|s| icmp6_error((router_mac, D0_MAC), router, VIP6, ICMP6_PACKET_TOO_BIG, 0, mtu, &ip(&s.flows6[0].forward(&syn))[..48])),
                XDP_TX,
                exact(icmp6_error((D0_MAC, CLIENT_MAC), VIP6, CLIENT6, ICMP6_PACKET_TOO_BIG, 0, mtu, &ip(&syn)[..48])),
            )
            .counts(Reason::IcmpToClient, 1),
            Case::new(
                "SYN-ACK from the server: back to the client",
                later(|s| synack(s).frame()),
                XDP_TX,
                exact_later(|s| to_client6(&synack(s), client).frame()),
            ),
            Case::new(
                "time exceeded from a router on the client's side about the SYN-ACK as the balancer sent it: to the server, about the SYN-ACK as the server sent it",
                later(|s| icmp6_error((router_mac, D0_MAC), router, VIP6, ICMP6_TIME_EXCEEDED, 0, [0; 4], &ip(&to_client6(&synack(s), client)))),
                XDP_TX,
                exact_later(|s| icmp6_error((D0_MAC, server_mac_of(s)), VIP6, server_of(s), ICMP6_TIME_EXCEEDED, 0, [0; 4], &ip(&synack(s)))),
            )
            .counts(Reason::IcmpToServer, 1),
            Case::new(
                "port unreachable from the server itself about data the balancer sent: to the client",
                later(|s| icmp6_error((server_mac_of(s), D0_MAC), server_of(s), VIP6, ICMP6_DEST_UNREACH, 4, [0; 4], &ip(&s.flows6[0].forward(&data)))),
                XDP_TX,
                exact(icmp6_error((D0_MAC, CLIENT_MAC), VIP6, CLIENT6, ICMP6_DEST_UNREACH, 4, [0; 4], &ip(&data))),
            )
            .counts(Reason::IcmpToClient, 1),
            Case::new(
                "an error about a packet of no tracked flow: to the kernel untouched",
                icmp6_error((router_mac, D0_MAC), router, VIP6, ICMP6_DEST_UNREACH, 0, [0; 4], &ip(&Tcp::new((VIP6, 45000), (router, 80), SYN))).into(),
                XDP_PASS,
                Out::Unchanged,
            )
            .counts(Reason::Passed, 1),
            Case::new(
                "the first fragment of the flow's segment: dropped (the kernel would answer it with RST)",
                with_fragment_header(&data.frame(), 0, true).into(),
                XDP_DROP,
                Out::Unchanged,
            )
            .counts(Reason::FragmentOfFlow, 1),
            Case::new(
                "a later fragment (no ports): to the kernel",
                with_fragment_header(&data.frame(), 8, false).into(),
                XDP_PASS,
                Out::Unchanged,
            )
            .counts(Reason::Fragment, 1),
            Case::new(
                "a first fragment of no tracked flow: to the kernel",
                with_fragment_header(&client_segment((CLIENT6, 51101), ACK, vec![1; 16]).frame(), 0, true).into(),
                XDP_PASS,
                Out::Unchanged,
            )
            .counts(Reason::Fragment, 1),
        ];
        run(&mut l, &table);
    });
}
