//! Active health checks with HAProxy's semantics, and passive layer-4 observation.
//!
//! One task per checked server runs its checks and keeps its own `Health` state machine, so a
//! slow or hanging server delays nobody else and its next interval follows its own state. Each
//! result goes to the agent as an `Event`; the agent (through `Registry`) keeps the latest view
//! for the status page and rewrites the kernel's healthy set when a task reports a transition.

pub mod check;
pub mod plan;
pub mod state;
pub mod tls;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    sync::{mpsc, Notify},
    task::JoinHandle,
};

use crate::{
    config::{AdminState, CheckCfg, Observe, OnMarkedDown},
    model::Topology,
    report::snapshot::CheckView,
};
use check::CheckResult;
pub use plan::{plans, Plan};
use state::{Health, ServerState, Transition};

/// One check result from a server's task.
pub struct Event {
    pub server_id: u32,
    pub result: CheckResult,
    /// The task's state machine after this result.
    pub health: Health,
    pub transition: Option<Transition>,
    /// When the task decided (for the decision-to-kernel latency).
    pub decided_at: Instant,
}

struct Checker {
    task: JoinHandle<()>,
    /// Wakes the task for a check now (passive observation saw errors).
    hurry: Arc<Notify>,
    key: String,
    /// When the task started (a check is due from then on).
    started: Instant,
}

/// The agent's view of every server's health.
#[expect(clippy::struct_excessive_bools, reason = "independent facts about a server, each a yes or no")]
#[derive(Clone)]
pub struct ServerView {
    pub pool: String,
    pub name: String,
    pub health: Health,
    pub last: Option<(CheckResult, Instant)>,
    pub checked: bool,
    pub observe: bool,
    pub error_limit: u32,
    pub on_marked_down: OnMarkedDown,
    /// Set by the configuration or the runtime API: drain and maint take no new flows.
    pub admin: AdminState,
    /// Checks disabled by hand (`disable health`).
    pub health_disabled: bool,
    /// Passive errors (RST to SYN, SYN never answered), in total and since the last hurry.
    pub observed_errors: u64,
    pending_errors: u64,
    /// The data path suspects it (refused or unanswered SYNs in a row): it gets no new flow
    /// until a check passes.
    pub suspected: bool,
}

impl ServerView {
    fn new(pool: &str, name: &str, check: &CheckCfg, health: Health) -> Self {
        ServerView {
            pool: pool.into(),
            name: name.into(),
            health,
            last: None,
            checked: false,
            observe: false,
            error_limit: check.error_limit,
            on_marked_down: check.on_marked_down,
            admin: AdminState::Ready,
            health_disabled: false,
            observed_errors: 0,
            pending_errors: 0,
            suspected: false,
        }
    }
}

/// The registry as it was (see `Registry::checkpoint`).
pub struct Checkpoint {
    servers: HashMap<u32, ServerView>,
    plans: HashMap<u32, Plan>,
}

pub struct Registry {
    pub servers: HashMap<u32, ServerView>,
    plans: HashMap<u32, Plan>,
    checkers: HashMap<u32, Checker>,
    tx: mpsc::UnboundedSender<Event>,
}

async fn run_checker(id: u32, plan: Plan, mut health: Health, tx: mpsc::UnboundedSender<Event>, hurry: Arc<Notify>) {
    let (inter, fast, down) = (plan.check.inter.0, plan.check.fastinter(), plan.check.downinter());
    loop {
        let result = check::run(&plan.spec).await;
        let now = Instant::now();
        let transition = health.record(result.code.passed(), now);
        let event = Event { server_id: id, result, health: health.clone(), transition, decided_at: now };
        if tx.send(event).is_err() {
            return;
        }
        let wait = health.interval(inter, fast, down);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = hurry.notified() => {}
        }
    }
}

