//! `cargo xtask run` with no arguments: the seed's cluster in network namespaces (198.18.0.0/24):
//! a client, the balancer running xdplb, and three masters each running a real etcd member and a
//! kube-apiserver stand-in, until Ctrl-C. `cargo xtask run -- --ha`: two balancers sharing the
//! VIP 198.18.0.100 with real keepalived, xdplb on both sharing flows; `-- --colocated`: xdplb
//! on every master; `-- --ipv6`: the same cluster on IPv6 (2001:2::/48), etcdctl through
//! https://[2001:2::10]:12379. Everything it made is removed when it stops, and a run after a
//! crash first removes what the crashed one left (the names are fixed).

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Result;
use integration::{lab::Names, seed::SeedLab};
use lb_user::report::snapshot::ServerState;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

const DIR: &str = "/tmp/xdplb-lab";
const PINS: &str = "/sys/fs/bpf/xdplb-lab";

fn main() -> Result<()> {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let standin = std::env::current_exe()?.with_file_name("apiserver-standin");
    let (mut ha, mut ipv6, mut colo) = (false, false, false);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--ha" => ha = true,
            "--colocated" => colo = true,
            "--ipv6" => ipv6 = true,
            other => anyhow::bail!(
                "xdplb-lab: unknown argument {other:?} (the lab takes --ha, --colocated, --ipv6, or nothing)"
            ),
        }
    }
    match (ha, colo, ipv6) {
        (true, true, _) => anyhow::bail!("xdplb-lab: --ha and --colocated are two shapes; choose one"),
        (_, _, true) if ha || colo => {
            anyhow::bail!("xdplb-lab: --ipv6 builds the one-balancer lab only (not with --ha or --colocated)")
        }
        (false, true, false) => return colocated(&standin),
        (false, false, true) => return ipv6_lab(&standin),
        _ => {}
    }
    println!("xdplb lab: building the seed's cluster in network namespaces (198.18.0.0/24)...");
    let names = Names::Fixed("xdplb-lab");
    let lab = if ha {
        SeedLab::start_ha(names, DIR.as_ref(), &standin, "auto", PINS.as_ref())?
    } else {
        SeedLab::start_pinned(names, DIR.as_ref(), &standin, "auto", Some(PINS.as_ref()))?
    };
    let ctl = lab.write_control_script()?;
    wait_checks(&|| lab.status().is_ok_and(|s| all_up(&s)))?;
    let xdplb = integration::agent::xdplb_bin()?;
    let (lb, cl) = (lab.lab.lb.name.clone(), lab.lab.client.name.clone());
    let front = if ha { integration::lab::HA_VIP } else { integration::lab::LB };
    let etcdctl = format!(
        "ip netns exec {cl} env ETCDCTL_API=3 etcdctl --endpoints=https://{front}:12379 --cacert={d}/ca.pem --cert={d}/etcdctl.pem --key={d}/etcdctl-key.pem",
        d = DIR
    );
    print!("{}", lb_user::report::table::table(&lab.status()?));
    println!(
        "\nThe seed's cluster runs behind xdplb (its config: {DIR}/xdplb.toml, imported from {DIR}/haproxy.cfg):\n\
         \n  client {cl} 198.18.0.1  ->  balancer {lb} 198.18.0.10:12379 (etcd) and :16443 (apiservers)\
         \n  masters app1..app3 198.18.0.21-23: etcd on 2379 (TLS, client certificates), apiserver stand-in on 6443\n\
         \nWatch it:\
         \n  nsenter --net=/run/netns/{lb} {xdplb} status          # HAProxy's stats page as a table\
         \n  ip netns exec {lb} curl -s 127.0.0.1:8404/metrics      # the status page is /, JSON at /status.json\
         \n  {xdplb} flows --pin-dir {PINS}\
         \n  bpftool map dump pinned {PINS}/backend_sets\
         \n  agent log: {log}\n\
         \nUse it:\
         \n  {etcdctl} put greeting hello\
         \n  {etcdctl} endpoint health\n\
         \nBreak and mend it, then watch `xdplb status` (checks: inter 2s, rise 2, fall 3):\
         \n  {ctl} etcd stop 2      {ctl} etcd start 2\
         \n  {ctl} apiserver fail 1  (500)    {ctl} apiserver hang 1  (TCP, no TLS)    {ctl} apiserver ok 1\n\
         \nCtrl-C stops the lab and removes its namespaces, links, pins and processes.",
        ctl = ctl.display(),
        log = PathBuf::from(DIR).join("agent/agent.log").display(),
    );
    if let Some(h) = &lab.ha {
        println!(
            "\nTwo balancers: {lb} 198.18.0.10 (keepalived master) and {lb2} 198.18.0.11, the VIP 198.18.0.100 on the master,\nxdplb on both sharing flows (second config {DIR}/xdplb-2.toml, log {DIR}/agent-2/agent.log). Fail over and back:\n  {ctl} vip                      # who holds the VIP\n  {ctl} failover                 # stop keepalived on the VIP's holder: the other takes it, open flows go on\n  {ctl} keepalived start 1       # the first balancer takes it back (higher priority)\n  ip netns exec {lb2} curl -s 127.0.0.1:8404/metrics | grep xdplb_sync",
            lb2 = h.lb2.name,
            ctl = ctl.display(),
        );
    }
    run_until_stopped(lab)
}

