//! `show servers state`: HAProxy 2.6's state file format, version 1.

use std::fmt::Write as _;

use super::command::Refusal;
use crate::report::snapshot::{Code, ServerState, ServerStatus, Snapshot};

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
pub fn show_servers_state(s: &Snapshot, backend: Option<&str>) -> Result<String, Refusal> {
    if let Some(name) = backend {
        if !s.backends.iter().any(|b| b.name == name) {
            return Err(Refusal::CantFindBackend);
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

fn server_state_line(out: &mut String, be_id: usize, be_name: &str, srv_id: usize, sv: &ServerStatus) {
    let (addr, port) = (sv.address.ip(), sv.address.port());
    // HAProxy keeps MAINT servers stopped and DRAIN ones running; rising servers stay stopped
    // until `rise` checks passed, falling ones run until `fall` failed.
    let op_state = match sv.state {
        ServerState::Up | ServerState::GoingDown | ServerState::NoCheck | ServerState::Drain => SRV_ST_RUNNING,
        ServerState::Down | ServerState::GoingUp | ServerState::Maint => SRV_ST_STOPPED,
    };
    let admin_state = match sv.state {
        ServerState::Maint => SRV_ADMF_FMAINT,
        ServerState::Drain => SRV_ADMF_FDRAIN,
        _ => 0,
    };
    let code = sv.last_check.as_ref().map(|c| c.code);
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

/// `check.health`: 0 when DOWN, the passed checks when rising (`DOWN 1/2`), `-` elsewhere (as
/// xdplb has always written it, though the counter is known there too).
fn check_health(sv: &ServerStatus) -> String {
    match (sv.state, sv.health) {
        (ServerState::Down, _) => "0".to_string(),
        (ServerState::GoingUp, Some(h)) => h.health.to_string(),
        _ => "-".to_string(),
    }
}

/// `enum chk_result`.
const CHK_RES_UNKNOWN: u8 = 0;
const CHK_RES_FAILED: u8 = 2;
const CHK_RES_PASSED: u8 = 3;

/// A check code as HAProxy's `enum healthcheck_status` number and its `enum chk_result`.
fn check_status_num(code: Option<Code>) -> (u8, u8) {
    match code {
        // Checked but no result yet: HAProxy's "INI".
        None => (1, CHK_RES_UNKNOWN),
        Some(Code::SockErr) => (5, CHK_RES_FAILED),
        Some(Code::L4Ok) => (6, CHK_RES_PASSED),
        Some(Code::L4Tout) => (7, CHK_RES_FAILED),
        Some(Code::L4Con) => (8, CHK_RES_FAILED),
        Some(Code::L6Ok) => (9, CHK_RES_PASSED),
        Some(Code::L6Tout) => (10, CHK_RES_FAILED),
        Some(Code::L6Rsp) => (11, CHK_RES_FAILED),
        Some(Code::L7Tout) => (12, CHK_RES_FAILED),
        Some(Code::L7Rsp) => (13, CHK_RES_FAILED),
        Some(Code::L7Ok) => (15, CHK_RES_PASSED),
        Some(Code::L7Sts) => (17, CHK_RES_FAILED),
    }
}

/// A name as one space-separated word: `-` when empty, blanks replaced.
fn token(text: &str) -> String {
    let t: String = text.trim().chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
    if t.is_empty() {
        "-".to_string()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::sample::snapshot;
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
        let servers: Vec<Vec<&str>> =
            lines[2..].iter().filter(|l| !l.is_empty()).map(|l| l.split(' ').collect()).collect();
        assert_eq!(servers.len(), 7);
        assert!(servers.iter().all(|f| f.len() == 25));
        let by_name = |n: &str| servers.iter().find(|f| f[3] == n).cloned().unwrap_or_default();

        // be_id be_name srv_id srv_name srv_addr op admin uweight iweight since ...
        assert_eq!(&by_name("app1")[..10], ["3", "etcd-cluster", "1", "app1", "10.0.0.1", "2", "0", "2", "2", "42"]);
        assert_eq!(by_name("app1")[18], "2379");
        // L7OK passed: healthcheck_status 15, chk_result 3; checks configured and enabled.
        assert_eq!(&by_name("app1")[10..14], ["15", "3", "-", "6"]);
        assert_eq!((by_name("app2")[5], by_name("app2")[6]), ("2", "0"));
        // DOWN: stopped; L4CON failed, health 0.
        assert_eq!(&by_name("app3")[5..7], ["0", "0"]);
        assert_eq!(&by_name("app3")[10..13], ["8", "2", "0"]);
        assert_eq!((by_name("api1")[4], by_name("api1")[18]), ("10.0.1.1", "6443"));
        // DRAIN runs with the forced-drain flag; MAINT is stopped, forced-maint, checks paused.
        assert_eq!(&by_name("api2")[5..7], ["2", "8"]);
        assert_eq!(&by_name("api3")[5..7], ["0", "1"]);
        assert_eq!(by_name("api3")[13], "14");
        assert_eq!(by_name("api4")[0], "4");
    }

    #[test]
    fn show_servers_state_one_backend() {
        let out = show_servers_state(&snapshot(), Some("etcd-cluster")).unwrap_or_default();
        let names: Vec<&str> = out.lines().skip(2).filter_map(|l| l.split(' ').nth(3)).collect();
        assert_eq!(names, ["app1", "app2", "app3"]);
        assert_eq!(show_servers_state(&snapshot(), Some("nope")), Err(Refusal::CantFindBackend));
    }

    #[test]
    fn rising_server_health() {
        let sv = crate::report::snapshot::sample::server("x", "10.0.0.9:1", ServerState::GoingUp);
        assert_eq!((sv.status().as_str(), check_health(&sv).as_str()), ("DOWN 1/2", "1"));
    }
}
