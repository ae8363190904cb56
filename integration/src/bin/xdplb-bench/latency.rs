//! `latency`: where the ping-pong tail comes from. One connection, one request at a time
//! (`wrk -t1 -c1 --latency`, the round trip of a quiet client), through each way in turn, round
//! after round, in the one-arm veth lab with three nginx backends:
//!
//! - direct (client -> one nginx) and HAProxy (mode tcp), the references;
//! - HAProxy again with an XDP_PASS program on the balancer's link: the kernel then takes that
//!   veth's packets in through NAPI polls, as it must for xdplb's (a veth runs XDP only in its
//!   NAPI poll), where without a program they go straight to the stack's per-CPU backlog. Same
//!   HAProxy, same path, the veth's receive mode alone changed: what is left between it and
//!   xdplb is xdplb's;
//! - xdplb, native XDP, its agent running;
//! - the same data path with its agent stopped (SIGSTOP) for the run: no checks, sweep or status
//!   work on the cores, the XDP program alone;
//!
//! for each, p50/p90/p99, and the CPU time of the `ksoftirqd` threads per 1000 requests: softirq
//! work the kernel could not finish where it was raised and handed to a thread that waits for
//! the scheduler, which is what a tail made of scheduling delays looks like. And how contended the
//! two cores were during each run: the share of time some runnable task waited for a CPU (the
//! kernel's pressure stall information, `/proc/pressure/cpu`) and the share the hypervisor took
//! (steal, `/proc/stat`); then how well each ranks the runs' p99s (Spearman), over every run of
//! every way: a tail made by the machine, not by one way, follows them.
//!
//! Then 32 connections at a pace (`wrk -c32` with a script that waits `PACE_MS` after each
//! response before the next request): the same offered load for every way, below what each can
//! serve. Unpaced, `wrk -c32` is a closed loop: a way that serves more requests keeps more in
//! flight at each server at once (HAProxy holds some of the 32 itself), and the saturated cores
//! decide its p99.

use std::{collections::BTreeMap, fs};

use anyhow::{Context, Result};
use serde_json::json;

use super::{median, nginx_lab, start, stop, wrk_run, Args, Contender, Running, Wrk};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Way {
    Direct,
    Haproxy,
    HaproxyNapi,
    Xdplb,
    XdplbAgentStopped,
}

impl Way {
    const ALL: [Way; 5] = [Way::Direct, Way::Haproxy, Way::HaproxyNapi, Way::Xdplb, Way::XdplbAgentStopped];

