//! Turns the sections as written into xdplb's configuration: one frontend per bind, one
//! backend per HAProxy backend, and the per-server check settings HAProxy has folded into
//! xdplb's per-backend ones, with a note wherever the result behaves differently.

use std::net::{IpAddr, SocketAddr};

use super::{
    access,
    notes::Notes,
    raw::{based, GlobalOpts, Kind, Listen, Proxy, ProxyCheck, RawServer, ServerOpts, Target},
    ImportError,
};
use crate::config::{
    self, AdminState, BackendCfg, Balance, Bind, CheckCfg, CheckKind, ExpectStatus, FrontendCfg, ServerCfg, Verify,
};

// Assembly

pub(super) fn frontends(
    proxies: &[Proxy],
    known: &[String],
    notes: &mut Notes,
) -> Result<Vec<(FrontendCfg, Listen, usize)>, ImportError> {
    let mut out = Vec::new();
    for p in proxies.iter().filter(|p| p.kind.is_frontend()) {
        let Some((line, backend)) = frontend_target(p) else {
            notes.error(format!(
                "line {}: frontend {} has no default_backend; xdplb sends each frontend to one backend, so it is not imported and its clients would not be served",
                p.line, p.name
            ));
            continue;
        };
        if !known.contains(&backend) {
            return Err(ImportError::UnknownBackend { line, frontend: p.name.clone(), backend, known: known.to_vec() });
        }
        if p.binds.is_empty() {
            // A listen section without a bind is a backend only.
            if p.kind == Kind::Frontend {
                notes.info(format!("line {}: frontend {} has no usable bind; not imported", p.line, p.name));
            }
            continue;
        }
        if let Some(line) = p.mode_http {
            notes.warn(format!(
                "line {line}: `mode http` applies to {} {}: xdplb is layer 4 only; it forwards TCP without HTTP processing",
                p.kind.keyword(),
                p.name
            ));
        }
        let allow = access::allowlist(p, notes);
        for (i, bind) in p.binds.iter().enumerate() {
            let name = if i == 0 { p.name.clone() } else { format!("{}-{}", p.name, i + 1) };
            let f = FrontendCfg { name, bind: bind.as_str().into(), backend: backend.clone(), allow: allow.clone() };
            // HAProxy's listener on a loopback address served processes on its host; xdplb's
            // connect hook does, unless the rule says it cannot (then check-config refuses it).
            if let Some(b) = f.bind.get() {
                match config::bind_unserved(b, &config::Global::default()) {
                    None if matches!(b, Bind::Addr(a) if a.ip().is_loopback()) => notes.info(format!(
                        "line {}: bind {bind}: only processes on this host reach it; xdplb serves them with its connect hook (global.local_clients)",
                        p.line
                    )),
                    None => {}
                    Some(why) => notes.error(format!(
                        "line {}: {} {}: bind {bind}: {why}",
                        p.line,
                        p.kind.keyword(),
                        p.name
                    )),
                }
            }
            out.push((f, p.listens.get(i).copied().unwrap_or_default(), p.line));
        }
    }
    Ok(out)
}

/// Where HAProxy and xdplb serve different families on a frontend: HAProxy connects a client
/// of either family to a server of either (it is a proxy); xdplb translates no address, so a
/// client goes to a server of its own family, and `*:PORT` serves the families the backend has
/// servers of.
pub(super) fn family_notes(frontends: &[(FrontendCfg, Listen, usize)], backends: &[BackendCfg], notes: &mut Notes) {
    for (f, listen, line) in frontends {
        let Some(b) = backends.iter().find(|b| b.name == f.backend) else { continue };
        let servers: Vec<SocketAddr> = b.servers.iter().filter_map(|s| s.address.get().map(|a| a.0)).collect();
        if servers.is_empty() {
            continue;
        }
        let (has4, has6) = (servers.iter().any(SocketAddr::is_ipv4), servers.iter().any(SocketAddr::is_ipv6));
        let both = listen.v4 && listen.v6;
        for (family, other, listened, has) in [("IPv4", "IPv6", listen.v4, has4), ("IPv6", "IPv4", listen.v6, has6)] {
            if !listened || has {
                continue;
            }
            let what = format!(
                "line {line}: frontend {}: bind {}: HAProxy accepted {family} clients here and connected them to the {other} servers of backend {}; xdplb does not translate between IPv4 and IPv6, so {family} clients are not served",
                f.name, f.bind, b.name
            );
            if both {
                // HAProxy's dual-stack listener (kind's `bind :::6443` beside `*:6443`): the
                // other family is served as before.
                notes.warn(format!("{what} (add {family} servers to serve them)"));
            } else {
                notes.error(format!("{what}: nothing is; add {family} servers to the backend"));
            }
        }
        let wildcard = matches!(f.bind.get(), Some(Bind::Any(_)));
        for (family, listened, has) in [("IPv4", listen.v4, has4), ("IPv6", listen.v6, has6)] {
            if wildcard && has && !listened {
                notes.info(format!(
                    "line {line}: frontend {}: bind {}: xdplb serves {family} clients here too (every address of the attached interfaces, of each family backend {} has servers of); HAProxy did not listen for them",
                    f.name, f.bind, b.name
                ));
            }
        }
    }
}

