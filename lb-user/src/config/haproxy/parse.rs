//! Reads an haproxy.cfg's directives into its sections as written (`raw`), with a note for
//! every directive xdplb does not translate.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{
    access, host,
    lex::Line,
    notes::Notes,
    raw::{
        CheckConnect, GlobalOpts, Kind, Listen, Proxy, ProxyCheck, RawServer, Section, ServerOpts, StatsPage, Target,
        OTHER_SECTIONS,
    },
    translate, Import, ImportError, ImportOptions,
};
use crate::config::{
    self, Balance, Bind, Config, Dur, ExpectStatus, Global, InitialState, Observe, OnMarkedDown, UnitError, Verify,
};

/// Reads the configuration line by line, keeping the sections as written.
pub(super) struct Parser<'a> {
    opts: &'a ImportOptions<'a>,
    pub(super) notes: Notes,
    global: GlobalOpts,
    /// The last `defaults` section: proxies after it start from it.
    defaults: Proxy,
    named_defaults: HashMap<String, Proxy>,
    proxies: Vec<Proxy>,
    section: Section,
}

impl<'a> Parser<'a> {
    pub(super) fn new(opts: &'a ImportOptions<'a>) -> Self {
        Parser {
            opts,
            notes: Notes::default(),
            global: GlobalOpts::default(),
            defaults: Proxy::default(),
            named_defaults: HashMap::new(),
            proxies: Vec::new(),
            section: Section::default(),
        }
    }

    #[expect(clippy::indexing_slicing, reason = "the lexer makes no line without a word")]
    pub(super) fn line(&mut self, line: &Line) -> Result<(), ImportError> {
        let keyword = line.words[0].as_str();
        if let Some(kind) = Kind::from_keyword(keyword) {
            return self.open_proxy(kind, line);
        }
        if keyword == "global" {
            self.enter(Section::Global);
        } else if OTHER_SECTIONS.contains(&keyword) {
            self.enter(Section::Other);
            self.notes.info(format!(
                "line {}: section `{}` not translated (nothing in it decides where flows go)",
                line.no,
                line.text()
            ));
        } else {
            self.directive(line)?;
        }
        Ok(())
    }

    fn directive(&mut self, line: &Line) -> Result<(), ImportError> {
        match self.section {
            Section::Outside => {
                self.notes.warn(format!("line {}: `{}` is outside any section; not translated", line.no, line.text()));
            }
            Section::Global => self.global.directive(line),
            Section::Other => {}
            Section::Defaults => proxy_directive(&mut self.defaults, line, &mut self.notes)?,
            Section::Proxy => {
                if let Some(p) = self.proxies.last_mut() {
                    proxy_directive(p, line, &mut self.notes)?;
                }
            }
        }
        Ok(())
    }

    /// Leaves the current section; a named `defaults` is kept for `from NAME`.
    fn enter(&mut self, next: Section) {
        if self.section == Section::Defaults && !self.defaults.name.is_empty() {
            self.named_defaults.insert(self.defaults.name.clone(), self.defaults.clone());
        }
        self.section = next;
    }

    fn open_proxy(&mut self, kind: Kind, line: &Line) -> Result<(), ImportError> {
        self.enter(if kind == Kind::Defaults { Section::Defaults } else { Section::Proxy });
        let header = Header::parse(line);
        let name = match header.name {
            Some(n) => n.to_owned(),
            None if kind == Kind::Defaults => String::new(),
            None => return Err(ImportError::MissingSectionName { line: line.no, keyword: kind.keyword().into() }),
        };
        let base = self.base_for(kind, header.from, line);
        let mut p = base.inherit(kind, name, line.no);
        // The old `listen NAME ADDR:PORT` form.
        for addrs in header.addrs {
            if kind.is_frontend() {
                p.add_binds(addrs, line, &mut self.notes);
            } else {
                self.notes.warn(format!("line {}: `{addrs}` after the name not translated", line.no));
            }
        }
        if kind == Kind::Defaults {
            self.defaults = p;
            return Ok(());
        }
        self.check_unique(&p)?;
        self.proxies.push(p);
        Ok(())
    }

    /// What a new section starts from: `from NAME`, else the last `defaults` (a new `defaults`
    /// starts afresh, as in HAProxy).
    fn base_for(&mut self, kind: Kind, from: Option<&str>, line: &Line) -> Proxy {
        if let Some(name) = from {
            if let Some(d) = self.named_defaults.get(name) {
                return d.clone();
            }
            self.notes.warn(format!("line {}: no defaults section named {name:?}; `from {name}` ignored", line.no));
        }
        if kind == Kind::Defaults {
            Proxy::default()
        } else {
            self.defaults.clone()
        }
    }

    fn check_unique(&self, p: &Proxy) -> Result<(), ImportError> {
        let clash = self.proxies.iter().find(|q| {
            q.name == p.name
                && ((q.kind.is_frontend() && p.kind.is_frontend()) || (q.kind.is_backend() && p.kind.is_backend()))
        });
        match clash {
            Some(q) => Err(ImportError::DuplicateSection {
                line: p.line,
                kind: p.kind.keyword(),
                name: p.name.clone(),
                first: q.line,
            }),
            None => Ok(()),
        }
    }

