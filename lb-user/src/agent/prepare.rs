//! Everything checked before the kernel is touched: the configuration, the interfaces, the
//! topology on this host and the checks. A problem here is a refusal (exit 2).

use std::{collections::HashMap, path::PathBuf};

use crate::{
    config::{Config, Global, XdpModeCfg},
    health,
    host::netif::{self, Interface},
    model::{System, Topology},
    problems::Problems,
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

/// Everything `run` needs, checked: the global settings, the interfaces, the topology, the
/// checks.
pub(super) struct Prepared {
    pub global: Global,
    pub ifaces: Vec<Interface>,
    pub topology: Topology,
    pub plans: HashMap<u32, health::Plan>,
}

/// Reads and validates the configuration, resolves it on this host and builds the checks;
/// every problem is a refusal, before anything touches the kernel.
pub(super) fn prepare(opts: &RunOptions, prev: Option<&Topology>) -> Result<Prepared, Refused> {
    let mut config = Config::load(&opts.config).map_err(|e| Refused(e.to_string()))?;
    for w in config.warnings() {
        log::warn!("{}: {w}", opts.config.display());
    }
    if !opts.ifaces.is_empty() {
        config.global.interfaces.clone_from(&opts.ifaces);
    }
    if let Some(m) = opts.xdp_mode {
        config.global.xdp_mode = m;
    }
    if let Some(d) = &opts.pin_dir {
        config.global.pin_dir.clone_from(d);
    }
    if let Some(s) = &opts.runtime_socket {
        config.global.runtime_socket.clone_from(s);
    }
    if let Some(s) = &opts.state_file {
        config.global.state_file.clone_from(s);
    }
    if config.global.interfaces.is_empty() {
        return Err(Refused(format!(
            "{}: no interface to attach to: pass --iface IFACE or set global.interfaces = [\"eth0\"]",
            opts.config.display()
        )));
    }
    let refuse = |problems: Problems| Refused(format!("{}: {problems}", opts.config.display()));
    let mut ifaces = Vec::new();
    let mut problems = Problems::default();
    for name in &config.global.interfaces {
        match netif::interface(name) {
            Ok(i) => ifaces.push(i),
            Err(e) => problems.push(e.to_string()),
        }
    }
    problems.into_result(()).map_err(refuse)?;
    let topology = Topology::resolve(&config, &ifaces, &System, prev).map_err(refuse)?;
    let plans = health::plans(&topology).map_err(refuse)?;
    Ok(Prepared { global: config.global, ifaces, topology, plans })
}
