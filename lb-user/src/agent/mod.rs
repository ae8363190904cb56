//! `xdplb run`: validate everything, then load, fill the maps, attach, run the health checks,
//! keep the kernel's healthy sets true to them, sweep the connection table and serve the status
//! page until told to stop. SIGHUP re-reads the configuration.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

mod commands;
mod local;
mod prepare;

use commands::apply_overrides;
use prepare::{prepare, Prepared};
pub use prepare::{Refused, RunOptions};

use crate::{
    config::{Global, OnMarkedDown},
    dataplane::{
        self,
        counters::Counters,
        flow_events::FlowEvents,
        flows::{monotonic_ns, FlowTable, Sweep, Timeouts},
        maps::MapOwner,
        sweeper::Sweeper,
        LoadOptions,
    },
    health::{self, state::Transition, Registry},
    host::{
        addrwatch::{self, AddrChange},
        limits, netif, service,
        sysctl::HostChanges,
    },
    model::Topology,
    report::{
        builder,
        snapshot::{InterfaceStatus, Snapshot},
        tcplog::TcpLog,
    },
    runtime::{self, Overrides},
    sync::{FlowEvent, Sync},
};

/// How late a server's check may be before the watchdog is no longer pinged.
const WATCHDOG_GRACE: Duration = Duration::from_secs(5);

/// The sweep reports the flows it expires: to the per-connection log, and to the peers.
fn reports_expired(g: &Global) -> bool {
    g.tcplog || g.sync.is_some()
}

fn timeouts(g: &Global) -> Timeouts {
    Timeouts { idle: g.idle_timeout.0, syn: g.syn_timeout.0, linger: g.close_linger.0, time_wait: g.server_time_wait.0 }
}

/// The running agent: the single owner of the maps, the checks and what the status page shows.
struct Agent {
    opts: RunOptions,
    global: Global,
    topology: Topology,
    /// The IPv6 connection tables were sized for IPv6 servers when the agent started.
    ipv6: bool,
    owner: MapOwner,
    /// The connection table's sweep, on a thread of its own.
    sweeper: Sweeper,
    counters: Counters,
    registry: Registry,
    status: builder::Builder,
    shared: Arc<RwLock<Snapshot>>,
    /// What the per-connection log names frontend and server ids by.
    names: Arc<RwLock<runtime::sess::Names>>,
    last_sweep: Sweep,
    syn_rst_seen: HashMap<u32, u64>,
    /// Per server, what the data path's suspicion said last (see `observe_suspicion`).
    suspicion: HashMap<u32, Suspected>,
    /// Server states set by hand (runtime API), kept in `global.state_file`.
    overrides: Overrides,
    /// What the agent changed on the host, recorded for `xdplb detach`.
    host: HostChanges,
    /// Frontend addresses that came or went since the start (a VIP moving, an address added).
    address_changes: u64,
    /// Flow sync with peer balancers (`global.sync`), and where the data path's flow reports
    /// go for it.
    sync: Option<(Sync, tokio::sync::mpsc::Sender<FlowEvent>)>,
    /// Whether flow events make per-connection log lines (`tcplog`, changed by a reload).
    tcplog_on: Arc<AtomicBool>,
}

/// A server the data path suspected: when (its clock, to answer it), and when the agent saw it
/// (a check must have started after that to clear it).
#[derive(Default, Clone, Copy)]
struct Suspected {
    count_seen: u32,
    open: Option<(u64, std::time::Instant)>,
}

