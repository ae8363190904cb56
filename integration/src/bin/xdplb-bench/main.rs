//! `cargo xtask bench`: what xdplb costs, measured side by side in one run.
//!
//! - `prog`: BPF_PROG_TEST_RUN ns per packet for the established path (both directions), the
//!   SYN path and a passed packet, beside a two-instruction XDP_PASS program (the harness's
//!   floor). Contenders take turns, round after round; medians reported.
//! - `wrk`: HTTP through the one-arm lab (nginx backends, wrk on the client): direct to one
//!   backend, HAProxy in TCP mode, nftables DNAT + masquerade, xdplb native and generic, taking
//!   turns round after round; keep-alive and new-connection rates, latency, one connection's
//!   throughput, CPU per 1000 requests; medians, ratios to direct and HAProxy, and a chart.
//! - `clients`: new connections from many client hosts, what TIME_WAIT costs each contender
//!   (`clients.rs`).
//! - `failover`: a server killed or cut off under clients opening connections, HAProxy beside
//!   xdplb with the seed's check settings (`failover.rs`).
//! - `connect`: connect()s per second of a process on the balancer host with and without the
//!   connect hook (`connect.rs`).
//!
//! Results: a Markdown table on stdout and JSON under target/bench/.

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

mod clients;
mod connect;
mod failover;
mod ha;
mod latency;

use anyhow::{bail, Context, Result};
use clap::Parser;
use integration::{
    agent::Agent,
    fixture::{self, CLIENT, VIP},
    frames::{Tcp, ACK, PSH, SYN},
    lab::Lab,
    netns::NetNs,
};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Which benchmarks: prog, wrk, clients, failover, connect, ha, latency (default all).
    #[arg(long, value_delimiter = ',', default_value = "prog,wrk,clients,failover,connect,ha,latency")]
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
    /// Seconds of new connections per contender per round for `clients`.
    #[arg(long, default_value_t = 10)]
    clients_seconds: u32,
    /// New connections per second of the client without TCP timestamps in `clients` (a
    /// Windows client, paced: within xdplb's budget for it, see the README).
    #[arg(long, default_value_t = 200.0)]
    no_ts_rate: f64,
    /// The short run (under two minutes) that `cargo xtask test` runs so the benchmark cannot rot.
    #[arg(long)]
    quick: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Linux's TCP options: a SYN's (MSS, SACK permitted, timestamps, window scale) and a data
/// segment's (NOP NOP timestamps). The per-packet figures include timestamp translation, as
/// real traffic from Linux peers does.
fn syn_options(tsval: u32) -> Vec<u8> {
    integration::frames::syn_options(tsval, 0)
}

use integration::frames::ts_options;

