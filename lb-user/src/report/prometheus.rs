//! `/metrics`: the Prometheus text format with HAProxy's exporter names, so existing dashboards
//! keep working.

use std::fmt::Write as _;

use super::snapshot::{BackendStatus, FrontendStatus, ServerState, ServerStatus, Snapshot};

const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";

/// States of HAProxy's exporter `haproxy_server_status`, one series each.
const PROM_SERVER_STATES: [&str; 5] = ["DOWN", "UP", "MAINT", "DRAIN", "NOLB"];

/// HAProxy has no "going up/down" or "no check" state in the exporter: report what the server
/// does with new flows.
fn prom_state(st: ServerState) -> &'static str {
    match st {
        ServerState::Up | ServerState::GoingDown | ServerState::NoCheck => "UP",
        ServerState::Down | ServerState::GoingUp => "DOWN",
        ServerState::Maint => "MAINT",
        ServerState::Drain => "DRAIN",
    }
}

/// Label value escaping of the text format 0.0.4: backslash, double quote, newline.
fn esc_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", esc_label(v))).collect();
    format!("{{{}}}", body.join(","))
}

/// One family: HELP and TYPE once, then all its series, so the exposition stays valid.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl IntoIterator<Item = (String, String)>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (l, v) in samples {
        let _ = writeln!(out, "{name}{l} {v}");
    }
}

