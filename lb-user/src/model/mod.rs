//! The configuration resolved on this host: ids, frontend keys, source addresses and every
//! setting later stages need, by id (`topology`), and which servers take new flows
//! (`selection`), and whether it fits the kernel's maps (`fits`).

pub mod fits;
pub mod selection;
pub mod topology;

pub use selection::weighted_slots;
pub use topology::*;