fn frontend_target(p: &Proxy) -> Option<(usize, String)> {
    match (&p.default_backend, p.kind) {
        (Some(b), _) => Some(b.clone()),
        (None, Kind::Listen) => Some((p.line, p.name.clone())),
        _ => None,
    }
}

/// A server translated, with the check settings HAProxy would use for it.
struct Resolved {
    server: ServerCfg,
    check: CheckCfg,
}

/// Resolves a host name to an address (`ImportOptions::resolve`).
pub(super) type Resolver<'a> = Option<&'a super::Resolve<'a>>;

pub(super) fn backend(
    p: &Proxy,
    global: &GlobalOpts,
    frontends: &[FrontendCfg],
    resolve: Resolver,
    notes: &mut Notes,
) -> BackendCfg {
    let servers: Vec<Resolved> =
        p.servers.iter().filter_map(|s| resolve_server(p, s, global, frontends, resolve, notes)).collect();
    if servers.is_empty() {
        notes.error(format!(
            "line {}: backend {}: no server xdplb can use; add one before loading this configuration",
            p.line, p.name
        ));
    }
    let check = backend_check(p, &servers, global, notes);
    // HAProxy without `option redispatch` retries a refused connect on the same server; xdplb
    // moves it to the next one (in the data path, before the client sees anything): said once.
    if p.redispatch.is_none() {
        notes.info(format!(
            "backend {}: no `option redispatch`: xdplb moves a connection whose server refuses or ignores its SYN to the next server (up to `retries`, default 3); set `redispatch = false` to keep HAProxy's retry on the same server",
            p.name
        ));
    }
    BackendCfg {
        name: p.name.clone(),
        balance: p.balance.unwrap_or(Balance::Roundrobin),
        check,
        source: p.source.clone(),
        retries: p.retries.map_or(3, |(_, n)| n),
        redispatch: p.redispatch.unwrap_or(true),
        suspect_after: 3,
        allbackups: p.allbackups,
        servers: servers.into_iter().map(|r| r.server).collect(),
    }
}

fn resolve_server(
    p: &Proxy,
    s: &RawServer,
    global: &GlobalOpts,
    frontends: &[FrontendCfg],
    resolve: Resolver,
    notes: &mut Notes,
) -> Option<Resolved> {
    let opts = p.default_server.overlay(&s.opts);
    let (ip, port) = match &s.target {
        Target::Addr(a) => (a.ip(), Some(a.port())),
        Target::NoPort(ip) => (*ip, None),
        Target::Name { host, port } => (resolve_name(s, host, resolve, notes)?, *port),
    };
    let port = if let Some(port) = port {
        port
    } else {
        let Some(port) = frontend_port(&p.name, frontends) else {
            notes.error(format!(
                "line {}: server {} skipped: it has no port and its frontends do not share one; write ADDR:PORT, or the backend loses this server",
                s.line, s.name
            ));
            return None;
        };
        notes.info(format!(
            "line {}: server {} has no port; HAProxy uses the port the client connected to, so {port} is used",
            s.line, s.name
        ));
        port
    };
    let address = SocketAddr::new(ip, port);
    if let Err(why) = config::parse_server_addr(&address.to_string()) {
        notes.error(format!("line {}: server {} skipped: {why}; the backend loses this server", s.line, s.name));
        return None;
    }
    let disabled = opts.disabled.unwrap_or(false);
    if disabled {
        notes.info(format!(
            "line {}: server {} is `disabled` in HAProxy: imported in maintenance (state = \"maint\")",
            s.line, s.name
        ));
    }
    Some(Resolved {
        server: ServerCfg {
            name: s.name.clone(),
            address: address.to_string().into(),
            weight: opts.weight.unwrap_or(1),
            backup: opts.backup.unwrap_or(false),
            check: opts.check.unwrap_or(false),
            state: if disabled { AdminState::Maint } else { AdminState::Ready },
        },
        check: server_check(&p.check, &opts, global),
    })
}

