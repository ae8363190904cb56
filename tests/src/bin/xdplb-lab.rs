//! `cargo xtask run` with no arguments: a lab in network namespaces (client, balancer, three
//! backends on one segment, 198.18.0.0/24) with xdplb in front of the backends, until Ctrl-C.
//! Everything it made is removed when it stops.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Result;
use tests::{agent::Agent, lab::Lab};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> Result<()> {
    let server = std::env::current_exe()?.with_file_name("lbtest-server");
    let lab = Lab::one_arm(3)?;
    lab.start_servers(server.to_str().unwrap(), 2379)?;
    let config = tests::lab::config(&lab, 12379, 2379, "close_linger = \"2s\"", &[]);
    let agent = Agent::start(&lab.lb, &config, &lab.lb_ifaces, "auto")?;
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let xdplb = tests::agent::xdplb_bin()?;
    println!(
        "\nxdplb lab is up: client {cl} -> balancer {vip}:12379 -> app1..app3 (198.18.0.21-23:2379)\n\
         \n  try:  ip netns exec {cl} bash -c 'for i in 1 2 3 4 5 6; do exec 3<>/dev/tcp/{vip}/12379; head -1 <&3; exec 3<&-; done'\
         \n        {xdplb} flows --pin-dir {pins}\
         \n        {xdplb} stats --pin-dir {pins}\
         \n        bpftool map dump pinned {pins}/backend_sets\
         \n  agent log: {log}\n\nCtrl-C stops the lab and removes its namespaces, links and pins.",
        cl = lab.client.name,
        vip = lab.vip,
        pins = agent.pin_dir.display(),
        log = agent.log.display(),
    );
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("stopping the lab");
    drop(agent);
    drop(lab);
    Ok(())
}
