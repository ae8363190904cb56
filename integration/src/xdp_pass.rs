//! A two-instruction XDP program that passes everything, for the far end of a veth the balancer
//! attaches to. veth delivers XDP_TX/XDP_REDIRECT frames only to a peer that runs NAPI, and on
//! recent kernels (seen on 6.18) turning GRO on at the peer is not enough: it needs an XDP
//! program of its own. A physical NIC needs none of this.

use std::{
    ffi::CString,
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{bail, Result};

use crate::netns::{unique, NetNs};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i32> {
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as i32)
    }
}

/// Loads the program; returns its fd (also the floor for per-packet cost measurements).
pub fn load() -> Result<OwnedFd> {
    // r0 = XDP_PASS (2); exit
    let insns: [u8; 16] = [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let license = CString::new("GPL").unwrap();
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // prog_flags: BPF_F_XDP_HAS_FRAGS, so that a veth end with it takes jumbo MTUs.
    attr[44..48].copy_from_slice(&BPF_F_XDP_HAS_FRAGS.to_ne_bytes());
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches the pass program to `iface` in `ns` in driver mode. The attachment lives as long
/// as the interface: nothing to clean up but the namespace.
pub fn attach(ns: &NetNs, iface: &str) -> Result<()> {
    let prog = load()?;
    let path = format!("/sys/fs/bpf/{}", unique("xdplb-pass-"));
    let cpath = CString::new(path.clone()).unwrap();
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(cpath.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    let pinned = bpf(BPF_OBJ_PIN, &mut attr);
    drop(prog);
    if let Err(e) = pinned {
        bail!("pinning the pass program at {path}: {e}");
    }
    // nsenter, not `ip -n`: `ip -n` mounts a fresh /sys, without the pin.
    let r = crate::netns::sh(ns.command("ip").args(["link", "set", "dev", iface, "xdpdrv", "pinned", &path]));
    let _ = fs::remove_file(&path);
    r.map(|_| ())
}