    fn name(self) -> &'static str {
        match self {
            Way::Direct => "direct (client -> one nginx)",
            Way::Haproxy => "HAProxy 2.6, mode tcp",
            Way::HaproxyNapi => "HAProxy 2.6, mode tcp, its veth in NAPI mode (XDP_PASS)",
            Way::Xdplb => "xdplb, native XDP, agent running",
            Way::XdplbAgentStopped => "xdplb, native XDP, agent stopped (SIGSTOP)",
        }
    }

    fn contender(self) -> Contender {
        match self {
            Way::Direct => Contender::Direct,
            Way::Haproxy | Way::HaproxyNapi => Contender::Haproxy,
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

/// Cumulative CPU contention counters of the whole machine.
#[derive(Debug, Clone, Copy)]
struct Contention {
    /// `/proc/pressure/cpu`, `some total=`: microseconds during which a runnable task waited.
    stalled_us: u64,
    /// `/proc/stat`'s `cpu` line: steal and all ticks (every field).
    steal_ticks: u64,
    all_ticks: u64,
}

impl Contention {
    fn now() -> Contention {
        let psi = fs::read_to_string("/proc/pressure/cpu").unwrap_or_default();
        let stalled_us = psi
            .lines()
            .find(|l| l.starts_with("some "))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> =
            stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        // user .. steal: guest time is already inside user and nice.
        Contention {
            stalled_us,
            steal_ticks: ticks.get(7).copied().unwrap_or(0),
            all_ticks: ticks.iter().take(8).sum(),
        }
    }

    /// Since `self`, over `wall`: (% of the time a task waited for a CPU, % of CPU time stolen).
    fn since(self, wall: std::time::Duration) -> (f64, f64) {
        let later = Contention::now();
        // A reading that failed (0) or went backwards gives 0, not a wrapped delta.
        let stalled = later.stalled_us.saturating_sub(self.stalled_us) as f64 / wall.as_micros().max(1) as f64 * 100.0;
        let all = later.all_ticks.saturating_sub(self.all_ticks).max(1) as f64;
        (stalled, later.steal_ticks.saturating_sub(self.steal_ticks) as f64 / all * 100.0)
    }
}

/// Each value's rank among `v` (0-based; ties get their average rank).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        (i..=j).for_each(|k| r[order[k]] = (i + j) as f64 / 2.0);
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation of `pairs`; `None` with fewer than two pairs or a side that never
/// varies (steal on bare metal).
fn spearman(pairs: &[(f64, f64)]) -> Option<f64> {
    let x = ranks(&pairs.iter().map(|p| p.0).collect::<Vec<_>>());
    let y = ranks(&pairs.iter().map(|p| p.1).collect::<Vec<_>>());
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let var = |v: &[f64], m: f64| v.iter().map(|a| (a - m) * (a - m)).sum::<f64>();
    let spread = var(&x, mx) * var(&y, my);
    (pairs.len() >= 2 && spread > 0.0).then(|| cov / spread.sqrt())
}

fn shown(rho: Option<f64>) -> String {
    rho.map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}"))
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Sample {
    wrk: Wrk,
    /// ksoftirqd CPU ms per 1000 requests.
    ksoftirqd_ms_per_1k: f64,
    /// During the ping-pong run: % of the time a runnable task waited for a CPU, % stolen.
    cpu_stalled_pct: f64,
    steal_pct: f64,
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
            if way == Way::HaproxyNapi {
                if let Err(e) = lab.lb_ifaces.iter().try_for_each(|i| integration::xdp_pass::attach(&lab.lb, i)) {
                    stop(running, &lab);
                    detach_pass(&lab);
                    return Err(e.context("an XDP_PASS program on the balancer's veth"));
                }
            }
            let url = match way {
                Way::Direct => format!("http://{}:80/", lab.backends[0].addr),
                _ => format!("http://{}:80/", lab.vip),
            };
            let (k0, c0, t0) = (ksoftirqd_ticks(), Contention::now(), std::time::Instant::now());
            let w = wrk_run(&lab.client, &url, seconds, false, 1, None);
            let k = ksoftirqd_ticks().saturating_sub(k0);
            let (cpu_stalled_pct, steal_pct) = c0.since(t0.elapsed());
            let paced = wrk_run(&lab.client, &url, seconds, false, PACED_CONNS, Some(&pace));
            if let Some(pid) = paused {
                nix_signal(pid, libc::SIGCONT);
            }
            if way == Way::HaproxyNapi {
                detach_pass(&lab);
            }
            stop(running, &lab);
            let w = w.with_context(|| way.name())?;
            let paced = paced.with_context(|| format!("{}, paced", way.name()))?;
            let requests = (w.rps * f64::from(seconds)).max(1.0);
            samples.entry(way).or_default().push(Sample {
                wrk: w,
                ksoftirqd_ms_per_1k: k as f64 * 10.0 / requests * 1000.0,
                cpu_stalled_pct,
                steal_pct,
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
    println!(
        "| way | req/s | p50 us | p90 us | p99 us | p99 vs direct | ksoftirqd ms/1k req | CPU stalled % | steal % | p99 ~ steal (rho) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut out = serde_json::Map::new();
    for way in Way::ALL {
        let p99 = med(way, &|s| s.wrk.p99_us);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {p99:.0} | {:.2}x | {:.2} | {:.1} | {:.1} | {} |",
            way.name(),
            med(way, &|s| s.wrk.rps),
            med(way, &|s| s.wrk.p50_us),
            med(way, &|s| s.wrk.p90_us),
            p99 / direct_p99,
            med(way, &|s| s.ksoftirqd_ms_per_1k),
            med(way, &|s| s.cpu_stalled_pct),
            med(way, &|s| s.steal_pct),
            shown(spearman(&samples[&way].iter().map(|s| (s.steal_pct, s.wrk.p99_us)).collect::<Vec<_>>())),
        );
        out.insert(way.name().to_string(), json!({ "rounds": samples[&way] }));
    }
    // Within each way, so that the ways' own differences neither make nor hide it: each run
    // ranked among its way's runs, pooled.
    let within = |f: &dyn Fn(&Sample) -> f64| {
        let pairs: Vec<(f64, f64)> = samples
            .values()
            .flat_map(|runs| {
                let x = ranks(&runs.iter().map(f).collect::<Vec<_>>());
                let y = ranks(&runs.iter().map(|s| s.wrk.p99_us).collect::<Vec<_>>());
                x.into_iter().zip(y)
            })
            .collect();
        shown(spearman(&pairs))
    };
    println!(
        "\nEvery ping-pong run ({}), ranked within its way: Spearman's rank correlation of its p99 with the CPU stalled share {}, with steal {}, with its p50 {}.",
        samples.values().map(Vec::len).sum::<usize>(),
        within(&|s| s.cpu_stalled_pct),
        within(&|s| s.steal_pct),
        within(&|s| s.wrk.p50_us),
    );
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

/// Takes the XDP_PASS program off the balancer's links (nothing to do where none is).
fn detach_pass(lab: &integration::lab::Lab) {
    for i in &lab.lb_ifaces {
        let _ = lab.lb.ip(&["link", "set", "dev", i, "xdpdrv", "off"]);
    }
}

fn nix_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this benchmark started.
    unsafe { libc::kill(pid as i32, sig) };
}

#[cfg(test)]
mod tests {
    use super::spearman;

    #[test]
    fn rank_correlation_follows_order_not_scale() {
        let rising = [(1.0, 10.0), (2.0, 400.0), (3.0, 401.0), (50.0, 9000.0)];
        assert!((spearman(&rising).unwrap() - 1.0).abs() < 1e-9);
        let falling: Vec<(f64, f64)> = rising.iter().map(|&(a, b)| (a, -b)).collect();
        assert!((spearman(&falling).unwrap() + 1.0).abs() < 1e-9);
        // Ties share their rank: x's two 2.0s against y's order.
        let tied = [(1.0, 1.0), (2.0, 2.0), (2.0, 3.0), (3.0, 4.0)];
        assert!((spearman(&tied).unwrap() - 0.9486832980505138).abs() < 1e-9, "{:?}", spearman(&tied));
        // Nothing to rank: no steal on bare metal, one run, none.
        assert_eq!(spearman(&[(0.0, 1.0), (0.0, 5.0), (0.0, 2.0)]), None);
        assert_eq!(spearman(&[(1.0, 1.0)]), None);
        assert_eq!(spearman(&[]), None);
    }
}
