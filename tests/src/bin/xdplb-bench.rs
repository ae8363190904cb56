//! `cargo xtask bench`: what xdplb costs, measured side by side in one run.
//!
//! - `prog`: BPF_PROG_TEST_RUN ns per packet for the established path (both directions), the
//!   SYN path and a passed packet, beside a two-instruction XDP_PASS program (the harness's
//!   floor). Contenders take turns, round after round; medians reported.
//! - `wrk`: HTTP through the one-arm lab (nginx backends, wrk on the client), direct to one
//!   backend vs through xdplb in native and generic mode, taking turns; medians reported.
//!
//! Results: a Markdown table on stdout and JSON under target/bench/.

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;
use tests::{
    agent::Agent,
    fixture::{self, CLIENT, VIP},
    frames::{Tcp, ACK, PSH, SYN},
    lab::Lab,
    netns::NetNs,
};

#[derive(Parser)]
struct Args {
    /// Which benchmarks: prog, wrk (default both).
    #[arg(long, value_delimiter = ',', default_value = "prog,wrk")]
    only: Vec<String>,
    /// Rounds of turns per contender.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Runs per contender per round for `prog`.
    #[arg(long, default_value_t = 100_000)]
    runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn prog_bench(args: &Args) -> Result<serde_json::Value> {
    let fx = fixture::fixture();
    let runs = args.runs;
    let rounds = args.rounds;
    let result = fx.ns.enter(|| -> Result<BTreeMap<&'static str, Vec<f64>>> {
        let mut l = fx.load_sized(&|_| true, 1 << 20);
        let xdplb = l.prog_fd();
        let floor = tests::xdp_pass::load()?;
        let d0 = l.d0;
        // An established flow: handshake through the program first.
        let syn = Tcp::new((CLIENT, 50000), (VIP, 12379), SYN);
        let (_, out) = l.run(&syn.frame());
        let nat = tests::frames::parse(&out).context("SYN rewritten")?;
        let mut data = Tcp::new((CLIENT, 50000), (VIP, 12379), PSH | ACK);
        data.payload = vec![0x61; 64];
        let data = data.frame();
        l.run(&data);
        let mut reply = Tcp::new((nat.dst, 2379), (VIP, nat.sport), PSH | ACK);
        reply.payload = vec![0x62; 64];
        let reply = reply.frame();
        let passed = Tcp::new((CLIENT, 50001), (VIP, 22), SYN).frame();
        let mut samples: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        let mut port = 0u32;
        for _ in 0..rounds {
            let mut time = |name: &'static str, fd: i32, frame: &mut dyn FnMut() -> Vec<u8>| -> Result<()> {
                let mut total = 0u64;
                for _ in 0..runs {
                    total += fixture::timed_run(fd, &frame(), d0)?.1 as u64;
                }
                samples.entry(name).or_default().push(total as f64 / runs as f64);
                Ok(())
            };
            time("floor: XDP_PASS program", floor.as_raw_fd(), &mut || passed.clone())?;
            time("passed packet (not ours)", xdplb, &mut || passed.clone())?;
            time("established, client->server", xdplb, &mut || data.clone())?;
            time("established, server->client", xdplb, &mut || reply.clone())?;
            time("SYN (new flow)", xdplb, &mut || {
                port += 1;
                let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + port / 60000);
                Tcp::new((src, 1024 + (port % 60000) as u16), (VIP, 12379), SYN).frame()
            })?;
        }
        Ok(samples)
    })?;
    let floor = median(result["floor: XDP_PASS program"].clone());
    println!("\n### BPF_PROG_TEST_RUN, ns per packet (median of {rounds} rounds x {runs} runs, repeat=1 each)\n");
    println!("| path | ns/packet | vs floor |\n|---|---:|---:|");
    let mut out = serde_json::Map::new();
    for (name, v) in &result {
        let m = median(v.clone());
        println!("| {name} | {m:.0} | {:.2}x |", m / floor);
        out.insert(name.to_string(), json!({"median_ns": m, "rounds": v}));
    }
    Ok(serde_json::Value::Object(out))
}

