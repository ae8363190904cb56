//! The runtime API: a root-only unix socket that speaks the part of HAProxy's stats-socket
//! protocol operators script against (`echo "show stat" | socat stdio unix-connect:SOCK`),
//! plus what an operator sets by hand, kept in a state file so that it survives reloads and
//! restarts (HAProxy loses it unless a state file is dumped by hand first).

use std::{
    collections::BTreeMap,
    fs,
    io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::Path,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::config::AdminState;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    ShowInfo,
    ShowStat,
    ShowServersState(Option<String>),
    SetState { backend: String, server: String, state: AdminState },
    SetWeight { backend: String, server: String, weight: u32 },
    Health { backend: String, server: String, enabled: bool },
    ShutdownSessions { backend: String, server: String },
    /// xdplb's own: re-read the configuration (as SIGHUP).
    Reload,
    /// Accepted and ignored (`set timeout cli`, which hatop sends: sessions here have no idle
    /// timeout to set).
    Noop,
}

pub const HELP: &str = "\
The following commands are valid at this level:
  help                                    : this message
  prompt                                  : interactive mode (one command per line)
  quit                                    : leave interactive mode
  show info                               : report information about the running process
  show stat                               : report counters for each proxy and server (CSV)
  show servers state [<backend>]          : dump volatile server information
  set server <bk>/<srv> state ready|drain|maint : change a server's administrative state
  set server <bk>/<srv> weight <0-256>    : change a server's weight
  disable health <bk>/<srv>               : stop its health checks (it counts as UP)
  enable health <bk>/<srv>                : start its health checks again
  shutdown sessions server <bk>/<srv>     : end every open flow of a server
  reload                                  : re-read and apply the configuration file
";

fn target(s: Option<&&str>) -> Result<(String, String), String> {
    let s = s.ok_or("Require 'backend/server'.\n")?;
    let (b, srv) = s.split_once('/').ok_or("Require 'backend/server'.\n")?;
    Ok((b.to_string(), srv.to_string()))
}

pub fn parse(line: &str) -> Result<Command, String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    Ok(match w.as_slice() {
        ["help"] | [] => Command::Help,
        ["show", "info", ..] => Command::ShowInfo,
        ["show", "stat", ..] => Command::ShowStat,
        ["show", "servers", "state"] => Command::ShowServersState(None),
        ["show", "servers", "state", b] => Command::ShowServersState(Some(b.to_string())),
        ["set", "server", t, "state", s] => {
            let (backend, server) = target(Some(t))?;
            let state = match *s {
                "ready" => AdminState::Ready,
                "drain" => AdminState::Drain,
                "maint" => AdminState::Maint,
                _ => return Err("'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n".into()),
            };
            Command::SetState { backend, server, state }
        }
        ["set", "server", t, "weight", n] => {
            let (backend, server) = target(Some(t))?;
            let weight = n.trim_end_matches('%').parse().ok().filter(|w| *w <= 256).ok_or("Integer value between 0 and 256 expected.\n")?;
            Command::SetWeight { backend, server, weight }
        }
        ["disable", "health", t] | ["enable", "health", t] => {
            let (backend, server) = target(Some(t))?;
            Command::Health { backend, server, enabled: w[0] == "enable" }
        }
        ["shutdown", "sessions", "server", t] => {
            let (backend, server) = target(Some(t))?;
            Command::ShutdownSessions { backend, server }
        }
        ["reload"] => Command::Reload,
        ["set", "timeout", "cli", _] => Command::Noop,
        _ => return Err(format!("Unknown command: '{}'\n{HELP}", line.trim())),
    })
}

/// One command for the agent, with where to send its answer.
pub struct Request {
    pub line: String,
    pub reply: oneshot::Sender<String>,
}

/// Binds the socket, root-only, replacing a stale one (the agent holds the data path's lock).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Accepts connections until the process ends. Like HAProxy: one line (commands separated by
/// `;`) then close, or `prompt` for an interactive session.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Request>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = session(stream, tx).await {
                log::debug!("runtime socket session: {e}");
            }
        });
    }
}

