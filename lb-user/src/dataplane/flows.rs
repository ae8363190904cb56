//! The connection table, seen from the agent: listing flows, and sweeping out the ones that are
//! over (the XDP program records, the agent expires). Two entries make one flow; the sweep
//! always removes both.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    time::Duration,
};

use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData, MapError},
    Ebpf,
};
use lb_common::{
    names, Flow, FlowKey, FLOW_DIR_CLIENT, FLOW_DIR_SERVER, FLOW_SEEN_ESTABLISHED, FLOW_SEEN_PEER_FIN, TCP_FIN,
};
use serde::Serialize;

use super::maps::{take, MapsError};

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Duration,
    pub syn: Duration,
    pub linger: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// SYN forwarded, handshake not complete.
    SynSent,
    Established,
    /// One side sent FIN.
    Closing,
    /// RST seen, or FIN both ways: lingering.
    Closed,
}

impl FlowState {
    pub fn of(client: &Flow) -> FlowState {
        if client.is_closed() {
            FlowState::Closed
        } else if client.seen & (TCP_FIN | FLOW_SEEN_PEER_FIN) != 0 {
            FlowState::Closing
        } else if client.seen & FLOW_SEEN_ESTABLISHED != 0 {
            FlowState::Established
        } else {
            FlowState::SynSent
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FlowState::SynSent => "SYN_SENT",
            FlowState::Established => "ESTABLISHED",
            FlowState::Closing => "CLOSING",
            FlowState::Closed => "CLOSED",
        }
    }
}

/// Whether a flow in `state`, created at `created` and last seen at `last` (ns), is over at `now`.
pub fn expired(state: FlowState, created: u64, last: u64, now: u64, t: &Timeouts) -> bool {
    let idle = Duration::from_nanos(now.saturating_sub(last));
    match state {
        FlowState::SynSent => Duration::from_nanos(now.saturating_sub(created)) > t.syn,
        FlowState::Established | FlowState::Closing => idle > t.idle,
        FlowState::Closed => idle > t.linger,
    }
}

/// One flow, both directions joined.
#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    pub client: SocketAddrV4,
    pub frontend: SocketAddrV4,
    /// The balancer's NAT source towards the server.
    pub source: SocketAddrV4,
    pub server: SocketAddrV4,
    pub server_id: u32,
    pub frontend_id: u32,
    pub state: FlowState,
    pub age_ms: u64,
    pub idle_ms: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

fn sock(addr: [u8; 4], port_be: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr), u16::from_be(port_be))
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; a zero would only make every flow look fresh.
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default();
    u64::try_from(ts.as_nanos()).unwrap_or(u64::MAX)
}

/// Both tables: established flows and half-open ones (see the XDP side's `conntrack`).
pub struct FlowTable {
    map: BpfHashMap<MapData, FlowKey, Flow>,
    syn: BpfHashMap<MapData, FlowKey, Flow>,
}

/// What a sweep saw: flows in the table, flows removed, and per server and frontend the open
/// flows and the SYNs that were never answered (passive layer-4 observation).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    pub flows: usize,
    pub removed: usize,
    pub active_by_server: HashMap<u32, u64>,
    pub active_by_frontend: HashMap<u32, u64>,
    pub unanswered_by_server: HashMap<u32, u64>,
}

