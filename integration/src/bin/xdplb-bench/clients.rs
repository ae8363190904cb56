//! `clients`: new connections from many client hosts at once, the way a control plane's kubelets
//! and controllers open them: four client hosts with their own addresses (one of them with TCP
//! timestamps off, as Windows clients have them), plain HTTP so that TLS hides nothing, each
//! request with `Connection: close`, so the backends close first and hold every tuple in
//! TIME_WAIT. Per contender it reports what the kernels counted: the backends'
//! `TcpExtPAWSTimewait` (a SYN refused on a tuple in TIME_WAIT) and the clients'
//! `TcpExtTCPSynRetrans` (what each refusal costs a client: a second), beside connections per
//! second and connect() times.
//!
//! Every contender, in every round, sends from a balancer address of its own (`source`), so it
//! starts on backends with no TIME_WAIT left by another contender or an earlier round.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::atomic::AtomicBool,
    time::Duration,
};

use anyhow::{Context, Result};
use integration::{
    churn::{self, netstat, Churn, Load},
    lab::Lab,
    netns::NetNs,
};
use lb_common::Reason;
use lb_user::dataplane::counters::Counters;
use serde_json::json;

use super::{median, nginx, start, stop, Args, Contender, Running};

const CONTENDERS: [Contender; 6] = [
    Contender::Direct,
    Contender::Haproxy,
    Contender::Nftables,
    Contender::XdplbNative,
    Contender::XdplbGeneric,
    Contender::XdplbUntranslated,
];
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
/// Connections in flight per client host with timestamps (like `wrk -c8`).
const THREADS: usize = 8;

#[derive(Default, Clone, serde::Serialize)]
struct Figures {
    /// New connections per second of the three clients with timestamps, together.
    conn_per_s: f64,
    connect_p50_us: f64,
    connect_p99_us: f64,
    /// Backends' TcpExtPAWSTimewait, summed, during the run.
    paws_timewait: u64,
    /// TcpExtTCPSynRetrans of the three clients with timestamps.
    syn_retrans: u64,
    /// The client without timestamps: its rate, its SYN retransmissions.
    no_ts_conn_per_s: f64,
    no_ts_syn_retrans: u64,
    failed: u64,
    /// xdplb only: SYNs that found no free NAT port.
    no_nat_port: Option<u64>,
}

fn sum(nss: &[&NetNs], name: &str) -> Result<u64> {
    nss.iter().map(|ns| netstat(ns, name)).sum()
}

fn measure(c: Contender, lab: &Lab, args: &Args, running: &Running) -> Result<Figures> {
    let clients = lab.clients();
    let (ts_clients, no_ts) = clients.split_at(3);
    let no_ts = no_ts[0];
    let backends: Vec<&NetNs> = lab.backends.iter().map(|b| &b.ns).collect();
    let targets = |i: usize| -> Vec<SocketAddr> {
        match c {
            // Each client to its own backend (the fourth shares the first's).
            Contender::Direct => vec![SocketAddrV4::new(lab.backends[i % lab.backends.len()].addr, 80).into()],
            _ => vec![SocketAddrV4::new(lab.vip, 80).into()],
        }
    };
    let paws0 = sum(&backends, "TcpExtPAWSTimewait")?;
    let retrans0 = sum(ts_clients, "TcpExtTCPSynRetrans")?;
    let no_ts_retrans0 = netstat(no_ts, "TcpExtTCPSynRetrans")?;
    let counters = match running {
        Running::Agent(a) => Some(Counters::open_pinned(a.pin_dir())?),
        _ => None,
    };
    let no_nat_port = |c: &Counters| -> Result<u64> {
        Ok(c.reasons()?.into_iter().find(|(r, _)| *r == Reason::NoNatPort).map_or(0, |(_, n)| n))
    };
    let nnp0 = counters.as_ref().map(no_nat_port).transpose()?;
    let duration = Duration::from_secs(args.clients_seconds.into());
    let fast = Load { threads: THREADS, duration, rate: None, request: REQUEST.to_vec() };
    let paced = Load { threads: 2, duration, rate: Some(args.no_ts_rate), request: REQUEST.to_vec() };
    let stop_flag = AtomicBool::new(false);
    let (ts, slow): (Churn, Churn) = std::thread::scope(|sc| {
        let hs: Vec<_> = ts_clients
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (h, load, stop, t) = (ns.handle(), &fast, &stop_flag, targets(i));
                sc.spawn(move || churn::run(h, &t, load, stop))
            })
            .collect();
        let (h, t) = (no_ts.handle(), targets(3));
        let (paced, stop) = (&paced, &stop_flag);
        let slow = sc.spawn(move || churn::run(h, &t, paced, stop));
        (hs.into_iter().map(|h| h.join().unwrap()).fold(Churn::default(), Churn::merge), slow.join().unwrap())
    });
    let secs = duration.as_secs_f64();
    Ok(Figures {
        conn_per_s: ts.ok as f64 / secs,
        connect_p50_us: ts.connect_quantile(0.5),
        connect_p99_us: ts.connect_quantile(0.99),
        paws_timewait: sum(&backends, "TcpExtPAWSTimewait")? - paws0,
        syn_retrans: sum(ts_clients, "TcpExtTCPSynRetrans")? - retrans0,
        no_ts_conn_per_s: slow.ok as f64 / secs,
        no_ts_syn_retrans: netstat(no_ts, "TcpExtTCPSynRetrans")? - no_ts_retrans0,
        failed: ts.failed + slow.failed,
        no_nat_port: match (&counters, nnp0) {
            (Some(c), Some(n0)) => Some(no_nat_port(c)? - n0),
            _ => None,
        },
    })
}