fn prog_bench(args: &Args) -> Result<serde_json::Value> {
    // Both families: the IPv4 servers and their IPv6 twins in one dual-stack pool.
    let fx = fixture::fixture6();
    let runs = args.runs;
    let rounds = args.rounds;
    // Enough NAT tuples (47000 ports x 3 servers, clear of the frontend ports) that every timed
    // SYN opens a flow.
    let config = fixture::config6().replace("nat_ports = \"40000-40999\"", "nat_ports = \"17000-63999\"");
    let result = fx.ns.enter(|| -> Result<BTreeMap<&'static str, Vec<f64>>> {
        let floor = integration::xdp_pass::load()?;
        let passed = Tcp::new((CLIENT, 50001), (VIP, 22), SYN).frame();
        // Not ours either, but to a frontend's port: the port bitmap lets it through to the
        // frontend hash lookup, which misses.
        let passed_frontend_port = Tcp::new((CLIENT, 50001), (Ipv4Addr::new(198, 18, 0, 99), 12379), SYN).frame();
        let mut samples: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        for _ in 0..rounds {
            // Fresh maps every round: the SYNs of the last one took their tuples.
            let _ = lb_user::dataplane::remove_pins(&fx.pin_dir);
            let mut l = fx.load_config(&|_| true, 1 << 20, &config);
            let xdplb = l.prog_fd();
            let d0 = l.d0;
            // An established flow with timestamps: the whole handshake through the program.
            let mut syn = Tcp::new((CLIENT, 50000), (VIP, 12379), SYN);
            syn.tcp_options = syn_options(7);
            let (_, out) = l.run(&syn.frame());
            let nat = integration::frames::parse(&out).context("SYN rewritten")?;
            let mut synack = Tcp::new((nat.dst, 2379), (VIP, nat.sport), SYN | ACK);
            synack.seq = 5000;
            synack.ack = 1001;
            synack.tcp_options = syn_options(9);
            l.run(&synack.frame());
            let mut data = Tcp::new((CLIENT, 50000), (VIP, 12379), PSH | ACK);
            data.seq = 1001;
            data.ack = 5001;
            data.tcp_options = ts_options(8, 9);
            data.payload = vec![0x61; 64];
            let data = data.frame();
            l.run(&data);
            let mut reply = Tcp::new((nat.dst, 2379), (VIP, nat.sport), PSH | ACK);
            reply.seq = 5001;
            reply.ack = 1065;
            reply.tcp_options = ts_options(10, 8);
            reply.payload = vec![0x62; 64];
            let reply = reply.frame();
            // A router's frag-needed about the data as the balancer sent it to the server.
            let mut sent = integration::frames::parse(&data).context("data frame")?;
            (sent.src, sent.sport, sent.dst, sent.dport) = (VIP, nat.sport, nat.dst, 2379);
            let frag_needed = integration::frames::icmp_error(
                ([0x02, 0, 0, 0, 0, 0xfe], fixture::D0_MAC),
                Ipv4Addr::new(198, 18, 0, 254),
                VIP,
                integration::frames::ICMP_DEST_UNREACH,
                integration::frames::ICMP_FRAG_NEEDED,
                [0, 0, 0x05, 0x00],
                &sent.frame()[14..],
            );
            // The same established flow over IPv6 (`xdplb` tail-calls `xdplb6` and its stage).
            let (client6, vip6) = ((fixture::CLIENT6, 50000), fixture::ETCD6);
            let mut syn6 = Tcp::new(client6, vip6, SYN);
            syn6.tcp_options = syn_options(7);
            let (_, out) = l.run(&syn6.frame());
            let nat6 = integration::frames::parse6(&out).context("IPv6 SYN rewritten")?;
            let mut synack6 = Tcp::new((nat6.dst, 2379), (fixture::VIP6, nat6.sport), SYN | ACK);
            (synack6.seq, synack6.ack, synack6.tcp_options) = (5000, 1001, syn_options(9));
            l.run(&synack6.frame());
            let mut data6 = Tcp::new(client6, vip6, PSH | ACK);
            (data6.seq, data6.ack, data6.tcp_options, data6.payload) = (1001, 5001, ts_options(8, 9), vec![0x61; 64]);
            let data6 = data6.frame();
            // The flow is established and its data forwarded (XDP_TX), or the figures mean nothing.
            if l.run(&data6).0 != 3 {
                bail!("the IPv6 flow did not forward its data: {:?}", l.reasons());
            }
            let mut reply6 = Tcp::new((nat6.dst, 2379), (fixture::VIP6, nat6.sport), PSH | ACK);
            (reply6.seq, reply6.ack, reply6.tcp_options, reply6.payload) =
                (5001, 1065, ts_options(10, 8), vec![0x62; 64]);
            let reply6 = reply6.frame();
            let mut port = 0u32;
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
            time("passed packet (not ours, a frontend's port)", xdplb, &mut || passed_frontend_port.clone())?;
            time("established, client->server", xdplb, &mut || data.clone())?;
            time("established, server->client", xdplb, &mut || reply.clone())?;
            time("IPv6 established, client->server", xdplb, &mut || data6.clone())?;
            time("IPv6 established, server->client", xdplb, &mut || reply6.clone())?;
            time("ICMP frag-needed about a flow", xdplb, &mut || frag_needed.clone())?;
            time("SYN (new flow)", xdplb, &mut || {
                port += 1;
                let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + port / 60000);
                let mut s = Tcp::new((src, 1024 + (port % 60000) as u16), (VIP, 12379), SYN);
                s.tcp_options = syn_options(port);
                s.frame()
            })?;
            // Every timed SYN opened a flow (none met the table's or the ports' limits).
            let opened = l.reason(lb_common::Reason::NewFlow);
            if opened < runs as u64 {
                bail!("only {opened} of {runs} SYNs opened a flow: {:?}", l.reasons());
            }
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

fn nginx(ns: &NetNs, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let d = dir.display();
    // The single-connection throughput file, 64 MiB.
    let big = dir.join("big.bin");
    fs::write(&big, vec![0x5au8; 64 << 20])?;
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n keepalive_requests 100000000;\n sendfile on;\n\
         client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
         server {{ listen 80; location = /big {{ alias {big}; }} location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
        big = big.display()
    );
    let path = dir.join("nginx.conf");
    fs::write(&path, conf)?;
    ns.spawn("nginx", &["-c", path.to_str().unwrap()])?;
    Ok(())
}

/// wrk's figures: requests/s, p50 and p99 latency (us).
fn wrk(ns: &NetNs, url: &str, seconds: u32, close: bool) -> Result<(f64, f64, f64)> {
    wrk_with(ns, url, seconds, close, 32)
}

fn wrk_with(ns: &NetNs, url: &str, seconds: u32, close: bool, conns: u32) -> Result<(f64, f64, f64)> {
    let w = wrk_run(ns, url, seconds, close, conns, None)?;
    Ok((w.rps, w.p50_us, w.p99_us))
}

/// What one wrk run printed: requests per second and latency percentiles.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Wrk {
    rps: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
}

/// `script`: a wrk Lua script (see `latency`'s paced run).
fn wrk_run(ns: &NetNs, url: &str, seconds: u32, close: bool, conns: u32, script: Option<&Path>) -> Result<Wrk> {
    let (t, c) = (format!("-t{}", conns.min(2)), format!("-c{conns}"));
    let mut args = vec!["wrk", t.as_str(), c.as_str()];
    let d = format!("-d{seconds}s");
    args.push(&d);
    args.push("--latency");
    if let Some(script) = script {
        args.extend(["-s", script.to_str().context("script path")?]);
    }
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(url);
    let out = ns.exec(&args)?;
    let rps = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .context("wrk printed no Requests/sec")?
        .trim()
        .parse::<f64>()?;
    let lat = |p: &str| -> Result<f64> {
        let line =
            out.lines().find(|l| l.trim_start().starts_with(p)).with_context(|| format!("no {p} in wrk output"))?;
        let v = line.split_whitespace().nth(1).unwrap();
        let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap());
        let n: f64 = num.parse()?;
        Ok(match unit {
            "us" => n,
            "ms" => n * 1000.0,
            "s" => n * 1e6,
            _ => bail!("unit {unit}"),
        })
    };
    if out.contains("Non-2xx") {
        bail!("wrk saw errors:\n{out}");
    }
    Ok(Wrk { rps, p50_us: lat("50%")?, p90_us: lat("90%")?, p99_us: lat("99%")? })
}

/// Bytes per second of one connection downloading the 64 MiB file.
fn single_connection(ns: &NetNs, url: &str) -> Result<f64> {
    let out = ns.exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "--max-time",
        "60",
        "-w",
        "%{speed_download} %{size_download}",
        url,
    ])?;
    let mut w = out.split_whitespace();
    let speed: f64 = w.next().context("curl speed")?.parse()?;
    let size: f64 = w.next().context("curl size")?.parse()?;
    if size != (64u64 << 20) as f64 {
        bail!("downloaded {size} bytes of 64 MiB");
    }
    Ok(speed)
}