/// What loading the data path cost: the verifier's walk is most of an agent's start (and of a
/// restart's, while checks wait), and grows with CPU contention.
fn log_verified(ebpf: &aya::Ebpf, took: Duration, ipv6: bool) {
    let walked = dataplane::verified(ebpf);
    if let Some((most, n)) = walked.first() {
        log::info!(
            "data path loaded in {:.1} s: the kernel's verifier walked {} instructions over {} programs, at most {n} in one ({most}; its limit is {})",
            took.as_secs_f64(),
            walked.iter().map(|(_, n)| u64::from(*n)).sum::<u64>(),
            walked.len(),
            dataplane::VERIFIER_LIMIT,
        );
    }
    match (ipv6, dataplane::ipv6_stages_loaded(ebpf)) {
        (false, false) => {
            log::info!("no IPv6 server: the IPv6 stages are not loaded, IPv6 frames go to the kernel untouched");
        }
        (false, true) => log::warn!(
            "no IPv6 server, but the adopted IPv6 connection table holds a previous agent's flows: the IPv6 stages are loaded for them (not after the next restart)"
        ),
        _ => {}
    }
}

#[expect(clippy::too_many_lines, reason = "the start-up sequence reads in order, one step after the other")]
pub async fn run(opts: RunOptions) -> Result<()> {
    let Prepared { global, ifaces, topology, plans } = prepare(&opts, None)?;
    let g = &global;
    service::check_privileges().map_err(|e| Refused(e.to_string()))?;
    let lock = service::lock(&g.pin_dir).map_err(|e| Refused(e.to_string()))?;
    // Descriptors: as many as the agent may have, the checks' share kept from local clients.
    let (before, nofile) = limits::raise_nofile();
    let budget = limits::budget(nofile, plans.len());
    log::info!(
        "open files: {nofile}{}; {} kept for {} checked server(s) and the agent, status page {} clients, runtime sockets {} sessions each",
        if nofile > before { format!(" (raised from {before})") } else { String::new() },
        budget.reserved,
        plans.len(),
        budget.status_clients,
        budget.runtime_sessions
    );
    // The status page and the runtime sockets next, before the kernel is touched.
    let listeners = local::bind(g, &budget)?;
    let (overrides, set_aside) = Overrides::load_or_set_aside(&g.state_file);
    if let Some((aside, e)) = set_aside {
        log::warn!(
            "global.state_file: {e}; kept aside as {}, starting without the states set by hand (set them again, or restore the file while the agent is stopped)",
            aside.display()
        );
    }

    // Host changes are recorded so that `xdplb detach` can undo them.
    let mut host = HostChanges::open(&g.pin_dir);
    host.reserve_ports(g.nat_ports).context("reserving the NAT source ports (net.ipv4.ip_local_reserved_ports)")?;
    // The IPv6 tables are sized now, for good: like IPv4's with IPv6 servers, small without.
    let ipv6 = dataplane::memory::topology_has_ipv6(&topology);
    // What they lock, from the kernel's BTF (a read of several MB), here, before the data path
    // takes any flow.
    let tables = dataplane::memory::TableMemory::here(g.max_flows, g.max_half_open, ipv6);
    for i in &ifaces {
        host.prepare_interface(&i.name).with_context(|| format!("setting forwarding sysctls on {}", i.name))?;
        if ipv6 {
            host.prepare_interface6(&i.name)
                .with_context(|| format!("setting IPv6 forwarding sysctls on {}", i.name))?;
        }
    }
    // A data path this agent creates and then fails to attach leaves nothing pinned behind.
    let mut new_pins = PinGuard { dir: g.pin_dir.clone(), armed: !g.pin_dir.exists() };
    let loading = std::time::Instant::now();
    let mut ebpf = dataplane::load(&LoadOptions {
        pin_dir: Some(g.pin_dir.clone()),
        max_flows: g.max_flows,
        max_half_open: g.max_half_open,
        ipv6,
    })
    .context("loading the XDP data path")?;
    log_verified(&ebpf, loading.elapsed(), ipv6);
    let mut owner = MapOwner::take(&mut ebpf)?;
    // Subscribed before the frontends are written, so no address change after it is missed.
    let (addr_tx, mut addr_rx) = tokio::sync::mpsc::channel(64);
    addrwatch::spawn(addr_tx).context("watching the host's addresses (netlink)")?;
    owner.write_settings(g)?;
    owner.write_tx_ports(&ifaces)?;
    let (mut registry, mut events) = Registry::new();
    // A previous agent's data path: start from the servers its kernel sets hold, so that a
    // restart changes nothing for the traffic.
    let members = owner.members();
    if !members.is_empty() {
        log::info!("adopting the pinned data path: {} server(s) were taking flows", members.len());
        registry.adopt(&topology, &members);
    }
    registry.apply(&topology, plans);
    let mut topology = topology;
    apply_overrides(&overrides, &mut topology, &mut registry);
    owner.apply(&topology, &|id| registry.is_up(id))?;
    let flows = FlowTable::take(&mut ebpf)?;
    let (expired_tx, expired_rx) = std::sync::mpsc::channel();
    let sweeper = Sweeper::spawn(flows, g.gc_interval.0, timeouts(g), expired_tx)
        .context("starting the connection table's sweep")?;
    sweeper.set(g.gc_interval.0, timeouts(g), reports_expired(g));
    let sync = match &g.sync {
        None => None,
        Some(cfg) => {
            let secret =
                crate::config::sync_key(&cfg.key_file).map_err(|e| Refused(format!("global.sync.key_file: {e}")))?;
            let (tx, rx) = tokio::sync::mpsc::channel(64 * 1024);
            let s = Sync::start(cfg, &secret, &topology, sweeper.handle(), rx)
                .await
                .with_context(|| format!("starting the flow sync on {} (global.sync.listen)", cfg.listen))?;
            let (first, count, _) = g.own_nat_ports();
            log::info!(
                "flow sync: node {} of {}, listening on {}, peers {}; NAT ports {first}-{} are this node's share",
                cfg.node,
                cfg.nodes(),
                cfg.listen,
                cfg.peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                first + count.saturating_sub(1)
            );
            Some((s, tx))
        }
    };
    // The data path's flow events (sent only while the log or the sync wants them) and the
    // sweep's expiries: one line per connection when `tcplog` is on, and to the peers.
    let shared = Arc::new(RwLock::new(Snapshot::default()));
    let names = Arc::new(RwLock::new(runtime::sess::Names::default()));
    let mut tcplog = TcpLog::new(names.clone(), shared.clone());
    let tcplog_on = Arc::new(AtomicBool::new(g.tcplog));
    let (log_on, to_peers) = (tcplog_on.clone(), sync.as_ref().map(|(_, tx)| tx.clone()));
    FlowEvents::take(&mut ebpf)?
        .spawn(expired_rx, move |e| {
            if log_on.load(Ordering::Relaxed) {
                if let Some(line) = tcplog.event(e) {
                    log::info!(target: "tcplog", "{line}");
                }
            }
            if let Some(tx) = &to_peers {
                // A full queue drops the event: the next refresh sends the flow again.
                let _ = tx.try_send(FlowEvent::from(e));
            }
        })
        .context("starting the flow events' reader")?;
    let counters = Counters::open_pinned(&g.pin_dir).context("opening the counters")?;
    let attached = dataplane::attach(&mut ebpf, &ifaces, g.xdp_mode, &g.pin_dir)?;
    for (name, _) in attached.iter().filter(|(_, mode)| *mode == dataplane::Attached::Generic) {
        let off = host
            .unmerge_receive(name)
            .with_context(|| format!("turning receive offloads off on {name} (generic mode)"))?;
        if !off.is_empty() {
            log::warn!(
                "{name} is in generic mode: {} turned off (XDP would see merged segments with partial checksums); `xdplb detach` turns it back on",
                off.join(" and ")
            );
        }
    }
    hook_local_clients(&mut ebpf, g, &topology)?;
    attach_egress(&mut ebpf, g, &ifaces, &topology)?;
    new_pins.armed = false;
    let modes: Vec<InterfaceStatus> =
        attached.into_iter().map(|(name, xdp)| InterfaceStatus { name, xdp, running: true }).collect();

    let (runtime_tx, mut runtime_rx) = tokio::sync::mpsc::channel(16);
    local::serve(listeners, runtime_tx, shared.clone()).context("starting the status page and runtime sockets")?;
    let mut agent = Agent {
        status: builder::Builder::new(modes.clone()),
        opts,
        global,
        topology,
        ipv6,
        owner,
        sweeper,
        counters,
        registry,
        shared,
        names,
        last_sweep: Sweep::default(),
        syn_rst_seen: HashMap::new(),
        suspicion: HashMap::new(),
        overrides,
        host,
        address_changes: 0,
        sync,
        tcplog_on,
    };
    // The passive observation's first look, before the status page says anything: it takes the
    // counters as they are (an adopted data path's) as the start, and every refusal after it
    // counts, however long the start-up's last steps take.
    agent.observe();
    // Addresses may have changed between resolving the configuration and subscribing.
    agent.rebind(None);
    agent.publish();
    log::info!(
        "ready: {} frontend(s), {} server(s), maps pinned under {}, XDP {}, status on http://{}/",
        agent.topology.frontends.len(),
        agent.topology.servers().count(),
        agent.global.pin_dir.display(),
        modes.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
        agent.global.stats_bind,
    );
    let locked = dataplane::memory::locked_by_maps();
    log::info!(
        "kernel memory: {} BPF maps lock {}; the connection tables, preallocated for max_flows {} and max_half_open {}, are {} of it",
        locked.len(),
        dataplane::memory::mib(locked.values().sum()),
        agent.global.max_flows,
        agent.global.max_half_open,
        dataplane::memory::mib(tables.total()),
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut observe = tokio::time::interval(health::OBSERVE_PERIOD);
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    // systemd's watchdog is pinged from this loop, which applies the checks' results, and only
    // while every server's checks are on time: a stuck loop or stuck checks get the agent
    // restarted (the data path stays and is adopted).
    let watchdog_every = service::watchdog_interval();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_hours(1)));
    let mut late_said = false;
    // systemd hears READY once the data path is attached and every server was checked once
    // (or the longest check timeout passed).
    let ready_by = tokio::time::Instant::now() + agent.longest_timeout() + Duration::from_millis(200);
    let mut notified = false;
    loop {
        if !notified && (agent.registry.all_checked_once() || tokio::time::Instant::now() >= ready_by) {
            notified = true;
            agent.publish();
            match service::notify("READY=1") {
                Ok(true) => log::info!("first checks done: told systemd we are ready"),
                Ok(false) => log::info!("first checks done"),
                Err(e) => log::warn!("cannot notify systemd: {e}"),
            }
        }
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => { agent.reload(); }
            Some(req) = runtime_rx.recv() => agent.request(req),
            Some(ev) = events.recv() => agent.on_check(ev)?,
            Some(change) = addr_rx.recv() => {
                // A VIP move comes as a burst (address, then routes): take what is queued too.
                let mut changes = vec![change];
                while let Ok(more) = addr_rx.try_recv() {
                    changes.push(more);
                }
                agent.rebind(Some(&changes));
            }
            _ = observe.tick() => agent.observe(),
            _ = refresh.tick() => agent.publish(),
            _ = watchdog.tick(), if watchdog_every.is_some() => {
                let late = agent.registry.late(std::time::Instant::now(), WATCHDOG_GRACE);
                if late.is_empty() {
                    late_said = false;
                    if let Err(e) = service::notify("WATCHDOG=1") {
                        log::warn!("cannot ping the systemd watchdog: {e}");
                    }
                } else if !late_said {
                    late_said = true;
                    log::error!("checks are late for {late:?}: not pinging the watchdog");
                }
            }
        }
    }
    agent.registry.stop();
    let _ = service::notify("STOPPING=1");
    log::info!(
        "stopping: the data path stays attached and pinned under {} and keeps forwarding with the last healthy sets; a new agent adopts it, `xdplb detach` removes it",
        agent.global.pin_dir.display()
    );
    drop(lock);
    Ok(())
}