    pub(super) fn finish(mut self) -> Result<Import, ImportError> {
        let mut global = Global::default();
        self.take_stats_pages(&mut global);
        let known: Vec<String> = self.proxies.iter().filter(|p| p.kind.is_backend()).map(|p| p.name.clone()).collect();
        let listened = translate::frontends(&self.proxies, &known, &mut self.notes)?;
        let frontends: Vec<config::FrontendCfg> = listened.iter().map(|(f, _, _)| f.clone()).collect();
        for p in self.proxies.iter().filter(|p| p.kind == Kind::Backend) {
            access::backend_rules(p, &mut self.notes);
        }
        let mut backends = Vec::new();
        for p in self.proxies.iter().filter(|p| p.kind.is_backend()) {
            backends.push(translate::backend(p, &self.global, &frontends, self.opts.resolve, &mut self.notes));
        }
        if frontends.is_empty() {
            return Err(ImportError::NothingToImport { notes: self.notes.sorted() });
        }
        translate::family_notes(&listened, &backends, &mut self.notes);
        let mut config = Config { global, frontends, backends };
        host::fill_in(&mut config, &self.opts.interfaces, &mut self.notes);
        Ok(Import { config, notes: self.notes.sorted() })
    }

    /// A proxy that serves HAProxy's stats page (and no servers) becomes xdplb's status page:
    /// its first bind is `global.stats_bind`, its `stats auth` is `global.stats_auth`.
    fn take_stats_pages(&mut self, global: &mut Global) {
        let mut taken = false;
        let notes = &mut self.notes;
        self.proxies.retain(|p| {
            let Some(page) = p.stats.as_ref().filter(|_| p.servers.is_empty() && p.default_backend.is_none()) else {
                return true;
            };
            if taken {
                notes.info(format!(
                    "line {}: {} {}: a second stats page; not translated (xdplb serves one, global.stats_bind)",
                    page.line,
                    p.kind.keyword(),
                    p.name
                ));
                return false;
            }
            taken = true;
            let bind = p.binds.first().and_then(|b| b.parse::<Bind>().ok());
            match bind {
                Some(Bind::Any(port)) => global.stats_bind = std::net::SocketAddr::from(([0, 0, 0, 0], port)),
                Some(Bind::Addr(a)) => global.stats_bind = a,
                None => {}
            }
            let auth = page.auth.as_deref().and_then(|a| a.split_once(':'));
            if let Some((user, password)) = auth.filter(|(u, p)| !u.is_empty() && !p.is_empty()) {
                global.stats_auth = Some(config::StatsAuth { user: user.into(), password: password.into() });
            }
            if global.stats_auth.is_none() && !global.stats_bind.ip().is_loopback() {
                // HAProxy served it to anyone who reached it; so will xdplb, said and marked.
                global.stats_unauthenticated = true;
                notes.warn(format!(
                    "line {}: {} {}: the stats page has no `stats auth`: xdplb's page on {} is open to anyone who reaches it, as HAProxy's was (global.stats_unauthenticated = true); set global.stats_auth to close it",
                    p.line,
                    p.kind.keyword(),
                    p.name,
                    global.stats_bind
                ));
            }
            notes.info(format!(
                "line {}: {} {}: section skipped; HAProxy's stats page becomes xdplb's status page, /metrics and /status.json on {} (global.stats_bind){}",
                p.line,
                p.kind.keyword(),
                p.name,
                global.stats_bind,
                if global.stats_auth.is_some() { ", with its `stats auth` (global.stats_auth)" } else { "" }
            ));
            false
        });
    }
}

/// The words after `frontend`/`backend`/`listen`/`defaults`: a name, `from DEFAULTS`, and (old
/// syntax) bind addresses.
#[derive(Default)]
struct Header<'a> {
    name: Option<&'a str>,
    from: Option<&'a str>,
    addrs: Vec<&'a str>,
}

impl<'a> Header<'a> {
    fn parse(line: &'a Line) -> Header<'a> {
        let mut h = Header::default();
        let mut words = line.args(1).iter().map(String::as_str);
        while let Some(w) = words.next() {
            if w == "from" {
                h.from = words.next();
            } else if h.name.is_none() {
                h.name = Some(w);
            } else {
                h.addrs.push(w);
            }
        }
        h
    }
}

impl Proxy {
    fn inherit(&self, kind: Kind, name: String, line: usize) -> Proxy {
        let mut p = self.clone();
        p.kind = kind;
        p.name = name;
        p.line = line;
        p.binds.clear();
        p.listens.clear();
        p.servers.clear();
        // Only a section's own `stats` lines make it a stats page.
        p.stats = None;
        // A listen section serves its own servers unless it says otherwise.
        if kind == Kind::Listen {
            p.default_backend = None;
        }
        p
    }

    fn label(&self) -> String {
        if self.name.is_empty() {
            self.kind.keyword().into()
        } else {
            format!("{} {}", self.kind.keyword(), self.name)
        }
    }

    /// `bind ADDR[,ADDR...] [OPTIONS]`: each address becomes a frontend of its own; one that
    /// comes out as an earlier one of the section (`bind *:6443` and `bind :::6443`, HAProxy's
    /// two sockets for both families) is folded into it: xdplb's `*:PORT` covers both.
    fn add_binds(&mut self, addrs: &str, line: &Line, notes: &mut Notes) {
        let opts = line.args(2);
        let v6only = opts.iter().any(|o| o == "v6only");
        for a in addrs.split(',') {
            match bind_address(a, v6only) {
                Ok((b, listen)) => {
                    if let Some(i) = self.binds.iter().position(|x| *x == b) {
                        notes.info(format!(
                            "line {}: bind {a:?} folded into {b:?}, an earlier bind of {} {}: xdplb's {b:?} serves both IPv4 and IPv6 (of the families its backend has servers of)",
                            line.no,
                            self.kind.keyword(),
                            self.name
                        ));
                        if let Some(l) = self.listens.get_mut(i) {
                            l.v4 |= listen.v4;
                            l.v6 |= listen.v6;
                        }
                        continue;
                    }
                    if v6only && listen.v6 && b.starts_with("*:") {
                        notes.info(format!(
                            "line {}: bind {a:?} v6only: xdplb's {b:?} cannot be IPv6 only; it serves IPv4 clients too when the backend has IPv4 servers",
                            line.no
                        ));
                    }
                    self.binds.push(b);
                    self.listens.push(listen);
                }
                Err(why) => notes.error(format!(
                    "line {}: bind {a:?} skipped: {why}; clients connecting there would not be served",
                    line.no
                )),
            }
        }
    }