/// CPU time in softirq, all CPUs, in ms (where XDP and nftables run).
fn softirq_ms() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("/proc/stat")?;
    let softirq: f64 = cpu.split_whitespace().nth(7).context("softirq column")?.parse()?;
    let hz = 100.0; // USER_HZ
    Ok(softirq * 1000.0 / hz)
}

/// CPU time (user + system) of a process, in ms.
fn process_ms(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let (u, s): (f64, f64) = (f[11].parse()?, f[12].parse()?);
    Ok((u + s) * 1000.0 / 100.0)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Contender {
    Direct,
    Haproxy,
    Nftables,
    XdplbNative,
    XdplbGeneric,
    /// xdplb with `translate_timestamps = false`: what the translation buys (new connections).
    XdplbUntranslated,
}

impl Contender {
    const ALL: [Contender; 5] =
        [Contender::Direct, Contender::Haproxy, Contender::Nftables, Contender::XdplbNative, Contender::XdplbGeneric];
    fn name(self) -> &'static str {
        match self {
            Contender::Direct => "direct (client -> one nginx)",
            Contender::Haproxy => "HAProxy 2.6, mode tcp, roundrobin",
            Contender::Nftables => "nftables DNAT numgen + masquerade",
            Contender::XdplbNative => "xdplb, native XDP",
            Contender::XdplbGeneric => "xdplb, generic XDP",
            Contender::XdplbUntranslated => "xdplb, native XDP, timestamps not translated",
        }
    }
}

