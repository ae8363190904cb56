//! `ha`: two balancers behind a keepalived VIP, HAProxy 2.6 beside xdplb in one run, in the
//! same lab (`integration::ha`): watch-like TLS streams and a stream of new connections through
//! the VIP, then the master fails (keepalived SIGKILLed and the VIP taken off it, or its link
//! down). Per contender and failure: streams that survived, new connections that failed, how
//! long after the VIP moved the first new connection was served. And the cost of the flow
//! sync: new connections per second and keep-alive requests per second through one xdplb with
//! and without a peer attached, side by side.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context, Result};
use integration::ha::{self, Balancers, Failure, Pair, XdplbOpts, HTTP_PORT};
use serde_json::json;

use super::{nginx, wrk, Args};

const STREAMS: usize = 20;

fn name(b: &Balancers) -> &'static str {
    match b {
        Balancers::Haproxy => "HAProxy 2.6 + keepalived",
        Balancers::Xdplb { .. } => "xdplb + keepalived (flow sync)",
    }
}

fn failures(args: &Args) -> &'static [Failure] {
    if args.quick {
        &[Failure::KeepalivedKilled]
    } else {
        &[Failure::KeepalivedKilled, Failure::LinkDown]
    }
}

pub fn bench(args: &Args) -> Result<serde_json::Value> {
    println!(
        "\n### Two balancers, one VIP (keepalived, VRRPv3 advert {} s): {STREAMS} watch-like TLS streams and new connections through the VIP; the master fails\n",
        ha::ADVERT_S
    );
    println!("| failure | contender | streams that survived | new connections failed | VIP moved after | first new connection served after the move |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut out = serde_json::Map::new();
    for &how in failures(args) {
        for b in [Balancers::Haproxy, Balancers::xdplb()] {
            eprintln!("ha: {how:?} / {}", name(&b));
            let mut pair = Pair::start(&b).with_context(|| format!("starting {}", name(&b)))?;
            let r = ha::failover(&mut pair, how, STREAMS, Duration::from_secs(4))
                .with_context(|| format!("{how:?} / {}", name(&b)))?;
            println!(
                "| {how:?} | {} | {} of {} | {} of {} | {:.2} s | {} |",
                name(&b),
                r.survived(),
                r.streams.len(),
                r.failed(),
                r.after().len(),
                r.vrrp().as_secs_f64(),
                r.served().map_or("never".into(), |d| format!("{:.3} s", d.as_secs_f64()))
            );
            out.insert(
                format!("{how:?} / {}", name(&b)),
                json!({
                    "survived": r.survived(), "streams": r.streams.len(), "failed": r.failed(),
                    "attempts": r.after().len(), "vrrp_s": r.vrrp().as_secs_f64(),
                    "served_s": r.served().map(|d| d.as_secs_f64()),
                }),
            );
        }
    }
    out.insert("sync_cost".into(), sync_cost(args)?);
    Ok(serde_json::Value::Object(out))
}

/// wrk through the VIP on the first balancer with xdplb, a peer attached or not: new
/// connections per second (`Connection: close`: each one is a flow opened, sent to the peer,
/// and closed, sent again) and keep-alive requests per second.
fn sync_cost(args: &Args) -> Result<serde_json::Value> {
    println!(
        "\n### The flow sync's cost: wrk through one xdplb (native XDP), a peer attached or not, rounds alternating\n"
    );
    println!("| traffic | without a peer | with a peer | ratio |");
    println!("|---|---:|---:|---:|");
    let mut figures = serde_json::Map::new();
    let url = format!("http://{}:{HTTP_PORT}/", integration::lab::HA_VIP);
    // Rates by (Connection: close, with a peer); one pair of balancers serves both kinds of
    // traffic in a round (starting two agents and keepalived is most of a round's time).
    let mut rates: HashMap<(bool, bool), Vec<f64>> = HashMap::new();
    for round in 0..args.rounds {
        for sync in [false, true] {
            let pair = Pair::start(&Balancers::Xdplb(XdplbOpts { sync, http: true, ..XdplbOpts::default() }))?;
            for b in &pair.lab.backends {
                nginx(&b.ns, &pair.dir.join(format!("nginx-{}", b.name)))?;
            }
            // The checks (inter 500 ms, rise 1) see nginx up.
            std::thread::sleep(Duration::from_millis(1500));
            // Taking turns at going first: the one after runs while the first one's closed flows
            // are still being swept.
            let order = if round % 2 == 0 { [true, false] } else { [false, true] };
            for close in order {
                let (rate, _, _) = wrk(&pair.lab.client, &url, args.seconds, close)?;
                rates.entry((close, sync)).or_default().push(rate);
            }
        }
    }
    for close in [true, false] {
        let mut take = |sync| super::median(rates.remove(&(close, sync)).unwrap_or_default());
        let (a, p) = (take(false), take(true));
        let what = if close { "new connections/s (Connection: close)" } else { "requests/s (keep-alive)" };
        println!("| {what} | {a:.0} | {p:.0} | {:.3}x |", p / a);
        figures.insert(what.into(), json!({"alone": a, "with_peer": p, "ratio": p / a}));
    }
    Ok(serde_json::Value::Object(figures))
}