    fn set_check_timeout(&mut self, line: &Line, notes: &mut Notes) {
        match line.word(2).map(str::parse::<Dur>) {
            Some(Ok(d)) => self.check.timeout = Some(d),
            Some(Err(why)) => notes.warn(format!("line {}: `timeout check`: {why}; not translated", line.no)),
            None => notes.warn(line.not_translated()),
        }
    }

    /// `source ADDR[:PORT] [usesrc ...]`: only the address has an xdplb equivalent.
    fn set_source(&mut self, line: &Line, notes: &mut Notes) {
        let addr = line.word(1).unwrap_or_default();
        let addr = addr.strip_prefix("ipv4@").or_else(|| addr.strip_prefix("ipv6@")).unwrap_or(addr);
        let Some((ip, port)) = address_and_port(addr).filter(|(ip, _)| !ip.is_empty()).and_then(|(ip, port)| {
            // An IPv6 source without a port may be written bare (`source 2001:db8::10`).
            let ip = ip.parse::<IpAddr>().ok().or_else(|| port.and(addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6)))?;
            Some((ip, if addr.parse::<Ipv6Addr>().is_ok() { None } else { port }))
        }) else {
            notes.warn(format!("line {}: `{}`: not a source address; not translated", line.no, line.text()));
            return;
        };
        // 0.0.0.0 means "the kernel's choice", which is also xdplb's default.
        if !ip.is_unspecified() {
            self.source = vec![ip];
        }
        if port.is_some_and(|p| !p.is_empty() && p != "0") || line.words.len() > 2 {
            notes.warn(format!(
                "line {}: `{}`: only the address is translated (xdplb takes source ports from global.nat_ports)",
                line.no,
                line.text()
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Proxy directives

/// Directives that do not change which server gets a flow (logging, limits, stats, timeouts
/// that xdplb keeps globally).
const SILENT_DIRECTIVES: &[&str] = &[
    "log",
    "log-format",
    "log-format-sd",
    "error-log-format",
    "log-tag",
    "log-steps",
    "maxconn",
    "fullconn",
    "backlog",
    "description",
    "id",
    "stats",
    "monitor-uri",
    "monitor",
    "errorfile",
    "errorfiles",
    "email-alert",
    "unique-id-format",
    "unique-id-header",
    "enabled",
    "grace",
    "load-server-state-from-file",
    "server-state-file-name",
    "hash-type",
    "contimeout",
    "clitimeout",
    "srvtimeout",
];

/// `option`s about logging, keep-alive and kernel splicing: nothing to translate, nothing lost.
const SILENT_OPTIONS: &[&str] = &[
    "tcplog",
    "httplog",
    "dontlognull",
    "dontlog-normal",
    "log-health-checks",
    "logasap",
    "log-separate-errors",
    "tcpka",
    "clitcpka",
    "srvtcpka",
    "splice-auto",
    "splice-request",
    "splice-response",
    "socket-stats",
    "contstats",
    "independent-streams",
    "http-keep-alive",
    "http-server-close",
    "httpclose",
    "nolinger",
];

/// Protocol checks xdplb replaces with a TCP connect.
const CONNECT_ONLY_CHECKS: &[&str] =
    &["mysql-check", "pgsql-check", "redis-check", "smtpchk", "ldap-check", "spop-check", "external-check"];

#[expect(clippy::match_same_arms, reason = "one arm per directive: the match reads as the table of what is accepted")]
#[expect(clippy::indexing_slicing, reason = "the lexer makes no line without a word")]
fn proxy_directive(p: &mut Proxy, line: &Line, notes: &mut Notes) -> Result<(), ImportError> {
    if let Some(note) = misplaced(p, line) {
        notes.warn(note);
        return Ok(());
    }
    match (line.words[0].as_str(), line.word(1)) {
        ("mode", Some("tcp")) => p.mode_http = None,
        // Said only for the sections that are imported (see `translate`): a stats page's, or
        // a `defaults`' that every section overrides, changes nothing.
        ("mode", Some("http")) => p.mode_http = Some(line.no),
        ("bind", Some(addrs)) => {
            p.add_binds(addrs, line, notes);
            bind_options(line, notes);
        }
        ("acl", Some(_)) => p.acls.push(access::Acl::parse(line)),
        ("tcp-request" | "http-request", Some(_)) => {
            if let Some(rule) = access::Rule::parse(line) {
                p.access_rules.push(rule);
            } else if line.words[0] == "http-request" {
                notes.warn(format!(
                    "line {}: `{}` not translated: xdplb forwards TCP and does not rewrite HTTP requests",
                    line.no,
                    line.text()
                ));
            } else if line.word(1) != Some("inspect-delay") {
                notes.warn(line.not_translated());
            }
        }
        ("default_backend", Some(b)) => p.default_backend = Some((line.no, b.to_owned())),
        // static-rr is roundrobin without weight changes at run time: the same in xdplb.
        ("balance", Some("roundrobin" | "static-rr")) => p.balance = Some(Balance::Roundrobin),
        ("balance", Some("leastconn")) => p.balance = Some(Balance::Leastconn),
        ("balance", Some("source")) => p.balance = Some(Balance::Source),
        ("balance", Some(_)) => {
            notes.warn(format!(
                "line {}: `{}`: xdplb balances by roundrobin, leastconn or source (layer 4); roundrobin used",
                line.no,
                line.text()
            ));
        }
        ("option", Some("allbackups")) => p.allbackups = true,
        ("no", Some("option")) if line.word(2) == Some("allbackups") => p.allbackups = false,
        ("option", Some("redispatch")) => p.redispatch = Some(true),
        ("no", Some("option")) if line.word(2) == Some("redispatch") => p.redispatch = Some(false),
        ("retries", Some(n)) => match n.parse::<u8>() {
            Ok(n) => p.retries = Some((line.no, n)),
            Err(_) => {
                notes.warn(format!("line {}: `{}`: not a number of retries; not translated", line.no, line.text()));
            }
        },
        ("option", Some(_)) => proxy_option(p, line, notes),
        ("no", Some("log")) => {}
        ("no", Some("option")) if line.word(2).is_some_and(|o| SILENT_OPTIONS.contains(&o)) => {}
        ("http-check", _) => http_check(&mut p.check, line, notes),
        ("tcp-check", Some("connect")) => check_connect(&mut p.check, line, notes),
        ("tcp-check", _) => notes.warn(format!(
            "line {}: `{}` not translated: xdplb's tcp check is a connect (and TLS handshake with ssl) only, weaker than this rule",
            line.no,
            line.text()
        )),
        ("timeout", Some("check")) => p.set_check_timeout(line, notes),
        // Connection timeouts are global in xdplb (idle_timeout, syn_timeout).
        ("timeout", _) => {}
        ("default-server", _) => {
            let opts = server_options(line.args(1), line, "default-server", notes);
            p.default_server = p.default_server.overlay(&opts);
        }
        ("server", _) => add_server(p, line, notes)?,
        ("source", Some(_)) => p.set_source(line, notes),
        ("stats", Some(what)) => {
            let page = p.stats.get_or_insert(StatsPage { line: line.no, auth: None });
            if what == "auth" && page.auth.is_none() {
                page.auth = line.word(2).map(str::to_owned);
            }
        }
        ("use_backend" | "use-server", _) => notes.error(format!(
            "line {}: `{}` not translated: xdplb sends every flow of a frontend to its default_backend, so flows this rule routes elsewhere would reach the wrong servers",
            line.no,
            line.text()
        )),
        (k, _) if SILENT_DIRECTIVES.contains(&k) => {}
        _ => notes.warn(line.not_translated()),
    }
    Ok(())
}

/// A directive HAProxy accepts only on the other side (a `server` in a frontend, a `bind` in a
/// backend) would otherwise be translated into the wrong place.
#[expect(clippy::indexing_slicing, reason = "the lexer makes no line without a word")]
fn misplaced(p: &Proxy, line: &Line) -> Option<String> {
    let w = line.words[0].as_str();
    let backend_side = matches!(w, "server" | "default-server" | "balance" | "http-check" | "tcp-check" | "source")
        || (w == "timeout" && line.word(1) == Some("check"));
    let frontend_side = matches!(w, "bind" | "default_backend" | "use_backend");
    let wrong = match p.kind {
        Kind::Frontend => backend_side,
        Kind::Backend => frontend_side,
        Kind::Defaults => matches!(w, "server" | "bind" | "use_backend"),
        Kind::Listen => false,
    };
    wrong.then(|| format!("line {}: `{}` has no effect in {}; not translated", line.no, line.text(), p.label()))
}

fn proxy_option(p: &mut Proxy, line: &Line, notes: &mut Notes) {
    match line.word(1).unwrap_or_default() {
        "httpchk" => option_httpchk(&mut p.check, line, notes),
        "tcp-check" => p.check.http = false,
        "ssl-hello-chk" => {
            p.check.http = false;
            p.check.ssl_hello = true;
        }
        o if CONNECT_ONLY_CHECKS.contains(&o) => {
            p.check.http = false;
            notes.warn(format!(
                "line {}: `option {o}`: xdplb's tcp check is a connect only: a server that accepts connections but fails the protocol stays UP",
                line.no
            ));
        }
        o if SILENT_OPTIONS.contains(&o) => {}
        _ => notes.warn(line.not_translated()),
    }
}

/// `option httpchk [[METHOD] URI [VERSION]]`; the version may carry headers the old way
/// (`HTTP/1.1\r\nHost:\ etcd.local`).
fn option_httpchk(c: &mut ProxyCheck, line: &Line, notes: &mut Notes) {
    c.http = true;
    let (method, uri, version) = match line.args(2) {
        [] => ("OPTIONS", None, None),
        [uri] => ("OPTIONS", Some(uri), None),
        [method, uri] => (method.as_str(), Some(uri), None),
        [method, uri, version, ..] => (method.as_str(), Some(uri), Some(version)),
    };
    c.method = Some((line.no, method.to_owned()));
    c.path = uri.cloned();
    for header in version.map_or("", String::as_str).split("\r\n").skip(1).filter(|h| !h.is_empty()) {
        match header.split_once(':') {
            Some((name, value)) => check_header(c, name, value, line, notes),
            None => notes.warn(format!("line {}: check header {header:?} not translated", line.no)),
        }
    }
}

fn check_header(c: &mut ProxyCheck, name: &str, value: &str, line: &Line, notes: &mut Notes) {
    if name.trim().eq_ignore_ascii_case("host") {
        c.host = Some(value.trim().to_owned());
    } else {
        notes.warn(format!(
            "line {}: check header `{}` not translated: xdplb sends Host, User-Agent, Accept and Connection only",
            line.no,
            name.trim()
        ));
    }
}

fn http_check(c: &mut ProxyCheck, line: &Line, notes: &mut Notes) {
    c.rules_line.get_or_insert(line.no);
    match line.word(1) {
        Some("send") => http_check_send(c, line, notes),
        Some("expect") => http_check_expect(c, line, notes),
        Some("connect") => check_connect(c, line, notes),
        _ => notes.warn(line.not_translated()),
    }
}

/// `http-check connect [port N] [ssl] [sni NAME] ...` (and `tcp-check connect`): where and how
/// the check connects. Dropping `ssl` would send plain HTTP to a TLS port and take every server
/// DOWN, so what is not translated here is an error.
fn check_connect(c: &mut ProxyCheck, line: &Line, notes: &mut Notes) {
    if let Some(first) = &c.connect {
        notes.warn(format!(
            "line {}: a second check sequence (the first `connect` is at line {}): xdplb runs one connect and one request per check, so the last `connect`, `send` and `expect` are used and the others are not checked",
            line.no, first.line
        ));
    }
    let mut connect = CheckConnect { line: line.no, ..CheckConnect::default() };
    let mut args = line.args(2).iter().map(String::as_str);
    while let Some(key) = args.next() {
        match key {
            "ssl" => connect.ssl = true,
            "port" => match args.next().and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0) {
                Some(port) => connect.port = Some(port),
                None => {
                    notes.error(format!(
                        "line {}: `{}`: the port is not a number; the check would connect to the server's own port",
                        line.no,
                        line.text()
                    ));
                }
            },
            "sni" => match args.next().map(literal_sni) {
                Some(Ok(name)) => connect.sni = Some(name),
                Some(Err(why)) => notes.warn(format!("line {}: `connect sni`: {why}", line.no)),
                None => notes.warn(format!("line {}: `connect sni` has no name; not translated", line.no)),
            },
            // Tuning with no effect on what the check proves.
            "linger" | "default" => {}
            "alpn" | "comment" => {
                args.next();
            }
            other => {
                notes.error(format!(
                    "line {}: `{}`: `{other}` not translated; the check would not connect as HAProxy's does, and could mark servers DOWN (or UP) wrongly",
                    line.no,
                    line.text()
                ));
                break;
            }
        }
    }
    c.connect = Some(connect);
}

/// `http-check send meth M uri U [ver V] [hdr NAME VALUE]...`
fn http_check_send(c: &mut ProxyCheck, line: &Line, notes: &mut Notes) {
    let mut args = line.args(2).iter().map(String::as_str);
    while let Some(key) = args.next() {
        match (key, args.next()) {
            ("meth", Some(m)) => c.method = Some((line.no, m.to_owned())),
            ("uri", Some(u)) => c.path = Some(u.to_owned()),
            // xdplb always speaks HTTP/1.1.
            ("ver", Some(_)) => {}
            ("hdr", Some(name)) => match args.next() {
                Some(value) => check_header(c, name, value, line, notes),
                None => notes.warn(format!("line {}: `hdr {name}` has no value; not translated", line.no)),
            },
            (key, _) => {
                notes.warn(format!("line {}: `http-check send` from `{key}` on not translated", line.no));
                break;
            }
        }
    }
}

/// Parameters before the matcher of `http-check expect`; the `*-status` ones change what a
/// result means, which xdplb does not do.
const EXPECT_PARAMS: &[&str] =
    &["min-recv", "comment", "on-success", "on-error", "status-code", "ok-status", "error-status", "tout-status"];

/// `bind` options: TLS termination and PROXY-protocol acceptance change what the servers
/// receive; the rest is socket tuning.
fn bind_options(line: &Line, notes: &mut Notes) {
    // The families (`v4v6`, `v6only`) are the address's translation's (`bind_address`).
    let opts: Vec<&String> = line.args(2).iter().filter(|o| *o != "v4v6" && *o != "v6only").collect();
    if opts.is_empty() {
        return;
    }
    if opts.iter().any(|o| *o == "ssl" || *o == "crt") {
        notes.error(format!(
            "line {}: `bind ... {}`: HAProxy terminates TLS here and sends plain TCP to the servers; xdplb forwards the client's TLS unchanged, so servers expecting plain traffic would fail every connection (terminate TLS on the servers, or keep a TLS proxy)",
            line.no,
            opts.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(" ")
        ));
    } else if opts.iter().any(|o| *o == "accept-proxy") {
        notes.error(format!(
            "line {}: `bind ... accept-proxy`: the PROXY header clients send would reach the servers unread; configure the servers to accept it, or drop it upstream",
            line.no
        ));
    } else {
        notes.warn(format!(
            "line {}: bind options `{}` not translated",
            line.no,
            opts.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(" ")
        ));
    }
}

/// `http-check expect [PARAMS] [!] MATCHER PATTERN`
fn http_check_expect(c: &mut ProxyCheck, line: &Line, notes: &mut Notes) {
    let args = line.args(2);
    let mut i = 0;
    let mut negated = false;
    while let Some(word) = args.get(i).map(String::as_str) {
        if word == "!" {
            negated = true;
            i += 1;
        } else if EXPECT_PARAMS.contains(&word) {
            if word.ends_with("-status") {
                notes.warn(format!("line {}: `http-check expect {word}` not translated", line.no));
            }
            i += 2;
        } else {
            break;
        }
    }
    let matcher = args.get(i).map(String::as_str);
    let pattern = args.get(i + 1);
    match (negated, matcher, pattern) {
        (true, _, _) => notes.warn(format!(
            "line {}: `{}`: negated expects are not supported; not translated",
            line.no,
            line.text()
        )),
        (false, Some("status"), Some(p)) => expect_status(c, p, line, notes),
        (false, Some("string"), Some(s)) => c.expect_string = Some(s.clone()),
        (false, Some("rstring" | "rstatus"), _) => notes.warn(format!(
            "line {}: `{}`: xdplb does not support regular expressions; not translated",
            line.no,
            line.text()
        )),
        _ => notes.warn(line.not_translated()),
    }
}

/// A status or a range (`200`, `200-399`) is translated as is; of a list (`200,204`) the
/// first is used.
fn expect_status(c: &mut ProxyCheck, pattern: &str, line: &Line, notes: &mut Notes) {
    let first = pattern.split(',').next().unwrap_or_default();
    match first.parse::<ExpectStatus>() {
        Ok(status) => {
            c.expect_status = Some(status);
            if first != pattern {
                notes.warn(format!(
                    "line {}: `expect status {pattern}`: xdplb expects one status or range; {status} used, so servers answering the others go DOWN",
                    line.no
                ));
            }
        }
        Err(_) => notes.warn(format!("line {}: `expect status {pattern}`: not a status; not translated", line.no)),
    }
}

// ---------------------------------------------------------------------------------------------
// Servers

fn add_server(p: &mut Proxy, line: &Line, notes: &mut Notes) -> Result<(), ImportError> {
    let name = line.word(1).unwrap_or("NAME");
    let Some(addr) = line.word(2) else {
        return Err(ImportError::ServerWithoutAddress { line: line.no, name: name.to_owned() });
    };
    let opts = server_options(line.args(3), line, &format!("server {name}"), notes);
    match server_address(addr) {
        Ok(target) => p.servers.push(RawServer { line: line.no, name: name.to_owned(), target, opts }),
        Err(why) => {
            notes.error(format!("line {}: server {name} skipped: {why}; the backend loses this server", line.no));
        }
    }
    Ok(())
}

/// Why a value on a `bind`, `server` or server-option line is not translated; said in its note.
#[derive(Debug, thiserror::Error)]
pub(super) enum Untranslatable {
    #[error("{0:?} is not an address of the family its prefix asks for")]
    Family(String),
    #[error("{0:?} is neither an IP address nor a host name")]
    ServerName(String),
    #[error("port offset {0:?}: xdplb needs a fixed port")]
    PortOffset(String),
    #[error("not a TCP address (IPv4 or IPv6); xdplb listens on TCP only")]
    NotTcp,
    #[error("no port; write ADDR:PORT")]
    NoPort,
    #[error("port range {0}: xdplb binds one port per frontend; write one bind per port")]
    PortRange(String),
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    BindHost(String),
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("{0:?} is not a port")]
    NotAPort(String),
    #[error("xdplb knows only {}", .0.join(", "))]
    KnownOnly(Vec<&'static str>),
    #[error("an expression, not a literal name: set sni = \"NAME\" in the backend's check by hand")]
    SniExpression,
    #[error(transparent)]
    Unit(#[from] UnitError),
}

/// The family an address prefix asks for: `ipv4@`/`tcp4@` IPv4, `ipv6@`/`tcp6@` IPv6, `tcp@`
/// either; the rest of the text. `None` for another kind of socket (`unix@`, `udp@`, `fd@`...).
fn family_prefix(s: &str) -> Option<(Option<bool>, &str)> {
    for (prefix, v6) in
        [("ipv4@", Some(false)), ("tcp4@", Some(false)), ("ipv6@", Some(true)), ("tcp6@", Some(true)), ("tcp@", None)]
    {
        if let Some(rest) = s.strip_prefix(prefix) {
            return Some((v6, rest));
        }
    }
    (!s.contains('@') && !s.starts_with('/')).then_some((None, s))
}

/// HAProxy's `ADDR:PORT`: `[IPv6]:PORT` in brackets, or the last colon separates the port
/// (`2001:db8::10:6443`, `:::6443`); `ADDR` alone has no port. `None` for an unclosed bracket.
fn address_and_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            a => Some((host, Some(a.strip_prefix(':')?))),
        };
    }
    Some(s.rsplit_once(':').map_or((s, None), |(h, p)| (h, Some(p))))
}

/// `IPv4:PORT`, `IPv6:PORT` (`[IPv6]:PORT`), a bare address, or a host name (resolved at
/// translation), with HAProxy's family prefixes.
fn server_address(s: &str) -> Result<Target, Untranslatable> {
    let (family, rest) = family_prefix(s).ok_or_else(|| Untranslatable::ServerName(s.into()))?;
    let (host, port) = address_and_port(rest).ok_or_else(|| Untranslatable::ServerName(s.into()))?;
    let Ok(ip) = host.parse::<IpAddr>() else {
        let name_like = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !name_like {
            return Err(Untranslatable::ServerName(host.into()));
        }
        let port = match port {
            None | Some("") => None,
            Some(p) if p.starts_with(['+', '-']) => return Err(Untranslatable::PortOffset(p.into())),
            Some(p) => {
                Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| Untranslatable::NotAPort(p.into()))?)
            }
        };
        return Ok(Target::Name { host: host.into(), port });
    };
    if family.is_some_and(|v6| v6 != ip.is_ipv6()) {
        return Err(Untranslatable::Family(s.into()));
    }
    match port {
        None | Some("") => Ok(Target::NoPort(ip)),
        Some(p) if p.starts_with(['+', '-']) => Err(Untranslatable::PortOffset(p.into())),
        Some(p) if ip.is_ipv6() => Ok(Target::Addr(config::parse_server_addr(&format!("[{ip}]:{p}"))?)),
        Some(p) => Ok(Target::Addr(config::parse_server_addr(&format!("{ip}:{p}"))?)),
    }
}

