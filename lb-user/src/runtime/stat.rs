//! Renders a [`Snapshot`] in the text formats of HAProxy's runtime API (the "stats socket"), so
//! operators' `socat` one-liners and `hatop` keep working against xdplb's unix socket. Pure
//! functions; the socket server only dispatches commands to them.
//!
//! Every `Ok` value is the whole answer as HAProxy's CLI sends it, including the empty line that
//! ends each CLI answer: write it as is. An `Err` value is the message line only, as HAProxy
//! prints it; the caller follows it with that same empty line.
//!
//! Field lists are HAProxy 2.6's (management guide section 9.1; `SRV_STATE_FILE_FIELD_NAMES`).

use super::command::{ProxyRef, StatFilter};
use crate::report::snapshot::{BackendStatus, ServerState, ServerStatus, Snapshot, Traffic};

// show stat

/// HAProxy 2.6's fixed `show stat` columns (`enum stat_field`, up to `ST_F_TOTAL_FIELDS`), as
/// Debian's 2.6.12 prints them (its backports added `agg_server_status` and `agg_check_status`;
/// the lab test compares the header with that HAProxy's).
#[rustfmt::skip]
const STAT_FIELDS: [&str; 103] = [
    "pxname", "svname", "qcur", "qmax", "scur", "smax", "slim", "stot", "bin", "bout", "dreq",
    "dresp", "ereq", "econ", "eresp", "wretr", "wredis", "status", "weight", "act", "bck",
    "chkfail", "chkdown", "lastchg", "downtime", "qlimit", "pid", "iid", "sid", "throttle",
    "lbtot", "tracked", "type", "rate", "rate_lim", "rate_max", "check_status", "check_code",
    "check_duration", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other",
    "hanafail", "req_rate", "req_rate_max", "req_tot", "cli_abrt", "srv_abrt", "comp_in",
    "comp_out", "comp_byp", "comp_rsp", "lastsess", "last_chk", "last_agt", "qtime", "ctime",
    "rtime", "ttime", "agent_status", "agent_code", "agent_duration", "check_desc", "agent_desc",
    "check_rise", "check_fall", "check_health", "agent_rise", "agent_fall", "agent_health",
    "addr", "cookie", "mode", "algo", "conn_rate", "conn_rate_max", "conn_tot", "intercepted",
    "dcon", "dses", "wrew", "connect", "reuse", "cache_lookups", "cache_hits", "srv_icur",
    "src_ilim", "qtime_max", "ctime_max", "rtime_max", "ttime_max", "eint", "idle_conn_cur",
    "safe_conn_cur", "used_conn_cur", "need_conn_est", "uweight", "agg_server_status",
    "agg_server_check_status", "agg_check_status",
];

/// The stats modules' columns HAProxy 2.6 appends after its `-` marker when built with OpenSSL
/// (Debian's and the official images' builds): SSL, HTTP/2, then HTTP/1. xdplb terminates none,
/// so their cells stay empty; the names keep the header identical for parsers keyed on it.
#[rustfmt::skip]
const STAT_MODULE_FIELDS: [&str; 24] = [
    "ssl_sess", "ssl_reused_sess", "ssl_failed_handshake", "h2_headers_rcvd", "h2_data_rcvd",
    "h2_settings_rcvd", "h2_rst_stream_rcvd", "h2_goaway_rcvd",
    "h2_detected_conn_protocol_errors", "h2_detected_strm_protocol_errors", "h2_rst_stream_resp",
    "h2_goaway_resp", "h2_open_connections", "h2_backend_open_streams", "h2_total_connections",
    "h2_backend_total_streams", "h1_open_connections", "h1_open_streams", "h1_total_connections",
    "h1_total_streams", "h1_bytes_in", "h1_bytes_out", "h1_spliced_bytes_in", "h1_spliced_bytes_out",
];

