//! The one place the agent talks to the kernel without a safe wrapper: map operations aya 0.14
//! does not offer, and the ethtool ioctl. Each `unsafe` block says why it is sound.
#![allow(unsafe_code, reason = "raw bpf(2) calls that aya 0.14 has no wrapper for; each block is justified")]

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::IterableMap;
use lb_common::{FlowKeyOf, FlowOf};
use nix::libc;

use super::flows::{Addr, FlowMap};

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (Linux 5.14+ for hash maps): takes `key`'s value out of the
/// map in one step, so that what was removed is known (aya 0.14 offers it only for queues and
/// stacks). `Ok(None)`: there was no such key.
pub fn lookup_and_delete<A: Addr>(map: &FlowMap<A>, key: &FlowKeyOf<A>) -> std::io::Result<Option<FlowOf<A>>> {
    const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
    let fd = map.map().fd().as_fd().as_raw_fd();
    let mut value = FlowOf::<A>::default();
    // union bpf_attr, the map-element variant: map_fd (u32, padded), key, value, flags.
    let attr: [u64; 4] =
        [u64::from(fd.unsigned_abs()), std::ptr::from_ref(key) as u64, std::ptr::from_mut(&mut value) as u64, 0];
    // SAFETY: `attr` is a valid bpf_attr prefix for this command (the kernel zero-checks the
    // rest of the size given); the kernel reads a key of the map's key size from `key` and
    // writes a value of the map's value size into `value`, and this map was created with
    // exactly these types (FlowKeyOf<A>, FlowOf<A>), which aya checked when it opened it.
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
pub type Batch<A> = (Vec<(FlowKeyOf<A>, FlowOf<A>)>, Option<u32>);

/// One batch of a map's entries (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+), from where `cursor` says
/// (`None`: the beginning) and at most `max` of them: the entries read, and where the next batch
/// starts (`None`: the map has been read to its end). One system call reads thousands of
/// entries, where aya's iterator makes two per entry.
pub fn lookup_batch<A: Addr>(map: &FlowMap<A>, cursor: Option<u32>, max: u32) -> std::io::Result<Batch<A>> {
    let fd = map.map().fd().as_fd().as_raw_fd();
    // SAFETY: this map was created with exactly these types (FlowKeyOf<A>, FlowOf<A>), which aya checked
    // when it opened it; a hash map's batch token is a u32 bucket index.
    let (keys, values, next) = unsafe { batch::<FlowKeyOf<A>, FlowOf<A>>(fd, cursor, max)? };
    Ok((keys.into_iter().zip(values).collect(), next))
}

/// Every value of a `u32` array map in one system call (`BPF_MAP_LOOKUP_BATCH` on an array), in
/// index order, where aya's iterator makes one per entry.
pub fn array_u32_all(map: &aya::maps::Array<aya::maps::MapData, u32>) -> std::io::Result<Vec<u32>> {
    let fd = map.map().fd().as_fd().as_raw_fd();
    // SAFETY: an array's keys are u32 indexes, this one's values u32 (aya checked the value size
    // when it opened it), and its batch token a u32 index.
    let (_, values, _) = unsafe { batch::<u32, u32>(fd, None, map.len())? };
    Ok(values)
}

/// `BPF_MAP_LOOKUP_BATCH` on the map behind `fd`, from `cursor`, for at most `max` entries (asking
/// for more when one bucket holds more): its keys, its values, and the next batch's cursor
/// (`None`: the end).
///
/// # Safety
/// `K` and `V` must be the map's key and value types (their sizes are what the kernel writes),
/// and its batch token a u32.
unsafe fn batch<K: Default + Clone, V: Default + Clone>(
    fd: std::os::fd::RawFd,
    cursor: Option<u32>,
    max: u32,
) -> std::io::Result<(Vec<K>, Vec<V>, Option<u32>)> {
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    let mut max = max.max(1);
    loop {
        let len = usize::try_from(max).unwrap_or(usize::MAX);
        let mut keys = vec![K::default(); len];
        let mut values = vec![V::default(); len];
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
        // the size given). The kernel reads a u32 token from `in_batch`, writes one to
        // `out_batch`, and writes at most `count` keys and values of the map's key and value
        // sizes into `keys` and `values`, which hold `count` of each (`K` and `V` are the map's
        // types, as the caller promised). All of them outlive the call.
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
        return Ok((keys, values, next));
    }
}

/// Runs the calling thread as `SCHED_BATCH`: its fair share of the CPU, but it never preempts
/// another task when it wakes. For background work (the sweep, the flow log) on cores that
/// also carry the traffic's user-space ends.
pub fn batch_scheduling() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &raw const param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Calls bpf(2) with `attr` (a bpf_attr prefix the kernel zero-checks the rest of); the
/// return value, or the error.
///
/// # Safety
/// `attr` must be the variant of bpf_attr that `cmd` reads, and every pointer in it must be
/// valid for what the kernel reads or writes there.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: as the caller promised.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens a pinned BPF object (here: a link) at `path` (`BPF_OBJ_GET`).
pub fn obj_get(path: &std::path::Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd, unix::ffi::OsStrExt};
    const BPF_OBJ_GET: libc::c_long = 7;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // The obj variant: pathname (pointer), bpf_fd, file_flags.
    let mut attr: [u64; 2] = [c.as_ptr() as u64, 0];
    // SAFETY: the kernel reads a NUL-terminated path from `c`, which outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut attr)? };
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Makes `link` run `prog` instead of its program, in one step (`BPF_LINK_UPDATE`).
pub fn link_update(link: std::os::fd::BorrowedFd<'_>, prog: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    const BPF_LINK_UPDATE: libc::c_long = 29;
    // The link_update variant: link_fd, new_prog_fd, flags, old_prog_fd.
    let mut attr: [u32; 4] = [link.as_raw_fd().unsigned_abs(), prog.as_raw_fd().unsigned_abs(), 0, 0];
    // SAFETY: no pointers; the descriptors are borrowed for the call.
    unsafe { bpf(BPF_LINK_UPDATE, &mut attr)? };
    Ok(())
}

/// `struct bpf_link_info`'s start (`BPF_OBJ_GET_INFO_BY_FD`): type and id (u32 each), prog_id
/// (u32, padded), then the variant of the link's type (its first u64). The kernel fills what
/// fits in the length given.
fn link_info(link: std::os::fd::BorrowedFd<'_>) -> std::io::Result<[u64; 4]> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let mut info = [0u64; 4];
    let mut attr: [u64; 2] = [
        u64::from(link.as_raw_fd().unsigned_abs()) | ((std::mem::size_of_val(&info) as u64) << 32),
        info.as_mut_ptr() as u64,
    ];
    // SAFETY: the info_by_fd variant: bpf_fd, info_len (u32 each), info (pointer); the kernel
    // writes at most info_len bytes into `info`, which holds that many and outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)? };
    Ok(info)
}

/// The id of the cgroup a cgroup link is attached to, or `None` when `link` is not a cgroup
/// link (its variant: cgroup_id, attach_type).
pub fn link_cgroup_id(link: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Option<u64>> {
    const BPF_LINK_TYPE_CGROUP: u64 = 3;
    let info = link_info(link)?;
    Ok(((info[0] & u64::from(u32::MAX)) == BPF_LINK_TYPE_CGROUP).then_some(info[2]))
}

/// The interface an XDP link runs on (its variant: ifindex), `Some(0)` once it was detached
/// (`bpftool link detach`, or its interface is gone), `None` when `link` is not an XDP link.
pub fn link_xdp_ifindex(link: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Option<u32>> {
    const BPF_LINK_TYPE_XDP: u64 = 6;
    let info = link_info(link)?;
    // The variant's first u32, the low half of a little-endian u64.
    Ok(((info[0] & u64::from(u32::MAX)) == BPF_LINK_TYPE_XDP)
        .then(|| u32::try_from(info[2] & u64::from(u32::MAX)).unwrap_or_default()))
}

/// This process's network namespace cookie (`SO_NETNS_COOKIE`, Linux 5.14+): what the connect
/// hook compares a socket's namespace with.
pub fn netns_cookie() -> std::io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    // Unbound: it only names the namespace it was made in.
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    let mut cookie = 0u64;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<u64>()).map_err(std::io::Error::other)?;
    // SAFETY: a valid socket, and a u64 with its size given for the kernel to write into.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The ethtool commands the agent uses (`ethtool_value` variants, `linux/ethtool.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ethtool {
    /// Generic receive offload (`ETHTOOL_GGRO` / `ETHTOOL_SGRO`): 0 or 1.
    Gro,
    /// The feature flags (`ETHTOOL_GFLAGS` / `ETHTOOL_SFLAGS`), of which LRO is `ETH_FLAG_LRO`.
    Flags,
}

/// `ETH_FLAG_LRO` in `Ethtool::Flags`.
pub const ETH_FLAG_LRO: u32 = 1 << 15;

/// Reads one of `iface`'s ethtool values (`SIOCETHTOOL`), or writes `set` first and reads it
/// back: the receive offloads generic mode must not meet (neither aya nor nix wraps them).
pub fn ethtool(iface: &str, what: Ethtool, set: Option<u32>) -> std::io::Result<u32> {
    // struct ifreq: the name, then a union whose `ifr_data` points at the command's struct.
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut [u32; 2],
        _rest: [u8; 16],
    }
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let (get, put) = match what {
        Ethtool::Gro => (0x2b_u32, 0x2c_u32),
        Ethtool::Flags => (0x25, 0x26),
    };
    let bytes = iface.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad interface name {iface:?}")));
    }
    let mut name = [0u8; libc::IFNAMSIZ];
    name.iter_mut().zip(bytes).for_each(|(d, s)| *d = *s);
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    let call = |cmd: u32, data: u32| -> std::io::Result<u32> {
        // struct ethtool_value: cmd, data.
        let mut value = [cmd, data];
        let mut req = IfReq { name, data: &raw mut value, _rest: [0; 16] };
        // SAFETY: a valid socket and an ifreq naming the interface, whose data pointer leads to
        // an ethtool_value that outlives the call; the kernel reads and writes only that.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut req) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(value[1])
    };
    if let Some(v) = set {
        call(put, v)?;
    }
    call(get, 0)
}

/// The bytes of a map type as the kernel stores them (the sync protocol sends entries as they
/// are; `lb_common` asserts their layouts, without implicit padding).
pub fn pod_bytes<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` is plain old data without padding; the slice covers exactly `*v`.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
}

/// A map type read from the front of `b`, if it holds one.
pub fn pod_read<T: aya::Pod>(b: &[u8]) -> Option<T> {
    if b.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: bounds checked above; any bit pattern is a valid `T: Pod`; the read is unaligned.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}