/// A running balancer; dropping it stops it.
enum Running {
    None,
    Agent(Agent),
    Haproxy(std::process::Child),
    Nft,
}

/// Starts contender `c`; its connections to the backends leave from `source` when given (an
/// address of the balancer's), so that no contender meets another's TIME_WAIT on a backend.
fn start(c: Contender, lab: &Lab, tmp: &Path, source: Option<Ipv4Addr>) -> Result<Running> {
    let servers: Vec<String> = lab.backends.iter().map(|b| format!("{}:80", b.addr)).collect();
    Ok(match c {
        Contender::Direct => Running::None,
        Contender::Haproxy => {
            let cfg = tmp.join("haproxy.cfg");
            let lines: Vec<String> =
                servers.iter().enumerate().map(|(i, s)| format!("  server app{} {s}", i + 1)).collect();
            fs::write(
                &cfg,
                format!(
                    "global\n  maxconn 4096\n  nbthread 2\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                     frontend in\n  bind {}:80\n  default_backend pool\nbackend pool\n  balance roundrobin\n{}{}\n",
                    lab.vip,
                    source.map(|a| format!("  source {a}\n")).unwrap_or_default(),
                    lines.join("\n")
                ),
            )?;
            let child = spawn_haproxy(lab, &cfg, 80, &tmp.join("haproxy.log"))?;
            Running::Haproxy(child)
        }
        Contender::Nftables => {
            let map: Vec<String> = lab.backends.iter().enumerate().map(|(i, b)| format!("{i} : {}", b.addr)).collect();
            let snat = source.map_or_else(|| "masquerade".to_string(), |a| format!("snat to {a}"));
            let rules = format!(
                "table ip xdplb_bench {{\n chain pre {{\n  type nat hook prerouting priority -100;\n  ip daddr {vip} tcp dport 80 dnat to numgen inc mod {n} map {{ {map} }}\n }}\n chain post {{\n  type nat hook postrouting priority 100;\n  ip daddr 198.18.0.0/24 tcp dport 80 {snat}\n }}\n}}\n",
                vip = lab.vip,
                n = lab.backends.len(),
                map = map.join(", ")
            );
            let f = tmp.join("nft.rules");
            fs::write(&f, rules)?;
            lab.lb.sysctl("net.ipv4.ip_forward", "1")?;
            lab.lb.sysctl("net.ipv4.conf.all.send_redirects", "0")?;
            lab.lb.sysctl("net.ipv4.conf.eth0.send_redirects", "0")?;
            lab.lb.exec(&["nft", "-f", f.to_str().unwrap()])?;
            Running::Nft
        }
        Contender::XdplbNative | Contender::XdplbGeneric | Contender::XdplbUntranslated => {
            let mode = if c == Contender::XdplbGeneric { "generic" } else { "native" };
            let global = if c == Contender::XdplbUntranslated { "translate_timestamps = false" } else { "" };
            let mut config = integration::lab::config(lab, 80, 80, global, &[]);
            if let Some(a) = source {
                config = config.replace("name = \"pool\"\n", &format!("name = \"pool\"\nsource = \"{a}\"\n"));
            }
            Running::Agent(Agent::start(&lab.lb, &config, &lab.lb_ifaces, mode)?)
        }
    })
}

