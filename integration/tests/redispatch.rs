//! Redispatch and suspicion in the data path, through BPF_PROG_TEST_RUN: a server's RST to a SYN
//! becomes the client's SYN to the next server (byte for byte, checksums recomputed in full
//! here), a SYN left unanswered moves on the client's retransmission, both stop after `retries`,
//! a server that answered (even with a stale ACK) keeps its flow, and a server that refuses
//! `suspect_after` SYNs in a row gets no new flow until the agent clears it.

use std::{net::Ipv4Addr, time::Duration};

use integration::{
    fixture::*,
    frames::{self, Tcp, ACK, RST, SYN},
};
use lb_common::{Event, Reason};
use lb_user::dataplane::flows::FlowState;

fn all_up(_: u32) -> bool {
    true
}

/// Linux's SYN options: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
fn syn_options(tsval: u32) -> Vec<u8> {
    [&[2, 4, 0x05, 0xb4, 4, 2, 8, 10][..], &tsval.to_be_bytes(), &[0; 4], &[1, 3, 3, 7]].concat()
}

const CTS: u32 = 0x0123_4567;

/// The client's SYN from `cport`: where it went (server, NAT port) and the SYN itself.
fn syn(l: &mut Loaded, cport: u16) -> (Ipv4Addr, u16, Tcp) {
    let mut syn = Tcp::new((CLIENT, cport), (VIP, 12379), SYN);
    syn.seq = 777_000;
    syn.window = 42_000;
    syn.tcp_options = syn_options(CTS);
    let (action, out) = l.run(&syn.frame());
    assert_eq!(action, XDP_TX);
    let got = frames::parse(&out).unwrap();
    (got.dst, got.sport, syn)
}

/// The server's RST refusing `syn` (RST|ACK acknowledging it), as Linux sends it for a closed port.
fn refusal(srv: Ipv4Addr, nat: u16, syn: &Tcp) -> Tcp {
    let mut rst = Tcp::new((srv, 2379), (VIP, nat), RST | ACK);
    rst.src_mac = server_mac(srv.octets()[3] - 20);
    rst.seq = 0;
    rst.ack = syn.seq + 1;
    rst.window = 0;
    rst
}

#[test]
fn a_refused_syn_goes_to_the_next_server_byte_for_byte() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let (first, nat1, syn) = syn(&mut l, 62000);
        let (action, out) = l.run(&refusal(first, nat1, &syn).frame());
        assert_eq!(action, XDP_TX, "the rebuilt SYN goes out where the servers are");
        assert!(frames::checksums_valid(&out), "IP and TCP checksums valid");
        let got = frames::parse(&out).unwrap();
        assert_ne!(got.dst, first, "another server");
        let next = got.dst;
        // What the client sent, addressed to the next server: sequence number, window, options
        // in order (MSS, SACK permitted, timestamps, window scale), a fresh TSval from the new
        // tuple's clock; a new IPv4 header (id 0, DF, TTL 64).
        let tsval = u32::from_be_bytes(got.tcp_options[8..12].try_into().unwrap());
        let mut expect = syn.with((VIP, got.sport), (next, 2379), D0_MAC, server_mac(next.octets()[3] - 20));
        expect.tcp_options = syn_options(tsval);
        expect.ip_id = 0;
        expect.ttl = 64;
        assert_eq!(out, expect.frame(), "the client's SYN, rebuilt for the next server");
        assert_eq!(l.reason(Reason::Redispatched), 1);
        assert!(l.entry(key((first, 2379), (VIP, nat1))).is_none(), "the refusing server's side is gone");
        let c = l.entry(key((CLIENT, 62000), (VIP, 12379))).unwrap();
        assert_eq!((c.new_dst_addr, c.new_src_port_be, c.redispatches), (next.octets(), got.sport.to_be(), 1));
        assert_eq!(l.server_stats("app1").syn_rst + l.server_stats("app2").syn_rst, 1, "observed as a refusal");

        // The next server's SYN-ACK reaches the client with the echo on the client's own clock.
        let mut synack = Tcp::new((next, 2379), (VIP, got.sport), SYN | ACK);
        synack.src_mac = server_mac(next.octets()[3] - 20);
        synack.seq = 9000;
        synack.ack = syn.seq + 1;
        synack.tcp_options =
            [&[2, 4, 0x05, 0xb4, 4, 2, 8, 10][..], &5u32.to_be_bytes(), &tsval.to_be_bytes(), &[1, 3, 3, 7]].concat();
        let (action, out) = l.run(&synack.frame());
        assert_eq!(action, XDP_TX);
        let mut to_client = synack.with((VIP, 12379), (CLIENT, 62000), D0_MAC, CLIENT_MAC);
        to_client.tcp_options =
            [&[2, 4, 0x05, 0xb4, 4, 2, 8, 10][..], &5u32.to_be_bytes(), &CTS.to_be_bytes(), &[1, 3, 3, 7]].concat();
        assert_eq!(out, to_client.frame());
    });
}

