//! The runtime API's commands: HAProxy's stats-socket command lines, parsed.

use crate::config::AdminState;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    ShowInfo,
    ShowStat,
    ShowServersState(Option<String>),
    SetState {
        backend: String,
        server: String,
        state: AdminState,
    },
    SetWeight {
        backend: String,
        server: String,
        weight: u32,
    },
    Health {
        backend: String,
        server: String,
        enabled: bool,
    },
    ShutdownSessions {
        backend: String,
        server: String,
    },
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

/// A command the agent does not carry out, with HAProxy's answer (the socket ends it with the
/// empty line that ends every answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Require 'backend/server'.\n")]
    NoTarget,
    #[error("'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n")]
    BadState,
    #[error("Integer value between 0 and 256 expected.\n")]
    BadWeight,
    #[error("Unknown command: '{0}'\n{HELP}")]
    Unknown(String),
    #[error("No such backend.\n")]
    NoSuchBackend,
    #[error("No such server.\n")]
    NoSuchServer,
    /// `show servers state` of a backend that does not exist.
    #[error("Can't find backend.\n")]
    CantFindBackend,
}

fn target(s: &str) -> Result<(String, String), Refusal> {
    let (b, srv) = s.split_once('/').ok_or(Refusal::NoTarget)?;
    Ok((b.to_string(), srv.to_string()))
}

pub fn parse(line: &str) -> Result<Command, Refusal> {
    let w: Vec<&str> = line.split_whitespace().collect();
    Ok(match w.as_slice() {
        ["help"] | [] => Command::Help,
        ["show", "info", ..] => Command::ShowInfo,
        ["show", "stat", ..] => Command::ShowStat,
        ["show", "servers", "state"] => Command::ShowServersState(None),
        ["show", "servers", "state", b] => Command::ShowServersState(Some(b.to_string())),
        ["set", "server", t, "state", s] => {
            let (backend, server) = target(t)?;
            let state = match *s {
                "ready" => AdminState::Ready,
                "drain" => AdminState::Drain,
                "maint" => AdminState::Maint,
                _ => return Err(Refusal::BadState),
            };
            Command::SetState { backend, server, state }
        }
        ["set", "server", t, "weight", n] => {
            let (backend, server) = target(t)?;
            let weight = n.trim_end_matches('%').parse().ok().filter(|w| *w <= 256).ok_or(Refusal::BadWeight)?;
            Command::SetWeight { backend, server, weight }
        }
        [verb @ ("disable" | "enable"), "health", t] => {
            let (backend, server) = target(t)?;
            Command::Health { backend, server, enabled: *verb == "enable" }
        }
        ["shutdown", "sessions", "server", t] => {
            let (backend, server) = target(t)?;
            Command::ShutdownSessions { backend, server }
        }
        ["reload"] => Command::Reload,
        ["set", "timeout", "cli", _] => Command::Noop,
        _ => return Err(Refusal::Unknown(line.trim().to_owned())),
    })
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
        assert_eq!(
            parse("disable health b/s").unwrap(),
            Command::Health { backend: "b".into(), server: "s".into(), enabled: false }
        );
        assert_eq!(
            parse("shutdown sessions server b/s").unwrap(),
            Command::ShutdownSessions { backend: "b".into(), server: "s".into() }
        );
        assert!(parse("set server nobackslash state ready").unwrap_err().to_string().contains("backend/server"));
        assert!(parse("set server b/s weight 300").unwrap_err().to_string().contains("between 0 and 256"));
        assert!(parse("set server b/s state off").unwrap_err().to_string().contains("'ready', 'drain' and 'maint'"));
        assert!(parse("frobnicate").unwrap_err().to_string().starts_with("Unknown command"));
    }
}