/// A server's host name, resolved now: xdplb keeps addresses, not names.
fn resolve_name(s: &RawServer, host: &str, resolve: Resolver, notes: &mut Notes) -> Option<IpAddr> {
    let Some(resolve) = resolve else {
        notes.error(format!(
            "line {}: server {} skipped: {host:?} is a host name and names are not resolved (--no-resolve); write its address, or the backend loses this server",
            s.line, s.name
        ));
        return None;
    };
    let Some(ip) = resolve(host) else {
        notes.error(format!(
            "line {}: server {} skipped: {host:?} does not resolve to an address on this host; write its address, or the backend loses this server",
            s.line, s.name
        ));
        return None;
    };
    notes.warn(format!(
        "line {}: server {}: {host:?} resolved at import to {ip}; HAProxy resolves it at each start, xdplb keeps this address until the file is changed",
        s.line, s.name
    ));
    Some(ip)
}

/// The one port all frontends of `backend` listen on, if they share one.
fn frontend_port(backend: &str, frontends: &[FrontendCfg]) -> Option<u16> {
    let mut ports = frontends.iter().filter(|f| f.backend == backend).map(|f| f.bind.get().map(Bind::port));
    let first = ports.next()??;
    ports.all(|p| p == Some(first)).then_some(first)
}

/// The check HAProxy would run against one server: TLS when the server says `check-ssl` (or
/// `ssl`) or the check rules say `connect ssl`; with `option httpchk` an HTTP request on it,
/// else the handshake alone (HAProxy's L6OK).
fn server_check(c: &ProxyCheck, o: &ServerOpts, global: &GlobalOpts) -> CheckCfg {
    let d = CheckCfg::default();
    let crt = o.crt.as_deref().map(|f| based(global.crt_base.as_ref(), f));
    let connect = c.connect.clone().unwrap_or_default();
    let tls_asked = o.check_ssl.or(o.ssl).unwrap_or(false) || connect.ssl;
    // `option ssl-hello-chk` proves a TLS answer without checking a certificate: a handshake
    // with verify none is the nearest xdplb check.
    let hello_only = c.ssl_hello && !tls_asked;
    let tls = tls_asked || c.ssl_hello;
    CheckCfg {
        kind: match (c.http, tls) {
            (true, true) => CheckKind::Https,
            (true, false) => CheckKind::Http,
            (false, true) => CheckKind::Tls,
            (false, false) => CheckKind::Tcp,
        },
        inter: o.inter.unwrap_or(d.inter),
        fastinter: o.fastinter,
        downinter: o.downinter,
        rise: o.rise.unwrap_or(d.rise),
        fall: o.fall.unwrap_or(d.fall),
        timeout: c.timeout,
        path: c.path.clone().unwrap_or(d.path),
        host: c.host.clone(),
        // Without `http-check expect`, HAProxy passes 2xx and 3xx.
        expect_status: c.expect_status.unwrap_or(ExpectStatus::HAPROXY_DEFAULT),
        expect_string: c.expect_string.clone(),
        verify: if hello_only { Verify::None } else { o.verify.unwrap_or(global.verify) },
        ca_file: o.ca_file.as_deref().map(|f| based(global.ca_base.as_ref(), f)),
        sni: connect.sni.or_else(|| o.check_sni.clone()).or_else(|| o.sni.clone()),
        // HAProxy's `crt` is one PEM holding certificate and key.
        key: crt.clone(),
        crt,
        initial_state: o.initial_state.unwrap_or(d.initial_state),
        on_marked_down: o.on_marked_down.unwrap_or(d.on_marked_down),
        observe: o.observe.unwrap_or(d.observe),
        error_limit: o.error_limit.unwrap_or(d.error_limit),
        port: connect.port.or(o.port),
    }
}

/// HAProxy checks per server, xdplb per backend: the checked servers' settings, the first
/// server's where they disagree.
fn backend_check(p: &Proxy, servers: &[Resolved], global: &GlobalOpts, notes: &mut Notes) -> CheckCfg {
    let checked: Vec<&Resolved> = servers.iter().filter(|r| r.server.check).collect();
    let mut cfg = if let Some(first) = checked.first() {
        first.check.clone()
    } else {
        // Nothing is checked in HAProxy either: the servers count as UP.
        let mut c =
            servers.first().map_or_else(|| server_check(&p.check, &p.default_server, global), |r| r.check.clone());
        c.kind = CheckKind::None;
        c
    };
    if !checked.is_empty() {
        note_disagreements(p, &checked, notes);
        note_check_differences(p, &cfg, notes);
    }
    clamp_timeout(p, &mut cfg, notes);
    cfg
}

