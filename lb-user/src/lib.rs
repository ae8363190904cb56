//! The xdplb agent: loads and attaches the XDP program, owns its maps, sweeps its connection
//! table, runs the health checks that decide which servers take new flows, and serves the status
//! page and the runtime API.
//!
//! Data flows one way, one folder per stage: `config` (the file, validated) -> `model` (resolved
//! on this host, by id) -> `health` and `dataplane` (checks; the kernel's maps) -> `report`
//! (one snapshot, then renderers). `host` is what the agent asks of the machine, `runtime` the
//! operator's socket, `agent` the loop that ties them together; `problems` and `http1` are
//! shared by several stages; `sync` shares flows with peer balancers (behind a keepalived VIP).

// clippy.toml lets tests unwrap, index and panic; it has no such switch for string slicing.
#![cfg_attr(test, allow(clippy::string_slice, reason = "tests may slice strings: a failing test is what they are for"))]

pub mod agent;
pub mod config;
pub mod dataplane;
pub mod health;
pub mod host;
pub mod http1;
pub mod logging;
pub mod model;
pub mod problems;
pub mod report;
pub mod runtime;
pub mod sync;
