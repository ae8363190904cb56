//! What the agent shows: one consistent picture of frontends, backends and servers, built by
//! the agent and rendered by `statuspage` (HTML, terminal table, Prometheus) or as JSON.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    pub pid: u32,
    /// XDP mode per interface, e.g. `eth0:native`.
    pub interfaces: Vec<String>,
    pub frontends: Vec<FrontendStatus>,
    pub backends: Vec<BackendStatus>,
    /// Packet counters by reason (`passed`, `forwarded`, ...).
    pub reasons: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FrontendStatus {
    pub name: String,
    pub bind: String,
    pub backend: String,
    pub traffic: Traffic,
    /// Flows open now (connection table).
    pub active_flows: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    pub name: String,
    /// `UP` while at least one server takes flows, else `DOWN`.
    pub status: String,
    pub servers: Vec<ServerStatus>,
    /// Active (non-backup) servers UP, and backup servers UP.
    pub active_up: u32,
    pub backup_up: u32,
    pub traffic: Traffic,
    pub active_flows: u64,
    /// Seconds the backend has had no server UP, in total.
    pub downtime_s: u64,
    /// The check's kind and target, e.g. `https GET /health expect 200 + "true"`.
    pub check: String,
    /// `verify none` on a TLS check: shown as a warning.
    pub verify_none: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum ServerState {
    #[default]
    Up,
    /// UP, failing checks (`UP x/fall`).
    GoingDown,
    Down,
    /// DOWN, passing checks (`DOWN x/rise`).
    GoingUp,
    /// Administratively off: no new flows, no checks.
    Maint,
    /// No new flows, open flows stay, checks go on.
    Drain,
    /// Not checked: counts as UP.
    NoCheck,
}

impl ServerState {
    /// Whether the server may take new flows.
    pub fn takes_flows(self) -> bool {
        matches!(self, ServerState::Up | ServerState::GoingDown | ServerState::NoCheck)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerStatus {
    pub name: String,
    pub address: String,
    pub state: ServerState,
    /// HAProxy's wording: `UP`, `UP 1/3`, `DOWN`, `DOWN 1/2`, `MAINT`, `DRAIN`, `no check`.
    pub status: String,
    /// Seconds in the current state (HAProxy's `lastchg`).
    pub since_s: u64,
    pub last_check: Option<CheckView>,
    pub weight: u32,
    pub backup: bool,
    /// Checks that failed, in total (HAProxy `chkfail`).
    pub check_failures: u64,
    /// Transitions UP -> DOWN (HAProxy `chkdown`).
    pub down_transitions: u64,
    /// Seconds DOWN, in total (HAProxy `downtime`).
    pub downtime_s: u64,
    pub active_flows: u64,
    pub traffic: Traffic,
    /// SYNs answered by RST or never answered (passive layer-4 observation).
    pub observed_errors: u64,
}

/// The last check's result, HAProxy's way: `L7OK/200 in 2ms`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CheckView {
    /// `L4OK`, `L4TOUT`, `L4CON`, `L6OK`, `L6TOUT`, `L6RSP`, `SOCKERR`, `L7OK`, `L7TOUT`,
    /// `L7RSP`, `L7STS`.
    pub code: String,
    pub http_status: Option<u16>,
    pub duration_ms: u64,
    /// HAProxy's description, e.g. `Layer6 timeout`, plus detail.
    pub description: String,
    /// Seconds since it finished.
    pub age_s: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    /// Flows opened, in total (HAProxy `stot`).
    pub total_flows: u64,
    /// New flows per second over the last few seconds (HAProxy `rate`).
    pub new_flows_per_s: f64,
    /// Client -> server and server -> client, IP bytes.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Builders for the sample snapshots the renderers' tests use.
#[cfg(test)]
pub(crate) mod sample {
    use super::*;

    pub fn traffic(total: u64, rate: f64, bin: u64, bout: u64) -> Traffic {
        Traffic { total_flows: total, new_flows_per_s: rate, bytes_in: bin, bytes_out: bout }
    }

    pub fn check(code: &str, http: Option<u16>, ms: u64, desc: &str) -> Option<CheckView> {
        Some(CheckView { code: code.into(), http_status: http, duration_ms: ms, description: desc.into(), age_s: 1 })
    }
}