fn note_disagreements(p: &Proxy, checked: &[&Resolved], notes: &mut Notes) {
    type Same = fn(&CheckCfg, &CheckCfg) -> bool;
    let Some((first, rest)) = checked.split_first() else { return };
    let settings: [(&str, Same); 15] = [
        ("port", |a, b| a.port == b.port),
        ("check-ssl", |a, b| a.kind == b.kind),
        ("inter", |a, b| a.inter == b.inter),
        ("fastinter", |a, b| a.fastinter == b.fastinter),
        ("downinter", |a, b| a.downinter == b.downinter),
        ("rise", |a, b| a.rise == b.rise),
        ("fall", |a, b| a.fall == b.fall),
        ("verify", |a, b| a.verify == b.verify),
        ("ca-file", |a, b| a.ca_file == b.ca_file),
        ("crt", |a, b| a.crt == b.crt),
        ("sni", |a, b| a.sni == b.sni),
        ("init-state", |a, b| a.initial_state == b.initial_state),
        ("on-marked-down", |a, b| a.on_marked_down == b.on_marked_down),
        ("observe", |a, b| a.observe == b.observe),
        ("error-limit", |a, b| a.error_limit == b.error_limit),
    ];
    for (setting, same) in settings {
        if let Some(other) = rest.iter().find(|r| !same(&first.check, &r.check)) {
            notes.warn(format!(
                "line {}: backend {}: servers disagree on `{setting}` ({} and {}); xdplb has one check setting per backend, so {}'s is used",
                p.line, p.name, first.server.name, other.server.name, first.server.name
            ));
        }
    }
}

/// Where the translated check behaves differently from HAProxy's.
fn note_check_differences(p: &Proxy, cfg: &CheckCfg, notes: &mut Notes) {
    let http = matches!(cfg.kind, CheckKind::Http | CheckKind::Https);
    if let (true, Some((line, method))) = (http, &p.check.method) {
        if !method.eq_ignore_ascii_case("GET") {
            notes.info(format!("line {line}: check method {method}: xdplb checks with GET"));
        }
    }
    if let (true, Some(s), None) = (http, &cfg.expect_string, p.check.expect_status) {
        notes.info(format!(
            "line {}: backend {}: HAProxy's `http-check expect string {s}` ignores the status, so a server answering 500 with {s:?} in the body stays UP; xdplb requires status {} and the string",
            p.line, p.name, cfg.expect_status
        ));
    }
    if let Some(c) = &p.check.connect {
        notes.info(format!(
            "line {}: backend {}: `connect{}{}{}` translated: the check uses {}{}{}",
            c.line,
            p.name,
            c.port.map(|port| format!(" port {port}")).unwrap_or_default(),
            if c.ssl { " ssl" } else { "" },
            c.sni.as_deref().map(|s| format!(" sni {s}")).unwrap_or_default(),
            if c.ssl { "TLS" } else { "plain TCP" },
            c.port.map(|port| format!(" on port {port}")).unwrap_or_default(),
            c.sni.as_deref().map(|s| format!(" with SNI {s}")).unwrap_or_default(),
        ));
    }
    if let (false, Some(line)) = (p.check.http, p.check.rules_line) {
        notes.warn(format!(
            "line {line}: http-check rules have no effect without `option httpchk` (HAProxy ignores them too); tcp check used"
        ));
    }
    if p.check.ssl_hello {
        let how = if cfg.kind == CheckKind::Tls { "a TLS handshake (type = \"tls\")" } else { "a TCP connect only" };
        notes.warn(format!(
            "line {}: backend {}: `option ssl-hello-chk`: HAProxy sends a TLS hello and reads the answer; xdplb checks with {how}",
            p.line, p.name
        ));
    }
    if let Some(crt) = &cfg.crt {
        notes.info(format!(
            "line {}: backend {}: HAProxy's `crt` is one PEM with certificate and key; crt and key are both set to {}",
            p.line,
            p.name,
            crt.display()
        ));
    }
}

/// xdplb ends a check before the next is due; HAProxy lets a long `timeout check` run on.
fn clamp_timeout(p: &Proxy, cfg: &mut CheckCfg, notes: &mut Notes) {
    if let Some(t) = cfg.timeout {
        if t > cfg.inter {
            notes.warn(format!(
                "line {}: backend {}: `timeout check {t}` is longer than inter {}; xdplb ends each check before the next, so the timeout is {}",
                p.line, p.name, cfg.inter, cfg.inter
            ));
            cfg.timeout = Some(cfg.inter);
        }
    }
}
