//! The per-connection log, in HAProxy's `option tcplog` format, made from the data path's flow
//! events: a line per connection when it ends (closed by a packet, or expired by the sweep).
//!
//! `%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq`, e.g.
//! `198.18.0.2:40112 [30/Nov/2026:23:15:07.123] front pool/app1 0/1/5007 212 -- 3/3/3/1/0 0/0`.
//! Times are milliseconds: no queue (`Tw` 0), the handshake (`Tc`: SYN to the client's ACK of
//! the server's SYN-ACK, `-1` if it never completed), the whole flow (`Tt`). `%B` is the payload
//! the server sent (from its sequence numbers). `%ts`: `--` both sides closed with FIN, `CD`/`SD`
//! client/server reset during data, `SC` the server refused the connection (RST to the SYN),
//! `CC` the client reset before it completed, `cD` idle past `idle_timeout`, `sC` the server
//! never answered (`syn_timeout`). Counts (`%ac/%fc/%bc/%sc`) are the open flows of the process,
//! frontend, backend and server as of the last sweep; `%rc` the redispatches; no queues.
//! The date is UTC.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lb_common::{
    Flow, FlowEvent, FlowKey, FLOW_EVENT_CLOSED, FLOW_EVENT_ESTABLISHED, FLOW_EVENT_EXPIRED, FLOW_SEEN_ESTABLISHED,
    FLOW_SEEN_PEER_RST, TCP_FIN, TCP_RST, TCP_SYN,
};

use super::snapshot::Snapshot;
use crate::{dataplane::flows::monotonic_ns, runtime::sess::Names};

/// Flows whose establishment was seen and whose end was not: at most this many are remembered
/// (the oldest half is forgotten beyond; their lines then say `Tc` -1).
const MAX_OPEN: usize = 1 << 20;

/// Turns flow events into log lines.
pub struct TcpLog {
    names: Arc<RwLock<Names>>,
    shared: Arc<RwLock<Snapshot>>,
    /// (client key, creation time) -> when the handshake completed (monotonic ns).
    established: HashMap<(FlowKey, u64), u64>,
}

impl TcpLog {
    pub fn new(names: Arc<RwLock<Names>>, shared: Arc<RwLock<Snapshot>>) -> Self {
        TcpLog { names, shared, established: HashMap::new() }
    }

    /// The line an event ends a connection with, if it does.
    pub fn event(&mut self, e: &FlowEvent) -> Option<String> {
        let id = (e.client_key, e.client.created_ns);
        match e.kind {
            FLOW_EVENT_ESTABLISHED => {
                if self.established.len() >= MAX_OPEN {
                    let mut times: Vec<u64> = self.established.values().copied().collect();
                    times.sort_unstable();
                    let cut = times.get(times.len() / 2).copied().unwrap_or(0);
                    self.established.retain(|_, t| *t > cut);
                }
                self.established.insert(id, e.time_ns);
                None
            }
            FLOW_EVENT_CLOSED | FLOW_EVENT_EXPIRED => {
                let established = self.established.remove(&id);
                let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
                let snap = self.shared.read().unwrap_or_else(PoisonError::into_inner);
                let counts = counts(&snap, &names, &e.client);
                Some(line(e, established, &names, counts, wall_ns(e.client.created_ns)))
            }
            _ => None,
        }
    }
}

/// Wall-clock ns of a monotonic time (`bpf_ktime_get_ns`).
fn wall_ns(mono: u64) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
    now.saturating_sub(monotonic_ns().saturating_sub(mono))
}

/// Open flows of the process, the flow's frontend, backend and server, as of the last sweep.
fn counts(s: &Snapshot, names: &Names, c: &Flow) -> [u64; 4] {
    let (fe, be) = names.frontends.get(&c.frontend_id).map_or(("", ""), |(f, b)| (f.as_str(), b.as_str()));
    let srv = names.servers.get(&c.server_id).map_or("", String::as_str);
    let ac = s.frontends.iter().map(|f| f.active_flows).sum();
    let fc = s.frontends.iter().find(|f| f.name == fe).map_or(0, |f| f.active_flows);
    let backend = s.backends.iter().find(|b| b.name == be);
    let bc = backend.map_or(0, |b| b.active_flows);
    let sc = backend.and_then(|b| b.servers.iter().find(|v| v.name == srv)).map_or(0, |v| v.active_flows);
    [ac, fc, bc, sc]
}

/// HAProxy's termination state of a flow that ended with event `e`.
fn termination(e: &FlowEvent) -> &'static str {
    let established = e.client.seen & FLOW_SEEN_ESTABLISHED != 0;
    let client_rst = e.client.seen & TCP_RST != 0;
    let server_rst = e.client.seen & FLOW_SEEN_PEER_RST != 0 || e.server.seen & TCP_RST != 0;
    match (e.kind, established) {
        (FLOW_EVENT_EXPIRED, true) => "cD",
        (FLOW_EVENT_EXPIRED, false) => "sC",
        _ if server_rst && established => "SD",
        _ if server_rst => "SC",
        _ if client_rst && established => "CD",
        _ if client_rst => "CC",
        _ => "--",
    }
}