/// Indexes into [`STAT_FIELDS`] of the columns xdplb fills.
mod col {
    pub const PXNAME: usize = 0;
    pub const SVNAME: usize = 1;
    pub const SCUR: usize = 4;
    pub const STOT: usize = 7;
    pub const BIN: usize = 8;
    pub const BOUT: usize = 9;
    pub const ECON: usize = 13;
    pub const STATUS: usize = 17;
    pub const WEIGHT: usize = 18;
    pub const ACT: usize = 19;
    pub const BCK: usize = 20;
    pub const CHKFAIL: usize = 21;
    pub const CHKDOWN: usize = 22;
    pub const LASTCHG: usize = 23;
    pub const DOWNTIME: usize = 24;
    pub const PID: usize = 26;
    pub const IID: usize = 27;
    pub const SID: usize = 28;
    pub const LBTOT: usize = 30;
    pub const TYPE: usize = 32;
    pub const RATE: usize = 33;
    pub const CHECK_STATUS: usize = 36;
    pub const CHECK_CODE: usize = 37;
    pub const CHECK_DURATION: usize = 38;
    pub const LAST_CHK: usize = 56;
    pub const CHECK_DESC: usize = 65;
    pub const ADDR: usize = 73;
    pub const MODE: usize = 75;
    pub const ALGO: usize = 76;
    pub const CONN_RATE: usize = 77;
    pub const CONN_TOT: usize = 79;
    pub const UWEIGHT: usize = 99;
}

/// HAProxy's `type` column.
const TYPE_FRONTEND: u8 = 0;
const TYPE_BACKEND: u8 = 1;
const TYPE_SERVER: u8 = 2;

/// `show stat`: HAProxy's CSV (`csv`) and the empty line that ends every CLI answer.
pub fn show_stat(s: &Snapshot, filter: &StatFilter) -> String {
    let mut out = csv(s, filter);
    out.push('\n');
    out
}

/// Whether `filter` keeps a row of proxy `iid` (named `pxname`), of `kind`, server `sid`.
fn keeps(filter: &StatFilter, pxname: &str, iid: usize, kind: u8, sid: usize) -> bool {
    let proxy = match &filter.proxy {
        None => true,
        Some(ProxyRef::Id(id)) => *id == iid,
        Some(ProxyRef::Name(name)) => name == pxname,
    };
    // HAProxy's type mask: 1 frontends, 2 backends, 4 servers; the server id only filters servers.
    let kind_bit = 1u8 << kind;
    proxy && filter.types & kind_bit != 0 && (kind != TYPE_SERVER || filter.sid.is_none_or(|s| s == sid))
}

/// HAProxy's stats CSV, as `show stat` and the stats page's `;csv` export give it. Frontends
/// first, then each backend's servers followed by its BACKEND row, as HAProxy walks its
/// proxies. Proxies are numbered (`iid`) frontends first, then backends, in snapshot order;
/// servers (`sid`) from 1 within their backend.
pub fn csv(s: &Snapshot, filter: &StatFilter) -> String {
    let mut out = String::from("# ");
    for name in STAT_FIELDS {
        out.push_str(name);
        out.push(',');
    }
    // HAProxy's marker between its fixed columns and the modules' ones.
    out.push_str("-,");
    for name in STAT_MODULE_FIELDS {
        out.push_str(name);
        out.push(',');
    }
    out.push('\n');

    for (i, f) in s.frontends.iter().enumerate() {
        if !keeps(filter, &f.name, i + 1, TYPE_FRONTEND, 0) {
            continue;
        }
        let mut row = Row::new(&f.name, "FRONTEND", i + 1, 0, TYPE_FRONTEND);
        row.set(col::SCUR, f.active_flows);
        row.traffic(&f.traffic);
        row.set(col::STATUS, "OPEN");
        row.set(col::CONN_RATE, rate(&f.traffic));
        row.set(col::CONN_TOT, f.traffic.total_flows);
        row.render(&mut out);
    }
    for (i, b) in s.backends.iter().enumerate() {
        let iid = s.frontends.len() + i + 1;
        for (j, sv) in b.servers.iter().enumerate() {
            if keeps(filter, &b.name, iid, TYPE_SERVER, j + 1) {
                server_row(&b.name, sv, iid, j + 1).render(&mut out);
            }
        }
        if keeps(filter, &b.name, iid, TYPE_BACKEND, 0) {
            backend_row(b, iid).render(&mut out);
        }
    }
    out
}

