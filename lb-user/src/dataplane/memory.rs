//! What the data path's maps lock in kernel memory, as the kernel counts it (`memlock` in
//! `bpftool map show` and in a map's fdinfo, Linux 6.4 and later; earlier kernels report key and
//! value bytes only, less than the maps take). The connection tables are nearly all of it, and
//! they are preallocated: `max_flows` and `max_half_open` decide it before any flow exists.

use std::{collections::BTreeMap, fs};

use lb_common::{FlowKeyOf, FlowOf, IPV6_IDLE_FLOWS, V4, V6};

use super::kernel_btf::KernelBtf;

/// The kernel's hash-map structures, as sized in the running kernel's BTF (see `kernel_btf`):
/// what `htab_map_mem_usage` adds up for a preallocated LRU map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtabLayout {
    /// The map itself, `struct bpf_htab` (832 and 896 bytes seen on two Linux 6.18 builds).
    pub map: u64,
    /// Its lock-nesting counters per CPU as the kernel counts them: 8 ints (`map_locked`). Linux
    /// 6.15 dropped the array for resilient spinlocks but its usage still counts it, as the
    /// constant it always was (a 6.18 whose `bpf_htab` has no `map_locked` reports 896 + 2 x 32
    /// bytes on 2 CPUs).
    pub locks_per_cpu: u64,
    /// Per element besides key and value (`struct htab_elem`: list node, LRU node, hash).
    pub elem: u64,
    /// Per bucket (`struct bucket`: a list head and a lock), one per entry rounded up to a power
    /// of two.
    pub bucket: u64,
    /// Read from the kernel's BTF (false: `FALLBACK`, measured on Linux 6.18; another kernel's
    /// may differ, per table and, if its element or bucket differs, per entry).
    pub from_kernel: bool,
}

impl HtabLayout {
    /// Linux 6.18 as built on the machines this was measured on.
    pub const FALLBACK: HtabLayout =
        HtabLayout { map: 896, locks_per_cpu: 32, elem: 48, bucket: 16, from_kernel: false };

    /// This kernel's, read once.
    pub fn here() -> HtabLayout {
        static LAYOUT: std::sync::OnceLock<HtabLayout> = std::sync::OnceLock::new();
        *LAYOUT.get_or_init(|| {
            let read = KernelBtf::running().map_err(|e| format!("/sys/kernel/btf/vmlinux could not be read: {e}"));
            match read.and_then(|btf| {
                HtabLayout::of(&btf).ok_or_else(|| {
                    "the kernel's BTF has no struct bpf_htab (with its buckets) or htab_elem".to_string()
                })
            }) {
                Ok(layout) => layout,
                Err(why) => {
                    log::warn!("{why}: memory figures are estimates from Linux 6.18's hash map layout");
                    HtabLayout::FALLBACK
                }
            }
        })
    }

    /// From a kernel's BTF; `None` if it lacks one of the structures or the buckets' pointer.
    pub fn of(btf: &KernelBtf) -> Option<HtabLayout> {
        let htab = btf.struct_layout("bpf_htab")?;
        let member = |name: &str| htab.members.iter().find(|(n, _)| n == name).map(|(_, ty)| *ty);
        // An array of per-CPU ints, one per nesting level, where the kernel still has it.
        let locks = member("map_locked")
            .and_then(|ty| btf.array_len(ty))
            .map_or(HtabLayout::FALLBACK.locks_per_cpu, |n| 4 * u64::from(n));
        // The bucket through the map's own `buckets` pointer: `struct bucket` is a name other
        // subsystems use too.
        // Without it the figure would not be the kernel's: the caller's estimate, said as such.
        let bucket = member("buckets").and_then(|ty| btf.pointee_size(ty))?;
        Some(HtabLayout {
            map: htab.size,
            locks_per_cpu: locks,
            elem: btf.struct_layout("htab_elem")?.size,
            bucket,
            from_kernel: true,
        })
    }
}

fn round8(n: usize) -> u64 {
    (n as u64).div_ceil(8) * 8
}