impl Agent {
    /// The longest check timeout of any backend (readiness waits at most that long).
    fn longest_timeout(&self) -> Duration {
        self.topology.pools.iter().map(|p| p.check.timeout()).max().unwrap_or_default()
    }

    /// A check result: on a transition, the pool's healthy set is rewritten at once.
    fn on_check(&mut self, ev: health::Event) -> Result<()> {
        let id = ev.server_id;
        let decided_at = ev.decided_at;
        let taken_at = std::time::Instant::now();
        // A check that started after the data path's suspicion, and passed, answers it.
        if ev.result.code.passed() {
            if let Some(Suspected { open: Some((since, seen)), .. }) = self.suspicion.get(&id).copied() {
                if decided_at.checked_sub(ev.result.duration).is_some_and(|started| started >= seen) {
                    self.owner.clear_suspicion(id, since)?;
                    self.suspicion.entry(id).or_default().open = None;
                    if let Some(v) = self.registry.servers.get_mut(&id) {
                        v.suspected = false;
                        log::info!(
                            "Server {}/{} passed its check: no longer suspected, it takes new flows again",
                            v.pool,
                            v.name
                        );
                    }
                    self.publish();
                }
            }
        }
        let Some(t) = self.registry.record(ev) else { return Ok(()) };
        let Some((pool, server)) = self.topology.servers().find(|(_, s)| s.id == id) else { return Ok(()) };
        let registry = &self.registry;
        self.owner.set_pool(pool, &|sid| registry.is_up(sid))?;
        let (latency, applying) = (decided_at.elapsed(), taken_at.elapsed());
        let up = |backup: bool| pool.servers.iter().filter(|s| s.backup == backup && registry.is_up(s.id)).count();
        let (active, backup) = (up(false), up(true));
        let Some((view, (result, _))) = self.registry.servers.get(&id).and_then(|v| Some((v, v.last.as_ref()?))) else {
            return Ok(());
        };
        let line = health::transition_line(&pool.name, &server.name, t, result, active, backup);
        let label = format!("{}/{}", pool.name, server.name);
        let (backend, check) = (pool.name.as_str(), result.code.name());
        match t {
            // HAProxy's levels: DOWN a warning, UP a notice (journald priority 5).
            Transition::Down => log::warn!(
                server = label.as_str(), backend, check, state = "DOWN";
                "{line} Kernel set updated {}us after the decision ({}us to apply).",
                latency.as_micros(),
                applying.as_micros()
            ),
            Transition::Up => log::info!(
                priority = 5, server = label.as_str(), backend, check, state = "UP";
                "{line} Kernel set updated {}us after the decision ({}us to apply).",
                latency.as_micros(),
                applying.as_micros()
            ),
        }
        if active + backup == 0 {
            // An outage: crit (HAProxy sends it at emerg).
            log::error!(priority = 2, backend; "backend '{}' has no server available!", pool.name);
        }
        if t == Transition::Down && view.on_marked_down == OnMarkedDown::ShutdownSessions {
            let label = format!("{}/{}", pool.name, server.name);
            self.sweeper.remove_server_flows(id, label, "on-marked-down shutdown-sessions", None);
        }
        self.publish();
        Ok(())
    }