fn server_row(backend: &str, sv: &ServerStatus, iid: usize, sid: usize) -> Row {
    let mut row = Row::new(backend, &sv.name, iid, sid, TYPE_SERVER);
    row.set(col::SCUR, sv.active_flows);
    row.traffic(&sv.traffic);
    row.set(col::LBTOT, sv.traffic.total_flows);
    // Connection errors: SYNs the server refused or never answered (seen by the data path).
    row.set(col::ECON, sv.observed_errors);
    row.set(col::STATUS, sv.status());
    row.set(col::WEIGHT, sv.weight);
    row.set(col::UWEIGHT, sv.weight);
    // Flags on server rows: is this server active, is it a backup.
    row.set(col::ACT, u8::from(!sv.backup));
    row.set(col::BCK, u8::from(sv.backup));
    row.set(col::LASTCHG, sv.since_s);
    row.set(col::ADDR, sv.address);
    // HAProxy leaves the check columns empty for servers it does not check.
    if sv.state != ServerState::NoCheck {
        row.set(col::CHKFAIL, sv.check_failures);
        row.set(col::CHKDOWN, sv.down_transitions);
        row.set(col::DOWNTIME, sv.downtime_s);
        if let Some(c) = &sv.last_check {
            row.set(col::CHECK_STATUS, c.code.name());
            if let Some(code) = c.http_status {
                row.set(col::CHECK_CODE, code);
            }
            row.set(col::CHECK_DURATION, c.duration_ms);
            let description = c.description();
            row.set(col::CHECK_DESC, &description);
            row.set(col::LAST_CHK, &description);
        }
    }
    row
}

fn backend_row(b: &BackendStatus, iid: usize) -> Row {
    let mut row = Row::new(&b.name, "BACKEND", iid, 0, TYPE_BACKEND);
    row.set(col::SCUR, b.active_flows);
    row.traffic(&b.traffic);
    row.set(col::LBTOT, b.traffic.total_flows);
    row.set(col::STATUS, b.status);
    row.set(col::WEIGHT, b.weight);
    row.set(col::UWEIGHT, b.weight);
    // Counts on the BACKEND row: servers UP, active and backup.
    row.set(col::ACT, b.active_up);
    row.set(col::BCK, b.backup_up);
    row.set(col::DOWNTIME, b.downtime_s);
    row.set(col::ALGO, b.balance.name());
    row
}

/// `rate` is whole flows per second; a NaN or negative rate (clock step) reads as idle.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "finite and positive, checked; flows per second are far below u64::MAX"
)]
pub(super) fn rate(t: &Traffic) -> u64 {
    let r = t.new_flows_per_s;
    if r.is_finite() && r > 0.0 {
        r.round() as u64
    } else {
        0
    }
}

/// One CSV row: every cell starts empty, as HAProxy leaves the ones that do not apply.
struct Row {
    cells: Vec<String>,
}

impl Row {
    fn new(pxname: &str, svname: &str, iid: usize, sid: usize, kind: u8) -> Row {
        let mut row = Row { cells: vec![String::new(); STAT_FIELDS.len()] };
        row.set(col::PXNAME, pxname);
        row.set(col::SVNAME, svname);
        // One process: HAProxy's pid column is the process number, not the system pid.
        row.set(col::PID, 1);
        row.set(col::IID, iid);
        row.set(col::SID, sid);
        row.set(col::TYPE, kind);
        row.set(col::MODE, "tcp");
        row
    }

    fn set(&mut self, idx: usize, value: impl std::fmt::Display) {
        if let Some(cell) = self.cells.get_mut(idx) {
            *cell = value.to_string();
        }
    }

    fn traffic(&mut self, t: &Traffic) {
        self.set(col::STOT, t.total_flows);
        self.set(col::BIN, t.bytes_in);
        self.set(col::BOUT, t.bytes_out);
        self.set(col::RATE, rate(t));
    }

    fn render(&self, out: &mut String) {
        for cell in &self.cells {
            csv_cell(cell, out);
            out.push(',');
        }
        out.push_str("-,");
        for _ in STAT_MODULE_FIELDS {
            out.push(',');
        }
        out.push('\n');
    }
}

