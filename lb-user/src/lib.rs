//! The xdplb agent: loads and attaches the XDP program, owns its maps, sweeps its connection
//! table, runs the health checks that decide which servers take new flows, and serves the status
//! page and the runtime API.

pub mod agent;
pub mod config;
pub mod conntrack;
pub mod dataplane;
pub mod haproxy;
pub mod health;
pub mod maps;
pub mod netif;
pub mod runtime;
pub mod runtime_format;
pub mod service;
pub mod snapshot;
pub mod stats;
pub mod status;
pub mod statuspage;
pub mod sysctl;
pub mod topology;
