//! The runtime API's commands, carried out by the agent: answers in HAProxy's text formats,
//! and changes by hand, recorded in the state file before they apply.

use super::Agent;
use crate::{
    health::Registry,
    model::Topology,
    runtime::{self, Command, Overrides, Refusal},
};

impl Agent {
    /// A runtime API request: answered now, or, for `shutdown sessions`, once the sweep's
    /// thread has removed the flows.
    pub(super) fn request(&mut self, req: runtime::Request) {
        if let Ok(Command::ShutdownSessions { backend, server }) = runtime::parse(&req.line) {
            match self.server_id(&backend, &server) {
                Ok(id) => {
                    let label = format!("{backend}/{server}");
                    self.sweeper.remove_server_flows(id, label, "runtime API", Some(req.reply));
                }
                Err(e) => {
                    let _ = req.reply.send(e.to_string());
                }
            }
            return;
        }
        if let Ok(Command::ShowSess) = runtime::parse(&req.line) {
            let names = self.session_names();
            self.sweeper.list(Box::new(move |flows| runtime::sess::show_sess(flows, &names)), req.reply);
            return;
        }
        let answer = self.execute(&req.line);
        let _ = req.reply.send(answer);
    }

    /// One runtime API command; the answer is HAProxy's text (empty on success).
    pub(super) fn execute(&mut self, line: &str) -> String {
        let cmd = match runtime::parse(line) {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        if cmd.reads_only() {
            let snap = self.shared.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            return runtime::socket::read(&cmd, &snap);
        }
        match cmd {
            Command::Help
            | Command::Noop
            | Command::ShowInfo
            | Command::ShowStat(_)
            | Command::ShowServersState(_)
            | Command::GetWeight { .. }
            | Command::ShowSess => String::new(),
            Command::Reload => self.reload(),
            Command::SetState { backend, server, state } => self.by_hand(&backend, &server, |o| o.state = Some(state)),
            Command::SetWeight { backend, server, weight } => {
                let Some(initial) = self.initial_weight(&backend, &server) else {
                    return self.server_id(&backend, &server).err().unwrap_or(Refusal::NoSuchServer).to_string();
                };
                self.by_hand(&backend, &server, |o| o.weight = Some(weight.of(initial)))
            }
            Command::Health { backend, server, enabled } => {
                self.by_hand(&backend, &server, |o| o.health_disabled = Some(!enabled))
            }
            Command::ShutdownSessions { backend, server } => match self.server_id(&backend, &server) {
                Err(e) => e.to_string(),
                Ok(id) => {
                    self.sweeper.remove_server_flows(id, format!("{backend}/{server}"), "runtime API", None);
                    String::new()
                }
            },
        }
    }

    /// The weight the configuration gives a server (`set weight N%` is a share of it).
    fn initial_weight(&self, backend: &str, server: &str) -> Option<u32> {
        self.topology.pool(backend)?.servers.iter().find(|s| s.name == server).map(|s| s.initial_weight)
    }

    /// What `show sess` names the data path's frontend and server ids by.
    pub(super) fn session_names(&self) -> runtime::sess::Names {
        let mut names = runtime::sess::Names::default();
        for f in &self.topology.frontends {
            names.frontends.insert(f.id, (f.name.clone(), f.backend.clone()));
        }
        for (_, s) in self.topology.servers() {
            names.servers.insert(s.id, s.name.clone());
        }
        names
    }

    fn server_id(&self, backend: &str, server: &str) -> Result<u32, Refusal> {
        let pool = self.topology.pool(backend).ok_or(Refusal::NoSuchBackend)?;
        pool.servers.iter().find(|s| s.name == server).map(|s| s.id).ok_or(Refusal::NoSuchServer)
    }

    /// A change by hand: recorded in the state file first (so it survives a crash right after),
    /// then applied to the health registry and the kernel's set.
    fn by_hand(&mut self, backend: &str, server: &str, change: impl FnOnce(&mut runtime::ServerOverride)) -> String {
        let id = match self.server_id(backend, server) {
            Ok(id) => id,
            Err(e) => return e.to_string(),
        };
        change(self.overrides.entry(backend, server));
        if let Err(e) = self.overrides.save(&self.global.state_file) {
            return format!("cannot save {}: {e}\n", self.global.state_file.display());
        }
        apply_overrides(&self.overrides, &mut self.topology, &mut self.registry);
        let registry = &self.registry;
        let Some(pool) = self.topology.servers().find(|(_, s)| s.id == id).map(|(p, _)| p) else {
            return Refusal::NoSuchServer.to_string();
        };
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
}

/// Layers what was set by hand over the configuration: states and health switches in the
/// registry, weights in the topology.
pub(super) fn apply_overrides(o: &Overrides, topology: &mut Topology, registry: &mut Registry) {
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