fn nginx(ns: &NetNs, dir: &PathBuf) -> Result<()> {
    fs::create_dir_all(dir)?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n keepalive_requests 100000000;\n\
         client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
         server {{ listen 80; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    fs::write(&path, conf)?;
    ns.spawn("nginx", &["-c", path.to_str().unwrap()])?;
    Ok(())
}

fn wrk(ns: &NetNs, url: &str, seconds: u32) -> Result<(f64, f64, f64)> {
    let out = ns.exec(&["wrk", "-t2", "-c32", &format!("-d{seconds}s"), "--latency", url])?;
    let rps = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .context("wrk printed no Requests/sec")?
        .trim()
        .parse::<f64>()?;
    let lat = |p: &str| -> Result<f64> {
        let line = out.lines().find(|l| l.trim_start().starts_with(p)).with_context(|| format!("no {p} in wrk output"))?;
        let v = line.split_whitespace().nth(1).unwrap();
        let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap());
        let n: f64 = num.parse()?;
        Ok(match unit { "us" => n, "ms" => n * 1000.0, "s" => n * 1e6, _ => bail!("unit {unit}") })
    };
    if out.contains("Non-2xx") || out.contains("Socket errors") {
        bail!("wrk saw errors:\n{out}");
    }
    Ok((rps, lat("50%")?, lat("99%")?))
}

fn wrk_bench(args: &Args) -> Result<serde_json::Value> {
    let lab = Lab::one_arm(3)?;
    let tmp = std::env::temp_dir().join(tests::netns::unique("xdplb-bench-"));
    for b in &lab.backends {
        nginx(&b.ns, &tmp.join(&b.name))?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let config = tests::lab::config(&lab, 80, 80, "", &[]);
    let direct = format!("http://{}:80/", lab.backends[0].addr);
    let via = format!("http://{}:80/", lab.vip);
    let mut samples: BTreeMap<&'static str, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for _ in 0..args.rounds {
        samples.entry("direct (client -> one nginx)").or_default().push(wrk(&lab.client, &direct, args.seconds)?);
        for (name, mode) in [("xdplb native", "native"), ("xdplb generic", "generic")] {
            let agent = Agent::start(&lab.lb, &config, &lab.lb_ifaces, mode)?;
            samples.entry(name).or_default().push(wrk(&lab.client, &via, args.seconds)?);
            drop(agent);
        }
    }
    let _ = fs::remove_dir_all(&tmp);
    let base = median(samples["direct (client -> one nginx)"].iter().map(|s| s.0).collect());
    println!(
        "\n### wrk -t2 -c32 -d{}s keep-alive through the one-arm veth lab (median of {} rounds)\n",
        args.seconds, args.rounds
    );
    println!("| contender | requests/s | vs direct | p50 latency (us) | p99 latency (us) |\n|---|---:|---:|---:|---:|");
    let mut out = serde_json::Map::new();
    for (name, v) in &samples {
        let rps = median(v.iter().map(|s| s.0).collect());
        let p50 = median(v.iter().map(|s| s.1).collect());
        let p99 = median(v.iter().map(|s| s.2).collect());
        println!("| {name} | {rps:.0} | {:.2}x | {p50:.0} | {p99:.0} |", rps / base);
        out.insert(name.to_string(), json!({"rps": rps, "p50_us": p50, "p99_us": p99, "rounds": v}));
    }
    Ok(serde_json::Value::Object(out))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = Command::new("uname").arg("-r").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
    println!("## xdplb benchmark: {cores} cores, Linux {kernel}");
    let mut report = serde_json::Map::new();
    report.insert("cores".into(), cores.into());
    report.insert("kernel".into(), kernel.into());
    if args.only.iter().any(|o| o == "prog") {
        report.insert("prog".into(), prog_bench(&args)?);
    }
    if args.only.iter().any(|o| o == "wrk") {
        report.insert("wrk".into(), wrk_bench(&args)?);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&serde_json::Value::Object(report))?)?;
    println!("\nraw figures: {}", dir.join("bench.json").display());
    Ok(())
}
