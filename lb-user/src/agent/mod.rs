//! `xdplb run`: validate everything, then load, fill the maps, attach, run the health checks,
//! keep the kernel's healthy sets true to them, sweep the connection table and serve the status
//! page until told to stop. SIGHUP re-reads the configuration.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config::{Config, OnMarkedDown, XdpModeCfg},
    dataplane::{
        self,
        counters::Counters,
        flows::{monotonic_ns, FlowTable, Sweep, Timeouts},
        maps::MapOwner,
        LoadOptions,
    },
    health::{self, state::Transition, Registry},
    host::{
        self,
        netif::{self, Interface},
        service, sysctl,
    },
    model::{System, Topology},
    report::{builder, http, snapshot::Snapshot},
    runtime::{self, info, servers_state, stat, Command, Overrides},
};

/// Problems found before anything touched the kernel: the agent refuses to start (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: PathBuf,
    /// Replaces `global.interfaces` when not empty.
    pub ifaces: Vec<String>,
    pub xdp_mode: Option<XdpModeCfg>,
    pub pin_dir: Option<PathBuf>,
    pub runtime_socket: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
}

/// Everything `run` needs, checked: the config, the interfaces, the topology, the checks.
struct Prepared {
    config: Config,
    ifaces: Vec<Interface>,
    topology: Topology,
    plans: HashMap<u32, health::Plan>,
}

