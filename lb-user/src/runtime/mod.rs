//! The runtime API: a root-only unix socket (`socket`) that speaks the part of HAProxy's
//! stats-socket protocol operators script against (`command`), answers in HAProxy's text formats
//! (`info`, `stat`, `servers_state`), and keeps what an operator sets by hand (`overrides`).

pub mod command;
pub mod info;
pub mod levels;
pub mod overrides;
#[cfg(test)]
mod sample;
pub mod servers_state;
pub mod sess;
pub mod socket;
pub mod stat;
pub mod weight;

pub use command::{parse, Command, ProxyRef, Refusal, StatFilter, Weight, HELP};
pub use levels::{Access, Level};
pub use overrides::{Overrides, ServerOverride};
pub use socket::{bind, call, serve, CallError, Policy, Request};