    /// Passive layer-4 observation: SYNs the servers answered with RST since the last look, and
    /// SYNs the sweep found never answered, and the data path's suspicions.
    fn observe(&mut self) {
        for (id, n) in self.sweeper.take_unanswered() {
            self.registry.observe(id, n);
        }
        let ids: Vec<u32> = self.topology.servers().map(|(_, s)| s.id).collect();
        for &id in &ids {
            self.observe_suspicion(id);
        }
        for id in ids {
            let Ok(st) = self.counters.server(id) else { continue };
            let errors = st.syn_rst + st.syn_unanswered;
            let seen = self.syn_rst_seen.entry(id).or_insert(errors);
            let delta = errors.saturating_sub(*seen);
            *seen = errors;
            self.registry.observe(id, delta);
        }
    }

    /// The data path suspects a server once it refused or left unanswered `suspect_after` SYNs
    /// in a row, and gives it no new flow meanwhile; the agent checks it at once, and a passing
    /// check clears the suspicion (`on_check`), a failing one goes on to HAProxy's DOWN.
    fn observe_suspicion(&mut self, id: u32) {
        let Ok(s) = self.counters.suspicion(id) else { return };
        let entry = self.suspicion.entry(id).or_insert(Suspected { count_seen: s.count, open: None });
        let now = monotonic_ns();
        if s.count != entry.count_seen {
            entry.count_seen = s.count;
            entry.open = Some((s.since_ns, std::time::Instant::now()));
            self.registry.check_now(id);
            if let Some(v) = self.registry.servers.get_mut(&id) {
                v.suspected = true;
                log::warn!(
                    "Server {}/{} refused or left unanswered {} SYN(s) in a row: the data path gives it no new flow; checking it now",
                    v.pool,
                    v.name,
                    s.fails
                );
            }
            self.publish();
        } else if entry.open.is_some() {
            // Open until a check clears it: held in the data path meanwhile (the server goes
            // DOWN by HAProxy's rules if the checks fail, and is out of the set then).
            if let Err(e) = self.owner.hold_suspicion(id, now + lb_common::SUSPECT_HOLD_NS) {
                log::warn!("cannot hold the suspicion of server {id}: {e}");
            }
        }
    }

