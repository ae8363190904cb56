//! File descriptors: the agent raises its limit as far as it may, and splits what it has so that
//! local clients (the status page, the runtime API) can never take what the health checks need.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// What the agent keeps for itself besides the checks: the XDP object's maps and links, the
/// listeners, the lock, the log, the runtime's own (epoll, eventfd, threads).
const BASE_RESERVE: u64 = 128;
/// Descriptors one checked server may hold at once (a check's socket; two while a check that
/// ran out of time is torn down as the next one starts).
const PER_CHECK: u64 = 2;
/// At most this many status page clients at once (more are closed as they arrive).
const MAX_STATUS_CLIENTS: u64 = 256;
/// At most this many runtime API sessions at once, per socket.
const MAX_RUNTIME_SESSIONS: u64 = 32;

/// How many descriptors each kind of local client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft limit now in force.
    pub nofile: u64,
    /// Kept for the checks (and the agent itself).
    pub reserved: u64,
    pub status_clients: usize,
    pub runtime_sessions: usize,
}

/// Raises the soft limit of open files to the hard one (systemd's `LimitNOFILE` sets both);
/// returns the limit in force, before and after.
pub fn raise_nofile() -> (u64, u64) {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return (0, 0) };
    if soft >= hard {
        return (soft, soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => (soft, hard),
        Err(e) => {
            log::warn!("cannot raise the open files limit from {soft} to {hard}: {e}");
            (soft, soft)
        }
    }
}

/// Splits `nofile` descriptors: the checks of `checked` servers and the agent's own first, then
/// the status page and the runtime API get a share of what is left (a quarter and an eighth),
/// within their caps and never below a handful.
pub fn budget(nofile: u64, checked: usize) -> FdBudget {
    let reserved = BASE_RESERVE.saturating_add(PER_CHECK.saturating_mul(u64::try_from(checked).unwrap_or(u64::MAX)));
    let spare = nofile.saturating_sub(reserved);
    let share = |part: u64, cap: u64| usize::try_from((spare / part).clamp(4, cap)).unwrap_or(4);
    FdBudget {
        nofile,
        reserved,
        status_clients: share(4, MAX_STATUS_CLIENTS),
        runtime_sessions: share(8, MAX_RUNTIME_SESSIONS),
    }
}

/// How long an accept loop waits after a failed accept before the next: a while when
/// descriptors or memory ran out (the next accept would fail the same way at once, and a loop
/// that retries at once spins a core), a moment otherwise.
pub fn accept_pause(e: &std::io::Error) -> std::time::Duration {
    use nix::errno::Errno;
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => std::time::Duration::from_millis(100),
        _ => std::time::Duration::from_millis(5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_are_served_first() {
        // 1024 descriptors, 3 servers: plenty for everyone, within the caps.
        let b = budget(1024, 3);
        assert_eq!((b.reserved, b.status_clients, b.runtime_sessions), (134, 222, 32));
        // 1000 servers on 1024 descriptors: the checks keep theirs, local clients get a handful.
        let b = budget(1024, 1000);
        assert_eq!((b.status_clients, b.runtime_sessions), (4, 4));
        assert_eq!(budget(65536, 3).status_clients, 256);
    }
}
