//! Renders a [`Snapshot`] three ways: the HTML status page (HAProxy's stats page look, so
//! operators read it at a glance), the Prometheus `/metrics` text (HAProxy exporter names, so
//! existing dashboards keep working) and the `xdplb status` terminal table. Pure functions.

use std::fmt::Write as _;

use crate::snapshot::{
    BackendStatus, CheckView, FrontendStatus, ServerState, ServerStatus, Snapshot,
};

const VERIFY_NONE_WARNING: &str = "TLS checks do not verify the server certificate (verify none)";

// ---------------------------------------------------------------------------------------------
// Shared formatting

/// HAProxy's way of showing a duration: the two largest units, `2d3h`, `1h2m`, `5m3s`, `12s`.
fn human_time(s: u64) -> String {
    let (d, h, m, sec) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// Binary units with one decimal: `512 B`, `1.5 KiB`, `3.2 GiB`.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut i = 0;
    // 1023.95 would print as "1024.0": roll over to the next unit instead.
    while v >= 1023.95 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// Flows per second: integers when large or whole, one decimal otherwise.
fn fmt_rate(r: f64) -> String {
    // A rate from a clock step can be NaN or negative: show it as idle, not as garbage.
    if !r.is_finite() || r <= 0.0 {
        return "0".to_string();
    }
    if r >= 100.0 || r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        let s = format!("{r:.1}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    }
}

/// `L7OK/200 in 2ms`, as in HAProxy's LastChk column.
fn last_check_text(c: &CheckView) -> String {
    let mut s = c.code.clone();
    if let Some(st) = c.http_status {
        let _ = write!(s, "/{st}");
    }
    let _ = write!(s, " in {}ms", c.duration_ms);
    s
}

// ---------------------------------------------------------------------------------------------
// HTML

/// Row colours of HAProxy's stats page: CSS class, active colour, backup colour (lighter),
/// legend text.
const STATE_STYLES: [(ServerState, &str, &str, &str, &str); 7] = [
    (ServerState::Up, "s-up", "#c0ffc0", "#e0ffe0", "UP"),
    (
        ServerState::GoingDown,
        "s-goingdown",
        "#ffffa0",
        "#ffffd0",
        "UP, going down",
    ),
    (
        ServerState::GoingUp,
        "s-goingup",
        "#ffd020",
        "#ffe890",
        "DOWN, going up",
    ),
    (ServerState::Down, "s-down", "#ff9090", "#ffc8c8", "DOWN"),
    (
        ServerState::Maint,
        "s-maint",
        "#c07820",
        "#e0bc90",
        "MAINT (no flows, no checks)",
    ),
    (
        ServerState::Drain,
        "s-drain",
        "#b0d0ff",
        "#d8e8ff",
        "DRAIN (no new flows)",
    ),
    (
        ServerState::NoCheck,
        "s-nocheck",
        "#ffffff",
        "#ffffff",
        "not checked",
    ),
];

fn state_style(st: ServerState) -> (&'static str, &'static str, &'static str, &'static str) {
    STATE_STYLES
        .iter()
        .find(|(s, ..)| *s == st)
        .map(|&(_, class, act, bck, legend)| (class, act, bck, legend))
        // Every state is in the table; this arm only keeps the function total.
        .unwrap_or(("s-nocheck", "#ffffff", "#ffffff", "not checked"))
}

fn row_class(st: ServerState, backup: bool) -> String {
    let (class, ..) = state_style(st);
    if backup {
        format!("{class}-bck")
    } else {
        class.to_string()
    }
}

/// Escapes text and attribute values alike: names come from the config and the network.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn css() -> String {
    let mut c = String::from(
        "body{font-family:arial,helvetica,sans-serif;font-size:12px;color:#000;background:#fff}\
         h1{font-size:xx-large;margin:0 0 .3em 0}\
         h1 span{font-size:medium;font-weight:normal}\
         h2{font-size:large;margin:.8em 0 .3em 0}\
         table{border-collapse:collapse;font-size:12px}\
         table.px{margin-bottom:1.2em}\
         table.px th,table.px td{border:1px solid #808080;padding:1px 5px;white-space:nowrap}\
         table.px td{text-align:right}\
         table.px td.l{text-align:left}\
         tr.title th{background:#b00040;color:#ffff40;text-align:left;font-size:13px}\
         tr.title th span.ck{color:#fff;font-weight:normal}\
         tr.hdr th{background:#20d0d0;color:#000}\
         tr.frontend,tr.total{background:#e8e8d0}\
         tr.total td{font-weight:bold}\
         p.warn{margin:.2em 0;padding:2px 6px;background:#ffe0e0;border:1px solid #b00040;\
         color:#b00040;font-weight:bold;display:inline-block}\
         table.info td{vertical-align:top;padding-right:2em}\
         table.legend td{border:1px solid #808080;padding:1px 6px}\
         span.sw{display:inline-block;width:1.5em;border:1px solid #808080}\n",
    );
    for (_, class, act, bck, _) in STATE_STYLES {
        let _ = write!(
            c,
            ".{class}{{background:{act}}}.{class}-bck{{background:{bck}}}"
        );
    }
    c.push('\n');
    c
}

/// The status page. Self-contained (inline CSS, no script, no external resources) and
/// refreshing itself every 5 s like HAProxy's `stats refresh`.
pub fn html(s: &Snapshot) -> String {
    let mut h = String::with_capacity(16 * 1024);
    h.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n");
    h.push_str("<meta http-equiv=\"refresh\" content=\"5\">\n");
    h.push_str("<title>xdplb statistics report</title>\n<style>\n");
    h.push_str(&css());
    h.push_str("</style></head><body>\n");
    let _ = writeln!(
        h,
        "<h1>xdplb <span>version {}</span></h1>\n<h2>Statistics report for pid {}</h2>",
        esc(&s.version),
        s.pid
    );
    html_general(&mut h, s);
    for f in &s.frontends {
        html_frontend(&mut h, f);
    }
    for b in &s.backends {
        html_backend(&mut h, b);
    }
    html_legend(&mut h);
    h.push_str("</body></html>\n");
    h
}

fn html_general(h: &mut String, s: &Snapshot) {
    h.push_str("<table class=\"info\"><tr><td>\n");
    let _ = writeln!(
        h,
        "<p><b>pid = </b>{}<br><b>uptime = </b>{}<br><b>version = </b>{}</p>",
        s.pid,
        human_time(s.uptime_s),
        esc(&s.version)
    );
    h.push_str("<p><b>interfaces (XDP mode):</b><br>");
    if s.interfaces.is_empty() {
        h.push_str("none");
    }
    for (i, iface) in s.interfaces.iter().enumerate() {
        if i > 0 {
            h.push_str("<br>");
        }
        h.push_str(&esc(iface));
    }
    h.push_str("</p>\n</td><td>\n");
    if !s.reasons.is_empty() {
        h.push_str("<table class=\"px\"><tr class=\"hdr\"><th>Packets</th><th>Total</th></tr>\n");
        for (reason, n) in &s.reasons {
            let _ = writeln!(
                h,
                "<tr><td class=\"l\">{}</td><td>{n}</td></tr>",
                esc(reason)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</td></tr></table>\n");
}

fn html_frontend(h: &mut String, f: &FrontendStatus) {
    h.push_str("<table class=\"px\">\n");
    let _ = writeln!(
        h,
        "<tr class=\"title\"><th colspan=\"8\">{} <span class=\"ck\">frontend</span></th></tr>",
        esc(&f.name)
    );
    h.push_str(
        "<tr class=\"hdr\"><th></th><th>Bind</th><th>Backend</th><th>Rate</th>\
         <th>Total</th><th>Cur</th><th>Bytes In</th><th>Bytes Out</th></tr>\n",
    );
    let t = &f.traffic;
    let _ = writeln!(
        h,
        "<tr class=\"frontend\"><td class=\"l\">Frontend</td><td class=\"l\">{}</td>\
         <td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td title=\"{} bytes\">{}</td><td title=\"{} bytes\">{}</td></tr>",
        esc(&f.bind),
        esc(&f.backend),
        fmt_rate(t.new_flows_per_s),
        t.total_flows,
        f.active_flows,
        t.bytes_in,
        human_bytes(t.bytes_in),
        t.bytes_out,
        human_bytes(t.bytes_out),
    );
    h.push_str("</table>\n");
}

const BACKEND_COLS: usize = 15;

fn html_backend(h: &mut String, b: &BackendStatus) {
    if b.verify_none {
        let _ = writeln!(
            h,
            "<p class=\"warn\">&#9888; {}: {}</p>",
            esc(&b.name),
            VERIFY_NONE_WARNING
        );
    }
    h.push_str("<table class=\"px\">\n");
    let _ = writeln!(
        h,
        "<tr class=\"title\"><th colspan=\"{BACKEND_COLS}\">{} <span class=\"ck\">backend \
         &mdash; <b>{}</b>, {} active, {} backup UP &mdash; check: {}</span></th></tr>",
        esc(&b.name),
        esc(&b.status),
        b.active_up,
        b.backup_up,
        esc(&b.check),
    );
    h.push_str(
        "<tr class=\"hdr\"><th rowspan=\"2\">Name</th><th colspan=\"3\">Flows</th>\
         <th colspan=\"2\">Bytes</th><th>Errors</th><th colspan=\"8\">Server</th></tr>\n\
         <tr class=\"hdr\"><th>Cur</th><th>Rate</th><th>Total</th><th>In</th><th>Out</th>\
         <th title=\"SYNs answered by RST or never answered\">Obs</th>\
         <th>Status</th><th>LastChk</th><th>Wght</th><th>Act</th><th>Bck</th>\
         <th title=\"failed checks\">Chk</th><th title=\"UP to DOWN transitions\">Dwn</th>\
         <th title=\"total downtime\">Dwntme</th></tr>\n",
    );
    for sv in &b.servers {
        html_server(h, sv);
    }
    // The total row, like HAProxy's "Backend" line.
    let t = &b.traffic;
    let obs: u64 = b
        .servers
        .iter()
        .map(|v| v.observed_errors)
        .fold(0, u64::saturating_add);
    let wght: u64 = b
        .servers
        .iter()
        .filter(|v| !v.backup && v.state.takes_flows())
        .map(|v| u64::from(v.weight))
        .sum();
    let status_class = if b.status == "UP" { "s-up" } else { "s-down" };
    let _ = writeln!(
        h,
        "<tr class=\"total\"><td class=\"l\">Backend</td><td>{}</td><td>{}</td><td>{}</td>\
         <td title=\"{} bytes\">{}</td><td title=\"{} bytes\">{}</td><td>{obs}</td>\
         <td class=\"l {status_class}\">{}</td><td></td><td>{wght}</td><td>{}</td><td>{}</td>\
         <td></td><td></td><td>{}</td></tr>",
        b.active_flows,
        fmt_rate(t.new_flows_per_s),
        t.total_flows,
        t.bytes_in,
        human_bytes(t.bytes_in),
        t.bytes_out,
        human_bytes(t.bytes_out),
        esc(&b.status),
        b.active_up,
        b.backup_up,
        human_time(b.downtime_s),
    );
    h.push_str("</table>\n");
}

fn html_server(h: &mut String, v: &ServerStatus) {
    let t = &v.traffic;
    let (chk, chk_title) = match &v.last_check {
        Some(c) => (
            esc(&last_check_text(c)),
            format!(" title=\"{}\"", esc(&c.description)),
        ),
        None => (String::new(), String::new()),
    };
    let yes = |b: bool| if b { "Y" } else { "-" };
    let _ = writeln!(
        h,
        "<tr class=\"{}\"><td class=\"l\" title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td title=\"{} bytes\">{}</td><td title=\"{} bytes\">{}</td><td>{}</td>\
         <td class=\"l\">{} {}</td><td class=\"l\"{chk_title}>{chk}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        row_class(v.state, v.backup),
        esc(&v.address),
        esc(&v.name),
        v.active_flows,
        fmt_rate(t.new_flows_per_s),
        t.total_flows,
        t.bytes_in,
        human_bytes(t.bytes_in),
        t.bytes_out,
        human_bytes(t.bytes_out),
        v.observed_errors,
        human_time(v.since_s),
        esc(&v.status),
        v.weight,
        yes(!v.backup),
        yes(v.backup),
        v.check_failures,
        v.down_transitions,
        human_time(v.downtime_s),
    );
}

fn html_legend(h: &mut String) {
    h.push_str("<h2>Legend</h2>\n<table class=\"legend\">\n");
    for (state, class, _, _, text) in STATE_STYLES {
        let _ = writeln!(
            h,
            "<tr><td class=\"{class}\">active</td><td class=\"{}\">backup</td><td>{text}</td></tr>",
            row_class(state, true)
        );
    }
    h.push_str("</table>\n");
    let _ = writeln!(
        h,
        "<p>Status shows the time in the current state, then the state; \
         <code>UP x/y</code> and <code>DOWN x/y</code> count checks towards fall/rise. \
         LastChk's tooltip gives the check's description.</p>"
    );
}

// ---------------------------------------------------------------------------------------------
// Prometheus

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
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", esc_label(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// One family: HELP and TYPE once, then all its series, so the exposition stays valid.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, String)>,
) {
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

    family(
        &mut o,
        "xdplb_uptime_seconds",
        GAUGE,
        "Seconds since the agent started.",
        [(String::new(), n(s.uptime_s))],
    );

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
        be.iter().map(|b| {
            (
                bl(b),
                (if b.status == "UP" { "1" } else { "0" }).to_string(),
            )
        }),
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
    let servers = || {
        be.iter()
            .flat_map(|b| b.servers.iter().map(move |v| (b, v)))
    };
    let sl =
        |b: &BackendStatus, v: &ServerStatus| labels(&[("proxy", &b.name), ("server", &v.name)]);
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
        s.reasons
            .iter()
            .map(|(r, c)| (labels(&[("reason", r)]), n(*c))),
    );
    o
}

// ---------------------------------------------------------------------------------------------
// Terminal table

/// Control characters in a name could move the cursor or recolour the terminal: show them as `?`.
fn term(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    // An empty cell would break the column layout for the eye: show a dash.
    if t.is_empty() {
        "-".to_string()
    } else {
        t
    }
}

/// A table's header row.
fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|h| h.to_string()).collect()
}

