//! Loading the XDP program and creating (or adopting pinned) maps.

use std::path::PathBuf;

use aya::{programs::Xdp, Ebpf, EbpfLoader};
use lb_common::names;

use super::{
    attach::{AttachHint, Attached},
    pins::prepare_pin_dir,
};

/// The XDP object built by `build.rs`, embedded so that the agent is one file.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

pub const PROGRAM: &str = "xdplb";

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "this xdplb binary was built without its XDP program (AYA_BUILD_SKIP=1); rebuild with `cargo xtask build`"
    )]
    NoObject,
    #[error("loading the XDP object failed: {0}; loading BPF needs root or CAP_BPF + CAP_NET_ADMIN (and CAP_PERFMON on some kernels)")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP program was refused: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("bpffs: {0}")]
    BpfFs(String),
    #[error("attaching XDP to {iface} in {mode} mode failed: {source}{hint}")]
    Attach { iface: String, mode: Attached, hint: AttachHint, source: Box<aya::programs::ProgramError> },
}

/// Where and how to load.
pub struct LoadOptions {
    /// Pin every map under this directory (reusing maps already pinned there).
    pub pin_dir: Option<PathBuf>,
    /// Connection table capacity in flows.
    pub max_flows: u32,
    /// Half-open table capacity in flows.
    pub max_half_open: u32,
}

/// Loads the program and creates (or adopts pinned) maps; does not attach.
pub fn load(opts: &LoadOptions) -> Result<Ebpf, DataplaneError> {
    if EBPF_OBJECT.is_empty() {
        return Err(DataplaneError::NoObject);
    }
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(names::FLOWS, opts.max_flows.saturating_mul(2));
    loader.map_max_entries(names::SYN_FLOWS, opts.max_half_open.saturating_mul(2));
    if let Some(dir) = &opts.pin_dir {
        prepare_pin_dir(dir)?;
        for name in names::ALL {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(EBPF_OBJECT)?;
    program(&mut ebpf).load()?;
    for (name, _) in super::hook::HOOKS {
        super::hook::program(&mut ebpf, name).load()?;
    }
    super::hook::egress_program(&mut ebpf).load()?;
    Ok(ebpf)
}

#[expect(
    clippy::expect_used,
    reason = "the object is the one embedded at build time, which has this XDP program; no input changes that"
)]
pub fn program(ebpf: &mut Ebpf) -> &mut Xdp {
    ebpf.program_mut(PROGRAM)
        .expect("the embedded object has the xdplb program")
        .try_into()
        .expect("xdplb is an XDP program")
}
