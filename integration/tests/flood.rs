//! A SYN flood from spoofed sources at the highest rate the client namespace can send, for a
//! bounded time and many times the half-open table's size, while 20 established connections
//! stream data and 20 more sit idle (as etcd watches do): all keep working (zero resets, every
//! byte checked), the tables stay within their bounds, and the agent's memory stays flat. This
//! holds by design: half-open flows live in their own table, so the flood can only evict other
//! half-open flows; in one shared LRU table the idle connections would be the first to go.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use integration::{
    agent::Agent,
    frames::{Tcp, SYN},
    lab::{self, Lab},
    netns::NetNs,
    traffic::{stream, Pattern, StopOnDrop},
};
use lb_common::Reason;

const PORT: u16 = 12379;
const HALF_OPEN: u32 = 2048;
const FLOWS: u32 = 65536;

fn mac(ns: &NetNs, iface: &str) -> [u8; 6] {
    let out = ns.ip(&["-j", "link", "show", iface]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = v[0]["address"].as_str().unwrap().to_string();
    let b: Vec<u8> = text.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    b.try_into().unwrap()
}

/// Entries in the established table (`flows`; half-open flows live in `syn_flows`).
fn established(pin_dir: &std::path::Path) -> usize {
    use aya::maps::{HashMap as BpfHashMap, Map, MapData};
    let map = Map::from_map_data(MapData::from_pin(pin_dir.join(lb_common::names::FLOWS)).unwrap()).unwrap();
    let flows: BpfHashMap<MapData, lb_common::FlowKey, lb_common::Flow> = BpfHashMap::try_from(map).unwrap();
    flows.keys().filter_map(Result::ok).count()
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap()
}

/// Sends spoofed SYNs from the calling thread's namespace on `iface` until `stop`; returns how
/// many went out.
fn flood(iface: &str, src_mac: [u8; 6], dst_mac: [u8; 6], vip: Ipv4Addr, stop: &AtomicBool) -> u64 {
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let ifindex = lb_user::host::netif::ifindex(iface).unwrap();
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&dst_mac);
    let mut rng = Pattern::new(0x5f100d);
    let mut template = Tcp::new((Ipv4Addr::new(198, 19, 0, 1), 1000), (vip, PORT), SYN);
    template.src_mac = src_mac;
    template.dst_mac = dst_mac;
    let mut sent = 0u64;
    let mut r = [0u8; 8];
    while !stop.load(Ordering::Relaxed) {
        rng.fill(&mut r);
        // Spoofed sources from 198.19.0.0/16 (inside the lab's 198.18.0.0/15), random ports.
        template.src = Ipv4Addr::new(198, 19, r[0], r[1]);
        template.sport = u16::from_le_bytes([r[2], r[3]]) | 1024;
        template.seq = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        let f = template.frame();
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                f.as_ptr() as *const _,
                f.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n > 0 {
            sent += 1;
        }
    }
    sent
}