/// Bytes an LRU hash map of `entries` `FlowKeyOf<A> -> FlowOf<A>` locks (the kernel's
/// `htab_map_mem_usage` for a preallocated LRU map with the common LRU list: only a per-CPU list,
/// `BPF_F_NO_COMMON_LRU`, which xdplb's maps do not ask for, rounds `entries` to the CPUs).
pub fn flow_table_bytes<A>(layout: &HtabLayout, entries: u32, cpus: u32) -> u64 {
    let cpus = cpus.max(1);
    let elem = layout.elem + round8(size_of::<FlowKeyOf<A>>()) + round8(size_of::<FlowOf<A>>());
    layout.map
        + layout.locks_per_cpu * u64::from(cpus)
        + u64::from(entries) * elem
        + u64::from(entries.next_power_of_two()) * layout.bucket
}

/// The connection tables of a configuration: `flows` holds two entries per flow (one per
/// direction), `syn_flows` two per half-open connection; `flows6` and `syn_flows6` the same
/// for IPv6, sized like IPv4's when the configuration has IPv6 servers, and at
/// `IPV6_IDLE_FLOWS` otherwise (preallocated tables cost their size whether used or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableMemory {
    pub flows: u64,
    pub half_open: u64,
    pub ipv6: u64,
}

/// Flows the IPv6 tables hold (established, half-open) for a configuration.
pub fn ipv6_capacity(max_flows: u32, max_half_open: u32, ipv6: bool) -> (u32, u32) {
    if ipv6 {
        (max_flows, max_half_open)
    } else {
        (IPV6_IDLE_FLOWS, IPV6_IDLE_FLOWS)
    }
}

impl TableMemory {
    pub fn of(layout: &HtabLayout, max_flows: u32, max_half_open: u32, ipv6: bool, cpus: u32) -> TableMemory {
        let (flows6, half_open6) = ipv6_capacity(max_flows, max_half_open, ipv6);
        let table = |entries: u32| flow_table_bytes::<V4>(layout, entries.saturating_mul(2), cpus);
        let table6 = |entries: u32| flow_table_bytes::<V6>(layout, entries.saturating_mul(2), cpus);
        TableMemory {
            flows: table(max_flows),
            half_open: table(max_half_open),
            ipv6: table6(flows6) + table6(half_open6),
        }
    }

    /// The same on this host (its kernel's structures, its possible CPUs).
    pub fn here(max_flows: u32, max_half_open: u32, ipv6: bool) -> TableMemory {
        TableMemory::of(&HtabLayout::here(), max_flows, max_half_open, ipv6, possible_cpus())
    }

    pub fn total(&self) -> u64 {
        self.flows + self.half_open + self.ipv6
    }
}

/// What one IPv4 flow costs on this host, taken over a table of 2^20 flows (both entries, their
/// share of the buckets).
pub fn bytes_per_flow() -> u64 {
    flow_table_bytes::<V4>(&HtabLayout::here(), 2 << 20, possible_cpus()) >> 20
}

/// The same for an IPv6 flow.
pub fn bytes_per_flow6() -> u64 {
    flow_table_bytes::<V6>(&HtabLayout::here(), 2 << 20, possible_cpus()) >> 20
}

/// The CPUs the kernel sizes per-CPU structures for (`/sys/devices/system/cpu/possible`, as
/// `0-3` or `0,2-5`).
pub fn possible_cpus() -> u32 {
    let text = fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let count: u32 = text
        .trim()
        .split(',')
        .filter_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            Some(b.trim().parse::<u32>().ok()?.checked_sub(a.trim().parse::<u32>().ok()?)? + 1)
        })
        .sum();
    count.max(1)
}

/// Whether a configuration has IPv6 servers (the IPv6 tables are then sized like IPv4's).
pub fn wants_ipv6(cfg: &crate::config::Config) -> bool {
    cfg.backends.iter().flat_map(|b| &b.servers).any(|s| s.address.get().is_some_and(|a| a.0.is_ipv6()))
}

/// The same for a resolved topology.
pub fn topology_has_ipv6(t: &crate::model::topology::Topology) -> bool {
    t.servers().any(|(_, s)| s.addr.is_ipv6())
}

/// `memlock` of every BPF map this process holds open, by map id (each map once, however many
/// descriptors lead to it), read from `/proc/self/fdinfo`.
pub fn locked_by_maps() -> BTreeMap<u32, u64> {
    let mut maps = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc/self/fdinfo") else { return maps };
    for entry in dir.flatten() {
        let Ok(text) = fs::read_to_string(entry.path()) else { continue };
        let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        if let (Some(id), Some(bytes)) = (field("map_id:"), field("memlock:")) {
            if let (Ok(id), Ok(bytes)) = (id.parse(), bytes.parse()) {
                maps.insert(id, bytes);
            }
        }
    }
    maps
}

