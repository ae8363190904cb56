//! The units a configuration writes as text: durations, port ranges, bind and server
//! addresses. Each parses from the file's text and writes back the same way.

use std::{fmt, net::SocketAddrV4, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

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
        let n: u64 =
            num.parse().map_err(|_| format!("{s:?} is not a duration: write e.g. \"2s\", \"500ms\", \"1h\""))?;
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
        let bad =
            || format!("{s:?} is not ADDR:PORT: write it as \"*:12379\" or \"198.18.0.10:12379\" (IPv4, port 1-65535)");
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
    let addr: SocketAddrV4 =
        s.parse().map_err(|_| format!("{s:?} is not IPv4:PORT: write it as \"198.18.0.21:2379\""))?;
    if addr.port() == 0 {
        return Err(format!("{s:?}: port 0 is not a server port; use 1-65535"));
    }
    if addr.ip().is_unspecified() || addr.ip().is_broadcast() || addr.ip().is_multicast() {
        return Err(format!("{s:?}: {} cannot be a server address", addr.ip()));
    }
    Ok(addr)
}
