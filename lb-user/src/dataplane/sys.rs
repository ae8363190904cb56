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

/// Entries read, and where the next read starts (`None`: the end).
pub type Batch = (Vec<(FlowKey, Flow)>, Option<u32>);

/// One batch of a map's entries (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+), from where `cursor` says
/// (`None`: the beginning) and at most `max` of them: the entries read, and where the next batch
/// starts (`None`: the map has been read to its end). One system call reads thousands of
/// entries, where aya's iterator makes two per entry.
pub fn lookup_batch(map: &FlowMap, cursor: Option<u32>, max: u32) -> std::io::Result<Batch> {
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    let fd = map.map().fd().as_fd().as_raw_fd();
    let mut max = max.max(1);
    loop {
        let len = usize::try_from(max).unwrap_or(usize::MAX);
        let mut keys = vec![FlowKey::default(); len];
        let mut values = vec![Flow::default(); len];
        let in_batch = cursor.unwrap_or_default();
        let mut out_batch = 0u32;
        // union bpf_attr, the batch variant: in_batch, out_batch, keys, values (pointers), then
        // count and map_fd (u32 each), elem_flags, flags.
        let mut attr: [u64; 7] = [
            if cursor.is_some() { std::ptr::from_ref(&in_batch) as u64 } else { 0 },
            std::ptr::from_mut(&mut out_batch) as u64,
            keys.as_mut_ptr() as u64,
            values.as_mut_ptr() as u64,
            u64::from(max) | (u64::from(fd.unsigned_abs()) << 32),
            0,
            0,
        ];
        // SAFETY: `attr` is the batch variant of bpf_attr (the kernel zero-checks the rest of
        // the size given). The kernel reads a u32 bucket index from `in_batch` (a hash map's
        // batch token), writes one to `out_batch`, and writes at most `count` keys and values of
        // the map's key and value sizes into `keys` and `values`, which hold `count` of each;
        // this map was created with exactly these types (FlowKey, Flow), which aya checked when
        // it opened it. All of them outlive the call.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, attr.as_mut_ptr(), std::mem::size_of_val(&attr))
        };
        let err = (rc != 0).then(std::io::Error::last_os_error);
        match err.as_ref().and_then(std::io::Error::raw_os_error) {
            // A bucket holds more entries than asked for: ask for more.
            Some(libc::ENOSPC) if max < 1 << 20 => {
                max = max.saturating_mul(2);
                continue;
            }
            None | Some(libc::ENOENT) => {}
            Some(_) => return Err(err.unwrap_or_else(std::io::Error::last_os_error)),
        }
        // The kernel wrote how many it filled over the count it was given.
        let filled = usize::try_from(attr[4] & u64::from(u32::MAX)).unwrap_or(0).min(len);
        keys.truncate(filled);
        values.truncate(filled);
        let next = if err.is_some() { None } else { Some(out_batch) };
        return Ok((keys.into_iter().zip(values).collect(), next));
    }
}

/// A record of the `flow_events` ring buffer as the `FlowEvent` the data path wrote (`None` if
/// it is shorter: not one of ours).
pub fn flow_event(bytes: &[u8]) -> Option<lb_common::FlowEvent> {
    if bytes.len() < size_of::<lb_common::FlowEvent>() {
        return None;
    }
    // SAFETY: the length was checked; FlowEvent is `#[repr(C)]` plain integers and byte arrays
    // (aya::Pod), so any bytes are a valid value; the read does not assume alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<lb_common::FlowEvent>()) })
}
