//! What the agent asks of and changes on the host: interfaces and routes (`netif`), kernel
//! settings (`sysctl`), and living as a service: the lock, privileges, systemd (`service`).

pub mod netif;
pub mod service;
pub mod sysctl;
