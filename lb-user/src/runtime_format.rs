//! Renders a [`Snapshot`] in the text formats of HAProxy's runtime API (the "stats socket"), so
//! operators' `socat` one-liners and `hatop` keep working against xdplb's unix socket. Pure
//! functions; the socket server only dispatches commands to them.
//!
//! Every `Ok` value is the whole answer as HAProxy's CLI sends it, including the empty line that
//! ends each CLI answer: write it as is. An `Err` value is the message line only, as HAProxy
//! prints it; the caller follows it with that same empty line.
//!
//! Field lists are HAProxy 2.6's (management guide section 9.1; `SRV_STATE_FILE_FIELD_NAMES`).

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::snapshot::{BackendStatus, ServerState, ServerStatus, Snapshot, Traffic};

// ---------------------------------------------------------------------------------------------
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
        _ => hostname().unwrap_or_else(|| "xdplb".to_string()),
    };
    // The XDP program runs on every CPU: that is what HAProxy's thread count stands for.
    let nbthread = std::thread::available_parallelism().map_or(1, |n| n.get());
    let up = s.uptime_s;

    let mut out = String::new();
    let mut line = |name: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{name}: {value}");
    };
    line("Name", &"xdplb");
    // hatop reads Version, Release_date, node and description as non-empty words.
    line(
        "Version",
        &if version.is_empty() {
            "unknown"
        } else {
            version.as_str()
        },
    );
    line("Release_date", &"-");
    line("Nbthread", &nbthread);
    line("Nbproc", &1);
    line("Process_num", &1);
    line("Pid", &s.pid);
    // HAProxy's "%ud %uh%02um%02us".
    let uptime = format!(
        "{}d {}h{:02}m{:02}s",
        up / 86_400,
        up / 3_600 % 24,
        up / 60 % 60,
        up % 60
    );
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

/// The host name, for `node` when the caller has none.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for `buf.len()` bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // POSIX leaves truncated names without a NUL: stop at the buffer's end then.
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = one_line(&String::from_utf8_lossy(&buf[..end]));
    (!name.is_empty()).then_some(name)
}

// ---------------------------------------------------------------------------------------------
// show stat

/// HAProxy 2.6's fixed `show stat` columns (`enum stat_field`, up to `ST_F_TOTAL_FIELDS`).
#[rustfmt::skip]
const STAT_FIELDS: [&str; 101] = [
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
    "safe_conn_cur", "used_conn_cur", "need_conn_est", "uweight", "agg_server_check_status",
];

/// The stats modules' columns HAProxy 2.6 appends after its `-` marker when built with OpenSSL
/// (Debian's and the official images' builds): SSL then HTTP/2. xdplb terminates neither, so
/// their cells stay empty; the names keep the header identical for parsers keyed on it.
#[rustfmt::skip]
const STAT_MODULE_FIELDS: [&str; 16] = [
    "ssl_sess", "ssl_reused_sess", "ssl_failed_handshake", "h2_headers_rcvd", "h2_data_rcvd",
    "h2_settings_rcvd", "h2_rst_stream_rcvd", "h2_goaway_rcvd",
    "h2_detected_conn_protocol_errors", "h2_detected_strm_protocol_errors", "h2_rst_stream_resp",
    "h2_goaway_resp", "h2_open_connections", "h2_backend_open_streams", "h2_total_connections",
    "h2_backend_total_streams",
];

/// Indexes into [`STAT_FIELDS`] of the columns xdplb fills.
mod col {
    pub const PXNAME: usize = 0;
    pub const SVNAME: usize = 1;
    pub const SCUR: usize = 4;
    pub const STOT: usize = 7;
    pub const BIN: usize = 8;
    pub const BOUT: usize = 9;
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

/// `show stat`: HAProxy's CSV. Frontends first, then each backend's servers followed by its
/// BACKEND row, as HAProxy walks its proxies. Proxies are numbered (`iid`) frontends first, then
/// backends, in snapshot order; servers (`sid`) from 1 within their backend.
pub fn show_stat(s: &Snapshot) -> String {
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
            server_row(&b.name, sv, iid, j + 1).render(&mut out);
        }
        backend_row(b, iid).render(&mut out);
    }
    // The empty line that ends every CLI answer.
    out.push('\n');
    out
}