/// Starts HAProxy on the balancer with `cfg`, its warnings (`Server x/y is DOWN`) in `log`, and
/// waits for its listener on `port`; says so if it died instead.
fn spawn_haproxy(lab: &Lab, cfg: &Path, port: u16, log: &Path) -> Result<std::process::Child> {
    let mut child = lab
        .lb
        .command("haproxy")
        .args(["-db", "-f", cfg.to_str().context("a UTF-8 path")?])
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(log)?)
        .spawn()
        .context("starting haproxy")?;
    for _ in 0..100 {
        if let Some(status) = child.try_wait()? {
            bail!("haproxy exited: {status}: {}", fs::read_to_string(log).unwrap_or_default());
        }
        if !lab.lb.exec(&["ss", "-Htln", &format!("sport = :{port}")])?.trim().is_empty() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("haproxy did not listen on port {port} within 2 s")
}

fn stop(r: Running, lab: &Lab) {
    match r {
        Running::Haproxy(mut c) => {
            let _ = c.kill();
            let _ = c.wait();
        }
        Running::Nft => {
            let _ = lab.lb.exec(&["nft", "delete", "table", "ip", "xdplb_bench"]);
        }
        Running::Agent(a) => drop(a),
        Running::None => {}
    }
}

#[derive(Default, Clone, Copy, serde::Serialize)]
struct Figures {
    keepalive_rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// One connection, one request at a time (ping-pong): the round trip through the balancer.
    pingpong_p50_us: f64,
    pingpong_p99_us: f64,
    newconn_rps: f64,
    single_conn_bytes_per_s: f64,
    /// Softirq ms (all CPUs) per 1000 keep-alive requests: XDP and nftables run there.
    softirq_ms_per_1k: f64,
    /// HAProxy's own CPU ms per 1000 keep-alive requests.
    process_ms_per_1k: Option<f64>,
}

fn measure(c: Contender, lab: &Lab, args: &Args, running: &Running) -> Result<Figures> {
    let url = |path: &str| match c {
        Contender::Direct => format!("http://{}:80{path}", lab.backends[0].addr),
        _ => format!("http://{}:80{path}", lab.vip),
    };
    let (soft0, proc0) = (
        softirq_ms()?,
        match running {
            Running::Haproxy(h) => Some(process_ms(h.id())?),
            _ => None,
        },
    );
    let (rps, p50, p99) = wrk(&lab.client, &url("/"), args.seconds, false)?;
    let requests = rps * args.seconds as f64;
    let soft = (softirq_ms()? - soft0) / requests * 1000.0;
    let process = match (running, proc0) {
        (Running::Haproxy(h), Some(p0)) => Some((process_ms(h.id())? - p0) / requests * 1000.0),
        _ => None,
    };
    let (newconn, _, _) = wrk(&lab.client, &url("/"), args.seconds, true)?;
    let (_, pp50, pp99) = wrk_with(&lab.client, &url("/"), args.seconds.min(3), false, 1)?;
    let single = single_connection(&lab.client, &url("/big"))?;
    Ok(Figures {
        keepalive_rps: rps,
        p50_us: p50,
        p99_us: p99,
        pingpong_p50_us: pp50,
        pingpong_p99_us: pp99,
        newconn_rps: newconn,
        single_conn_bytes_per_s: single,
        softirq_ms_per_1k: soft,
        process_ms_per_1k: process,
    })
}

