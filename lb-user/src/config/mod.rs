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
        assert_eq!("1h".parse::<Dur>().unwrap().0, Duration::from_hours(1));
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
}
