//! The kernel side as the agent sees it: loading the XDP program and pinning its maps (`load`,
//! `pins`), attaching it (`attach`), the one writer of the maps the configuration decides
//! (`maps`), the connection table (`flows`), its sweep on a thread of its own (`sweeper`) and the
//! counters (`counters`), the connect hook for local clients (`hook`), what the maps lock in
//! kernel memory (`memory`); `sys` holds the raw
//! map operations aya lacks (the agent's only `unsafe`).

pub mod attach;
pub mod counters;
pub mod flow_events;
pub mod flows;
pub mod hook;
pub mod kernel_btf;
pub mod load;
pub mod maps;
pub mod memory;
pub mod pins;
pub mod sweeper;
pub(crate) mod sys;
pub use sys::{pod_bytes, pod_read};

pub use attach::{attach, link_pin, Attached};
pub use load::{
    ipv6_stages_loaded, load, program, verified, DataplaneError, LoadOptions, EBPF_OBJECT, PROGRAM, VERIFIER_LIMIT,
};
pub use pins::{prepare_pin_dir, remove_pins};