/// `/metrics` in the Prometheus text exposition format 0.0.4.
pub fn prometheus(s: &Snapshot) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let n = |v: u64| v.to_string();

    family(&mut o, "xdplb_uptime_seconds", GAUGE, "Seconds since the agent started.", [(String::new(), n(s.uptime_s))]);

    // Frontends.
    let fl = |f: &FrontendStatus| labels(&[("proxy", &f.name)]);
    let fe = &s.frontends;
    family(
        &mut o,
        "haproxy_frontend_current_sessions",
        GAUGE,
        "Current number of active flows.",
        fe.iter().map(|f| (fl(f), n(f.active_flows))),
    );
    family(
        &mut o,
        "haproxy_frontend_sessions_total",
        COUNTER,
        "Total number of flows.",
        fe.iter().map(|f| (fl(f), n(f.traffic.total_flows))),
    );
    family(
        &mut o,
        "haproxy_frontend_bytes_in_total",
        COUNTER,
        "Current total of incoming bytes.",
        fe.iter().map(|f| (fl(f), n(f.traffic.bytes_in))),
    );
    family(
        &mut o,
        "haproxy_frontend_bytes_out_total",
        COUNTER,
        "Current total of outgoing bytes.",
        fe.iter().map(|f| (fl(f), n(f.traffic.bytes_out))),
    );

    // Backends.
    let bl = |b: &BackendStatus| labels(&[("proxy", &b.name)]);
    let be = &s.backends;
    family(
        &mut o,
        "haproxy_backend_status",
        GAUGE,
        "Current status of the service (1 UP, 0 DOWN).",
        be.iter().map(|b| (bl(b), (if b.status == "UP" { "1" } else { "0" }).to_string())),
    );
    family(
        &mut o,
        "haproxy_backend_active_servers",
        GAUGE,
        "Current number of active servers UP.",
        be.iter().map(|b| (bl(b), b.active_up.to_string())),
    );
    family(
        &mut o,
        "haproxy_backend_backup_servers",
        GAUGE,
        "Current number of backup servers UP.",
        be.iter().map(|b| (bl(b), b.backup_up.to_string())),
    );
    family(
        &mut o,
        "haproxy_backend_current_sessions",
        GAUGE,
        "Current number of active flows.",
        be.iter().map(|b| (bl(b), n(b.active_flows))),
    );
    family(
        &mut o,
        "haproxy_backend_sessions_total",
        COUNTER,
        "Total number of flows.",
        be.iter().map(|b| (bl(b), n(b.traffic.total_flows))),
    );
    family(
        &mut o,
        "haproxy_backend_bytes_in_total",
        COUNTER,
        "Current total of incoming bytes.",
        be.iter().map(|b| (bl(b), n(b.traffic.bytes_in))),
    );
    family(
        &mut o,
        "haproxy_backend_bytes_out_total",
        COUNTER,
        "Current total of outgoing bytes.",
        be.iter().map(|b| (bl(b), n(b.traffic.bytes_out))),
    );
    family(
        &mut o,
        "haproxy_backend_downtime_seconds_total",
        COUNTER,
        "Total downtime (in seconds) for the service.",
        be.iter().map(|b| (bl(b), n(b.downtime_s))),
    );

    // Servers.
    let servers = || be.iter().flat_map(|b| b.servers.iter().map(move |v| (b, v)));
    let sl = |b: &BackendStatus, v: &ServerStatus| labels(&[("proxy", &b.name), ("server", &v.name)]);
    family(
        &mut o,
        "haproxy_server_status",
        GAUGE,
        "Current status of the server (one series per state, 1 for the current one).",
        servers().flat_map(|(b, v)| {
            let cur = prom_state(v.state);
            PROM_SERVER_STATES.iter().map(move |st| {
                let l = labels(&[("proxy", &b.name), ("server", &v.name), ("state", st)]);
                (l, (if *st == cur { "1" } else { "0" }).to_string())
            })
        }),
    );
    family(
        &mut o,
        "haproxy_server_weight",
        GAUGE,
        "Service weight.",
        servers().map(|(b, v)| (sl(b, v), v.weight.to_string())),
    );
    family(
        &mut o,
        "haproxy_server_current_sessions",
        GAUGE,
        "Current number of active flows.",
        servers().map(|(b, v)| (sl(b, v), n(v.active_flows))),
    );
    family(
        &mut o,
        "haproxy_server_sessions_total",
        COUNTER,
        "Total number of flows.",
        servers().map(|(b, v)| (sl(b, v), n(v.traffic.total_flows))),
    );
    family(
        &mut o,
        "haproxy_server_bytes_in_total",
        COUNTER,
        "Current total of incoming bytes.",
        servers().map(|(b, v)| (sl(b, v), n(v.traffic.bytes_in))),
    );
    family(
        &mut o,
        "haproxy_server_bytes_out_total",
        COUNTER,
        "Current total of outgoing bytes.",
        servers().map(|(b, v)| (sl(b, v), n(v.traffic.bytes_out))),
    );
    family(
        &mut o,
        "haproxy_server_check_failures_total",
        COUNTER,
        "Total number of failed individual health checks.",
        servers().map(|(b, v)| (sl(b, v), n(v.check_failures))),
    );
    family(
        &mut o,
        "haproxy_server_check_up_down_total",
        COUNTER,
        "Total number of failed checks causing UP to DOWN server transitions.",
        servers().map(|(b, v)| (sl(b, v), n(v.down_transitions))),
    );
    family(
        &mut o,
        "haproxy_server_downtime_seconds_total",
        COUNTER,
        "Total downtime (in seconds) for the service.",
        servers().map(|(b, v)| (sl(b, v), n(v.downtime_s))),
    );
    family(
        &mut o,
        "haproxy_server_check_duration_seconds",
        GAUGE,
        "Previously run health check duration, in seconds.",
        servers().filter_map(|(b, v)| {
            let c = v.last_check.as_ref()?;
            Some((sl(b, v), format!("{}", c.duration_ms as f64 / 1000.0)))
        }),
    );
    family(
        &mut o,
        "haproxy_server_check_status",
        GAUGE,
        "Status of last health check (the state label is the check code).",
        servers().filter_map(|(b, v)| {
            let c = v.last_check.as_ref()?;
            let l = labels(&[("proxy", &b.name), ("server", &v.name), ("state", &c.code)]);
            Some((l, "1".to_string()))
        }),
    );
    family(
        &mut o,
        "xdplb_server_observed_errors_total",
        COUNTER,
        "SYNs to the server answered by RST or never answered.",
        servers().map(|(b, v)| (sl(b, v), n(v.observed_errors))),
    );

    family(
        &mut o,
        "xdplb_packets_total",
        COUNTER,
        "Packets seen by the XDP program, by verdict reason.",
        s.reasons.iter().map(|(r, c)| (labels(&[("reason", r)]), n(*c))),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use crate::report::sample::snapshot;
    fn families(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn prometheus_families() {
        let p = prometheus(&snapshot());
        let fams = families(&p);
        for want in [
            "xdplb_uptime_seconds",
            "haproxy_frontend_current_sessions",
            "haproxy_frontend_sessions_total",
            "haproxy_frontend_bytes_in_total",
            "haproxy_frontend_bytes_out_total",
            "haproxy_backend_status",
            "haproxy_backend_active_servers",
            "haproxy_backend_backup_servers",
            "haproxy_backend_current_sessions",
            "haproxy_backend_sessions_total",
            "haproxy_backend_bytes_in_total",
            "haproxy_backend_bytes_out_total",
            "haproxy_backend_downtime_seconds_total",
            "haproxy_server_status",
            "haproxy_server_weight",
            "haproxy_server_current_sessions",
            "haproxy_server_sessions_total",
            "haproxy_server_bytes_in_total",
            "haproxy_server_bytes_out_total",
            "haproxy_server_check_failures_total",
            "haproxy_server_check_up_down_total",
            "haproxy_server_downtime_seconds_total",
            "haproxy_server_check_duration_seconds",
            "haproxy_server_check_status",
            "xdplb_server_observed_errors_total",
            "xdplb_packets_total",
        ] {
            assert!(fams.iter().any(|f| f == want), "{want} missing");
        }
        for f in &fams {
            assert_eq!(p.matches(&format!("# HELP {f} ")).count(), 1, "HELP {f}");
            assert_eq!(p.matches(&format!("# TYPE {f} ")).count(), 1, "TYPE {f}");
        }
        // Every sample sits under its own family's header.
        let mut current = String::new();
        for l in p.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                current = rest.split_whitespace().next().unwrap_or("").to_string();
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap_or("");
                assert_eq!(name, current, "{l}");
            }
        }
        assert!(p.contains("haproxy_server_status{proxy=\"etcd-cluster\",server=\"app3\",state=\"DOWN\"} 1\n"));
        assert!(p.contains("haproxy_server_status{proxy=\"etcd-cluster\",server=\"app3\",state=\"UP\"} 0\n"));
        assert!(p.contains("haproxy_server_status{proxy=\"etcd-cluster\",server=\"app2\",state=\"UP\"} 1\n"));
        assert!(p.contains("haproxy_server_check_status{proxy=\"etcd-cluster\",server=\"app3\",state=\"L6TOUT\"} 1\n"));
        assert!(p.contains("haproxy_server_check_duration_seconds{proxy=\"etcd-cluster\",server=\"app1\"} 0.002\n"));
        assert!(p.contains("server=\"cp2<&\\\">\""));
        assert!(p.contains("xdplb_packets_total{reason=\"forwarded\"} 5000\n"));
        assert_eq!(esc_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    fn promtool_check(text: &str) {
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot run promtool ({e}): install the Debian package `prometheus` \
                 (apt-get install prometheus), which provides /usr/bin/promtool"
            ),
        };
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
        let out = child.wait_with_output().expect("promtool output");
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool failed ({}):\n{report}\n--- input:\n{text}", out.status);
        assert!(report.trim().is_empty(), "promtool warnings:\n{report}");
    }

    #[test]
    fn prometheus_passes_promtool() {
        promtool_check(&prometheus(&snapshot()));
        // Families without series (a fresh agent) must still be valid.
        promtool_check(&prometheus(&Snapshot::default()));
    }
}