    /// Re-keys the frontends for the addresses on the attached interfaces now: a `*:PORT`
    /// covers an address added later and no longer one removed. A floating address bound
    /// explicitly (a keepalived VIP) is keyed all along; its arrival and departure are logged.
    fn rebind(&mut self, why: Option<&[AddrChange]>) {
        let counted_before = self.address_changes;
        for c in why.unwrap_or_default() {
            let Some(addr) = c.addr else { continue };
            let names = self.topology.bound_to(addr);
            if names.is_empty() {
                continue;
            }
            self.address_changes += 1;
            if c.added {
                log::info!(
                    "Frontend(s) {}: {addr} arrived on this host (served; flows shared by peers continue)",
                    names.join(", ")
                );
            } else {
                log::warn!("Frontend(s) {}: {addr} left this host (another balancer serves it now)", names.join(", "));
            }
        }
        let iface_addrs: Vec<std::net::IpAddr> =
            self.global.interfaces.iter().filter_map(|n| netif::interface(n).ok()).flat_map(|i| i.addrs).collect();
        let changes = self.topology.rebind(&iface_addrs);
        if changes.is_empty() {
            if self.address_changes != counted_before {
                self.publish();
            }
            return;
        }
        if let Err(e) = self.owner.set_frontends(&self.topology) {
            log::error!("cannot update the frontends after an address change: {e}");
        }
        for (frontend, addr, added) in changes {
            self.address_changes += 1;
            if added {
                log::info!("Frontend {frontend}: now serving {addr} (the address was added to an attached interface)");
            } else {
                log::warn!("Frontend {frontend}: no longer serving {addr} (the address was removed)");
            }
        }
        self.publish();
    }

