//! What the agent asks of and changes on the host: interfaces and routes (`netif`), kernel
//! settings (`sysctl`), and living as a service: the lock, privileges, systemd (`service`), open files
//! (`limits`), who holds an address (`sockets`).

pub mod addrwatch;
pub mod limits;
pub mod netif;
pub mod service;
pub mod sockets;
pub mod sysctl;

/// The host's name (`show info`'s `node`), if it has one that is text.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname().ok()?.into_string().ok()
}
