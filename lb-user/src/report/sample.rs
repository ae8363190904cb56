//! A sample snapshot for the renderers' tests: every state, a backup, a name that needs
//! escaping.

use super::snapshot::{
    sample::{check, server, traffic},
    BackendState, BackendStatus, CheckKind, CheckSummary, CheckView, Code, FrontendStatus, InterfaceStatus,
    ServerState, ServerStatus, Snapshot,
};
use crate::{config::Dur, dataplane::Attached};

fn busy(name: &str, addr: &str, state: ServerState, since_s: u64, last_check: Option<CheckView>) -> ServerStatus {
    ServerStatus {
        since_s,
        last_check,
        check_failures: 3,
        down_transitions: 1,
        downtime_s: 42,
        active_flows: 7,
        traffic: traffic(1234, 2.5, 5_000_000, 70_000),
        observed_errors: 2,
        ..server(name, addr, state)
    }
}

fn https(path: &str, expect_string: Option<&str>) -> CheckSummary {
    CheckSummary {
        kind: CheckKind::Https,
        path: path.into(),
        expect_status: crate::config::ExpectStatus::one(200),
        expect_string: expect_string.map(Into::into),
        inter: Dur(std::time::Duration::from_secs(2)),
        rise: 2,
        fall: 3,
    }
}

pub const WEIRD: &str = "cp2<&\">";

pub fn snapshot() -> Snapshot {
    let etcd = BackendStatus {
        name: "etcd-cluster".into(),
        status: BackendState::Up,
        servers: vec![
            busy("app1", "10.0.0.1:2379", ServerState::Up, 3723, check(Code::L7Ok, Some(200), 2, "OK")),
            busy("app2", "10.0.0.2:2379", ServerState::GoingDown, 303, check(Code::L7Sts, Some(503), 3, "HTTP 503")),
            busy("app3", "10.0.0.3:2379", ServerState::Down, 12, check(Code::L6Tout, None, 2001, "no handshake")),
        ],
        active_up: 2,
        backup_up: 0,
        weight: 2,
        balance: crate::config::Balance::Roundrobin,
        traffic: traffic(5000, 12.0, 9_000_000, 8_000_000),
        active_flows: 30,
        downtime_s: 0,
        check: https("/health", Some("true")),
        verify_none: true,
    };
    let api = BackendStatus {
        name: "apiserver-cluster".into(),
        status: BackendState::Up,
        servers: vec![
            busy("cp1", "10.0.1.1:6443", ServerState::Drain, 60, check(Code::L7Ok, Some(200), 5, "<OK> & \"fine\"")),
            busy(WEIRD, "10.0.1.2:6443", ServerState::Maint, 86_400 * 2 + 3600, None),
            ServerStatus {
                backup: true,
                ..busy("cp3", "10.0.1.3:6443", ServerState::Up, 99, check(Code::L6Ok, None, 4, "TLS handshake done"))
            },
        ],
        active_up: 0,
        backup_up: 1,
        weight: 1,
        balance: crate::config::Balance::Roundrobin,
        traffic: traffic(800, 0.3, 1_000, 2_000),
        active_flows: 4,
        downtime_s: 17,
        check: https("/readyz", None),
        verify_none: true,
    };
    Snapshot {
        version: "0.1.0".into(),
        uptime_s: 93_784,
        pid: 4242,
        interfaces: vec![
            InterfaceStatus { name: "eth0".into(), xdp: Attached::Native, running: true },
            InterfaceStatus { name: "eth1".into(), xdp: Attached::Generic, running: true },
        ],
        frontends: vec![
            FrontendStatus {
                name: "in-etcd".into(),
                bind: "*:12379".into(),
                backend: "etcd-cluster".into(),
                traffic: traffic(5000, 12.0, 9_000_000, 8_000_000),
                active_flows: 30,
                denied: 2,
            },
            FrontendStatus {
                name: "in-apiserver".into(),
                bind: "*:16443".into(),
                backend: "apiserver-cluster".into(),
                traffic: traffic(800, 0.3, 1_000, 2_000),
                active_flows: 4,
                denied: 0,
            },
        ],
        backends: vec![etcd, api],
        reasons: vec![("passed".into(), 100), ("forwarded".into(), 5000), ("dropped".into(), 3)],
        events: vec![("ts_translated".into(), 40), ("port_reused".into(), 7)],
        address_changes: 0,
        sync: vec![],
        sync_peers_up: 0,
    }
}
