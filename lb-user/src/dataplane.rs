//! Loading the XDP program, pinning its maps, and attaching it to interfaces.

use std::{
    ffi::CString,
    fs,
    io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use aya::{
    programs::{links::{FdLink, PinnedLink}, xdp::XdpLink, Xdp, XdpMode},
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
    Ok(ebpf)
}

pub fn program(ebpf: &mut Ebpf) -> &mut Xdp {
    ebpf.program_mut(PROGRAM)
        .expect("the embedded object has the xdplb program")
        .try_into()
        .expect("xdplb is an XDP program")
}

/// How an interface got the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// Attached now, in this mode, and the link pinned.
    New(&'static str),
    /// A previous agent's pinned link: the program on it was replaced atomically.
    Adopted,
}

/// The pin of the XDP link on `iface`: it keeps the program attached while no agent runs.
pub fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link_{iface}"))
}

/// Attaches to every interface. Where a previous agent left a pinned link, the new program
/// replaces the old one on it in one step (`bpf_link_update`): packets never meet a moment
/// without XDP. Otherwise the program is attached (native, or as `mode` says) and the link is
/// pinned, so that the data path outlives this process.
pub fn attach(
    ebpf: &mut Ebpf,
    ifaces: &[Interface],
    mode: XdpModeCfg,
    pin_dir: &Path,
) -> Result<Vec<(String, Attached)>, DataplaneError> {
    let prog = program(ebpf);
    let mut got = Vec::new();
    for iface in ifaces {
        let pin = link_pin(pin_dir, &iface.name);
        if pin.exists() {
            match adopt(prog, &pin) {
                Ok(()) => {
                    log::info!("XDP on {} adopted from {}: program replaced atomically", iface.name, pin.display());
                    got.push((iface.name.clone(), Attached::Adopted));
                    continue;
                }
                Err(e) => {
                    log::warn!("cannot adopt the pinned link {} ({e}); attaching anew", pin.display());
                    let _ = fs::remove_file(&pin);
                }
            }
        }
        let attach = |prog: &mut Xdp, m: XdpMode, name: &'static str, hint: &'static str| {
            prog.attach_to_if_index(iface.ifindex, m).map(|id| (id, name)).map_err(|source| {
                let hint = if taken(&source) { TAKEN } else { hint };
                DataplaneError::Attach { iface: iface.name.clone(), mode: name, hint, source: Box::new(source) }
            })
        };
        let (id, mode_name) = match mode {
            XdpModeCfg::Native => attach(prog, XdpMode::Driver, "native", "; the driver may not support XDP: try --xdp-mode generic")?,
            XdpModeCfg::Generic => attach(prog, XdpMode::Skb, "generic", "")?,
            XdpModeCfg::Auto => match attach(prog, XdpMode::Driver, "native", "") {
                Ok(m) => m,
                // Another program holds the interface: generic mode would not help.
                Err(e @ DataplaneError::Attach { hint: TAKEN, .. }) => return Err(e),
                Err(e) => {
                    log::warn!("{e}; falling back to generic (skb) mode on {}, which is slower", iface.name);
                    attach(prog, XdpMode::Skb, "generic", "")?
                }
            },
        };
        pin_link(prog, id, &pin);
        log::info!("XDP attached to {} (ifindex {}) in {mode_name} mode", iface.name, iface.ifindex);
        got.push((iface.name.clone(), Attached::New(mode_name)));
    }
    Ok(got)
}

const TAKEN: &str = "; another XDP program is attached to this interface (see `bpftool net show`): stop its owner, or run `xdplb detach --pin-dir DIR` if it is another xdplb's";

/// EBUSY / EEXIST from the attach: the interface already has an XDP program.
fn taken(e: &aya::programs::ProgramError) -> bool {
    let d = format!("{e:?}");
    ["os error 16", "os error 17", "File exists", "Device or resource busy"].iter().any(|s| d.contains(s))
}

fn adopt(prog: &mut Xdp, pin: &Path) -> Result<(), String> {
    let pinned = PinnedLink::from_pin(pin).map_err(|e| e.to_string())?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())?;
    prog.attach_to_link(link).map(|_| ()).map_err(|e| e.to_string())
}

/// Pins the link; on kernels without XDP bpf_links (netlink attachment) the data path then
/// lives only as long as the agent, which is said.
fn pin_link(prog: &mut Xdp, id: aya::programs::xdp::XdpLinkId, pin: &Path) {
    let pinned = prog
        .take_link(id)
        .map_err(|e| e.to_string())
        .and_then(|l| FdLink::try_from(l).map_err(|e| e.to_string()))
        .and_then(|fd| fd.pin(pin).map_err(|e| e.to_string()));
    match pinned {
        // Dropping the PinnedLink closes our fd; the pin keeps the program attached.
        Ok(_) => {}
        Err(e) => log::warn!("cannot pin the XDP link at {} ({e}): XDP will detach when the agent stops", pin.display()),
    }
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

/// Removes every pin xdplb made under `dir` (the XDP links first, which detaches the program
/// once no agent holds it, then the maps), and the directory.
pub fn remove_pins(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let links: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("link_")))
            .collect(),
        Err(_) => Vec::new(),
    };
    for p in links.into_iter().chain(names::ALL.iter().map(|n| dir.join(n))) {
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