/// `bytes` in MiB for people, one decimal.
pub fn mib(bytes: u64) -> String {
    let tenths = (u128::from(bytes) * 10 + (1 << 19)) >> 20;
    format!("{}.{} MiB", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_costs_two_entries_and_their_buckets() {
        // A kernel build with an 832-byte map header.
        let old = HtabLayout { map: 832, ..HtabLayout::FALLBACK };
        // 12-byte key rounded to 16, the value as it is (a multiple of 8), 48 bytes of node.
        let elem = 48 + 16 + size_of::<FlowOf<V4>>() as u64;
        let t = TableMemory::of(&old, 1 << 20, 16384, false, 2);
        assert_eq!(t.flows, 832 + 64 + (2 << 20) * (elem + 16));
        // Buckets round up to a power of two, entries do not (a common LRU list).
        assert_eq!(flow_table_bytes::<V4>(&old, 3, 2), 832 + 64 + 3 * elem + 4 * 16);
        assert_eq!(flow_table_bytes::<V4>(&old, 5, 1), 832 + 32 + 5 * elem + 8 * 16);
        // An 896-byte one, 3 CPUs: 3 x 32 bytes of lock counters, 2^21 entries stay 2^21.
        assert_eq!(
            flow_table_bytes::<V4>(&HtabLayout::FALLBACK, 2 << 20, 3),
            896 + 96 + (2 << 20) * elem + (2 << 20) * 16
        );
        // IPv6: a 36-byte key rounded to 40, a 128-byte value; idle tables without IPv6 servers.
        let elem6 = 48 + 40 + 128;
        let idle = 2 * (832 + 64 + 512 * elem6 + 512 * 16);
        assert_eq!(t.ipv6, idle);
        assert_eq!(
            TableMemory::of(&old, 1 << 20, 16384, true, 2).ipv6,
            t.flows + t.half_open + (2 << 20) * (elem6 - elem) + (2 << 14) * (elem6 - elem)
        );
        assert_eq!(mib(391_907_072), "373.8 MiB");
        assert_eq!(mib(0), "0.0 MiB");
    }

    /// A kernel's BTF with `struct bpf_htab` (896 bytes) whose member is `member` (a pointer
    /// to the 16-byte `struct bucket` when it is "buckets"), and `struct htab_elem` (48 bytes).
    fn htab_btf(member: &str) -> KernelBtf {
        use crate::dataplane::kernel_btf::{build, kind};
        let strings = format!("\0int\0bucket\0bpf_htab\0htab_elem\0{member}\0");
        let at = |name: &str| u32::try_from(strings.find(&format!("\0{name}\0")).unwrap() + 1).unwrap();
        let member_type = if member == "buckets" { 3 } else { 1 };
        let types = [
            &[at("int"), kind::INT << 24, 4, 32][..],
            &[at("bucket"), kind::STRUCT << 24, 16],
            &[0, kind::PTR << 24, 2],
            &[at("bpf_htab"), (kind::STRUCT << 24) | 1, 896, at(member), member_type, 0],
            &[at("htab_elem"), kind::STRUCT << 24, 48],
        ];
        KernelBtf::parse(build(&types, strings.as_bytes())).unwrap()
    }

    #[test]
    fn a_layout_is_the_kernels_only_when_every_part_is_read() {
        let read = HtabLayout::of(&htab_btf("buckets")).unwrap();
        assert_eq!(read, HtabLayout { map: 896, locks_per_cpu: 32, elem: 48, bucket: 16, from_kernel: true });
        // A bpf_htab whose buckets cannot be followed: not the kernel's (the estimate, said so).
        assert_eq!(HtabLayout::of(&htab_btf("count")), None);
    }

    #[test]
    fn the_layout_comes_from_the_running_kernel() {
        let btf = KernelBtf::running().expect("/sys/kernel/btf/vmlinux");
        let layout = HtabLayout::of(&btf).expect("bpf_htab, htab_elem and bucket in the kernel's BTF");
        assert!(layout.from_kernel);
        assert_eq!((layout.elem, layout.bucket), (48, 16), "{layout:?}");
        assert_eq!(HtabLayout::here(), layout);
    }
}
