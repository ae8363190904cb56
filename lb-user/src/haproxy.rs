//! Imports an haproxy.cfg into xdplb's configuration: frontends, backends, servers and their
//! health checks. Where xdplb cannot do what HAProxy would, nothing is guessed: the line becomes
//! a note for the operator. Only structural faults (a frontend sending to a backend that does not
//! exist, a server without an address, nothing usable at all) are errors.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
};

use crate::config::{
    self, AdminState, BackendCfg, Balance, Bind, CheckCfg, CheckKind, Config, Dur, FrontendCfg, Global,
    InitialState, Observe, OnMarkedDown, ServerCfg, Verify,
};

/// A translated configuration and what could not be translated faithfully.
#[derive(Debug, Clone)]
pub struct Import {
    pub config: Config,
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: `{keyword}` needs a name, e.g. `{keyword} etcd-cluster`")]
    MissingSectionName { line: usize, keyword: String },
    #[error("line {line}: {kind} {name:?} is already defined at line {first}; give each its own name (HAProxy refuses this too)")]
    DuplicateSection { line: usize, kind: &'static str, name: String, first: usize },
    #[error("line {line}: frontend {frontend:?} sends to backend {backend:?}, which is not defined; known backends: {known:?}")]
    UnknownBackend { line: usize, frontend: String, backend: String, known: Vec<String> },
    #[error("line {line}: `server {name}` has no address; write it as `server {name} 198.18.0.21:2379 check`")]
    ServerWithoutAddress { line: usize, name: String },
    #[error("nothing to import: no frontend or listen section with a usable bind and backend{}", notes_suffix(.notes))]
    NothingToImport { notes: Vec<String> },
}

fn notes_suffix(notes: &[String]) -> String {
    notes.iter().map(|n| format!("\n  - {n}")).collect()
}

/// Translates `text` (an haproxy.cfg) into a `Config`, with a note for everything that is not
/// translated or behaves differently in xdplb.
pub fn import(text: &str) -> Result<Import, ImportError> {
    let mut parser = Parser::default();
    for (i, raw) in text.lines().enumerate() {
        match split_words(raw) {
            Ok(words) if words.is_empty() => {}
            Ok(words) => parser.line(&Line { no: i + 1, words })?,
            Err(why) => parser.notes.push(format!("line {}: {why}; line not translated", i + 1)),
        }
    }
    parser.finish()
}

/// The TOML text for `import.config`, headed by a comment saying it was imported and by the notes.
pub fn to_toml(import: &Import) -> String {
    let mut out = String::from("# Imported from an haproxy.cfg by xdplb: review it before use.\n");
    if !import.notes.is_empty() {
        out.push_str("#\n# Not translated, or translated with a difference:\n");
        for note in &import.notes {
            // TOML comments may not hold control characters; notes can quote input that does.
            let clean: String = note.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            out.push_str(&format!("#   - {clean}\n"));
        }
    }
    out.push('\n');
    match toml::to_string(&import.config) {
        Ok(body) => out.push_str(&body),
        Err(e) => out.push_str(&format!("# the configuration could not be written as TOML: {e}\n")),
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Lines

/// One directive: its 1-based line number and its words, unquoted and unescaped.
struct Line {
    no: usize,
    words: Vec<String>,
}

impl Line {
    fn word(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
    fn args(&self, from: usize) -> &[String] {
        self.words.get(from..).unwrap_or(&[])
    }
    fn text(&self) -> String {
        self.words.join(" ")
    }
    fn not_translated(&self) -> String {
        format!("line {}: `{}` not translated", self.no, self.text())
    }
}

/// Splits a line into words the way HAProxy does: blanks separate, `#` starts a comment,
/// "..." and '...' quote (only "..." interprets escapes), `\` escapes one character.
fn split_words(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.get_or_insert_with(String::new).push(c),
            (_, '\\') => {
                let escaped = chars.next().ok_or("the line ends with `\\`")?;
                word.get_or_insert_with(String::new).push(unescape(escaped));
            }
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '#') => break,
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote");
    }
    words.extend(word);
    Ok(words)
}

fn unescape(c: char) -> char {
    match c {
        'r' => '\r',
        'n' => '\n',
        't' => '\t',
        c => c,
    }
}

// ---------------------------------------------------------------------------------------------
// Sections

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Defaults,
    Frontend,
    Backend,
    Listen,
}

impl Kind {
    fn from_keyword(k: &str) -> Option<Kind> {
        match k {
            "defaults" => Some(Kind::Defaults),
            "frontend" => Some(Kind::Frontend),
            "backend" => Some(Kind::Backend),
            "listen" => Some(Kind::Listen),
            _ => None,
        }
    }
    fn keyword(self) -> &'static str {
        match self {
            Kind::Defaults => "defaults",
            Kind::Frontend => "frontend",
            Kind::Backend => "backend",
            Kind::Listen => "listen",
        }
    }
    fn is_frontend(self) -> bool {
        matches!(self, Kind::Frontend | Kind::Listen)
    }
    fn is_backend(self) -> bool {
        matches!(self, Kind::Backend | Kind::Listen)
    }
}