fn prepare(opts: &RunOptions, prev: Option<&Topology>) -> Result<Prepared, Refused> {
    let mut config = Config::load(&opts.config).map_err(|e| Refused(e.to_string()))?;
    if !opts.ifaces.is_empty() {
        config.global.interfaces = opts.ifaces.clone();
    }
    if let Some(m) = opts.xdp_mode {
        config.global.xdp_mode = m;
    }
    if let Some(d) = &opts.pin_dir {
        config.global.pin_dir = d.clone();
    }
    if let Some(s) = &opts.runtime_socket {
        config.global.runtime_socket = s.clone();
    }
    if let Some(s) = &opts.state_file {
        config.global.state_file = s.clone();
    }
    if config.global.interfaces.is_empty() {
        return Err(Refused(format!(
            "{}: no interface to attach to: pass --iface IFACE or set global.interfaces = [\"eth0\"]",
            opts.config.display()
        )));
    }
    let mut ifaces = Vec::new();
    let mut problems = Vec::new();
    for name in &config.global.interfaces {
        match netif::interface(name) {
            Ok(i) => ifaces.push(i),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(Refused(problems.join("\n")));
    }
    let topology = Topology::resolve(&config, &ifaces, &System, prev).map_err(|p| {
        Refused(format!(
            "{}: {} problem(s):\n{}",
            opts.config.display(),
            p.len(),
            p.iter().map(|x| format!("  - {x}")).collect::<Vec<_>>().join("\n")
        ))
    })?;
    let plans = health::plans(&config, &topology)
        .map_err(|p| Refused(format!("{}: {}", opts.config.display(), p.join("\n  - "))))?;
    Ok(Prepared { config, ifaces, topology, plans })
}

fn timeouts(c: &Config) -> Timeouts {
    Timeouts { idle: c.global.idle_timeout.0, syn: c.global.syn_timeout.0, linger: c.global.close_linger.0 }
}

/// The running agent: the single owner of the maps, the checks and what the status page shows.
struct Agent {
    opts: RunOptions,
    config: Config,
    topology: Topology,
    owner: MapOwner,
    flows: FlowTable,
    counters: Counters,
    registry: Registry,
    status: builder::Builder,
    shared: Arc<RwLock<Snapshot>>,
    last_sweep: Sweep,
    syn_rst_seen: HashMap<u32, u64>,
    /// Server states set by hand (runtime API), kept in `global.state_file`.
    overrides: Overrides,
}

pub async fn run(opts: RunOptions) -> Result<()> {
    let Prepared { config, ifaces, topology, plans } = prepare(&opts, None)?;
    let g = &config.global;
    service::check_privileges().map_err(|e| Refused(e.to_string()))?;
    let lock = service::lock(&g.pin_dir).map_err(|e| Refused(e.to_string()))?;
    // Bind the status page next: a port in use is a refusal, before the kernel is touched.
    let listener = tokio::net::TcpListener::bind(g.stats_bind)
        .await
        .map_err(|e| Refused(format!("global.stats_bind {}: {e}; pick a free address:port", g.stats_bind)))?;
    let overrides = Overrides::load(&g.state_file).map_err(|e| Refused(format!("global.state_file: {e}")))?;
    let runtime_listener = runtime::bind(&g.runtime_socket)
        .map_err(|e| Refused(format!("global.runtime_socket {}: {e}", g.runtime_socket.display())))?;

    sysctl::reserve_ports(g.nat_ports).context("reserving the NAT source ports (net.ipv4.ip_local_reserved_ports)")?;
    for i in &ifaces {
        sysctl::prepare_interface(&i.name).with_context(|| format!("setting forwarding sysctls on {}", i.name))?;
    }
    // A data path this agent creates and then fails to attach leaves nothing pinned behind.
    let mut new_pins = PinGuard { dir: g.pin_dir.clone(), armed: !g.pin_dir.exists() };
    let mut ebpf = dataplane::load(&LoadOptions {
        pin_dir: Some(g.pin_dir.clone()),
        max_flows: g.max_flows,
        max_half_open: g.max_half_open,
    })
    .context("loading the XDP data path")?;
    let mut owner = MapOwner::take(&mut ebpf)?;
    owner.write_settings(g)?;
    owner.write_tx_ports(&ifaces)?;
    let (mut registry, mut events) = Registry::new();
    // A previous agent's data path: start from the servers its kernel sets hold, so that a
    // restart changes nothing for the traffic.
    let members = owner.members();
    if !members.is_empty() {
        log::info!("adopting the pinned data path: {} server(s) were taking flows", members.len());
        registry.adopt(&config, &topology, &members);
    }
    registry.apply(&config, &topology, plans);
    let mut topology = topology;
    apply_overrides(&overrides, &mut topology, &mut registry);
    owner.apply(&topology, &|id| registry.is_up(id))?;
    let flows = FlowTable::take(&mut ebpf)?;
    let counters = Counters::open_pinned(&g.pin_dir).context("opening the counters")?;
    let attached = dataplane::attach(&mut ebpf, &ifaces, g.xdp_mode, &g.pin_dir)?;
    new_pins.armed = false;
    let modes: Vec<String> = attached
        .iter()
        .map(|(i, a)| format!("{i}:{a}"))
        .collect();

    let shared = Arc::new(RwLock::new(Snapshot::default()));
    tokio::spawn(http::serve(listener, shared.clone()));
    let (runtime_tx, mut runtime_rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(runtime::serve(runtime_listener, runtime_tx));
    let mut agent = Agent {
        status: builder::Builder::new(modes.clone()),
        opts,
        config,
        topology,
        owner,
        flows,
        counters,
        registry,
        shared,
        last_sweep: Sweep::default(),
        syn_rst_seen: HashMap::new(),
        overrides,
    };
    agent.publish();
    log::info!(
        "ready: {} frontend(s), {} server(s), maps pinned under {}, XDP {}, status on http://{}/",
        agent.topology.frontends.len(),
        agent.topology.servers().count(),
        agent.config.global.pin_dir.display(),
        modes.join(" "),
        agent.config.global.stats_bind,
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut gc = tokio::time::interval(agent.config.global.gc_interval.0);
    let mut observe = tokio::time::interval(health::OBSERVE_PERIOD);
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
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
            Some(req) = runtime_rx.recv() => {
                let answer = agent.execute(&req.line);
                let _ = req.reply.send(answer);
            }
            Some(ev) = events.recv() => agent.on_check(ev)?,
            _ = observe.tick() => agent.observe(),
            _ = gc.tick() => agent.sweep(),
            _ = refresh.tick() => agent.publish(),
        }
    }
    agent.registry.stop();
    let _ = service::notify("STOPPING=1");
    log::info!(
        "stopping: the data path stays attached and pinned under {} and keeps forwarding with the last healthy sets; a new agent adopts it, `xdplb detach` removes it",
        agent.config.global.pin_dir.display()
    );
    drop(lock);
    Ok(())
}

impl Agent {
    /// The longest check timeout of any backend (readiness waits at most that long).
    fn longest_timeout(&self) -> Duration {
        self.config.backends.iter().map(|b| b.check.timeout()).max().unwrap_or_default()
    }

    /// A check result: on a transition, the pool's healthy set is rewritten at once.
    fn on_check(&mut self, ev: health::Event) -> Result<()> {
        let id = ev.server_id;
        let decided_at = ev.decided_at;
        let Some(t) = self.registry.record(ev) else { return Ok(()) };
        let Some((pool, server)) = self.topology.servers().find(|(_, s)| s.id == id) else { return Ok(()) };
        let registry = &self.registry;
        self.owner.set_pool(pool, &|sid| registry.is_up(sid))?;
        let latency = decided_at.elapsed();
        let up = |backup: bool| pool.servers.iter().filter(|s| s.backup == backup && registry.is_up(s.id)).count();
        let (active, backup) = (up(false), up(true));
        let view = &self.registry.servers[&id];
        let result = &view.last.as_ref().expect("just recorded").0;
        let line = health::transition_line(&pool.name, &server.name, t, result, active, backup);
        match t {
            Transition::Down => log::warn!("{line} Kernel set updated {}us after the decision.", latency.as_micros()),
            Transition::Up => log::info!("{line} Kernel set updated {}us after the decision.", latency.as_micros()),
        }
        if active + backup == 0 {
            log::error!("backend '{}' has no server available!", pool.name);
        }
        if t == Transition::Down && view.on_marked_down == OnMarkedDown::ShutdownSessions {
            let n = self.flows.remove_server_flows(id);
            log::warn!(
                "Server {}/{}: {n} flow(s) shut down (on-marked-down shutdown-sessions)",
                pool.name,
                server.name
            );
        }
        self.publish();
        Ok(())
    }

    /// Passive layer-4 observation: SYNs the servers answered with RST since the last look.
    fn observe(&mut self) {
        let ids: Vec<u32> = self.topology.servers().map(|(_, s)| s.id).collect();
        for id in ids {
            let Ok(st) = self.counters.server(id) else { continue };
            let seen = self.syn_rst_seen.entry(id).or_insert(st.syn_rst);
            let delta = st.syn_rst.saturating_sub(*seen);
            *seen = st.syn_rst;
            self.registry.observe(id, delta);
        }
    }

    fn sweep(&mut self) {
        let s = self.flows.sweep(monotonic_ns(), &timeouts(&self.config));
        if s.removed > 0 {
            log::debug!("conntrack: {} flow(s), {} expired", s.flows, s.removed);
        }
        for (&id, &n) in &s.unanswered_by_server {
            self.registry.observe(id, n);
        }
        self.last_sweep = s;
    }

    fn publish(&mut self) {
        let snap = self.status.build(&self.config, &self.topology, &self.registry, &self.counters, &self.last_sweep);
        *self.shared.write().unwrap() = snap;
    }

    /// Re-reads the configuration and applies it; a bad one changes nothing. Returns what
    /// happened, for the runtime API's `reload`.
    fn reload(&mut self) -> String {
        match prepare(&self.opts, Some(&self.topology)) {
            Err(e) => {
                log::error!("reload refused, still running the previous configuration: {e}");
                format!("reload refused, still running the previous configuration: {e}\n")
            }
            Ok(Prepared { config, topology, plans, .. }) => match self.apply(config, topology, plans) {
                Ok(()) => "reloaded\n".into(),
                Err(e) => {
                    log::error!("reload failed while applying: {e:#}");
                    format!("reload failed while applying: {e:#}\n")
                }
            },
        }
    }

    /// One runtime API command; the answer is HAProxy's text (empty on success).
    fn execute(&mut self, line: &str) -> String {
        let cmd = match runtime::parse(line) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let snap = || self.shared.read().unwrap().clone();
        match cmd {
            Command::Help => runtime::HELP.into(),
            Command::Noop => String::new(),
            Command::ShowInfo => info::show_info(&snap(), &host::hostname().unwrap_or_default()),
            Command::ShowStat => stat::show_stat(&snap()),
            Command::ShowServersState(b) => {
                servers_state::show_servers_state(&snap(), b.as_deref()).unwrap_or_else(|e| e)
            }
            Command::Reload => self.reload(),
            Command::SetState { backend, server, state } => self.by_hand(&backend, &server, |o| o.state = Some(state)),
            Command::SetWeight { backend, server, weight } => {
                self.by_hand(&backend, &server, |o| o.weight = Some(weight))
            }
            Command::Health { backend, server, enabled } => {
                self.by_hand(&backend, &server, |o| o.health_disabled = Some(!enabled))
            }
            Command::ShutdownSessions { backend, server } => match self.server_id(&backend, &server) {
                Err(e) => e,
                Ok(id) => {
                    let n = self.flows.remove_server_flows(id);
                    log::warn!("Server {backend}/{server}: {n} flow(s) shut down (runtime API)");
                    String::new()
                }
            },
        }
    }

    fn server_id(&self, backend: &str, server: &str) -> Result<u32, String> {
        let pool = self.topology.pool(backend).ok_or_else(|| "No such backend.\n".to_string())?;
        pool.servers.iter().find(|s| s.name == server).map(|s| s.id).ok_or_else(|| "No such server.\n".to_string())
    }

    /// A change by hand: recorded in the state file first (so it survives a crash right after),
    /// then applied to the health registry and the kernel's set.
    fn by_hand(&mut self, backend: &str, server: &str, change: impl FnOnce(&mut runtime::ServerOverride)) -> String {
        let id = match self.server_id(backend, server) {
            Ok(id) => id,
            Err(e) => return e,
        };
        change(self.overrides.entry(backend, server));
        if let Err(e) = self.overrides.save(&self.config.global.state_file) {
            return format!("cannot save {}: {e}\n", self.config.global.state_file.display());
        }
        apply_overrides(&self.overrides, &mut self.topology, &mut self.registry);
        let registry = &self.registry;
        let pool = self.topology.servers().find(|(_, s)| s.id == id).map(|(p, _)| p).expect("the id came from it");
        if let Err(e) = self.owner.set_pool(pool, &|sid| registry.is_up(sid)) {
            return format!("{e}\n");
        }
        log::info!(
            "Server {backend}/{server} set by hand: {:?}",
            self.overrides.servers.get(&format!("{backend}/{server}"))
        );
        self.publish();
        String::new()
    }

    fn apply(&mut self, config: Config, topology: Topology, plans: HashMap<u32, health::Plan>) -> Result<()> {
        let (a, b) = (&self.config.global, &config.global);
        if a.interfaces != b.interfaces
            || a.pin_dir != b.pin_dir
            || a.max_flows != b.max_flows
            || a.max_half_open != b.max_half_open
            || a.xdp_mode != b.xdp_mode
            || a.stats_bind != b.stats_bind
        {
            log::warn!(
                "reload: interfaces, xdp_mode, pin_dir, max_flows and stats_bind take effect at the next restart"
            );
        }
        if a.nat_ports != b.nat_ports {
            sysctl::reserve_ports(b.nat_ports)?;
        }
        self.owner.write_settings(b)?;
        self.registry.apply(&config, &topology, plans);
        let mut topology = topology;
        apply_overrides(&self.overrides, &mut topology, &mut self.registry);
        let registry = &self.registry;
        self.owner.apply(&topology, &|id| registry.is_up(id))?;
        log::info!(
            "reloaded {}: {} frontend(s), {} server(s)",
            self.opts.config.display(),
            topology.frontends.len(),
            topology.servers().count()
        );
        self.config = config;
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

/// Layers what was set by hand over the configuration: states and health switches in the
/// registry, weights in the topology.
fn apply_overrides(o: &Overrides, topology: &mut Topology, registry: &mut Registry) {
    for pool in &mut topology.pools {
        for s in &mut pool.servers {
            let Some(ov) = o.servers.get(&format!("{}/{}", pool.name, s.name)) else { continue };
            if let Some(w) = ov.weight {
                s.weight = w;
            }
            if let Some(state) = ov.state {
                registry.set_admin(s.id, state);
            }
            if let Some(disabled) = ov.health_disabled {
                registry.set_health_enabled(s.id, !disabled);
            }
        }
    }
    registry.sync();
}

/// `xdplb detach`: removes the pinned links (XDP detaches) and maps. Refused while an agent
/// runs this data path: it would keep them alive.
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
    Ok(())
}
