//! Path-MTU discovery through xdplb: a 1280-byte hop on each side of the balancer (routers whose
//! onward route is held to 1280 bytes while every link stays at 1500, as over a VPN or a cloud
//! peering). Both ends send 1448-byte segments with DF; each router answers them with a
//! frag-needed to the address the packet came from, which is the balancer's (its NAT address
//! towards the servers, the frontend towards the client). Without translation those errors
//! reach no socket and every transfer black-holes; with it, each reaches the end that sent the
//! packet, which lowers its path MTU and goes on. Asserted on bytes, the data path's counters
//! and the ends' own route caches, not on timings.

use std::{
    net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use integration::{
    agent::Agent,
    churn::netstat,
    lab::{self, Lab, NARROW_NAT, NARROW_NAT6},
    netns::NetNs,
    traffic::{stream, StopOnDrop},
};
use lb_common::Reason;
use lb_user::dataplane::counters::Counters;

const MTU: u32 = 1280;
const STREAMS: u64 = 8;
/// Bytes each stream must echo (both directions) before the test stops them.
const EACH: u64 = 2 << 20;

/// `n` streams from the lab's client to `vip`, each echoing 16 KiB at a time (every byte
/// checked), until they moved `n * EACH` bytes together, one of them ended (a stalled one
/// fails on its own: its read times out after 20 s), or 60 s passed (a black hole). Their
/// results and the bytes they moved.
fn echo(lab: &Lab, vip: SocketAddr, n: u64, seed: u64) -> (Vec<anyhow::Result<u64>>, u64) {
    let (stop, progress) = (AtomicBool::new(false), AtomicU64::new(0));
    let started = Instant::now();
    let results = std::thread::scope(|sc| {
        let _stop = StopOnDrop(&stop);
        let streams: Vec<_> = (0..n)
            .map(|i| {
                let (ns, stop, progress) = (lab.client.handle(), &stop, &progress);
                sc.spawn(move || ns.enter(|| stream(vip, seed + i, stop, progress)))
            })
            .collect();
        while progress.load(Ordering::Relaxed) < n * EACH
            && started.elapsed() < Duration::from_secs(60)
            && !streams.iter().any(|s| s.is_finished())
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        streams.into_iter().map(|s| s.join().unwrap()).collect()
    });
    (results, progress.load(Ordering::Relaxed))
}

#[test]
fn transfers_in_both_directions_survive_a_narrow_hop_on_each_side() {
    narrow_hops(Family::V4);
}

/// The same over IPv6: the routers send packet-too-big (an IPv6 router never fragments), the
/// IPv6 data path translates them (`xdplb6_icmp`), the ends learn 1280.
#[test]
fn ipv6_transfers_in_both_directions_survive_a_narrow_hop_on_each_side() {
    narrow_hops(Family::V6);
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// The narrow-paths lab for `family`: its frontend, the balancer's NAT address towards the
/// servers, and the configuration (the family's servers).
fn narrow_lab(family: Family, mtu: u32) -> (Lab, SocketAddr, IpAddr, String) {
    let lab = Lab::narrow_paths(3, mtu).unwrap();
    match family {
        Family::V4 => {
            let cfg = lab::config(&lab, 12379, 2379, "", &[]);
            let vip = SocketAddrV4::new(lab.vip, 12379).into();
            (lab, vip, IpAddr::V4(NARROW_NAT), cfg)
        }
        Family::V6 => {
            lab.narrow_paths_ipv6(mtu).unwrap();
            let servers: Vec<String> = (0..lab.backends.len())
                .map(|i| format!("{{ name = \"app{}\", address = \"[{}]:2379\" }}", i + 1, lab::backend_addr6(i)))
                .collect();
            let cfg = format!(
                "[[frontend]]\nname = \"front\"\nbind = \"*:12379\"\nbackend = \"pool\"\n\n[[backend]]\nname = \"pool\"\nserver = [{}]\n",
                servers.join(", ")
            );
            (lab, SocketAddrV6::new(lab::ROUTED_VIP6, 12379, 0, 0).into(), IpAddr::V6(NARROW_NAT6), cfg)
        }
    }
}

/// ICMP errors about a too-big packet a router sent: IPv4's destination unreachables (frag
/// needed), IPv6's packet-too-big.
fn too_big_sent(ns: &NetNs, family: Family) -> u64 {
    match family {
        Family::V4 => netstat(ns, "IcmpOutDestUnreachs").unwrap(),
        Family::V6 => {
            let text = ns.exec(&["cat", "/proc/net/snmp6"]).unwrap();
            text.lines().find_map(|l| l.strip_prefix("Icmp6OutPktTooBigs")).map_or(0, |v| v.trim().parse().unwrap())
        }
    }
}

fn route_get(ns: &NetNs, to: IpAddr) -> String {
    ns.ip(&["route", "get", &to.to_string()]).unwrap()
}

fn narrow_hops(family: Family) {
    let (lab, vip, nat, cfg) = narrow_lab(family, MTU);
    lab.start_servers(env!("CARGO_BIN_EXE_lbtest-server"), 2379).unwrap();
    let agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    let counters = Counters::open_pinned(agent.pin_dir()).unwrap();
    let reason =
        |r: Reason| counters.reasons().unwrap_or_default().into_iter().find(|(k, _)| *k == r).map_or(0, |(_, n)| n);
    let routers_before = too_big_sent(&lab.infra()[0], family) + too_big_sent(&lab.infra()[1], family);

    let started = Instant::now();
    let (results, moved) = echo(&lab, vip, STREAMS, 0x3170);
    let routers = too_big_sent(&lab.infra()[0], family) + too_big_sent(&lab.infra()[1], family) - routers_before;
    let (to_client, to_server) = (reason(Reason::IcmpToClient), reason(Reason::IcmpToServer));
    let client_route = route_get(&lab.client, vip.ip());
    eprintln!(
        "{moved} bytes echoed by {STREAMS} streams in {:.1} s; routers sent {routers} too-big errors; translated to clients {to_client}, to servers {to_server}; client: {}",
        started.elapsed().as_secs_f64(),
        client_route.trim()
    );
    for r in &results {
        r.as_ref().unwrap_or_else(|e| panic!("a transfer through the narrow hops failed: {e:#}"));
    }
    assert!(moved >= STREAMS * EACH, "only {moved} bytes moved: a black hole");
    // Both routers' errors came through, each way.
    assert!(
        to_client > 0 && to_server > 0,
        "too-big errors translated: to clients {to_client}, to servers {to_server}"
    );
    // And the ends learned the path MTU from them: the client towards the frontend, each
    // server that carried a stream towards the balancer's NAT address.
    assert!(client_route.contains(&format!("mtu {MTU}")), "the client's route to the frontend: {client_route}");
    let learned = lab.backends.iter().filter(|b| route_get(&b.ns, nat).contains(&format!("mtu {MTU}"))).count();
    assert_eq!(learned, lab.backends.len(), "servers that learned the path MTU towards the balancer");
}

/// The balancer's own way out is the narrow hop: its link to the servers' router has a
/// 1400-byte MTU (both ends), the client's 1500. XDP cannot fragment, and a redirected frame
/// over the MTU is dropped without a word: the data path answers the client's 1448-byte
/// segments (DF) with a frag-needed of its own, and the client lowers its path MTU. (The
/// servers' big segments meet the router first, which tells them itself.)
#[test]
fn the_balancer_tells_the_client_when_its_own_way_out_is_narrower() {
    own_way_out(Family::V4);
}

/// The same over IPv6, with the data path's own packet-too-big.
#[test]
fn ipv6_the_balancer_tells_the_client_when_its_own_way_out_is_narrower() {
    own_way_out(Family::V6);
}

fn own_way_out(family: Family) {
    let (lab, vip, _, cfg) = narrow_lab(family, 1500);
    lab.lb.ip(&["link", "set", "eth1", "mtu", "1400"]).unwrap();
    lab.infra()[1].ip(&["link", "set", "eth0", "mtu", "1400"]).unwrap();
    lab.start_servers(env!("CARGO_BIN_EXE_lbtest-server"), 2379).unwrap();
    let agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    let counters = Counters::open_pinned(agent.pin_dir()).unwrap();
    let (results, moved) = echo(&lab, vip, 4, 0x1400);
    let too_big = counters.reasons().unwrap().into_iter().find(|(r, _)| *r == Reason::TooBig).map_or(0, |(_, n)| n);
    let client_route = route_get(&lab.client, vip.ip());
    eprintln!("{moved} bytes echoed; too_big {too_big}; client: {}", client_route.trim());
    for r in &results {
        r.as_ref().unwrap_or_else(|e| panic!("a transfer through the balancer's narrow way out failed: {e:#}"));
    }
    assert!(moved >= 4 * EACH, "only {moved} bytes moved: a black hole");
    assert!(too_big > 0, "no packet was found too big");
    assert!(client_route.contains("mtu 1400"), "the client's route to the frontend: {client_route}");
}

/// Jumbo frames: every link of the one-arm lab at a 9000-byte MTU, where a frame no longer fits
/// in a page. The data path is declared `xdp.frags`, so the driver takes it in native mode and
/// hands it multi-buffer frames (headers in the first buffer); 16 KiB echoes travel in
/// 8948-byte segments through it, every byte checked.
#[test]
fn jumbo_frames_in_native_mode() {
    const JUMBO: &str = "9000";
    let lab = Lab::one_arm(3).unwrap();
    let hosts = std::iter::once(&lab.client).chain(std::iter::once(&lab.lb)).chain(lab.backends.iter().map(|b| &b.ns));
    for ns in hosts {
        ns.ip(&["link", "set", "eth0", "mtu", JUMBO]).unwrap();
    }
    let sw = &lab.infra()[0];
    let ports: Vec<serde_json::Value> = serde_json::from_str(&sw.ip(&["-j", "link", "show"]).unwrap()).unwrap();
    for port in ports.iter().filter_map(|l| l["ifname"].as_str()).filter(|n| n.starts_with('p')) {
        sw.ip(&["link", "set", port, "mtu", JUMBO]).unwrap();
    }
    lab.start_servers(env!("CARGO_BIN_EXE_lbtest-server"), 2379).unwrap();
    let cfg = lab::config(&lab, 12379, 2379, "", &[]);
    let agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    assert!(agent.log_text().contains("in native mode"), "{}", agent.log_text());
    let rx = |what: &str| -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&lab.lb.ip(&["-j", "-s", "link", "show", "eth0"]).unwrap()).unwrap();
        v[0]["stats64"]["rx"][what].as_u64().unwrap()
    };
    let (bytes0, packets0) = (rx("bytes"), rx("packets"));
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, 12379).into();
    let (results, moved) = echo(&lab, vip, 4, 0x9000);
    for r in &results {
        r.as_ref().unwrap_or_else(|e| panic!("a jumbo transfer failed: {e:#}"));
    }
    let (bytes, packets) = (rx("bytes") - bytes0, rx("packets") - packets0);
    let counters = Counters::open_pinned(agent.pin_dir()).unwrap();
    let reasons: std::collections::HashMap<Reason, u64> = counters.reasons().unwrap().into_iter().collect();
    eprintln!("jumbo: {moved} bytes echoed; balancer eth0 received {packets} frames, {bytes} bytes; {reasons:?}");
    assert!(moved >= 4 * EACH, "only {moved} bytes moved");
    // Frames past a page (multi-buffer) came through the data path, not around it.
    assert!(bytes / packets.max(1) > 4096, "average frame {} bytes: no jumbo frames", bytes / packets.max(1));
    assert_eq!(reasons[&Reason::Malformed], 0, "a multi-buffer frame was taken for a truncated one");
    assert!(reasons[&Reason::Forwarded] + reasons[&Reason::Replied] > 0);
}
