//! Who listens on an address: the user and, when this process may see it, the process (from
//! /proc/net/tcp and the processes' descriptors), so that "address in use" can say who has it.

use std::{fmt, fs, net::SocketAddr};

/// The holder of a listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub uid: u32,
    /// `(pid, command name)`, when a process holding it could be read.
    pub process: Option<(u32, String)>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = nix::unistd::User::from_uid(self.uid.into())
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {}", self.uid), |u| format!("user {} (uid {})", u.name, self.uid));
        match &self.process {
            Some((pid, comm)) => write!(f, "pid {pid} ({comm}) of {user}"),
            None => write!(f, "a process of {user} (not visible to this agent)"),
        }
    }
}

/// The socket listening on `addr` (or on the wildcard address of its port), if any.
pub fn listener_of(addr: SocketAddr) -> Option<Holder> {
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    let SocketAddr::V4(addr) = addr else { return None };
    let (uid, inode) = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, state, uid, inode) = (f.get(1)?, f.get(3)?, f.get(7)?, f.get(9)?);
        // 0A: TCP_LISTEN.
        if *state != "0A" {
            return None;
        }
        let (ip, port) = local.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        // IPv4 by nature: /proc/net/tcp lists IPv4 sockets only (tcp6's are another file).
        // The address is the network-order word printed as this machine's integer.
        let ip = std::net::Ipv4Addr::from(ip.to_ne_bytes());
        let ours = port == addr.port() && (ip == *addr.ip() || ip.is_unspecified() || addr.ip().is_unspecified());
        ours.then(|| Some((uid.parse().ok()?, (*inode).to_owned()))).flatten()
    })?;
    Some(Holder { uid, process: process_with(&format!("socket:[{inode}]")) })
}

/// A process with a descriptor pointing at `target` (`socket:[INODE]`).
fn process_with(target: &str) -> Option<(u32, String)> {
    for entry in fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else { continue };
        if fds.filter_map(Result::ok).any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target)) {
            let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim().to_owned();
            return Some((pid, comm));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = listener_of(addr).expect("our own listener");
        assert_eq!(h.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(h.process.as_ref().map(|p| p.0), Some(std::process::id()));
        assert!(h.to_string().starts_with(&format!("pid {} (", std::process::id())), "{h}");
        drop(l);
        assert_eq!(listener_of(addr), None);
    }
}
