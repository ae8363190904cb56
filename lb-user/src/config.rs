//! The configuration file (TOML): parsed and validated completely, every problem reported at
//! once with its place and a fix, before anything touches the kernel. Names and defaults follow
//! HAProxy's where HAProxy has one (inter 2s, rise 2, fall 3, ...).

use std::{
    collections::HashSet,
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdplb";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub global: Global,
    #[serde(default, rename = "frontend")]
    pub frontends: Vec<FrontendCfg>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendCfg>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// Interfaces to attach to (the command line's `--iface` replaces this list).
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpModeCfg,
    pub pin_dir: PathBuf,
    /// Source ports reserved for full NAT (put in `net.ipv4.ip_local_reserved_ports`).
    pub nat_ports: PortRange,
    /// Concurrent flows the connection table holds (it takes two entries per flow).
    pub max_flows: u32,
    /// Flows whose handshake is not complete, held apart: a SYN flood fills this table only.
    pub max_half_open: u32,
    /// Established flows idle this long are removed.
    pub idle_timeout: Dur,
    /// Flows whose handshake did not complete in this time are removed.
    pub syn_timeout: Dur,
    /// Flows that saw RST, or FIN both ways, linger this long for the last ACKs.
    pub close_linger: Dur,
    /// How often the agent sweeps the connection table.
    pub gc_interval: Dur,
    /// Answer SYNs that no server can take with RST (otherwise drop them).
    pub reset_on_no_backend: bool,
    /// Translate TCP timestamps per flow, so that a server holding a NAT tuple in TIME_WAIT
    /// accepts the next SYN on it (off: timestamps pass untouched, and ports wait longer).
    pub translate_timestamps: bool,
    /// How long the servers keep a tuple in TIME_WAIT (Linux: 60 s). A NAT port whose server
    /// closed first on a flow without timestamps is not used again before this.
    pub server_time_wait: Dur,
    /// Status page, `/status.json` and `/metrics` (HAProxy's usual stats port).
    pub stats_bind: std::net::SocketAddr,
    /// The runtime API's unix socket (root only).
    pub runtime_socket: PathBuf,
    /// Where server states set by hand are kept across reloads and restarts.
    pub state_file: PathBuf,
}

