//! The sections of an haproxy.cfg as written, before translation: proxies (`defaults`,
//! `frontend`, `backend`, `listen`), their check settings, servers and server options.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use crate::config::{Balance, Dur, ExpectStatus, InitialState, Observe, OnMarkedDown, Verify};

use super::lex::Line;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Kind {
    #[default]
    Defaults,
    Frontend,
    Backend,
    Listen,
}

impl Kind {
    pub(super) fn from_keyword(k: &str) -> Option<Kind> {
        match k {
            "defaults" => Some(Kind::Defaults),
            "frontend" => Some(Kind::Frontend),
            "backend" => Some(Kind::Backend),
            "listen" => Some(Kind::Listen),
            _ => None,
        }
    }
    pub(super) fn keyword(self) -> &'static str {
        match self {
            Kind::Defaults => "defaults",
            Kind::Frontend => "frontend",
            Kind::Backend => "backend",
            Kind::Listen => "listen",
        }
    }
    pub(super) fn is_frontend(self) -> bool {
        matches!(self, Kind::Frontend | Kind::Listen)
    }
    pub(super) fn is_backend(self) -> bool {
        matches!(self, Kind::Backend | Kind::Listen)
    }
}

/// Sections with nothing xdplb could use (users, peers, DNS resolvers, ...).
pub(super) const OTHER_SECTIONS: &[&str] = &[
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "crt-store",
    "traces",
    "log-forward",
    "acme",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Section {
    #[default]
    Outside,
    Global,
    Defaults,
    Proxy,
    Other,
}

/// What `global` says that matters to checks.
#[derive(Debug, Clone)]
pub(super) struct GlobalOpts {
    /// `ssl-server-verify`: the `verify` of servers that do not set one.
    pub(super) verify: Verify,
    /// `ca-base` and `crt-base`: where relative `ca-file` and `crt` paths live.
    pub(super) ca_base: Option<PathBuf>,
    pub(super) crt_base: Option<PathBuf>,
}

impl Default for GlobalOpts {
    fn default() -> Self {
        Self { verify: Verify::Required, ca_base: None, crt_base: None }
    }
}

impl GlobalOpts {
    /// Everything else in `global` is process tuning (user, nbthread, stats socket, ...), which
    /// does not change how flows are balanced, so it is ignored without a note.
    #[expect(clippy::indexing_slicing, reason = "the lexer makes no line without a word")]
    pub(super) fn directive(&mut self, line: &Line) {
        match (line.words[0].as_str(), line.word(1)) {
            ("ssl-server-verify", Some("none")) => self.verify = Verify::None,
            ("ssl-server-verify", Some("required")) => self.verify = Verify::Required,
            ("ca-base", Some(dir)) => self.ca_base = Some(dir.into()),
            ("crt-base", Some(dir)) => self.crt_base = Some(dir.into()),
            _ => {}
        }
    }
}

pub(super) fn based(base: Option<&PathBuf>, file: &str) -> PathBuf {
    match base {
        Some(dir) if !file.starts_with('/') => dir.join(file),
        _ => PathBuf::from(file),
    }
}

/// The address families HAProxy accepted clients of on one bind: `*:PORT` IPv4, `:::PORT`
/// both on Linux (`net.ipv6.bindv6only=0`, or `v4v6`) unless `v6only`, an address its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Listen {
    pub(super) v4: bool,
    pub(super) v6: bool,
}

/// A `defaults`, `frontend`, `backend` or `listen` section as written, before translation.
#[derive(Debug, Clone, Default)]
pub(super) struct Proxy {
    pub(super) kind: Kind,
    pub(super) name: String,
    pub(super) line: usize,
    /// Normalised bind addresses (`*:PORT`, `IPv4:PORT` or `[IPv6]:PORT`), in order.
    pub(super) binds: Vec<String>,
    /// The families HAProxy accepted clients of on each of `binds` (same order).
    pub(super) listens: Vec<Listen>,
    pub(super) default_backend: Option<(usize, String)>,
    pub(super) check: ProxyCheck,
    pub(super) source: Vec<IpAddr>,
    /// `retries N` and `[no] option redispatch`, where set (a `defaults` section's carry over).
    pub(super) retries: Option<(usize, u8)>,
    pub(super) redispatch: Option<bool>,
    /// `balance roundrobin|static-rr|leastconn|source`, where set.
    pub(super) balance: Option<Balance>,
    /// `option allbackups`.
    pub(super) allbackups: bool,
    pub(super) default_server: ServerOpts,
    pub(super) servers: Vec<RawServer>,
    /// `stats enable|uri|auth|...`: this proxy serves HAProxy's stats page (xdplb's is
    /// `global.stats_bind`); the first `stats auth USER:PASSWORD` is kept.
    pub(super) stats: Option<StatsPage>,
    /// `acl` lines and the access rules (`tcp-request connection`, `http-request`) that use
    /// them, in order: they become the frontend's `allow` (see `access`).
    pub(super) acls: Vec<super::access::Acl>,
    pub(super) access_rules: Vec<super::access::Rule>,
    /// The line of `mode http`, when this section ends up in it (inherited from `defaults`).
    pub(super) mode_http: Option<usize>,
}

