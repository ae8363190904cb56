//! Attaching the XDP program to interfaces, or adopting a previous agent's pinned links.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        Xdp, XdpMode,
    },
    Ebpf,
};

use super::load::{program, DataplaneError};
use crate::{config::XdpModeCfg, host::netif::Interface};

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
            XdpModeCfg::Native => {
                attach(prog, XdpMode::Driver, "native", "; the driver may not support XDP: try --xdp-mode generic")?
            }
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
        Err(e) => {
            log::warn!("cannot pin the XDP link at {} ({e}): XDP will detach when the agent stops", pin.display())
        }
    }
}