/// Payload bytes the server sent: its sequence space, less its SYN and FIN (0 before its
/// SYN-ACK). Exact below 4 GiB a flow.
fn server_bytes(server: &Flow) -> u32 {
    if server.seen & TCP_SYN == 0 {
        return 0;
    }
    let fin = u32::from(server.seen & TCP_FIN != 0);
    server.seq_end.wrapping_sub(server.isn).wrapping_sub(1).wrapping_sub(fin)
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// One line in `option tcplog`'s format (see the module's documentation).
pub fn line(
    e: &FlowEvent,
    established_ns: Option<u64>,
    names: &Names,
    counts: [u64; 4],
    accept_wall_ns: u64,
) -> String {
    let c = &e.client;
    // IPv4: the flow events the kernel sends are IPv4 flows (IPv6 ones are the data path's).
    let client = std::net::SocketAddrV4::new(e.client_key.src_addr.into(), u16::from_be(e.client_key.src_port_be));
    let (fe, be) = names.frontends.get(&c.frontend_id).map_or(("-", "-"), |(f, b)| (f.as_str(), b.as_str()));
    let srv = names.servers.get(&c.server_id).map_or("<NOSRV>", String::as_str);
    // A handshake completed without its event (rate limited, or remembered no longer): -1.
    let tc = match established_ns {
        Some(t) => ms(t.saturating_sub(c.created_ns)).to_string(),
        None => "-1".to_string(),
    };
    let tt = ms(e.time_ns.saturating_sub(c.created_ns));
    let [ac, fc, bc, sc] = counts;
    format!(
        "{client} [{}] {fe} {be}/{srv} 0/{tc}/{tt} {} {} {ac}/{fc}/{bc}/{sc}/{} 0/0",
        date(accept_wall_ns),
        server_bytes(&e.server),
        termination(e),
        c.redispatches,
    )
}

/// `30/Nov/2026:23:15:07.123` (UTC).
fn date(wall_ns: u64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let d = Duration::from_nanos(wall_ns);
    let secs = d.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = usize::try_from(month - 1).ok().and_then(|m| MONTHS.get(m)).copied().unwrap_or("Jan");
    format!("{day:02}/{name}/{year}:{:02}:{:02}:{:02}.{:03}", rest / 3600, rest / 60 % 60, rest % 60, d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{FLOW_DIR_CLIENT, FLOW_DIR_SERVER, FLOW_SEEN_PEER_FIN};

    fn event(kind: u32, client_seen: u32, server_seen: u32) -> FlowEvent {
        let client_key = FlowKey {
            src_addr: [198, 18, 0, 2],
            dst_addr: [198, 18, 0, 10],
            src_port_be: 40112u16.to_be(),
            dst_port_be: 12379u16.to_be(),
        };
        FlowEvent {
            kind,
            time_ns: 5_008_000_000,
            client_key,
            client: Flow {
                direction: FLOW_DIR_CLIENT,
                server_id: 3,
                frontend_id: 1,
                seen: client_seen,
                created_ns: 1_000_000,
                redispatches: 1,
                ..Flow::default()
            },
            server: Flow {
                direction: FLOW_DIR_SERVER,
                server_id: 3,
                seen: server_seen,
                isn: u32::MAX - 10,
                // SYN (1) + 212 bytes + FIN (1), across the sequence number wrap.
                seq_end: (u32::MAX - 10).wrapping_add(214),
                ..Flow::default()
            },
            ..FlowEvent::default()
        }
    }

    #[test]
    fn tcplog_lines() {
        let names = Names {
            frontends: [(1, ("front".to_string(), "pool".to_string()))].into(),
            servers: [(3, "app1".to_string())].into(),
        };
        let est = FLOW_SEEN_ESTABLISHED | TCP_SYN;
        let closed = event(FLOW_EVENT_CLOSED, est | TCP_FIN | FLOW_SEEN_PEER_FIN, est | TCP_FIN | TCP_SYN);
        // 2026-11-30 23:15:07.123 UTC.
        let wall = 1_796_080_507_123_000_000;
        assert_eq!(
            line(&closed, Some(2_000_000), &names, [3, 3, 2, 1], wall),
            "198.18.0.2:40112 [30/Nov/2026:23:15:07.123] front pool/app1 0/1/5007 212 -- 3/3/2/1/1 0/0"
        );
        assert!(line(&closed, None, &names, [0; 4], wall).contains(" 0/-1/5007 "));
        let reset = event(FLOW_EVENT_CLOSED, est | FLOW_SEEN_PEER_RST, est);
        assert_eq!(termination(&reset), "SD");
        assert_eq!(termination(&event(FLOW_EVENT_CLOSED, est | TCP_RST, est)), "CD");
        assert_eq!(termination(&event(FLOW_EVENT_CLOSED, TCP_SYN | FLOW_SEEN_PEER_RST, TCP_RST)), "SC");
        assert_eq!(termination(&event(FLOW_EVENT_EXPIRED, est, est)), "cD");
        let never = event(FLOW_EVENT_EXPIRED, TCP_SYN, 0);
        assert_eq!((termination(&never), server_bytes(&never.server)), ("sC", 0));
        assert_eq!(date(0), "01/Jan/1970:00:00:00.000");
        assert_eq!(date(951_782_400_000_000_000), "29/Feb/2000:00:00:00.000");
    }
}