    fn publish(&mut self) {
        self.last_sweep = self.sweeper.last();
        let mut snap = self.status.build(&self.topology, &self.registry, &self.counters, &self.last_sweep);
        snap.address_changes = self.address_changes;
        self.check_links(&mut snap);
        if let Some((sync, _)) = &self.sync {
            let st = sync.snapshot();
            snap.sync = st.counters();
            snap.sync_peers_up = st.peers_up();
        }
        *self.shared.write().unwrap_or_else(std::sync::PoisonError::into_inner) = snap;
        *self.names.write().unwrap_or_else(std::sync::PoisonError::into_inner) = self.session_names();
    }

    /// Whether each interface's pinned XDP link still runs (someone may have detached it, or
    /// the interface went away): said once when it stops, and in the status (`xdplb status`
    /// then fails, so keepalived's track script gives the VIP up).
    fn check_links(&mut self, snap: &mut Snapshot) {
        let before = self.shared.read().unwrap_or_else(std::sync::PoisonError::into_inner).interfaces.clone();
        for i in &mut snap.interfaces {
            i.running = dataplane::attach::still_attached(&self.global.pin_dir, &i.name).unwrap_or(false);
            let was = before.iter().find(|b| b.name == i.name).is_none_or(|b| b.running);
            if was && !i.running {
                log::error!(
                    "XDP no longer runs on {}: its link {} was detached or the interface is gone; the data path does not see its packets until the agent is restarted",
                    i.name,
                    dataplane::link_pin(&self.global.pin_dir, &i.name).display()
                );
            }
        }
    }

