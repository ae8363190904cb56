//! What makes a configuration refusable: every problem at once, each with its place
//! (`backend[0] "etcd".server[1] "app2".address`) and a fix.

use std::{collections::HashSet, time::Duration};

use super::{Bind, CheckCfg, CheckKind, Config, ServerAddr, Verify};
use crate::problems::Problems;

impl Config {
    /// Every problem of the configuration, each with its place and a fix.
    #[expect(clippy::too_many_lines, reason = "one pass over the file in its own order, so the places read in order")]
    pub fn problems(&self) -> Problems {
        let mut p = Problems::default();
        let g = &self.global;
        if g.max_flows == 0 || g.max_flows > 8_000_000 {
            p.push(format!("global.max_flows = {}: use 1 to 8000000", g.max_flows));
        }
        if g.max_half_open == 0 || g.max_half_open > 8_000_000 {
            p.push(format!("global.max_half_open = {}: use 1 to 8000000", g.max_half_open));
        }
        if g.idle_timeout.0 < Duration::from_secs(1) {
            p.push("global.idle_timeout: use at least \"1s\"");
        }
        if g.nat_ports.count() > 1 && g.no_timestamp_ports() >= g.nat_ports.count() {
            p.push(format!(
                "global.no_timestamp_ports = {}: leave some of global.nat_ports ({}) for SYNs with timestamps",
                g.no_timestamp_ports(),
                g.nat_ports.count()
            ));
        }
        if g.server_time_wait.0 > Duration::from_mins(10) {
            p.push("global.server_time_wait: use at most \"600s\" (Linux servers hold TIME_WAIT 60 s)");
        }
        if g.gc_interval.0 < Duration::from_millis(100) {
            p.push("global.gc_interval: use at least \"100ms\"");
        }
        if self.frontends.is_empty() {
            p.push("no [[frontend]]: add one, e.g. name = \"in-etcd\", bind = \"*:12379\", backend = \"etcd-cluster\"");
        }
        if self.frontends.len() > lb_common::MAX_FRONTENDS as usize {
            p.push(format!("{} frontends: at most {}", self.frontends.len(), lb_common::MAX_FRONTENDS));
        }
        if self.backends.len() > lb_common::MAX_POOLS as usize {
            p.push(format!("{} backends: at most {}", self.backends.len(), lb_common::MAX_POOLS));
        }

        let backend_names: HashSet<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        let mut seen = HashSet::new();
        let mut binds: Vec<(&Bind, &str)> = Vec::new();
        for (i, f) in self.frontends.iter().enumerate() {
            let at = format!("frontend[{i}] {:?}", f.name);
            check_name(&mut p, &at, &f.name);
            if !seen.insert(f.name.as_str()) {
                p.push(format!("{at}: duplicate frontend name; give each frontend its own name"));
            }
            match f.bind.value() {
                Ok(b) => {
                    if g.nat_ports.contains(b.port()) {
                        p.push(format!(
                            "{at}.bind: port {} is inside global.nat_ports ({}-{}); move one of them",
                            b.port(),
                            g.nat_ports.first,
                            g.nat_ports.last
                        ));
                    }
                    for (other, name) in &binds {
                        let clash = other.port() == b.port()
                            && (matches!(other, Bind::Any(_)) || matches!(b, Bind::Any(_)) || *other == b);
                        if clash {
                            p.push(format!(
                                "{at}.bind: {:?} overlaps frontend {name:?}; use another port or address",
                                f.bind.text()
                            ));
                        }
                    }
                    binds.push((b, &f.name));
                }
                Err(e) => p.push(format!("{at}.bind: {e}")),
            }
            if !backend_names.contains(f.backend.as_str()) {
                p.push(format!(
                    "{at}.backend: no [[backend]] named {:?}; known: {:?}",
                    f.backend,
                    self.backends.iter().map(|b| &b.name).collect::<Vec<_>>()
                ));
            }
        }

        let mut seen = HashSet::new();
        let mut total_servers = 0;
        for (i, b) in self.backends.iter().enumerate() {
            let at = format!("backend[{i}] {:?}", b.name);
            check_name(&mut p, &at, &b.name);
            if !seen.insert(b.name.as_str()) {
                p.push(format!("{at}: duplicate backend name; give each backend its own name"));
            }
            if b.servers.is_empty() {
                p.push(format!("{at}: no [[backend.server]]; add at least one"));
            }
            b.check.problems(&format!("{at}.check"), &mut p);
            if b.source.len() > lb_common::MAX_SOURCES {
                p.push(format!("{at}.source: {} addresses, at most {}", b.source.len(), lb_common::MAX_SOURCES));
            }
            if b.source.iter().collect::<HashSet<_>>().len() != b.source.len() {
                p.push(format!("{at}.source: an address is listed twice"));
            }
            let mut names = HashSet::new();
            let mut addrs = HashSet::new();
            let mut weights = 0u32;
            for (j, s) in b.servers.iter().enumerate() {
                total_servers += 1;
                let at = format!("{at}.server[{j}] {:?}", s.name);
                check_name(&mut p, &at, &s.name);
                if !names.insert(s.name.as_str()) {
                    p.push(format!("{at}: duplicate server name in this backend"));
                }
                match s.address.value() {
                    Ok(&ServerAddr(a)) => {
                        if !addrs.insert(a) {
                            p.push(format!("{at}.address: {a} is listed twice in this backend"));
                        }
                    }
                    Err(e) => p.push(format!("{at}.address: {e}")),
                }
                if s.weight > 256 {
                    p.push(format!("{at}.weight = {}: use 0 to 256 (HAProxy's range)", s.weight));
                }
                weights += s.weight;
            }
            if !b.servers.is_empty() && weights == 0 {
                p.push(format!("{at}: every server has weight 0, so none could take a flow"));
            }
        }
        if total_servers >= lb_common::MAX_SERVERS as usize {
            p.push(format!("{total_servers} servers: at most {}", lb_common::MAX_SERVERS - 1));
        }
        p
    }
}

