//! Loading the XDP program and creating (or adopting pinned) maps.

use std::path::PathBuf;

use aya::{maps::ProgramArray, programs::Xdp, Ebpf, EbpfLoader};
use lb_common::{names, FlowKeyOf, FlowOf, V6};

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
    /// The configuration has IPv6 servers: the IPv6 tables are sized like IPv4's (otherwise
    /// small, see `memory::ipv6_capacity`).
    pub ipv6: bool,
}

/// Loads the program and creates (or adopts pinned) maps; does not attach.
pub fn load(opts: &LoadOptions) -> Result<Ebpf, DataplaneError> {
    if EBPF_OBJECT.is_empty() {
        return Err(DataplaneError::NoObject);
    }
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(names::FLOWS, opts.max_flows.saturating_mul(2));
    loader.map_max_entries(names::SYN_FLOWS, opts.max_half_open.saturating_mul(2));
    let (flows6, half_open6) = super::memory::ipv6_capacity(opts.max_flows, opts.max_half_open, opts.ipv6);
    loader.map_max_entries(names::FLOWS6, flows6.saturating_mul(2));
    loader.map_max_entries(names::SYN_FLOWS6, half_open6.saturating_mul(2));
    if let Some(dir) = &opts.pin_dir {
        prepare_pin_dir(dir)?;
        for name in names::ALL {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(EBPF_OBJECT)?;
    program(&mut ebpf).load()?;
    // A previous agent's IPv6 flows, adopted, keep their stages until they are over.
    let ipv6_stages = opts.ipv6 || ipv6_flows_left(&ebpf);
    family_programs(&mut ebpf, ipv6_stages)?;
    for (name, _) in super::hook::HOOKS {
        super::hook::program(&mut ebpf, name).load()?;
    }
    super::hook::egress_program(&mut ebpf).load()?;
    Ok(ebpf)
}

/// The kernel's verifier's limit of instructions walked for one program (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const VERIFIER_LIMIT: u32 = 1_000_000;

/// How many instructions the kernel's verifier walked for each loaded program, by name, most
/// first: the start-up's main cost (CPU time, about 5 us an instruction on a 2-core VM), and how
/// close a program is to `VERIFIER_LIMIT` (past it, it is refused). Empty on kernels before 5.16,
/// which do not say.
pub fn verified(ebpf: &Ebpf) -> Vec<(String, u32)> {
    let mut walked: Vec<_> = ebpf
        .programs()
        .filter_map(|(name, p)| Some((name.to_string(), p.info().ok()?.verified_instruction_count()?)))
        .collect();
    walked.sort_by_key(|w| std::cmp::Reverse(w.1));
    walked
}

/// The IPv4 program hands IPv6 frames to the IPv6 one, which hands each to the stage it needs
/// (tail calls through `family_progs`, see lb-ebpf's `v6`). Without IPv6 servers they would
/// only pass IPv6 frames to the kernel, which an empty slot does (the tail call falls through):
/// they are not loaded then, which spares the verifier about 40% of the start-up's work (a
/// reload cannot bring IPv6 servers in, see the agent's `apply`), unless a previous agent's
/// IPv6 flows are in the adopted table. An adopted `family_progs` (pinned) is emptied of a
/// previous agent's stages otherwise, so that no old stage runs on.
fn family_programs(ebpf: &mut Ebpf, ipv6: bool) -> Result<(), DataplaneError> {
    for (name, slot) in lb_common::FAMILY_PROGRAMS {
        let fd = if ipv6 {
            let prog = xdp_program(ebpf, name);
            prog.load()?;
            Some(prog.fd()?.try_clone().map_err(aya::programs::ProgramError::from)?)
        } else {
            None
        };
        let mut progs: ProgramArray<_> = ebpf
            .map_mut(names::FAMILY_PROGS)
            .ok_or(DataplaneError::NoObject)?
            .try_into()
            .map_err(|e: aya::maps::MapError| DataplaneError::Program(e.into()))?;
        match fd {
            Some(fd) => progs.set(slot, &fd, 0).map_err(|e| DataplaneError::Program(e.into()))?,
            // An empty slot answers ENOENT: already as wanted.
            None => match progs.clear_index(&slot) {
                Err(aya::maps::MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {}
                r => r.map_err(|e| DataplaneError::Program(e.into()))?,
            },
        }
    }
    Ok(())
}

/// Whether the IPv6 connection table holds flows: a previous agent's, adopted from the pins.
fn ipv6_flows_left(ebpf: &Ebpf) -> bool {
    let Some(map) = ebpf.map(names::FLOWS6) else { return false };
    let Ok(flows) = aya::maps::HashMap::<_, FlowKeyOf<V6>, FlowOf<V6>>::try_from(map) else { return false };
    matches!(flows.keys().next(), Some(Ok(_)))
}

/// Whether the IPv6 stages were loaded (see `family_programs`).
pub fn ipv6_stages_loaded(ebpf: &Ebpf) -> bool {
    ebpf.program(lb_common::FAMILY_PROGRAMS[0].0).is_some_and(|p| p.fd().is_ok())
}

/// One of the object's XDP programs (the IPv6 ones, tail-called: see lb-ebpf's `v6`).
#[expect(
    clippy::expect_used,
    reason = "the object is the one embedded at build time, which has these XDP programs; no input changes that"
)]
fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut Xdp {
    ebpf.program_mut(name).expect("the embedded object has the program").try_into().expect("an XDP program")
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
