//! `xdplb run`: validate everything, then load, fill the maps, attach, and keep the connection
//! table swept until told to stop. SIGHUP re-reads the configuration.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config::{Config, XdpModeCfg},
    conntrack::{monotonic_ns, FlowTable, Timeouts},
    dataplane::{self, LoadOptions},
    maps::MapOwner,
    netif::{self, Interface},
    sysctl,
    topology::{System, Topology},
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
}

/// Everything `run` needs, checked: the config, the interfaces, the topology.
struct Prepared {
    config: Config,
    ifaces: Vec<Interface>,
    topology: Topology,
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
    Ok(Prepared { config, ifaces, topology })
}

fn timeouts(c: &Config) -> Timeouts {
    Timeouts { idle: c.global.idle_timeout.0, syn: c.global.syn_timeout.0, linger: c.global.close_linger.0 }
}

/// Until the health checker lands, every configured server is UP.
fn all_up(_: u32) -> bool {
    true
}

pub async fn run(opts: RunOptions) -> Result<()> {
    let Prepared { mut config, ifaces, mut topology } = prepare(&opts, None)?;
    let g = &config.global;

    sysctl::reserve_ports(g.nat_ports).context("reserving the NAT source ports (net.ipv4.ip_local_reserved_ports)")?;
    for i in &ifaces {
        sysctl::prepare_interface(&i.name).with_context(|| format!("setting forwarding sysctls on {}", i.name))?;
    }
    let mut ebpf = dataplane::load(&LoadOptions { pin_dir: Some(g.pin_dir.clone()), max_flows: g.max_flows })
        .context("loading the XDP data path")?;
    let mut owner = MapOwner::take(&mut ebpf)?;
    owner.write_settings(g)?;
    owner.write_tx_ports(&ifaces)?;
    owner.apply(&topology, &all_up)?;
    let mut flows = FlowTable::take(&mut ebpf)?;
    let modes = dataplane::attach(&mut ebpf, &ifaces, g.xdp_mode)?;
    log::info!(
        "ready: {} frontend(s), {} server(s), maps pinned under {}, XDP {}",
        topology.frontends.len(),
        topology.servers().count(),
        g.pin_dir.display(),
        modes.iter().map(|(i, m)| format!("{i}:{m}")).collect::<Vec<_>>().join(" ")
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut gc = tokio::time::interval(config.global.gc_interval.0);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                match reload(&opts, &config, &topology, &mut owner) {
                    Ok((c, t)) => { config = c; topology = t; }
                    Err(e) => log::error!("reload refused, still running the previous configuration: {e:#}"),
                }
            }
            _ = gc.tick() => {
                let s = flows.sweep(monotonic_ns(), &timeouts(&config));
                if s.removed > 0 {
                    log::debug!("conntrack: {} flow(s), {} expired", s.flows, s.removed);
                }
            }
        }
    }
    log::info!("stopping: XDP detached; maps stay pinned under {} (`xdplb detach` removes them)", config.global.pin_dir.display());
    Ok(())
}

/// Applies a changed configuration. Interfaces, pin directory and table size need a restart.
fn reload(opts: &RunOptions, old: &Config, topo: &Topology, owner: &mut MapOwner) -> Result<(Config, Topology)> {
    let Prepared { config, topology, .. } = prepare(opts, Some(topo))?;
    let (a, b) = (&old.global, &config.global);
    if a.interfaces != b.interfaces || a.pin_dir != b.pin_dir || a.max_flows != b.max_flows || a.xdp_mode != b.xdp_mode {
        log::warn!("reload: interfaces, xdp_mode, pin_dir and max_flows take effect at the next restart");
    }
    if a.nat_ports != b.nat_ports {
        sysctl::reserve_ports(b.nat_ports)?;
    }
    owner.write_settings(b)?;
    owner.apply(&topology, &all_up)?;
    log::info!("reloaded {}: {} frontend(s), {} server(s)", opts.config.display(), topology.frontends.len(), topology.servers().count());
    Ok((config, topology))
}

/// `xdplb detach`: removes the pins (and so the maps, once no agent holds them).
pub fn detach(pin_dir: &Path) -> Result<()> {
    let removed = dataplane::remove_pins(pin_dir).with_context(|| format!("removing pins under {}", pin_dir.display()))?;
    if removed.is_empty() {
        println!("nothing pinned under {}", pin_dir.display());
    } else {
        for p in removed {
            println!("removed {}", p.display());
        }
    }
    Ok(())
}
