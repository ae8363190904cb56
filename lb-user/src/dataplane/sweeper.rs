//! The connection table's sweep, off the agent's loop: a thread of its own owns the table,
//! sweeps it a bounded slice at a time (`SLICE` entries per tick, read in batches), and removes
//! a server's flows when told to. The agent's loop, which applies health transitions to the
//! kernel, never waits for it, however big the table.

use std::{
    collections::HashMap,
    sync::{mpsc, Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use lb_common::FlowEvent;

use super::flows::{monotonic_ns, FlowPair, FlowTable, FlowView, Installed, Sweep, Timeouts};

/// Turns the open flows into an answer (`show sess`), on the sweep's thread.
pub type FlowReport = Box<dyn FnOnce(Vec<FlowView>) -> String + Send>;

/// Entries one tick of the sweep reads at most: a table of millions is swept over several
/// ticks, none of which keeps the thread (or a core) long.
pub const SLICE: usize = 64 * 1024;

enum Order {
    /// Remove every flow of this server (`shutdown-sessions`); the label names it in the log.
    RemoveServer {
        id: u32,
        label: String,
        why: &'static str,
        done: Option<tokio::sync::oneshot::Sender<String>>,
    },
    Settings {
        every: Duration,
        timeouts: Timeouts,
        report_expired: bool,
    },
    /// List the open flows and answer with `report` of them (`show sess`).
    List {
        report: FlowReport,
        done: tokio::sync::oneshot::Sender<String>,
    },
    /// Flows a peer balancer handles (`sync`): install them, or remove those it saw end.
    Install(Vec<FlowPair>, tokio::sync::oneshot::Sender<Installed>),
    Remove(Vec<FlowPair>, tokio::sync::oneshot::Sender<usize>),
    /// Every established flow, for a peer that needs them all.
    Dump(tokio::sync::oneshot::Sender<Vec<FlowPair>>),
}

#[derive(Debug, Default)]
struct Shared {
    /// The last complete sweep.
    last: Sweep,
    /// SYNs never answered, per server, not yet taken by the agent.
    unanswered: HashMap<u32, u64>,
}

/// The agent's side of the sweep.
pub struct Sweeper {
    orders: mpsc::Sender<Order>,
    shared: Arc<Mutex<Shared>>,
}

/// A background thread of the agent (the sweep, the flow log) runs as `SCHED_BATCH`: on the
/// cores that also carry the traffic's user-space ends (proxies, clients, servers on this host),
/// its periodic work never preempts them when it wakes, which showed in their tail latency.
pub(super) fn background() {
    if let Err(e) = super::sys::batch_scheduling() {
        log::debug!("background thread keeps the default scheduling: {e}");
    }
}

impl Sweeper {
    /// Starts the sweep of `table` every `every`; flows it expires without a packet having ended
    /// them go to `expired` when `table.report_expired` (the per-connection log).
    pub fn spawn(
        mut table: FlowTable,
        every: Duration,
        timeouts: Timeouts,
        expired: mpsc::Sender<FlowEvent>,
    ) -> std::io::Result<Sweeper> {
        let (orders, rx) = mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let out = shared.clone();
        std::thread::Builder::new().name("xdplb-sweep".into()).spawn(move || {
            background();
            let (mut every, mut timeouts) = (every, timeouts);
            let mut next = Instant::now() + every;
            // When the pass in progress began, and in how many slices it went so far.
            let (mut pass_started, mut slices) = (Instant::now(), 0u32);
            loop {
                match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                    Ok(Order::RemoveServer { id, label, why, done }) => {
                        let n = table.remove_server_flows(id);
                        log::warn!("Server {label}: {n} flow(s) shut down ({why})");
                        if let Some(done) = done {
                            let _ = done.send(String::new());
                        }
                    }
                    Ok(Order::Settings { every: e, timeouts: t, report_expired }) => {
                        (every, timeouts) = (e, t);
                        table.report_expired = report_expired;
                    }
                    Ok(Order::List { report, done }) => {
                        let _ = done.send(report(table.flows()));
                    }
                    Ok(Order::Install(pairs, done)) => {
                        let _ = done.send(table.install(&pairs, monotonic_ns()));
                    }
                    Ok(Order::Remove(pairs, done)) => {
                        let _ = done.send(table.remove_pairs(&pairs));
                    }
                    Ok(Order::Dump(done)) => {
                        let _ = done.send(table.established_pairs());
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        next = Instant::now() + every;
                        if slices == 0 {
                            pass_started = Instant::now();
                        }
                        slices += 1;
                        if let Some(mut s) = table.sweep_step(monotonic_ns(), &timeouts, SLICE) {
                            for e in std::mem::take(&mut s.expired) {
                                let _ = expired.send(e);
                            }
                            if slices > 1 {
                                log::info!(
                                    "conntrack: swept {} flow(s) in {:?}, {slices} slices of at most {SLICE} entries, one per {every:?}",
                                    s.flows,
                                    pass_started.elapsed()
                                );
                            } else if s.removed > 0 {
                                log::debug!(
                                    "conntrack: {} flow(s), {} expired, swept in {:?}",
                                    s.flows,
                                    s.removed,
                                    pass_started.elapsed()
                                );
                            }
                            let mut shared = out.lock().unwrap_or_else(PoisonError::into_inner);
                            for (&id, &n) in &s.unanswered_by_server {
                                *shared.unanswered.entry(id).or_default() += n;
                            }
                            shared.last = s;
                            slices = 0;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
        Ok(Sweeper { orders, shared })
    }

    /// The last complete sweep (open flows per server and frontend).
    pub fn last(&self) -> Sweep {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).last.clone()
    }

    /// SYNs never answered since the last call, per server (passive observation).
    pub fn take_unanswered(&self) -> HashMap<u32, u64> {
        std::mem::take(&mut self.shared.lock().unwrap_or_else(PoisonError::into_inner).unanswered)
    }

    /// Removes every flow of server `id` (done by the sweep's thread, which logs how many, then
    /// sends `done` an empty answer: the runtime API's caller hears back once they are gone).
    pub fn remove_server_flows(
        &self,
        id: u32,
        label: String,
        why: &'static str,
        done: Option<tokio::sync::oneshot::Sender<String>>,
    ) {
        let _ = self.orders.send(Order::RemoveServer { id, label, why, done });
    }

    /// A handle for the flow sync with peer balancers, which installs and reads flows through
    /// this thread (the table's one owner).
    pub fn handle(&self) -> FlowsHandle {
        FlowsHandle { orders: self.orders.clone() }
    }

    /// Answers `done` with `report` of the open flows, read by the sweep's thread (the table's
    /// one owner) between two slices.
    pub fn list(&self, report: FlowReport, done: tokio::sync::oneshot::Sender<String>) {
        let _ = self.orders.send(Order::List { report, done });
    }

    /// New sweep interval, timeouts and whether expired flows are reported (per-connection log, flow sync; a reload).
    pub fn set(&self, every: Duration, timeouts: Timeouts, report_expired: bool) {
        let _ = self.orders.send(Order::Settings { every, timeouts, report_expired });
    }
}

/// What the flow sync may ask of the table's owner (see `Sweeper::handle`).
#[derive(Clone)]
pub struct FlowsHandle {
    orders: mpsc::Sender<Order>,
}

impl FlowsHandle {
    pub async fn install(&self, pairs: Vec<FlowPair>) -> Installed {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.orders.send(Order::Install(pairs, tx)).is_err() {
            return Installed::default();
        }
        rx.await.unwrap_or_default()
    }

    pub async fn remove(&self, pairs: Vec<FlowPair>) -> usize {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.orders.send(Order::Remove(pairs, tx)).is_err() {
            return 0;
        }
        rx.await.unwrap_or_default()
    }

    pub async fn dump(&self) -> Vec<FlowPair> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.orders.send(Order::Dump(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}
