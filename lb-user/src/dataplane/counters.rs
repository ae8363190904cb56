//! Reading the per-CPU counters (the XDP program is their only writer).

use std::path::Path;

use aya::maps::{Array, Map, MapData, MapError, PerCpuArray};
use lb_common::{names, Event, Reason, Suspicion, TrafficStats};

pub struct Counters {
    suspicion: Array<MapData, Suspicion>,
    reasons: PerCpuArray<MapData, u64>,
    events: PerCpuArray<MapData, u64>,
    frontends: PerCpuArray<MapData, TrafficStats>,
    servers: PerCpuArray<MapData, TrafficStats>,
}

fn open<V: aya::Pod>(dir: &Path, name: &str) -> Result<PerCpuArray<MapData, V>, MapError> {
    PerCpuArray::try_from(Map::from_map_data(MapData::from_pin(dir.join(name))?)?)
}

fn sum(a: TrafficStats, b: &TrafficStats) -> TrafficStats {
    TrafficStats {
        packets_in: a.packets_in + b.packets_in,
        bytes_in: a.bytes_in + b.bytes_in,
        packets_out: a.packets_out + b.packets_out,
        bytes_out: a.bytes_out + b.bytes_out,
        new_flows: a.new_flows + b.new_flows,
        syn_rst: a.syn_rst + b.syn_rst,
        syn_unanswered: a.syn_unanswered + b.syn_unanswered,
        denied: a.denied + b.denied,
        local_connections: a.local_connections + b.local_connections,
    }
}

impl Counters {
    pub fn open_pinned(dir: &Path) -> Result<Self, MapError> {
        Ok(Self {
            suspicion: Array::try_from(Map::from_map_data(MapData::from_pin(dir.join(names::SUSPICION))?)?)?,
            reasons: open(dir, names::REASON_STATS)?,
            events: open(dir, names::EVENT_STATS)?,
            frontends: open(dir, names::FRONTEND_STATS)?,
            servers: open(dir, names::SERVER_STATS)?,
        })
    }

    /// Packets per reason, summed over CPUs.
    pub fn reasons(&self) -> Result<Vec<(Reason, u64)>, MapError> {
        Reason::ALL.iter().map(|&r| Ok((r, self.reasons.get(&(r as u32), 0)?.iter().sum()))).collect()
    }

    /// Data path events (timestamp translation, NAT ports, TCP tracking), summed over CPUs.
    pub fn events(&self) -> Result<Vec<(Event, u64)>, MapError> {
        Event::ALL.iter().map(|&e| Ok((e, self.events.get(&(e as u32), 0)?.iter().sum()))).collect()
    }

    pub fn frontend(&self, id: u32) -> Result<TrafficStats, MapError> {
        Ok(self.frontends.get(&id, 0)?.iter().fold(TrafficStats::default(), sum))
    }

    pub fn server(&self, id: u32) -> Result<TrafficStats, MapError> {
        Ok(self.servers.get(&id, 0)?.iter().fold(TrafficStats::default(), sum))
    }

    /// What the data path suspects of server `id` (see lb-ebpf's `suspicion`).
    pub fn suspicion(&self, id: u32) -> Result<Suspicion, MapError> {
        self.suspicion.get(&id, 0)
    }
}
