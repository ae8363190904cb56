//! The runtime API's commands: HAProxy's stats-socket command lines, parsed.

use crate::config::AdminState;

/// A weight as `set weight` takes it: absolute (0-256), or `N%` of the configured weight
/// (HAProxy's meaning: `50%` of a server configured with weight 4 is 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Absolute(u32),
    Percent(u32),
}

impl Weight {
    /// The weight it gives a server configured with `initial`: HAProxy caps the percentage at
    /// 25600 and the result at 256.
    pub fn of(self, initial: u32) -> u32 {
        match self {
            Weight::Absolute(w) => w,
            Weight::Percent(p) => {
                u32::try_from(u64::from(initial) * u64::from(p.min(25_600)) / 100).unwrap_or(u32::MAX).min(256)
            }
        }
    }
}

/// `show stat`'s filter, as hatop sends it (`show stat -1 4 -1`): a proxy (by `iid` or name),
/// a mask of row types (1 frontends, 2 backends, 4 servers) and a server id; `-1` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFilter {
    pub proxy: Option<ProxyRef>,
    pub types: u8,
    pub sid: Option<usize>,
}

impl StatFilter {
    pub const ALL: StatFilter = StatFilter { proxy: None, types: 0b111, sid: None };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyRef {
    Id(usize),
    Name(String),
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    ShowInfo,
    ShowStat(StatFilter),
    ShowServersState(Option<String>),
    /// `show sess`: the connection table, one line per flow.
    ShowSess,
    /// `get weight <bk>/<srv>`: `current (initial configured)`.
    GetWeight {
        backend: String,
        server: String,
    },
    SetState {
        backend: String,
        server: String,
        state: AdminState,
    },
    SetWeight {
        backend: String,
        server: String,
        weight: Weight,
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
  show stat [{<iid>|<proxy>} <type> <sid>] : report counters for each proxy and server (CSV)
  show servers state [<backend>]          : dump volatile server information
  show sess                               : list the open flows (operator)
  get weight <bk>/<srv>                   : report a server's current and initial weight
  set server <bk>/<srv> state ready|drain|maint : change a server's administrative state
  set server <bk>/<srv> weight <0-256>[%] : change a server's weight
  set weight <bk>/<srv> <0-256>[%]        : change a server's weight (% of the configured one)
  disable server <bk>/<srv>               : put a server in maintenance (MAINT)
  enable server <bk>/<srv>                : take a server out of maintenance
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
    #[error("Absolute weight can only be between 0 and 256 inclusive.\n")]
    BadWeight,
    #[error("Relative weight must be positive.\n")]
    NegativeWeight,
    /// A `show stat` filter that is not `{<iid>|<proxy>} <type> <sid>`.
    #[error(
        "show stat takes {{<iid>|<proxy>}} <type> <sid> (e.g. -1 4 -1); typed and json output are not supported.\n"
    )]
    BadStatFilter,
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

/// HAProxy's weight argument: `N` (0-256) or `N%` (any non-negative percentage).
fn weight(text: &str) -> Result<Weight, Refusal> {
    if let Some(p) = text.strip_suffix('%') {
        if p.starts_with('-') {
            return Err(Refusal::NegativeWeight);
        }
        return p.parse().map(Weight::Percent).map_err(|_| Refusal::BadWeight);
    }
    text.parse().ok().filter(|w| *w <= 256).map(Weight::Absolute).ok_or(Refusal::BadWeight)
}

/// `show stat`'s arguments: none, or the proxy, type mask and server id.
fn stat_filter(args: &[&str]) -> Result<StatFilter, Refusal> {
    let any = |s: &str| s == "-1";
    match args {
        [] => Ok(StatFilter::ALL),
        [proxy, types, sid] => {
            let proxy = match *proxy {
                p if any(p) => None,
                p => Some(p.parse().map_or_else(|_| ProxyRef::Name(p.to_owned()), ProxyRef::Id)),
            };
            let types = if any(types) { 0b111 } else { types.parse().map_err(|_| Refusal::BadStatFilter)? };
            let sid = if any(sid) { None } else { Some(sid.parse().map_err(|_| Refusal::BadStatFilter)?) };
            Ok(StatFilter { proxy, types, sid })
        }
        _ => Err(Refusal::BadStatFilter),
    }
}

pub fn parse(line: &str) -> Result<Command, Refusal> {
    let w: Vec<&str> = line.split_whitespace().collect();
    Ok(match w.as_slice() {
        ["help"] | [] => Command::Help,
        ["show", "info", ..] => Command::ShowInfo,
        ["show", "stat", args @ ..] => Command::ShowStat(stat_filter(args)?),
        ["show", "sess"] => Command::ShowSess,
        ["get", "weight", t] => {
            let (backend, server) = target(t)?;
            Command::GetWeight { backend, server }
        }
        [verb @ ("disable" | "enable"), "server", t] => {
            let (backend, server) = target(t)?;
            let state = if *verb == "enable" { AdminState::Ready } else { AdminState::Maint };
            Command::SetState { backend, server, state }
        }
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
        ["set", "server", t, "weight", n] | ["set", "weight", t, n] => {
            let (backend, server) = target(t)?;
            Command::SetWeight { backend, server, weight: weight(n)? }
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
        assert_eq!(parse("show stat").unwrap(), Command::ShowStat(StatFilter::ALL));
        assert_eq!(
            parse("show stat -1 4 -1").unwrap(),
            Command::ShowStat(StatFilter { proxy: None, types: 4, sid: None })
        );
        assert_eq!(
            parse("show stat etcd 2 -1").unwrap(),
            Command::ShowStat(StatFilter { proxy: Some(ProxyRef::Name("etcd".into())), types: 2, sid: None })
        );
        assert_eq!(
            parse("show stat 3 -1 2").unwrap(),
            Command::ShowStat(StatFilter { proxy: Some(ProxyRef::Id(3)), types: 0b111, sid: Some(2) })
        );
        assert_eq!(parse("show stat typed").unwrap_err(), Refusal::BadStatFilter);
        assert_eq!(
            parse("disable server b/s").unwrap(),
            Command::SetState { backend: "b".into(), server: "s".into(), state: AdminState::Maint }
        );
        assert_eq!(
            parse("enable server b/s").unwrap(),
            Command::SetState { backend: "b".into(), server: "s".into(), state: AdminState::Ready }
        );
        assert_eq!(
            parse("set weight b/s 50%").unwrap(),
            Command::SetWeight { backend: "b".into(), server: "s".into(), weight: Weight::Percent(50) }
        );
        assert_eq!(
            parse("set server b/s weight 300%").unwrap(),
            Command::SetWeight { backend: "b".into(), server: "s".into(), weight: Weight::Percent(300) }
        );
        assert_eq!(parse("get weight b/s").unwrap(), Command::GetWeight { backend: "b".into(), server: "s".into() });
        assert_eq!(parse("set weight b/s -3%").unwrap_err(), Refusal::NegativeWeight);
        assert_eq!(parse("set weight b/s 257").unwrap_err(), Refusal::BadWeight);
        assert_eq!(parse("show sess").unwrap(), Command::ShowSess);
        assert_eq!(parse("show servers state etcd").unwrap(), Command::ShowServersState(Some("etcd".into())));
        assert_eq!(
            parse("set server etcd-cluster/app1 state drain").unwrap(),
            Command::SetState { backend: "etcd-cluster".into(), server: "app1".into(), state: AdminState::Drain }
        );
        assert_eq!(
            parse("set server b/s weight 50").unwrap(),
            Command::SetWeight { backend: "b".into(), server: "s".into(), weight: Weight::Absolute(50) }
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

    #[test]
    fn percent_weights_are_of_the_configured_weight() {
        // HAProxy: `set weight be/s1 50%` on a server configured with weight 4 gives 2.
        assert_eq!(Weight::Percent(50).of(4), 2);
        assert_eq!(Weight::Percent(100).of(7), 7);
        assert_eq!(Weight::Percent(0).of(7), 0);
        assert_eq!(Weight::Percent(u32::MAX).of(100), 256, "capped as HAProxy caps it");
        assert_eq!(Weight::Absolute(9).of(4), 9);
    }
}