pub(super) fn bench(args: &Args) -> Result<serde_json::Value> {
    let lab = Lab::one_arm_clients(3, 4)?;
    // The fourth client has timestamps off.
    lab.more_clients[2].0.sysctl("net.ipv4.tcp_timestamps", "0")?;
    let tmp = std::env::temp_dir().join(integration::netns::unique("xdplb-bench-clients-"));
    for b in &lab.backends {
        nginx(&b.ns, &tmp.join(&b.name))?;
    }
    // A fresh source address per contender and round (see the module comment).
    let source = |round: usize, i: usize| Ipv4Addr::new(198, 18, 0, 100 + (round * CONTENDERS.len() + i) as u8);
    for round in 0..args.rounds {
        for i in 0..CONTENDERS.len() {
            lab.lb.ip(&["addr", "add", &format!("{}/32", source(round, i)), "dev", "eth0"])?;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut samples: BTreeMap<Contender, Vec<Figures>> = BTreeMap::new();
    for round in 0..args.rounds {
        for (i, c) in CONTENDERS.into_iter().enumerate() {
            eprintln!("clients round {}/{}: {}", round + 1, args.rounds, c.name());
            let running = start(c, &lab, &tmp, Some(source(round, i)))?;
            let f = measure(c, &lab, args, &running);
            stop(running, &lab);
            samples.entry(c).or_default().push(f.with_context(|| c.name())?);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let med = |c: Contender, f: &dyn Fn(&Figures) -> f64| median(samples[&c].iter().map(f).collect());
    let total = |c: Contender, f: &dyn Fn(&Figures) -> u64| samples[&c].iter().map(f).sum::<u64>();
    let (direct, haproxy) = (med(Contender::Direct, &|x| x.conn_per_s), med(Contender::Haproxy, &|x| x.conn_per_s));
    println!(
        "\n### Many clients: 4 client hosts, 3 nginx backends, `Connection: close`, {} s per run; medians of {} rounds (counts: totals)\n",
        args.clients_seconds, args.rounds
    );
    println!("Three clients with timestamps, {THREADS} connections in flight each; the fourth without timestamps, paced at {} conn/s.\n", args.no_ts_rate);
    println!("| contender | new conn/s | vs direct | vs HAProxy | connect p50 us | connect p99 us | backends PAWSTimewait | clients SynRetrans | no-timestamps client conn/s | its SynRetrans | failed | no_nat_port |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut out = serde_json::Map::new();
    for c in CONTENDERS {
        let cps = med(c, &|x| x.conn_per_s);
        let nnp: Vec<u64> = samples[&c].iter().filter_map(|x| x.no_nat_port).collect();
        println!(
            "| {} | {cps:.0} | {:.2}x | {:.2}x | {:.0} | {:.0} | {} | {} | {:.0} | {} | {} | {} |",
            c.name(),
            cps / direct,
            cps / haproxy,
            med(c, &|x| x.connect_p50_us),
            med(c, &|x| x.connect_p99_us),
            total(c, &|x| x.paws_timewait),
            total(c, &|x| x.syn_retrans),
            med(c, &|x| x.no_ts_conn_per_s),
            total(c, &|x| x.no_ts_syn_retrans),
            total(c, &|x| x.failed),
            if nnp.is_empty() { "-".to_string() } else { nnp.iter().sum::<u64>().to_string() },
        );
        out.insert(
            c.name().to_string(),
            json!({ "median": { "conn_per_s": cps, "connect_p50_us": med(c, &|x| x.connect_p50_us),
                    "connect_p99_us": med(c, &|x| x.connect_p99_us), "no_ts_conn_per_s": med(c, &|x| x.no_ts_conn_per_s) },
                    "totals": { "paws_timewait": total(c, &|x| x.paws_timewait), "syn_retrans": total(c, &|x| x.syn_retrans),
                    "no_ts_syn_retrans": total(c, &|x| x.no_ts_syn_retrans), "failed": total(c, &|x| x.failed) },
                    "rounds": samples[&c] }),
        );
    }
    Ok(serde_json::Value::Object(out))
}
