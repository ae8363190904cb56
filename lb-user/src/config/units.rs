//! The units a configuration writes as text: durations, port ranges, bind and server
//! addresses. Each parses from the file's text and writes back the same way.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
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
    #[error("{0:?} is not ADDR:PORT: write it as \"*:12379\" (every address, both families), \"198.18.0.10:12379\" or \"[2001:db8::10]:12379\" (IPv6 in brackets), port 1-65535")]
    Bind(String),
    #[error("{0:?} is not ADDR:PORT: write it as \"198.18.0.21:2379\" or \"[2001:db8::21]:2379\" (IPv6 in brackets)")]
    ServerAddr(String),
    #[error("{0:?}: port 0 is not a server port; use 1-65535")]
    ServerPortZero(String),
    #[error("{text:?}: {ip} cannot be a server address")]
    ServerIp { text: String, ip: IpAddr },
    #[error("{text:?}: {ip} is a link-local address, which needs an interface to mean anything; give the server's global or unique-local address")]
    ServerLinkLocal { text: String, ip: Ipv6Addr },
    #[error("unknown XDP mode {0:?}: use auto, native or generic")]
    XdpMode(String),
    #[error("{0:?} is not a network: write it as \"10.0.0.0/8\", \"198.18.0.7\" (one address), \"2001:db8::/32\" or \"2001:db8::7\"")]
    Cidr(String),
    #[error("{0:?} has bits set past its /{1}: write the network's first address, {2}/{1}")]
    CidrHostBits(String, u8, IpAddr),
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
/// `Any` covers both families (IPv6: global and unique-local addresses, never link-local), for
/// the families its backend has servers of; `Addr` covers that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bind {
    Any(u16),
    Addr(SocketAddr),
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
            // Every address of both families: HAProxy's `:::PORT` on Linux (bindv6only=0) too.
            "*" | "" | "0.0.0.0" | "[::]" => Ok(Bind::Any(port)),
            h => {
                let ip: IpAddr = match h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                    Some(v6) => IpAddr::V6(v6.parse().map_err(|_| bad())?),
                    None => IpAddr::V4(h.parse().map_err(|_| bad())?),
                };
                if ip.is_unspecified() {
                    return Ok(Bind::Any(port));
                }
                Ok(Bind::Addr(SocketAddr::new(ip, port)))
            }
        }
    }
}

/// Whether `ip` is an IPv6 link-local address (fe80::/10): never served, never a server.
pub fn is_link_local6(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// A server address, `IPv4:PORT` or `[IPv6]:PORT`.
pub fn parse_server_addr(s: &str) -> Result<SocketAddr, UnitError> {
    let addr: SocketAddr = s.parse().map_err(|_| UnitError::ServerAddr(s.into()))?;
    if addr.port() == 0 {
        return Err(UnitError::ServerPortZero(s.into()));
    }
    let ip = addr.ip();
    let unusable = match ip {
        IpAddr::V4(v4) => v4.is_broadcast(),
        IpAddr::V6(v6) if is_link_local6(&v6) => return Err(UnitError::ServerLinkLocal { text: s.into(), ip: v6 }),
        IpAddr::V6(_) => false,
    };
    if ip.is_unspecified() || ip.is_multicast() || unusable {
        return Err(UnitError::ServerIp { text: s.into(), ip });
    }
    Ok(addr)
}

/// A server address as the configuration holds it: `IPv4:PORT` or `[IPv6]:PORT`, neither port
/// 0 nor an address no server can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerAddr(pub SocketAddr);

impl FromStr for ServerAddr {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_server_addr(s).map(ServerAddr)
    }
}

/// A network of either family, `ADDR/PREFIX` (a bare address is a /32 or a /128), with no bits
/// set past the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// `ip` with the bits past `prefix` cleared (`prefix` at most the family's width).
pub fn network_of(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

impl Cidr {
    /// Whether `ip` is in this network (never for an address of the other family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && network_of(ip, self.prefix) == self.addr
    }
}

impl FromStr for Cidr {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bad = || UnitError::Cidr(s.into());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix {
            Some(p) => p.parse().ok().filter(|p| *p <= width).ok_or_else(bad)?,
            None => width,
        };
        let net = Cidr { addr: network_of(addr, prefix), prefix };
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