impl Registry {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Registry { servers: HashMap::new(), plans: HashMap::new(), checkers: HashMap::new(), tx }, rx)
    }

    /// Starts servers as the kernel has them (a restart adopting a running data path): those in
    /// a healthy set fully UP, the others DOWN. Call before the first `apply`.
    pub fn adopt(&mut self, topo: &Topology, members: &HashSet<SocketAddr>) {
        let now = Instant::now();
        for (pool, s) in topo.servers() {
            let check = &pool.check;
            let health = Health::adopted(check.rise, check.fall, members.contains(&s.addr), now);
            self.servers.insert(s.id, ServerView::new(&pool.name, &s.name, check, health));
        }
    }

    /// What `rollback` returns to: every server's view and the plans, before a reload.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { servers: self.servers.clone(), plans: self.plans.clone() }
    }

    /// Undoes what was applied since `cp` (a reload the kernel refused): the views and plans
    /// come back, checkers whose plan changed meanwhile restart with the old one.
    pub fn rollback(&mut self, cp: Checkpoint) {
        self.servers = cp.servers;
        self.plans = cp.plans;
        let plans = &self.plans;
        for (id, c) in &self.checkers {
            if plans.get(id).map(|p| &p.key) != Some(&c.key) {
                c.task.abort();
            }
        }
        self.checkers.retain(|id, c| plans.get(id).map(|p| &p.key) == Some(&c.key));
        self.sync();
    }

    /// Whether every checked server has a result (readiness: the first checks ran).
    pub fn all_checked_once(&self) -> bool {
        self.servers.values().filter(|v| v.checked).all(|v| v.last.is_some())
    }

    /// Makes the running checks match `plans` for `topo`: new servers start checking, removed
    /// ones stop, changed ones restart keeping their state. Unchecked servers count as UP.
    pub fn apply(&mut self, topo: &Topology, plans: HashMap<u32, Plan>) {
        let now = Instant::now();
        let live: HashSet<u32> = topo.servers().map(|(_, s)| s.id).collect();
        self.servers.retain(|id, _| live.contains(id));
        // Checkers whose plan changed stop here; `sync` starts them again with the new one.
        for (id, c) in &self.checkers {
            if plans.get(id).map(|p| &p.key) != Some(&c.key) {
                c.task.abort();
            }
        }
        self.checkers.retain(|id, c| plans.get(id).map(|p| &p.key) == Some(&c.key));
        for (pool, s) in topo.servers() {
            let (id, check) = (s.id, &pool.check);
            let view = self.servers.entry(id).or_insert_with(|| {
                ServerView::new(
                    &pool.name,
                    &s.name,
                    check,
                    Health::new(check.rise, check.fall, check.initial_state, now),
                )
            });
            view.admin = s.admin;
            view.observe = plans.contains_key(&id) && check.observe == Observe::Layer4;
            view.error_limit = check.error_limit;
            view.on_marked_down = check.on_marked_down;
            view.health.rescale(check.rise, check.fall);
        }
        self.plans = plans;
        self.sync();
    }

    /// Runs a checker for exactly the servers that have a plan, are not in maintenance (HAProxy
    /// stops their checks too) and whose checks are not disabled by hand.
    pub fn sync(&mut self) {
        let wanted = |id: &u32, v: Option<&ServerView>| {
            self.plans.contains_key(id) && v.is_some_and(|v| v.admin != AdminState::Maint && !v.health_disabled)
        };
        let stop: Vec<u32> = self.checkers.keys().filter(|id| !wanted(id, self.servers.get(id))).copied().collect();
        for id in stop {
            if let Some(c) = self.checkers.remove(&id) {
                c.task.abort();
            }
        }
        for (id, plan) in &self.plans {
            if self.checkers.contains_key(id) || !wanted(id, self.servers.get(id)) {
                continue;
            }
            let Some(view) = self.servers.get(id) else { continue };
            let hurry = Arc::new(Notify::new());
            let task =
                tokio::spawn(run_checker(*id, plan.clone(), view.health.clone(), self.tx.clone(), hurry.clone()));
            self.checkers.insert(*id, Checker { task, hurry, key: plan.key.clone(), started: Instant::now() });
        }
        for (id, v) in &mut self.servers {
            v.checked = self.plans.contains_key(id) && !v.health_disabled;
        }
    }

    /// Sets a server's administrative state (configuration or runtime API); call `sync` after.
    pub fn set_admin(&mut self, id: u32, admin: AdminState) {
        if let Some(v) = self.servers.get_mut(&id) {
            v.admin = admin;
        }
    }

    /// HAProxy's `disable health` / `enable health`: a server whose checks are disabled counts
    /// as UP ("no check"); call `sync` after.
    pub fn set_health_enabled(&mut self, id: u32, enabled: bool) {
        if let Some(v) = self.servers.get_mut(&id) {
            v.health_disabled = !enabled;
        }
    }

    /// Takes a task's result in; returns its transition, if any.
    pub fn record(&mut self, ev: Event) -> Option<Transition> {
        let view = self.servers.get_mut(&ev.server_id)?;
        view.health = ev.health;
        view.last = Some((ev.result, ev.decided_at));
        ev.transition
    }

    /// Whether server `id` may take new flows.
    pub fn is_up(&self, id: u32) -> bool {
        self.servers.get(&id).is_none_or(|v| v.admin == AdminState::Ready && (!v.checked || v.health.is_up()))
    }

    pub fn state(&self, id: u32) -> ServerState {
        match self.servers.get(&id) {
            Some(v) if v.admin == AdminState::Maint => ServerState::Maint,
            Some(v) if v.admin == AdminState::Drain => ServerState::Drain,
            Some(v) if v.checked => v.health.state(),
            _ => ServerState::NoCheck,
        }
    }

    /// Passive layer-4 errors seen for `id` since the last call; at the error limit the server
    /// is checked at once (HAProxy `observe layer4` with `on-error fastinter`).
    pub fn observe(&mut self, id: u32, new_errors: u64) {
        let Some(v) = self.servers.get_mut(&id) else { return };
        v.observed_errors += new_errors;
        if !v.observe || new_errors == 0 {
            return;
        }
        v.pending_errors += new_errors;
        if v.pending_errors >= u64::from(v.error_limit) {
            v.pending_errors = 0;
            if let Some(c) = self.checkers.get(&id) {
                log::warn!(
                    "Server {}/{}: {} connection errors seen (RST or no answer to SYN): checking now",
                    v.pool,
                    v.name,
                    v.error_limit
                );
                c.hurry.notify_one();
            }
        }
    }

    /// Checks server `id` now (its task wakes up), e.g. when the data path suspects it.
    pub fn check_now(&self, id: u32) {
        if let Some(c) = self.checkers.get(&id) {
            c.hurry.notify_one();
        }
    }

    /// Checked servers whose checks are late: no result for longer than their longest interval
    /// and timeout allow, and `grace` more. None late means the checks are running, which is
    /// what the systemd watchdog is told.
    pub fn late(&self, now: Instant, grace: Duration) -> Vec<(String, String)> {
        let mut late = Vec::new();
        for (id, c) in &self.checkers {
            let (Some(plan), Some(view)) = (self.plans.get(id), self.servers.get(id)) else { continue };
            let last = view.last.as_ref().map_or(c.started, |(_, at)| (*at).max(c.started));
            let due = plan.check.inter.0.max(plan.check.fastinter()).max(plan.check.downinter()) + plan.check.timeout();
            if now.saturating_duration_since(last) > due + grace {
                late.push((view.pool.clone(), view.name.clone()));
            }
        }
        late
    }

    pub fn check_view(&self, id: u32, now: Instant) -> Option<CheckView> {
        let (r, at) = self.servers.get(&id)?.last.as_ref()?;
        Some(CheckView {
            code: r.code,
            http_status: r.http_status,
            duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
            detail: r.detail.clone(),
            age_s: now.saturating_duration_since(*at).as_secs(),
        })
    }

    pub fn stop(&mut self) {
        for c in self.checkers.values() {
            c.task.abort();
        }
        self.checkers.clear();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The transition log line, HAProxy's wording.
pub fn transition_line(
    pool: &str,
    server: &str,
    t: Transition,
    r: &CheckResult,
    active: usize,
    backup: usize,
) -> String {
    let code = r.http_status.map(|c| format!(", code: {c}")).unwrap_or_default();
    match t {
        Transition::Down => format!(
            "Server {pool}/{server} is DOWN, reason: {}{code}, info: \"{}\", check duration: {}ms. {active} active and {backup} backup servers left.",
            r.code.description(), r.detail, r.duration.as_millis()
        ),
        Transition::Up => format!(
            "Server {pool}/{server} is UP, reason: {}{code}, check duration: {}ms. {active} active and {backup} backup servers online.",
            r.code.description(), r.duration.as_millis()
        ),
    }
}

/// How often the agent reads the passive-observation counters.
pub const OBSERVE_PERIOD: Duration = Duration::from_millis(200);