impl Default for Global {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            xdp_mode: XdpModeCfg::Auto,
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            nat_ports: PortRange { first: 40000, last: 59999 },
            max_flows: 65536,
            max_half_open: 16384,
            idle_timeout: Dur(Duration::from_secs(3600)),
            syn_timeout: Dur(Duration::from_secs(10)),
            close_linger: Dur(Duration::from_secs(10)),
            gc_interval: Dur(Duration::from_secs(1)),
            reset_on_no_backend: true,
            translate_timestamps: true,
            server_time_wait: Dur(Duration::from_secs(60)),
            stats_bind: "127.0.0.1:8404".parse().unwrap(),
            runtime_socket: PathBuf::from("/run/xdplb/xdplb.sock"),
            state_file: PathBuf::from("/var/lib/xdplb/server-state.json"),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeCfg {
    /// Native (driver) mode, falling back to generic with a warning.
    Auto,
    /// Native (driver) mode or fail.
    Native,
    /// Generic (skb) mode.
    Generic,
}

impl FromStr for XdpModeCfg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" | "driver" => Ok(Self::Native),
            "generic" | "skb" => Ok(Self::Generic),
            _ => Err(format!("unknown XDP mode {s:?}: use auto, native or generic")),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrontendCfg {
    pub name: String,
    /// `ADDR:PORT`, or `*:PORT` for every IPv4 address of the attached interfaces.
    pub bind: String,
    pub backend: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendCfg {
    pub name: String,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub check: CheckCfg,
    /// The balancer addresses flows leave from (one address or a list, at most
    /// `lb_common::MAX_SOURCES`); by default the kernel's route to each server. Each address
    /// multiplies the backend-side tuples a server can take: `nat_ports` per address.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "one_or_many")]
    pub source: Vec<Ipv4Addr>,
    #[serde(default, rename = "server")]
    pub servers: Vec<ServerCfg>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    #[default]
    Roundrobin,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerCfg {
    pub name: String,
    /// `IPv4:PORT`.
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Takes flows only when no active server is UP.
    #[serde(default)]
    pub backup: bool,
    /// Health-check this server (HAProxy's `check`); unchecked servers count as UP.
    #[serde(default = "default_true")]
    pub check: bool,
    /// Administrative state: `ready`, `drain` (no new flows, open flows stay, checks go on) or
    /// `maint` (no new flows, no checks; HAProxy's `disabled`).
    #[serde(default)]
    pub state: AdminState,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    #[default]
    Ready,
    Drain,
    Maint,
}

fn default_true() -> bool {
    true
}

/// `"10.0.0.5"` or `["10.0.0.5", "10.0.0.6"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Ipv4Addr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Ipv4Addr),
        Many(Vec<Ipv4Addr>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(v) => v,
    })
}

fn default_weight() -> u32 {
    1
}

/// Health check settings of a backend's servers, with HAProxy's names and defaults
/// (`default-server` in HAProxy terms). Checks run in the agent; see `health`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckCfg {
    /// `https` (HAProxy's `check check-ssl` with `option httpchk`), `http`, `tcp` (connect
    /// only), or `none` (servers count as UP).
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Interval between checks while the server is UP (HAProxy `inter`).
    pub inter: Dur,
    /// Interval while it is changing state (`UP x/fall`, `DOWN x/rise`); default `inter`.
    pub fastinter: Option<Dur>,
    /// Interval while it is DOWN; default `inter`.
    pub downinter: Option<Dur>,
    /// Consecutive passes that bring a DOWN server UP.
    pub rise: u32,
    /// Consecutive failures that take an UP server DOWN.
    pub fall: u32,
    /// Budget for connect + TLS handshake + response; default `inter`.
    pub timeout: Option<Dur>,
    /// Check this port instead of the server's (HAProxy's `port`), e.g. a separate health port.
    pub port: Option<u16>,
    /// HTTP request path (`option httpchk GET /path`).
    pub path: String,
    /// Host header; default the server's address.
    pub host: Option<String>,
    /// Pass needs this HTTP status...
    pub expect_status: u16,
    /// ...and, if set, this string in the body (`http-check expect string`).
    pub expect_string: Option<String>,
    /// `none` (HAProxy's `verify none`) or `required` (needs `ca_file`).
    pub verify: Verify,
    pub ca_file: Option<PathBuf>,
    /// TLS server name; default none (an IP address is not a valid SNI).
    pub sni: Option<String>,
    /// Client certificate and key (PEM), for servers that require one (etcd `--client-cert-auth`).
    pub crt: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// State before the first check: `up` (HAProxy's behaviour) or `down` until proven.
    pub initial_state: InitialState,
    /// What happens to open flows of a server marked DOWN: `none` (HAProxy's default, they stay)
    /// or `shutdown-sessions` (they are removed from the connection table).
    pub on_marked_down: OnMarkedDown,
    /// Passive layer-4 observation (HAProxy `observe layer4`): SYNs the server answers with RST
    /// or never answers count as errors; at `error_limit` the server is checked at `fastinter`
    /// at once.
    pub observe: Observe,
    pub error_limit: u32,
}

impl Default for CheckCfg {
    fn default() -> Self {
        Self {
            kind: CheckKind::Tcp,
            inter: Dur(Duration::from_secs(2)),
            fastinter: None,
            downinter: None,
            rise: 2,
            fall: 3,
            timeout: None,
            path: "/".into(),
            expect_status: 200,
            expect_string: None,
            verify: Verify::Required,
            ca_file: None,
            sni: None,
            crt: None,
            key: None,
            host: None,
            port: None,
            initial_state: InitialState::Up,
            on_marked_down: OnMarkedDown::None,
            observe: Observe::Layer4,
            error_limit: 10,
        }
    }
}