/// A bind address the way xdplb writes it, `*:PORT` for every address (both families),
/// `IPv4:PORT` or `[IPv6]:PORT`, and the families HAProxy accepted there: `*`, `0.0.0.0` and
/// an empty address are IPv4's any; `::` (also `ipv6@:PORT`) IPv6's, which takes IPv4 too on
/// Linux (`net.ipv6.bindv6only=0`; `v4v6` says so) unless `v6only`.
fn bind_address(s: &str, v6only: bool) -> Result<(String, Listen), Untranslatable> {
    let (family, rest) = family_prefix(s).ok_or(Untranslatable::NotTcp)?;
    let (host, port) = address_and_port(rest).ok_or_else(|| Untranslatable::BindHost(rest.into()))?;
    let port = port.ok_or(Untranslatable::NoPort)?;
    if port.contains('-') {
        return Err(Untranslatable::PortRange(port.into()));
    }
    let any6 = Listen { v4: !v6only, v6: true };
    let (text, listen) = match (host, family) {
        ("" | "*", Some(true)) => ("*".to_owned(), any6),
        ("" | "*" | "0.0.0.0", Some(false) | None) => ("*".to_owned(), Listen { v4: true, v6: false }),
        (h, _) => match h.parse::<IpAddr>() {
            Ok(ip) if family.is_some_and(|v6| v6 != ip.is_ipv6()) => return Err(Untranslatable::Family(s.into())),
            Ok(IpAddr::V6(ip)) if ip.is_unspecified() => ("*".to_owned(), any6),
            Ok(IpAddr::V6(ip)) => (format!("[{ip}]"), Listen { v4: false, v6: true }),
            Ok(IpAddr::V4(ip)) if ip == Ipv4Addr::UNSPECIFIED => ("*".to_owned(), Listen { v4: true, v6: false }),
            Ok(IpAddr::V4(ip)) => (ip.to_string(), Listen { v4: true, v6: false }),
            Err(_) => return Err(Untranslatable::BindHost(h.into())),
        },
    };
    let bind = format!("{text}:{port}");
    bind.parse::<Bind>()?;
    Ok((bind, listen))
}