async fn session(stream: UnixStream, tx: mpsc::Sender<Request>) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut interactive = false;
    while let Some(line) = lines.next_line().await? {
        for cmd in line.split(';').map(str::trim) {
            match cmd {
                "prompt" => {
                    interactive = true;
                    continue;
                }
                "quit" => return Ok(()),
                "" if interactive => continue,
                _ => {}
            }
            let (reply, answer) = oneshot::channel();
            if tx.send(Request { line: cmd.to_string(), reply }).await.is_err() {
                return Ok(());
            }
            let text = answer.await.unwrap_or_default();
            w.write_all(text.as_bytes()).await?;
            // HAProxy ends every answer with an empty line.
            if !text.ends_with("\n\n") {
                w.write_all(b"\n").await?;
            }
        }
        if !interactive {
            break;
        }
        w.write_all(b"> ").await?;
    }
    w.shutdown().await
}

/// What was set by hand, per `backend/server`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Overrides {
    pub servers: BTreeMap<String, ServerOverride>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<AdminState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_disabled: Option<bool>,
}

impl Overrides {
    /// Reads the state file; a missing one means nothing was set.
    pub fn load(path: &Path) -> Result<Self, String> {
        match fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| format!("{}: {e}; fix or remove it", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Overrides::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes the state file atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        fs::rename(tmp, path)
    }

    pub fn entry(&mut self, backend: &str, server: &str) -> &mut ServerOverride {
        self.servers.entry(format!("{backend}/{server}")).or_default()
    }
}

/// Sends one line to the agent's socket and returns its answer (the CLI's side).
pub fn call(socket: &Path, line: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the agent at {}: {e}; is `xdplb run` running (global.runtime_socket)?", socket.display()))?;
    writeln!(s, "{line}").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_command_lines_parse() {
        assert_eq!(parse("show stat").unwrap(), Command::ShowStat);
        assert_eq!(parse("show servers state etcd").unwrap(), Command::ShowServersState(Some("etcd".into())));
        assert_eq!(
            parse("set server etcd-cluster/app1 state drain").unwrap(),
            Command::SetState { backend: "etcd-cluster".into(), server: "app1".into(), state: AdminState::Drain }
        );
        assert_eq!(
            parse("set server b/s weight 50").unwrap(),
            Command::SetWeight { backend: "b".into(), server: "s".into(), weight: 50 }
        );
        assert_eq!(parse("disable health b/s").unwrap(), Command::Health { backend: "b".into(), server: "s".into(), enabled: false });
        assert_eq!(parse("shutdown sessions server b/s").unwrap(), Command::ShutdownSessions { backend: "b".into(), server: "s".into() });
        assert!(parse("set server nobackslash state ready").unwrap_err().contains("backend/server"));
        assert!(parse("set server b/s weight 300").unwrap_err().contains("between 0 and 256"));
        assert!(parse("set server b/s state off").unwrap_err().contains("'ready', 'drain' and 'maint'"));
        assert!(parse("frobnicate").unwrap_err().starts_with("Unknown command"));
    }

    #[test]
    fn overrides_round_trip_through_the_state_file() {
        let dir = std::env::temp_dir().join(format!("xdplb-state-{}", std::process::id()));
        let path = dir.join("state.json");
        assert_eq!(Overrides::load(&path).unwrap(), Overrides::default());
        let mut o = Overrides::default();
        o.entry("etcd-cluster", "app1").state = Some(AdminState::Maint);
        o.entry("etcd-cluster", "app2").weight = Some(7);
        o.save(&path).unwrap();
        assert_eq!(Overrides::load(&path).unwrap(), o);
        fs::write(&path, "{not json").unwrap();
        assert!(Overrides::load(&path).unwrap_err().contains("fix or remove it"));
        let _ = fs::remove_dir_all(dir);
    }
}