#[test]
fn a_syn_flood_leaves_established_connections_alone() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(env!("CARGO_BIN_EXE_lbtest-server"), 2379).unwrap();
    let global = format!("max_half_open = {HALF_OPEN}\nmax_flows = {FLOWS}\nsyn_timeout = \"2s\"\nclose_linger = \"1s\"\ngc_interval = \"200ms\"");
    let cfg = lab::config(&lab, PORT, 2379, &global, &[]);
    let agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    let (client_mac, lb_mac) = (mac(&lab.client, "eth0"), mac(&lab.lb, "eth0"));
    let (stop_streams, stop_flood, progress) = (AtomicBool::new(false), AtomicBool::new(false), AtomicU64::new(0));
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_kb(agent.pid());
    let mut idle =
        lab.client.enter(|| (0..20).map(|_| integration::traffic::connect(vip).unwrap()).collect::<Vec<_>>());
    let counters = lb_user::dataplane::counters::Counters::open_pinned(agent.pin_dir()).unwrap();
    let flows_before = counters.reasons().unwrap().into_iter().find(|(r, _)| *r == Reason::NewFlow).unwrap().1 + 20;

    let (results, sent, most, flood_secs) = std::thread::scope(|sc| {
        // A failing assertion in here must stop the streams and the flood, or the scope would
        // wait for them forever instead of failing.
        let (_streams_stop, _flood_stop) = (StopOnDrop(&stop_streams), StopOnDrop(&stop_flood));
        let streams: Vec<_> = (0..20u64)
            .map(|i| {
                let (ns, stop, progress) = (lab.client.handle(), &stop_streams, &progress);
                sc.spawn(move || ns.enter(|| stream(vip, 0x900 + i, stop, progress)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        // The streams' pace without the flood, on this machine now: the flood may slow them
        // (it takes a core of a two-core box), not stop them.
        let unflooded = progress.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(1));
        let before = progress.load(Ordering::Relaxed);
        let per_sec = before - unflooded;
        let started = Instant::now();
        let flooder = {
            let (ns, stop) = (lab.client.handle(), &stop_flood);
            sc.spawn(move || ns.enter(|| flood("eth0", client_mac, lb_mac, lab.vip, stop)))
        };
        // Watch the established table while the flood runs: it must hold the 40 connections'
        // entries, and nothing of the flood.
        let (mut fewest, mut most) = (usize::MAX, 0);
        while started.elapsed() < Duration::from_secs(5) {
            let n = established(agent.pin_dir());
            (fewest, most) = (fewest.min(n), most.max(n));
            std::thread::sleep(Duration::from_millis(200));
        }
        stop_flood.store(true, Ordering::Relaxed);
        let sent = flooder.join().unwrap();
        let flood_secs = started.elapsed().as_secs_f64();
        let during = progress.load(Ordering::Relaxed) - before;
        // Alive, not fast: the flood and the servers' SYN handling take both cores of this box,
        // so the streams slow to a crawl; each must still have made a round trip (16 KiB).
        let floor = 20 * 16 * 1024;
        println!("streams: {per_sec} bytes/s before the flood, {during} bytes in its {flood_secs:.1} s");
        assert!(
            during >= floor,
            "the streams moved only {during} bytes in {flood_secs:.1} s of flood (before it: {per_sec} bytes/s)"
        );
        stop_streams.store(true, Ordering::Relaxed);
        let results: Vec<_> = streams.into_iter().map(|h| h.join().unwrap()).collect();
        (results, sent, (fewest, most), flood_secs)
    });
    let rss_after = rss_kb(agent.pid());
    let new_flows =
        counters.reasons().unwrap().into_iter().find(|(r, _)| *r == Reason::NewFlow).unwrap().1 - flows_before;
    eprintln!(
        "SYN flood: {sent} spoofed SYNs in {flood_secs:.1} s ({:.0}/s), {:.0}x the half-open table, {new_flows} opened half-open flows; established entries {most:?}; agent RSS {rss_before} -> {rss_after} kB",
        sent as f64 / flood_secs,
        sent as f64 / HALF_OPEN as f64
    );
    for r in &results {
        r.as_ref().unwrap_or_else(|e| panic!("an established connection broke under the flood: {e:#}"));
    }
    for (s, name) in idle.iter_mut() {
        integration::traffic::ping(s, "still here after the flood\n")
            .unwrap_or_else(|e| panic!("an idle connection to {name} was lost: {e:#}"));
    }
    // The data path took the flood in (each spoofed SYN opened a half-open flow), many times
    // what the half-open table holds...
    assert!(new_flows > 10 * HALF_OPEN as u64, "the data path opened {new_flows} flows for the flood");
    // ... and the established table held exactly the 40 connections' 80 entries throughout.
    assert_eq!(most, (80, 80), "established entries (fewest, most) during the flood");
    assert!(rss_after < rss_before + 8192, "agent memory grew: {rss_before} -> {rss_after} kB");
}
