//! Loading the XDP program, pinning its maps, and attaching it to interfaces.

use std::{
    ffi::CString,
    fs,
    io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use aya::{
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::names;

use crate::{config::XdpModeCfg, netif::Interface};

/// The XDP object built by `build.rs`, embedded so that the agent is one file.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

pub const PROGRAM: &str = "xdplb";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("this xdplb binary was built without its XDP program (AYA_BUILD_SKIP=1); rebuild with `cargo xtask build`")]
    NoObject,
    #[error("loading the XDP object failed: {0}; loading BPF needs root or CAP_BPF + CAP_NET_ADMIN (and CAP_PERFMON on some kernels)")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP program was refused: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("bpffs: {0}")]
    BpfFs(String),
    #[error("attaching XDP to {iface} in {mode} mode failed: {source}{hint}")]
    Attach {
        iface: String,
        mode: &'static str,
        hint: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
}

/// Where and how to load.
pub struct LoadOptions {
    /// Pin every map under this directory (reusing maps already pinned there).
    pub pin_dir: Option<PathBuf>,
    /// Connection table capacity in flows.
    pub max_flows: u32,
}

/// Loads the program and creates (or adopts pinned) maps; does not attach.
pub fn load(opts: &LoadOptions) -> Result<Ebpf, DataplaneError> {
    if EBPF_OBJECT.is_empty() {
        return Err(DataplaneError::NoObject);
    }
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(names::FLOWS, opts.max_flows.saturating_mul(2));
    if let Some(dir) = &opts.pin_dir {
        prepare_pin_dir(dir)?;
        for name in names::ALL {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(EBPF_OBJECT)?;
    program(&mut ebpf).load()?;
    Ok(ebpf)
}

pub fn program(ebpf: &mut Ebpf) -> &mut Xdp {
    ebpf.program_mut(PROGRAM)
        .expect("the embedded object has the xdplb program")
        .try_into()
        .expect("xdplb is an XDP program")
}

/// Attaches to every interface; returns the mode each one got.
pub fn attach(
    ebpf: &mut Ebpf,
    ifaces: &[Interface],
    mode: XdpModeCfg,
) -> Result<Vec<(String, &'static str)>, DataplaneError> {
    let prog = program(ebpf);
    let mut got = Vec::new();
    for iface in ifaces {
        let attach = |prog: &mut Xdp, m: XdpMode, name: &'static str, hint: &'static str| {
            prog.attach_to_if_index(iface.ifindex, m).map(|_| name).map_err(|source| {
                DataplaneError::Attach { iface: iface.name.clone(), mode: name, hint, source: Box::new(source) }
            })
        };
        let mode_name = match mode {
            XdpModeCfg::Native => attach(prog, XdpMode::Driver, "native", "; the driver may not support XDP: try --xdp-mode generic")?,
            XdpModeCfg::Generic => attach(prog, XdpMode::Skb, "generic", "")?,
            XdpModeCfg::Auto => match attach(prog, XdpMode::Driver, "native", "") {
                Ok(m) => m,
                Err(e) => {
                    log::warn!("{e}; falling back to generic (skb) mode on {}, which is slower", iface.name);
                    attach(prog, XdpMode::Skb, "generic", "")?
                }
            },
        };
        log::info!("XDP attached to {} (ifindex {}) in {mode_name} mode", iface.name, iface.ifindex);
        got.push((iface.name.clone(), mode_name));
    }
    Ok(got)
}

/// Makes sure bpffs is mounted at /sys/fs/bpf (mounting it if not) and the pin directory exists,
/// readable by root only.
pub fn prepare_pin_dir(dir: &Path) -> Result<(), DataplaneError> {
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        return Err(DataplaneError::BpfFs(format!(
            "pin directory {} is not under /sys/fs/bpf; use e.g. /sys/fs/bpf/xdplb",
            dir.display()
        )));
    }
    if !is_bpffs(root) {
        fs::create_dir_all(root).map_err(|e| DataplaneError::BpfFs(format!("create {}: {e}", root.display())))?;
        let c = |s: &str| CString::new(s).unwrap();
        let rc = unsafe {
            libc::mount(c("bpf").as_ptr(), c("/sys/fs/bpf").as_ptr(), c("bpf").as_ptr(), 0, std::ptr::null())
        };
        if rc != 0 {
            return Err(DataplaneError::BpfFs(format!(
                "bpffs is not mounted at /sys/fs/bpf and mounting it failed ({}); run `mount -t bpf bpf /sys/fs/bpf` as root",
                io::Error::last_os_error()
            )));
        }
        log::info!("mounted bpffs at /sys/fs/bpf");
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| DataplaneError::BpfFs(format!("create {}: {e}", dir.display())))
}

fn is_bpffs(path: &Path) -> bool {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Removes every pin xdplb made under `dir`, and the directory. Maps and the program disappear
/// with their last user.
pub fn remove_pins(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for name in names::ALL {
        let p = dir.join(name);
        match fs::remove_file(&p) {
            Ok(()) => removed.push(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
    Ok(removed)
}