/// How a server option was taken: the words it used, and whether xdplb has it.
enum Opt {
    Done(usize),
    Silent(usize),
    Untranslated(usize),
    Note(usize, String),
    /// Dropping it loses traffic: an error note.
    Error(usize, String),
    Unknown,
}

/// Server options (after a server's address, or on `default-server`). What xdplb has no
/// equivalent for is gathered into one note per line.
#[expect(clippy::indexing_slicing, reason = "`i` stays below `words.len()`, the loop's condition")]
fn server_options(words: &[String], line: &Line, who: &str, notes: &mut Notes) -> ServerOpts {
    let mut opts = ServerOpts::default();
    let mut untranslated = Vec::new();
    let mut i = 0;
    while let Some(kw) = words.get(i).map(String::as_str) {
        let arg = words.get(i + 1).map(String::as_str);
        let used = match server_option(&mut opts, kw, arg) {
            Opt::Done(n) | Opt::Silent(n) => n,
            Opt::Untranslated(n) => {
                untranslated.push(format!("`{}`", words[i..(i + n).min(words.len())].join(" ")));
                n
            }
            Opt::Note(n, why) => {
                notes.warn(format!("line {}: {who}: {why}", line.no));
                n
            }
            Opt::Error(n, why) => {
                notes.error(format!("line {}: {who}: {why}", line.no));
                n
            }
            Opt::Unknown => {
                // Its arity is unknown, so the words after it cannot be read reliably.
                notes.warn(format!(
                    "line {}: {who}: unknown option `{kw}`; `{}` not translated",
                    line.no,
                    words[i..].join(" ")
                ));
                break;
            }
        };
        i += used;
    }
    if !untranslated.is_empty() {
        notes.warn(format!("line {}: {who}: {} not translated", line.no, untranslated.join(", ")));
    }
    opts
}

