//! What makes a configuration refusable: every problem at once, each with its place
//! (`backend[0] "etcd".server[1] "app2".address`) and a fix.

use std::{collections::HashSet, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::{Bind, CheckCfg, Config, ServerAddr, Verify};
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
        if g.tcplog && g.tcplog_rate == 0 {
            p.push("global.tcplog_rate = 0 with tcplog = true would log nothing: use 1 or more flow events a second per CPU (two per connection), or tcplog = false".to_string());
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
        if g.gc_interval.0 > Duration::from_mins(1) {
            p.push("global.gc_interval: use at most \"60s\" (flows are removed only by the sweep)");
        }
        if g.syn_timeout.0 < Duration::from_secs(1) {
            p.push("global.syn_timeout: use at least \"1s\" (a handshake takes a round trip or more)");
        }
        if g.close_linger.0 < Duration::from_millis(100) {
            p.push("global.close_linger: use at least \"100ms\" (the last ACKs of a close need it)");
        }
        if let Some(sync) = &g.sync {
            sync_problems(self, sync, &mut p);
        }
        let mut paths = HashSet::from([&g.runtime_socket]);
        for (i, sock) in g.runtime_sockets.iter().enumerate() {
            let at = format!("global.runtime_sockets[{i}]");
            if !paths.insert(&sock.path) {
                p.push(format!(
                    "{at}.path = \"{}\": another socket has this path; give each its own",
                    sock.path.display()
                ));
            }
            if let Some(group) = &sock.group {
                if group_id(group).is_none() {
                    p.push(format!("{at}.group = {group:?}: no such group on this host (see /etc/group); create it or name another"));
                }
            }
        }
        if !g.stats_bind.ip().is_loopback() && g.stats_auth.is_none() && !g.stats_unauthenticated {
            p.push(format!(
                "global.stats_bind = \"{}\" is not a loopback address and global.stats_auth is not set: anyone who reaches it sees every server and its traffic; set stats_auth = \"user:password\" (HAProxy's `stats auth`), bind to 127.0.0.1, or set stats_unauthenticated = true",
                g.stats_bind
            ));
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
                    if let Some(why) = bind_unserved(b, g) {
                        p.push(format!("{at}.bind: {:?}: {why}", f.bind.text()));
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
            if f.allow.len() > lb_common::MAX_ALLOW_PER_FRONTEND as usize {
                p.push(format!(
                    "{at}.allow: {} networks, at most {}; merge neighbouring ones into wider prefixes",
                    f.allow.len(),
                    lb_common::MAX_ALLOW_PER_FRONTEND
                ));
            }
            for (j, net) in f.allow.iter().enumerate() {
                if let Err(e) = net.value() {
                    p.push(format!("{at}.allow[{j}]: {e}"));
                }
            }
            if !backend_names.contains(f.backend.as_str()) {
                p.push(format!(
                    "{at}.backend: no [[backend]] named {:?}; known: {:?}",
                    f.backend,
                    self.backends.iter().map(|b| &b.name).collect::<Vec<_>>()
                ));
            }
            // No translation between families: an IPv6 client goes to an IPv6 server.
            if let (Some(Bind::Addr(a)), Some(b)) = (f.bind.get(), self.backends.iter().find(|b| b.name == f.backend)) {
                let servers = b.servers.iter().filter_map(|s| s.address.get());
                if !b.servers.is_empty() && !servers.clone().any(|ServerAddr(s)| s.is_ipv4() == a.is_ipv4()) {
                    p.push(format!(
                        "{at}.bind: {:?} is an {} address, and backend {:?} has no {} server (xdplb does not translate between IPv4 and IPv6); add one, or bind to an address of the servers' family or to \"*:{}\"",
                        f.bind.text(),
                        family(a.ip()),
                        b.name,
                        family(a.ip()),
                        a.port()
                    ));
                }
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
            // Each server's flows leave from the source addresses of its own family.
            for src in &b.source {
                let of_family = |ServerAddr(s): &ServerAddr| s.is_ipv4() == src.is_ipv4();
                if !b.servers.iter().filter_map(|s| s.address.get()).any(of_family) && !b.servers.is_empty() {
                    p.push(format!(
                        "{at}.source: {src} is an {} address, and this backend has no {} server to use it for; remove it, or list an address of the servers' family",
                        family(*src),
                        family(*src)
                    ));
                }
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
                        if !b.source.is_empty() && !b.source.iter().any(|src| src.is_ipv4() == a.is_ipv4()) {
                            p.push(format!(
                                "{at}.address: {a} is an {} server, and the backend's source lists no {} address for its flows to leave from; add one to source, or remove source to use the kernel's route",
                                family(a.ip()),
                                family(a.ip())
                            ));
                        }
                        if a.ip().is_loopback() {
                            let remote = self.frontends.iter().filter(|f| f.backend == b.name).find(|f| {
                                f.bind.get().is_some_and(|bind| !matches!(bind, Bind::Addr(x) if x.ip().is_loopback()))
                            });
                            if let Some(f) = remote {
                                p.push(format!(
                                    "{at}.address: {a} is a loopback address, which the flows of remote clients to frontend {:?} cannot reach (the kernel drops packets for 127/8 that come from a wire); give the server's address on this host's interface, or use this backend from loopback binds only",
                                    f.name
                                ));
                            }
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

/// Why xdplb would serve nothing on `bind`, or `None`. The one rule for configuration files
/// and `import-haproxy` alike: no packet to a loopback address crosses XDP, only the connect
/// hook (`global.local_clients`) sees connections to one.
pub fn bind_unserved(bind: &Bind, g: &super::Global) -> Option<&'static str> {
    match bind {
        Bind::Addr(std::net::SocketAddr::V6(a)) if a.ip().is_loopback() => Some(
            "local clients over IPv6 are not served yet (the connect hook that serves this host's own connections is IPv4 only); bind to 127.0.0.1 with global.local_clients = true, or to an address of the attached interfaces",
        ),
        Bind::Addr(std::net::SocketAddr::V6(a)) if super::units::is_link_local6(a.ip()) => Some(
            "a link-local address (fe80::/10) is not served: it means nothing off its own link and has no place in the frontend keys; bind to a global or unique-local address, or to \"*:PORT\"",
        ),
        Bind::Addr(a) if a.ip().is_loopback() && !g.local_clients => Some(
            "only processes on this host reach a loopback address, and xdplb serves them only with global.local_clients = true (its connect hook); set it, or bind to an address of the attached interfaces",
        ),
        _ => None,
    }
}

/// The family's name in messages.
pub fn family(ip: std::net::IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
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
        for (field, value) in [("fastinter", self.fastinter), ("downinter", self.downinter), ("timeout", self.timeout)]
        {
            if value.is_some_and(|d| d.0 < Duration::from_millis(10)) {
                p.push(format!("{at}.{field}: use at least \"10ms\" (or leave it out: it defaults to inter)"));
            }
        }
        for (field, value) in
            [("inter", Some(self.inter)), ("fastinter", self.fastinter), ("downinter", self.downinter)]
        {
            if value.is_some_and(|d| d.0 > Duration::from_hours(24)) {
                p.push(format!("{at}.{field}: use at most \"24h\""));
            }
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
        if !(100..=599).contains(&self.expect_status.first) || !(100..=599).contains(&self.expect_status.last) {
            p.push(format!("{at}.expect_status = {}: use an HTTP status or range within 100-599", self.expect_status));
        }
        if !self.path.starts_with('/') {
            p.push(format!("{at}.path = {:?}: must start with \"/\"", self.path));
        }
        if self.path.chars().any(|c| c.is_control() || c.is_whitespace()) {
            p.push(format!(
                "{at}.path = {:?}: spaces and control characters (CR, LF) would end the request line or add headers; percent-encode them (%20, %0D%0A)",
                self.path
            ));
        }
        if let Some(host) = &self.host {
            if host.is_empty() || host.chars().any(|c| c.is_control() || c.is_whitespace()) {
                p.push(format!(
                    "{at}.host = {host:?}: a Host header is a name or address with no spaces or control characters (CR, LF would add headers)"
                ));
            }
        }
        if self.verify == Verify::None && self.ca_file.is_some() {
            p.push(format!(
                "{at}: verify = \"none\" with ca_file: certificates would not be checked against that CA; set verify = \"required\" to check them, or remove ca_file"
            ));
        }
        if self.verify == Verify::Required && self.kind.is_tls() && self.ca_file.is_none() {
            p.push(format!(
                "{at}: verify = \"required\" needs ca_file = \"/path/ca.pem\" (or verify = \"none\", like HAProxy's `verify none`)"
            ));
        }
        if self.crt.is_some() != self.key.is_some() {
            p.push(format!("{at}: crt and key go together: set both or neither"));
        }
        for (field, file) in [("ca_file", &self.ca_file), ("crt", &self.crt)] {
            if let Some(f) = file {
                if let Err(e) = certificates(f) {
                    p.push(format!("{at}.{field}: {e}"));
                }
            }
        }
        if let Some(f) = &self.key {
            if let Err(e) = private_key(f) {
                p.push(format!("{at}.key: {e}"));
            }
        }
    }

    /// What is allowed but weakens the checks, each with its place and how to do better.
    fn warnings(&self, at: &str, w: &mut Vec<String>) {
        let tls = self.kind.is_tls() || self.crt.is_some();
        if tls && self.verify == Verify::None {
            w.push(format!(
                "{at}: verify = \"none\" (HAProxy's `verify none`): the servers' certificates are not checked; set verify = \"required\" and ca_file"
            ));
        }
    }
}

impl Config {
    /// What is allowed but unsafe or weaker than it looks: shown by `xdplb check-config` and
    /// logged by the agent at start and reload, each with its place and a fix.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let g = &self.global;
        if !g.stats_bind.ip().is_loopback() && g.stats_auth.is_none() && g.stats_unauthenticated {
            w.push(format!(
                "global.stats_bind = \"{}\" without stats_auth (stats_unauthenticated = true): anyone who reaches it sees every server and its traffic",
                g.stats_bind
            ));
        }
        for (i, b) in self.backends.iter().enumerate() {
            b.check.warnings(&format!("backend[{i}] {:?}.check", b.name), &mut w);
        }
        w
    }
}

/// A group's id, by name or number.
pub fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    nix::unistd::Group::from_name(group).ok().flatten().map(|g| g.gid.as_raw())
}

/// Why a certificate or key file is refused.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{}: {what}", path.display())]
    Content { path: std::path::PathBuf, what: String },
    #[error(
        "{} is readable by group or others (mode {mode:04o}): a private key must be readable by its owner only; chmod 600 {} (xdplb refuses it, as ssh does)",
        path.display(), path.display()
    )]
    KeyExposed { path: std::path::PathBuf, mode: u32 },
}

/// The PEM certificates in `path` (at least one), read at `check-config` rather than at the
/// first check.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let content = |what: String| PemError::Content { path: path.to_owned(), what };
    std::fs::metadata(path).map_err(|source| PemError::Read { path: path.to_owned(), source })?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| content(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(e.to_string()))?;
    if certs.is_empty() {
        return Err(content("no PEM certificate in it (\"-----BEGIN CERTIFICATE-----\")".into()));
    }
    Ok(certs)
}

