//! `xdplb`'s command line: the commands, and what each one does.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use lb_user::{
    agent::{self, Refused, RunOptions},
    config::{self, Config, XdpModeCfg, DEFAULT_PIN_DIR},
    dataplane::{counters::Counters, flows::FlowTable},
    report::{http, table},
    runtime,
};

#[derive(Parser)]
#[command(name = "xdplb", version, about = "TCP load balancer with an XDP data path")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Load and attach the data path and run the agent.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Interface to attach to (repeat for several); replaces global.interfaces.
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// auto (native, else generic with a warning), native, or generic.
        #[arg(long)]
        xdp_mode: Option<XdpModeCfg>,
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// Replaces global.runtime_socket.
        #[arg(long)]
        runtime_socket: Option<PathBuf>,
        /// Replaces global.state_file.
        #[arg(long)]
        state_file: Option<PathBuf>,
    },
    /// Validate a configuration and print it with every default filled in.
    CheckConfig { file: PathBuf },
    /// Translate an haproxy.cfg into xdplb's TOML (stdout); says what it could not translate,
    /// each note an error, warn or info. Exits 2 on any error unless --accept-differences.
    ImportHaproxy {
        file: PathBuf,
        /// Write the TOML here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Interface clients reach the frontends on (repeat for several): global.interfaces.
        /// Default: the interface of the host's default route.
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// Write the translation even when it behaves differently in a way that loses traffic,
        /// health or access control (the error notes stay at the top of the file).
        #[arg(long)]
        accept_differences: bool,
        /// Refuse server host names instead of resolving them now.
        #[arg(long)]
        no_resolve: bool,
    },
    /// The connection table of a running data path.
    Flows {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Packet counters by reason.
    Stats {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The running agent's servers and frontends, like HAProxy's stats page.
    Status {
        /// Where the agent serves its status page (global.stats_bind).
        #[arg(long, default_value = "127.0.0.1:8404")]
        stats: std::net::SocketAddr,
        /// USER:PASSWORD, when the page asks for them (global.stats_auth).
        #[arg(long)]
        auth: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Take a server out of rotation or put it back (HAProxy's `set server ... state`); it
    /// survives reloads and restarts.
    Server {
        #[arg(value_enum)]
        action: ServerAction,
        /// BACKEND/SERVER
        target: String,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Re-read and apply the configuration (as SIGHUP); prints what happened.
    Reload {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Send a command of HAProxy's runtime API to the agent, e.g. `xdplb runtime show stat`.
    Runtime {
        #[arg(required = true)]
        command: Vec<String>,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Remove the data path's pinned maps (stop the agent first).
    Detach {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

const DEFAULT_SOCKET: &str = "/run/xdplb/xdplb.sock";

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ServerAction {
    /// Ready: takes new flows (when its checks pass).
    Enable,
    /// Maintenance: no new flows, no checks.
    Disable,
    /// Drain: no new flows, open flows stay, checks go on.
    Drain,
}

fn runtime_call(socket: &std::path::Path, line: &str) -> Result<()> {
    let out = runtime::call(socket, line)?;
    let text = out.trim_end();
    if text.is_empty() {
        return Ok(());
    }
    println!("{text}");
    // HAProxy answers errors in words; a command that changes state answers nothing.
    if line.starts_with("set ")
        || line.starts_with("enable ")
        || line.starts_with("disable ")
        || line.starts_with("shutdown ")
    {
        anyhow::bail!("the agent refused `{line}`");
    }
    Ok(())
}

/// `xdplb check-config`: what `run` would refuse (TLS files included), the warnings, then the
/// configuration with every default (but never the status page's password).
fn check_config(file: &std::path::Path) -> Result<()> {
    let c = Config::load(file).map_err(|e| Refused(e.to_string()))?;
    let tls = lb_user::health::tls::config_problems(&c);
    if !tls.is_empty() {
        return Err(Refused(format!("{}: {tls}", file.display())).into());
    }
    for w in c.warnings() {
        eprintln!("xdplb check-config: {}: warning: {w}", file.display());
    }
    let g = &c.global;
    let ipv6 = lb_user::dataplane::memory::wants_ipv6(&c);
    let tables = lb_user::dataplane::memory::TableMemory::here(g.max_flows, g.max_half_open, ipv6);
    let per_flow = lb_user::dataplane::memory::bytes_per_flow();
    let per_flow6 = lb_user::dataplane::memory::bytes_per_flow6();
    if !lb_user::dataplane::memory::HtabLayout::here().from_kernel {
        eprintln!(
            "xdplb check-config: {}: warning: this kernel's BTF did not give its hash maps' layout: the memory figure below is an estimate from Linux 6.18's",
            file.display()
        );
    }
    eprintln!(
        "xdplb check-config: {}: memory: the connection tables will lock {} ({} bytes) of kernel memory: max_flows = {} takes {}, max_half_open = {} takes {} (about {per_flow} bytes a flow), the IPv6 tables {} ({})",
        file.display(),
        lb_user::dataplane::memory::mib(tables.total()),
        tables.total(),
        g.max_flows,
        lb_user::dataplane::memory::mib(tables.flows),
        g.max_half_open,
        lb_user::dataplane::memory::mib(tables.half_open),
        lb_user::dataplane::memory::mib(tables.ipv6),
        if ipv6 {
            format!("as many flows, about {per_flow6} bytes each")
        } else {
            format!("no IPv6 server: {} flows each", lb_common::IPV6_IDLE_FLOWS)
        },
    );
    let mut shown = c;
    if let Some(auth) = &mut shown.global.stats_auth {
        auth.password = "<hidden>".into();
    }
    print!("{}", toml::to_string(&shown)?);
    Ok(())
}

/// `xdplb import-haproxy`: the notes on stderr (errors first), the TOML on stdout or `output`;
/// refused when a note is an error, unless the operator accepts the differences.
fn import_haproxy(
    file: &std::path::Path,
    output: Option<&std::path::Path>,
    ifaces: Vec<String>,
    accept_differences: bool,
    no_resolve: bool,
) -> Result<()> {
    let text = std::fs::read_to_string(file).map_err(|e| Refused(format!("{}: cannot read: {e}", file.display())))?;
    let interfaces =
        if ifaces.is_empty() { lb_user::host::netif::default_route_interface().into_iter().collect() } else { ifaces };
    // IPv4 first (as HAProxy's `resolve-prefer ipv4`, and the address most hosts list first),
    // IPv6 when the name has no IPv4 address.
    let resolve = |host: &str| -> Option<std::net::IpAddr> {
        use std::net::ToSocketAddrs;
        let addrs: Vec<std::net::IpAddr> = (host, 0).to_socket_addrs().ok()?.map(|a| a.ip()).collect();
        addrs.iter().find(|a| a.is_ipv4()).or_else(|| addrs.first()).copied()
    };
    let opts = config::haproxy::ImportOptions { interfaces, resolve: if no_resolve { None } else { Some(&resolve) } };
    let import = config::haproxy::import(&text, &opts).map_err(|e| Refused(format!("{}: {e}", file.display())))?;
    for n in &import.notes {
        eprintln!("xdplb import-haproxy: {}: {n}", file.display());
    }
    let errors = import.errors().count();
    if errors > 0 && !accept_differences {
        return Err(Refused(format!(
            "{}: {errors} error note{} above: the translation would not behave like this haproxy.cfg; fix the haproxy.cfg or the TOML by hand, or pass --accept-differences to write it anyway",
            file.display(),
            if errors == 1 { "" } else { "s" }
        ))
        .into());
    }
    let toml = config::haproxy::to_toml(&import);
    match output {
        Some(out) => std::fs::write(out, toml).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?,
        None => print!("{toml}"),
    }
    Ok(())
}

pub fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Run { config, ifaces, xdp_mode, pin_dir, runtime_socket, state_file } => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(agent::run(RunOptions { config, ifaces, xdp_mode, pin_dir, runtime_socket, state_file }))
                .map_err(|e| match e.downcast::<Refused>() {
                    Ok(Refused(msg)) => Refused(format!("refusing to start: {msg}")).into(),
                    Err(e) => e,
                })
        }
        Cmd::CheckConfig { file } => check_config(&file),
        Cmd::ImportHaproxy { file, output, ifaces, accept_differences, no_resolve } => {
            import_haproxy(&file, output.as_deref(), ifaces, accept_differences, no_resolve)
        }
        Cmd::Flows { pin_dir, json } => {
            let flows = FlowTable::open_pinned(&pin_dir)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "opening {}/flows: {e}; is the agent running with this --pin-dir?",
                        pin_dir.display()
                    )
                })?
                .flows();
            if json {
                println!("{}", serde_json::to_string_pretty(&flows)?);
            } else {
                print!("{}", table::flows(&flows));
            }
            Ok(())
        }
        Cmd::Stats { pin_dir, json } => {
            let c = Counters::open_pinned(&pin_dir).map_err(|e| {
                anyhow::anyhow!("opening counters under {}: {e}; is the agent running?", pin_dir.display())
            })?;
            let (r, e) = (c.reasons()?, c.events()?);
            if json {
                // Reasons and events have distinct names: one flat object, as before events.
                let m: serde_json::Map<String, serde_json::Value> = r
                    .iter()
                    .map(|(k, v)| (k.name().to_string(), (*v).into()))
                    .chain(e.iter().map(|(k, v)| (k.name().to_string(), (*v).into())))
                    .collect();
                println!("{}", serde_json::Value::Object(m));
            } else {
                print!("{}", table::counters(&r, &e));
            }
            Ok(())
        }
        Cmd::Status { stats, auth, json } => {
            let snap = http::fetch_with(stats, auth.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&snap)?);
            } else {
                print!("{}", table::table(&snap));
            }
            // The agent answers, but its data path may not run: fail, as a track script needs.
            let stopped: Vec<&str> = snap.interfaces.iter().filter(|i| !i.running).map(|i| i.name.as_str()).collect();
            if stopped.is_empty() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "XDP no longer runs on {}: the data path does not see its packets; restart the agent (systemctl restart xdplb)",
                    stopped.join(", ")
                ))
            }
        }
        Cmd::Server { action, target, socket } => {
            let state = match action {
                ServerAction::Enable => "ready",
                ServerAction::Disable => "maint",
                ServerAction::Drain => "drain",
            };
            runtime_call(&socket, &format!("set server {target} state {state}"))
        }
        Cmd::Reload { socket } => {
            let out = runtime::call(&socket, "reload")?;
            print!("{out}");
            if out.starts_with("reloaded") {
                Ok(())
            } else {
                Err(anyhow::anyhow!("reload did not apply"))
            }
        }
        Cmd::Runtime { command, socket } => runtime_call(&socket, &command.join(" ")),
        Cmd::Detach { pin_dir } => agent::detach(&pin_dir),
    }
}