fn server_option(o: &mut ServerOpts, kw: &str, arg: Option<&str>) -> Opt {
    if let Some(done) = server_flag(o, kw) {
        return done;
    }
    let takes_value = [TRANSLATED_VALUED, SILENT_VALUED, NOTED_VALUED].iter().any(|l| l.contains(&kw));
    match arg {
        _ if !takes_value => Opt::Unknown,
        None => Opt::Note(1, format!("`{kw}` needs a value; ignored")),
        Some(v) => server_value(o, kw, v),
    }
}

/// Flags that change nothing xdplb does (TLS versions, session reuse, stickiness).
const SILENT_FLAGS: &[&str] = &[
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
    "force-sslv3",
    "force-tlsv10",
    "force-tlsv11",
    "force-tlsv12",
    "force-tlsv13",
    "no-tls-tickets",
    "tls-tickets",
    "ssl-reuse",
    "no-ssl-reuse",
    "allow-0rtt",
    "no-agent-check",
    "no-send-proxy",
    "no-send-proxy-v2",
    "no-verifyhost",
    "non-stick",
    "stick",
    "no-tfo",
    "check-reuse-pool",
    "no-check-reuse-pool",
];

/// Flags with an effect xdplb does not have.
const NOTED_FLAGS: &[&str] = &[
    "agent-check",
    "send-proxy",
    "send-proxy-v2",
    "send-proxy-v2-ssl",
    "send-proxy-v2-ssl-cn",
    "check-send-proxy",
    "check-via-socks4",
    "tfo",
];

