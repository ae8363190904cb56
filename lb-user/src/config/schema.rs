//! The configuration file's schema: what `xdplb.toml` may say, with HAProxy's names and
//! defaults where HAProxy has one (inter 2s, rise 2, fall 3, ...).

use std::{net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

use super::units::{Bind, Cidr, Dur, ExpectStatus, Parsed, PortRange, ServerAddr, UnitError};

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
#[expect(clippy::struct_excessive_bools, reason = "the file's switches, one key each, as operators write them")]
pub struct Global {
    /// Interfaces to attach to (the command line's `--iface` replaces this list).
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpModeCfg,
    pub pin_dir: PathBuf,
    /// Source ports reserved for full NAT (put in `net.ipv4.ip_local_reserved_ports`).
    pub nat_ports: PortRange,
    /// How many of the last `nat_ports` are for SYNs without timestamps (clients that have them
    /// off, e.g. Windows); default a quarter. They are kept apart because a server holding a
    /// tuple in TIME_WAIT takes such a SYN only by luck: these tuples wait out the whole
    /// TIME_WAIT after a server's close, the others only 2 s. 0: one range for all SYNs.
    pub no_timestamp_ports: Option<u32>,
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
    /// `user:password` the status page asks for (HTTP Basic; HAProxy's `stats auth`). Needed
    /// when `stats_bind` is not a loopback address, unless `stats_unauthenticated` says not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_auth: Option<StatsAuth>,
    /// Serve the page on a non-loopback address without a password, knowingly.
    pub stats_unauthenticated: bool,
    /// Refuse to start when `stats_bind` is taken; by default the agent says who holds it, runs
    /// without the page and takes the address once it is free.
    pub stats_required: bool,
    /// The runtime API's unix socket (root only, level admin).
    pub runtime_socket: PathBuf,
    /// More runtime API sockets, each at its level (HAProxy's `stats socket ... level`): e.g. a
    /// read-only one for a monitoring agent that does not run as root.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runtime_sockets: Vec<RuntimeSocketCfg>,
    /// Where server states set by hand are kept across reloads and restarts.
    pub state_file: PathBuf,
    /// Balance connect()s that processes on this host make to a frontend (kubelet, etcdctl, a
    /// co-located apiserver), with a cgroup v2 connect hook: HAProxy's listener served them.
    /// Loopback binds (`127.0.0.1:PORT`) are served only this way.
    pub local_clients: bool,
    /// The cgroup (v2) whose processes the connect hook serves, with every cgroup below it;
    /// default the root of the cgroup v2 mount (every process of the host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_clients_cgroup: Option<PathBuf>,
    /// Flow state shared with peer balancers (two or three behind a keepalived VIP), so that
    /// established flows survive a failover.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncCfg>,
    /// A log line per connection in HAProxy's `option tcplog` format, from the data path's
    /// flow events (off: the data path sends none).
    pub tcplog: bool,
    /// Flow events each CPU may send per second (two per connection); beyond, they are dropped
    /// and counted (`flow_event_dropped`), and those connections are not logged.
    pub tcplog_rate: u32,
}

/// `[global.sync]`: the balancers that share flows, and how.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyncCfg {
    /// This balancer's number among the peers, 1 to (peers + 1): it allocates NAT ports only
    /// from its own share of `nat_ports`, so peers never pick the same backend-side tuple.
    pub node: u32,
    /// Where this balancer receives its peers' messages (UDP; an address of its own, not the VIP).
    /// IPv4 only: the sync protocol carries IPv4 flows (`sync::wire`), and so does its transport.
    pub listen: std::net::SocketAddrV4,
    /// The other balancers' `listen` addresses.
    pub peers: Vec<std::net::SocketAddrV4>,
    /// The shared secret (at least 16 bytes; owner-only readable) that authenticates messages
    /// (HMAC-SHA256). The same file on every peer.
    pub key_file: PathBuf,
    /// Addresses that move between the balancers (keepalived VIPs). Servers must see flows come
    /// from one of them, or their replies would not follow a failover. Default: the addresses
    /// frontends bind explicitly (`bind = "VIP:PORT"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floating: Vec<IpAddr>,
    /// Messages per second sent to each peer at most (flows beyond it wait for the next dump).
    #[serde(default = "default_sync_rate")]
    pub max_messages_per_sec: u32,
    /// How often every flow is sent again (peers forget flows they do not hear of for
    /// `idle_timeout`, and one that was away catches up at once when it returns).
    #[serde(default = "default_sync_refresh")]
    pub refresh: Dur,
}

