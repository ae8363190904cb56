//! `show info`: HAProxy's `Name: value` lines.

use std::fmt::Write as _;

use super::stat::rate;
use crate::report::snapshot::Snapshot;

// show info

/// `show info`: HAProxy 2.6's `Name: value` lines, every one of them in HAProxy's order (scripts
/// and `hatop` look fields up by name, some refuse to start when one is missing). Fields xdplb
/// fills: identity, uptime, connection counts and rate, listeners, bytes out, start time. The
/// others (memory pools, SSL, compression, pipes, peers, limits xdplb does not have) read 0, as
/// HAProxy prints them when they do not apply.
pub fn show_info(s: &Snapshot, node: &str) -> String {
    let curr_conns: u64 = s.frontends.iter().map(|f| f.active_flows).sum();
    let cum_conns: u64 = s.frontends.iter().map(|f| f.traffic.total_flows).sum();
    let conn_rate: u64 = s.frontends.iter().map(|f| rate(&f.traffic)).sum();
    let bytes_out: u64 = s.frontends.iter().map(|f| f.traffic.bytes_out).sum();
    let version = match one_line(&s.version) {
        v if v.is_empty() => "unknown".to_string(),
        v => v,
    };
    let node = match one_line(node) {
        n if !n.is_empty() => n,
        _ => "xdplb".to_string(),
    };
    // The XDP program runs on every CPU: that is what HAProxy's thread count stands for.
    let nbthread = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let up = s.uptime_s;
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft);
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(up);

    let uptime = format!("{}d {}h{:02}m{:02}s", up / 86_400, up / 3_600 % 24, up / 60 % 60, up % 60);
    let mut out = String::new();
    for name in HAPROXY_26_INFO {
        let value = match name {
            "Name" => "xdplb".to_string(),
            // hatop reads Version, Release_date, node and description as non-empty words.
            "Version" | "Build info" => version.clone(),
            "Release_date" => "-".to_string(),
            "Nbthread" => nbthread.to_string(),
            "Nbproc" | "Process_num" => "1".to_string(),
            "Pid" => s.pid.to_string(),
            // HAProxy's "%ud %uh%02um%02us".
            "Uptime" => uptime.clone(),
            "Uptime_sec" => up.to_string(),
            "Ulimit-n" | "Maxsock" => nofile.to_string(),
            "CurrConns" => curr_conns.to_string(),
            "CumConns" => cum_conns.to_string(),
            // In TCP mode every connection is one session.
            "ConnRate" | "SessRate" => conn_rate.to_string(),
            "Idle_pct" => "100".to_string(),
            "node" => node.clone(),
            "description" => "xdplb XDP TCP load balancer".to_string(),
            "Listeners" => s.frontends.len().to_string(),
            "TotalBytesOut" => bytes_out.to_string(),
            "Start_time_sec" => start.to_string(),
            // No connection limit (the connection table's size bounds flows), no requests
            // (HTTP's), no memory pools, SSL, compression, pipes, peers or tasks.
            _ => "0".to_string(),
        };
        let _ = writeln!(out, "{name}: {value}");
    }
    out.push('\n');
    out
}

/// `show info` of HAProxy 2.6.12 (Debian 12), field names in order. HAProxy prints
/// `description` only when one is configured, xdplb always (hatop needs it).
#[rustfmt::skip]
const HAPROXY_26_INFO: [&str; 70] = [
    "Name", "Version", "Release_date", "Nbthread", "Nbproc", "Process_num", "Pid", "Uptime", "Uptime_sec",
    "Memmax_MB", "PoolAlloc_MB", "PoolUsed_MB", "PoolFailed", "Ulimit-n", "Maxsock", "Maxconn", "Hard_maxconn",
    "CurrConns", "CumConns", "CumReq", "MaxSslConns", "CurrSslConns", "CumSslConns", "Maxpipes", "PipesUsed",
    "PipesFree", "ConnRate", "ConnRateLimit", "MaxConnRate", "SessRate", "SessRateLimit", "MaxSessRate",
    "SslRate", "SslRateLimit", "MaxSslRate", "SslFrontendKeyRate", "SslFrontendMaxKeyRate",
    "SslFrontendSessionReuse_pct", "SslBackendKeyRate", "SslBackendMaxKeyRate", "SslCacheLookups",
    "SslCacheMisses", "CompressBpsIn", "CompressBpsOut", "CompressBpsRateLim", "Tasks", "Run_queue", "Idle_pct",
    "node", "description", "Stopping", "Jobs", "Unstoppable Jobs", "Listeners", "ActivePeers", "ConnectedPeers",
    "DroppedLogs", "BusyPolling", "FailedResolutions", "TotalBytesOut", "TotalSplicdedBytesOut", "BytesOutRate",
    "DebugCommandsIssued", "CumRecvLogs", "Build info", "Memmax_bytes", "PoolAlloc_bytes", "PoolUsed_bytes",
    "Start_time_sec", "Tainted",
];

/// A value on one line: line breaks would start a bogus `Name: value` pair.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::sample::snapshot;

    #[test]
    fn show_info_fields() {
        let out = show_info(&snapshot(), "lb-1");
        for want in [
            "Name: xdplb\n",
            "Version: 0.3.0\n",
            "Pid: 4242\n",
            "Uptime: 0d 0h01m05s\n",
            "Uptime_sec: 65\n",
            "CurrConns: 10\n",
            "CumConns: 150\n",
            "Idle_pct: 100\n",
            "node: lb-1\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        // hatop stops when one of these is missing or empty.
        for key in [
            "Name",
            "Version",
            "Release_date",
            "Nbproc",
            "Process_num",
            "Pid",
            "Uptime",
            "Maxconn",
            "CurrConns",
            "Maxpipes",
            "PipesUsed",
            "Tasks",
            "Run_queue",
            "node",
            "description",
        ] {
            let line = out.lines().find(|l| l.starts_with(&format!("{key}: ")));
            assert!(line.is_some_and(|l| l.len() > key.len() + 2), "{key} in\n{out}");
        }
        // HAProxy's order for the fields we emit.
        let pos = |k: &str| out.find(&format!("\n{k}: ")).unwrap_or(usize::MAX);
        assert!(pos("Nbthread") < pos("Pid") && pos("Pid") < pos("Uptime_sec"));
        assert!(pos("CurrConns") < pos("CumConns") && pos("Idle_pct") < pos("node"));
        // Every field HAProxy 2.6 prints (Debian's 2.6.12), in its order.
        let names: Vec<&str> = out.lines().filter_map(|l| l.split_once(": ").map(|(k, _)| k)).collect();
        assert_eq!(names, HAPROXY_26_INFO.to_vec());
        assert_eq!(names.len(), 70);
        assert!(out.contains("Listeners: 2\n") && out.contains("TotalBytesOut: "), "{out}");
        assert!(out.ends_with("\n\n"));
        // Without a node name, the host's name or "xdplb".
        assert!(!show_info(&snapshot(), "").contains("node: \n"));
    }
}
