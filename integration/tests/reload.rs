//! Reload is all or nothing: a configuration the kernel's maps cannot hold (here more frontend
//! entries than the frontend map's 256, `*:PORT` counting once per interface address) changes
//! nothing in the kernel and `xdplb reload` (systemd's ExecReload) fails; the next valid reload
//! applies. And a map write that fails halfway is rolled back.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    process::Command,
};

use integration::{
    agent::{xdplb_bin, Agent},
    fixture::{fixture, VIP},
    lab::{self, Lab},
    traffic::connect,
};
use lb_common::{FrontendKey, MAX_FRONTENDS};
use lb_user::{dataplane::maps::MapOwner, model::FrontendEntry};

/// `n` more frontends on `*:20000..`, all to the lab's pool.
fn with_frontends(base: &str, n: u16) -> String {
    let mut cfg = base.to_owned();
    for i in 0..n {
        cfg.push_str(&format!("\n[[frontend]]\nname = \"extra{i}\"\nbind = \"*:{}\"\nbackend = \"pool\"\n", 20000 + i));
    }
    cfg
}

fn reload(socket: &std::path::Path) -> (bool, String) {
    let out = Command::new(xdplb_bin().unwrap()).args(["reload", "--socket"]).arg(socket).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_reload_that_cannot_fit_the_maps_changes_nothing_and_fails() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(env!("CARGO_BIN_EXE_lbtest-server"), 2379).unwrap();
    // Two addresses on the balancer's interface: each `*:PORT` takes three frontend entries
    // (with 127.0.0.1, for local clients).
    lab.lb.ip(&["addr", "add", "198.18.0.11/24", "dev", "eth0"]).unwrap();
    let base = lab::config(&lab, 12379, 2379, "", &[]);
    let mut agent = Agent::start(&lab.lb, &base, &lab.lb_ifaces, "native").unwrap();
    let owner = MapOwner::open_pinned(agent.pin_dir()).unwrap();
    let before = owner.state().unwrap();
    assert_eq!(before.frontends.len(), 3, "*:12379 on two addresses and 127.0.0.1");

    // 128 more: 129 frontends, 387 entries.
    std::fs::write(&agent.config, with_frontends(&base, 128)).unwrap();
    let (ok, out) = reload(&agent.socket());
    assert!(!ok, "xdplb reload must fail: {out}");
    assert!(out.contains("need 387 entries in the kernel's frontend map, which holds 256"), "{out}");
    assert_eq!(owner.state().unwrap(), before, "nothing changed in the kernel");
    assert!(agent.log_text().contains("reload refused, still running the previous configuration"));
    // The old configuration runs on.
    let vip = SocketAddrV4::new(lab.vip, 12379).into();
    assert!(lab.client.enter(|| connect(vip)).is_ok());

    // 84 more: 85 frontends, 255 entries: applied.
    std::fs::write(&agent.config, with_frontends(&base, 84)).unwrap();
    let (ok, out) = reload(&agent.socket());
    assert!(ok && out.starts_with("reloaded"), "{out}");
    let after = owner.state().unwrap();
    assert_eq!(after.frontends.len(), 255);
    assert_eq!(after.frontend_ports, [12379].into_iter().chain(20000..20084).collect::<Vec<u16>>());
    let extra = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 11), 20042).into();
    assert!(lab.client.enter(|| connect(extra)).is_ok(), "a new frontend on the second address serves");
    agent.wait_log("reloaded", 1, std::time::Duration::from_secs(1)).unwrap();
}

#[test]
fn a_map_write_that_fails_halfway_is_rolled_back() {
    let fx = fixture();
    fx.ns.enter(|| {
        let l = fx.load(&|_| true);
        let mut owner = MapOwner::open_pinned(&l.pin_dir).unwrap();
        let before = owner.state().unwrap();
        // The port bitmap has exactly the frontends' ports (the data path's cheap "not ours").
        let mut ports: Vec<u16> = before.frontends.iter().map(|(k, _)| u16::from_be(k.port_be)).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(before.frontend_ports, ports);
        // A topology the validation would refuse, written anyway: servers and sets change
        // first, then the frontend map overflows.
        let mut big = l.topology.clone();
        big.pools[0].servers[0].weight = 7;
        big.pools[0].servers[1].addr = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 99), 2379).into();
        let f = big.frontends[0].clone();
        big.frontends = (0..=MAX_FRONTENDS as u16)
            .map(|i| FrontendEntry {
                keys: vec![FrontendKey { addr: VIP.octets(), port_be: (30000 + i).to_be(), _pad: 0 }],
                ..f.clone()
            })
            .collect();
        let err = owner.transaction(|o| o.apply(&big, &|_| true)).unwrap_err();
        eprintln!("failed as it should: {err}");
        assert_eq!(
            owner.state().unwrap(),
            before,
            "rolled back: servers, sets, frontends and their ports as they were"
        );
        // The same owner applies a good change afterwards.
        let mut good = l.topology.clone();
        good.pools[0].servers[0].weight = 3;
        owner.transaction(|o| o.apply(&good, &|_| true)).unwrap();
        assert_ne!(owner.state().unwrap().backend_sets, before.backend_sets);
    });
}
