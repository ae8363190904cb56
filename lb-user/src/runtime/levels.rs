//! Who may do what on a runtime API socket: HAProxy's levels (`stats socket ... level
//! user|operator|admin`). `user` reads (`show info`, `show stat`, `show servers state`, `help`),
//! `operator` may also list the open flows (`show sess`, an operator command in HAProxy too), `admin`
//! may change servers and reload. Each socket has one level; the caller's identity is checked too (the
//! kernel says who connected: `SO_PEERCRED`), so a socket's file mode is not the only guard.

use super::Command;
pub use crate::config::Level;

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::User => "user",
            Level::Operator => "operator",
            Level::Admin => "admin",
        }
    }
}

impl Command {
    /// The level a socket needs to carry the command out.
    pub fn level(&self) -> Level {
        match self {
            Command::Help
            | Command::ShowInfo
            | Command::ShowStat(_)
            | Command::ShowServersState(_)
            | Command::GetWeight { .. }
            | Command::Noop => Level::User,
            Command::ShowSess => Level::Operator,
            Command::SetState { .. }
            | Command::SetWeight { .. }
            | Command::Health { .. }
            | Command::ShutdownSessions { .. }
            | Command::Reload => Level::Admin,
        }
    }

    /// Whether the answer comes from the snapshot alone (no change, nothing the agent's loop
    /// must do): such commands are answered by the socket's own task.
    pub fn reads_only(&self) -> bool {
        self.level() == Level::User
    }
}

/// Who may connect to a socket besides root and the agent's own user: the members of one group
/// (their primary group, as the kernel reports the caller's credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub level: Level,
    pub group: Option<u32>,
}

impl Access {
    /// The configured socket: root only, every command.
    pub const ADMIN: Access = Access { level: Level::Admin, group: None };

    /// Whether a caller with `uid`/`gid` may use the socket at all.
    pub fn admits(&self, uid: u32, gid: u32) -> bool {
        uid == 0 || uid == nix::unistd::geteuid().as_raw() || self.group.is_some_and(|g| g == gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::parse;

    #[test]
    fn reads_are_user_level_and_changes_admin() {
        for line in [
            "show stat",
            "show stat -1 4 -1",
            "show info",
            "show servers state",
            "help",
            "set timeout cli 5",
            "get weight b/s",
        ] {
            assert_eq!(parse(line).unwrap().level(), Level::User, "{line}");
        }
        for line in [
            "set server b/s state drain",
            "set server b/s weight 5",
            "set weight b/s 50%",
            "disable server b/s",
            "enable server b/s",
            "disable health b/s",
            "shutdown sessions server b/s",
            "reload",
        ] {
            assert_eq!(parse(line).unwrap().level(), Level::Admin, "{line}");
        }
        assert_eq!(parse("show sess").unwrap().level(), Level::Operator);
        assert!(!parse("show sess").unwrap().reads_only());
        assert!(Level::User < Level::Operator && Level::Operator < Level::Admin);
        let monitor = Access { level: Level::User, group: Some(4242) };
        assert!(monitor.admits(0, 0) && monitor.admits(1234, 4242) && !monitor.admits(1234, 1234));
        assert!(!Access::ADMIN.admits(1234, 4242) || nix::unistd::geteuid().as_raw() == 1234);
    }
}
