//! The status page: HAProxy's stats page look, so operators read it at a glance. Written with
//! maud, which escapes every value it is given: names come from the config and the network.

use std::fmt::Write as _;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{
    format::{fmt_rate, human_bytes, human_time, last_check_text, VERIFY_NONE_WARNING},
    snapshot::{BackendState, BackendStatus, FrontendStatus, ServerState, ServerStatus, Snapshot},
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

fn row_class(st: ServerState, backup: bool) -> String {
    let class = STATE_STYLES.iter().find(|(s, ..)| *s == st).map_or("s-nocheck", |&(_, class, ..)| class);
    if backup {
        format!("{class}-bck")
    } else {
        class.to_string()
    }
}

const CSS: &str = "body{font-family:arial,helvetica,sans-serif;font-size:12px;color:#000;background:#fff}\
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
     span.sw{display:inline-block;width:1.5em;border:1px solid #808080}\n";

/// The style sheet: the fixed rules, then one colour pair per server state.
fn css() -> String {
    let mut c = String::from(CSS);
    for (_, class, act, bck, _) in STATE_STYLES {
        let _ = write!(c, ".{class}{{background:{act}}}.{class}-bck{{background:{bck}}}");
    }
    c.push('\n');
    c
}

/// The status page. Self-contained (inline CSS, no script, no external resources) and
/// refreshing itself every 5 s like HAProxy's `stats refresh`.
pub fn html(s: &Snapshot) -> String {
    html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="5";
                title { "xdplb statistics report" }
                style { (PreEscaped(css())) }
            }
            body {
                h1 { "xdplb " span { "version " (s.version) } }
                h2 { "Statistics report for pid " (s.pid) }
                (general(s))
                @for f in &s.frontends { (frontend(f)) }
                @for b in &s.backends { (backend(b)) }
                (legend())
            }
        }
    }
    .into_string()
}

fn general(s: &Snapshot) -> Markup {
    html! {
        table.info { tr {
            td {
                p {
                    b { "pid = " } (s.pid) br;
                    b { "uptime = " } (human_time(s.uptime_s)) br;
                    b { "version = " } (s.version)
                }
                p {
                    b { "interfaces (XDP mode):" } br;
                    @if s.interfaces.is_empty() { "none" }
                    @for (i, iface) in s.interfaces.iter().enumerate() {
                        @if i > 0 { br; }
                        (iface)
                    }
                }
            }
            td {
                @if !s.reasons.is_empty() {
                    table.px {
                        tr.hdr { th { "Packets" } th { "Total" } }
                        @for (reason, n) in &s.reasons { tr { td.l { (reason) } td { (n) } } }
                    }
                }
                @if !s.events.is_empty() {
                    table.px {
                        tr.hdr { th { "Events" } th { "Total" } }
                        @for (event, n) in &s.events { tr { td.l { (event) } td { (n) } } }
                    }
                }
            }
        } }
    }
}

/// A bytes cell: human units, the exact count in the tooltip.
fn bytes(n: u64) -> Markup {
    html! { td title=(format!("{n} bytes")) { (human_bytes(n)) } }
}

fn frontend(f: &FrontendStatus) -> Markup {
    let t = &f.traffic;
    html! {
        table.px {
            tr.title { th colspan="9" { (f.name) " " span.ck { "frontend" } } }
            tr.hdr {
                th {} th { "Bind" } th { "Backend" } th { "Rate" } th { "Total" }
                th title="of the total, connections from processes on this host" { "Local" } th { "Cur" }
                th { "Bytes In" } th { "Bytes Out" }
            }
            tr.frontend {
                td.l { "Frontend" } td.l { (f.bind) } td.l { (f.backend) } td { (fmt_rate(t.new_flows_per_s)) }
                td { (t.total_flows) } td { (t.local_flows) } td { (f.active_flows) } (bytes(t.bytes_in)) (bytes(t.bytes_out))
            }
        }
    }
}

fn backend(b: &BackendStatus) -> Markup {
    let t = &b.traffic;
    let observed = b.servers.iter().map(|v| v.observed_errors).fold(0, u64::saturating_add);
    let status_class = if b.status == BackendState::Up { "l s-up" } else { "l s-down" };
    html! {
        @if b.verify_none { p.warn { "\u{26a0} " (b.name) ": " (VERIFY_NONE_WARNING) } }
        table.px {
            tr.title { th colspan="16" {
                (b.name) " "
                span.ck {
                    "backend \u{2014} " b { (b.status) } ", " (b.active_up) " active, " (b.backup_up)
                    " backup UP \u{2014} check: " (b.check)
                }
            } }
            tr.hdr {
                th rowspan="2" { "Name" } th colspan="4" { "Flows" } th colspan="2" { "Bytes" } th { "Errors" }
                th colspan="8" { "Server" }
            }
            tr.hdr {
                th { "Cur" } th { "Rate" } th { "Total" }
                th title="of the total, connections from processes on this host" { "Local" } th { "In" } th { "Out" }
                th title="SYNs answered by RST or never answered" { "Obs" }
                th { "Status" } th { "LastChk" } th { "Wght" } th { "Act" } th { "Bck" }
                th title="failed checks" { "Chk" } th title="UP to DOWN transitions" { "Dwn" }
                th title="total downtime" { "Dwntme" }
            }
            @for v in &b.servers { (server(v)) }
            // The total row, like HAProxy's "Backend" line.
            tr.total {
                td.l { "Backend" } td { (b.active_flows) } td { (fmt_rate(t.new_flows_per_s)) } td { (t.total_flows) }
                td { (t.local_flows) }
                (bytes(t.bytes_in)) (bytes(t.bytes_out)) td { (observed) }
                td class=(status_class) { (b.status) } td {} td { (b.weight) } td { (b.active_up) }
                td { (b.backup_up) } td {} td {} td { (human_time(b.downtime_s)) }
            }
        }
    }
}

fn server(v: &ServerStatus) -> Markup {
    let t = &v.traffic;
    let yes = |b: bool| if b { "Y" } else { "-" };
    html! {
        tr class=(row_class(v.state, v.backup)) {
            td.l title=(v.address) { (v.name) }
            td { (v.active_flows) } td { (fmt_rate(t.new_flows_per_s)) } td { (t.total_flows) } td { (t.local_flows) }
            (bytes(t.bytes_in)) (bytes(t.bytes_out)) td { (v.observed_errors) }
            td.l { (human_time(v.since_s)) " " (v.status()) @if v.suspected { " (suspected)" } }
            @match &v.last_check {
                Some(c) => td.l title=(c.description()) { (last_check_text(c)) },
                None => td.l {},
            }
            td { (v.weight) } td { (yes(!v.backup)) } td { (yes(v.backup)) } td { (v.check_failures) }
            td { (v.down_transitions) } td { (human_time(v.downtime_s)) }
        }
    }
}

fn legend() -> Markup {
    html! {
        h2 { "Legend" }
        table.legend {
            @for (state, class, _, _, text) in STATE_STYLES {
                tr { td class=(class) { "active" } td class=(row_class(state, true)) { "backup" } td { (text) } }
            }
        }
        p {
            "Status shows the time in the current state, then the state; "
            code { "UP x/y" } " and " code { "DOWN x/y" } " count checks towards fall/rise. "
            "LastChk's tooltip gives the check's description."
        }
    }
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
