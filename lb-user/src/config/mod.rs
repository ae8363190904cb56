//! The configuration file (TOML): parsed and validated completely, every problem reported at
//! once with its place and a fix, before anything touches the kernel. `schema` says what the
//! file may hold, `units` how its values are written, `validate` what makes it refusable,
//! `haproxy` how an haproxy.cfg becomes one.

pub mod haproxy;
mod schema;
mod units;
mod validate;

use std::path::{Path, PathBuf};

use crate::problems::Problems;

pub use schema::*;
pub use units::*;
pub use validate::{bind_unserved, certificates, family, group_id, private_key, sync_key, PemError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{}: {problems}", path.display())]
    Invalid { path: PathBuf, problems: Problems },
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?;
        let problems = config.problems();
        problems.into_result(config).map_err(|problems| ConfigError::Invalid { path: path.to_owned(), problems })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The seed's two frontends and backends (three servers each), as xdplb's TOML.
    fn seed() -> String {
        let backend = |name: &str, path: &str, expect: &str, port: u16| {
            let servers: Vec<String> =
                (1..=3).map(|i| format!("  {{ name = \"app{i}\", address = \"198.18.0.2{i}:{port}\" }},\n")).collect();
            format!(
                "[[backend]]\nname = \"{name}\"\ncheck = {{ type = \"https\", path = \"{path}\", \
                 expect_string = \"{expect}\", verify = \"none\" }}\nserver = [\n{}]\n",
                servers.concat()
            )
        };
        [
            "[[frontend]]\nname = \"in-etcd\"\nbind = \"*:12379\"\nbackend = \"etcd-cluster\"\n",
            "[[frontend]]\nname = \"in-apiserver\"\nbind = \"*:16443\"\nbackend = \"apiserver-cluster\"\n",
            &backend("etcd-cluster", "/health", "true", 2379),
            &backend("apiserver-cluster", "/healthz", "ok", 6443),
        ]
        .join("\n")
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn seed_frontends_parse_with_haproxy_defaults() {
        let c = parse(&seed()).unwrap();
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
        assert_eq!("1h".parse::<Dur>().unwrap().0, Duration::from_hours(1));
        assert_eq!("150".parse::<Dur>().unwrap().0, Duration::from_millis(150));
        assert!("2 parsecs".parse::<Dur>().is_err());
        assert_eq!("365d".parse::<Dur>().unwrap().0, Dur::MAX);
        for too_long in ["366d", "213503982335d", "18446744073709551616", "9999999999999999999999us"] {
            assert!(
                matches!(too_long.parse::<Dur>(), Err(UnitError::DurationOverflow(_))),
                "{too_long}: {:?}",
                too_long.parse::<Dur>()
            );
        }
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
        let all = problems.to_string();
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

    #[test]
    fn binds_servers_and_networks_of_both_families_parse() {
        let v6: std::net::SocketAddr = "[2001:db8::10]:12379".parse().unwrap();
        assert_eq!("[2001:db8::10]:12379".parse::<Bind>(), Ok(Bind::Addr(v6)));
        for any in ["*:12379", "[::]:12379", ":12379", "0.0.0.0:12379"] {
            assert_eq!(any.parse::<Bind>(), Ok(Bind::Any(12379)), "{any}");
        }
        // IPv6 needs its brackets: the port would be ambiguous.
        assert!("2001:db8::10:12379".parse::<Bind>().is_err());
        assert_eq!(
            "[2001:db8::1]:2379".parse::<ServerAddr>().map(|a| a.0.to_string()),
            Ok("[2001:db8::1]:2379".to_owned())
        );
        let e = "[fe80::1]:2379".parse::<ServerAddr>().unwrap_err().to_string();
        assert!(e.contains("fe80::1 is a link-local address"), "{e}");
        assert!("[ff02::1]:2379".parse::<ServerAddr>().is_err(), "multicast");
        assert!("[::]:2379".parse::<ServerAddr>().is_err(), "unspecified");
        let net: Cidr = "2001:db8::/32".parse().unwrap();
        assert_eq!((net.addr.to_string(), net.prefix), ("2001:db8::".to_owned(), 32));
        assert!(net.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!net.contains("2001:db9::1".parse().unwrap()));
        assert!(!net.contains("32.1.13.184".parse().unwrap()), "never an address of the other family");
        assert_eq!("2001:db8::7".parse::<Cidr>().map(|c| c.prefix), Ok(128));
        let e = "2001:db8::1/32".parse::<Cidr>().unwrap_err().to_string();
        assert!(e.contains("2001:db8::/32"), "{e}");
        assert!("2001:db8::/129".parse::<Cidr>().is_err());
    }

    /// One frontend and one backend, with the given bind, servers and source.
    fn one(bind: &str, servers: &[&str], source: &str) -> String {
        let servers: Vec<String> =
            servers.iter().enumerate().map(|(i, a)| format!("{{ name = \"s{i}\", address = \"{a}\" }}")).collect();
        format!(
            "[[frontend]]\nname = \"f\"\nbind = \"{bind}\"\nbackend = \"b\"\n[[backend]]\nname = \"b\"\n{source}\nserver = [{}]\n",
            servers.join(", ")
        )
    }

    fn refused(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn a_dual_stack_configuration_validates() {
        let text = one(
            "*:12379",
            &["198.18.0.21:2379", "[2001:db8::21]:2379"],
            "source = [\"198.18.0.10\", \"2001:db8::10\"]",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.backends[0].source.len(), 2);
        assert!(parse(&one("[2001:db8::10]:12379", &["[2001:db8::21]:2379"], "")).is_ok());
    }

    #[test]
    fn family_mismatches_are_refused_each_with_its_place_and_fix() {
        let said = refused(&one("[2001:db8::10]:12379", &["198.18.0.21:2379"], ""));
        assert!(
            said.iter().any(|l| l.contains("frontend[0] \"f\".bind: \"[2001:db8::10]:12379\" is an IPv6 address, and backend \"b\" has no IPv6 server")),
            "{said:#?}"
        );
        let said = refused(&one("*:12379", &["198.18.0.21:2379", "[2001:db8::21]:2379"], "source = \"198.18.0.10\""));
        assert!(
            said.iter().any(|l| l.contains("backend[0] \"b\".server[1] \"s1\".address: [2001:db8::21]:2379 is an IPv6 server, and the backend's source lists no IPv6 address")),
            "{said:#?}"
        );
        let said = refused(&one("*:12379", &["198.18.0.21:2379"], "source = [\"198.18.0.10\", \"2001:db8::10\"]"));
        assert!(
            said.iter().any(|l| l.contains(
                "backend[0] \"b\".source: 2001:db8::10 is an IPv6 address, and this backend has no IPv6 server"
            )),
            "{said:#?}"
        );
    }

    #[test]
    fn ipv6_loopback_and_link_local_binds_are_refused_with_the_reason() {
        let said = refused(&one("[::1]:12379", &["[2001:db8::21]:2379"], ""));
        assert!(
            said.iter().any(|l| l.contains("\"[::1]:12379\": local clients over IPv6 are not served yet")),
            "{said:#?}"
        );
        let said = refused(&one("[fe80::10]:12379", &["[2001:db8::21]:2379"], ""));
        assert!(
            said.iter().any(|l| l.contains("\"[fe80::10]:12379\": a link-local address (fe80::/10) is not served")),
            "{said:#?}"
        );
        // 127.0.0.1 stays the connect hook's.
        assert!(parse(&one("127.0.0.1:12379", &["198.18.0.21:2379"], "")).is_ok());
    }
}
