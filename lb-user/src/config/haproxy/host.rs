//! What the imported configuration takes from the host, not from the haproxy.cfg: the
//! interfaces to attach to, and NAT ports clear of every port the configuration uses, so the
//! result runs as is under the shipped unit.

use super::notes::Notes;
use crate::config::{Bind, Config, PortRange, ServerAddr};

/// Fills in `global.interfaces` and `global.nat_ports`.
pub(super) fn fill_in(config: &mut Config, interfaces: &[String], notes: &mut Notes) {
    if interfaces.is_empty() {
        notes.error(
            "global.interfaces is empty (no --iface given and no default-route interface found): xdplb would attach nowhere and the unit refuses to start; pass --iface IFACE".into(),
        );
    } else {
        config.global.interfaces = interfaces.to_vec();
        notes.info(format!(
            "global.interfaces = {interfaces:?}: the interfaces clients reach the frontends on (--iface, or the default route's)"
        ));
    }
    let used = used_ports(config);
    let default = config.global.nat_ports;
    if used.iter().any(|p| default.contains(*p)) {
        match clear_range(&used, default.count()) {
            Some(range) => {
                notes.info(format!(
                    "global.nat_ports = \"{}-{}\": the default {}-{} holds a port this configuration uses",
                    range.first, range.last, default.first, default.last
                ));
                config.global.nat_ports = range;
            }
            None => notes.error(format!(
                "no range of {} ports clear of the configured ports for global.nat_ports; set it by hand",
                default.count()
            )),
        }
    }
}

/// Every port a frontend binds, a server listens on, or a check connects to.
fn used_ports(config: &Config) -> Vec<u16> {
    let mut ports: Vec<u16> = config.frontends.iter().filter_map(|f| f.bind.get().map(Bind::port)).collect();
    for b in &config.backends {
        ports.extend(b.servers.iter().filter_map(|s| s.address.get().map(|ServerAddr(a)| a.port())));
        ports.extend(b.check.port);
    }
    ports.extend([config.global.stats_bind.port()]);
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The highest range of up to `want` ports above 32767 that holds none of `used` (ephemeral
/// ports on Linux start at 32768; xdplb reserves its range there).
fn clear_range(used: &[u16], want: u32) -> Option<PortRange> {
    let mut best: Option<PortRange> = None;
    let mut start: u32 = 32768;
    let bounds = used.iter().map(|p| u32::from(*p)).filter(|p| *p >= 32768).chain([65536]);
    for stop in bounds {
        if stop > start {
            let len = (stop - start).min(want);
            if best.is_none_or(|b| len > b.count()) {
                let first = u16::try_from(start).ok()?;
                let last = u16::try_from(start + len - 1).ok()?;
                best = Some(PortRange { first, last });
            }
        }
        start = stop + 1;
    }
    best.filter(|b| b.count() * 2 >= want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_ports_avoid_every_used_port() {
        let r = clear_range(&[6443, 40000, 50000], 20000).unwrap();
        assert!(!r.contains(40000) && !r.contains(50000) && !r.contains(6443), "{r:?}");
        assert!(r.count() >= 10000, "{r:?}");
        assert_eq!(clear_range(&[], 20000), Some(PortRange { first: 32768, last: 52767 }));
    }
}
