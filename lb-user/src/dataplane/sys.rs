//! The one place the agent talks to the kernel without a safe wrapper: map operations aya 0.14
//! does not offer. Each `unsafe` block says why it is sound.
#![allow(unsafe_code, reason = "raw bpf(2) calls that aya 0.14 has no wrapper for; each block is justified")]

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::IterableMap;
use lb_common::{Flow, FlowKey};
use nix::libc;

use super::flows::FlowMap;

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (Linux 5.14+ for hash maps): takes `key`'s value out of the
/// map in one step, so that what was removed is known (aya 0.14 offers it only for queues and
/// stacks). `Ok(None)`: there was no such key.
pub fn lookup_and_delete(map: &FlowMap, key: &FlowKey) -> std::io::Result<Option<Flow>> {
    const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
    let fd = map.map().fd().as_fd().as_raw_fd();
    let mut value = Flow::default();
    // union bpf_attr, the map-element variant: map_fd (u32, padded), key, value, flags.
    let attr: [u64; 4] =
        [u64::from(fd.unsigned_abs()), std::ptr::from_ref(key) as u64, std::ptr::from_mut(&mut value) as u64, 0];
    // SAFETY: `attr` is a valid bpf_attr prefix for this command (the kernel zero-checks the
    // rest of the size given); the kernel reads a key of the map's key size from `key` and
    // writes a value of the map's value size into `value`, and this map was created with
    // exactly these types (FlowKey, Flow), which aya checked when it opened it.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_AND_DELETE_ELEM, attr.as_ptr(), std::mem::size_of_val(&attr))
    };
    if rc == 0 {
        return Ok(Some(value));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(e)
    }
}
