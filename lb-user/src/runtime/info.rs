//! `show info`: HAProxy's `Name: value` lines.

use std::fmt::Write as _;

use super::stat::rate;
use crate::report::snapshot::Snapshot;

// show info

/// `show info`: HAProxy's `Name: value` lines, in HAProxy's order, limited to the fields xdplb
/// can fill plus every field `hatop` requires (it refuses to start when one is missing).
pub fn show_info(s: &Snapshot, node: &str) -> String {
    let curr_conns: u64 = s.frontends.iter().map(|f| f.active_flows).sum();
    let cum_conns: u64 = s.frontends.iter().map(|f| f.traffic.total_flows).sum();
    let conn_rate: u64 = s.frontends.iter().map(|f| rate(&f.traffic)).sum();
    let version = one_line(&s.version);
    let node = match one_line(node) {
        n if !n.is_empty() => n,
        _ => "xdplb".to_string(),
    };
    // The XDP program runs on every CPU: that is what HAProxy's thread count stands for.
    let nbthread = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let up = s.uptime_s;

    let mut out = String::new();
    let mut line = |name: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{name}: {value}");
    };
    line("Name", &"xdplb");
    // hatop reads Version, Release_date, node and description as non-empty words.
    line("Version", &if version.is_empty() { "unknown" } else { version.as_str() });
    line("Release_date", &"-");
    line("Nbthread", &nbthread);
    line("Nbproc", &1);
    line("Process_num", &1);
    line("Pid", &s.pid);
    // HAProxy's "%ud %uh%02um%02us".
    let uptime = format!("{}d {}h{:02}m{:02}s", up / 86_400, up / 3_600 % 24, up / 60 % 60, up % 60);
    line("Uptime", &uptime);
    line("Uptime_sec", &up);
    // No connection limit and no pipes in an XDP data path; hatop needs the lines anyway.
    line("Maxconn", &0);
    line("CurrConns", &curr_conns);
    line("CumConns", &cum_conns);
    line("Maxpipes", &0);
    line("PipesUsed", &0);
    line("PipesFree", &0);
    line("ConnRate", &conn_rate);
    // In TCP mode every connection is one session.
    line("SessRate", &conn_rate);
    line("Tasks", &0);
    line("Run_queue", &0);
    line("Idle_pct", &100);
    line("node", &node);
    line("description", &"xdplb XDP TCP load balancer");
    out.push('\n');
    out
}

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
        assert!(out.ends_with("\n\n"));
        // Without a node name, the host's name or "xdplb".
        assert!(!show_info(&snapshot(), "").contains("node: \n"));
    }
}
