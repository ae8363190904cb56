//! Imports an haproxy.cfg into xdplb's configuration: frontends with their source allowlists,
//! backends, servers and their health checks. Where xdplb cannot do what HAProxy would, nothing
//! is guessed: the line becomes a note for the operator, with a severity (`notes`): an `error`
//! when the result would lose traffic, health or access control, and `import-haproxy` then
//! refuses unless told to accept the differences. Structural faults (a frontend sending to a
//! backend that does not exist, a server without an address, nothing usable at all) stop the
//! import.
//!
//! The import runs in stages, one file each: `lex` splits lines into words the way HAProxy
//! does, `raw` holds the sections as written, `parse` reads directives into them, `access`
//! turns ACL rules into allowlists, `translate` turns the rest into xdplb's configuration, and
//! `host` fills in what the host decides (interfaces, addresses of names, NAT ports).

mod access;
mod host;
mod lex;
mod notes;
mod parse;
mod raw;
mod translate;

use std::{fmt::Write as _, net::IpAddr};

pub use notes::{Note, Severity};

use crate::config::Config;

/// A translated configuration and what could not be translated faithfully, errors first.
#[derive(Debug, Clone)]
pub struct Import {
    pub config: Config,
    pub notes: Vec<Note>,
}

impl Import {
    /// The notes that make `import-haproxy` refuse (unless `--accept-differences`).
    pub fn errors(&self) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(|n| n.severity == Severity::Error)
    }
}

/// What the import takes from the host rather than from the haproxy.cfg.
pub struct ImportOptions<'a> {
    /// `global.interfaces` (`--iface`, or the host's default-route interface); empty: none
    /// known, said in an error note (the shipped unit refuses a configuration without one).
    pub interfaces: Vec<String>,
    /// Resolves a server's host name to an address (IPv4 preferred); `None`: names are refused
    /// (`--no-resolve`).
    pub resolve: Option<&'a Resolve<'a>>,
}

/// A host name's address, if it has one.
pub type Resolve<'a> = dyn Fn(&str) -> Option<IpAddr> + 'a;

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
    NothingToImport { notes: Vec<Note> },
}

fn notes_suffix(notes: &[Note]) -> String {
    notes.iter().fold(String::new(), |mut out, n| {
        let _ = write!(out, "\n  - {n}");
        out
    })
}

/// Translates `text` (an haproxy.cfg) into a `Config`, with a note for everything that is not
/// translated or behaves differently in xdplb.
pub fn import(text: &str, opts: &ImportOptions) -> Result<Import, ImportError> {
    let mut parser = parse::Parser::new(opts);
    for (i, raw) in text.lines().enumerate() {
        match lex::split_words(raw) {
            Ok(words) if words.is_empty() => {}
            Ok(words) => parser.line(&lex::Line { no: i + 1, words })?,
            Err(why) => parser.notes.warn(format!("line {}: {why}; line not translated", i + 1)),
        }
    }
    parser.finish()
}

