//! Whether a topology fits the kernel's maps: checked before anything is written, at start and
//! at every reload, so that a configuration too big for the data path is refused whole instead
//! of half applied. `*:PORT` takes one frontend entry per address of the attached interfaces,
//! and one for 127.0.0.1 when local clients are served.

use std::collections::HashSet;

use lb_common::{MAX_FRONTENDS, MAX_POOLS, MAX_SERVERS, MAX_SLOTS};

use super::Topology;
use crate::problems::Problems;

impl Topology {
    /// What would not fit the kernel's maps, each with how much and the fix.
    pub fn fits(&self) -> Problems {
        let mut p = Problems::default();
        let keys: HashSet<_> = self.frontends.iter().flat_map(|f| f.keys.iter()).collect();
        if keys.len() > MAX_FRONTENDS as usize {
            let wildcards = self.frontends.iter().filter(|f| f.bind.starts_with('*')).count();
            p.push(format!(
                "{} frontend(s) need {} entries in the kernel's frontend map, which holds {MAX_FRONTENDS} ({wildcards} bind to `*:PORT`, one entry per address of the attached interfaces, and one for 127.0.0.1 with local_clients); bind some to one address, or serve fewer",
                self.frontends.len(),
                keys.len()
            ));
        }
        // IPv6 keys have a map of their own (`frontends6`), of the same size.
        let keys6: HashSet<_> = self.frontends.iter().flat_map(|f| f.keys6.iter()).collect();
        if keys6.len() > MAX_FRONTENDS as usize {
            p.push(format!(
                "{} frontend(s) need {} entries in the kernel's IPv6 frontend map, which holds {MAX_FRONTENDS} (a `*:PORT` takes one per global or unique-local IPv6 address of the attached interfaces); bind some to one address, or serve fewer",
                self.frontends.len(),
                keys6.len()
            ));
        }
        if self.pools.len() > MAX_POOLS as usize {
            p.push(format!("{} backends: the kernel holds {MAX_POOLS}", self.pools.len()));
        }
        if let Some(s) = self.servers().map(|(_, s)| s).find(|s| s.id >= MAX_SERVERS) {
            p.push(format!("server {:?} has id {}: the kernel holds ids below {MAX_SERVERS}", s.name, s.id));
        }
        for pool in &self.pools {
            let takers = pool.servers.iter().filter(|s| s.weight > 0).count();
            if takers > MAX_SLOTS {
                p.push(format!(
                    "backend {:?}: {takers} servers with a weight, but a backend's set holds {MAX_SLOTS}; split it",
                    pool.name
                ));
            }
        }
        p
    }
}