impl CheckCfg {
    fn problems(&self, at: &str, p: &mut Problems) {
        if self.rise == 0 {
            p.push(format!("{at}.rise = 0: use 1 or more (HAProxy's default is 2)"));
        }
        if self.fall == 0 {
            p.push(format!("{at}.fall = 0: use 1 or more (HAProxy's default is 3)"));
        }
        if self.inter.0 < Duration::from_millis(10) {
            p.push(format!("{at}.inter: use at least \"10ms\""));
        }
        if let Some(t) = self.timeout {
            if t > self.inter {
                p.push(format!(
                    "{at}.timeout = \"{t}\" is longer than inter = \"{}\": a check would still run when the next is due; use a timeout of at most inter",
                    self.inter
                ));
            }
        }
        if self.port == Some(0) {
            p.push(format!("{at}.port = 0: use 1-65535, or leave it out to check the server's own port"));
        }
        if self.error_limit == 0 {
            p.push(format!("{at}.error_limit = 0: use 1 or more (HAProxy's default is 10)"));
        }
        if !(100..=599).contains(&self.expect_status) {
            p.push(format!("{at}.expect_status = {}: use an HTTP status, 100-599", self.expect_status));
        }
        if !self.path.starts_with('/') {
            p.push(format!("{at}.path = {:?}: must start with \"/\"", self.path));
        }
        if self.verify == Verify::Required && self.kind == CheckKind::Https && self.ca_file.is_none() {
            p.push(format!(
                "{at}: verify = \"required\" needs ca_file = \"/path/ca.pem\" (or verify = \"none\", like HAProxy's `verify none`)"
            ));
        }
        if self.crt.is_some() != self.key.is_some() {
            p.push(format!("{at}: crt and key go together: set both or neither"));
        }
        for (field, file) in [("ca_file", &self.ca_file), ("crt", &self.crt), ("key", &self.key)] {
            if let Some(f) = file {
                if let Err(e) = std::fs::File::open(f) {
                    p.push(format!("{at}.{field}: cannot read {}: {e}", f.display()));
                }
            }
        }
    }
}

fn check_name(p: &mut Problems, at: &str, name: &str) {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        p.push(format!("{at}: name {name:?} must be 1-64 characters of A-Z a-z 0-9 - _ ."));
    }
}
