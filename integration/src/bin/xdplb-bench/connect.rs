//! `connect`: what the connect hook costs a process on the balancer host. One thread of
//! `local-client --rate` opens connections (connect, then close with RST so that no TIME_WAIT
//! piles up) as fast as it goes, to the same three servers, in three ways taking turns round
//! after round:
//!
//! - outside the hook's cgroup, straight to a server: no hook at all;
//! - inside it, straight to a server: the hook runs and finds no frontend (what every other
//!   connect() on the host pays);
//! - inside it, to the frontend: the hook balances it (frontend lookup, round robin, rewrite,
//!   the getpeername entry).

use std::net::SocketAddrV4;

use anyhow::{bail, Context, Result};
use integration::{
    agent::Agent,
    cgroup::TestCgroup,
    lab::{self, Lab, LB},
    netns::sh,
};
use serde_json::json;

use super::{median, Args};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;

fn local_client() -> Result<String> {
    let beside = std::env::current_exe()?.with_file_name("local-client");
    if !beside.exists() {
        bail!("{} is missing: build the integration binaries (cargo xtask bench does)", beside.display());
    }
    Ok(beside.display().to_string())
}

/// connect()s per second of one `local-client --rate` run (to the addresses in turn).
fn rate(lab: &Lab, cgroup: Option<&TestCgroup>, to: &[SocketAddrV4], seconds: u32) -> Result<f64> {
    let mut c = lab.lb.command(&local_client()?);
    if let Some(cg) = cgroup {
        c.arg("--cgroup").arg(&cg.path);
    }
    let out = sh(c.arg("--rate").arg(seconds.to_string()).args(to.iter().map(ToString::to_string)))?;
    let w: Vec<&str> = out.split_whitespace().collect();
    match w.as_slice() {
        ["connects", n, secs] => Ok(n.parse::<f64>()? / secs.parse::<f64>()?),
        _ => bail!("local-client said {out:?}"),
    }
}

pub fn bench(args: &Args) -> Result<serde_json::Value> {
    let lab = Lab::one_arm(3)?;
    let server_bin = std::env::current_exe()?.with_file_name("lbtest-server").display().to_string();
    lab.start_servers(&server_bin, BACKEND_PORT)?;
    let cgroup = TestCgroup::new()?;
    let config =
        lab::config(&lab, PORT, BACKEND_PORT, &format!("local_clients_cgroup = \"{}\"", cgroup.path.display()), &[]);
    let _agent = Agent::start(&lab.lb, &config, &lab.lb_ifaces, "native").context("starting xdplb")?;
    // Straight to the servers in turn, as the hook spreads the frontend's connections.
    let servers: Vec<SocketAddrV4> = lab.backends.iter().map(|b| SocketAddrV4::new(b.addr, BACKEND_PORT)).collect();
    let frontend = [SocketAddrV4::new(LB, PORT)];
    let ways: [(&str, Option<&TestCgroup>, &[SocketAddrV4]); 3] = [
        ("no hook: straight to the servers in turn", None, &servers),
        ("hook attached, straight to the servers (no frontend)", Some(&cgroup), &servers),
        ("hook attached, to the frontend (balanced)", Some(&cgroup), &frontend),
    ];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    // Each round starts with the next way: no way always runs first (or after the same one).
    for round in 0..args.rounds {
        for k in 0..ways.len() {
            let i = (round + k) % ways.len();
            let (_, cg, to) = ways[i];
            runs[i].push(rate(&lab, cg, to, args.seconds)?);
        }
    }
    println!("\n### connect(): the connect hook's cost (one thread on the balancer, {} rounds)\n", args.rounds);
    println!("| way | connects/s (median) | vs no hook |\n|---|---:|---:|");
    let base = median(runs[0].clone());
    let mut out = serde_json::Map::new();
    for ((name, _, _), r) in ways.iter().zip(&runs) {
        let m = median(r.clone());
        println!("| {name} | {m:.0} | {:.2}x |", if base > 0.0 { m / base } else { 0.0 });
        out.insert((*name).into(), json!({ "runs": r, "median": m }));
    }
    Ok(serde_json::Value::Object(out))
}