/// `--ipv6`: the seed's cluster on the lab's IPv6 addresses (2001:2::/48, RFC 5180's block).
fn ipv6_lab(standin: &std::path::Path) -> Result<()> {
    use integration::lab::{backend_addr6, CLIENT6, LB6};
    println!("xdplb lab: building the seed's cluster on IPv6 in network namespaces (2001:2::/48)...");
    let lab = SeedLab::start_ipv6(Names::Fixed("xdplb-lab"), DIR.as_ref(), standin, "auto", Some(PINS.as_ref()))?;
    let ctl = lab.write_control_script()?;
    wait_checks(&|| lab.status().is_ok_and(|s| all_up(&s)))?;
    let xdplb = integration::agent::xdplb_bin()?;
    let (lb, cl) = (lab.lab.lb.name.clone(), lab.lab.client.name.clone());
    let etcdctl = format!(
        "ip netns exec {cl} env ETCDCTL_API=3 etcdctl --endpoints=https://[{LB6}]:12379 --cacert={d}/ca.pem --cert={d}/etcdctl.pem --key={d}/etcdctl-key.pem",
        d = DIR
    );
    print!("{}", lb_user::report::table::table(&lab.status()?));
    println!(
        "\nThe seed's cluster runs on IPv6 behind xdplb (its config: {DIR}/xdplb.toml, imported from {DIR}/haproxy.cfg;\
         \nthe binds *:12379 and *:16443 take both families, the servers are the masters' IPv6 addresses):\n\
         \n  client {cl} {CLIENT6}  ->  balancer {lb} [{LB6}]:12379 (etcd) and :16443 (apiservers)\
         \n  masters app1..app3 {a1}, {a2}, {a3}: etcd on 2379 (TLS, client certificates; peers on 2380),\
         \n  apiserver stand-in on 6443; health checks over IPv6 TLS\n\
         \nWatch it:\
         \n  nsenter --net=/run/netns/{lb} {xdplb} status          # HAProxy's stats page as a table\
         \n  ip netns exec {lb} curl -s 127.0.0.1:8404/metrics      # the status page is /, JSON at /status.json\
         \n  {xdplb} flows --pin-dir {PINS}    # the flows, IPv6 ones among them\
         \n  agent log: {log}\n\
         \nUse it:\
         \n  {etcdctl} put greeting hello\
         \n  {etcdctl} endpoint health\
         \n  ip netns exec {cl} curl -sk https://[{LB6}]:16443/healthz\n\
         \nBreak and mend it, then watch `xdplb status` (checks: inter 2s, rise 2, fall 3):\
         \n  {ctl} etcd stop 2      {ctl} etcd start 2\
         \n  {ctl} apiserver fail 1  (500)    {ctl} apiserver hang 1  (TCP, no TLS)    {ctl} apiserver ok 1\n\
         \nCtrl-C stops the lab and removes its namespaces, links, pins and processes.",
        a1 = backend_addr6(0),
        a2 = backend_addr6(1),
        a3 = backend_addr6(2),
        ctl = ctl.display(),
        log = PathBuf::from(DIR).join("agent/agent.log").display(),
    );
    run_until_stopped(lab)
}

/// `--colocated`: xdplb on every master, local clients through `127.0.0.1:12379`.
fn colocated(standin: &std::path::Path) -> Result<()> {
    println!(
        "xdplb lab, co-located: etcd, an apiserver stand-in and xdplb on each of three masters (198.18.0.21-23)..."
    );
    let lab = SeedLab::start_colocated(Names::Fixed("xdplb-colo"), DIR.as_ref(), standin, "auto", PINS.as_ref())?;
    wait_checks(&|| lab.lab.backends.iter().all(|b| lab.status_in(&b.ns).is_ok_and(|s| all_up(&s))))?;
    let xdplb = integration::agent::xdplb_bin()?;
    for b in &lab.lab.backends {
        println!("\n== {} ({}) ==", b.name, b.ns.name);
        print!("{}", lb_user::report::table::table(&lab.status_in(&b.ns)?));
    }
    let app1 = &lab.lab.backends[0].ns.name;
    println!(
        "\nEach master balances its own clients: etcdctl and the apiserver stand-in dial 127.0.0.1:12379 (the\
         \nconnect hook), remote clients dial the master's address through XDP, and the master's own etcd member\
         \nis one of the servers (a local backend).\n\
         \n  ip netns exec {app1} env ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:12379 --cacert={DIR}/ca.pem --cert={DIR}/etcdctl.pem --key={DIR}/etcdctl-key.pem put greeting hello\
         \n  nsenter --net=/run/netns/{app1} {xdplb} status      # LOCAL counts the connect hook's connections\
         \n  ip netns exec {app1} curl -sk https://127.0.0.1:6443/readyz   # the stand-in reaches etcd through 127.0.0.1:12379\n\
         \nCtrl-C stops the lab and removes its namespaces, links, pins and processes."
    );
    run_until_stopped(lab)
}

fn all_up(s: &lb_user::report::snapshot::Snapshot) -> bool {
    s.backends.iter().all(|b| b.servers.iter().all(|s| s.state == ServerState::Up))
}

/// Waits (at most 30 s, dots meanwhile) until `up` says every server is UP.
fn wait_checks(up: &dyn Fn() -> bool) -> Result<()> {
    use std::io::Write;
    print!("waiting for the health checks");
    for _ in 0..60 {
        if up() {
            break;
        }
        print!(".");
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_millis(500));
    }
    println!();
    Ok(())
}

/// Runs until Ctrl-C, then removes everything the lab made.
fn run_until_stopped(lab: SeedLab) -> Result<()> {
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\nstopping the lab");
    drop(lab);
    let _ = std::fs::remove_dir_all(DIR);
    println!("removed its namespaces, links, pins and processes");
    Ok(())
}