/// HAProxy's `csv_enc(str, 1, ...)`: quoted (inner quotes doubled) only when the text holds a
/// comma, a quote or a line break. Unlike HAProxy, line breaks become spaces so that each row
/// stays one line for grep, awk and hatop.
fn csv_cell(text: &str, out: &mut String) {
    let text = text.replace(['\r', '\n'], " ");
    if text.contains([',', '"']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::sample::{snapshot, HAPROXY_26_HEADER};
    /// Splits a CSV line the way a CSV reader does: commas inside quotes are text.
    fn csv_fields(line: &str) -> Vec<String> {
        let (mut fields, mut cur, mut quoted) = (Vec::new(), String::new(), false);
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                '"' => quoted = !quoted,
                ',' if !quoted => fields.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        fields.push(cur);
        fields
    }

    /// The rows as name -> value maps, keyed by the header.
    fn rows(csv: &str) -> Vec<std::collections::HashMap<String, String>> {
        let mut lines = csv.lines();
        let header = csv_fields(lines.next().unwrap_or_default().trim_start_matches("# "));
        lines.filter(|l| !l.is_empty()).map(|l| header.iter().cloned().zip(csv_fields(l)).collect()).collect()
    }

    fn find<'a>(
        rows: &'a [std::collections::HashMap<String, String>],
        px: &str,
        sv: &str,
    ) -> &'a std::collections::HashMap<String, String> {
        rows.iter().find(|r| r["pxname"] == px && r["svname"] == sv).unwrap_or_else(|| panic!("no row {px}/{sv}"))
    }

    #[test]
    fn show_stat_header_is_haproxy_26() {
        let out = show_stat(&snapshot(), &StatFilter::ALL);
        assert_eq!(out.lines().next(), Some(HAPROXY_26_HEADER));
        // 103 fixed columns, HAProxy's `-` marker, 24 module columns.
        assert_eq!(HAPROXY_26_HEADER.matches(',').count(), 128);
    }

    #[test]
    fn show_stat_rows_have_the_header_field_count() {
        let out = show_stat(&snapshot(), &StatFilter::ALL);
        let header_commas = HAPROXY_26_HEADER.matches(',').count();
        for line in out.lines().skip(1).filter(|l| !l.is_empty()) {
            // Every row ends with a comma, like the header: one more field than commas.
            assert!(line.ends_with(','), "{line}");
            assert_eq!(csv_fields(line).len(), header_commas + 1, "{line}");
        }
        // Rows without quoted text can be cut on plain commas, as socat one-liners do.
        let plain = out.lines().find(|l| l.starts_with("etcd-cluster,app1,")).unwrap_or_default();
        assert_eq!(plain.matches(',').count(), header_commas);
    }

    #[test]
    fn show_stat_rows_in_haproxy_order() {
        let out = show_stat(&snapshot(), &StatFilter::ALL);
        let order: Vec<(String, String, String)> =
            rows(&out).iter().map(|r| (r["pxname"].clone(), r["svname"].clone(), r["type"].clone())).collect();
        let want = [
            ("in-etcd", "FRONTEND", "0"),
            ("in-apiserver", "FRONTEND", "0"),
            ("etcd-cluster", "app1", "2"),
            ("etcd-cluster", "app2", "2"),
            ("etcd-cluster", "app3", "2"),
            ("etcd-cluster", "BACKEND", "1"),
            ("apiserver-cluster", "api1", "2"),
            ("apiserver-cluster", "api2", "2"),
            ("apiserver-cluster", "api3", "2"),
            ("apiserver-cluster", "api4", "2"),
            ("apiserver-cluster", "BACKEND", "1"),
        ];
        let want: Vec<(String, String, String)> =
            want.iter().map(|(p, s, t)| (p.to_string(), s.to_string(), t.to_string())).collect();
        assert_eq!(order, want);
        // HAProxy's CLI ends each answer with an empty line.
        assert!(out.ends_with(",\n\n"));
    }

    #[test]
    fn show_stat_values() {
        let out = show_stat(&snapshot(), &StatFilter::ALL);
        let rows = rows(&out);

        let fe = find(&rows, "in-etcd", "FRONTEND");
        for (k, v) in [
            ("status", "OPEN"),
            ("scur", "7"),
            ("stot", "120"),
            ("bin", "5000"),
            ("bout", "9000"),
            ("rate", "2"),
            ("pid", "1"),
            ("iid", "1"),
            ("sid", "0"),
            ("mode", "tcp"),
            ("weight", ""),
            ("qcur", ""),
        ] {
            assert_eq!(fe[k], v, "in-etcd FRONTEND {k}");
        }
        assert_eq!(find(&rows, "in-apiserver", "FRONTEND")["iid"], "2");

        let app1 = find(&rows, "etcd-cluster", "app1");
        for (k, v) in [
            ("status", "UP"),
            ("weight", "2"),
            ("act", "1"),
            ("bck", "0"),
            ("chkfail", "1"),
            ("chkdown", "1"),
            ("downtime", "12"),
            ("check_status", "L7OK"),
            ("check_code", "200"),
            ("check_duration", "3"),
            ("iid", "3"),
            ("sid", "1"),
            ("addr", "10.0.0.1:2379"),
            ("lastchg", "42"),
        ] {
            assert_eq!(app1[k], v, "app1 {k}");
        }
        let app2 = find(&rows, "etcd-cluster", "app2");
        assert_eq!((app2["status"].as_str(), app2["check_status"].as_str()), ("UP 1/3", "L7STS"));
        assert_eq!((app2["chkfail"].as_str(), app2["check_code"].as_str()), ("4", "503"));
        let app3 = find(&rows, "etcd-cluster", "app3");
        assert_eq!(app3["status"], "DOWN");
        assert_eq!(app3["check_status"], "L4CON");
        assert_eq!(app3["check_code"], "");
        assert_eq!(app3["chkfail"], "9");
        assert_eq!(app3["check_desc"], "Layer4 connection problem: \"Connection refused\", errno 111");
        assert_eq!(app3["last_chk"], app3["check_desc"]);

        let etcd = find(&rows, "etcd-cluster", "BACKEND");
        for (k, v) in [
            ("status", "UP"),
            ("weight", "3"),
            ("act", "2"),
            ("bck", "0"),
            ("chkfail", ""),
            ("algo", "roundrobin"),
            ("iid", "3"),
            ("sid", "0"),
        ] {
            assert_eq!(etcd[k], v, "etcd-cluster BACKEND {k}");
        }

        let api1 = find(&rows, "apiserver-cluster", "api1");
        assert_eq!(api1["check_status"], "L7OK");
        assert_eq!(api1["iid"], "4");
        assert_eq!(find(&rows, "apiserver-cluster", "api2")["status"], "DRAIN");
        let api3 = find(&rows, "apiserver-cluster", "api3");
        assert_eq!((api3["status"].as_str(), api3["check_status"].as_str()), ("MAINT", ""));
        let api4 = find(&rows, "apiserver-cluster", "api4");
        assert_eq!((api4["act"].as_str(), api4["bck"].as_str()), ("0", "1"));
        let api = find(&rows, "apiserver-cluster", "BACKEND");
        // Only api1 counts: DRAIN and MAINT take no flows, the backup waits while api1 is UP.
        for (k, v) in [("weight", "10"), ("act", "1"), ("bck", "1"), ("downtime", "5")] {
            assert_eq!(api[k], v, "apiserver-cluster BACKEND {k}");
        }
    }

    #[test]
    fn show_stat_filters_as_hatop_sends_them() {
        let kinds = |f: StatFilter| -> Vec<(String, String)> {
            rows(&show_stat(&snapshot(), &f)).iter().map(|r| (r["pxname"].clone(), r["svname"].clone())).collect()
        };
        // `show stat -1 4 -1`: every server, no FRONTEND or BACKEND row.
        let servers = kinds(StatFilter { proxy: None, types: 4, sid: None });
        assert_eq!(servers.len(), 7);
        assert!(servers.iter().all(|(_, sv)| sv != "FRONTEND" && sv != "BACKEND"), "{servers:?}");
        // Frontends and backends (1 | 2), of one proxy by name, then by iid.
        assert_eq!(kinds(StatFilter { proxy: None, types: 3, sid: None }).len(), 4);
        assert_eq!(
            kinds(StatFilter { proxy: Some(ProxyRef::Name("etcd-cluster".into())), types: 2, sid: None }),
            [("etcd-cluster".to_string(), "BACKEND".to_string())]
        );
        assert_eq!(
            kinds(StatFilter { proxy: Some(ProxyRef::Id(4)), types: 4, sid: Some(2) }),
            [("apiserver-cluster".to_string(), "api2".to_string())]
        );
        assert_eq!(
            find(&rows(&show_stat(&snapshot(), &StatFilter::ALL)), "apiserver-cluster", "BACKEND")["algo"],
            "leastconn"
        );
    }

    #[test]
    fn line_breaks_in_a_cell_become_spaces() {
        let mut out = String::new();
        csv_cell("a\nb", &mut out);
        assert_eq!(out, "a b");
    }
}