/// The private key in `path`, which only its owner may read.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let meta = std::fs::metadata(path).map_err(|source| PemError::Read { path: path.to_owned(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PemError::KeyExposed { path: path.to_owned(), mode });
    }
    let key = PrivateKeyDer::from_pem_file(path)
        .map_err(|e| PemError::Content { path: path.to_owned(), what: format!("no PEM private key in it ({e})") })?;
    // A PEM block is not yet a key: load it as the checks will.
    rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| PemError::Content { path: path.to_owned(), what: format!("not a usable private key: {e}") })?;
    Ok(key)
}

/// `[global.sync]`: node numbers, addresses, the key, and servers that see a floating source.
fn sync_problems(cfg: &Config, sync: &super::SyncCfg, p: &mut Problems) {
    let nodes = sync.nodes();
    if sync.peers.is_empty() {
        p.push("global.sync.peers: name the other balancers' sync addresses (\"ADDR:PORT\"), or remove [global.sync]");
    }
    if !(1..=nodes).contains(&sync.node) {
        p.push(format!(
            "global.sync.node = {}: use 1 to {nodes} (one number per balancer: this one and its {} peer(s)), a different one on each",
            sync.node,
            sync.peers.len()
        ));
    }
    if sync.peers.contains(&sync.listen) {
        p.push(format!("global.sync.peers: {} is this balancer's own listen address", sync.listen));
    }
    let nat = cfg.global.nat_ports;
    if nat.count() / nodes < 2 * lb_common::PORT_BLOCK {
        p.push(format!(
            "global.nat_ports: {} port(s) shared by {nodes} balancers leave each too few; widen the range",
            nat.count()
        ));
    }
    if (nat.first..=nat.last).contains(&sync.listen.port()) {
        p.push(format!("global.sync.listen: port {} is one of global.nat_ports; pick one outside", sync.listen.port()));
    }
    if sync.max_messages_per_sec == 0 {
        p.push("global.sync.max_messages_per_sec: use at least 1");
    }
    if sync.refresh.0 < Duration::from_secs(1) || sync.refresh.0 >= cfg.global.idle_timeout.0 {
        p.push(format!(
            "global.sync.refresh: use at least \"1s\" and less than global.idle_timeout ({:?}), or peers forget quiet flows",
            cfg.global.idle_timeout.0
        ));
    }
    if let Err(e) = sync_key(&sync.key_file) {
        p.push(format!("global.sync.key_file: {e}"));
    }
    // Servers answer the address the flow came from: unless it moves with the VIP, their
    // replies go to the old master after a failover, and the flows die anyway.
    let floating: Vec<std::net::IpAddr> = if sync.floating.is_empty() {
        cfg.frontends
            .iter()
            .filter_map(|f| match f.bind.get() {
                Some(Bind::Addr(a)) => Some(a.ip()),
                _ => None,
            })
            .collect()
    } else {
        sync.floating.clone()
    };
    for (i, b) in cfg.backends.iter().enumerate() {
        if b.source.is_empty() || b.source.iter().any(|a| !floating.contains(a)) {
            p.push(format!(
                "backend[{i}] {:?}.source: with global.sync, servers must see flows come from an address that moves with the VIP ({}), or their replies miss the new master after a failover; set source = [\"VIP\"]",
                b.name,
                if floating.is_empty() {
                    "which none is known to: bind a frontend to the VIP, or list it in global.sync.floating".to_owned()
                } else {
                    floating.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                }
            ));
        }
    }
}

/// The shared secret of `[global.sync]`: at least 16 bytes, readable by its owner only.
pub fn sync_key(path: &Path) -> Result<Vec<u8>, PemError> {
    let meta = std::fs::metadata(path).map_err(|source| PemError::Read { path: path.to_owned(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PemError::KeyExposed { path: path.to_owned(), mode });
    }
    let key = std::fs::read(path).map_err(|source| PemError::Read { path: path.to_owned(), source })?;
    let key: Vec<u8> = key.trim_ascii().to_vec();
    if key.len() < 16 {
        return Err(PemError::Content {
            path: path.to_owned(),
            what: format!("{} byte(s): use at least 16 (e.g. head -c 32 /dev/urandom | base64 > FILE)", key.len()),
        });
    }
    Ok(key)
}

fn check_name(p: &mut Problems, at: &str, name: &str) {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        p.push(format!("{at}: name {name:?} must be 1-64 characters of A-Z a-z 0-9 - _ ."));
    }
}
