//! What the data path's maps lock in kernel memory, as the kernel counts it (`memlock` in
//! `bpftool map show` and in a map's fdinfo). The connection tables are nearly all of it, and
//! they are preallocated: `max_flows` and `max_half_open` decide it before any flow exists.

use std::{collections::BTreeMap, fs};

use lb_common::{FlowKeyOf, FlowOf, IPV6_IDLE_FLOWS, V4, V6};

/// What the kernel spends per hash-map element besides key and value (`struct htab_elem` on
/// 64-bit Linux: list node, LRU node, hash).
const HTAB_ELEM: u64 = 48;
/// Per bucket (`struct bucket`: a list head and a spinlock), one per entry rounded up to a power
/// of two.
const HTAB_BUCKET: u64 = 16;
/// The map itself (`struct bpf_htab`: 832 bytes on one Linux 6.18 build, 896 on another).
const HTAB_MAP: u64 = 832;
/// Its lock-nesting counters: 8 per CPU, 4 bytes each.
const HTAB_LOCKS_PER_CPU: u64 = 32;

fn round8(n: usize) -> u64 {
    (n as u64).div_ceil(8) * 8
}

/// Bytes an LRU hash map of `entries` `FlowKeyOf<A> -> FlowOf<A>` locks (the kernel's
/// `htab_map_mem_usage` for a preallocated LRU map; LRU maps round `entries` up to a multiple of
/// the CPUs).
pub fn flow_table_bytes<A>(entries: u32, cpus: u32) -> u64 {
    let cpus = cpus.max(1);
    let entries = entries.div_ceil(cpus) * cpus;
    let elem = HTAB_ELEM + round8(size_of::<FlowKeyOf<A>>()) + round8(size_of::<FlowOf<A>>());
    HTAB_MAP
        + HTAB_LOCKS_PER_CPU * u64::from(cpus)
        + u64::from(entries) * elem
        + u64::from(entries.next_power_of_two()) * HTAB_BUCKET
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
    pub fn of(max_flows: u32, max_half_open: u32, ipv6: bool, cpus: u32) -> TableMemory {
        let (flows6, half_open6) = ipv6_capacity(max_flows, max_half_open, ipv6);
        TableMemory {
            flows: flow_table_bytes::<V4>(max_flows.saturating_mul(2), cpus),
            half_open: flow_table_bytes::<V4>(max_half_open.saturating_mul(2), cpus),
            ipv6: flow_table_bytes::<V6>(flows6.saturating_mul(2), cpus)
                + flow_table_bytes::<V6>(half_open6.saturating_mul(2), cpus),
        }
    }

    /// The same on this host (its possible CPUs).
    pub fn here(max_flows: u32, max_half_open: u32, ipv6: bool) -> TableMemory {
        TableMemory::of(max_flows, max_half_open, ipv6, possible_cpus())
    }

    pub fn total(&self) -> u64 {
        self.flows + self.half_open + self.ipv6
    }
}

/// What one IPv4 flow costs on this host, taken over a table of 2^20 flows (both entries, their
/// share of the buckets).
pub fn bytes_per_flow() -> u64 {
    flow_table_bytes::<V4>(2 << 20, possible_cpus()) >> 20
}

/// The same for an IPv6 flow.
pub fn bytes_per_flow6() -> u64 {
    flow_table_bytes::<V6>(2 << 20, possible_cpus()) >> 20
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
        // 12-byte key rounded to 16, the value as it is (a multiple of 8), 48 bytes of node.
        let elem = 48 + 16 + size_of::<FlowOf<V4>>() as u64;
        let t = TableMemory::of(1 << 20, 16384, false, 2);
        assert_eq!(t.flows, 832 + 64 + (2 << 20) * (elem + 16));
        // LRU maps round up to a multiple of the CPUs; buckets to a power of two.
        assert_eq!(flow_table_bytes::<V4>(3, 2), 832 + 64 + 4 * elem + 4 * 16);
        assert_eq!(flow_table_bytes::<V4>(5, 1), 832 + 32 + 5 * elem + 8 * 16);
        // IPv6: a 36-byte key rounded to 40, a 128-byte value; idle tables without IPv6 servers.
        let elem6 = 48 + 40 + 128;
        let idle = 2 * (832 + 64 + 512 * elem6 + 512 * 16);
        assert_eq!(t.ipv6, idle);
        assert_eq!(
            TableMemory::of(1 << 20, 16384, true, 2).ipv6,
            t.flows + t.half_open + (2 << 20) * (elem6 - elem) + (2 << 14) * (elem6 - elem)
        );
        assert_eq!(mib(391_907_072), "373.8 MiB");
        assert_eq!(mib(0), "0.0 MiB");
    }
}