    /// Re-reads the configuration and applies it; a bad one changes nothing. Returns what
    /// happened, for the runtime API's `reload`.
    fn reload(&mut self) -> String {
        match prepare(&self.opts, Some(&self.topology)) {
            Err(e) => {
                log::error!("reload refused, still running the previous configuration: {e}");
                format!("reload refused, still running the previous configuration: {e}\n")
            }
            Ok(Prepared { global, topology, plans, .. }) => match self.apply(global, topology, plans) {
                Ok(()) => "reloaded\n".into(),
                Err(e) => {
                    log::error!("reload failed while applying: {e:#}");
                    format!("reload failed while applying: {e:#}\n")
                }
            },
        }
    }

    /// Applies a new configuration all or nothing: the checks' registry and the kernel's maps
    /// change together, or neither does (a map write that fails rolls the maps back, and the
    /// registry returns to its checkpoint), and the old configuration keeps running.
    fn apply(&mut self, global: Global, topology: Topology, plans: HashMap<u32, health::Plan>) -> Result<()> {
        if !self.ipv6 && dataplane::memory::topology_has_ipv6(&topology) {
            anyhow::bail!(
                "this configuration has IPv6 servers, and the agent started without any: its IPv6 connection tables and IPv6 forwarding are set up at start (restart it: systemctl restart xdplb); nothing was changed"
            );
        }
        let (a, b) = (&self.global, &global);
        if a.interfaces != b.interfaces
            || a.pin_dir != b.pin_dir
            || a.max_flows != b.max_flows
            || a.max_half_open != b.max_half_open
            || a.xdp_mode != b.xdp_mode
            || a.stats_bind != b.stats_bind
            || a.stats_auth != b.stats_auth
            || a.runtime_sockets != b.runtime_sockets
            || a.local_clients_cgroup != b.local_clients_cgroup
            || (b.local_clients && !a.local_clients)
        {
            log::warn!(
                "reload: interfaces, xdp_mode, pin_dir, max_flows, stats_bind, stats_auth, runtime_sockets, local_clients_cgroup and turning local_clients on take effect at the next restart"
            );
        }
        let checkpoint = self.registry.checkpoint();
        self.registry.apply(&topology, plans);
        let mut topology = topology;
        apply_overrides(&self.overrides, &mut topology, &mut self.registry);
        let registry = &self.registry;
        let written = self.owner.transaction(|owner| {
            owner.write_settings(b)?;
            owner.apply(&topology, &|id| registry.is_up(id))
        });
        if let Err(e) = written {
            self.registry.rollback(checkpoint);
            return Err(e.into());
        }
        if a.nat_ports != b.nat_ports {
            self.host.reserve_ports(b.nat_ports)?;
            self.host.release_ports(a.nat_ports)?;
        }
        log::info!(
            "reloaded {}: {} frontend(s), {} server(s)",
            self.opts.config.display(),
            topology.frontends.len(),
            topology.servers().count()
        );
        self.sweeper.set(b.gc_interval.0, timeouts(b), reports_expired(b));
        self.tcplog_on.store(b.tcplog, Ordering::Relaxed);
        if let Some((sync, _)) = &self.sync {
            sync.set_topology(&topology);
        }
        if a.sync != b.sync {
            log::warn!("reload: global.sync takes effect at the next restart");
        }
        self.global = global;
        self.topology = topology;
        self.publish();
        Ok(())
    }
}