/// What a proxy's `stats` lines say.
#[derive(Debug, Clone, Default)]
pub(super) struct StatsPage {
    pub(super) line: usize,
    pub(super) auth: Option<String>,
}

/// The check settings HAProxy keeps per proxy (the request and what to expect).
#[derive(Debug, Clone, Default)]
pub(super) struct ProxyCheck {
    /// `option httpchk` is on (the last check option wins, as in HAProxy).
    pub(super) http: bool,
    /// The method and where it was set, for a note: xdplb always sends GET.
    pub(super) method: Option<(usize, String)>,
    pub(super) path: Option<String>,
    pub(super) host: Option<String>,
    pub(super) expect_status: Option<ExpectStatus>,
    pub(super) expect_string: Option<String>,
    pub(super) timeout: Option<Dur>,
    /// The first `http-check` line, for a note when `option httpchk` is off.
    pub(super) rules_line: Option<usize>,
    /// `http-check connect` / `tcp-check connect`: how the check connects.
    pub(super) connect: Option<CheckConnect>,
    /// `option ssl-hello-chk`: HAProxy checks that the server answers a TLS hello.
    pub(super) ssl_hello: bool,
}

/// `http-check connect [port N] [ssl] [sni NAME]`.
#[derive(Debug, Clone, Default)]
pub(super) struct CheckConnect {
    pub(super) line: usize,
    pub(super) port: Option<u16>,
    pub(super) ssl: bool,
    pub(super) sni: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct RawServer {
    pub(super) line: usize,
    pub(super) name: String,
    pub(super) target: Target,
    pub(super) opts: ServerOpts,
}

#[derive(Debug, Clone)]
pub(super) enum Target {
    Addr(SocketAddr),
    /// HAProxy then uses the port the client connected to.
    NoPort(IpAddr),
    /// A host name, resolved at translation (HAProxy resolves it when it starts).
    Name {
        host: String,
        port: Option<u16>,
    },
}

/// Server options as written on a `server` or `default-server` line; unset ones fall back to
/// `default-server`, then to the defaults.
#[derive(Debug, Clone, Default)]
pub(super) struct ServerOpts {
    pub(super) check: Option<bool>,
    pub(super) check_ssl: Option<bool>,
    pub(super) ssl: Option<bool>,
    pub(super) backup: Option<bool>,
    pub(super) disabled: Option<bool>,
    pub(super) verify: Option<Verify>,
    pub(super) ca_file: Option<String>,
    pub(super) crt: Option<String>,
    pub(super) sni: Option<String>,
    pub(super) check_sni: Option<String>,
    pub(super) inter: Option<Dur>,
    pub(super) fastinter: Option<Dur>,
    pub(super) downinter: Option<Dur>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
    pub(super) weight: Option<u32>,
    pub(super) error_limit: Option<u32>,
    pub(super) on_marked_down: Option<OnMarkedDown>,
    pub(super) observe: Option<Observe>,
    pub(super) initial_state: Option<InitialState>,
    pub(super) port: Option<u16>,
}

pub(super) fn either<T: Clone>(top: Option<&T>, base: Option<&T>) -> Option<T> {
    top.or(base).cloned()
}

impl ServerOpts {
    /// `top`'s options, with `self`'s where `top` sets none.
    pub(super) fn overlay(&self, top: &ServerOpts) -> ServerOpts {
        macro_rules! pick {
            ($($field:ident),*) => { ServerOpts { $($field: either(top.$field.as_ref(), self.$field.as_ref())),* } };
        }
        pick!(
            check,
            check_ssl,
            ssl,
            backup,
            disabled,
            verify,
            ca_file,
            crt,
            sni,
            check_sni,
            inter,
            fastinter,
            downinter,
            rise,
            fall,
            weight,
            error_limit,
            on_marked_down,
            observe,
            initial_state,
            port
        )
    }
}