fn default_sync_rate() -> u32 {
    5000
}

fn default_sync_refresh() -> Dur {
    Dur(Duration::from_mins(1))
}

impl SyncCfg {
    /// How many balancers share the NAT ports.
    pub fn nodes(&self) -> u32 {
        u32::try_from(self.peers.len()).unwrap_or(u32::MAX).saturating_add(1)
    }
}

impl Global {
    /// `no_timestamp_ports`, or its default: a quarter of `nat_ports`.
    pub fn no_timestamp_ports(&self) -> u32 {
        self.no_timestamp_ports.unwrap_or(self.nat_ports.count() / 4)
    }

    /// Flow events each CPU may send a second: what the per-connection log allows, or what the
    /// flow sync sends at most (`max_messages_per_sec` datagrams of 5 flows), the larger.
    pub fn flow_events_per_s(&self) -> u32 {
        let log = if self.tcplog { self.tcplog_rate } else { 0 };
        let sync = self.sync.as_ref().map_or(0, |s| s.max_messages_per_sec.saturating_mul(5));
        log.max(sync)
    }

    /// The NAT ports this balancer allocates from: all of `nat_ports`, or with peers its own
    /// share (node N of M takes the N-th M-th), and how many of them are for SYNs without
    /// timestamps.
    pub fn own_nat_ports(&self) -> (u32, u32, u32) {
        let (first, count) = (u32::from(self.nat_ports.first), self.nat_ports.count());
        match &self.sync {
            Some(s) if s.nodes() > 1 && (1..=s.nodes()).contains(&s.node) => {
                let share = count / s.nodes();
                (first + (s.node - 1) * share, share, self.no_timestamp_ports() / s.nodes())
            }
            _ => (first, count, self.no_timestamp_ports()),
        }
    }
}

impl Default for Global {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            xdp_mode: XdpModeCfg::Auto,
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            nat_ports: PortRange { first: 40000, last: 59999 },
            no_timestamp_ports: None,
            max_flows: 65536,
            max_half_open: 16384,
            idle_timeout: Dur(Duration::from_hours(1)),
            syn_timeout: Dur(Duration::from_secs(10)),
            close_linger: Dur(Duration::from_secs(10)),
            gc_interval: Dur(Duration::from_secs(1)),
            reset_on_no_backend: true,
            translate_timestamps: true,
            server_time_wait: Dur(Duration::from_mins(1)),
            stats_bind: std::net::SocketAddr::from(([127, 0, 0, 1], 8404)),
            stats_auth: None,
            stats_unauthenticated: false,
            stats_required: false,
            runtime_socket: PathBuf::from("/run/xdplb/xdplb.sock"),
            runtime_sockets: Vec::new(),
            state_file: PathBuf::from("/var/lib/xdplb/server-state.json"),
            local_clients: true,
            local_clients_cgroup: None,
            sync: None,
            tcplog: false,
            tcplog_rate: 2000,
        }
    }
}

/// A runtime API socket besides `runtime_socket`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSocketCfg {
    pub path: PathBuf,
    /// `user` (read only), `operator` or `admin`.
    #[serde(default)]
    pub level: Level,
    /// A group (name or number) whose members may connect besides root: the socket is then
    /// open to connect and the caller's primary group is checked. Without one, root only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// What a runtime API socket lets its callers do (HAProxy's `level`): `user` reads, `operator`
/// also what HAProxy lets operators do, `admin` everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    User,
    Operator,
    Admin,
}

/// The status page's `user:password` (HTTP Basic). Its `Debug` hides the password (logs);
/// `xdplb check-config` hides it too.
#[derive(Clone, PartialEq, Eq)]
pub struct StatsAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for StatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StatsAuth({}:<hidden>)", self.user)
    }
}

