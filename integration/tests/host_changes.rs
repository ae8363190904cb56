//! What the agent changes on the host is recorded and undone by `xdplb detach`: the NAT port
//! range in `ip_local_reserved_ports` and, per attached interface, forwarding, accept_local and
//! send_redirects. A reload that moves the NAT ports releases the old range.

use std::process::Command;

use integration::{
    agent::{xdplb_bin, Agent},
    lab::{self, Lab},
    netns::NetNs,
};

fn sysctls(ns: &NetNs) -> Vec<String> {
    [
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.conf.eth0.forwarding",
        "net.ipv4.conf.eth0.accept_local",
        "net.ipv4.conf.eth0.send_redirects",
    ]
    .iter()
    .map(|k| ns.exec(&["sysctl", "-n", k]).unwrap().trim().to_owned())
    .collect()
}

#[test]
fn detach_restores_every_setting_the_agent_changed() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(env!("CARGO_BIN_EXE_lbtest-server"), 2379).unwrap();
    // Someone else's reservation stays whatever xdplb does.
    lab.lb.sysctl("net.ipv4.ip_local_reserved_ports", "8080").unwrap();
    let before = sysctls(&lab.lb);
    assert_eq!(before, ["8080", "0", "0", "1"]);
    let cfg = lab::config(&lab, 12379, 2379, "nat_ports = \"40000-49999\"", &[]);
    let mut agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    assert_eq!(sysctls(&lab.lb), ["8080,40000-49999", "1", "1", "0"]);
    // A reload that moves the NAT ports releases the old range.
    agent.reload(&cfg.replace("40000-49999", "50000-59999")).unwrap();
    assert_eq!(sysctls(&lab.lb)[0], "8080,50000-59999");
    // Stopped, the data path stays (and so do its settings); detached, everything is as before.
    let pins = agent.stop_keep_pins();
    assert_eq!(sysctls(&lab.lb)[1..], ["1", "1", "0"], "the data path still needs them");
    let out = lab.lb.command(&xdplb_bin().unwrap()).args(["detach", "--pin-dir"]).arg(&pins).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("sysctl net/ipv4/conf/eth0/forwarding = 0 (restored)"), "{text}");
    assert!(text.contains("50000-59999 released"), "{text}");
    assert_eq!(sysctls(&lab.lb), before, "detach put everything back:\n{text}");
    // A second detach has nothing left to do.
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.lb.name))
        .arg(xdplb_bin().unwrap())
        .args(["detach", "--pin-dir"])
        .arg(&pins)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("nothing pinned under {}", pins.display()));
    // Detach took the data path's lock to check no agent runs; the lock file is the test's to remove.
    integration::agent::remove_data_path(&pins);
}