/// Removes the pins of a data path this agent created, if it fails before attaching it.
struct PinGuard {
    dir: PathBuf,
    armed: bool,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = dataplane::remove_pins(&self.dir);
        }
    }
}

/// `xdplb detach`: removes the pinned links (XDP detaches) and maps, then puts back the kernel
/// settings the agents of this data path changed. Refused while an agent runs this data path:
/// it would keep them alive.
pub fn detach(pin_dir: &Path) -> Result<()> {
    let _lock = service::lock(pin_dir).map_err(|e| anyhow::anyhow!("{e}; stop it before `xdplb detach`"))?;
    let removed =
        dataplane::remove_pins(pin_dir).with_context(|| format!("removing pins under {}", pin_dir.display()))?;
    if removed.is_empty() {
        println!("nothing pinned under {}", pin_dir.display());
    } else {
        for p in removed {
            println!("removed {}", p.display());
        }
    }
    for line in HostChanges::open(pin_dir).undo().context("restoring the kernel settings xdplb changed")? {
        println!("{line}");
    }
    Ok(())
}

/// Attaches the connect hook for local clients (`dataplane::hook`) when `global.local_clients`
/// says so. Without it only loopback frontends lose everything: a failure is fatal for them,
/// a warning otherwise.
fn hook_local_clients(ebpf: &mut aya::Ebpf, g: &Global, topology: &Topology) -> anyhow::Result<()> {
    if !g.local_clients {
        log::info!("local clients: not served (global.local_clients = false)");
        return Ok(());
    }
    let hooked = match &g.local_clients_cgroup {
        Some(path) => Ok(path.clone()),
        None => dataplane::hook::cgroup2_root(),
    }
    .and_then(|cgroup| dataplane::hook::attach(ebpf, &g.pin_dir, &cgroup).map(|how| (cgroup, how)));
    match hooked {
        Ok((cgroup, how)) => {
            let how = if how == dataplane::hook::Hooked::Adopted { "adopted" } else { "attached" };
            log::info!("local clients: connect hook {how} on cgroup {}", cgroup.display());
            Ok(())
        }
        Err(e) => {
            let loopback: Vec<&str> = topology
                .frontends
                .iter()
                .filter(|f| f.keys.iter().all(|k| k.addr[0] == 127))
                .map(|f| f.name.as_str())
                .collect();
            if loopback.is_empty() {
                log::warn!(
                    "local clients: not served ({e}); processes on this host connecting to a frontend are refused"
                );
                Ok(())
            } else {
                Err(anyhow::Error::new(e).context(format!(
                    "frontend(s) {} bind to a loopback address, which only the connect hook serves",
                    loopback.join(", ")
                )))
            }
        }
    }
}

/// Attaches the egress program (`dataplane::hook::attach_egress`) to every interface: the replies
/// of servers on this host leave through it. Without it only those servers lose their flows: a
/// failure is fatal when the configuration has one, a warning otherwise.
fn attach_egress(
    ebpf: &mut aya::Ebpf,
    g: &Global,
    ifaces: &[crate::host::netif::Interface],
    topology: &Topology,
) -> anyhow::Result<()> {
    let local: Vec<&str> = topology.servers().filter(|(_, s)| s.local).map(|(_, s)| s.name.as_str()).collect();
    for i in ifaces {
        match dataplane::hook::attach_egress(ebpf, &g.pin_dir, &i.name) {
            Ok(adopted) => {
                log::info!(
                    "egress translation for servers on this host {} on {}",
                    if adopted { "adopted" } else { "attached" },
                    i.name
                );
            }
            Err(e) if local.is_empty() => {
                log::warn!(
                    "cannot attach the egress program to {} ({e}): a server on this host would not be served",
                    i.name
                );
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "attaching the egress program to {} (tc, Linux 6.6+), which server(s) {} on this host need",
                    i.name,
                    local.join(", ")
                )));
            }
        }
    }
    Ok(())
}