/// The TOML text for `import.config`, headed by a comment saying it was imported and by the
/// notes, errors first.
pub fn to_toml(import: &Import) -> String {
    let mut out = String::from("# Imported from an haproxy.cfg by xdplb: review it before use.\n");
    if !import.notes.is_empty() {
        let errors = import.errors().count();
        let _ = writeln!(
            out,
            "#\n# Not translated, or translated with a difference ({errors} error{}: {}):",
            if errors == 1 { "" } else { "s" },
            if errors == 0 {
                "none loses traffic, health or access control"
            } else {
                "this file does NOT behave like the haproxy.cfg"
            }
        );
        for note in &import.notes {
            // TOML comments may not hold control characters; notes can quote input that does.
            let clean: String = note.to_string().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            let _ = writeln!(out, "#   - {clean}");
        }
    }
    out.push('\n');
    match toml::to_string(&import.config) {
        Ok(body) => out.push_str(&body),
        Err(e) => {
            let _ = writeln!(out, "# the configuration could not be written as TOML: {e}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::*;
    use crate::config::{Balance, CheckKind, Dur, ExpectStatus, Observe, OnMarkedDown, Verify};
    use lex::split_words;

    /// The seed's two blocks, verbatim: one copy, shared with the end-to-end tests.
    const SEED: &str = include_str!("../../../../integration/fixtures/seed-haproxy.cfg");

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

    fn has(notes: &[Note], needle: &str) -> bool {
        notes.iter().any(|n| n.text.contains(needle))
    }

    /// Names resolve as the test says, not as this host would.
    fn test_resolve(host: &str) -> Option<std::net::IpAddr> {
        (host == "etcd3.example").then_some(std::net::IpAddr::from([198, 18, 0, 23]))
    }

    fn import(text: &str) -> Result<Import, ImportError> {
        super::import(text, &ImportOptions { interfaces: vec!["eth0".into()], resolve: Some(&test_resolve) })
    }

    #[test]
    fn seed_imports_to_the_equivalent_xdplb_config() {
        let import = import(SEED).unwrap();
        let c = &import.config;
        let f: Vec<_> = c.frontends.iter().map(|f| (f.name.as_str(), f.bind.text(), f.backend.as_str())).collect();
        assert_eq!(f, [("in-etcd", "*:12379", "etcd-cluster"), ("in-apiserver", "*:16443", "apiserver-cluster")]);
        assert_eq!(c.backends.len(), 2);
        for (b, path, string, port) in
            [(&c.backends[0], "/health", "true", 2379), (&c.backends[1], "/healthz", "ok", 6443)]
        {
            assert_eq!(b.servers.len(), 3);
            assert_eq!(b.servers[0].address.text(), format!("10.211.55.9:{port}"));
            assert!(b.servers.iter().all(|s| s.check && s.weight == 1 && !s.backup));
            let k = &b.check;
            assert_eq!(k.kind, CheckKind::Https);
            assert_eq!(k.verify, Verify::None);
            assert_eq!(
                (k.path.as_str(), k.expect_string.as_deref(), k.expect_status),
                (path, Some(string), ExpectStatus::HAPROXY_DEFAULT)
            );
            assert_eq!((k.inter, k.rise, k.fall), (Dur(Duration::from_secs(2)), 2, 3));
        }
        assert!(c.problems().is_empty(), "{}", c.problems());
        // Per backend, one note on HAProxy's status-blind `expect string` and one on redispatch
        // (the seed has no `option redispatch`), the interfaces, and nothing else; no error.
        assert_eq!(import.notes.len(), 5, "{:#?}", import.notes);
        assert_eq!(import.errors().count(), 0, "{:#?}", import.notes);
        assert!(has(&import.notes, "backend apiserver-cluster: no `option redispatch`"));
        assert!(c.backends.iter().all(|b| b.redispatch && b.retries == 3 && b.suspect_after == 3));
        assert!(has(
            &import.notes,
            "backend etcd-cluster: HAProxy's `http-check expect string true` ignores the status"
        ));

        let text = to_toml(&import);
        assert!(text.starts_with("# Imported from an haproxy.cfg"), "{text}");
        assert!(text.contains("#   - info: line 18: backend apiserver-cluster: "), "{text}");
        let back = Config::parse(&text, Path::new("x.toml")).unwrap();
        assert_eq!(&back, c);
    }

    #[test]
    fn server_settings_are_carried_over_and_the_rest_is_noted() {
        let import = import(RICH).unwrap();
        let (c, notes) = (&import.config, &import.notes);
        let f: Vec<_> = c.frontends.iter().map(|f| (f.name.as_str(), f.bind.text())).collect();
        assert_eq!(f, [("web", "*:8080"), ("web-2", "198.18.0.10:8443")]);
        let b = &c.backends[0];
        let servers: Vec<_> = b.servers.iter().map(|s| (s.name.as_str(), s.weight, s.backup)).collect();
        assert_eq!(servers, [("a", 5, false), ("b", 1, true), ("c", 1, false)]);
        assert_eq!(b.servers[2].address.text(), "198.18.0.23:8080");
        assert_eq!(b.balance, Balance::Leastconn);
        let k = &b.check;
        assert_eq!(k.kind, CheckKind::Https);
        assert_eq!((k.path.as_str(), k.host.as_deref()), ("/ready", Some("pool.local")));
        assert_eq!((k.inter, k.rise, k.fall), (Dur(Duration::from_secs(1)), 3, 2));
        assert_eq!(k.timeout, Some(Dur(Duration::from_secs(1))));
        assert_eq!(k.verify, Verify::Required);
        assert_eq!(k.ca_file.as_deref(), Some(Path::new("/etc/xdplb/ca.pem")));
        assert_eq!(k.crt.as_deref(), Some(Path::new("/etc/xdplb/client.pem")));
        assert_eq!(k.key, k.crt);
        assert_eq!((k.expect_status, k.expect_string.as_deref()), (ExpectStatus::HAPROXY_DEFAULT, None));
        for needle in [
            "line 12: `mode http` applies to frontend web",
            "line 19: `http-check expect rstring ^ok`: xdplb does not support regular expressions",
            "line 22: server c: \"etcd3.example\" resolved at import to 198.18.0.23",
            "line 23: `frobnicate on` not translated",
            "backend pool: servers disagree on `inter` (a and b)",
            "backend pool: HAProxy's `crt` is one PEM with certificate and key",
        ] {
            assert!(has(notes, needle), "missing {needle:?} in {notes:#?}");
        }
        assert!(
            !has(notes, "line 16: ")
                && !has(notes, "line 2: ")
                && !has(notes, "tcplog")
                && !has(notes, "timeout connect"),
            "{notes:#?}"
        );
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
        assert_eq!((k.path.as_str(), k.expect_status), ("/livez", ExpectStatus::one(204)));
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
        assert_eq!(b.servers[1].address.text(), "198.18.0.22:6443");
        assert!(has(&import.notes, "server m2 has no port"));
        let k = &b.check;
        assert_eq!((k.kind, k.verify, k.inter), (CheckKind::Https, Verify::None, Dur(Duration::from_secs(5))));
        assert_eq!((k.on_marked_down, k.observe, k.error_limit), (OnMarkedDown::ShutdownSessions, Observe::Layer4, 4));
        assert_eq!(k.sni.as_deref(), Some("kubernetes"));
        assert!(has(&import.notes, "servers disagree on `sni` (m1 and m2)"), "{:#?}", import.notes);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }

    #[test]
    fn access_rules_become_an_allowlist_only_when_they_are_plain_source_networks() {
        let allow = |rules: &str| {
            let cfg = format!(
                "frontend f\n bind :2379\n{rules}\n default_backend b\nbackend b\n server s 198.18.0.21:2379\n"
            );
            let i = import(&cfg).unwrap();
            let nets: Vec<String> = i.config.frontends[0].allow.iter().map(|c| c.text().to_owned()).collect();
            (nets, i.errors().count())
        };
        let ok = |nets: &[&str]| (nets.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), 0);
        assert_eq!(allow(" acl in src 10.1.2.3/8\n tcp-request connection reject unless in"), ok(&["10.0.0.0/8"]));
        assert_eq!(allow(" tcp-request connection reject if !{ src 198.18.0.0/24 }"), ok(&["198.18.0.0/24"]));
        assert_eq!(allow(" tcp-request content reject if ! { src 198.18.0.7 }"), ok(&["198.18.0.7/32"]));
        assert_eq!(
            allow(" acl a src 198.18.0.0/24\n tcp-request connection accept if a\n tcp-request connection reject"),
            ok(&["198.18.0.0/24"])
        );
        // Nothing refused: nothing to translate, nothing lost.
        assert_eq!(allow(" tcp-request connection accept if { src 198.18.0.0/24 }"), ok(&[]));
        // What cannot be kept is an error, and nobody is shut out by a guess.
        for lost in [
            " acl a src 198.18.0.0/24\n acl b dst_port 2379\n tcp-request connection reject if !a || !b",
            " acl a src_port 1024:65535\n tcp-request connection reject if !a",
            " tcp-request connection reject if !nosuchacl",
            " tcp-request connection reject if { src 198.18.0.0/24 }",
            " acl a src 198.18.0.0/24\n tcp-request connection reject if !a\n tcp-request connection reject if !a",
        ] {
            let (nets, errors) = allow(lost);
            assert!(nets.is_empty() && errors >= 1, "{lost}: {nets:?}, {errors} errors");
        }
    }

    #[test]
    fn check_connect_is_translated_and_a_second_sequence_is_said() {
        let cfg = "listen l\n bind :6443\n option httpchk\n http-check connect port 6444 ssl sni api.lab\n http-check send meth GET uri /readyz\n server s 198.18.0.21:6443 check verify none\n";
        let i = import(cfg).unwrap();
        let k = &i.config.backends[0].check;
        assert_eq!(
            (k.kind, k.port, k.sni.as_deref(), k.path.as_str()),
            (CheckKind::Https, Some(6444), Some("api.lab"), "/readyz")
        );
        assert_eq!(k.expect_status, ExpectStatus::HAPROXY_DEFAULT);
        assert_eq!(i.errors().count(), 0, "{:#?}", i.notes);
        let two = "listen l\n bind :80\n option httpchk\n http-check connect\n http-check send meth GET uri /a\n http-check connect\n http-check send meth GET uri /b\n server s 198.18.0.21:80 check\n";
        let i = import(two).unwrap();
        assert_eq!(i.config.backends[0].check.path, "/b");
        assert!(has(&i.notes, "line 6: a second check sequence (the first `connect` is at line 4)"), "{:#?}", i.notes);
        // A transport the check cannot keep is an error, not a plain HTTP check on a TLS port.
        let lost =
            "listen l\n bind :80\n option httpchk\n http-check connect proto h2\n server s 198.18.0.21:80 check\n";
        assert_eq!(import(lost).unwrap().errors().count(), 1);
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
            [
                "server",
                "listen x\nserver",
                "listen x\n bind",
                "frontend f from",
                "\"",
                "listen l :\n",
                "listen l :80\n server s :\n",
            ]
            .map(String::from),
        );
        for input in &inputs {
            if let Ok(i) = import(input) {
                let _ = to_toml(&i);
            }
        }
    }

    /// A frontend with `bind_line` before one backend with `servers` (each a `server` line's
    /// address and options).
    fn dual(bind_line: &str, servers: &[&str]) -> Result<Import, ImportError> {
        let servers: Vec<String> = servers.iter().enumerate().map(|(i, s)| format!("  server m{i} {s}\n")).collect();
        import(&format!(
            "defaults\n  mode tcp\nfrontend f\n  {bind_line}\n  default_backend b\nbackend b\n{}",
            servers.concat()
        ))
    }

    fn binds(i: &Import) -> Vec<&str> {
        i.config.frontends.iter().map(|f| f.bind.text()).collect()
    }

    #[test]
    fn ipv6_binds_are_translated_as_haproxy_reads_them() {
        let both = ["[2001:db8::1]:6443 check", "198.18.0.21:6443 check"];
        for (bind, want) in [
            ("bind :::16444", "*:16444"),
            ("bind [::]:16443", "*:16443"),
            ("bind ipv6@:16443", "*:16443"),
            ("bind :16443 v4v6", "*:16443"),
            ("bind *:16443", "*:16443"),
            ("bind 2001:db8::10:16443", "[2001:db8::10]:16443"),
            ("bind [2001:db8::10]:16443", "[2001:db8::10]:16443"),
            ("bind ipv4@198.18.0.10:16443", "198.18.0.10:16443"),
        ] {
            let i = dual(bind, &both).unwrap();
            assert_eq!(binds(&i), vec![want], "{bind}");
            assert_eq!(i.errors().count(), 0, "{bind}: {:#?}", i.notes);
            assert!(!has(&i.notes, "not translated"), "{bind}: v4v6 is taken: {:#?}", i.notes);
        }
        // A family prefix that does not match the address, another socket family.
        for bind in ["bind ipv4@2001:db8::10:16443", "bind unix@/run/x.sock", "bind udp@:16443"] {
            let i = dual(bind, &both);
            assert!(i.is_err() || i.as_ref().is_ok_and(|i| i.errors().count() > 0), "{bind}");
        }
    }

    #[test]
    fn ipv6_servers_are_translated_in_each_of_haproxys_forms() {
        let i = dual(
            "bind :::6443",
            &["[2001:db8::1]:6443 check", "2001:db8::2:6443 check", "ipv6@2001:db8::3:6443", "ipv6@[2001:db8::4]:6443"],
        )
        .unwrap();
        let addrs: Vec<&str> = i.config.backends[0].servers.iter().map(|s| s.address.text()).collect();
        assert_eq!(addrs, ["[2001:db8::1]:6443", "[2001:db8::2]:6443", "[2001:db8::3]:6443", "[2001:db8::4]:6443"]);
        // `:::6443` accepts IPv4 too (bindv6only=0): IPv4 clients lose their servers.
        assert!(has(
            &i.notes,
            "HAProxy accepted IPv4 clients here and connected them to the IPv6 servers of backend b"
        ));
        assert!(i.notes.iter().all(|n| n.severity != Severity::Error), "{:#?}", i.notes);
        // ipv4@ with an IPv6 address is not a server.
        let i = dual("bind :::6443", &["ipv4@2001:db8::1:6443", "[2001:db8::2]:6443"]).unwrap();
        assert_eq!(i.config.backends[0].servers.len(), 1);
        assert!(has(&i.notes, "server m0 skipped"));
    }

    #[test]
    fn a_dual_stack_pair_of_binds_folds_into_one_frontend() {
        let i = import(
            "defaults\n  mode tcp\nfrontend f\n  bind *:6443\n  bind :::6443 v6only\n  default_backend b\nbackend b\n  server a 198.18.0.21:6443\n  server b [2001:db8::21]:6443\n",
        )
        .unwrap();
        assert_eq!(binds(&i), vec!["*:6443"]);
        assert!(has(&i.notes, "bind \":::6443\" folded into \"*:6443\""), "{:#?}", i.notes);
        assert_eq!(i.errors().count(), 0, "{:#?}", i.notes);
        assert!(i.config.problems().is_empty(), "{}", i.config.problems());
    }

    #[test]
    fn an_ipv6_only_bind_to_ipv4_servers_is_an_error() {
        let i = dual("bind 2001:db8::10:6443", &["198.18.0.21:6443"]).unwrap();
        assert!(
            i.errors()
                .any(|n| n.text.contains(
                    "HAProxy accepted IPv6 clients here and connected them to the IPv4 servers of backend b"
                ) && n.text.contains("nothing is")),
            "{:#?}",
            i.notes
        );
        // v6only on the any address: IPv6 only in HAProxy, IPv4 servers only here.
        let i = dual("bind :::6443 v6only", &["198.18.0.21:6443"]).unwrap();
        assert!(has(&i.notes, "cannot be IPv6 only"), "{:#?}", i.notes);
        assert!(i.errors().count() > 0, "{:#?}", i.notes);
    }

    #[test]
    fn ipv6_sources_and_acl_networks_are_translated() {
        let i = import(
            "defaults\n  mode tcp\nfrontend f\n  bind :::6443\n  acl ok src 2001:db8::/32 198.18.0.0/24\n  tcp-request connection reject if !ok\n  default_backend b\nbackend b\n  source 2001:db8::10\n  server a [2001:db8::21]:6443\n",
        )
        .unwrap();
        assert_eq!(i.config.backends[0].source, vec!["2001:db8::10".parse::<std::net::IpAddr>().unwrap()]);
        let allow: Vec<&str> = i.config.frontends[0].allow.iter().map(crate::config::Parsed::text).collect();
        assert_eq!(allow, ["2001:db8::/32", "198.18.0.0/24"], "{:#?}", i.notes);
    }
}
