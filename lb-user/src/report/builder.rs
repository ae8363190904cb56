//! The agent's state as one `Snapshot`, built once a second and at every transition from the
//! topology, the health registry and the kernel's counters. Rates, downtimes and the backend
//! weight are computed here, once, for every renderer.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::snapshot::{
    BackendState, BackendStatus, CheckSummary, FrontendStatus, InterfaceStatus, ServerStatus, Snapshot, Traffic,
};
use crate::{
    config::{CheckCfg, Verify},
    dataplane::{counters::Counters, flows::Sweep},
    health::Registry,
    model::Topology,
};

/// Keeps what a snapshot needs across builds: rates and downtimes.
pub struct Builder {
    started: Instant,
    interfaces: Vec<InterfaceStatus>,
    /// (kind, id) -> (total flows, when): for new flows per second.
    prev: HashMap<(u8, u32), (u64, Instant)>,
    backend_down: HashMap<u32, (Duration, Option<Instant>)>,
}

fn traffic(s: &lb_common::TrafficStats, rate: f64) -> Traffic {
    Traffic {
        total_flows: s.new_flows,
        new_flows_per_s: rate,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        local_flows: s.local_connections,
    }
}

fn check_summary(c: &CheckCfg) -> CheckSummary {
    CheckSummary {
        kind: c.kind,
        path: c.path.clone(),
        expect_status: c.expect_status,
        expect_string: c.expect_string.clone(),
        inter: c.inter,
        rise: c.rise,
        fall: c.fall,
    }
}

/// HAProxy's backend weight: the weights of the active servers taking flows, or of the backups
/// when no active server does.
fn backend_weight(servers: &[ServerStatus]) -> u64 {
    let weight = |backup: bool| -> u64 {
        servers.iter().filter(|s| s.backup == backup && s.state.takes_flows()).map(|s| u64::from(s.weight)).sum()
    };
    let active_up = servers.iter().any(|s| !s.backup && s.state.takes_flows());
    weight(!active_up)
}

impl Builder {
    pub fn new(interfaces: Vec<InterfaceStatus>) -> Self {
        Builder { started: Instant::now(), interfaces, prev: HashMap::new(), backend_down: HashMap::new() }
    }

    #[expect(clippy::cast_precision_loss, reason = "flow counts per second are far below 2^52")]
    fn rate(&mut self, kind: u8, id: u32, total: u64, now: Instant) -> f64 {
        let (prev, at) = self.prev.insert((kind, id), (total, now)).unwrap_or((total, now));
        let secs = now.duration_since(at).as_secs_f64();
        if secs > 0.0 {
            total.saturating_sub(prev) as f64 / secs
        } else {
            0.0
        }
    }

    pub fn build(&mut self, topo: &Topology, reg: &Registry, counters: &Counters, sweep: &Sweep) -> Snapshot {
        let now = Instant::now();
        let mut snap = Snapshot {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: self.started.elapsed().as_secs(),
            pid: std::process::id(),
            interfaces: self.interfaces.clone(),
            ..Snapshot::default()
        };
        for f in &topo.frontends {
            let st = counters.frontend(f.id).unwrap_or_default();
            let rate = self.rate(0, f.id, st.new_flows, now);
            snap.frontends.push(FrontendStatus {
                name: f.name.clone(),
                bind: f.bind.clone(),
                backend: f.backend.clone(),
                traffic: traffic(&st, rate),
                active_flows: sweep.active_by_frontend.get(&f.id).copied().unwrap_or(0),
                denied: st.denied,
            });
        }
        for pool in &topo.pools {
            let check = &pool.check;
            let mut b = BackendStatus {
                name: pool.name.clone(),
                check: check_summary(check),
                balance: pool.balance,
                verify_none: check.kind.is_tls() && check.verify == Verify::None,
                ..BackendStatus::default()
            };
            for s in &pool.servers {
                let st = counters.server(s.id).unwrap_or_default();
                let rate = self.rate(1, s.id, st.new_flows, now);
                let view = reg.servers.get(&s.id);
                let state = reg.state(s.id);
                let up = reg.is_up(s.id);
                if up && s.backup {
                    b.backup_up += 1;
                } else if up {
                    b.active_up += 1;
                }
                let active = sweep.active_by_server.get(&s.id).copied().unwrap_or(0);
                b.active_flows += active;
                b.traffic.total_flows += st.new_flows;
                b.traffic.new_flows_per_s += rate;
                b.traffic.bytes_in += st.bytes_in;
                b.traffic.bytes_out += st.bytes_out;
                b.traffic.local_flows += st.local_connections;
                b.servers.push(ServerStatus {
                    name: s.name.clone(),
                    address: s.addr,
                    state,
                    health: view.filter(|v| v.checked).map(|v| v.health.counts()),
                    since_s: view.map_or(0, |v| now.saturating_duration_since(v.health.since()).as_secs()),
                    last_check: reg.check_view(s.id, now),
                    weight: s.weight,
                    initial_weight: s.initial_weight,
                    backup: s.backup,
                    check_failures: view.map_or(0, |v| v.health.check_failures),
                    down_transitions: view.map_or(0, |v| v.health.down_transitions),
                    downtime_s: view.map_or(0, |v| v.health.downtime(now).as_secs()),
                    active_flows: active,
                    traffic: traffic(&st, rate),
                    observed_errors: view.map_or(0, |v| v.observed_errors),
                    suspected: view.is_some_and(|v| v.suspected),
                });
            }
            let any_up = b.active_up + b.backup_up > 0;
            b.status = if any_up { BackendState::Up } else { BackendState::Down };
            b.weight = backend_weight(&b.servers);
            let (total, since) = self.backend_down.entry(pool.id).or_insert((Duration::ZERO, None));
            match (any_up, *since) {
                (false, None) => *since = Some(now),
                (true, Some(t)) => {
                    *total += now - t;
                    *since = None;
                }
                _ => {}
            }
            b.downtime_s = (*total + since.map(|t| now - t).unwrap_or_default()).as_secs();
            snap.backends.push(b);
        }
        snap.reasons = counters
            .reasons()
            .map(|r| r.into_iter().map(|(k, v)| (k.name().to_string(), v)).collect())
            .unwrap_or_default();
        snap.events = counters
            .events()
            .map(|r| r.into_iter().map(|(k, v)| (k.name().to_string(), v)).collect())
            .unwrap_or_default();
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::snapshot::{sample::server, ServerState};

    #[test]
    fn backend_weight_falls_back_to_backups() {
        let mut servers = vec![
            ServerStatus { weight: 10, ..server("a", "10.0.0.1:1", ServerState::Up) },
            ServerStatus { weight: 7, ..server("d", "10.0.0.2:1", ServerState::Drain) },
            ServerStatus { weight: 5, backup: true, ..server("b", "10.0.0.3:1", ServerState::Up) },
        ];
        assert_eq!(backend_weight(&servers), 10, "drained servers and waiting backups weigh nothing");
        servers[0].state = ServerState::Down;
        assert_eq!(backend_weight(&servers), 5, "with no active server UP, the backups take the flows");
    }
}
