//! The status page: HAProxy's stats page look, so operators read it at a glance.

use std::fmt::Write as _;

use super::{
    format::{fmt_rate, human_bytes, human_time, last_check_text, VERIFY_NONE_WARNING},
    snapshot::{BackendStatus, FrontendStatus, ServerState, ServerStatus, Snapshot},
};

/// Row colours of HAProxy's stats page: CSS class, active colour, backup colour (lighter),
/// legend text.
const STATE_STYLES: [(ServerState, &str, &str, &str, &str); 7] = [
    (ServerState::Up, "s-up", "#c0ffc0", "#e0ffe0", "UP"),
    (ServerState::GoingDown, "s-goingdown", "#ffffa0", "#ffffd0", "UP, going down"),
    (ServerState::GoingUp, "s-goingup", "#ffd020", "#ffe890", "DOWN, going up"),
    (ServerState::Down, "s-down", "#ff9090", "#ffc8c8", "DOWN"),
    (ServerState::Maint, "s-maint", "#c07820", "#e0bc90", "MAINT (no flows, no checks)"),
    (ServerState::Drain, "s-drain", "#b0d0ff", "#d8e8ff", "DRAIN (no new flows)"),
    (ServerState::NoCheck, "s-nocheck", "#ffffff", "#ffffff", "not checked"),
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
        let _ = write!(c, ".{class}{{background:{act}}}.{class}-bck{{background:{bck}}}");
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
            let _ = writeln!(h, "<tr><td class=\"l\">{}</td><td>{n}</td></tr>", esc(reason));
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
        let _ = writeln!(h, "<p class=\"warn\">&#9888; {}: {}</p>", esc(&b.name), VERIFY_NONE_WARNING);
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
    let obs: u64 = b.servers.iter().map(|v| v.observed_errors).fold(0, u64::saturating_add);
    let wght: u64 = b.servers.iter().filter(|v| !v.backup && v.state.takes_flows()).map(|v| u64::from(v.weight)).sum();
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
        Some(c) => (esc(&last_check_text(c)), format!(" title=\"{}\"", esc(&c.description))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample::{snapshot, WEIRD};
    /// The class of the `<tr>` holding a server's name cell.
    fn class_of_row<'a>(html: &'a str, escaped_name: &str) -> &'a str {
        let cell = format!(">{escaped_name}</td>");
        let at = html.find(&cell).unwrap_or_else(|| panic!("no cell for {escaped_name}"));
        let tr = html[..at].rfind("<tr class=\"").expect("row start");
        let rest = &html[tr + "<tr class=\"".len()..];
        &rest[..rest.find('"').expect("class end")]
    }

    #[test]
    fn html_page() {
        let h = html(&snapshot());
        assert!(h.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        for name in ["app1", "app2", "app3", "cp1", "cp3", "cp2&lt;&amp;&quot;&gt;"] {
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
            assert!(h.contains(&format!(".{class}{{background:{colour}}}")), "{class} colour");
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
}