impl FlowTable {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        Ok(Self { map: take(ebpf, names::FLOWS)?, syn: take(ebpf, names::SYN_FLOWS)? })
    }

    /// Opens the table pinned by a running agent (for `xdplb flows` and tests).
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, MapError> {
        let open = |name: &str| -> Result<BpfHashMap<MapData, FlowKey, Flow>, MapError> {
            BpfHashMap::try_from(Map::from_map_data(MapData::from_pin(pin_dir.join(name))?)?)
        };
        Ok(Self { map: open(names::FLOWS)?, syn: open(names::SYN_FLOWS)? })
    }

    /// Every entry (both directions, established and half-open), as the kernel has them now.
    pub fn entries(&self) -> Vec<(FlowKey, Flow)> {
        self.map.iter().chain(self.syn.iter()).filter_map(Result::ok).collect()
    }

    fn get(&self, key: &FlowKey) -> Option<Flow> {
        self.map.get(key, 0).ok().or_else(|| self.syn.get(key, 0).ok())
    }

    /// Removes `key`'s entry if it still belongs to the flow created at `created_ns`. The XDP
    /// program may have replaced it meanwhile (a new SYN on the same tuple after a close), and
    /// that new flow must not go with the old one. Already gone is fine.
    fn remove_if(&mut self, key: &FlowKey, created_ns: u64) {
        if self.map.get(key, 0).is_ok_and(|f| f.created_ns == created_ns) {
            let _ = self.map.remove(key);
        }
        if self.syn.get(key, 0).is_ok_and(|f| f.created_ns == created_ns) {
            let _ = self.syn.remove(key);
        }
    }

    /// Flows, each with both directions joined (an entry without its peer is skipped).
    pub fn flows(&self) -> Vec<FlowView> {
        let now = monotonic_ns();
        self.entries()
            .into_iter()
            .filter(|(_, f)| f.direction == FLOW_DIR_CLIENT)
            .filter_map(|(k, c)| {
                let s = self.get(&c.peer_key())?;
                let last = c.last_seen_ns.max(s.last_seen_ns);
                Some(FlowView {
                    client: sock(k.src_addr, k.src_port_be),
                    frontend: sock(k.dst_addr, k.dst_port_be),
                    source: sock(c.new_src_addr, c.new_src_port_be),
                    server: sock(c.new_dst_addr, c.new_dst_port_be),
                    server_id: c.server_id,
                    frontend_id: c.frontend_id,
                    state: FlowState::of(&c),
                    age_ms: now.saturating_sub(c.created_ns) / 1_000_000,
                    idle_ms: now.saturating_sub(last) / 1_000_000,
                    packets_in: c.packets,
                    bytes_in: c.bytes,
                    packets_out: s.packets,
                    bytes_out: s.bytes,
                })
            })
            .collect()
    }

    /// Removes flows that are over; returns how many flows there were and how many went.
    pub fn sweep(&mut self, now: u64, t: &Timeouts) -> Sweep {
        let mut result = Sweep::default();
        let mut doomed = Vec::new();
        // Streamed, not collected: the agent's memory does not follow the table's size.
        for (key, flow) in self.map.iter().chain(self.syn.iter()).filter_map(Result::ok) {
            let peer = self.get(&flow.peer_key());
            if flow.direction == FLOW_DIR_SERVER {
                // The client entry decides for both; an orphan (its client entry evicted or not
                // yet written by a SYN in flight) goes once it is clearly not in flight.
                if peer.is_none() && now.saturating_sub(flow.created_ns) > 1_000_000_000 {
                    doomed.push((key, flow.created_ns));
                }
                continue;
            }
            result.flows += 1;
            let Some(peer) = peer else {
                doomed.push((key, flow.created_ns));
                result.removed += 1;
                continue;
            };
            let last = flow.last_seen_ns.max(peer.last_seen_ns);
            let state = FlowState::of(&flow);
            if expired(state, flow.created_ns, last, now, t) {
                // Both entries of a flow are made with the same creation time.
                doomed.push((flow.peer_key(), flow.created_ns));
                doomed.push((key, flow.created_ns));
                result.removed += 1;
                // A handshake that timed out: the server never answered the SYN.
                if state == FlowState::SynSent && peer.packets == 0 {
                    *result.unanswered_by_server.entry(flow.server_id).or_default() += 1;
                }
            } else if state != FlowState::Closed {
                *result.active_by_server.entry(flow.server_id).or_default() += 1;
                *result.active_by_frontend.entry(flow.frontend_id).or_default() += 1;
            }
        }
        for (k, created) in doomed {
            self.remove_if(&k, created);
        }
        result
    }
}

impl FlowTable {
    /// Removes every flow to `server_id` (HAProxy's `on-marked-down shutdown-sessions`). Their
    /// next packet, either way, reaches the kernel, which has no socket for it and answers RST,
    /// so both ends fail fast. Returns how many open (not already closed) flows went.
    pub fn remove_server_flows(&mut self, server_id: u32) -> usize {
        let mut n = 0;
        for (key, flow) in self.entries() {
            if flow.server_id == server_id && flow.direction == FLOW_DIR_CLIENT {
                self.remove_if(&flow.peer_key(), flow.created_ns);
                self.remove_if(&key, flow.created_ns);
                n += usize::from(!flow.is_closed());
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{FLOW_SEEN_PEER_RST, TCP_RST};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn t() -> Timeouts {
        Timeouts { idle: Duration::from_secs(100), syn: Duration::from_secs(5), linger: Duration::from_secs(2) }
    }

    fn flow(seen: u32) -> Flow {
        Flow { seen, ..Flow::default() }
    }

    #[test]
    fn states_follow_the_flags_both_ways() {
        assert_eq!(FlowState::of(&flow(0x02)), FlowState::SynSent);
        assert_eq!(FlowState::of(&flow(0x12 | FLOW_SEEN_ESTABLISHED)), FlowState::Established);
        assert_eq!(FlowState::of(&flow(0x11 | FLOW_SEEN_ESTABLISHED)), FlowState::Closing);
        assert_eq!(FlowState::of(&flow(FLOW_SEEN_PEER_FIN | FLOW_SEEN_ESTABLISHED)), FlowState::Closing);
        assert_eq!(FlowState::of(&flow(TCP_FIN | FLOW_SEEN_PEER_FIN)), FlowState::Closed);
        assert_eq!(FlowState::of(&flow(TCP_RST)), FlowState::Closed);
        assert_eq!(FlowState::of(&flow(FLOW_SEEN_PEER_RST)), FlowState::Closed);
    }

    #[test]
    fn each_state_has_its_timeout() {
        let t = t();
        // Half-open: by age since creation, even if packets keep coming (SYN retransmits).
        assert!(!expired(FlowState::SynSent, 0, 4 * S, 4 * S, &t));
        assert!(expired(FlowState::SynSent, 0, 6 * S, 6 * S, &t));
        // Established: by idle time.
        assert!(!expired(FlowState::Established, 0, 50 * S, 149 * S, &t));
        assert!(expired(FlowState::Established, 0, 50 * S, 151 * S, &t));
        // Closed: a short linger.
        assert!(!expired(FlowState::Closed, 0, 10 * S, 11 * S, &t));
        assert!(expired(FlowState::Closed, 0, 10 * S, 13 * S, &t));
    }
}