impl CheckCfg {
    pub fn fastinter(&self) -> Duration {
        self.fastinter.unwrap_or(self.inter).0
    }
    pub fn downinter(&self) -> Duration {
        self.downinter.unwrap_or(self.inter).0
    }
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.inter).0
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InitialState {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnMarkedDown {
    None,
    ShutdownSessions,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Observe {
    None,
    Layer4,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Https,
    Http,
    Tcp,
    None,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    None,
    Required,
}

/// A duration written HAProxy's way: `2s`, `500ms`, `1m`, `1h`, `1d`, or a bare number of
/// milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration: write e.g. \"2s\", \"500ms\", \"1h\""))?;
        let ms = match unit {
            "" | "ms" => n,
            "s" => n * 1000,
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            "d" => n * 86_400_000,
            "us" => return Ok(Dur(Duration::from_micros(n))),
            _ => return Err(format!("{s:?}: unknown unit {unit:?}; use us, ms, s, m, h or d")),
        };
        Ok(Dur(Duration::from_millis(ms)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => write!(f, "{}us", self.0.as_micros()),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1000 == 0 => write!(f, "{}s", ms / 1000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) => Ok(Dur(Duration::from_millis(ms))),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// An inclusive port range, written `"40000-59999"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
    pub fn count(&self) -> u32 {
        self.last as u32 - self.first as u32 + 1
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port range: write it as \"40000-59999\" (1-65535)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(bad());
        }
        Ok(Self { first, last })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}-{}", self.first, self.last))
    }
}

/// Where a frontend listens: one address, or every address of the attached interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bind {
    Any(u16),
    Addr(SocketAddrV4),
}

impl Bind {
    pub fn port(&self) -> u16 {
        match self {
            Bind::Any(p) => *p,
            Bind::Addr(a) => a.port(),
        }
    }
}

impl FromStr for Bind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not ADDR:PORT: write it as \"*:12379\" or \"198.18.0.10:12379\" (IPv4, port 1-65535)")
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        match host {
            "*" | "" | "0.0.0.0" => Ok(Bind::Any(port)),
            h => Ok(Bind::Addr(SocketAddrV4::new(h.parse().map_err(|_| bad())?, port))),
        }
    }
}

