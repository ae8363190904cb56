//! Attaching the XDP program to interfaces, or adopting a previous agent's pinned links.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use aya::{
    pin::PinError,
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        xdp::{XdpError, XdpLink},
        ProgramError, Xdp, XdpMode,
    },
    sys::SyscallError,
    Ebpf,
};
use nix::errno::Errno;

use super::load::{program, DataplaneError};
use crate::{config::XdpModeCfg, host::netif::Interface};

/// How an interface got the program: attached now in native (driver) or generic (skb) mode, or
/// a previous agent's pinned link whose program was replaced atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attached {
    Native,
    Generic,
    Adopted,
}

impl fmt::Display for Attached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Attached::Native => "native",
            Attached::Generic => "generic",
            Attached::Adopted => "adopted",
        })
    }
}

/// What an attach failure most likely means, said after the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachHint {
    None,
    /// Native mode refused: the driver may have no XDP.
    NoNativeXdp,
    /// EBUSY or EEXIST: another XDP program holds the interface.
    Taken,
}

impl fmt::Display for AttachHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachHint::None => "",
            AttachHint::NoNativeXdp => "; the driver may not support XDP: try --xdp-mode generic",
            AttachHint::Taken => "; another XDP program is attached to this interface (see `bpftool net show`): stop its owner, or run `xdplb detach --pin-dir DIR` if it is another xdplb's",
        })
    }
}

/// Adopting or pinning an XDP link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkPinError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error(transparent)]
    Pin(#[from] PinError),
}

/// The pin of the XDP link on `iface`: it keeps the program attached while no agent runs.
pub fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link_{iface}"))
}

/// Whether the XDP link pinned for `iface` still runs on an interface: `false` once someone
/// detached it (`bpftool link detach`) or its interface went away, and the data path no longer
/// sees that interface's packets. An error: no such pin.
pub fn still_attached(pin_dir: &Path, iface: &str) -> std::io::Result<bool> {
    use std::os::fd::AsFd as _;
    let link = super::sys::obj_get(&link_pin(pin_dir, iface))?;
    Ok(super::sys::link_xdp_ifindex(link.as_fd())?.is_some_and(|ifindex| ifindex != 0))
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
        let attach = |prog: &mut Xdp, mode: Attached, hint: AttachHint| {
            let flags = if mode == Attached::Native { XdpMode::Driver } else { XdpMode::Skb };
            prog.attach_to_if_index(iface.ifindex, flags).map(|id| (id, mode)).map_err(|source| {
                let hint = if taken(&source) { AttachHint::Taken } else { hint };
                DataplaneError::Attach { iface: iface.name.clone(), mode, hint, source: Box::new(source) }
            })
        };
        let (id, mode) = match mode {
            XdpModeCfg::Native => attach(prog, Attached::Native, AttachHint::NoNativeXdp)?,
            XdpModeCfg::Generic => attach(prog, Attached::Generic, AttachHint::None)?,
            XdpModeCfg::Auto => match attach(prog, Attached::Native, AttachHint::None) {
                Ok(m) => m,
                // Another program holds the interface: generic mode would not help.
                Err(e @ DataplaneError::Attach { hint: AttachHint::Taken, .. }) => return Err(e),
                Err(e) => {
                    log::warn!("{e}; falling back to generic (skb) mode on {}, which is slower", iface.name);
                    attach(prog, Attached::Generic, AttachHint::None)?
                }
            },
        };
        pin_link(prog, id, &pin);
        log::info!("XDP attached to {} (ifindex {}) in {mode} mode", iface.name, iface.ifindex);
        got.push((iface.name.clone(), mode));
    }
    Ok(got)
}

/// EBUSY / EEXIST from the attach (a bpf_link, or netlink on older kernels): the interface
/// already has an XDP program.
fn taken(e: &ProgramError) -> bool {
    let errno = match e {
        ProgramError::SyscallError(SyscallError { io_error, .. }) => io_error.raw_os_error(),
        ProgramError::XdpError(XdpError::NetlinkError(e)) => e.raw_os_error(),
        _ => None,
    };
    matches!(errno.map(Errno::from_raw), Some(Errno::EBUSY | Errno::EEXIST))
}

fn adopt(prog: &mut Xdp, pin: &Path) -> Result<(), LinkPinError> {
    let pinned = PinnedLink::from_pin(pin)?;
    let link = XdpLink::try_from(FdLink::from(pinned))?;
    prog.attach_to_link(link)?;
    Ok(())
}

/// Pins the link; on kernels without XDP bpf_links (netlink attachment) the data path then
/// lives only as long as the agent, which is said.
fn pin_link(prog: &mut Xdp, id: aya::programs::xdp::XdpLinkId, pin: &Path) {
    let pinned = || -> Result<_, LinkPinError> { Ok(FdLink::try_from(prog.take_link(id)?)?.pin(pin)?) };
    match pinned() {
        // Dropping the PinnedLink closes our fd; the pin keeps the program attached.
        Ok(_) => {}
        Err(e) => {
            log::warn!("cannot pin the XDP link at {} ({e}): XDP will detach when the agent stops", pin.display());
        }
    }
}