/// The one-arm lab with nginx on every backend (its files under the directory returned), and
/// a balancer address for each turn of `rounds` rounds of `turns` contenders (`source(round,
/// turn)`): every balancer, every round, connects to the backends from an address of its own,
/// so none meets the TIME_WAIT another left there (its new connections would pay for the
/// other's).
fn nginx_lab(rounds: usize, turns: usize) -> Result<(Lab, PathBuf, impl Fn(usize, usize) -> Ipv4Addr)> {
    let lab = Lab::one_arm(3)?;
    let tmp = std::env::temp_dir().join(integration::netns::unique("xdplb-bench-"));
    for b in &lab.backends {
        nginx(&b.ns, &tmp.join(&b.name))?;
    }
    // One source address per run, 198.18.0.150 up to .254.
    if rounds * turns > 105 {
        anyhow::bail!("{rounds} rounds of {turns} runs need more source addresses than 198.18.0.150-254 has");
    }
    let source = move |round: usize, turn: usize| Ipv4Addr::new(198, 18, 0, 150 + (round * turns + turn) as u8);
    for round in 0..rounds {
        for turn in 0..turns {
            lab.lb.ip(&["addr", "add", &format!("{}/32", source(round, turn)), "dev", "eth0"])?;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok((lab, tmp, source))
}

fn wrk_bench(args: &Args) -> Result<serde_json::Value> {
    let (lab, tmp, source) = nginx_lab(args.rounds, Contender::ALL.len())?;
    let mut samples: BTreeMap<Contender, Vec<Figures>> = BTreeMap::new();
    for round in 0..args.rounds {
        for (i, c) in Contender::ALL.into_iter().enumerate() {
            eprintln!("round {}/{}: {}", round + 1, args.rounds, c.name());
            let running = start(c, &lab, &tmp, Some(source(round, i)))?;
            let f = measure(c, &lab, args, &running);
            stop(running, &lab);
            samples.entry(c).or_default().push(f.with_context(|| c.name())?);
        }
    }
    let _ = fs::remove_dir_all(&tmp);
    let med = |c: Contender, f: &dyn Fn(&Figures) -> f64| median(samples[&c].iter().map(f).collect());
    let base = |f: &dyn Fn(&Figures) -> f64| (med(Contender::Direct, f), med(Contender::Haproxy, f));
    let (ka_d, ka_h) = base(&|x| x.keepalive_rps);
    let (nc_d, nc_h) = base(&|x| x.newconn_rps);
    let (sc_d, sc_h) = base(&|x| x.single_conn_bytes_per_s);
    println!(
        "\n### One-arm veth lab, 3 nginx backends, wrk -t2 -c32 -d{}s; medians of {} rounds taking turns\n",
        args.seconds, args.rounds
    );
    println!("| contender | keep-alive req/s | vs direct | vs HAProxy | new conn/s | vs direct | vs HAProxy | p50 us | p99 us | ping-pong p50 us | ping-pong p99 us | 1 conn MB/s | vs HAProxy | softirq ms/1k req | process ms/1k req |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut out = serde_json::Map::new();
    let mut bars = Vec::new();
    for c in Contender::ALL {
        let ka = med(c, &|x| x.keepalive_rps);
        let nc = med(c, &|x| x.newconn_rps);
        let sc = med(c, &|x| x.single_conn_bytes_per_s);
        let pm = samples[&c].iter().filter_map(|x| x.process_ms_per_1k).collect::<Vec<_>>();
        println!(
            "| {} | {ka:.0} | {:.2}x | {:.2}x | {nc:.0} | {:.2}x | {:.2}x | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.1} | {} |",
            c.name(), ka / ka_d, ka / ka_h, nc / nc_d, nc / nc_h,
            med(c, &|x| x.p50_us), med(c, &|x| x.p99_us),
            med(c, &|x| x.pingpong_p50_us), med(c, &|x| x.pingpong_p99_us), sc / 1e6, sc / sc_h,
            med(c, &|x| x.softirq_ms_per_1k),
            if pm.is_empty() { "-".to_string() } else { format!("{:.1}", median(pm)) },
        );
        let _ = sc_d;
        bars.push((c.name(), ka / ka_d, nc / nc_d));
        out.insert(
            c.name().to_string(),
            json!({ "median": {
            "keepalive_rps": ka, "newconn_rps": nc, "single_conn_bytes_per_s": sc,
            "p50_us": med(c, &|x| x.p50_us), "p99_us": med(c, &|x| x.p99_us),
            "pingpong_p50_us": med(c, &|x| x.pingpong_p50_us), "pingpong_p99_us": med(c, &|x| x.pingpong_p99_us),
            "softirq_ms_per_1k": med(c, &|x| x.softirq_ms_per_1k),
        }, "rounds": samples[&c] }),
        );
    }
    chart(&bars)?;
    Ok(serde_json::Value::Object(out))
}

/// A bar chart of keep-alive and new-connection rates relative to direct: SVG, then PNG.
fn chart(bars: &[(&str, f64, f64)]) -> Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    fs::create_dir_all(&dir)?;
    let (w, row, left) = (900.0, 60.0, 300.0);
    let h = 80.0 + row * bars.len() as f64;
    let scale = |r: f64| (r.min(1.5) / 1.5) * (w - left - 40.0);
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='13'>\
         <rect width='100%' height='100%' fill='white'/>\
         <text x='10' y='22' font-size='16'>xdplb vs HAProxy, nftables and the direct path (ratio to direct; higher is better)</text>\
         <rect x='{left}' y='34' width='12' height='12' fill='#3b7dd8'/><text x='{}' y='45'>keep-alive requests/s</text>\
         <rect x='{}' y='34' width='12' height='12' fill='#e8913a'/><text x='{}' y='45'>new connections/s</text>",
        left + 18.0, left + 200.0, left + 218.0
    );
    for (i, (name, ka, nc)) in bars.iter().enumerate() {
        let y = 60.0 + row * i as f64;
        svg += &format!("<text x='10' y='{}'>{}</text>", y + 24.0, name.replace('&', "&amp;").replace('<', "&lt;"));
        svg += &format!(
            "<rect x='{left}' y='{y}' width='{}' height='20' fill='#3b7dd8'/><text x='{}' y='{}'>{ka:.2}x</text>",
            scale(*ka),
            left + scale(*ka) + 4.0,
            y + 15.0
        );
        svg += &format!(
            "<rect x='{left}' y='{}' width='{}' height='20' fill='#e8913a'/><text x='{}' y='{}'>{nc:.2}x</text>",
            y + 22.0,
            scale(*nc),
            left + scale(*nc) + 4.0,
            y + 37.0
        );
    }
    let x1 = left + scale(1.0);
    svg += &format!("<line x1='{x1}' y1='50' x2='{x1}' y2='{}' stroke='#444' stroke-dasharray='4 3'/><text x='{}' y='{}'>direct = 1.0</text></svg>", h - 10.0, x1 - 30.0, h - 2.0);
    let svg_path = dir.join("chart.svg");
    fs::write(&svg_path, svg)?;
    let png = dir.join("chart.png");
    integration::netns::sh(std::process::Command::new("rsvg-convert").arg("-o").arg(&png).arg(&svg_path))
        .context("rsvg-convert (Debian package librsvg2-bin) makes the PNG")?;
    println!("\nchart: {}", png.display());
    Ok(())
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.rounds = 1;
        args.seconds = 2;
        args.runs = 2_000;
        args.clients_seconds = 3;
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel =
        Command::new("uname").arg("-r").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
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
    if args.only.iter().any(|o| o == "clients") {
        report.insert("clients".into(), clients::bench(&args)?);
    }
    if args.only.iter().any(|o| o == "failover") {
        report.insert("failover".into(), failover::bench(&args)?);
    }
    if args.only.iter().any(|o| o == "connect") {
        report.insert("connect".into(), connect::bench(&args)?);
    }
    if args.only.iter().any(|o| o == "ha") {
        report.insert("ha".into(), ha::bench(&args)?);
    }
    if args.only.iter().any(|o| o == "latency") {
        report.insert("latency".into(), latency::bench(&args)?);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&serde_json::Value::Object(report))?)?;
    println!("\nraw figures: {}", dir.join("bench.json").display());
    Ok(())
}
