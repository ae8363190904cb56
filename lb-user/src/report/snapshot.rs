//! What the agent shows: one consistent picture of frontends, backends and servers, built by
//! `builder` and formatted by the renderers (HTML, Prometheus, terminal tables, HAProxy's
//! runtime formats) or sent as JSON. State here is enums and numbers; only renderers turn it
//! into words, and none of them reads words back.

use std::{fmt, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::config::{Balance, Dur};
pub use crate::{
    config::CheckKind,
    dataplane::Attached,
    health::{
        check::Code,
        state::{HealthCounts, ServerState},
    },
};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    pub pid: u32,
    /// How XDP is attached to each interface.
    pub interfaces: Vec<InterfaceStatus>,
    pub frontends: Vec<FrontendStatus>,
    pub backends: Vec<BackendStatus>,
    /// Packet counters by reason (`passed`, `forwarded`, ...).
    pub reasons: Vec<(String, u64)>,
    /// Data path events (`ts_translated`, `port_reused`, `rst_out_of_window`, ...).
    #[serde(default)]
    pub events: Vec<(String, u64)>,
    /// Frontend addresses that came or went since the start (a VIP moving here or away).
    #[serde(default)]
    pub address_changes: u64,
    /// Flow sync with peer balancers: counters by name (`flows_installed`, `dropped_bad_mac`, ...).
    #[serde(default)]
    pub sync: Vec<(String, u64)>,
    /// Peers heard of in the last seconds.
    #[serde(default)]
    pub sync_peers_up: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceStatus {
    pub name: String,
    pub xdp: Attached,
    /// The pinned XDP link still runs on the interface (see `dataplane::attach::still_attached`);
    /// `false`: the data path no longer sees its packets.
    #[serde(default = "yes")]
    pub running: bool,
}

fn yes() -> bool {
    true
}

/// `eth0:native`.
impl fmt::Display for InterfaceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.xdp)?;
        if !self.running {
            f.write_str(" (detached)")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FrontendStatus {
    pub name: String,
    /// As configured: `*:12379`.
    pub bind: String,
    pub backend: String,
    pub traffic: Traffic,
    /// Flows open now (connection table).
    pub active_flows: u64,
    /// SYNs the frontend's `allow` list refused (HAProxy's `dcon`).
    #[serde(default)]
    pub denied: u64,
}

/// A backend is UP while at least one of its servers takes new flows.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum BackendState {
    #[default]
    Up,
    Down,
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendState::Up => "UP",
            BackendState::Down => "DOWN",
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    pub name: String,
    pub status: BackendState,
    pub servers: Vec<ServerStatus>,
    /// Active (non-backup) servers UP, and backup servers UP.
    pub active_up: u32,
    pub backup_up: u32,
    /// HAProxy's backend weight: the weights of the active servers taking flows, or of the
    /// backups when no active server does (backups only take flows then).
    pub weight: u64,
    /// How it picks a server for a new flow (HAProxy's `algo`).
    #[serde(default)]
    pub balance: Balance,
    pub traffic: Traffic,
    pub active_flows: u64,
    /// Seconds the backend has had no server UP, in total.
    pub downtime_s: u64,
    pub check: CheckSummary,
    /// `verify none` on a TLS check: shown as a warning.
    pub verify_none: bool,
}

/// A backend's check settings, as its title line shows them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckSummary {
    pub kind: CheckKind,
    pub path: String,
    pub expect_status: crate::config::ExpectStatus,
    pub expect_string: Option<String>,
    pub inter: Dur,
    pub rise: u32,
    pub fall: u32,
}

impl Default for CheckSummary {
    fn default() -> Self {
        CheckSummary {
            kind: CheckKind::None,
            path: String::new(),
            expect_status: crate::config::ExpectStatus::one(0),
            expect_string: None,
            inter: Dur(std::time::Duration::ZERO),
            rise: 0,
            fall: 0,
        }
    }
}