impl<'de> Deserialize<'de> for StatsAuth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                Ok(StatsAuth { user: user.into(), password: password.into() })
            }
            _ => Err(serde::de::Error::custom("stats_auth: write it as \"user:password\", neither empty")),
        }
    }
}

impl Serialize for StatsAuth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}:{}", self.user, self.password))
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
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" | "driver" => Ok(Self::Native),
            "generic" | "skb" => Ok(Self::Generic),
            _ => Err(UnitError::XdpMode(s.into())),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrontendCfg {
    pub name: String,
    /// `ADDR:PORT` (`[IPv6]:PORT` in brackets), or `*:PORT` (also `[::]:PORT`) for every
    /// address of the attached interfaces, of each family its backend has servers of.
    pub bind: Parsed<Bind>,
    pub backend: String,
    /// Source networks that may connect (`"10.0.0.0/8"`, `"198.18.0.7"`); SYNs from elsewhere
    /// are dropped in XDP and counted (`not_allowed`). Empty or absent: every source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Parsed<Cidr>>,
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
    /// Either family: a server's flows leave from the addresses of its own family.
    pub source: Vec<IpAddr>,
    /// How often a new connection may be moved to another server when its server refuses the
    /// SYN or leaves it unanswered (HAProxy's `retries`, default 3).
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// Move such a connection to another server (HAProxy's `option redispatch`); xdplb's default
    /// is on (HAProxy's is off: it retries the same server).
    #[serde(default = "default_true")]
    pub redispatch: bool,
    /// Refused or unanswered SYNs in a row after which a server gets no new flow until a health
    /// check has cleared it (0: never); default 3.
    #[serde(default = "default_suspect_after")]
    pub suspect_after: u8,
    /// With no active server UP, every UP backup takes flows (HAProxy's `option allbackups`);
    /// by default only the first UP backup, in the configuration's order, as HAProxy does.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allbackups: bool,
    #[serde(default, rename = "server")]
    pub servers: Vec<ServerCfg>,
}

fn default_retries() -> u8 {
    3
}

fn default_suspect_after() -> u8 {
    3
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Each new flow to the next server in turn (weights repeat a server).
    #[default]
    Roundrobin,
    /// To the server with the fewest open flows for its weight (after a restart, a server
    /// takes the new flows until it has its share of the long-lived ones).
    Leastconn,
    /// By a hash of the client's address: one client, one server, while that server is UP.
    Source,
}

impl Balance {
    /// HAProxy's name, as `balance` takes it and `show stat`'s `algo` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Balance::Roundrobin => "roundrobin",
            Balance::Leastconn => "leastconn",
            Balance::Source => "source",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerCfg {
    pub name: String,
    /// `IPv4:PORT`.
    pub address: Parsed<ServerAddr>,
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

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_false(b: &bool) -> bool {
    !*b
}

fn default_weight() -> u32 {
    1
}

/// Health check settings of a backend's servers, with HAProxy's names and defaults
/// (`default-server` in HAProxy terms). Checks run in the agent; see `health`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckCfg {
    /// `https` (HAProxy's `check check-ssl` with `option httpchk`), `http`, `tls` (connect and
    /// TLS handshake: HAProxy's `check check-ssl` without httpchk, L6OK), `tcp` (connect only),
    /// or `none` (servers count as UP).
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
    /// Pass needs this HTTP status, or one in this range (`"200-399"`, HAProxy's default)...
    pub expect_status: ExpectStatus,
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
            expect_status: ExpectStatus::one(200),
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
    Tls,
    Tcp,
    None,
}

impl CheckKind {
    /// The check speaks TLS whatever else is set.
    pub fn is_tls(self) -> bool {
        matches!(self, CheckKind::Https | CheckKind::Tls)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    None,
    Required,
}

/// `"10.0.0.5"` or `["10.0.0.5", "10.0.0.6"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(IpAddr),
        Many(Vec<IpAddr>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(v) => v,
    })
}