/// A server address, `IPv4:PORT`.
pub fn parse_server_addr(s: &str) -> Result<SocketAddrV4, String> {
    let addr: SocketAddrV4 = s
        .parse()
        .map_err(|_| format!("{s:?} is not IPv4:PORT: write it as \"198.18.0.21:2379\""))?;
    if addr.port() == 0 {
        return Err(format!("{s:?}: port 0 is not a server port; use 1-65535"));
    }
    if addr.ip().is_unspecified() || addr.ip().is_broadcast() || addr.ip().is_multicast() {
        return Err(format!("{s:?}: {} cannot be a server address", addr.ip()));
    }
    Ok(addr)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { path: path.to_owned(), problems })
        }
    }

    /// Every problem of the configuration, each with its place and a fix.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let g = &self.global;
        if g.max_flows == 0 || g.max_flows > 8_000_000 {
            p.push(format!("global.max_flows = {}: use 1 to 8000000", g.max_flows));
        }
        if g.max_half_open == 0 || g.max_half_open > 8_000_000 {
            p.push(format!("global.max_half_open = {}: use 1 to 8000000", g.max_half_open));
        }
        if g.idle_timeout.0 < Duration::from_secs(1) {
            p.push("global.idle_timeout: use at least \"1s\"".into());
        }
        if g.gc_interval.0 < Duration::from_millis(100) {
            p.push("global.gc_interval: use at least \"100ms\"".into());
        }
        if g.server_time_wait.0 > Duration::from_secs(600) {
            p.push("global.server_time_wait: use at most \"600s\" (Linux servers hold TIME_WAIT 60 s)".into());
        }
        if self.frontends.is_empty() {
            p.push("no [[frontend]]: add one, e.g. name = \"in-etcd\", bind = \"*:12379\", backend = \"etcd-cluster\"".into());
        }
        if self.frontends.len() > lb_common::MAX_FRONTENDS as usize {
            p.push(format!("{} frontends: at most {}", self.frontends.len(), lb_common::MAX_FRONTENDS));
        }
        if self.backends.len() > lb_common::MAX_POOLS as usize {
            p.push(format!("{} backends: at most {}", self.backends.len(), lb_common::MAX_POOLS));
        }

        let backend_names: HashSet<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        let mut seen = HashSet::new();
        let mut binds: Vec<(Bind, &str)> = Vec::new();
        for (i, f) in self.frontends.iter().enumerate() {
            let at = format!("frontend[{i}] {:?}", f.name);
            check_name(&mut p, &at, &f.name);
            if !seen.insert(f.name.as_str()) {
                p.push(format!("{at}: duplicate frontend name; give each frontend its own name"));
            }
            match f.bind.parse::<Bind>() {
                Ok(b) => {
                    if g.nat_ports.contains(b.port()) {
                        p.push(format!(
                            "{at}.bind: port {} is inside global.nat_ports ({}-{}); move one of them",
                            b.port(), g.nat_ports.first, g.nat_ports.last
                        ));
                    }
                    for (other, name) in &binds {
                        let clash = other.port() == b.port()
                            && (matches!(other, Bind::Any(_)) || matches!(b, Bind::Any(_)) || *other == b);
                        if clash {
                            p.push(format!("{at}.bind: {:?} overlaps frontend {name:?}; use another port or address", f.bind));
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
                match parse_server_addr(&s.address) {
                    Ok(a) => {
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
    fn problems(&self, at: &str, p: &mut Vec<String>) {
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

fn check_name(p: &mut Vec<String>, at: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        p.push(format!("{at}: name {name:?} must be 1-64 characters of A-Z a-z 0-9 - _ ."));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
[[frontend]]
name = "in-etcd"
bind = "*:12379"
backend = "etcd-cluster"

[[frontend]]
name = "in-apiserver"
bind = "*:16443"
backend = "apiserver-cluster"

[[backend]]
name = "etcd-cluster"
check = { type = "https", path = "/health", expect_string = "true", verify = "none" }
server = [
  { name = "app1", address = "198.18.0.21:2379" },
  { name = "app2", address = "198.18.0.22:2379" },
  { name = "app3", address = "198.18.0.23:2379" },
]

[[backend]]
name = "apiserver-cluster"
check = { type = "https", path = "/healthz", expect_string = "ok", verify = "none" }
server = [
  { name = "app1", address = "198.18.0.21:6443" },
  { name = "app2", address = "198.18.0.22:6443" },
  { name = "app3", address = "198.18.0.23:6443" },
]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn seed_frontends_parse_with_haproxy_defaults() {
        let c = parse(SEED).unwrap();
        assert_eq!(c.frontends.len(), 2);
        let etcd = &c.backends[0];
        assert_eq!(etcd.check.inter, Dur(Duration::from_secs(2)));
        assert_eq!((etcd.check.rise, etcd.check.fall), (2, 3));
        assert_eq!(etcd.servers[2].weight, 1);
        assert_eq!(c.global.nat_ports, PortRange { first: 40000, last: 59999 });
    }

    #[test]
    fn durations_and_ranges() {
        assert_eq!("500ms".parse::<Dur>().unwrap().0, Duration::from_millis(500));
        assert_eq!("2s".parse::<Dur>().unwrap().0, Duration::from_secs(2));
        assert_eq!("1h".parse::<Dur>().unwrap().0, Duration::from_secs(3600));
        assert_eq!("150".parse::<Dur>().unwrap().0, Duration::from_millis(150));
        assert!("2 parsecs".parse::<Dur>().is_err());
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
        assert!("5-4".parse::<PortRange>().is_err());
        assert!("0-4".parse::<PortRange>().is_err());
        assert_eq!("*:12379".parse::<Bind>().unwrap(), Bind::Any(12379));
        assert!("*:0".parse::<Bind>().is_err());
        assert!("*:65536".parse::<Bind>().is_err());
        assert!("::1:80".parse::<Bind>().is_err());
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_place() {
        let bad = r#"
[[frontend]]
name = "a"
bind = "*:0"
backend = "nope"
[[frontend]]
name = "a"
bind = "*:45000"
backend = "b"
[[backend]]
name = "b"
check = { rise = 0 }
server = [ { name = "s", address = "198.18.0.21" }, { name = "s", address = "198.18.0.22:1", weight = 300 } ]
"#;
        let Err(ConfigError::Invalid { problems, .. }) = parse(bad) else { panic!("accepted") };
        let all = problems.join("\n");
        for needle in [
            "frontend[0] \"a\".bind",
            "frontend[0] \"a\".backend: no [[backend]] named \"nope\"",
            "frontend[1] \"a\": duplicate frontend name",
            "inside global.nat_ports",
            "backend[0] \"b\".check.rise = 0",
            "server[0] \"s\".address",
            "server[1] \"s\": duplicate server name",
            "weight = 300",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_refused_with_a_line() {
        let e = parse("[global]\nintrefaces = [\"eth0\"]\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `intrefaces`") && e.contains("line 2"), "{e}");
        let e = parse("[[frontend]\n").unwrap_err().to_string();
        assert!(e.contains("test.toml") && e.contains("line 1"), "{e}");
    }
}
