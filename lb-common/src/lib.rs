//! Types shared by the XDP program (`lb-ebpf`) and the agent (`lb-user`).
//!
//! Every map key and value lives here, once, `#[repr(C)]` with explicit padding, so the kernel
//! side, the agent and `bpftool map dump` (through BTF) agree on one layout. Addresses and ports
//! are kept in wire order (`*_be`, `[u8; 4]`) so the hot path converts nothing.
#![no_std]

pub mod checksum;
pub mod maps;
pub mod tcp;

pub use maps::*;
