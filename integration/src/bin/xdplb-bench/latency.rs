//! `latency`: where the ping-pong tail comes from. One connection, one request at a time
//! (`wrk -t1 -c1 --latency`, the round trip of a quiet client), through each way in turn, round
//! after round, in the one-arm veth lab with three nginx backends:
//!
//! - direct (client -> one nginx) and HAProxy (mode tcp), the references;
//! - xdplb, native XDP, its agent running;
//! - the same data path with its agent stopped (SIGSTOP) for the run: no checks, sweep or status
//!   work on the cores, the XDP program alone;
//!
//! for each, p50/p90/p99, and the CPU time of the `ksoftirqd` threads per 1000 requests: softirq
//! work the kernel could not finish where it was raised and handed to a thread that waits for
//! the scheduler, which is what a tail made of scheduling delays looks like.
//!
//! Then 32 connections at a pace (`wrk -c32` with a script that waits `PACE_MS` after each
//! response before the next request): the same offered load for every way, below what each can
//! serve. Unpaced, `wrk -c32` is a closed loop: a way that serves more requests keeps more in
//! flight at each server at once, and its p99 compares queues of different lengths.

use std::{collections::BTreeMap, fs};

use anyhow::{Context, Result};
use serde_json::json;

use super::{median, nginx_lab, start, stop, wrk_run, Args, Contender, Running, Wrk};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Way {
    Direct,
    Haproxy,
    Xdplb,
    XdplbAgentStopped,
}

impl Way {
    const ALL: [Way; 4] = [Way::Direct, Way::Haproxy, Way::Xdplb, Way::XdplbAgentStopped];

    fn name(self) -> &'static str {
        match self {
            Way::Direct => "direct (client -> one nginx)",
            Way::Haproxy => "HAProxy 2.6, mode tcp",
            Way::Xdplb => "xdplb, native XDP, agent running",
            Way::XdplbAgentStopped => "xdplb, native XDP, agent stopped (SIGSTOP)",
        }
    }

    fn contender(self) -> Contender {
        match self {
            Way::Direct => Contender::Direct,
            Way::Haproxy => Contender::Haproxy,
            Way::Xdplb | Way::XdplbAgentStopped => Contender::XdplbNative,
        }
    }
}

/// CPU time of every `ksoftirqd/N` thread, in clock ticks.
fn ksoftirqd_ticks() -> u64 {
    let Ok(dir) = fs::read_dir("/proc") else { return 0 };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.starts_with("ksoftirqd/")))
        .filter_map(|e| {
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let f: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Sample {
    wrk: Wrk,
    /// ksoftirqd CPU ms per 1000 requests.
    ksoftirqd_ms_per_1k: f64,
    /// 32 connections at `PACE_MS`.
    paced: Wrk,
}

/// What each paced connection waits between a response and its next request: 32 connections
/// offer at most 16,000 requests/s, under what every way serves on this lab's two cores.
const PACE_MS: u32 = 2;
const PACED_CONNS: u32 = 32;

pub fn bench(args: &Args) -> Result<serde_json::Value> {
    let (lab, tmp, source) = nginx_lab(args.rounds, Way::ALL.len())?;
    // A tail needs samples: at least 5 s a run, but for the quick run.
    let seconds = if args.quick { args.seconds } else { args.seconds.max(5) };
    let mut samples: BTreeMap<Way, Vec<Sample>> = BTreeMap::new();
    let pace = tmp.join("pace.lua");
    fs::write(&pace, format!("function delay()\n  return {PACE_MS}\nend\n"))?;
    for round in 0..args.rounds {
        for (i, way) in Way::ALL.into_iter().enumerate() {
            eprintln!("latency round {}/{}: {}", round + 1, args.rounds, way.name());
            let running = start(way.contender(), &lab, &tmp, Some(source(round, i)))?;
            let paused = match (&running, way) {
                (Running::Agent(a), Way::XdplbAgentStopped) => {
                    // The data path stays attached and forwards; the agent does nothing meanwhile.
                    nix_signal(a.pid(), libc::SIGSTOP);
                    Some(a.pid())
                }
                _ => None,
            };
            let url = match way {
                Way::Direct => format!("http://{}:80/", lab.backends[0].addr),
                _ => format!("http://{}:80/", lab.vip),
            };
            let k0 = ksoftirqd_ticks();
            let w = wrk_run(&lab.client, &url, seconds, false, 1, None);
            let k = ksoftirqd_ticks() - k0;
            let paced = wrk_run(&lab.client, &url, seconds, false, PACED_CONNS, Some(&pace));
            if let Some(pid) = paused {
                nix_signal(pid, libc::SIGCONT);
            }
            stop(running, &lab);
            let w = w.with_context(|| way.name())?;
            let paced = paced.with_context(|| format!("{}, paced", way.name()))?;
            let requests = (w.rps * f64::from(seconds)).max(1.0);
            samples.entry(way).or_default().push(Sample {
                wrk: w,
                ksoftirqd_ms_per_1k: k as f64 * 10.0 / requests * 1000.0,
                paced,
            });
        }
    }
    let _ = fs::remove_dir_all(&tmp);
    let med = |w: Way, f: &dyn Fn(&Sample) -> f64| median(samples[&w].iter().map(f).collect());
    let direct_p99 = med(Way::Direct, &|s| s.wrk.p99_us);
    println!(
        "\n### Ping-pong (wrk -t1 -c1 -d{seconds}s), one-arm veth lab, 3 nginx; medians of {} rounds taking turns\n",
        args.rounds
    );
    println!("| way | req/s | p50 us | p90 us | p99 us | p99 vs direct | ksoftirqd ms/1k req |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut out = serde_json::Map::new();
    for way in Way::ALL {
        let p99 = med(way, &|s| s.wrk.p99_us);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {p99:.0} | {:.2}x | {:.2} |",
            way.name(),
            med(way, &|s| s.wrk.rps),
            med(way, &|s| s.wrk.p50_us),
            med(way, &|s| s.wrk.p90_us),
            p99 / direct_p99,
            med(way, &|s| s.ksoftirqd_ms_per_1k),
        );
        out.insert(way.name().to_string(), json!({ "rounds": samples[&way] }));
    }
    let haproxy_p99 = med(Way::Haproxy, &|s| s.paced.p99_us);
    println!(
        "\n### {PACED_CONNS} connections at a pace (wrk -c{PACED_CONNS} -d{seconds}s, {PACE_MS} ms between a response and the next request: the same offered load for every way)\n"
    );
    println!("| way | req/s | p50 us | p90 us | p99 us | p99 vs HAProxy |");
    println!("|---|---:|---:|---:|---:|---:|");
    for way in Way::ALL {
        let p99 = med(way, &|s| s.paced.p99_us);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {p99:.0} | {:.2}x |",
            way.name(),
            med(way, &|s| s.paced.rps),
            med(way, &|s| s.paced.p50_us),
            med(way, &|s| s.paced.p90_us),
            p99 / haproxy_p99,
        );
    }
    Ok(serde_json::Value::Object(out))
}

fn nix_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this benchmark started.
    unsafe { libc::kill(pid as i32, sig) };
}