const TRANSLATED_VALUED: &[&str] = &[
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "weight",
    "error-limit",
    "verify",
    "ca-file",
    "crt",
    "sni",
    "check-sni",
    "on-marked-down",
    "observe",
    "init-state",
    "port",
];

/// Valued options that change nothing xdplb does (ids, DNS for names xdplb refuses anyway,
/// connection pools, TLS tuning).
const SILENT_VALUED: &[&str] = &[
    "maxqueue",
    "minconn",
    "id",
    "init-addr",
    "resolvers",
    "resolve-prefer",
    "resolve-net",
    "resolve-opts",
    "pool-max-conn",
    "pool-purge-delay",
    "pool-low-conn",
    "pool-conn-name",
    "max-reuse",
    "log-proto",
    "guid",
    "shard",
    "hash-key",
    "alpn",
    "npn",
    "ciphers",
    "ciphersuites",
    "ssl-min-ver",
    "ssl-max-ver",
    "curves",
    "sigalgs",
    "client-sigalgs",
    "log-bufsize",
];

/// Valued options with an effect xdplb does not have.
const NOTED_VALUED: &[&str] = &[
    "maxconn",
    "slowstart",
    "addr",
    "agent-port",
    "agent-inter",
    "agent-addr",
    "agent-send",
    "track",
    "cookie",
    "redir",
    "source",
    "usesrc",
    "namespace",
    "proto",
    "ws",
    "socks4",
    "check-proto",
    "check-alpn",
    "proxy-v2-options",
    "set-proxy-v2-tlv-fmt",
    "on-error",
    "on-marked-up",
    "crl-file",
    "verifyhost",
];

