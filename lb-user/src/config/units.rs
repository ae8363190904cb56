//! The units a configuration writes as text: durations, port ranges, bind and server
//! addresses. Each parses from the file's text and writes back the same way.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Text that is not the unit it should be; each says how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is not a duration: write e.g. \"2s\", \"500ms\", \"1h\"")]
    Duration(String),
    #[error("{0:?} is too long a duration: write at most \"365d\"")]
    DurationOverflow(String),
    #[error("{text:?}: unknown unit {unit:?}; use us, ms, s, m, h or d")]
    DurationUnit { text: String, unit: String },
    #[error("{0:?} is not a port range: write it as \"40000-59999\" (1-65535)")]
    PortRange(String),
    #[error("{0:?} is not ADDR:PORT: write it as \"*:12379\" or \"198.18.0.10:12379\" (IPv4, port 1-65535)")]
    Bind(String),
    #[error("{0:?} is not IPv4:PORT: write it as \"198.18.0.21:2379\"")]
    ServerAddr(String),
    #[error("{0:?}: port 0 is not a server port; use 1-65535")]
    ServerPortZero(String),
    #[error("{text:?}: {ip} cannot be a server address")]
    ServerIp { text: String, ip: Ipv4Addr },
    #[error("unknown XDP mode {0:?}: use auto, native or generic")]
    XdpMode(String),
    #[error("{0:?} is not an IPv4 network: write it as \"10.0.0.0/8\" or \"198.18.0.7\" (one address)")]
    Cidr(String),
    #[error("{0:?} has bits set past its /{1}: write the network's first address, {2}/{1}")]
    CidrHostBits(String, u8, Ipv4Addr),
    #[error("{0:?} is not an HTTP status or range: write 200, or \"200-399\" (HAProxy's default: 2xx and 3xx)")]
    Status(String),
}

/// A value written as text: kept as written (for messages, and to write the file back) and
/// parsed once, when the file is read. Text that does not parse waits for validation, which
/// reports it with its place among every other problem; later stages take the parsed value.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T> {
    text: String,
    value: Result<T, UnitError>,
}

impl<T: FromStr<Err = UnitError>> Parsed<T> {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let value = text.parse();
        Parsed { text, value }
    }
}

impl<T> Parsed<T> {
    /// The text as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value, or why the text is not one.
    pub fn value(&self) -> Result<&T, &UnitError> {
        self.value.as_ref()
    }

    /// The value; `None` only in a configuration that validation refused.
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref().ok()
    }
}

impl<T: FromStr<Err = UnitError>> From<&str> for Parsed<T> {
    fn from(text: &str) -> Self {
        Parsed::new(text)
    }
}

impl<T: FromStr<Err = UnitError>> From<String> for Parsed<T> {
    fn from(text: String) -> Self {
        Parsed::new(text)
    }
}

impl<T> fmt::Display for Parsed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de, T: FromStr<Err = UnitError>> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Parsed::new)
    }
}

impl<T> Serialize for Parsed<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A duration written HAProxy's way: `2s`, `500ms`, `1m`, `1h`, `1d`, or a bare number of
/// milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let too_long = || UnitError::DurationOverflow(s.into());
        let n: u64 = num.parse().map_err(|e: std::num::ParseIntError| match e.kind() {
            std::num::IntErrorKind::PosOverflow => too_long(),
            _ => UnitError::Duration(s.into()),
        })?;
        let per_ms = match unit {
            "" | "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "us" => return Dur::at_most_a_year(Duration::from_micros(n)).ok_or_else(too_long),
            _ => return Err(UnitError::DurationUnit { text: s.into(), unit: unit.into() }),
        };
        let ms = n.checked_mul(per_ms).ok_or_else(too_long)?;
        Dur::at_most_a_year(Duration::from_millis(ms)).ok_or_else(too_long)
    }
}

impl Dur {
    /// The longest duration a configuration may hold: a year. Longer ones are typing mistakes,
    /// and sums of them (a deadline, inter * fall) could overflow a clock.
    pub const MAX: Duration = Duration::from_hours(365 * 24);

    fn at_most_a_year(d: Duration) -> Option<Dur> {
        (d <= Dur::MAX).then_some(Dur(d))
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
            Raw::Ms(ms) => Dur::at_most_a_year(Duration::from_millis(ms))
                .ok_or_else(|| serde::de::Error::custom(UnitError::DurationOverflow(ms.to_string()))),
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
        u32::from(self.last) - u32::from(self.first) + 1
    }
}

impl FromStr for PortRange {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bad = || UnitError::PortRange(s.into());
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
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bad = || UnitError::Bind(s.into());
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
pub fn parse_server_addr(s: &str) -> Result<SocketAddrV4, UnitError> {
    let addr: SocketAddrV4 = s.parse().map_err(|_| UnitError::ServerAddr(s.into()))?;
    if addr.port() == 0 {
        return Err(UnitError::ServerPortZero(s.into()));
    }
    let ip = *addr.ip();
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(UnitError::ServerIp { text: s.into(), ip });
    }
    Ok(addr)
}

/// A server address as the configuration holds it: `IPv4:PORT`, neither port 0 nor an address
/// no server can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerAddr(pub SocketAddrV4);

impl FromStr for ServerAddr {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_server_addr(s).map(ServerAddr)
    }
}

/// An IPv4 network, `ADDR/PREFIX` (a bare address is a /32), with no bits set past the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr)
    }
}

impl FromStr for Cidr {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bad = || UnitError::Cidr(s.into());
        let (addr, prefix) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
        let net = Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)),
            prefix,
        };
        if net.addr != addr {
            return Err(UnitError::CidrHostBits(s.into(), prefix, net.addr));
        }
        Ok(net)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The HTTP statuses a check accepts: one (`200`) or a range (`"200-399"`, HAProxy's default
/// when no `http-check expect` is given). Written as a number when it is one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExpectStatus {
    pub first: u16,
    pub last: u16,
}

impl ExpectStatus {
    pub const fn one(status: u16) -> Self {
        Self { first: status, last: status }
    }
    /// HAProxy's expectation when `http-check expect` is not given: 2xx and 3xx.
    pub const HAPROXY_DEFAULT: Self = Self { first: 200, last: 399 };
    pub fn accepts(&self, status: u16) -> bool {
        (self.first..=self.last).contains(&status)
    }
}

impl FromStr for ExpectStatus {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bad = || UnitError::Status(s.into());
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if last < first {
            return Err(bad());
        }
        Ok(Self { first, last })
    }
}

impl fmt::Display for ExpectStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl<'de> Deserialize<'de> for ExpectStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumberOrText {
            Number(u16),
            Text(String),
        }
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => Ok(Self::one(n)),
            NumberOrText::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ExpectStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.serialize_str(&self.to_string())
        }
    }
}