fn server_row(backend: &str, sv: &ServerStatus, iid: usize, sid: usize) -> Row {
    let mut row = Row::new(backend, &sv.name, iid, sid, TYPE_SERVER);
    row.set(col::SCUR, sv.active_flows);
    row.traffic(&sv.traffic);
    row.set(col::LBTOT, sv.traffic.total_flows);
    row.set(col::STATUS, server_status_text(sv));
    row.set(col::WEIGHT, sv.weight);
    row.set(col::UWEIGHT, sv.weight);
    // Flags on server rows: is this server active, is it a backup.
    row.set(col::ACT, u8::from(!sv.backup));
    row.set(col::BCK, u8::from(sv.backup));
    row.set(col::LASTCHG, sv.since_s);
    row.set(col::ADDR, &sv.address);
    // HAProxy leaves the check columns empty for servers it does not check.
    if sv.state != ServerState::NoCheck {
        row.set(col::CHKFAIL, sv.check_failures);
        row.set(col::CHKDOWN, sv.down_transitions);
        row.set(col::DOWNTIME, sv.downtime_s);
        if let Some(c) = &sv.last_check {
            row.set(col::CHECK_STATUS, check_code(&c.code));
            if let Some(code) = c.http_status {
                row.set(col::CHECK_CODE, code);
            }
            row.set(col::CHECK_DURATION, c.duration_ms);
            row.set(col::CHECK_DESC, &c.description);
            row.set(col::LAST_CHK, &c.description);
        }
    }
    row
}

fn backend_row(b: &BackendStatus, iid: usize) -> Row {
    let mut row = Row::new(&b.name, "BACKEND", iid, 0, TYPE_BACKEND);
    row.set(col::SCUR, b.active_flows);
    row.traffic(&b.traffic);
    row.set(col::LBTOT, b.traffic.total_flows);
    let status = match b.status.as_str() {
        "" if b.servers.iter().any(|sv| sv.state.takes_flows()) => "UP",
        "" => "DOWN",
        st => st,
    };
    row.set(col::STATUS, status);
    let weight = backend_weight(b);
    row.set(col::WEIGHT, weight);
    row.set(col::UWEIGHT, weight);
    // Counts on the BACKEND row: servers UP, active and backup.
    row.set(col::ACT, b.active_up);
    row.set(col::BCK, b.backup_up);
    row.set(col::DOWNTIME, b.downtime_s);
    row.set(col::ALGO, "roundrobin");
    row
}

/// HAProxy's backend weight: the UP active servers' weights, or the UP backups' ones when no
/// active server is UP (backups only take traffic then).
fn backend_weight(b: &BackendStatus) -> u64 {
    let up_weight = |backup: bool| -> u64 {
        b.servers
            .iter()
            .filter(|sv| sv.backup == backup && sv.state.takes_flows())
            .map(|sv| u64::from(sv.weight))
            .sum()
    };
    let active_up = b
        .servers
        .iter()
        .any(|sv| !sv.backup && sv.state.takes_flows());
    up_weight(!active_up)
}

/// The snapshot's HAProxy wording, or the plain state word should it be missing.
fn server_status_text(sv: &ServerStatus) -> String {
    if !sv.status.is_empty() {
        return sv.status.clone();
    }
    match sv.state {
        ServerState::Up | ServerState::GoingDown => "UP",
        ServerState::Down | ServerState::GoingUp => "DOWN",
        ServerState::Maint => "MAINT",
        ServerState::Drain => "DRAIN",
        ServerState::NoCheck => "no check",
    }
    .to_string()
}

