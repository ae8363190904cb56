//! `/metrics`: the Prometheus text format with HAProxy's exporter names, so existing dashboards
//! keep working. Every metric is declared once, in a table per subject (the agent, frontends,
//! backends, servers) with its name, kind and help; one encoder writes them all.

use std::fmt::{self, Write as _};

use super::snapshot::{BackendState, BackendStatus, FrontendStatus, ServerState, ServerStatus, Snapshot, Traffic};

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// How a metric's samples come out of one subject.
enum Samples<T> {
    /// One sample.
    Count(fn(&T) -> u64),
    /// One sample in seconds, or none (no check has run yet).
    Seconds(fn(&T) -> Option<f64>),
    /// Several samples, told apart by one more label.
    ByLabel(&'static str, fn(&T) -> Vec<(String, u64)>),
}

struct Metric<T> {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: Samples<T>,
}

const fn metric<T>(name: &'static str, kind: Kind, help: &'static str, samples: Samples<T>) -> Metric<T> {
    Metric { name, kind, help, samples }
}

use Kind::{Counter, Gauge};
use Samples::{ByLabel, Count, Seconds};

/// What frontends, backends and servers all count: open flows and their traffic.
trait Flows {
    fn active_flows(&self) -> u64;
    fn traffic(&self) -> &Traffic;
}

macro_rules! flows {
    ($($t:ty),*) => {$(
        impl Flows for $t {
            fn active_flows(&self) -> u64 {
                self.active_flows
            }
            fn traffic(&self) -> &Traffic {
                &self.traffic
            }
        }
    )*};
}
flows!(FrontendStatus, BackendStatus, ServerStatus);

/// The flow metrics each kind of subject has, under its own names (the last is xdplb's own).
const fn flow_metrics<T: Flows>(names: [&'static str; 5]) -> [Metric<T>; 5] {
    [
        metric(names[0], Gauge, "Current number of active flows.", Count(Flows::active_flows)),
        metric(names[1], Counter, "Total number of flows.", Count(|t| t.traffic().total_flows)),
        metric(names[2], Counter, "Current total of incoming bytes.", Count(|t| t.traffic().bytes_in)),
        metric(names[3], Counter, "Current total of outgoing bytes.", Count(|t| t.traffic().bytes_out)),
        metric(
            names[4],
            Counter,
            "Of the total flows, connections from processes on the balancer host (connect hook).",
            Count(|t| t.traffic().local_flows),
        ),
    ]
}

/// A family of one series per state, HAProxy's exporter's shape since 2.4 (`state="UP"` 1, the
/// others 0): queries on one state match whatever the current one is.
fn per_state(states: &[&str], current: &str) -> Vec<(String, u64)> {
    states.iter().map(|st| ((*st).to_owned(), u64::from(*st == current))).collect()
}

/// HAProxy's exporter's frontend and backend states.
const PROXY_STATES: [&str; 2] = ["DOWN", "UP"];

/// How many of a backend's servers are in each of HAProxy's server states.
fn servers_by_state(b: &BackendStatus) -> Vec<(String, u64)> {
    SERVER_STATES
        .iter()
        .map(|st| ((*st).to_owned(), b.servers.iter().filter(|v| v.state.flow_word() == *st).count() as u64))
        .collect()
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

const AGENT: [&[Metric<Snapshot>]; 1] = [&[
    metric("xdplb_uptime_seconds", Gauge, "Seconds since the agent started.", Count(|s| s.uptime_s)),
    metric(
        "haproxy_process_nbthread",
        Gauge,
        "CPUs the XDP program runs on (HAProxy: started threads).",
        Count(|_| std::thread::available_parallelism().map_or(1, |n| n.get() as u64)),
    ),
    metric("haproxy_process_nbproc", Gauge, "Number of processes: one agent.", Count(|_| 1)),
    metric("haproxy_process_relative_process_id", Gauge, "Relative process id: one agent.", Count(|_| 1)),
    metric(
        "haproxy_process_max_fds",
        Gauge,
        "Maximum number of open file descriptors.",
        Count(|_| {
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
        }),
    ),
    metric(
        "haproxy_process_uptime_seconds",
        Gauge,
        "How long ago the agent was started (seconds).",
        Count(|s| s.uptime_s),
    ),
    metric(
        "haproxy_process_start_time_seconds",
        Gauge,
        "Start time in seconds.",
        Count(|s| now_s().saturating_sub(s.uptime_s)),
    ),
    metric(
        "haproxy_process_current_connections",
        Gauge,
        "Current number of open flows.",
        Count(|s| s.frontends.iter().map(|f| f.active_flows).sum()),
    ),
    metric(
        "haproxy_process_connections_total",
        Counter,
        "Total number of flows since the agent started.",
        Count(|s| s.frontends.iter().map(|f| f.traffic.total_flows).sum()),
    ),
    metric("haproxy_process_listeners", Gauge, "Current number of frontends.", Count(|s| s.frontends.len() as u64)),
    metric(
        "haproxy_process_bytes_out_total",
        Counter,
        "Total number of bytes sent to clients since the agent started.",
        Count(|s| s.frontends.iter().map(|f| f.traffic.bytes_out).sum()),
    ),
    metric("haproxy_process_build_info", Gauge, "Build info.", ByLabel("version", |s| vec![(s.version.clone(), 1)])),
]];

const FRONTEND: [&[Metric<FrontendStatus>]; 2] = [
    &flow_metrics([
        "haproxy_frontend_current_sessions",
        "haproxy_frontend_sessions_total",
        "haproxy_frontend_bytes_in_total",
        "haproxy_frontend_bytes_out_total",
        "xdplb_frontend_local_connections_total",
    ]),
    &[
        // A frontend is served while the agent runs (its keys are in the data path's map).
        metric(
            "haproxy_frontend_status",
            Gauge,
            "Current status of the service, per state label value.",
            ByLabel("state", |_| per_state(&PROXY_STATES, "UP")),
        ),
        metric(
            "haproxy_frontend_connections_total",
            Counter,
            "Total number of new connections accepted on this frontend.",
            Count(|f| f.traffic.total_flows),
        ),
        metric(
            "haproxy_frontend_denied_connections_total",
            Counter,
            "Total number of incoming connections blocked on a listener (xdplb: SYNs refused by the allow list).",
            Count(|f| f.denied),
        ),
    ],
];

const BACKEND: [&[Metric<BackendStatus>]; 3] = [
    &[
        metric(
            "haproxy_backend_status",
            Gauge,
            "Current status of the service, per state label value.",
            ByLabel("state", |b| per_state(&PROXY_STATES, if b.status == BackendState::Up { "UP" } else { "DOWN" })),
        ),
        metric("haproxy_backend_weight", Gauge, "Sum of the weights of the servers taking flows.", Count(|b| b.weight)),
        metric(
            "haproxy_backend_uweight",
            Gauge,
            "Sum of the user weights of the servers taking flows.",
            Count(|b| b.weight),
        ),
        metric(
            "haproxy_backend_agg_server_status",
            Gauge,
            "Backend's aggregated gauge of servers' status.",
            ByLabel("state", servers_by_state),
        ),
        // HAProxy 2.6 keeps the deprecated name beside it, with the same series.
        metric(
            "haproxy_backend_agg_server_check_status",
            Gauge,
            "Backend's aggregated gauge of servers' state check status.",
            ByLabel("state", servers_by_state),
        ),
        metric(
            "haproxy_backend_agg_check_status",
            Gauge,
            "Backend's aggregated gauge of servers' last check status.",
            ByLabel("state", |b| {
                CHECK_STATES
                    .iter()
                    .map(|st| {
                        let n =
                            b.servers.iter().filter(|v| v.last_check.as_ref().is_some_and(|c| c.code.name() == *st));
                        ((*st).to_owned(), n.count() as u64)
                    })
                    .collect()
            }),
        ),
        metric(
            "haproxy_backend_active_servers",
            Gauge,
            "Current number of active servers UP.",
            Count(|b| b.active_up.into()),
        ),
        metric(
            "haproxy_backend_backup_servers",
            Gauge,
            "Current number of backup servers UP.",
            Count(|b| b.backup_up.into()),
        ),
    ],
    &flow_metrics([
        "haproxy_backend_current_sessions",
        "haproxy_backend_sessions_total",
        "haproxy_backend_bytes_in_total",
        "haproxy_backend_bytes_out_total",
        "xdplb_backend_local_connections_total",
    ]),
    &[
        metric(
            "haproxy_backend_downtime_seconds_total",
            Counter,
            "Total downtime (in seconds) for the service.",
            Count(|b| b.downtime_s),
        ),
        metric(
            "haproxy_backend_loadbalanced_total",
            Counter,
            "Total number of flows given a server by load balancing.",
            Count(|b| b.traffic.total_flows),
        ),
        metric(
            "haproxy_backend_connection_errors_total",
            Counter,
            "Total number of failed connections to servers (SYNs refused or never answered).",
            Count(|b| b.servers.iter().map(|v| v.observed_errors).sum()),
        ),
    ],
];

/// States of HAProxy's exporter `haproxy_server_status`, one series each; a server is in the
/// one its flow word names (HAProxy has none for going up or down, nor for unchecked servers).
const SERVER_STATES: [&str; 5] = ["DOWN", "UP", "MAINT", "DRAIN", "NOLB"];

/// HAProxy's exporter's check states (`haproxy_server_check_status`), in its order; xdplb's
/// checks end in some of them (`health::check::Code`).
const CHECK_STATES: [&str; 16] = [
    "HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP", "L7OK", "L7OKC",
    "L7STS", "PROCERR", "PROCTOUT", "PROCOK",
];

const SERVER: [&[Metric<ServerStatus>]; 3] = [
    &[
        metric(
            "haproxy_server_status",
            Gauge,
            "Current status of the server (one series per state, 1 for the current one).",
            ByLabel("state", |v| per_state(&SERVER_STATES, v.state.flow_word())),
        ),
        metric("haproxy_server_weight", Gauge, "Server's effective weight.", Count(|v| v.weight.into())),
        metric("haproxy_server_uweight", Gauge, "Server's user weight.", Count(|v| v.weight.into())),
    ],
    &flow_metrics([
        "haproxy_server_current_sessions",
        "haproxy_server_sessions_total",
        "haproxy_server_bytes_in_total",
        "haproxy_server_bytes_out_total",
        "xdplb_server_local_connections_total",
    ]),
    &[
        metric(
            "haproxy_server_check_failures_total",
            Counter,
            "Total number of failed individual health checks.",
            Count(|v| v.check_failures),
        ),
        metric(
            "haproxy_server_check_up_down_total",
            Counter,
            "Total number of failed checks causing UP to DOWN server transitions.",
            Count(|v| v.down_transitions),
        ),
        metric(
            "haproxy_server_downtime_seconds_total",
            Counter,
            "Total downtime (in seconds) for the service.",
            Count(|v| v.downtime_s),
        ),
        metric(
            "haproxy_server_check_duration_seconds",
            Gauge,
            "Previously run health check duration, in seconds.",
            Seconds(|v| v.last_check.as_ref().map(|c| seconds(c.duration_ms))),
        ),
        metric(
            "haproxy_server_check_status",
            Gauge,
            "Status of last health check, per state label value.",
            ByLabel("state", |v| match (v.state, &v.last_check) {
                // HAProxy has the family for checked servers only; before a first result no
                // state is current.
                (ServerState::NoCheck, _) => Vec::new(),
                (_, c) => per_state(&CHECK_STATES, c.as_ref().map_or("", |c| c.code.name())),
            }),
        ),
        metric(
            "haproxy_server_check_code",
            Gauge,
            "layer5-7 code, if available of the last health check.",
            Count(|v| v.last_check.as_ref().and_then(|c| c.http_status).map_or(0, u64::from)),
        ),
        metric(
            "haproxy_server_check_last_change_seconds",
            Gauge,
            "How long ago the last server state changed, in seconds.",
            Count(|v| v.since_s),
        ),
        metric(
            "haproxy_server_connection_errors_total",
            Counter,
            "Total number of failed connections to server (SYNs refused or never answered).",
            Count(|v| v.observed_errors),
        ),
        metric(
            "haproxy_server_loadbalanced_total",
            Counter,
            "Total number of flows given the server by load balancing.",
            Count(|v| v.traffic.total_flows),
        ),
        metric(
            "xdplb_server_observed_errors_total",
            Counter,
            "SYNs to the server answered by RST or never answered.",
            Count(|v| v.observed_errors),
        ),
        metric(
            "xdplb_server_suspected",
            Gauge,
            "1 while the data path gives the server no new flow (refused or unanswered SYNs in a row) until a check passes.",
            Count(|v| u64::from(v.suspected)),
        ),
    ],
];

const PACKETS: [&[Metric<Snapshot>]; 1] = [&[
    metric(
        "xdplb_packets_total",
        Counter,
        "Packets seen by the XDP program, by verdict reason.",
        ByLabel("reason", |s| s.reasons.clone()),
    ),
    metric(
        "xdplb_events_total",
        Counter,
        "What the XDP program did besides verdicts: timestamp translation, NAT ports, TCP tracking.",
        ByLabel("event", |s| s.events.clone()),
    ),
    metric(
        "xdplb_frontend_address_changes_total",
        Counter,
        "Frontend addresses that came to or left this host (a keepalived VIP moving).",
        Count(|s| s.address_changes),
    ),
    metric(
        "xdplb_sync_total",
        Counter,
        "Flow sync with peer balancers: messages and flows sent, received, installed, dropped (by reason).",
        ByLabel("what", |s| s.sync.clone()),
    ),
    metric("xdplb_sync_peers_up", Gauge, "Peer balancers heard of in the last 3 s.", Count(|s| s.sync_peers_up)),
]];

#[expect(clippy::cast_precision_loss, reason = "one check's milliseconds are far below 2^52")]
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A subject's labels, e.g. `proxy` and `server`.
type Labels = Vec<(&'static str, String)>;

/// `/metrics` in the Prometheus text exposition format 0.0.4.
pub fn prometheus(s: &Snapshot) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let proxy = |name: &str| vec![("proxy", name.to_owned())];
    encode(&mut out, &AGENT, &[(Labels::new(), s)]);
    encode(&mut out, &FRONTEND, &s.frontends.iter().map(|f| (proxy(&f.name), f)).collect::<Vec<_>>());
    encode(&mut out, &BACKEND, &s.backends.iter().map(|b| (proxy(&b.name), b)).collect::<Vec<_>>());
    let servers: Vec<(Labels, &ServerStatus)> = s
        .backends
        .iter()
        .flat_map(|b| b.servers.iter().map(|v| (vec![("proxy", b.name.clone()), ("server", v.name.clone())], v)))
        .collect();
    encode(&mut out, &SERVER, &servers);
    encode(&mut out, &PACKETS, &[(Labels::new(), s)]);
    out
}

/// The one encoder: each metric's HELP and TYPE once, then its samples for every subject, so
/// that each family stays in one piece (a valid exposition).
fn encode<T>(out: &mut String, tables: &[&[Metric<T>]], subjects: &[(Labels, &T)]) {
    for m in tables.iter().flat_map(|t| t.iter()) {
        let kind = match m.kind {
            Counter => "counter",
            Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(out, "# TYPE {} {kind}", m.name);
        for (labels, subject) in subjects {
            match &m.samples {
                Count(value) => sample(out, m.name, labels, None, value(subject)),
                Seconds(value) => {
                    if let Some(v) = value(subject) {
                        sample(out, m.name, labels, None, v);
                    }
                }
                ByLabel(key, values) => {
                    for (label, v) in values(subject) {
                        sample(out, m.name, labels, Some((key, &label)), v);
                    }
                }
            }
        }
    }
}

/// One line: `name{k="v",...} value`, without braces when there is no label.
fn sample(out: &mut String, name: &str, labels: &Labels, extra: Option<(&str, &str)>, value: impl fmt::Display) {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(extra)
        .map(|(k, v)| format!("{k}=\"{}\"", esc_label(v)))
        .collect();
    if pairs.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{}}} {value}", pairs.join(","));
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
            "haproxy_frontend_denied_connections_total",
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
            "xdplb_server_suspected",
            "xdplb_frontend_local_connections_total",
            "xdplb_backend_local_connections_total",
            "xdplb_server_local_connections_total",
            "xdplb_packets_total",
            "xdplb_events_total",
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
        // HAProxy 2.4+'s per-state shapes: one series per state, the current one 1.
        assert!(p.contains("haproxy_backend_status{proxy=\"etcd-cluster\",state=\"UP\"} 1\n"));
        assert!(p.contains("haproxy_backend_status{proxy=\"etcd-cluster\",state=\"DOWN\"} 0\n"));
        assert!(p.contains("haproxy_frontend_status{proxy=\"in-etcd\",state=\"UP\"} 1\n"), "{p}");
        assert_eq!(p.matches("haproxy_server_check_status{proxy=\"etcd-cluster\",server=\"app3\",").count(), 16);
        assert!(p.contains("haproxy_server_check_status{proxy=\"etcd-cluster\",server=\"app3\",state=\"L7OK\"} 0\n"));
        assert!(p.contains("haproxy_backend_agg_server_status{proxy=\"etcd-cluster\",state=\"DOWN\"} 1\n"));
        assert!(p.contains("haproxy_backend_agg_server_status{proxy=\"etcd-cluster\",state=\"UP\"} 2\n"));
        assert!(p.contains("haproxy_server_check_last_change_seconds{proxy=\"etcd-cluster\",server=\"app1\"} "));
        assert!(p.contains("haproxy_server_connection_errors_total{proxy=\"etcd-cluster\",server=\"app1\"} "));
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