#[test]
fn redispatch_stops_after_retries() {
    let fx = fixture();
    fx.ns.enter(|| {
        // Two retries: refused three times, the third RST reaches the client.
        let config =
            CONFIG.replace("name = \"etcd\"\nserver", "name = \"etcd\"\nretries = 2\nsuspect_after = 0\nserver");
        let mut l = fx.load_config(&all_up, 1024, &config);
        let (mut srv, mut nat, syn) = syn(&mut l, 62100);
        for round in 0..2 {
            let (action, out) = l.run(&refusal(srv, nat, &syn).frame());
            assert_eq!(action, XDP_TX, "refusal {round}: a SYN to the next server");
            let got = frames::parse(&out).unwrap();
            assert_eq!(got.flags, SYN);
            (srv, nat) = (got.dst, got.sport);
        }
        let rst = refusal(srv, nat, &syn);
        let (action, out) = l.run(&rst.frame());
        assert_eq!(action, XDP_TX);
        assert_eq!(
            out,
            rst.with((VIP, 12379), (CLIENT, 62100), D0_MAC, CLIENT_MAC).frame(),
            "retries used up: the RST goes on"
        );
        assert_eq!((l.reason(Reason::Redispatched), l.event(Event::RedispatchExhausted)), (2, 1));
        assert_eq!(FlowState::of(&l.entry(key((CLIENT, 62100), (VIP, 12379))).unwrap()), FlowState::Closed);
    });
}

#[test]
fn an_unanswered_syn_moves_on_its_retransmission_and_an_answered_one_stays() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let (first, _, syn) = syn(&mut l, 62200);
        // A duplicate at once is not a retransmission yet: same server.
        let (_, out) = l.run(&syn.frame());
        assert_eq!(frames::parse(&out).unwrap().dst, first);
        // A second later (the client's retransmission), the server still silent: the next one.
        std::thread::sleep(Duration::from_millis(600));
        let (action, out) = l.run(&syn.frame());
        assert_eq!(action, XDP_TX);
        let got = frames::parse(&out).unwrap();
        assert_ne!(got.dst, first, "the retransmitted SYN goes to the next server");
        assert!(frames::checksums_valid(&out));
        assert_eq!(l.event(Event::RedispatchUnanswered), 1);

        // A server that answered, even with a stale ACK (TIME_WAIT), is alive: the flow stays.
        let (second, nat2, syn2) = self::syn(&mut l, 62201);
        let mut stale = Tcp::new((second, 2379), (VIP, nat2), ACK);
        stale.src_mac = server_mac(second.octets()[3] - 20);
        stale.seq = 5;
        stale.ack = 5;
        l.run(&stale.frame());
        std::thread::sleep(Duration::from_millis(600));
        let (_, out) = l.run(&syn2.frame());
        assert_eq!(frames::parse(&out).unwrap().dst, second);
        assert_eq!(l.event(Event::RedispatchUnanswered), 1);
    });
}

#[test]
fn a_server_refusing_in_a_row_gets_no_new_flow_until_cleared() {
    let fx = fixture();
    fx.ns.enter(|| {
        let mut l = fx.load(&all_up);
        let app1 = server(1);
        let app1_id = l.topology.pool("etcd").unwrap().servers.iter().find(|s| s.name == "app1").unwrap().id;
        // Every SYN that lands on app1 is refused (and redispatched): three in a row suspect it.
        let mut refused = 0;
        let mut port = 62300;
        while refused < 3 {
            let (srv, nat, syn) = syn(&mut l, port);
            port += 1;
            if srv == app1 {
                let (_, out) = l.run(&refusal(srv, nat, &syn).frame());
                assert_ne!(frames::parse(&out).unwrap().dst, app1);
                refused += 1;
            }
        }
        assert_eq!(l.event(Event::ServerSuspected), 1);
        // Now no SYN lands on it.
        let landed = (0..30).filter(|i| syn(&mut l, 62400 + i).0 == app1).count();
        assert_eq!(landed, 0, "a suspected server gets no new flow");
        assert!(l.event(Event::SuspectSkipped) >= 9);
        // The agent's check passed: it is cleared, and takes flows again.
        let since = l.suspicion(app1_id).since_ns;
        l.owner.clear_suspicion(app1_id, since).unwrap();
        let landed = (0..30).filter(|i| syn(&mut l, 62500 + i).0 == app1).count();
        assert_eq!(landed, 10, "round robin again");
    });
}