/// A check code without the `*` HAProxy's web page puts before checks in progress.
fn check_code(code: &str) -> &str {
    code.trim().trim_start_matches('*').trim_start()
}

/// `rate` is whole flows per second; a NaN or negative rate (clock step) reads as idle.
fn rate(t: &Traffic) -> u64 {
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
        let mut row = Row {
            cells: vec![String::new(); STAT_FIELDS.len()],
        };
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

// ---------------------------------------------------------------------------------------------
// show servers state

/// HAProxy 2.6's `SRV_STATE_FILE_FIELD_NAMES` (state file format version 1).
const SERVERS_STATE_HEADER: &str = "# be_id be_name srv_id srv_name srv_addr srv_op_state \
    srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status \
    srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id \
    srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr \
    srv_agent_addr srv_agent_port";

/// `enum srv_state`.
const SRV_ST_STOPPED: u8 = 0;
const SRV_ST_RUNNING: u8 = 2;
/// `enum srv_admin` flags.
const SRV_ADMF_FMAINT: u8 = 0x01;
const SRV_ADMF_FDRAIN: u8 = 0x08;
/// `check.state` flags.
const CHK_ST_CONFIGURED: u8 = 0x02;
const CHK_ST_ENABLED: u8 = 0x04;
const CHK_ST_PAUSED: u8 = 0x08;

/// `show servers state [<backend>]`: format version 1, one space-separated line per server.
/// Unknown values are `-`, as HAProxy writes them for missing addresses and names.
pub fn show_servers_state(s: &Snapshot, backend: Option<&str>) -> Result<String, String> {
    if let Some(name) = backend {
        if !s.backends.iter().any(|b| b.name == name) {
            return Err("Can't find backend.\n".to_string());
        }
    }
    let mut out = String::from("1\n");
    out.push_str(SERVERS_STATE_HEADER);
    out.push('\n');
    for (i, b) in s.backends.iter().enumerate() {
        if backend.is_some_and(|name| name != b.name) {
            continue;
        }
        // Same proxy numbering as `show stat`.
        let be_id = s.frontends.len() + i + 1;
        for (j, sv) in b.servers.iter().enumerate() {
            server_state_line(&mut out, be_id, &b.name, j + 1, sv);
        }
    }
    out.push('\n');
    Ok(out)
}

fn server_state_line(
    out: &mut String,
    be_id: usize,
    be_name: &str,
    srv_id: usize,
    sv: &ServerStatus,
) {
    let (addr, port) = split_addr(&sv.address);
    // HAProxy keeps MAINT servers stopped and DRAIN ones running; rising servers stay stopped
    // until `rise` checks passed, falling ones run until `fall` failed.
    let op_state = match sv.state {
        ServerState::Up | ServerState::GoingDown | ServerState::NoCheck | ServerState::Drain => {
            SRV_ST_RUNNING
        }
        ServerState::Down | ServerState::GoingUp | ServerState::Maint => SRV_ST_STOPPED,
    };
    let admin_state = match sv.state {
        ServerState::Maint => SRV_ADMF_FMAINT,
        ServerState::Drain => SRV_ADMF_FDRAIN,
        _ => 0,
    };
    let code = sv.last_check.as_ref().map(|c| check_code(&c.code));
    let (check_status, check_result, check_state) = match sv.state {
        ServerState::NoCheck => (0, CHK_RES_UNKNOWN, 0),
        // Checks stop in MAINT: HAProxy marks them paused.
        ServerState::Maint => {
            let (st, res) = check_status_num(code);
            (st, res, CHK_ST_CONFIGURED | CHK_ST_ENABLED | CHK_ST_PAUSED)
        }
        _ => {
            let (st, res) = check_status_num(code);
            (st, res, CHK_ST_CONFIGURED | CHK_ST_ENABLED)
        }
    };
    let _ = writeln!(
        out,
        "{be_id} {} {srv_id} {} {addr} {op_state} {admin_state} {w} {w} {since} {check_status} \
         {check_result} {health} {check_state} 0 0 0 - {port} - 0 0 - - 0",
        token(be_name),
        token(&sv.name),
        w = sv.weight,
        since = sv.since_s,
        health = check_health(sv),
    );
}

/// `check.health`, where the snapshot tells it: 0 when DOWN, the passed checks when rising
/// (`DOWN 1/2`). Elsewhere it depends on rise/fall, which the snapshot does not carry.
fn check_health(sv: &ServerStatus) -> String {
    match sv.state {
        ServerState::Down => "0".to_string(),
        ServerState::GoingUp => sv
            .status
            .strip_prefix("DOWN ")
            .and_then(|rest| rest.split('/').next())
            .and_then(|n| n.trim().parse::<u32>().ok())
            .map_or_else(|| "-".to_string(), |n| n.to_string()),
        _ => "-".to_string(),
    }
}

/// `enum chk_result`.
const CHK_RES_UNKNOWN: u8 = 0;
const CHK_RES_FAILED: u8 = 2;
const CHK_RES_PASSED: u8 = 3;
const CHK_RES_CONDPASS: u8 = 4;

/// A check code as HAProxy's `enum healthcheck_status` number and its `enum chk_result`.
fn check_status_num(code: Option<&str>) -> (u8, u8) {
    let Some(code) = code else {
        // Checked but no result yet: HAProxy's "INI".
        return (1, CHK_RES_UNKNOWN);
    };
    match code {
        "UNK" => (0, CHK_RES_UNKNOWN),
        "INI" => (1, CHK_RES_UNKNOWN),
        "HANA" => (4, CHK_RES_FAILED),
        "SOCKERR" => (5, CHK_RES_FAILED),
        "L4OK" => (6, CHK_RES_PASSED),
        "L4TOUT" => (7, CHK_RES_FAILED),
        "L4CON" => (8, CHK_RES_FAILED),
        "L6OK" => (9, CHK_RES_PASSED),
        "L6TOUT" => (10, CHK_RES_FAILED),
        "L6RSP" => (11, CHK_RES_FAILED),
        "L7TOUT" => (12, CHK_RES_FAILED),
        "L7RSP" => (13, CHK_RES_FAILED),
        "L7OK" => (15, CHK_RES_PASSED),
        "L7OKC" => (16, CHK_RES_CONDPASS),
        "L7STS" => (17, CHK_RES_FAILED),
        "PROCERR" => (18, CHK_RES_FAILED),
        "PROCTOUT" => (19, CHK_RES_FAILED),
        "PROCOK" => (20, CHK_RES_PASSED),
        _ => (0, CHK_RES_UNKNOWN),
    }
}

/// `ip:port` (or `[v6]:port`) as HAProxy's separate address and port columns.
fn split_addr(address: &str) -> (String, u16) {
    if let Ok(sa) = address.parse::<SocketAddr>() {
        return (sa.ip().to_string(), sa.port());
    }
    if let Some((host, port)) = address.rsplit_once(':') {
        if let Ok(port) = port.parse::<u16>() {
            return (
                token(host.trim_start_matches('[').trim_end_matches(']')),
                port,
            );
        }
    }
    (token(address), 0)
}

/// A name as one space-separated word: `-` when empty, blanks replaced.
fn token(text: &str) -> String {
    let t: String = text
        .trim()
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    if t.is_empty() {
        "-".to_string()
    } else {
        t
    }
}

/// A value on one line: line breaks would start a bogus `Name: value` pair.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ").trim().to_string()
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::sample::{check, traffic};
    use crate::snapshot::FrontendStatus;

    /// HAProxy 2.6's `show stat` header, as a Debian/official build (OpenSSL) prints it.
    const HAPROXY_26_HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,\
dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,\
qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,\
check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,\
req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,\
last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,\
check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,\
conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,\
cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,\
safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_check_status,-,ssl_sess,\
ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,\
h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,\
h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,\
h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,";

    fn server(name: &str, addr: &str, state: ServerState, status: &str) -> ServerStatus {
        ServerStatus {
            name: name.to_string(),
            address: addr.to_string(),
            state,
            status: status.to_string(),
            since_s: 42,
            last_check: check("L7OK", Some(200), 3, "Layer7 check passed: OK"),
            weight: 1,
            ..Default::default()
        }
    }

    fn snapshot() -> Snapshot {
        let app1 = ServerStatus {
            active_flows: 7,
            traffic: traffic(120, 2.4, 5_000, 9_000),
            check_failures: 1,
            down_transitions: 1,
            downtime_s: 12,
            weight: 2,
            ..server("app1", "10.0.0.1:2379", ServerState::Up, "UP")
        };
        let app2 = ServerStatus {
            since_s: 300,
            check_failures: 4,
            last_check: check(
                "L7STS",
                Some(503),
                5,
                "Layer7 wrong status: Service Unavailable",
            ),
            ..server("app2", "10.0.0.2:2379", ServerState::GoingDown, "UP 1/3")
        };
        let app3 = ServerStatus {
            check_failures: 9,
            down_transitions: 2,
            downtime_s: 600,
            last_check: check(
                "L4CON",
                None,
                0,
                "Layer4 connection problem, info: \"Connection refused\"",
            ),
            ..server("app3", "10.0.0.3:2379", ServerState::Down, "DOWN")
        };
        let api1 = ServerStatus {
            // A check in progress, as HAProxy's web page marks it.
            last_check: check("* L7OK", Some(200), 8, "Layer7 check passed: OK"),
            weight: 10,
            ..server("api1", "[fd00::11]:6443", ServerState::Up, "UP")
        };
        let api2 = ServerStatus {
            weight: 10,
            ..server("api2", "10.0.1.2:6443", ServerState::Drain, "DRAIN")
        };
        let api3 = ServerStatus {
            weight: 10,
            last_check: None,
            ..server("api3", "10.0.1.3:6443", ServerState::Maint, "MAINT")
        };
        let api4 = ServerStatus {
            backup: true,
            weight: 5,
            ..server("api4", "10.0.1.4:6443", ServerState::Up, "UP")
        };
        Snapshot {
            version: "0.3.0".to_string(),
            uptime_s: 65,
            pid: 4242,
            interfaces: vec!["eth0:native".to_string()],
            frontends: vec![
                FrontendStatus {
                    name: "in-etcd".to_string(),
                    bind: "*:12379".to_string(),
                    backend: "etcd-cluster".to_string(),
                    traffic: traffic(120, 2.4, 5_000, 9_000),
                    active_flows: 7,
                },
                FrontendStatus {
                    name: "in-apiserver".to_string(),
                    bind: "*:16443".to_string(),
                    backend: "apiserver-cluster".to_string(),
                    traffic: traffic(30, 0.4, 800, 1_600),
                    active_flows: 3,
                },
            ],
            backends: vec![
                BackendStatus {
                    name: "etcd-cluster".to_string(),
                    status: "UP".to_string(),
                    servers: vec![app1, app2, app3],
                    active_up: 2,
                    backup_up: 0,
                    traffic: traffic(120, 2.4, 5_000, 9_000),
                    active_flows: 7,
                    downtime_s: 0,
                    check: "https GET /health expect 200".to_string(),
                    verify_none: false,
                },
                BackendStatus {
                    name: "apiserver-cluster".to_string(),
                    status: "UP".to_string(),
                    servers: vec![api1, api2, api3, api4],
                    active_up: 1,
                    backup_up: 1,
                    traffic: traffic(30, 0.4, 800, 1_600),
                    active_flows: 3,
                    downtime_s: 5,
                    check: "https GET /readyz expect 200".to_string(),
                    verify_none: true,
                },
            ],
            reasons: vec![],
        }
    }

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
        lines
            .filter(|l| !l.is_empty())
            .map(|l| header.iter().cloned().zip(csv_fields(l)).collect())
            .collect()
    }

    fn find<'a>(
        rows: &'a [std::collections::HashMap<String, String>],
        px: &str,
        sv: &str,
    ) -> &'a std::collections::HashMap<String, String> {
        rows.iter()
            .find(|r| r["pxname"] == px && r["svname"] == sv)
            .unwrap_or_else(|| panic!("no row {px}/{sv}"))
    }

    #[test]
    fn show_stat_header_is_haproxy_26() {
        let out = show_stat(&snapshot());
        assert_eq!(out.lines().next(), Some(HAPROXY_26_HEADER));
        // 101 fixed columns, HAProxy's `-` marker, 16 module columns.
        assert_eq!(HAPROXY_26_HEADER.matches(',').count(), 118);
    }

    #[test]
    fn show_stat_rows_have_the_header_field_count() {
        let out = show_stat(&snapshot());
        let header_commas = HAPROXY_26_HEADER.matches(',').count();
        for line in out.lines().skip(1).filter(|l| !l.is_empty()) {
            // Every row ends with a comma, like the header: one more field than commas.
            assert!(line.ends_with(','), "{line}");
            assert_eq!(csv_fields(line).len(), header_commas + 1, "{line}");
        }
        // Rows without quoted text can be cut on plain commas, as socat one-liners do.
        let plain = out
            .lines()
            .find(|l| l.starts_with("etcd-cluster,app1,"))
            .unwrap_or_default();
        assert_eq!(plain.matches(',').count(), header_commas);
    }

    #[test]
    fn show_stat_rows_in_haproxy_order() {
        let out = show_stat(&snapshot());
        let order: Vec<(String, String, String)> = rows(&out)
            .iter()
            .map(|r| (r["pxname"].clone(), r["svname"].clone(), r["type"].clone()))
            .collect();
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
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(p, s, t)| (p.to_string(), s.to_string(), t.to_string()))
            .collect();
        assert_eq!(order, want);
        // HAProxy's CLI ends each answer with an empty line.
        assert!(out.ends_with(",\n\n"));
    }

    #[test]
    fn show_stat_values() {
        let out = show_stat(&snapshot());
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
        assert_eq!(
            (app2["status"].as_str(), app2["check_status"].as_str()),
            ("UP 1/3", "L7STS")
        );
        assert_eq!(
            (app2["chkfail"].as_str(), app2["check_code"].as_str()),
            ("4", "503")
        );
        let app3 = find(&rows, "etcd-cluster", "app3");
        assert_eq!(app3["status"], "DOWN");
        assert_eq!(app3["check_status"], "L4CON");
        assert_eq!(app3["check_code"], "");
        assert_eq!(app3["chkfail"], "9");
        assert_eq!(
            app3["check_desc"],
            "Layer4 connection problem, info: \"Connection refused\""
        );
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
        assert_eq!(
            (api3["status"].as_str(), api3["check_status"].as_str()),
            ("MAINT", "")
        );
        let api4 = find(&rows, "apiserver-cluster", "api4");
        assert_eq!((api4["act"].as_str(), api4["bck"].as_str()), ("0", "1"));
        let api = find(&rows, "apiserver-cluster", "BACKEND");
        // Only api1 counts: DRAIN and MAINT take no flows, the backup waits while api1 is UP.
        for (k, v) in [
            ("weight", "10"),
            ("act", "1"),
            ("bck", "1"),
            ("downtime", "5"),
        ] {
            assert_eq!(api[k], v, "apiserver-cluster BACKEND {k}");
        }
    }

    #[test]
    fn backend_weight_falls_back_to_backups() {
        let mut s = snapshot();
        for sv in &mut s.backends[1].servers {
            if !sv.backup {
                sv.state = ServerState::Down;
            }
        }
        assert_eq!(backend_weight(&s.backends[1]), 5);
    }

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
            assert!(
                line.is_some_and(|l| l.len() > key.len() + 2),
                "{key} in\n{out}"
            );
        }
        // HAProxy's order for the fields we emit.
        let pos = |k: &str| out.find(&format!("\n{k}: ")).unwrap_or(usize::MAX);
        assert!(pos("Nbthread") < pos("Pid") && pos("Pid") < pos("Uptime_sec"));
        assert!(pos("CurrConns") < pos("CumConns") && pos("Idle_pct") < pos("node"));
        assert!(out.ends_with("\n\n"));
        // Without a node name, the host's name or "xdplb".
        assert!(!show_info(&snapshot(), "").contains("node: \n"));
    }

    #[test]
    fn show_servers_state_format() {
        let out = show_servers_state(&snapshot(), None).unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.first(), Some(&"1"));
        assert_eq!(
            lines.get(1).copied(),
            Some(
                "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state \
                 srv_uweight srv_iweight srv_time_since_last_change srv_check_status \
                 srv_check_result srv_check_health srv_check_state srv_agent_state \
                 bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl \
                 srv_check_port srv_check_addr srv_agent_addr srv_agent_port"
            )
        );
        assert!(out.ends_with("\n\n"));
        let servers: Vec<Vec<&str>> = lines[2..]
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| l.split(' ').collect())
            .collect();
        assert_eq!(servers.len(), 7);
        assert!(servers.iter().all(|f| f.len() == 25));
        let by_name = |n: &str| {
            servers
                .iter()
                .find(|f| f[3] == n)
                .cloned()
                .unwrap_or_default()
        };

        // be_id be_name srv_id srv_name srv_addr op admin uweight iweight since ...
        assert_eq!(
            &by_name("app1")[..10],
            [
                "3",
                "etcd-cluster",
                "1",
                "app1",
                "10.0.0.1",
                "2",
                "0",
                "2",
                "2",
                "42"
            ]
        );
        assert_eq!(by_name("app1")[18], "2379");
        // L7OK passed: healthcheck_status 15, chk_result 3; checks configured and enabled.
        assert_eq!(&by_name("app1")[10..14], ["15", "3", "-", "6"]);
        assert_eq!((by_name("app2")[5], by_name("app2")[6]), ("2", "0"));
        // DOWN: stopped; L4CON failed, health 0.
        assert_eq!(&by_name("app3")[5..7], ["0", "0"]);
        assert_eq!(&by_name("app3")[10..13], ["8", "2", "0"]);
        assert_eq!(
            (by_name("api1")[4], by_name("api1")[18]),
            ("fd00::11", "6443")
        );
        // DRAIN runs with the forced-drain flag; MAINT is stopped, forced-maint, checks paused.
        assert_eq!(&by_name("api2")[5..7], ["2", "8"]);
        assert_eq!(&by_name("api3")[5..7], ["0", "1"]);
        assert_eq!(by_name("api3")[13], "14");
        assert_eq!(by_name("api4")[0], "4");
    }

    #[test]
    fn show_servers_state_one_backend() {
        let out = show_servers_state(&snapshot(), Some("etcd-cluster")).unwrap_or_default();
        let names: Vec<&str> = out
            .lines()
            .skip(2)
            .filter_map(|l| l.split(' ').nth(3))
            .collect();
        assert_eq!(names, ["app1", "app2", "app3"]);
        assert_eq!(
            show_servers_state(&snapshot(), Some("nope")),
            Err("Can't find backend.\n".to_string())
        );
    }

    #[test]
    fn rising_server_health_and_odd_addresses() {
        let sv = ServerStatus {
            state: ServerState::GoingUp,
            status: "DOWN 1/2".to_string(),
            ..Default::default()
        };
        assert_eq!(check_health(&sv), "1");
        assert_eq!(
            split_addr("etcd-1.example:2379"),
            ("etcd-1.example".to_string(), 2379)
        );
        assert_eq!(split_addr(""), ("-".to_string(), 0));
        let mut out = String::new();
        csv_cell("a\nb", &mut out);
        assert_eq!(out, "a b");
    }
}