/// Left-aligned columns, two spaces apart, widths from the widest cell.
fn grid(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            let pad = width[i].saturating_sub(c.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// `xdplb status` for a terminal: plain text, no colours.
pub fn table(s: &Snapshot) -> String {
    let mut o = String::new();
    let ifaces = if s.interfaces.is_empty() {
        "none".to_string()
    } else {
        term(&s.interfaces.join(", "))
    };
    let _ = writeln!(
        o,
        "xdplb {}  pid {}  uptime {}  interfaces: {}",
        term(&s.version),
        s.pid,
        human_time(s.uptime_s),
        ifaces
    );
    for b in &s.backends {
        o.push('\n');
        let _ = writeln!(
            o,
            "backend {}  {}  {} active, {} backup UP  check: {}",
            term(&b.name),
            term(&b.status),
            b.active_up,
            b.backup_up,
            term(&b.check)
        );
        if b.verify_none {
            let _ = writeln!(o, "WARNING: {VERIFY_NONE_WARNING}");
        }
        let mut rows = vec![header(&[
            "NAME",
            "ADDRESS",
            "STATUS",
            "LAST CHECK",
            "WEIGHT",
            "ACT/BCK",
            "CUR",
            "TOTAL",
            "RATE",
            "CHKFAIL",
            "DOWNS",
        ])];
        for v in &b.servers {
            rows.push(vec![
                term(&v.name),
                term(&v.address),
                format!("{} ({})", term(&v.status), human_time(v.since_s)),
                v.last_check
                    .as_ref()
                    .map(|c| term(&last_check_text(c)))
                    .unwrap_or_else(|| "-".into()),
                v.weight.to_string(),
                (if v.backup { "bck" } else { "act" }).to_string(),
                v.active_flows.to_string(),
                v.traffic.total_flows.to_string(),
                fmt_rate(v.traffic.new_flows_per_s),
                v.check_failures.to_string(),
                v.down_transitions.to_string(),
            ]);
        }
        grid(&mut o, &rows);
    }
    if !s.frontends.is_empty() {
        o.push_str("\nfrontends\n");
        let mut rows = vec![header(&[
            "NAME",
            "BIND",
            "BACKEND",
            "CUR",
            "TOTAL",
            "RATE",
            "BYTES IN",
            "BYTES OUT",
        ])];
        for f in &s.frontends {
            rows.push(vec![
                term(&f.name),
                term(&f.bind),
                term(&f.backend),
                f.active_flows.to_string(),
                f.traffic.total_flows.to_string(),
                fmt_rate(f.traffic.new_flows_per_s),
                human_bytes(f.traffic.bytes_in),
                human_bytes(f.traffic.bytes_out),
            ]);
        }
        grid(&mut o, &rows);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::sample::{check, traffic};
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    #[allow(clippy::too_many_arguments)]
    fn server(
        name: &str,
        addr: &str,
        state: ServerState,
        status: &str,
        since: u64,
        last: Option<CheckView>,
        backup: bool,
    ) -> ServerStatus {
        ServerStatus {
            name: name.into(),
            address: addr.into(),
            state,
            status: status.into(),
            since_s: since,
            last_check: last,
            weight: 1,
            backup,
            check_failures: 3,
            down_transitions: 1,
            downtime_s: 42,
            active_flows: 7,
            traffic: traffic(1234, 2.5, 5_000_000, 70_000),
            observed_errors: 2,
        }
    }

    const WEIRD: &str = "cp2<&\">";

    fn snapshot() -> Snapshot {
        let etcd = BackendStatus {
            name: "etcd-cluster".into(),
            status: "UP".into(),
            servers: vec![
                server(
                    "app1",
                    "10.0.0.1:2379",
                    ServerState::Up,
                    "UP",
                    3723,
                    check("L7OK", Some(200), 2, "Layer7 check passed: OK"),
                    false,
                ),
                server(
                    "app2",
                    "10.0.0.2:2379",
                    ServerState::GoingDown,
                    "UP 1/3",
                    303,
                    check("L7STS", Some(503), 3, "Layer7 wrong status"),
                    false,
                ),
                server(
                    "app3",
                    "10.0.0.3:2379",
                    ServerState::Down,
                    "DOWN",
                    12,
                    check("L6TOUT", None, 2001, "Layer6 timeout"),
                    false,
                ),
            ],
            active_up: 2,
            backup_up: 0,
            traffic: traffic(5000, 12.0, 9_000_000, 8_000_000),
            active_flows: 30,
            downtime_s: 0,
            check: "https GET /health expect 200 + \"true\"".into(),
            verify_none: true,
        };
        let api = BackendStatus {
            name: "apiserver-cluster".into(),
            status: "UP".into(),
            servers: vec![
                server(
                    "cp1",
                    "10.0.1.1:6443",
                    ServerState::Drain,
                    "DRAIN",
                    60,
                    check("L7OK", Some(200), 5, "Layer7 check passed: <OK> & \"fine\""),
                    false,
                ),
                server(
                    WEIRD,
                    "10.0.1.2:6443",
                    ServerState::Maint,
                    "MAINT",
                    86_400 * 2 + 3600,
                    None,
                    false,
                ),
                server(
                    "cp3",
                    "10.0.1.3:6443",
                    ServerState::Up,
                    "UP",
                    99,
                    check("L6OK", None, 4, "Layer6 check passed"),
                    true,
                ),
            ],
            active_up: 0,
            backup_up: 1,
            traffic: traffic(800, 0.3, 1_000, 2_000),
            active_flows: 4,
            downtime_s: 17,
            check: "https GET /readyz expect 200".into(),
            verify_none: true,
        };
        Snapshot {
            version: "0.1.0".into(),
            uptime_s: 93_784,
            pid: 4242,
            interfaces: vec!["eth0:native".into(), "eth1:generic".into()],
            frontends: vec![
                FrontendStatus {
                    name: "in-etcd".into(),
                    bind: "*:12379".into(),
                    backend: "etcd-cluster".into(),
                    traffic: traffic(5000, 12.0, 9_000_000, 8_000_000),
                    active_flows: 30,
                },
                FrontendStatus {
                    name: "in-apiserver".into(),
                    bind: "*:16443".into(),
                    backend: "apiserver-cluster".into(),
                    traffic: traffic(800, 0.3, 1_000, 2_000),
                    active_flows: 4,
                },
            ],
            backends: vec![etcd, api],
            reasons: vec![
                ("passed".into(), 100),
                ("forwarded".into(), 5000),
                ("dropped".into(), 3),
            ],
        }
    }

    /// The class of the `<tr>` holding a server's name cell.
    fn class_of_row<'a>(html: &'a str, escaped_name: &str) -> &'a str {
        let cell = format!(">{escaped_name}</td>");
        let at = html
            .find(&cell)
            .unwrap_or_else(|| panic!("no cell for {escaped_name}"));
        let tr = html[..at].rfind("<tr class=\"").expect("row start");
        let rest = &html[tr + "<tr class=\"".len()..];
        &rest[..rest.find('"').expect("class end")]
    }

    #[test]
    fn formats() {
        assert_eq!(human_time(12), "12s");
        assert_eq!(human_time(303), "5m3s");
        assert_eq!(human_time(3723), "1h2m");
        assert_eq!(human_time(93_784), "1d2h");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(fmt_rate(f64::NAN), "0");
        assert_eq!(fmt_rate(2.5), "2.5");
        assert_eq!(fmt_rate(12.0), "12");
    }

    #[test]
    fn html_page() {
        let h = html(&snapshot());
        assert!(h.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        for name in [
            "app1",
            "app2",
            "app3",
            "cp1",
            "cp3",
            "cp2&lt;&amp;&quot;&gt;",
        ] {
            assert!(h.contains(&format!(">{name}</td>")), "{name} missing");
        }
        assert!(h.contains("L7OK/200 in 2ms"));
        assert!(h.contains("title=\"Layer7 check passed: OK\""));
        assert!(h.contains("L6TOUT in 2001ms"));
        assert!(h.contains("5m3s UP 1/3"));
        assert!(h.contains(VERIFY_NONE_WARNING));
        // Each state's row class, and that class's colour in the CSS.
        for (name, class, colour) in [
            ("app1", "s-up", "#c0ffc0"),
            ("app2", "s-goingdown", "#ffffa0"),
            ("app3", "s-down", "#ff9090"),
            ("cp1", "s-drain", "#b0d0ff"),
            ("cp2&lt;&amp;&quot;&gt;", "s-maint", "#c07820"),
            ("cp3", "s-up-bck", "#e0ffe0"),
        ] {
            assert_eq!(class_of_row(&h, name), class, "{name}");
            assert!(
                h.contains(&format!(".{class}{{background:{colour}}}")),
                "{class} colour"
            );
        }
        for colour in ["#ffd020", "#ffffff"] {
            assert!(h.contains(colour), "{colour} missing from the legend CSS");
        }
        assert!(h.contains("Legend"));
        // No raw markup from the data, and nothing fetched from elsewhere.
        assert!(!h.contains(WEIRD));
        assert!(!h.contains("<OK>"));
        assert!(!h.contains("\"true\""));
        assert!(!h.contains("<script") && !h.contains("http://") && !h.contains("https://"));
        assert!(!h.contains(" src=") && !h.contains("<link"));
    }

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
        assert!(p.contains(
            "haproxy_server_status{proxy=\"etcd-cluster\",server=\"app3\",state=\"DOWN\"} 1\n"
        ));
        assert!(p.contains(
            "haproxy_server_status{proxy=\"etcd-cluster\",server=\"app3\",state=\"UP\"} 0\n"
        ));
        assert!(p.contains(
            "haproxy_server_status{proxy=\"etcd-cluster\",server=\"app2\",state=\"UP\"} 1\n"
        ));
        assert!(p.contains("haproxy_server_check_status{proxy=\"etcd-cluster\",server=\"app3\",state=\"L6TOUT\"} 1\n"));
        assert!(p.contains(
            "haproxy_server_check_duration_seconds{proxy=\"etcd-cluster\",server=\"app1\"} 0.002\n"
        ));
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
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write to promtool");
        let out = child.wait_with_output().expect("promtool output");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "promtool failed ({}):\n{report}\n--- input:\n{text}",
            out.status
        );
        assert!(report.trim().is_empty(), "promtool warnings:\n{report}");
    }

    #[test]
    fn prometheus_passes_promtool() {
        promtool_check(&prometheus(&snapshot()));
        // Families without series (a fresh agent) must still be valid.
        promtool_check(&prometheus(&Snapshot::default()));
    }

    /// Column starts of a header: a non-space after two spaces (headers have single spaces only).
    fn column_starts(header: &str) -> Vec<usize> {
        let b = header.as_bytes();
        (0..b.len())
            .filter(|&i| {
                b[i] != b' ' && (i == 0 || (i >= 2 && b[i - 1] == b' ' && b[i - 2] == b' '))
            })
            .collect()
    }

    fn assert_block_aligned(block: &[&str], ncols: usize) {
        let starts = column_starts(block[0]);
        assert_eq!(starts.len(), ncols, "header {:?}", block[0]);
        for row in &block[1..] {
            let b = row.as_bytes();
            for &s in &starts {
                assert!(
                    s < b.len() && b[s] != b' ',
                    "column at {s} empty in {row:?}"
                );
                assert!(
                    s == 0 || b[s - 1] == b' ',
                    "column at {s} not aligned in {row:?}"
                );
            }
        }
    }

    #[test]
    fn terminal_table() {
        let t = table(&snapshot());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("xdplb 0.1.0  pid 4242  uptime 1d2h"));
        assert!(
            t.contains("backend etcd-cluster  UP  2 active, 0 backup UP  check: https GET /health")
        );
        assert_eq!(t.matches(VERIFY_NONE_WARNING).count(), 2);
        assert!(t.contains("L7OK/200 in 2ms") && t.contains("UP 1/3 (5m3s)"));
        assert!(!t.contains('\x1b'));
        let mut blocks = 0;
        for (i, l) in lines.iter().enumerate() {
            let ncols = if l.starts_with("NAME ") && l.contains("  ADDRESS") {
                11
            } else if l.starts_with("NAME ") && l.contains("  BIND") {
                8
            } else {
                continue;
            };
            let end = lines[i..]
                .iter()
                .position(|l| l.is_empty())
                .map_or(lines.len(), |p| i + p);
            let block = &lines[i..end];
            assert!(block.len() > 1);
            assert_block_aligned(block, ncols);
            blocks += 1;
        }
        assert_eq!(blocks, 3);
    }
}
