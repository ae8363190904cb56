//! A sample snapshot for the renderers' tests: every state, a backup, a name that needs
//! escaping.

use super::snapshot::{
    sample::{check, traffic},
    BackendStatus, CheckView, FrontendStatus, ServerState, ServerStatus, Snapshot,
};

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

pub const WEIRD: &str = "cp2<&\">";

pub fn snapshot() -> Snapshot {
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
            server(WEIRD, "10.0.1.2:6443", ServerState::Maint, "MAINT", 86_400 * 2 + 3600, None, false),
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
        reasons: vec![("passed".into(), 100), ("forwarded".into(), 5000), ("dropped".into(), 3)],
    }
}