/// `https GET /health expect 200 + "true", inter 2s rise 2 fall 3`, `tcp connect, ...`,
/// `no check`.
impl fmt::Display for CheckSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let timing = format!("inter {} rise {} fall {}", self.inter, self.rise, self.fall);
        match self.kind {
            CheckKind::None => f.write_str("no check"),
            CheckKind::Tcp => write!(f, "tcp connect, {timing}"),
            CheckKind::Tls => write!(f, "tls handshake, {timing}"),
            CheckKind::Http | CheckKind::Https => {
                let scheme = if self.kind == CheckKind::Https { "https" } else { "http" };
                write!(f, "{scheme} GET {} expect {}", self.path, self.expect_status)?;
                if let Some(s) = &self.expect_string {
                    write!(f, " + {s:?}")?;
                }
                write!(f, ", {timing}")
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerStatus {
    pub name: String,
    pub address: SocketAddr,
    pub state: ServerState,
    /// The check counter of a checked server (`None` when it is not checked).
    pub health: Option<HealthCounts>,
    /// Seconds in the current state (HAProxy's `lastchg`).
    pub since_s: u64,
    pub last_check: Option<CheckView>,
    pub weight: u32,
    /// The configured weight (`get weight`'s `initial`).
    #[serde(default)]
    pub initial_weight: u32,
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
    /// The data path suspects it (refused or unanswered SYNs in a row): no new flow until a
    /// check passes.
    #[serde(default)]
    pub suspected: bool,
}

impl ServerStatus {
    /// HAProxy's status column: `UP`, `UP 1/3`, `DOWN`, `DOWN 1/2`, `MAINT`, `DRAIN`, `no check`.
    pub fn status(&self) -> String {
        self.state.status(self.health)
    }
}

/// The last check's result, HAProxy's way: `L7OK/200 in 2ms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckView {
    pub code: Code,
    pub http_status: Option<u16>,
    pub duration_ms: u64,
    /// What the checker saw, e.g. `Connection refused`, `HTTP status 500, expected 200`.
    pub detail: String,
    /// Seconds since it finished.
    pub age_s: u64,
}

impl CheckView {
    /// HAProxy's description and the detail: `Layer4 connection problem: Connection refused`.
    pub fn description(&self) -> String {
        format!("{}: {}", self.code.description(), self.detail)
    }
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
    /// Of `total_flows`, connections made by processes on the balancer host (the connect hook).
    #[serde(default)]
    pub local_flows: u64,
}

/// Builders for the sample snapshots the renderers' tests use.
#[cfg(test)]
pub(crate) mod sample {
    use super::*;

    pub fn traffic(total: u64, rate: f64, bin: u64, bout: u64) -> Traffic {
        Traffic { total_flows: total, new_flows_per_s: rate, bytes_in: bin, bytes_out: bout, local_flows: 0 }
    }

    #[expect(clippy::unnecessary_wraps, reason = "a server's last check is an Option; samples pass it as is")]
    pub fn check(code: Code, http: Option<u16>, ms: u64, detail: &str) -> Option<CheckView> {
        Some(CheckView { code, http_status: http, duration_ms: ms, detail: detail.into(), age_s: 1 })
    }

    /// A checked server in `state`, with the counter HAProxy's rise 2 / fall 3 gives it there.
    pub fn server(name: &str, addr: &str, state: ServerState) -> ServerStatus {
        let health = match state {
            ServerState::NoCheck => None,
            ServerState::GoingDown => Some(HealthCounts { health: 2, rise: 2, fall: 3 }),
            ServerState::GoingUp => Some(HealthCounts { health: 1, rise: 2, fall: 3 }),
            ServerState::Down => Some(HealthCounts { health: 0, rise: 2, fall: 3 }),
            _ => Some(HealthCounts { health: 4, rise: 2, fall: 3 }),
        };
        ServerStatus {
            name: name.into(),
            address: addr.parse().expect("IPv4:PORT"),
            state,
            health,
            since_s: 42,
            last_check: check(Code::L7Ok, Some(200), 3, "OK"),
            weight: 1,
            initial_weight: 1,
            backup: false,
            check_failures: 0,
            down_transitions: 0,
            downtime_s: 0,
            active_flows: 0,
            traffic: Traffic::default(),
            observed_errors: 0,
            suspected: false,
        }
    }
}