fn server_flag(o: &mut ServerOpts, kw: &str) -> Option<Opt> {
    fn set(field: &mut Option<bool>, value: bool) -> Opt {
        *field = Some(value);
        Opt::Done(1)
    }
    Some(match kw {
        "check" => set(&mut o.check, true),
        "no-check" => set(&mut o.check, false),
        "check-ssl" => set(&mut o.check_ssl, true),
        "no-check-ssl" => set(&mut o.check_ssl, false),
        "ssl" => {
            // HAProxy's `ssl` also makes the checks use TLS.
            o.ssl = Some(true);
            Opt::Error(
                1,
                "`ssl`: HAProxy encrypts the traffic to this server; xdplb forwards the client's TCP unchanged, so a server expecting TLS from clients that speak plain TCP to the balancer would fail every connection (checks still use TLS)".into(),
            )
        }
        "no-ssl" => set(&mut o.ssl, false),
        "backup" => set(&mut o.backup, true),
        "no-backup" => set(&mut o.backup, false),
        "disabled" => set(&mut o.disabled, true),
        "enabled" => set(&mut o.disabled, false),
        k if SILENT_FLAGS.contains(&k) => Opt::Silent(1),
        k if k.starts_with("send-proxy") => Opt::Error(
            1,
            format!("`{k}`: HAProxy sends this server a PROXY header; xdplb forwards the client's bytes unchanged, so a server that requires the header would refuse every connection"),
        ),
        k if NOTED_FLAGS.contains(&k) => Opt::Untranslated(1),
        _ => return None,
    })
}

fn server_value(o: &mut ServerOpts, kw: &str, v: &str) -> Opt {
    let dur = |v: &str| v.parse::<Dur>().map(Some).map_err(Untranslatable::from);
    let num = |v: &str| v.parse::<u32>().map(Some).map_err(|_| Untranslatable::NotANumber(v.into()));
    let result: Result<(), Untranslatable> = match kw {
        "inter" => dur(v).map(|d| o.inter = d),
        "fastinter" => dur(v).map(|d| o.fastinter = d),
        "downinter" => dur(v).map(|d| o.downinter = d),
        "rise" => num(v).map(|n| o.rise = n),
        "fall" => num(v).map(|n| o.fall = n),
        "weight" => num(v).map(|n| o.weight = n),
        "error-limit" => num(v).map(|n| o.error_limit = n),
        "port" => v
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .map(|p| o.port = Some(p))
            .ok_or_else(|| Untranslatable::NotAPort(v.into())),
        "verify" => one_of(v, &[("none", Verify::None), ("required", Verify::Required)]).map(|x| o.verify = Some(x)),
        "ca-file" => {
            o.ca_file = Some(v.to_owned());
            Ok(())
        }
        "crt" => {
            o.crt = Some(v.to_owned());
            Ok(())
        }
        "sni" => literal_sni(v).map(|s| o.sni = Some(s)),
        // Unlike `sni`, `check-sni` is a plain name.
        "check-sni" => {
            o.check_sni = Some(v.to_owned());
            Ok(())
        }
        "on-marked-down" => {
            one_of(v, &[("shutdown-sessions", OnMarkedDown::ShutdownSessions)]).map(|x| o.on_marked_down = Some(x))
        }
        "observe" => one_of(v, &[("layer4", Observe::Layer4)]).map(|x| o.observe = Some(x)),
        "init-state" => one_of(
            v,
            &[
                ("up", InitialState::Up),
                ("fully-up", InitialState::Up),
                ("down", InitialState::Down),
                ("fully-down", InitialState::Down),
            ],
        )
        .map(|x| o.initial_state = Some(x)),
        k if SILENT_VALUED.contains(&k) => return Opt::Silent(2),
        _ => return Opt::Untranslated(2),
    };
    match result {
        Ok(()) => Opt::Done(2),
        Err(why) => Opt::Note(2, format!("`{kw} {v}`: {why}; ignored")),
    }
}

/// The value of `v` in `table`, or which values xdplb knows.
fn one_of<T: Copy>(v: &str, table: &[(&'static str, T)]) -> Result<T, Untranslatable> {
    match table.iter().find(|(name, _)| *name == v) {
        Some((_, x)) => Ok(*x),
        None => Err(Untranslatable::KnownOnly(table.iter().map(|(n, _)| *n).collect())),
    }
}

/// HAProxy's `sni` is a sample expression; xdplb needs the name itself, so only `str(NAME)` and
/// a plain host name are taken.
fn literal_sni(v: &str) -> Result<String, Untranslatable> {
    let name = v.strip_prefix("str(").and_then(|r| r.strip_suffix(')')).unwrap_or(v);
    let literal = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if literal {
        Ok(name.to_owned())
    } else {
        Err(Untranslatable::SniExpression)
    }
}