/// Sections with nothing xdplb could use (users, peers, DNS resolvers, ...).
const OTHER_SECTIONS: &[&str] = &[
    "userlist", "peers", "resolvers", "mailers", "program", "http-errors", "ring", "cache",
    "fcgi-app", "crt-store", "traces", "log-forward", "acme",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Section {
    #[default]
    Outside,
    Global,
    Defaults,
    Proxy,
    Other,
}

/// What `global` says that matters to checks.
#[derive(Debug, Clone)]
struct GlobalOpts {
    /// `ssl-server-verify`: the `verify` of servers that do not set one.
    verify: Verify,
    /// `ca-base` and `crt-base`: where relative `ca-file` and `crt` paths live.
    ca_base: Option<PathBuf>,
    crt_base: Option<PathBuf>,
}

impl Default for GlobalOpts {
    fn default() -> Self {
        Self { verify: Verify::Required, ca_base: None, crt_base: None }
    }
}

impl GlobalOpts {
    /// Everything else in `global` is process tuning (user, nbthread, stats socket, ...), which
    /// does not change how flows are balanced, so it is ignored without a note.
    fn directive(&mut self, line: &Line) {
        match (line.words[0].as_str(), line.word(1)) {
            ("ssl-server-verify", Some("none")) => self.verify = Verify::None,
            ("ssl-server-verify", Some("required")) => self.verify = Verify::Required,
            ("ca-base", Some(dir)) => self.ca_base = Some(dir.into()),
            ("crt-base", Some(dir)) => self.crt_base = Some(dir.into()),
            _ => {}
        }
    }
}

fn based(base: &Option<PathBuf>, file: &str) -> PathBuf {
    match base {
        Some(dir) if !file.starts_with('/') => dir.join(file),
        _ => PathBuf::from(file),
    }
}

/// A `defaults`, `frontend`, `backend` or `listen` section as written, before translation.
#[derive(Debug, Clone, Default)]
struct Proxy {
    kind: Kind,
    name: String,
    line: usize,
    /// Normalised bind addresses (`*:PORT` or `IPv4:PORT`), in order.
    binds: Vec<String>,
    default_backend: Option<(usize, String)>,
    check: ProxyCheck,
    source: Vec<Ipv4Addr>,
    default_server: ServerOpts,
    servers: Vec<RawServer>,
}

/// The check settings HAProxy keeps per proxy (the request and what to expect).
#[derive(Debug, Clone, Default)]
struct ProxyCheck {
    /// `option httpchk` is on (the last check option wins, as in HAProxy).
    http: bool,
    /// The method and where it was set, for a note: xdplb always sends GET.
    method: Option<(usize, String)>,
    path: Option<String>,
    host: Option<String>,
    expect_status: Option<u16>,
    expect_string: Option<String>,
    timeout: Option<Dur>,
    /// The first `http-check` line, for a note when `option httpchk` is off.
    rules_line: Option<usize>,
}

#[derive(Debug, Clone)]
struct RawServer {
    line: usize,
    name: String,
    target: Target,
    opts: ServerOpts,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Addr(SocketAddrV4),
    /// HAProxy then uses the port the client connected to.
    NoPort(Ipv4Addr),
}

/// Server options as written on a `server` or `default-server` line; unset ones fall back to
/// `default-server`, then to the defaults.
#[derive(Debug, Clone, Default)]
struct ServerOpts {
    check: Option<bool>,
    check_ssl: Option<bool>,
    ssl: Option<bool>,
    backup: Option<bool>,
    disabled: Option<bool>,
    verify: Option<Verify>,
    ca_file: Option<String>,
    crt: Option<String>,
    sni: Option<String>,
    check_sni: Option<String>,
    inter: Option<Dur>,
    fastinter: Option<Dur>,
    downinter: Option<Dur>,
    rise: Option<u32>,
    fall: Option<u32>,
    weight: Option<u32>,
    error_limit: Option<u32>,
    on_marked_down: Option<OnMarkedDown>,
    observe: Option<Observe>,
    initial_state: Option<InitialState>,
    port: Option<u16>,
}

fn either<T: Clone>(top: &Option<T>, base: &Option<T>) -> Option<T> {
    top.as_ref().or(base.as_ref()).cloned()
}

impl ServerOpts {
    /// `top`'s options, with `self`'s where `top` sets none.
    fn overlay(&self, top: &ServerOpts) -> ServerOpts {
        macro_rules! pick {
            ($($field:ident),*) => { ServerOpts { $($field: either(&top.$field, &self.$field)),* } };
        }
        pick!(
            check, check_ssl, ssl, backup, disabled, verify, ca_file, crt, sni, check_sni, inter,
            fastinter, downinter, rise, fall, weight, error_limit, on_marked_down, observe,
            initial_state, port
        )
    }
}

/// Reads the configuration line by line, keeping the sections as written.
#[derive(Default)]
struct Parser {
    notes: Vec<String>,
    global: GlobalOpts,
    /// The last `defaults` section: proxies after it start from it.
    defaults: Proxy,
    named_defaults: HashMap<String, Proxy>,
    proxies: Vec<Proxy>,
    section: Section,
}

impl Parser {
    fn line(&mut self, line: &Line) -> Result<(), ImportError> {
        let keyword = line.words[0].as_str();
        if let Some(kind) = Kind::from_keyword(keyword) {
            return self.open_proxy(kind, line);
        }
        if keyword == "global" {
            self.enter(Section::Global);
        } else if OTHER_SECTIONS.contains(&keyword) {
            self.enter(Section::Other);
            self.notes.push(format!("line {}: section `{}` not translated", line.no, line.text()));
        } else {
            self.directive(line)?;
        }
        Ok(())
    }

    fn directive(&mut self, line: &Line) -> Result<(), ImportError> {
        match self.section {
            Section::Outside => self.notes.push(format!(
                "line {}: `{}` is outside any section; not translated",
                line.no,
                line.text()
            )),
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
            None => {
                return Err(ImportError::MissingSectionName { line: line.no, keyword: kind.keyword().into() })
            }
        };
        let base = self.base_for(kind, header.from, line);
        let mut p = base.inherit(kind, name, line.no);
        // The old `listen NAME ADDR:PORT` form.
        for addrs in header.addrs {
            if kind.is_frontend() {
                p.add_binds(addrs, line, &mut self.notes);
            } else {
                self.notes.push(format!("line {}: `{addrs}` after the name not translated", line.no));
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
            self.notes.push(format!("line {}: no defaults section named {name:?}; `from {name}` ignored", line.no));
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

    fn finish(mut self) -> Result<Import, ImportError> {
        let known: Vec<String> =
            self.proxies.iter().filter(|p| p.kind.is_backend()).map(|p| p.name.clone()).collect();
        let frontends = frontends(&self.proxies, &known, &mut self.notes)?;
        let mut backends = Vec::new();
        for p in self.proxies.iter().filter(|p| p.kind.is_backend()) {
            backends.push(backend(p, &self.global, &frontends, &mut self.notes));
        }
        // Notes in the order of the lines they are about.
        self.notes.sort_by_key(|n| note_line(n));
        if frontends.is_empty() {
            return Err(ImportError::NothingToImport { notes: self.notes });
        }
        Ok(Import { config: Config { global: Global::default(), frontends, backends }, notes: self.notes })
    }
}

/// The line a note is about (every note starts with `line N:`).
fn note_line(note: &str) -> usize {
    let digits = note.strip_prefix("line ").unwrap_or_default();
    digits.split(':').next().and_then(|n| n.parse().ok()).unwrap_or(usize::MAX)
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
        p.servers.clear();
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

    /// `bind ADDR[,ADDR...]`: each address becomes a frontend of its own.
    fn add_binds(&mut self, addrs: &str, line: &Line, notes: &mut Vec<String>) {
        for a in addrs.split(',') {
            match bind_address(a) {
                Ok(b) => self.binds.push(b),
                Err(why) => notes.push(format!("line {}: bind {a:?} skipped: {why}", line.no)),
            }
        }
    }

    fn set_check_timeout(&mut self, line: &Line, notes: &mut Vec<String>) {
        match line.word(2).map(str::parse::<Dur>) {
            Some(Ok(d)) => self.check.timeout = Some(d),
            Some(Err(why)) => notes.push(format!("line {}: `timeout check`: {why}; not translated", line.no)),
            None => notes.push(line.not_translated()),
        }
    }

    /// `source ADDR[:PORT] [usesrc ...]`: only the address has an xdplb equivalent.
    fn set_source(&mut self, line: &Line, notes: &mut Vec<String>) {
        let addr = line.word(1).unwrap_or_default();
        let (ip, port) = addr.split_once(':').map_or((addr, None), |(i, p)| (i, Some(p)));
        let Ok(ip) = ip.parse::<Ipv4Addr>() else {
            notes.push(format!("line {}: `{}`: not an IPv4 source address; not translated", line.no, line.text()));
            return;
        };
        // 0.0.0.0 means "the kernel's choice", which is also xdplb's default.
        if !ip.is_unspecified() {
            self.source = vec![ip];
        }
        if port.is_some_and(|p| !p.is_empty() && p != "0") || line.words.len() > 2 {
            notes.push(format!(
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
    "log", "log-format", "log-format-sd", "error-log-format", "log-tag", "log-steps", "maxconn",
    "fullconn", "backlog", "description", "id", "stats", "monitor-uri", "monitor", "errorfile",
    "errorfiles", "email-alert", "unique-id-format", "unique-id-header", "enabled", "grace",
    "load-server-state-from-file", "server-state-file-name", "hash-type", "contimeout",
    "clitimeout", "srvtimeout",
];

/// `option`s about logging, keep-alive and kernel splicing: nothing to translate, nothing lost.
const SILENT_OPTIONS: &[&str] = &[
    "tcplog", "httplog", "dontlognull", "dontlog-normal", "log-health-checks", "logasap",
    "log-separate-errors", "tcpka", "clitcpka", "srvtcpka", "splice-auto", "splice-request",
    "splice-response", "socket-stats", "contstats", "independent-streams", "http-keep-alive",
    "http-server-close", "httpclose", "nolinger",
];

/// Protocol checks xdplb replaces with a TCP connect.
const CONNECT_ONLY_CHECKS: &[&str] = &[
    "ssl-hello-chk", "mysql-check", "pgsql-check", "redis-check", "smtpchk", "ldap-check",
    "spop-check", "external-check",
];

fn proxy_directive(p: &mut Proxy, line: &Line, notes: &mut Vec<String>) -> Result<(), ImportError> {
    if let Some(note) = misplaced(p, line) {
        notes.push(note);
        return Ok(());
    }
    match (line.words[0].as_str(), line.word(1)) {
        ("mode", Some("tcp")) => {}
        ("mode", Some("http")) => notes.push(format!(
            "line {}: `mode http` in {}: xdplb is layer 4 only; it will forward TCP without HTTP processing",
            line.no,
            p.label()
        )),
        ("bind", Some(addrs)) => {
            p.add_binds(addrs, line, notes);
            if line.words.len() > 2 {
                notes.push(format!("line {}: bind options `{}` not translated", line.no, line.args(2).join(" ")));
            }
        }
        ("default_backend", Some(b)) => p.default_backend = Some((line.no, b.to_owned())),
        ("balance", Some("roundrobin")) => {}
        ("balance", Some(_)) => notes.push(format!(
            "line {}: `{}`: xdplb balances round robin only; roundrobin used",
            line.no,
            line.text()
        )),
        ("option", Some(_)) => proxy_option(p, line, notes),
        ("no", Some("log")) => {}
        ("no", Some("option")) if line.word(2).is_some_and(|o| SILENT_OPTIONS.contains(&o)) => {}
        ("http-check", _) => http_check(&mut p.check, line, notes),
        ("tcp-check", _) => notes.push(format!(
            "line {}: `{}` not translated: xdplb's tcp check is a connect only",
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
        ("use_backend" | "use-server", _) => notes.push(format!(
            "line {}: `{}` not translated: xdplb sends every flow of a frontend to its default_backend",
            line.no,
            line.text()
        )),
        (k, _) if SILENT_DIRECTIVES.contains(&k) => {}
        _ => notes.push(line.not_translated()),
    }
    Ok(())
}

/// A directive HAProxy accepts only on the other side (a `server` in a frontend, a `bind` in a
/// backend) would otherwise be translated into the wrong place.
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

fn proxy_option(p: &mut Proxy, line: &Line, notes: &mut Vec<String>) {
    match line.word(1).unwrap_or_default() {
        "httpchk" => option_httpchk(&mut p.check, line, notes),
        "tcp-check" => p.check.http = false,
        o if CONNECT_ONLY_CHECKS.contains(&o) => {
            p.check.http = false;
            notes.push(format!("line {}: `option {o}`: xdplb's tcp check is a connect only", line.no));
        }
        o if SILENT_OPTIONS.contains(&o) => {}
        _ => notes.push(line.not_translated()),
    }
}

/// `option httpchk [[METHOD] URI [VERSION]]`; the version may carry headers the old way
/// (`HTTP/1.1\r\nHost:\ etcd.local`).
fn option_httpchk(c: &mut ProxyCheck, line: &Line, notes: &mut Vec<String>) {
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
            None => notes.push(format!("line {}: check header {header:?} not translated", line.no)),
        }
    }
}

fn check_header(c: &mut ProxyCheck, name: &str, value: &str, line: &Line, notes: &mut Vec<String>) {
    if name.trim().eq_ignore_ascii_case("host") {
        c.host = Some(value.trim().to_owned());
    } else {
        notes.push(format!(
            "line {}: check header `{}` not translated: xdplb sends Host, User-Agent, Accept and Connection only",
            line.no,
            name.trim()
        ));
    }
}

fn http_check(c: &mut ProxyCheck, line: &Line, notes: &mut Vec<String>) {
    c.rules_line.get_or_insert(line.no);
    match line.word(1) {
        Some("send") => http_check_send(c, line, notes),
        Some("expect") => http_check_expect(c, line, notes),
        _ => notes.push(line.not_translated()),
    }
}

/// `http-check send meth M uri U [ver V] [hdr NAME VALUE]...`
fn http_check_send(c: &mut ProxyCheck, line: &Line, notes: &mut Vec<String>) {
    let mut args = line.args(2).iter().map(String::as_str);
    while let Some(key) = args.next() {
        match (key, args.next()) {
            ("meth", Some(m)) => c.method = Some((line.no, m.to_owned())),
            ("uri", Some(u)) => c.path = Some(u.to_owned()),
            // xdplb always speaks HTTP/1.1.
            ("ver", Some(_)) => {}
            ("hdr", Some(name)) => match args.next() {
                Some(value) => check_header(c, name, value, line, notes),
                None => notes.push(format!("line {}: `hdr {name}` has no value; not translated", line.no)),
            },
            (key, _) => {
                notes.push(format!("line {}: `http-check send` from `{key}` on not translated", line.no));
                break;
            }
        }
    }
}

/// Parameters before the matcher of `http-check expect`; the `*-status` ones change what a
/// result means, which xdplb does not do.
const EXPECT_PARAMS: &[&str] =
    &["min-recv", "comment", "on-success", "on-error", "status-code", "ok-status", "error-status", "tout-status"];

/// `http-check expect [PARAMS] [!] MATCHER PATTERN`
fn http_check_expect(c: &mut ProxyCheck, line: &Line, notes: &mut Vec<String>) {
    let args = line.args(2);
    let mut i = 0;
    let mut negated = false;
    while let Some(word) = args.get(i).map(String::as_str) {
        if word == "!" {
            negated = true;
            i += 1;
        } else if EXPECT_PARAMS.contains(&word) {
            if word.ends_with("-status") {
                notes.push(format!("line {}: `http-check expect {word}` not translated", line.no));
            }
            i += 2;
        } else {
            break;
        }
    }
    let matcher = args.get(i).map(String::as_str);
    let pattern = args.get(i + 1);
    match (negated, matcher, pattern) {
        (true, _, _) => notes.push(format!("line {}: `{}`: negated expects are not supported; not translated", line.no, line.text())),
        (false, Some("status"), Some(p)) => expect_status(c, p, line, notes),
        (false, Some("string"), Some(s)) => c.expect_string = Some(s.clone()),
        (false, Some("rstring" | "rstatus"), _) => notes.push(format!(
            "line {}: `{}`: xdplb does not support regular expressions; not translated",
            line.no,
            line.text()
        )),
        _ => notes.push(line.not_translated()),
    }
}

/// xdplb expects one exact status; of a range or list (`200-399`, `200,204`) the first is used.
fn expect_status(c: &mut ProxyCheck, pattern: &str, line: &Line, notes: &mut Vec<String>) {
    let first = pattern.split(['-', ',']).next().unwrap_or_default();
    match first.parse::<u16>() {
        Ok(status) => {
            c.expect_status = Some(status);
            if first != pattern {
                notes.push(format!(
                    "line {}: `expect status {pattern}`: xdplb expects exactly one status; {status} used",
                    line.no
                ));
            }
        }
        Err(_) => notes.push(format!("line {}: `expect status {pattern}`: not a status; not translated", line.no)),
    }
}

// ---------------------------------------------------------------------------------------------
// Servers

fn add_server(p: &mut Proxy, line: &Line, notes: &mut Vec<String>) -> Result<(), ImportError> {
    let name = line.word(1).unwrap_or("NAME");
    let Some(addr) = line.word(2) else {
        return Err(ImportError::ServerWithoutAddress { line: line.no, name: name.to_owned() });
    };
    let opts = server_options(line.args(3), line, &format!("server {name}"), notes);
    match server_address(addr) {
        Ok(target) => p.servers.push(RawServer { line: line.no, name: name.to_owned(), target, opts }),
        Err(why) => notes.push(format!("line {}: server {name} skipped: {why}", line.no)),
    }
    Ok(())
}

/// `IPv4:PORT` or a bare `IPv4`; xdplb has no resolver, so names and IPv6 are refused.
fn server_address(s: &str) -> Result<Target, String> {
    let s = s.strip_prefix("ipv4@").unwrap_or(s);
    let (host, port) = match s.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => return Err(format!("{s:?} is IPv6; xdplb needs IPv4:PORT")),
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let ip: Ipv4Addr = host.parse().map_err(|_| {
        format!("{host:?} is not an IPv4 address (xdplb needs IPv4:PORT: resolve the name and write the address)")
    })?;
    match port {
        None | Some("") => Ok(Target::NoPort(ip)),
        Some(p) if p.starts_with(['+', '-']) => Err(format!("port offset {p:?}: xdplb needs a fixed port")),
        Some(p) => config::parse_server_addr(&format!("{ip}:{p}")).map(Target::Addr),
    }
}

/// A bind address the way xdplb writes it: `*:PORT` for every address, or `IPv4:PORT`.
fn bind_address(s: &str) -> Result<String, String> {
    let s = s.strip_prefix("ipv4@").unwrap_or(s);
    if s.contains('@') || s.starts_with('/') {
        return Err("not a TCP/IPv4 address; xdplb listens on IPv4 only".into());
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| "no port; write ADDR:PORT".to_string())?;
    if port.contains('-') {
        return Err(format!("port range {port}: xdplb binds one port per frontend; write one bind per port"));
    }
    let host = match host {
        "" | "*" | "0.0.0.0" => "*",
        h if h.parse::<Ipv4Addr>().is_ok() => h,
        h => return Err(format!("{h:?} is not an IPv4 address; xdplb listens on IPv4 only")),
    };
    let bind = format!("{host}:{port}");
    bind.parse::<Bind>()?;
    Ok(bind)
}

/// How a server option was taken: the words it used, and whether xdplb has it.
enum Opt {
    Done(usize),
    Silent(usize),
    Untranslated(usize),
    Note(usize, String),
    Unknown,
}

/// Server options (after a server's address, or on `default-server`). What xdplb has no
/// equivalent for is gathered into one note per line.
fn server_options(words: &[String], line: &Line, who: &str, notes: &mut Vec<String>) -> ServerOpts {
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
                notes.push(format!("line {}: {who}: {why}", line.no));
                n
            }
            Opt::Unknown => {
                // Its arity is unknown, so the words after it cannot be read reliably.
                notes.push(format!(
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
        notes.push(format!("line {}: {who}: {} not translated", line.no, untranslated.join(", ")));
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
    "no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tlsv13", "force-sslv3", "force-tlsv10",
    "force-tlsv11", "force-tlsv12", "force-tlsv13", "no-tls-tickets", "tls-tickets", "ssl-reuse",
    "no-ssl-reuse", "allow-0rtt", "no-agent-check", "no-send-proxy", "no-send-proxy-v2",
    "no-verifyhost", "non-stick", "stick", "no-tfo", "check-reuse-pool", "no-check-reuse-pool",
];

/// Flags with an effect xdplb does not have.
const NOTED_FLAGS: &[&str] = &[
    "agent-check", "send-proxy", "send-proxy-v2", "send-proxy-v2-ssl", "send-proxy-v2-ssl-cn",
    "check-send-proxy", "check-via-socks4", "tfo",
];

const TRANSLATED_VALUED: &[&str] = &[
    "inter", "fastinter", "downinter", "rise", "fall", "weight", "error-limit", "verify", "ca-file",
    "crt", "sni", "check-sni", "on-marked-down", "observe", "init-state", "port",
];

/// Valued options that change nothing xdplb does (ids, DNS for names xdplb refuses anyway,
/// connection pools, TLS tuning).
const SILENT_VALUED: &[&str] = &[
    "maxqueue", "minconn", "id", "init-addr", "resolvers", "resolve-prefer", "resolve-net",
    "resolve-opts", "pool-max-conn", "pool-purge-delay", "pool-low-conn", "pool-conn-name",
    "max-reuse", "log-proto", "guid", "shard", "hash-key", "alpn", "npn", "ciphers",
    "ciphersuites", "ssl-min-ver", "ssl-max-ver", "curves", "sigalgs", "client-sigalgs",
    "log-bufsize",
];

/// Valued options with an effect xdplb does not have.
const NOTED_VALUED: &[&str] = &[
    "maxconn", "slowstart", "addr", "agent-port", "agent-inter", "agent-addr", "agent-send",
    "track", "cookie", "redir", "source", "usesrc", "namespace", "proto", "ws", "socks4",
    "check-proto", "check-alpn", "proxy-v2-options", "set-proxy-v2-tlv-fmt", "on-error",
    "on-marked-up", "crl-file", "verifyhost",
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
            Opt::Note(
                1,
                "`ssl`: HAProxy encrypts the traffic to this server; xdplb forwards the client's TCP unchanged, so clients must speak TLS themselves (checks still use TLS)".into(),
            )
        }
        "no-ssl" => set(&mut o.ssl, false),
        "backup" => set(&mut o.backup, true),
        "no-backup" => set(&mut o.backup, false),
        "disabled" => set(&mut o.disabled, true),
        "enabled" => set(&mut o.disabled, false),
        k if SILENT_FLAGS.contains(&k) => Opt::Silent(1),
        k if NOTED_FLAGS.contains(&k) => Opt::Untranslated(1),
        _ => return None,
    })
}

fn server_value(o: &mut ServerOpts, kw: &str, v: &str) -> Opt {
    let dur = |v: &str| v.parse::<Dur>().map(Some);
    let num = |v: &str| v.parse::<u32>().map(Some).map_err(|_| format!("{v:?} is not a number"));
    let result: Result<(), String> = match kw {
        "inter" => dur(v).map(|d| o.inter = d),
        "fastinter" => dur(v).map(|d| o.fastinter = d),
        "downinter" => dur(v).map(|d| o.downinter = d),
        "rise" => num(v).map(|n| o.rise = n),
        "fall" => num(v).map(|n| o.fall = n),
        "weight" => num(v).map(|n| o.weight = n),
        "error-limit" => num(v).map(|n| o.error_limit = n),
        "port" => v.parse::<u16>().ok().filter(|&p| p != 0).map(|p| o.port = Some(p)).ok_or_else(|| format!("{v:?} is not a port")),
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
        "on-marked-down" => one_of(v, &[("shutdown-sessions", OnMarkedDown::ShutdownSessions)])
            .map(|x| o.on_marked_down = Some(x)),
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
fn one_of<T: Copy>(v: &str, table: &[(&str, T)]) -> Result<T, String> {
    match table.iter().find(|(name, _)| *name == v) {
        Some((_, x)) => Ok(*x),
        None => Err(format!("xdplb knows only {}", table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))),
    }
}

/// HAProxy's `sni` is a sample expression; xdplb needs the name itself, so only `str(NAME)` and
/// a plain host name are taken.
fn literal_sni(v: &str) -> Result<String, String> {
    let name = v.strip_prefix("str(").and_then(|r| r.strip_suffix(')')).unwrap_or(v);
    let literal = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if literal {
        Ok(name.to_owned())
    } else {
        Err("an expression, not a literal name: set sni = \"NAME\" in the backend's check by hand".into())
    }
}

// ---------------------------------------------------------------------------------------------
// Assembly

fn frontends(proxies: &[Proxy], known: &[String], notes: &mut Vec<String>) -> Result<Vec<FrontendCfg>, ImportError> {
    let mut out = Vec::new();
    for p in proxies.iter().filter(|p| p.kind.is_frontend()) {
        let Some((line, backend)) = frontend_target(p) else {
            notes.push(format!(
                "line {}: frontend {} has no default_backend; xdplb sends each frontend to one backend, so it is not imported",
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
                notes.push(format!("line {}: frontend {} has no usable bind; not imported", p.line, p.name));
            }
            continue;
        }
        for (i, bind) in p.binds.iter().enumerate() {
            let name = if i == 0 { p.name.clone() } else { format!("{}-{}", p.name, i + 1) };
            out.push(FrontendCfg { name, bind: bind.clone(), backend: backend.clone() });
        }
    }
    Ok(out)
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
    /// `check-ssl` without `option httpchk`: HAProxy checks the TLS handshake.
    tls_connect: bool,
}

fn backend(p: &Proxy, global: &GlobalOpts, frontends: &[FrontendCfg], notes: &mut Vec<String>) -> BackendCfg {
    let servers: Vec<Resolved> =
        p.servers.iter().filter_map(|s| resolve_server(p, s, global, frontends, notes)).collect();
    if servers.is_empty() {
        notes.push(format!(
            "line {}: backend {}: no server xdplb can use; add one before loading this configuration",
            p.line, p.name
        ));
    }
    let check = backend_check(p, &servers, global, notes);
    BackendCfg {
        name: p.name.clone(),
        balance: Balance::Roundrobin,
        check,
        source: p.source.clone(),
        servers: servers.into_iter().map(|r| r.server).collect(),
    }
}

fn resolve_server(
    p: &Proxy,
    s: &RawServer,
    global: &GlobalOpts,
    frontends: &[FrontendCfg],
    notes: &mut Vec<String>,
) -> Option<Resolved> {
    let opts = p.default_server.overlay(&s.opts);
    let address = match s.target {
        Target::Addr(a) => a,
        Target::NoPort(ip) => {
            let Some(port) = frontend_port(&p.name, frontends) else {
                notes.push(format!(
                    "line {}: server {} skipped: it has no port and its frontends do not share one; write IPv4:PORT",
                    s.line, s.name
                ));
                return None;
            };
            notes.push(format!(
                "line {}: server {} has no port; HAProxy uses the port the client connected to, so {port} is used",
                s.line, s.name
            ));
            SocketAddrV4::new(ip, port)
        }
    };
    if let Err(why) = config::parse_server_addr(&address.to_string()) {
        notes.push(format!("line {}: server {} skipped: {why}", s.line, s.name));
        return None;
    }
    let disabled = opts.disabled.unwrap_or(false);
    if disabled {
        notes.push(format!(
            "line {}: server {} is `disabled` in HAProxy: imported in maintenance (state = \"maint\")",
            s.line, s.name
        ));
    }
    Some(Resolved {
        server: ServerCfg {
            name: s.name.clone(),
            address: address.to_string(),
            weight: opts.weight.unwrap_or(1),
            backup: opts.backup.unwrap_or(false),
            check: opts.check.unwrap_or(false),
            state: if disabled { AdminState::Maint } else { AdminState::Ready },
        },
        check: server_check(&p.check, &opts, global),
        tls_connect: !p.check.http && opts.check_ssl.or(opts.ssl).unwrap_or(false),
    })
}

/// The one port all frontends of `backend` listen on, if they share one.
fn frontend_port(backend: &str, frontends: &[FrontendCfg]) -> Option<u16> {
    let mut ports = frontends
        .iter()
        .filter(|f| f.backend == backend)
        .map(|f| f.bind.parse::<Bind>().ok().map(|b| b.port()));
    let first = ports.next()??;
    ports.all(|p| p == Some(first)).then_some(first)
}

/// The check HAProxy would run against one server.
fn server_check(c: &ProxyCheck, o: &ServerOpts, global: &GlobalOpts) -> CheckCfg {
    let d = CheckCfg::default();
    let crt = o.crt.as_deref().map(|f| based(&global.crt_base, f));
    CheckCfg {
        kind: match (c.http, o.check_ssl.or(o.ssl).unwrap_or(false)) {
            (true, true) => CheckKind::Https,
            (true, false) => CheckKind::Http,
            (false, _) => CheckKind::Tcp,
        },
        inter: o.inter.unwrap_or(d.inter),
        fastinter: o.fastinter,
        downinter: o.downinter,
        rise: o.rise.unwrap_or(d.rise),
        fall: o.fall.unwrap_or(d.fall),
        timeout: c.timeout,
        path: c.path.clone().unwrap_or(d.path),
        host: c.host.clone(),
        expect_status: c.expect_status.unwrap_or(d.expect_status),
        expect_string: c.expect_string.clone(),
        verify: o.verify.unwrap_or(global.verify),
        ca_file: o.ca_file.as_deref().map(|f| based(&global.ca_base, f)),
        sni: o.check_sni.clone().or_else(|| o.sni.clone()),
        // HAProxy's `crt` is one PEM holding certificate and key.
        key: crt.clone(),
        crt,
        initial_state: o.initial_state.unwrap_or(d.initial_state),
        on_marked_down: o.on_marked_down.unwrap_or(d.on_marked_down),
        observe: o.observe.unwrap_or(d.observe),
        error_limit: o.error_limit.unwrap_or(d.error_limit),
        port: o.port,
    }
}

/// HAProxy checks per server, xdplb per backend: the checked servers' settings, the first
/// server's where they disagree.
fn backend_check(p: &Proxy, servers: &[Resolved], global: &GlobalOpts, notes: &mut Vec<String>) -> CheckCfg {
    let checked: Vec<&Resolved> = servers.iter().filter(|r| r.server.check).collect();
    let mut cfg = match checked.first() {
        Some(first) => first.check.clone(),
        None => {
            // Nothing is checked in HAProxy either: the servers count as UP.
            let mut c = servers
                .first()
                .map_or_else(|| server_check(&p.check, &p.default_server, global), |r| r.check.clone());
            c.kind = CheckKind::None;
            c
        }
    };
    if !checked.is_empty() {
        note_disagreements(p, &checked, notes);
        note_check_differences(p, &cfg, &checked, notes);
    }
    clamp_timeout(p, &mut cfg, notes);
    cfg
}

fn note_disagreements(p: &Proxy, checked: &[&Resolved], notes: &mut Vec<String>) {
    let Some((first, rest)) = checked.split_first() else { return };
    type Same = fn(&CheckCfg, &CheckCfg) -> bool;
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
            notes.push(format!(
                "line {}: backend {}: servers disagree on `{setting}` ({} and {}); xdplb has one check setting per backend, so {}'s is used",
                p.line, p.name, first.server.name, other.server.name, first.server.name
            ));
        }
    }
}

/// Where the translated check behaves differently from HAProxy's.
fn note_check_differences(p: &Proxy, cfg: &CheckCfg, checked: &[&Resolved], notes: &mut Vec<String>) {
    let http = matches!(cfg.kind, CheckKind::Http | CheckKind::Https);
    if let (true, Some((line, method))) = (http, &p.check.method) {
        if !method.eq_ignore_ascii_case("GET") {
            notes.push(format!("line {line}: check method {method}: xdplb checks with GET"));
        }
    }
    if let (true, Some(s), None) = (http, &cfg.expect_string, p.check.expect_status) {
        notes.push(format!(
            "line {}: backend {}: HAProxy's `http-check expect string {s}` ignores the status, so a server answering 500 with {s:?} in the body stays UP; xdplb requires status {} and the string",
            p.line, p.name, cfg.expect_status
        ));
    }
    if let (false, Some(line)) = (p.check.http, p.check.rules_line) {
        notes.push(format!(
            "line {line}: http-check rules have no effect without `option httpchk` (HAProxy ignores them too); tcp check used"
        ));
    }
    if checked.iter().any(|r| r.tls_connect) {
        notes.push(format!(
            "line {}: backend {}: `check-ssl` without `option httpchk`: HAProxy checks the TLS handshake, xdplb the TCP connect only",
            p.line, p.name
        ));
    }
    if let Some(crt) = &cfg.crt {
        notes.push(format!(
            "line {}: backend {}: HAProxy's `crt` is one PEM with certificate and key; crt and key are both set to {}",
            p.line, p.name,
            crt.display()
        ));
    }
}

/// xdplb ends a check before the next is due; HAProxy lets a long `timeout check` run on.
fn clamp_timeout(p: &Proxy, cfg: &mut CheckCfg, notes: &mut Vec<String>) {
    if let Some(t) = cfg.timeout {
        if t > cfg.inter {
            notes.push(format!(
                "line {}: backend {}: `timeout check {t}` is longer than inter {}; xdplb ends each check before the next, so the timeout is {}",
                p.line, p.name, cfg.inter, cfg.inter
            ));
            cfg.timeout = Some(cfg.inter);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::*;

    /// The seed's two blocks, verbatim: one copy, shared with the end-to-end tests.
    const SEED: &str = include_str!("../../tests/fixtures/seed-haproxy.cfg");

    const RICH: &str = "\
global
\tlog stdout format raw local0
\tmaxconn 4000
defaults
\tmode tcp
\ttimeout connect 5s
\ttimeout check 1s
\tdefault-server inter 3s rise 3 fall 2
frontend web
\tbind 0.0.0.0:8080 # every address
\tbind 198.18.0.10:8443
\tmode http
\toption tcplog
\tdefault_backend pool
backend pool
\tbalance leastconn
\toption httpchk
\thttp-check send meth GET uri /ready hdr Host pool.local
\thttp-check expect rstring ^ok
\tserver a 198.18.0.21:8080 check check-ssl verify required ca-file /etc/xdplb/ca.pem crt /etc/xdplb/client.pem weight 5 inter 1s
\tserver b 198.18.0.22:8080 check check-ssl verify required ca-file /etc/xdplb/ca.pem crt /etc/xdplb/client.pem backup
\tserver c etcd3.example:8080 check
\tfrobnicate on
";

    fn has(notes: &[String], needle: &str) -> bool {
        notes.iter().any(|n| n.contains(needle))
    }

    #[test]
    fn seed_imports_to_the_equivalent_xdplb_config() {
        let import = import(SEED).unwrap();
        let c = &import.config;
        let f: Vec<_> = c.frontends.iter().map(|f| (f.name.as_str(), f.bind.as_str(), f.backend.as_str())).collect();
        assert_eq!(f, [("in-etcd", "*:12379", "etcd-cluster"), ("in-apiserver", "*:16443", "apiserver-cluster")]);
        assert_eq!(c.backends.len(), 2);
        for (b, path, string, port) in
            [(&c.backends[0], "/health", "true", 2379), (&c.backends[1], "/healthz", "ok", 6443)]
        {
            assert_eq!(b.servers.len(), 3);
            assert_eq!(b.servers[0].address, format!("10.211.55.9:{port}"));
            assert!(b.servers.iter().all(|s| s.check && s.weight == 1 && !s.backup));
            let k = &b.check;
            assert_eq!(k.kind, CheckKind::Https);
            assert_eq!(k.verify, Verify::None);
            assert_eq!((k.path.as_str(), k.expect_string.as_deref(), k.expect_status), (path, Some(string), 200));
            assert_eq!((k.inter, k.rise, k.fall), (Dur(Duration::from_secs(2)), 2, 3));
        }
        assert_eq!(c.problems(), Vec::<String>::new());
        // One note per backend on HAProxy's status-blind `expect string`, and nothing else.
        assert_eq!(import.notes.len(), 2, "{:#?}", import.notes);
        assert!(has(&import.notes, "backend etcd-cluster: HAProxy's `http-check expect string true` ignores the status"));

        let text = to_toml(&import);
        assert!(text.starts_with("# Imported from an haproxy.cfg"), "{text}");
        assert!(text.contains("#   - line 18: backend apiserver-cluster: "), "{text}");
        let back = Config::parse(&text, Path::new("x.toml")).unwrap();
        assert_eq!(&back, c);
    }

    #[test]
    fn server_settings_are_carried_over_and_the_rest_is_noted() {
        let import = import(RICH).unwrap();
        let (c, notes) = (&import.config, &import.notes);
        let f: Vec<_> = c.frontends.iter().map(|f| (f.name.as_str(), f.bind.as_str())).collect();
        assert_eq!(f, [("web", "*:8080"), ("web-2", "198.18.0.10:8443")]);
        let b = &c.backends[0];
        let servers: Vec<_> = b.servers.iter().map(|s| (s.name.as_str(), s.weight, s.backup)).collect();
        assert_eq!(servers, [("a", 5, false), ("b", 1, true)]);
        let k = &b.check;
        assert_eq!(k.kind, CheckKind::Https);
        assert_eq!((k.path.as_str(), k.host.as_deref()), ("/ready", Some("pool.local")));
        assert_eq!((k.inter, k.rise, k.fall), (Dur(Duration::from_secs(1)), 3, 2));
        assert_eq!(k.timeout, Some(Dur(Duration::from_secs(1))));
        assert_eq!(k.verify, Verify::Required);
        assert_eq!(k.ca_file.as_deref(), Some(Path::new("/etc/xdplb/ca.pem")));
        assert_eq!(k.crt.as_deref(), Some(Path::new("/etc/xdplb/client.pem")));
        assert_eq!(k.key, k.crt);
        assert_eq!((k.expect_status, k.expect_string.as_deref()), (200, None));
        for needle in [
            "line 12: `mode http` in frontend web",
            "line 16: `balance leastconn`: xdplb balances round robin only",
            "line 19: `http-check expect rstring ^ok`: xdplb does not support regular expressions",
            "line 22: server c skipped: \"etcd3.example\" is not an IPv4 address",
            "line 23: `frobnicate on` not translated",
            "backend pool: servers disagree on `inter` (a and b)",
            "backend pool: HAProxy's `crt` is one PEM with certificate and key",
        ] {
            assert!(has(notes, needle), "missing {needle:?} in {notes:#?}");
        }
        assert!(!has(notes, "line 2: ") && !has(notes, "tcplog") && !has(notes, "timeout connect"), "{notes:#?}");
    }

    #[test]
    fn a_frontend_sending_to_no_backend_is_an_error() {
        let cfg = "frontend f\n bind :80\n default_backend nope\nbackend b\n server s 198.18.0.21:80\n";
        match import(cfg) {
            Err(ImportError::UnknownBackend { line: 3, frontend, backend, known }) => {
                assert_eq!((frontend.as_str(), backend.as_str(), known), ("f", "nope", vec!["b".to_string()]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn structural_faults_are_errors() {
        let e = import("backend b\n server s\n").unwrap_err();
        assert!(matches!(e, ImportError::ServerWithoutAddress { line: 2, .. }), "{e}");
        let e = import("# nothing here\n\n").unwrap_err();
        assert!(matches!(e, ImportError::NothingToImport { .. }), "{e}");
        let e = import("backend b\n server s 198.18.0.21:80\nbackend b\n").unwrap_err();
        assert!(matches!(e, ImportError::DuplicateSection { line: 3, first: 1, .. }), "{e}");
        let e = import("frontend\n").unwrap_err();
        assert!(matches!(e, ImportError::MissingSectionName { line: 1, .. }), "{e}");
    }

    #[test]
    fn check_request_forms() {
        let check = |lines: &str| {
            let cfg = format!("listen l\n bind :80\n{lines}\n server s 198.18.0.21:80 check\n");
            import(&cfg).unwrap().config.backends[0].check.clone()
        };
        assert_eq!(check(" option httpchk /old").path, "/old");
        assert_eq!(check(" option httpchk HEAD /v HTTP/1.1").path, "/v");
        let k = check(" option httpchk GET /h HTTP/1.1\\r\\nHost:\\ etcd.local");
        assert_eq!((k.path.as_str(), k.host.as_deref(), k.kind), ("/h", Some("etcd.local"), CheckKind::Http));
        let k = check(" option httpchk\n http-check send meth GET uri /livez\n http-check expect status 204");
        assert_eq!((k.path.as_str(), k.expect_status), ("/livez", 204));
        assert_eq!(check(" option tcp-check").kind, CheckKind::Tcp);
        assert_eq!(check("").kind, CheckKind::Tcp);
    }

    #[test]
    fn listen_defaults_and_default_server() {
        let cfg = "\
defaults
  default-server check check-ssl verify none inter 5s on-marked-down shutdown-sessions observe layer4 error-limit 4
  option httpchk GET /readyz
listen api 198.18.0.10:6443
  server m1 198.18.0.21:6443 sni str(kubernetes)
  server m2 198.18.0.22 weight 2
";
        let import = import(cfg).unwrap();
        let c = &import.config;
        assert_eq!((c.frontends[0].name.as_str(), c.frontends[0].backend.as_str()), ("api", "api"));
        let b = &c.backends[0];
        assert_eq!(b.servers[1].address, "198.18.0.22:6443");
        assert!(has(&import.notes, "server m2 has no port"));
        let k = &b.check;
        assert_eq!((k.kind, k.verify, k.inter), (CheckKind::Https, Verify::None, Dur(Duration::from_secs(5))));
        assert_eq!((k.on_marked_down, k.observe, k.error_limit), (OnMarkedDown::ShutdownSessions, Observe::Layer4, 4));
        assert_eq!(k.sni.as_deref(), Some("kubernetes"));
        assert!(has(&import.notes, "servers disagree on `sni` (m1 and m2)"), "{:#?}", import.notes);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }

    #[test]
    fn unchecked_servers_stay_unchecked() {
        let import = import("listen l\n bind :80\n server s 198.18.0.21:80\n").unwrap();
        let b = &import.config.backends[0];
        assert!(!b.servers[0].check);
        assert_eq!(b.check.kind, CheckKind::None);
    }

    #[test]
    fn words_are_split_like_haproxy() {
        assert_eq!(split_words("  a\t\"b c\" 'd\\e' f\\ g # h").unwrap(), ["a", "b c", "d\\e", "f g"]);
        assert!(split_words("a \"b").is_err());
        assert!(split_words("a \\").is_err());
    }

    #[test]
    fn no_input_panics() {
        let mut inputs: Vec<String> = Vec::new();
        for text in [SEED, RICH] {
            for (i, _) in text.char_indices() {
                inputs.push(text[..i].to_string());
                inputs.push(text[i..].to_string());
            }
        }
        inputs.extend(
            ["server", "listen x\nserver", "listen x\n bind", "frontend f from", "\"", "listen l :\n", "listen l :80\n server s :\n"]
                .map(String::from),
        );
        for input in &inputs {
            if let Ok(i) = import(input) {
                let _ = to_toml(&i);
            }
        }
    }
}
